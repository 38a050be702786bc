"""The web app (`/_nebula/ui/`) in a real headless Chromium (Debian's `chromium` driven by
Selenium through Debian's `chromium-driver`) against the real gateway.

The page signs its own requests in the browser (aws4fetch); nothing here signs for it. Every
step is what a person does: sign in, create a bucket, upload a generated 12 MiB video through
the file input (multipart with parallel parts), see its duration and poster, play it at fixed
qualities, seek, share a presigned link that plays in a fresh browser with no sign-in, delete.

Screenshots of the main views at desktop and phone widths go to `$NEBULA_ARTIFACTS/webapp/`
(default: a folder under pytest's temporary directory, printed at the end of the module).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, REPO, SECRET_KEY, Gateway, new_bucket_name

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WEB = REPO / "web"
DESKTOP = (1280, 860)
PHONE = (390, 844)
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """The gateway, logging s3s's resolved operation names (to see UploadPart in the log) and
    the HLS segments it serves."""
    old = os.environ.get("NEBULA_TEST_RUST_LOG")
    os.environ["NEBULA_TEST_RUST_LOG"] = "info,s3s::ops=debug,nebula_gateway::s3::hls=debug"
    try:
        g = Gateway(tmp_path_factory.mktemp("gw-webapp")).start()
    finally:
        if old is None:
            os.environ.pop("NEBULA_TEST_RUST_LOG", None)
        else:
            os.environ["NEBULA_TEST_RUST_LOG"] = old
    yield g
    g.assert_clean_exit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    base = os.environ.get("NEBULA_ARTIFACTS")
    d = Path(base) / "webapp" if base else tmp_path_factory.mktemp("webapp-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    yield d
    print(f"\nweb app screenshots: {d}")


def new_browser(size=DESKTOP):
    """A fresh headless Chromium (its own profile: no cookies, no session storage)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Debian's chromium and chromium-driver are missing: run scripts/setup.sh --test"
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        f"--window-size={size[0]},{size[1]}",
    ):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if size[0] < 500:
        # Headless windows are at least 500 px wide: emulate the phone's viewport instead.
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": True})
    return d


@pytest.fixture(scope="module")
def browser():
    d = new_browser()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 20 s 1280x720 H.264/AAC MP4 of at least 12 MiB (noise does not compress)."""
    p = tmp_path_factory.mktemp("webapp-media") / "clip.mp4"
    subprocess.run(
        [
            "gst-launch-1.0", "-q",
            "videotestsrc", "pattern=snow", "num-buffers=600", "!",
            "video/x-raw,width=1280,height=720,framerate=30/1", "!",
            "x264enc", "bitrate=5400", "speed-preset=ultrafast", "key-int-max=30", "!",
            "h264parse", "!", "mp4mux", "name=m", "faststart=true", "!", "filesink", f"location={p}",
            "audiotestsrc", "num-buffers=860", "!", "audio/x-raw,rate=44100", "!",
            "audioconvert", "!", "avenc_aac", "!", "m.",
        ],
        check=True, timeout=180, capture_output=True,
    )
    assert p.stat().st_size >= 12 * MIB, p.stat().st_size
    return p


# --------------------------------------------------------------------------------------------
# helpers


def wait_for(fn, timeout=20.0, what="condition", every=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page may be mid-render
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def js(d, script, *args):
    return d.execute_script(script, *args)


def by_id(d, id_):
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, id_)


def css(d, sel):
    from selenium.webdriver.common.by import By

    return d.find_elements(By.CSS_SELECTOR, sel)


def visible_text(d, id_):
    e = by_id(d, id_)
    return e.text if e.is_displayed() else ""


def sign_in(d, gw, access=ACCESS_KEY, secret=SECRET_KEY):
    d.get(f"{gw.endpoint}/")
    wait_for(lambda: by_id(d, "signin").is_displayed() or by_id(d, "app").is_displayed(), what="the app to start")
    if by_id(d, "app").is_displayed():
        by_id(d, "signout-button").click()
    by_id(d, "access-key").clear()
    by_id(d, "access-key").send_keys(access)
    by_id(d, "secret-key").send_keys(secret)
    by_id(d, "signin-button").click()


def open_folder(d, gw, bucket):
    d.get(f"{gw.endpoint}/_nebula/ui/#/b/{bucket}/")
    wait_for(lambda: "folder" in visible_text(d, "list-status") or "empty" in visible_text(d, "list-status"),
             what=f"the listing of {bucket}")


def shot(d, shots: Path, name: str):
    # Let fonts, images and the video frame settle.
    time.sleep(0.3)
    d.save_screenshot(str(shots / f"{name}.png"))


def wait_playing(d, min_advance=0.6, timeout=25.0):
    """Waits until the player's currentTime advances by `min_advance` s; returns (start, now)."""
    start = wait_for(lambda: js(d, "const v=document.getElementById('player'); return v && v.readyState>=2 ? [v.currentTime] : null"),
                     timeout=timeout, what="the player to have a frame")[0]
    return wait_for(
        lambda: (lambda t: (start, t) if t - start >= min_advance else None)(
            js(d, "return document.getElementById('player').currentTime")),
        timeout=timeout, what=f"currentTime to advance from {start}",
    )


