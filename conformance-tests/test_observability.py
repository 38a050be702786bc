"""Metrics and logs of a real gateway: Prometheus text on ``--metrics-listen`` (no auth) and at
``/_nebula/v1/metrics`` (signed), counters that move with real boto3 requests, the log ring at
``/_nebula/v1/logs`` (signed only; ``level``, ``since``, ``limit``) and ``nebula logs [-n] [-f]``.

The ``nebula`` binary is ``$NEBULA_CLI_BIN`` or ``<repo>/target/debug/nebula``.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, cli_bin, Gateway, free_port, new_bucket_name, run
from nebula_helpers import Creds, cli_env

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    """A gateway with the metrics listener on its own port."""
    mport = free_port()
    g = Gateway(
        tmp_path_factory.mktemp("gw-observability"),
        extra_args=["--metrics-listen", f"127.0.0.1:{mport}"],
    )
    g.metrics_port = mport
    g.start()
    yield g
    g.assert_clean_exit()


@pytest.fixture(scope="module")
def s3(obs):
    return obs.boto3_client()


@pytest.fixture(scope="module")
def bucket(obs, s3):
    name = new_bucket_name("obs")
    s3.create_bucket(Bucket=name)
    return name


def get_plain(port: int, path: str, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read().decode()
    finally:
        conn.close()


def parse(text: str) -> dict[str, object]:
    """Families by name; prometheus_client's parser raises on any malformed line."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(g) -> dict[str, object]:
    status, ctype, text = get_plain(g.metrics_port, "/metrics")
    assert status == 200, text
    assert ctype.startswith(PROMETHEUS_TEXT), ctype
    return parse(text)


def sample(families, name: str, **labels) -> float:
    """The value of one sample (0 when the series does not exist yet)."""
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def api(g, path: str, query=None, sign: bool = True):
    r = g.raw().request("GET", f"/_nebula/v1/{path}", query=query or [], sign=sign)
    return r


def logs(g, **params) -> dict:
    r = api(g, "logs", [(k, str(v)) for k, v in params.items()])
    assert r.status == 200, r
    assert r.header("content-type") == "application/json", r
    return json.loads(r.body)


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_listener_serves_prometheus_text_without_auth(obs, s3, bucket):
    s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")
    fams = scrape(obs)
    for name, kind in [
        ("nebula_requests", "counter"),
        ("nebula_request_duration_seconds", "histogram"),
        ("nebula_received_bytes", "counter"),
        ("nebula_sent_bytes", "counter"),
        ("nebula_active_connections", "gauge"),
        ("nebula_requests_in_flight", "gauge"),
        ("nebula_media_pipelines", "gauge"),
        ("nebula_media_transcode_slots", "gauge"),
        ("nebula_jobs", "gauge"),
        ("nebula_cache_lookups", "counter"),
        ("nebula_catalog_duration_seconds", "histogram"),
        ("nebula_data_disk_free_bytes", "gauge"),
        ("nebula_data_disk_available_bytes", "gauge"),
        ("nebula_data_disk_total_bytes", "gauge"),
        ("nebula_build_info", "gauge"),
    ]:
        assert name in fams, f"{name} missing from {sorted(fams)}"
        assert fams[name].type == kind, (name, fams[name].type)
    st = os.statvfs(obs.data_dir)
    assert sample(fams, "nebula_data_disk_total_bytes") == st.f_blocks * st.f_frsize
    assert sample(fams, "nebula_data_disk_available_bytes") > 0
    # The job queue is counted from the catalog: every status has a series.
    for status in ["pending", "processing", "completed", "failed", "cancelled"]:
        assert any(s.labels == {"status": status} for s in fams["nebula_jobs"].samples), status
    # The listener serves metrics and nothing else: no S3, no API.
    status, _, body = get_plain(obs.metrics_port, f"/{bucket}/warm-up")
    assert status == 404 and "only GET /metrics" in body
    status, _, _ = get_plain(obs.metrics_port, "/_nebula/v1/ping")
    assert status == 404
    status, _, _ = get_plain(obs.metrics_port, "/metrics", method="POST")
    assert status == 405


