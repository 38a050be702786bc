"""The web app measured in a real headless Chromium (Debian's `chromium` through Selenium and
`chromium-driver`): the first paint of a bucket's listing and the time from pressing Play to
the first frame of a cold 720p stream, in one browser run against one gateway; and the same two
moments without the app, from nginx in the same browser (the same-run reference): nginx's own
listing of the bucket's folder, and a plain page playing a 720p file made beforehand by
gst-launch with the gateway's pipeline."""

from __future__ import annotations

import time
from pathlib import Path

from loads import Window

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise RuntimeError("Debian's chromium and chromium-driver are missing: run scripts/setup.sh --test")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--window-size=1280,860"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_script_timeout(120)
    return d


# Resolves with the time from clicking Play to the first frame the <video> presents at the
# chosen quality (requestVideoFrameCallback), and that frame's height.
_PLAY = """
const [selector, done] = [arguments[0], arguments[arguments.length - 1]];
const t0 = performance.now();
document.querySelector(selector).click();
const v = document.getElementById('player');
v.addEventListener('error', () => done({error: 'media error ' + (v.error && v.error.code)}));
v.requestVideoFrameCallback(() => done({ms: performance.now() - t0, height: v.videoHeight}));
"""


# The reference player: one <video> (the element the web app plays in) and a Play button that
# points it at a file served as it is.
PLAYER_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>reference player</title>
<video id="player" playsinline></video>
<button class="play" onclick="const v = document.getElementById('player'); v.src = '{src}'; v.play();">Play</button>
"""


def _wait_for(d, script: str, what: str):
    for _ in range(600):
        found = d.execute_script(script)
        if found is not None:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"{what} never happened")


def static_timings(server, listing_path: str, player_path: str, quality: int = 720) -> dict:
    """One browser run against nginx: navigation start to the first contentful paint of its
    listing of `listing_path` (autoindex: the listing is the page's content), and Play to the
    first frame on the page at `player_path` (see PLAYER_PAGE)."""
    d = _driver()
    base = f"http://{server.hostport}"
    try:
        with Window(server) as w:
            d.get(base + listing_path)
            fcp = _wait_for(d, "const f = performance.getEntriesByName('first-contentful-paint')[0];"
                               "return f ? f.startTime : null;", "nginx's listing's first contentful paint")
            d.get(base + player_path)
            play = d.execute_async_script(_PLAY, "button.play")
        if play.get("error"):
            raise RuntimeError(play["error"])
        if play["height"] != quality:
            raise RuntimeError(f"first frame is {play['height']} high, expected {quality}")
        return {**w.fields(), "first_paint_ms": fcp, "fcp_ms": fcp, "play_first_frame_s": play["ms"] / 1000}
    finally:
        d.quit()


def webapp_timings(server, creds, bucket: str, key: str, quality: int = 720) -> dict:
    """One browser run: the bucket view's first paint (navigation start to the listing drawn,
    from the page's own `nebula:listing` mark) and Play to first frame at `quality`."""
    d = _driver()
    base = f"http://{server.hostport}/_nebula/ui/"
    try:
        d.get(base)
        # Signed in as the sign-in form leaves it, with the quality chosen earlier in the tab.
        d.execute_script(
            "sessionStorage.setItem('nebula.session', JSON.stringify(arguments[0]));"
            "sessionStorage.setItem('nebula.quality', arguments[1]);",
            {"accessKey": creds.access_key, "secretKey": creds.secret_key, "region": creds.region},
            str(quality),
        )
        d.get("about:blank")
        with Window(server) as w:
            d.get(f"{base}#/b/{bucket}/")
            paint = None
            for _ in range(600):
                paint = d.execute_script(
                    "const m = performance.getEntriesByName('nebula:listing')[0];"
                    "const f = performance.getEntriesByName('first-contentful-paint')[0];"
                    "return m ? {listing: m.startTime, fcp: f ? f.startTime : null} : null;")
                if paint:
                    break
                time.sleep(0.05)
            if not paint:
                raise RuntimeError("the bucket view never drew its listing")
            play = d.execute_async_script(_PLAY, f'tr[data-key="{key}"] button.play')
        if play.get("error"):
            raise RuntimeError(play["error"])
        if play["height"] != quality:
            raise RuntimeError(f"first frame is {play['height']} high, expected {quality}")
        return {**w.fields(), "first_paint_ms": paint["listing"], "fcp_ms": paint["fcp"],
                "play_first_frame_s": play["ms"] / 1000}
    finally:
        d.quit()
