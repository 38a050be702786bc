"""The reference for an HLS cold seek: a gst-launch-1.0 pipeline description (argv[3:]) run by
GStreamer's own parser, as gst-launch-1.0 runs it, plus the one thing gst-launch-1.0 cannot
do: a flushing, accurate seek to [argv[1], argv[2]] seconds once decodebin has exposed its
streams (what the gateway does for a segment). Prints the seconds from building the pipeline
to EOS. Run with the system Python (python3-gi, gir1.2-gstreamer-1.0)."""

import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

Gst.init(None)
start, stop = (int(float(a) * Gst.SECOND) for a in sys.argv[1:3])
t0 = time.monotonic()
pipeline = Gst.parse_launch(" ".join(sys.argv[3:]))
pads = threading.Event()
pipeline.get_by_name("d").connect("no-more-pads", lambda _: pads.set())
bus = pipeline.get_bus()
pipeline.set_state(Gst.State.PAUSED)
while not pads.wait(0.01):
    if bus.pop_filtered(Gst.MessageType.ERROR):
        sys.exit("pipeline error before the seek")
flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE
if not pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, start, Gst.SeekType.SET, stop):
    sys.exit("seek refused")
pipeline.set_state(Gst.State.PLAYING)
msg = bus.timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
elapsed = time.monotonic() - t0
pipeline.set_state(Gst.State.NULL)
if msg is None or msg.type != Gst.MessageType.EOS:
    sys.exit(f"no EOS: {msg.parse_error() if msg else 'timeout'}")
print(f"{elapsed:.6f}")