def test_signed_metrics_on_the_main_listener(obs):
    r = api(obs, "metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith(PROMETHEUS_TEXT)
    assert "nebula_requests" in parse(r.body.decode())
    anon = api(obs, "metrics", sign=False)
    assert anon.status == 403, anon
    assert json.loads(anon.body)["error"]["code"] == "AccessDenied"


def test_counters_move_with_real_requests(obs, s3, bucket):
    body = os.urandom(10_000)
    before = scrape(obs)
    s3.put_object(Bucket=bucket, Key="counted.bin", Body=body)
    assert s3.get_object(Bucket=bucket, Key="counted.bin")["Body"].read() == body
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="not-there")
    after = scrape(obs)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("nebula_requests_total", op="PutObject", status="200") == 1
    assert delta("nebula_requests_total", op="GetObject", status="200") == 1
    assert delta("nebula_requests_total", op="GetObject", status="404") == 1
    # boto3 may frame the upload (aws-chunked with a checksum trailer): at least the bytes.
    assert delta("nebula_received_bytes_total", op="PutObject") >= len(body)
    assert delta("nebula_sent_bytes_total", op="GetObject") >= len(body)
    assert delta("nebula_request_duration_seconds_count", op="PutObject") == 1
    assert delta("nebula_request_duration_seconds_count", op="GetObject") == 2
    # The GET looked up the object's metadata; the PUT waited for the catalog.
    looked_up = delta("nebula_cache_lookups_total", cache="metadata", result="hit") + delta(
        "nebula_cache_lookups_total", cache="metadata", result="miss"
    )
    assert looked_up >= 1
    assert delta("nebula_catalog_duration_seconds_count", op="write") >= 1
    # A request s3s refuses before naming an operation (bad signature) is counted as Unknown.
    bad = obs.raw().with_creds(Creds(obs.access_key, "wrong-secret", obs.region))
    assert bad.get(bucket, "counted.bin").status == 403
    assert sample(scrape(obs), "nebula_requests_total", op="Unknown", status="403") >= 1


def test_api_requests_are_counted_by_endpoint(obs):
    before = scrape(obs)
    assert api(obs, "ping").status == 200
    assert api(obs, "logs", [("limit", "1")]).status == 200
    after = scrape(obs)
    for op in ["ApiPing", "ApiLogs"]:
        assert sample(after, "nebula_requests_total", op=op, status="200") == sample(
            before, "nebula_requests_total", op=op, status="200"
        ) + 1, op