# --------------------------------------------------------------------------------------------
# serving: redirect, headers, pinned assets


def _get(gw, path, headers=None):
    c = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def test_browser_at_root_is_redirected_and_s3_is_not(gw):
    r, _ = _get(gw, "/", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status == 302 and r.getheader("Location") == "/_nebula/ui/"
    # An S3 client's ListBuckets at `/` (signed) still gets XML.
    lb = gw.raw().request("GET", "/")
    assert lb.status == 200 and b"ListAllMyBucketsResult" in lb.body
    # Anonymous, not asking for HTML: S3's AccessDenied, no redirect.
    r, body = _get(gw, "/")
    assert r.status == 403 and b"AccessDenied" in body


def test_ui_security_headers(gw):
    r, body = _get(gw, "/_nebula/ui/")
    assert r.status == 200 and b'<script type="module" src="app.js">' in body
    csp = r.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert r.getheader("X-Frame-Options") == "DENY"
    assert r.getheader("Referrer-Policy") == "no-referrer"
    assert r.getheader("Cache-Control") == "no-cache"
    etag = r.getheader("ETag")
    r2, _ = _get(gw, "/_nebula/ui/", {"If-None-Match": etag})
    assert r2.status == 304
    r, body = _get(gw, "/_nebula/ui/config.json")
    assert json.loads(body)["region"] == gw.region
    r, _ = _get(gw, "/_nebula/ui/vendor/hls.min.mjs")
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/javascript")
    r, _ = _get(gw, "/_nebula/ui/no-such-file.js")
    assert r.status == 404
    # No inline script or style anywhere in the page (the CSP would block them).
    assert b"<script>" not in body and b" style=" not in (WEB / "app" / "index.html").read_bytes()


def test_vendored_files_match_pinned_packages():
    """web/app/vendor/ holds byte-identical copies of the files of the packages that
    web/package-lock.json pins (scripts/setup.sh --test installs them with `npm ci`)."""
    modules = WEB / "node_modules"
    assert modules.is_dir(), "web/node_modules is missing: run scripts/setup.sh --test (npm ci in web/)"
    lock = json.loads((WEB / "package-lock.json").read_text())
    for name, spec in json.loads((WEB / "package.json").read_text())["dependencies"].items():
        installed = json.loads((modules / name / "package.json").read_text())["version"]
        assert installed == spec == lock["packages"][f"node_modules/{name}"]["version"], name
    pairs = [line.split() for line in (WEB / "vendor.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(pairs) >= 4
    for src, dst in pairs:
        a = (modules / src).read_bytes()
        b = (WEB / "app" / "vendor" / dst).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), (
            f"web/app/vendor/{dst} differs from node_modules/{src}: run web/refresh-vendor.sh"
        )
    listed = {dst for _, dst in pairs}
    assert {p.name for p in (WEB / "app" / "vendor").iterdir()} == listed


# --------------------------------------------------------------------------------------------
# in the browser


def test_wrong_keys_give_a_readable_error(gw, browser, shots):
    sign_in(browser, gw, secret="not-the-secret-key-at-all")
    msg = wait_for(lambda: visible_text(browser, "signin-error"), what="the sign-in error")
    assert "Wrong secret key" in msg, msg
    sign_in(browser, gw, access="NOSUCHKEY1234567890")
    msg = wait_for(lambda: "access key" in visible_text(browser, "signin-error") and visible_text(browser, "signin-error"))
    assert "Unknown access key" in msg, msg
    assert by_id(browser, "signin").is_displayed() and not by_id(browser, "app").is_displayed()
    shot(browser, shots, "signin-error-desktop")


def test_right_keys_show_buckets(gw, browser, shots):
    name = new_bucket_name("existing")
    assert gw.raw().put_bucket(name).status == 200
    sign_in(browser, gw)
    wait_for(lambda: css(browser, f'tr[data-bucket="{name}"]'), what="the bucket list")
    # The secret is kept for this tab only: not in localStorage, not in the URL.
    assert js(browser, "return localStorage.length") == 0
    assert SECRET_KEY not in browser.current_url
    assert SECRET_KEY in js(browser, "return sessionStorage.getItem('nebula.session')")
    shot(browser, shots, "buckets-desktop")


def test_create_bucket_upload_play_share_delete(gw, browser, shots, video):
    d = browser
    bucket = new_bucket_name("ui")
    sign_in(d, gw)
    wait_for(lambda: by_id(d, "app").is_displayed(), what="signed in")
    d.get(f"{gw.endpoint}/_nebula/ui/#/")
    wait_for(lambda: by_id(d, "new-bucket-button").is_displayed(), what="the bucket view")
    by_id(d, "new-bucket-button").click()
    by_id(d, "bucket-name").send_keys(bucket)
    by_id(d, "bucket-create").click()
    wait_for(lambda: f"#/b/{bucket}/" in d.current_url and "empty" in visible_text(d, "list-status"),
             what="the new, empty bucket")
    assert gw.raw().list_v2(bucket).status == 200

    # Upload through the file input: multipart (8 MiB parts, two in parallel).
    mark = gw.log_mark()
    by_id(d, "upload-files").send_keys(str(video))
    wait_for(lambda: css(d, '#uploads-list li[data-state="done"]'), timeout=120, what="the upload to finish")
    log = gw.log_since(mark)
    assert log.count("op=UploadPart") >= 2, "no multipart upload in the gateway log"
    assert "op=CompleteMultipartUpload" in log
    head = gw.raw().head(bucket, "clip.mp4")
    assert head.status == 200 and int(head.headers["content-length"]) == video.stat().st_size
    assert head.headers["etag"].endswith('-2"'), head.headers["etag"]
    got = gw.raw().get(bucket, "clip.mp4")
    assert hashlib.sha256(got.body).hexdigest() == hashlib.sha256(video.read_bytes()).hexdigest()

    # Listed with its duration once the catalog has probed it (reload: the session survives).
    def listed_with_duration():
        d.refresh()
        wait_for(lambda: css(d, 'tr[data-key="clip.mp4"]'), what="the uploaded file in the listing")
        cell = css(d, 'tr[data-key="clip.mp4"] .media-info')[0].text
        return cell if "0:20" in cell else None

    info = wait_for(listed_with_duration, timeout=60, every=1.0, what="the duration in the listing")
    assert "1280×720" in info and "H.264" in info, info

    # And with its poster: the catalog says one can be made, the page presigns `?thumbnail=160`
    # and the browser decodes the JPEG the gateway takes from the video.
    def poster_loaded():
        imgs = css(d, 'tr[data-key="clip.mp4"] img.poster')
        if not imgs:
            return None
        return js(d, "const i=arguments[0]; return i.complete && i.naturalWidth>0 ? [i.naturalWidth, i.naturalHeight, i.src] : null", imgs[0])

    width, height, src = wait_for(poster_loaded, timeout=30, what="the poster image to load")
    assert (width, height) == (160, 90), (width, height)
    assert "thumbnail=160" in src and "X-Amz-Signature=" in src, src
    shot(d, shots, "folder-desktop")

    # Auto: the presigned master playlist through hls.js (Media Source Extensions), which
    # fetches the segments the gateway makes on demand.
    css(d, 'tr[data-key="clip.mp4"] button.play')[0].click()
    wait_for(lambda: js(d, "return !!document.getElementById('player')"), what="the player")
    labels = [o.get_attribute("value") for o in css(d, "#player-quality option")]
    assert labels == ["original", "auto", "720", "480", "360", "240"], labels
    mark = gw.log_mark()
    choose_quality(d, "auto")
    wait_playing(d, min_advance=1.0, timeout=60)
    assert "Auto (HLS, hls.js)" in by_id(d, "player-info").text, by_id(d, "player-info").text
    assert js(d, "return document.getElementById('player').src").startswith("blob:"), "not on Media Source Extensions"
    served = hls_segments(gw.log_since(mark))
    assert any(seg == "init.mp4" for _, seg in served) and any(seg.endswith(".m4s") for _, seg in served), served
    fetched = js(d, "return performance.getEntriesByType('resource').map(e => e.name).filter(u => u.includes('segment='))")
    assert any("stream=hls" in u and "X-Amz-Signature=" in u for u in fetched), fetched
    shot(d, shots, "player-desktop")

    # Fixed qualities: that quality's media playlist; the frame is as high as asked.
    choose_quality(d, "360")
    wait_for(lambda: js(d, "return document.getElementById('player').videoHeight") == 360, timeout=60, what="a 360p frame")
    wait_playing(d, timeout=60)
    choose_quality(d, "240")
    wait_for(lambda: js(d, "return document.getElementById('player').videoHeight") == 240, timeout=60, what="a 240p frame")
    wait_playing(d, timeout=60)

    # A seek near the end of a quality nothing has been made of yet: switching to 480p at
    # 17.5 s (paused there, then play) starts its media playlist there, so the first
    # segment asked is the cold segment 5 (16.0-19.2 s), and playback goes on from there.
    js(d, "const v=document.getElementById('player'); v.pause(); v.currentTime = 17.5;")
    wait_for(lambda: js(d, "return document.getElementById('player').seeking") is False, what="the seek at 240p")
    mark = gw.log_mark()
    started = time.monotonic()
    choose_quality(d, "480")
    wait_for(lambda: js(d, "const v=document.getElementById('player'); return v.videoHeight===480 && v.readyState>=2"),
             timeout=30, what="the first 480p frame")
    js(d, "document.getElementById('player').play()")
    wait_for(lambda: js(d, "const v=document.getElementById('player'); return v.videoHeight===480 && v.currentTime > 18.0"),
             timeout=30, what="480p playback from 17.5 s")
    took = time.monotonic() - started
    served = [seg for q, seg in hls_segments(gw.log_since(mark)) if q == "480"]
    media = [seg for seg in served if seg.endswith(".m4s")]
    assert media and media[0] == "5.m4s", served
    print(f"cold seek to 17.5 s at 480p played after {took:.1f} s")
    # And back to the start (behind the segments made so far): it plays from there too.
    seek_and_play(d, 2.0, within=30.0)

    # Seek to 50 % of the original (the stored file, byte ranges): it plays from there.
    choose_quality(d, "original")
    wait_for(lambda: js(d, "return document.getElementById('player').videoHeight") == 720, what="the original")
    seek_and_play(d, 10.0)

    # Prepare 360p in the background (a job, watched under Jobs): its segments are then
    # served from the job's file.
    css(d, '#transcode-qualities input[value="360"]')[0].click()
    css(d, "#transcode-form button[type=submit]")[0].click()
    wait_for(lambda: "Queued 1 job" in by_id(d, "transcode-status").text, what="the job to be queued")
    by_id(d, "player-close").click()
    by_id(d, "jobs-button").click()
    wait_for(lambda: css(d, '#jobs-list li[data-status="completed"]'), timeout=240, every=1.0,
             what="the background transcode to complete")
    shot(d, shots, "jobs-desktop")
    by_id(d, "jobs-button").click()
    d.refresh()
    wait_for(lambda: css(d, 'tr[data-key="clip.mp4"] button.play'), what="the listing")[0].click()
    wait_for(lambda: js(d, "return !!document.getElementById('player')"), what="the player")
    labels = [o.text for o in css(d, "#player-quality option")]
    assert "360p (ready)" in labels, labels
    choose_quality(d, "360")
    wait_for(lambda: js(d, "return document.getElementById('player').videoHeight") == 360, what="the 360p rendition")
    seek_and_play(d, 10.0)
    by_id(d, "player-close").click()

    # Share: a presigned link with a chosen expiry and quality plays in a fresh browser.
    css(d, 'tr[data-key="clip.mp4"] button.share')[0].click()
    select_value(d, "share-expiry", "604800")
    select_value(d, "share-quality", "360")
    url = wait_for(lambda: (lambda u: u if "quality=360" in u and "X-Amz-Expires=604800" in u else None)(
        by_id(d, "share-url").get_attribute("value")), what="the share link")
    assert SECRET_KEY not in url and "X-Amz-Signature=" in url
    shot(d, shots, "share-desktop")
    by_id(d, "share-dialog").find_element("css selector", 'button[value="close"]').click()
    fresh = new_browser()
    try:
        fresh.get(url)
        wait_for(lambda: js(fresh, "const v=document.querySelector('video'); return v && v.videoHeight===360 && v.currentTime>0.5"),
                 timeout=30, what="the shared link to play in a fresh browser")
    finally:
        fresh.quit()

    # Delete, with confirmation; the listing updates.
    css(d, 'tr[data-key="clip.mp4"] button.delete')[0].click()
    wait_for(lambda: by_id(d, "confirm-dialog").is_displayed(), what="the confirmation")
    assert "clip.mp4" in by_id(d, "confirm-text").text
    by_id(d, "confirm-yes").click()
    wait_for(lambda: not css(d, 'tr[data-key="clip.mp4"]'), what="the file to leave the listing")
    assert gw.raw().head(bucket, "clip.mp4").status == 404


def hls_segments(log: str) -> list[tuple[str, str]]:
    """(quality, segment file) of every HLS segment the gateway served, in order."""
    import re

    return re.findall(r"hls segment.*?quality=(\d+) segment=(\S+)", log)


def seek_and_play(d, at: float, within: float = 5.0):
    """Seeks to `at` seconds; playback must go on from there within `within` seconds."""
    js(d, "const v=document.getElementById('player'); v.currentTime = arguments[0]; v.play();", at)
    wait_for(lambda: js(d, "return document.getElementById('player').currentTime") > at + 0.5,
             timeout=within, what=f"playback from {at} s after the seek")


def choose_quality(d, value):
    select_value(d, "player-quality", value)


def select_value(d, id_, value):
    from selenium.webdriver.support.ui import Select

    Select(by_id(d, id_)).select_by_value(value)


def test_folders_multi_delete_status_and_phone(gw, browser, shots, tmp_path):
    d = browser
    bucket = new_bucket_name("fold")
    raw = gw.raw()
    assert raw.put_bucket(bucket).status == 200
    for k in ("album/a.txt", "album/b.txt", "album/deep/c.txt", "top.txt"):
        assert raw.put(bucket, k, b"hello " + k.encode()).status == 200
    sign_in(d, gw)
    wait_for(lambda: by_id(d, "app").is_displayed(), what="signed in")
    open_folder(d, gw, bucket)
    assert css(d, 'tr.folder[data-prefix="album/"]') and css(d, 'tr[data-key="top.txt"]')
    css(d, 'tr.folder[data-prefix="album/"] a')[0].click()
    wait_for(lambda: css(d, 'tr[data-key="album/a.txt"]'), what="the folder's files")
    crumbs = [a.text for a in css(d, "#breadcrumb a")]
    assert crumbs == ["Buckets", bucket, "album"], crumbs
    # Filter by name.
    by_id(d, "filter").send_keys("b.t")
    wait_for(lambda: len(css(d, "#listing-body tr[data-key]")) == 1, what="the filter")
    by_id(d, "filter").clear()
    js(d, "const f=document.getElementById('filter'); f.value=''; f.dispatchEvent(new Event('input'))")
    # Several at once: DeleteObjects.
    mark = gw.log_mark()
    for k in ("album/a.txt", "album/b.txt"):
        css(d, f'tr[data-key="{k}"] input[type=checkbox]')[0].click()
    by_id(d, "delete-selected-button").click()
    wait_for(lambda: "2 files" in by_id(d, "confirm-title").text, what="the confirmation of 2 files")
    by_id(d, "confirm-yes").click()
    wait_for(lambda: not css(d, 'tr[data-key="album/a.txt"]') and not css(d, 'tr[data-key="album/b.txt"]'),
             what="the deleted files to leave the listing")
    assert "op=DeleteObjects" in gw.log_since(mark)
    assert raw.head(bucket, "album/a.txt").status == 404
    assert raw.head(bucket, "album/deep/c.txt").status == 200

    # Status panel: the health API, refreshed live.
    by_id(d, "status-button").click()
    wait_for(lambda: "Encoder" in by_id(d, "status-list").text, what="the status panel")
    first = by_id(d, "status-updated").text
    wait_for(lambda: by_id(d, "status-updated").text != first, timeout=10, what="a live status update")
    shot(d, shots, "status-desktop")
    by_id(d, "status-button").click()

    # Phone width: the same views, nothing wider than the screen.
    phone = new_browser(PHONE)
    try:
        sign_in(phone, gw)
        wait_for(lambda: css(phone, f'tr[data-bucket="{bucket}"]'), what="buckets on the phone")
        assert js(phone, "return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(phone, shots, "buckets-phone")
        open_folder(phone, gw, bucket)
        assert js(phone, "return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(phone, shots, "folder-phone")
    finally:
        phone.quit()


def test_hlsjs_plays_the_stream_copied_original_entry(gw, browser, tmp_path):
    """hls.js (the page's own copy, Media Source Extensions) plays the presigned `original`
    HLS entry of a 4:2:0 H.264 + AAC source: segments cut from the stored file without
    re-encoding (`quality=original`), from the start and after a seek into the last one."""
    from nebula_helpers import object_path

    src = tmp_path / "copy.mp4"
    # format=I420: x264enc would otherwise take videotestsrc's 4:4:4, which is not copied.
    subprocess.run(
        [
            "gst-launch-1.0", "-q", "-e",
            "videotestsrc", "pattern=ball", "num-buffers=240", "!",
            "video/x-raw,format=I420,width=640,height=360,framerate=30/1", "!",
            "x264enc", "speed-preset=ultrafast", "key-int-max=60", "!",
            "h264parse", "!", "queue", "!", "mp4mux", "name=m", "!", "filesink", f"location={src}",
            "audiotestsrc", "num-buffers=375", "samplesperbuffer=1024", "!",
            "audio/x-raw,rate=48000,channels=2", "!", "audioconvert", "!", "avenc_aac", "!",
            "aacparse", "!", "queue", "!", "m.",
        ],
        check=True, timeout=180, capture_output=True,
    )
    bucket = new_bucket_name("copy")
    raw = gw.raw()
    assert raw.put_bucket(bucket).status == 200
    assert raw.put(bucket, "copy.mp4", src.read_bytes(), headers={"Content-Type": "video/mp4"}).status == 200
    path = object_path(bucket, "copy.mp4")
    master = raw.request("GET", path, query=[("stream", "hls")])
    assert master.status == 200 and b"quality=original" in master.body, master.body.decode()
    url = raw.presigned_url("GET", path, extra_query=[("stream", "hls"), ("quality", "original")])

    d = browser
    d.get(f"{gw.endpoint}/_nebula/ui/")
    loaded = d.execute_async_script(
        """
        const [url, done] = arguments;
        import('/_nebula/ui/vendor/hls.min.mjs').then(({ default: Hls }) => {
          const v = document.createElement('video');
          v.id = 'copy-player';
          v.muted = true;
          document.body.appendChild(v);
          window.copyErrors = [];
          const hls = new Hls({ workerPath: '/_nebula/ui/vendor/hls.worker.js' });
          hls.on(Hls.Events.ERROR, (_e, data) => window.copyErrors.push([data.details, data.fatal]));
          hls.loadSource(url);
          hls.attachMedia(v);
          hls.once(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
          done(Hls.isSupported());
        }).catch((e) => done(String(e)));
        """,
        url,
    )
    assert loaded is True, loaded
    player = "document.getElementById('copy-player')"
    wait_for(lambda: js(d, f"const v={player}; return v.videoHeight===360 && v.currentTime > 1.0"),
             timeout=30, what="hls.js to play the original entry")
    assert js(d, f"return {player}.src").startswith("blob:"), "not on Media Source Extensions"
    js(d, f"const v={player}; v.currentTime = 5.0; v.play();")
    wait_for(lambda: js(d, f"return {player}.currentTime") > 5.5, timeout=30, what="playback after the seek to 5 s")
    fatal = [e for e in js(d, "return window.copyErrors") if e[1]]
    assert not fatal, fatal
    fetched = js(d, "return performance.getEntriesByType('resource').map(e => e.name).filter(u => u.includes('segment='))")
    assert any("quality=original" in u and "segment=1" in u for u in fetched), fetched


def test_audio_plays(gw, browser, tmp_path):
    """An audio file opens in an <audio> player, original bytes, and plays."""
    d = browser
    bucket = new_bucket_name("audio")
    song = tmp_path / "tone.m4a"
    subprocess.run(
        ["gst-launch-1.0", "-q", "audiotestsrc", "num-buffers=300", "!", "audioconvert", "!",
         "avenc_aac", "!", "aacparse", "!", "mp4mux", "!", "filesink", f"location={song}"],
        check=True, timeout=60, capture_output=True,
    )
    raw = gw.raw()
    assert raw.put_bucket(bucket).status == 200
    assert raw.put(bucket, "tone.m4a", song.read_bytes(), headers={"Content-Type": "audio/mp4"}).status == 200
    sign_in(d, gw)
    wait_for(lambda: by_id(d, "app").is_displayed(), what="signed in")
    open_folder(d, gw, bucket)
    css(d, 'tr[data-key="tone.m4a"] button.play')[0].click()
    wait_for(lambda: js(d, "const p=document.getElementById('player'); return p && p.tagName === 'AUDIO'"), what="the audio player")
    assert [o.get_attribute("value") for o in css(d, "#player-quality option")] == ["original"]
    wait_playing(d)
    by_id(d, "player-close").click()


def test_upload_cancel_aborts_the_multipart_upload(gw, browser, tmp_path):
    """Cancel during a multipart upload (the network throttled so it is still running): the
    requests stop, AbortMultipartUpload drops the staged parts, no object appears."""
    d = browser
    bucket = new_bucket_name("cancel")
    assert gw.raw().put_bucket(bucket).status == 200
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * MIB))
    sign_in(d, gw)
    wait_for(lambda: by_id(d, "app").is_displayed(), what="signed in")
    open_folder(d, gw, bucket)
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2 * MIB})
    try:
        mark = gw.log_mark()
        by_id(d, "upload-files").send_keys(str(big))
        wait_for(lambda: "op=CreateMultipartUpload" in gw.log_since(mark) and
                 js(d, "const p=document.querySelector('#uploads-list li[data-upload=\"big.bin\"] progress'); return p && p.value > 0"),
                 what="the upload to be under way")
        css(d, '#uploads-list li[data-upload="big.bin"] button')[0].click()
        wait_for(lambda: css(d, '#uploads-list li[data-upload="big.bin"][data-state="cancelled"]'), what="cancelled")
        wait_for(lambda: "op=AbortMultipartUpload" in gw.log_since(mark), what="AbortMultipartUpload")
    finally:
        d.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    uploads = gw.raw().request("GET", f"/{bucket}", query=[("uploads", "")])
    assert uploads.status == 200 and b"<Upload>" not in uploads.body, uploads.body[:500]
    assert gw.raw().head(bucket, "big.bin").status == 404
    assert "op=CompleteMultipartUpload" not in gw.log_since(mark)


