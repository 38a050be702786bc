"""The load generators: wrk runs, the large multipart upload, ListObjectsV2 timing and transcodes.

Every function measures one run against one already started server (or one gst-launch) and
returns a dict of raw numbers; bench.py turns them into metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import statistics
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nebula_helpers import (UNSIGNED, Creds, RawS3, object_path, parse_list, playlist_uris, presign,
                            sign_headers)
from servers import Server, host_busy_s

HERE = Path(__file__).resolve().parent
LUA = HERE / "requests.lua"
PRESIGN_EXPIRES = 6 * 3600
NGINX_PUTS = "/.nginx-puts"


# --------------------------------------------------------------------------------------------
# measuring a window of activity


def client_cpu_s() -> float:
    """CPU of this harness plus every child it has reaped (wrk, curl)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


class Window:
    """Server CPU, client CPU (this harness and its reaped children) and other processes' CPU
    over a measured run."""

    def __init__(self, server: Server | None):
        self.server = server

    def __enter__(self) -> "Window":
        self.server_cpu0 = self.server.cpu_s() if self.server else 0.0
        self.client_cpu0 = client_cpu_s()
        self.host0 = host_busy_s()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.monotonic() - self.t0
        self.server_cpu_s = (self.server.cpu_s() - self.server_cpu0) if self.server else 0.0
        self.client_cpu_s = client_cpu_s() - self.client_cpu0
        host = host_busy_s() - self.host0
        # Cores used by everything else on the machine during the run (compiles, other tests).
        self.others_cores = max(0.0, host - self.server_cpu_s - self.client_cpu_s) / max(self.wall_s, 1e-6)

    def fields(self) -> dict:
        return {
            "wall_s": self.wall_s,
            "server_cpu_s": self.server_cpu_s,
            "client_cpu_s": self.client_cpu_s,
            "others_cores": round(self.others_cores, 3),
            "peak_rss_kib": self.server.peak_rss_kib() if self.server else None,
        }


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class Req:
    method: str
    path: str  # path?query as sent
    range: str | None = None
    body_size: int = 0

    def line(self) -> str:
        return f"{self.method}\t{self.path}\t{self.range or '-'}\t{self.body_size}\n"


def target(server_kind: str, creds: Creds, hostport: str, method: str, bucket: str, key: str,
           extra_query: list[tuple[str, str]] | None = None) -> str:
    """The request target: a presigned path+query for the gateway, the plain path for nginx.

    nginx writes (PUT) below DATA/.nginx-puts, on the same disk but outside every bucket: the
    gateway would otherwise find them at its next start as files that arrived out of band, and
    hash and catalog them while the next run is being measured."""
    path = object_path(bucket, key)
    if server_kind == "nginx":
        return NGINX_PUTS + path if method == "PUT" else path
    return presign(creds, method, hostport, path, PRESIGN_EXPIRES, extra_query=extra_query)