def test_active_connections_gauge(obs):
    def connections():
        return sample(scrape(obs), "nebula_active_connections")

    base = connections()
    socks = [socket.create_connection(("127.0.0.1", obs.port)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while connections() < base + 3:
            assert time.monotonic() < deadline, "open connections not counted"
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while connections() > base:
        assert time.monotonic() < deadline, "closed connections still counted"
        time.sleep(0.05)


# -- logs ------------------------------------------------------------------------------------------


def request_lines(page, method: str, path: str):
    return [
        l
        for l in page["lines"]
        if l["target"] == "nebula::request" and l["fields"].get("method") == method and l["fields"].get("path") == path
    ]


def test_logs_api_returns_the_request_lines_just_made(obs, s3, bucket):
    key = f"logged-{uuid.uuid4().hex[:8]}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello")
    s3.head_object(Bucket=bucket, Key=key)
    page = logs(obs, limit=50)
    put = request_lines(page, "PUT", f"/{bucket}/{key}")
    head = request_lines(page, "HEAD", f"/{bucket}/{key}")
    assert len(put) == 1 and len(head) == 1, page["lines"][-5:]
    line = put[0]
    assert set(line) >= {"seq", "time", "level", "target", "message", "fields"}
    assert line["level"] == "INFO" and line["message"] == "request"
    assert line["fields"]["status"] == 200 and line["fields"]["op"] == "PutObject"
    assert head[0]["fields"]["op"] == "HeadObject"
    assert line["time"].endswith("Z") and line["time"][:4].isdigit()
    assert head[0]["seq"] > line["seq"]
    assert page["next"] >= head[0]["seq"]
    seqs = [l["seq"] for l in page["lines"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_level_filter(obs, bucket):
    # A server-side failure (501: an S3 operation the gateway does not implement) is logged
    # at WARN; ordinary requests at INFO.
    r = obs.raw().request("GET", f"/{bucket}", query=[("website", "")])
    assert r.status == 501, r
    everything = logs(obs, limit=200)
    warn = logs(obs, level="warn", limit=200)
    assert warn["lines"], "the 501 is not among the WARN lines"
    assert all(l["level"] in ("WARN", "ERROR") for l in warn["lines"]), warn["lines"]
    assert any(l["fields"].get("status") == 501 for l in warn["lines"])
    assert any(l["level"] == "INFO" for l in everything["lines"])
    assert len(warn["lines"]) < len(everything["lines"])
    bad = api(obs, "logs", [("level", "loud")])
    assert bad.status == 400 and json.loads(bad.body)["error"]["code"] == "InvalidArgument"


def test_since_pages_forward(obs, s3, bucket):
    start = logs(obs, limit=1)["next"]
    keys = [f"paged-{i}" for i in range(4)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"p")
    whole = logs(obs, since=start, limit=1000)
    assert whole["missed"] == 0
    assert all(l["seq"] > start for l in whole["lines"])
    for k in keys:
        assert request_lines(whole, "PUT", f"/{bucket}/{k}"), k
    # The same lines, two at a time (each page request logs a line of its own, after the end
    # of `whole`).
    paged, since = [], start
    while since < whole["next"]:
        page = logs(obs, since=since, limit=2)
        assert 1 <= len(page["lines"]) <= 2 and page["missed"] == 0
        assert page["lines"][0]["seq"] > since
        paged += page["lines"]
        since = page["next"]
    assert [l["seq"] for l in paged if l["seq"] <= whole["next"]] == [l["seq"] for l in whole["lines"]]


def test_logs_need_a_signature(obs):
    anon = api(obs, "logs", sign=False)
    assert anon.status == 403, anon
    assert json.loads(anon.body)["error"]["code"] == "AccessDenied"


def test_secret_key_never_in_logs(obs, s3, bucket):
    # Presigned URLs carry a signature derived from the secret, never the secret itself; the
    # gateway's own messages must not quote it either.
    s3.put_object(Bucket=bucket, Key="secret-check", Body=b"s")
    page = api(obs, "logs", [("limit", "10000"), ("level", "trace")])
    assert page.status == 200
    assert obs.secret_key.encode() not in page.body


# -- nebula logs -----------------------------------------------------------------------------------


def test_cli_logs_prints_the_last_lines(obs, s3, bucket, tmp_path):
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"cli-{i}", Body=b"c")
    p = run([cli_bin(), "logs", "-n", "5"], env=cli_env(obs, tmp_path), timeout=60)
    lines = p.stdout_text.splitlines()
    assert len(lines) == 5, p.stdout_text
    assert all(" INFO " in l or " WARN " in l for l in lines), lines
    assert any("nebula::request: request" in l and "method=" in l for l in lines), lines
    j = run([cli_bin(), "logs", "-n", "2", "--json"], env=cli_env(obs, tmp_path), timeout=60)
    objs = [json.loads(l) for l in j.stdout_text.splitlines()]
    assert len(objs) == 2 and objs[0]["seq"] < objs[1]["seq"]
    warn = run([cli_bin(), "logs", "--level", "warn", "-n", "100"], env=cli_env(obs, tmp_path), timeout=60)
    assert " INFO " not in warn.stdout_text


def test_cli_logs_follow_shows_new_lines(obs, s3, bucket, tmp_path):
    proc = subprocess.Popen(
        [cli_bin(), "logs", "-f", "-n", "1"],
        env=cli_env(obs, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        key = f"followed-{uuid.uuid4().hex[:8]}"
        seen, out = False, b""
        deadline = time.monotonic() + 20
        # The first line (the tail) arrives before the new request is made.
        while b"\n" not in out and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
        assert b"\n" in out, f"no first line; exit status {proc.poll()}"
        s3.put_object(Bucket=bucket, Key=key, Body=b"f")
        while not seen and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
                seen = f"path=/{bucket}/{key}".encode() in out
        assert seen, out.decode(errors="replace")[-2000:]
    finally:
        proc.terminate()
        proc.wait(10)