def test_keyboard_sign_in_and_labels(gw, shots):
    """Sign-in works with the keyboard alone and every control has a label."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    d = new_browser(PHONE)
    try:
        d.get(f"{gw.endpoint}/")
        wait_for(lambda: by_id(d, "signin").is_displayed(), what="the sign-in form")
        assert js(d, "return document.activeElement.id") == "access-key"
        ActionChains(d).send_keys(ACCESS_KEY, Keys.TAB, SECRET_KEY, Keys.ENTER).perform()
        wait_for(lambda: by_id(d, "app").is_displayed(), what="signed in with the keyboard")
        shot(d, shots, "buckets-phone-keyboard")
        unlabelled = js(d, """
            return [...document.querySelectorAll('button, input, select')].filter(e => {
              if (e.type === 'hidden') return false;
              const byFor = e.id && document.querySelector(`label[for="${e.id}"]`);
              return !(e.getAttribute('aria-label') || e.closest('label') || byFor || e.textContent.trim());
            }).map(e => e.outerHTML.slice(0, 80));""")
        assert unlabelled == [], unlabelled
        # Sign out forgets the keys.
        by_id(d, "signout-button").click()
        assert js(d, "return sessionStorage.length") == 0
        assert by_id(d, "signin").is_displayed()
    finally:
        d.quit()