def send(hostport: str, req: Req, timeout: float = 120.0) -> tuple[int, int]:
    """Sends one request like wrk would; returns (status, body length)."""
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Range": req.range} if req.range else {}
        body = b"x" * req.body_size if req.body_size else None
        conn.request(req.method, req.path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, len(r.read())
    finally:
        conn.close()


def check_requests(hostport: str, reqs: list[Req], expect_len: int | None) -> None:
    """Sends each distinct object request once (warms ETags and the page cache) and checks it."""
    seen = set()
    for req in reqs:
        if (req.method, req.path.split("?")[0]) in seen:
            continue
        seen.add((req.method, req.path.split("?")[0]))
        status, length = send(hostport, req)
        if not 200 <= status < 300 or (expect_len is not None and length != expect_len):
            raise RuntimeError(f"{req.method} {req.path[:80]} -> {status}, {length} bytes (expected 2xx, {expect_len})")


def run_wrk(server: Server, reqs: list[Req], concurrency: int, duration: float, workdir: Path,
            warmup: float, warm_reqs: list[Req] | None = None) -> dict:
    """One measured wrk run, after an untimed warm-up on `warm_reqs` (default: the same list)."""
    list_file = workdir / f"wrk-{server.name}.tsv"
    list_file.write_text("".join(r.line() for r in reqs))
    warm_file = workdir / f"wrk-{server.name}-warm.tsv"
    warm_file.write_text("".join(r.line() for r in (warm_reqs or reqs)))
    threads = min(concurrency, os.cpu_count() or 2)

    def wrk(seconds: float, requests: Path = list_file) -> dict:
        cmd = [
            "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "120s",
            "-s", str(LUA), f"http://{server.hostport}", "--", str(requests), str(threads),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 180)
        m = re.search(r"^WRK_RESULT (.*)$", p.stdout, re.M)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
        return json.loads(m.group(1))

    if warmup > 0:
        wrk(warmup, warm_file)
    with Window(server) as w:
        res = wrk(duration)
    list_file.unlink()
    warm_file.unlink()
    return {**res, **w.fields()}


def reap(proc: subprocess.Popen) -> resource.struct_rusage:
    """Waits for `proc` (setting its returncode) and returns its own resource usage."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru


# --------------------------------------------------------------------------------------------
# the durable-write floor for small PUTs (floor.c): the filesystem's part of a PUT, no server


def build_floor(workdir: Path) -> Path:
    """Compiles floor.c (cc is there: cargo links with it)."""
    binary = workdir / "floor"
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(binary), str(HERE / "floor.c")], check=True,
                   capture_output=True, timeout=120)
    return binary


def run_floor(binary: Path, data_dir: Path, dst: str, threads: int, size: int, duration: float,
              warmup: float) -> dict:
    """One floor run into DATA/<dst> (temp files in DATA/.floor-tmp), after an untimed warm-up
    into DATA/<dst>-warm. The floor program stands in for the server: its CPU is its own."""
    tmp = data_dir / ".floor-tmp"
    tmp.mkdir(exist_ok=True)

    def floor(seconds: float, into: Path) -> dict:
        into.mkdir(parents=True)
        proc = subprocess.Popen([str(binary), str(tmp), str(into), str(threads), str(seconds), str(size)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.stdout.read(), proc.stderr.read()
        ru = reap(proc)
        m = re.fullmatch(r"ops=(\d+) seconds=([\d.]+)\s*", out)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"floor failed ({proc.returncode}): {out[-300:]} {err[-600:]}")
        return {"ops": int(m.group(1)), "seconds": float(m.group(2)),
                "cpu_s": ru.ru_utime + ru.ru_stime}

    if warmup > 0:
        floor(warmup, data_dir / f"{dst}-warm")
    with Window(None) as w:
        res = floor(duration, data_dir / dst)
    return {
        **w.fields(),
        "ops": res["ops"],
        "seconds": res["seconds"],
        "server_cpu_s": res["cpu_s"],
        "client_cpu_s": w.client_cpu_s - res["cpu_s"],
        # Not comparable: wait4's maxrss still counts the forked Python before the exec.
        "peak_rss_kib": None,
    }


# --------------------------------------------------------------------------------------------
# large upload: one PUT with curl (nginx), presigned-style multipart with 4 threads (gateway)


def put_with_curl(server: Server, path: str, src: Path) -> dict:
    with Window(server) as w:
        p = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:", "-T", str(src),
             f"http://{server.hostport}{path}"],
            capture_output=True, text=True, timeout=1800,
        )
    if p.returncode != 0 or not p.stdout.startswith("2"):
        raise RuntimeError(f"curl PUT failed: rc {p.returncode}, status {p.stdout} {p.stderr[-400:]}")
    return w.fields()


def _file_chunks(src: Path, offset: int, length: int, block: int = 1 << 20):
    with open(src, "rb") as f:
        end = offset + length
        while offset < end:
            b = os.pread(f.fileno(), min(block, end - offset), offset)
            if not b:
                raise RuntimeError(f"{src} ended early")
            offset += len(b)
            yield b


def multipart_upload(server: Server, creds: Creds, bucket: str, key: str, src: Path,
                     part_size: int, threads: int) -> dict:
    """CreateMultipartUpload, parts in parallel (UNSIGNED-PAYLOAD, so the client hashes
    nothing), CompleteMultipartUpload. The wall time covers all three."""
    s3 = RawS3("127.0.0.1", server.port, creds, timeout=600)
    size = src.stat().st_size
    offsets = list(range(0, size, part_size))
    path = object_path(bucket, key)
    with Window(server) as w:
        r = s3.request("POST", path, query=[("uploads", "")])
        if r.status != 200:
            raise RuntimeError(f"CreateMultipartUpload -> {r}")
        upload_id = parse_xml_text(r.body, "UploadId")

        def part(n: int) -> str:
            length = min(part_size, size - offsets[n - 1])
            rp = s3.request(
                "PUT", path, query=[("partNumber", str(n)), ("uploadId", upload_id)],
                body=_file_chunks(src, offsets[n - 1], length), content_length=length, payload_hash=UNSIGNED,
            )
            if rp.status != 200:
                raise RuntimeError(f"UploadPart {n} -> {rp}")
            return rp.header("etag")

        with ThreadPoolExecutor(threads) as pool:
            etags = list(pool.map(part, range(1, len(offsets) + 1)))
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1)
        ) + "</CompleteMultipartUpload>"
        r = s3.request("POST", path, query=[("uploadId", upload_id)], body=xml.encode())
        if r.status != 200 or b"<Error>" in r.body:
            raise RuntimeError(f"CompleteMultipartUpload -> {r}")
    return {**w.fields(), "parts": len(offsets)}


def parse_xml_text(body: bytes, tag: str) -> str:
    for el in ET.fromstring(body).iter():
        if el.tag.split("}")[-1] == tag:
            return el.text or ""
    raise RuntimeError(f"no <{tag}> in {body[:300]!r}")


# --------------------------------------------------------------------------------------------
# ListObjectsV2 latency (gateway only)


def time_list(server: Server, creds: Creds, bucket: str, repeats: int) -> dict:
    """The first ListObjectsV2 after start (cold) and `repeats` more; one connection each."""
    path = object_path(bucket)
    query = [("list-type", "2")]
    s3 = RawS3("127.0.0.1", server.port, creds)

    def once() -> tuple[float, dict]:
        headers, _ = sign_headers(creds, "GET", path, query, {"host": s3.host_header}, UNSIGNED)
        t0 = time.perf_counter()
        r = s3.send("GET", path + "?list-type=2", headers)
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"ListObjectsV2 {bucket} -> {r}")
        return dt, parse_list(r.body)

    cold_s, page = once()
    with Window(server) as w:
        times = [once()[0] for _ in range(repeats)]
    return {
        **w.fields(),
        "cold_ms": cold_s * 1000,
        "median_ms": statistics.median(times) * 1000,
        "requests": repeats,
        "keys": len(page["keys"]),
        "truncated": page["IsTruncated"] == "true",
    }


# --------------------------------------------------------------------------------------------
# transcodes


def gst_to_pipe(args: list[str], out: Path) -> dict:
    """Runs gst-launch-1.0 writing to stdout; times the first byte and the end on the pipe."""
    errors: list[bytes] = []
    ttfb = None
    size = 0
    with Window(None) as w:
        proc = subprocess.Popen(["gst-launch-1.0", "-q", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()))
        drain.start()
        with open(out, "wb") as f:
            while True:
                b = proc.stdout.read1(1 << 20)
                if not b:
                    break
                if ttfb is None:
                    ttfb = time.monotonic() - w.t0
                size += len(b)
                f.write(b)
        ru = reap(proc)
    drain.join()
    if proc.returncode != 0 or ttfb is None:
        raise RuntimeError(f"gst-launch failed ({proc.returncode}): {b''.join(errors)[-600:]!r}")
    cpu = ru.ru_utime + ru.ru_stime
    return {
        **w.fields(),
        "ttfb_s": ttfb,
        "bytes": size,
        "server_cpu_s": cpu,
        "client_cpu_s": w.client_cpu_s - cpu,
        "peak_rss_kib": ru.ru_maxrss,
    }


def curl_transcode(server: Server, url_path: str, out: Path) -> dict:
    with Window(server) as w:
        p = subprocess.run(
            ["curl", "-sS", "-o", str(out), "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
             f"http://{server.hostport}{url_path}"],
            capture_output=True, text=True, timeout=1800,
        )
    fields = p.stdout.split()
    if p.returncode != 0 or len(fields) != 4 or fields[0] != "200":
        raise RuntimeError(f"transcode GET failed: rc {p.returncode}, {p.stdout} {p.stderr[-400:]} {out.read_bytes()[:300]!r}")
    return {**w.fields(), "wall_s": float(fields[2]), "ttfb_s": float(fields[1]), "bytes": int(fields[3])}


def probe_video(path: Path) -> dict:
    """Width, height, profile of the first video stream and whether there is audio (ffprobe)."""
    p = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,profile", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    streams = json.loads(p.stdout or "{}").get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    return {
        "width": video.get("width"),
        "height": video.get("height"),
        "profile": video.get("profile"),
        "audio": any(s.get("codec_type") == "audio" for s in streams),
    }


# --------------------------------------------------------------------------------------------
# HLS

SYSTEM_PYTHON = "/usr/bin/python3"  # the one Debian's python3-gi (GStreamer bindings) is for


def hls_uris(hostport: str, playlist_path: str) -> list[str]:
    """The URIs of a playlist (EXT-X-MAP first, then every segment), as the gateway wrote
    them (absolute presigned paths)."""
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("GET", playlist_path)
        r = conn.getresponse()
        body = r.read().decode()
    finally:
        conn.close()
    if r.status != 200:
        raise RuntimeError(f"playlist GET: {r.status} {body[:300]}")
    return playlist_uris(body)


def curl_sequence(server: Server, paths: list[str], out_dir: Path) -> dict:
    """GETs `paths` one after the other on one connection (as a player fetches segments);
    every answer must be 200. Returns the wall time of each and of all."""
    args = ["curl", "-sS", "-w", "%{http_code} %{time_total} %{size_download}\\n"]
    for i, p in enumerate(paths):
        args += ["-o", str(out_dir / f"get-{i}"), f"http://{server.hostport}{p}"]
    with Window(server) as w:
        p = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    lines = [ln.split() for ln in p.stdout.splitlines() if ln.strip()]
    if p.returncode != 0 or len(lines) != len(paths) or any(ln[0] != "200" for ln in lines):
        raise RuntimeError(f"segment GETs failed: rc {p.returncode}, {p.stdout[-600:]} {p.stderr[-400:]}")
    for i in range(len(paths)):
        (out_dir / f"get-{i}").unlink()
    return {**w.fields(), "each_s": [float(ln[1]) for ln in lines], "bytes": sum(int(ln[2]) for ln in lines)}


def gst_seek(args: list[str], start_s: float, stop_s: float) -> dict:
    """The reference for a cold HLS segment: `args` (a gst-launch-1.0 description) run from
    `start_s` to `stop_s` by gst_seek.py; `first_segment_s` is its time from building the
    pipeline to EOS, the child's CPU and peak RSS its whole run's."""
    with tempfile.TemporaryFile() as err_file, Window(None) as w:
        proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "gst_seek.py"), str(start_s), str(stop_s), *args],
                                stdout=subprocess.PIPE, stderr=err_file)
        out = proc.stdout.read().decode()
        ru = reap(proc)
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"gst_seek.py failed ({proc.returncode}): {err[-600:]}")
    cpu = ru.ru_utime + ru.ru_stime
    return {**w.fields(), "first_segment_s": float(out.strip()), "server_cpu_s": cpu,
            "client_cpu_s": w.client_cpu_s - cpu, "peak_rss_kib": ru.ru_maxrss}
