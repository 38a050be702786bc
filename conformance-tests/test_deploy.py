"""Deployment files and secure defaults.

* ``compose/``: ``docker-compose config`` validates the compose file (with and without the
  ``postgres`` profile; Debian's docker-compose 1.29, no engine needed), ``.env.example`` and
  the compose environment name every setting ``serve --help`` lists, the Dockerfile's health
  check path answers 200 on a running gateway, ``systemd-analyze verify`` accepts the unit.
* ``compose/cluster/``: the two-gateway example validates the same way (both gateways on one
  volume and one PostgreSQL, keys required), and its ``nginx.conf`` runs in the real nginx in
  front of two real gateways: signed S3 requests of every kind pass and both gateways serve.
* Refusal: a non-loopback listener with an empty, short or sample secret does not start.
* TLS: ``--tls-cert/--tls-key`` with a self-signed certificate made here by ``openssl``; the aws
  CLI and curl (HTTP/1.1 and h2 by ALPN) work over https, plain HTTP to that port fails cleanly.
* Limits: a client trickling headers, or sending nothing, is cut off by the header timeout; a
  PUT whose body stalls fails after the body timeout and leaves no object and no temp file
  (while a slow but steady one succeeds); oversized headers get 431 or a closed connection;
  an oversized XML body gets ``MaxMessageLengthExceeded`` before it is sent.
* ``--public-bucket``: unsigned reads and listings of that bucket work, unsigned writes and
  deletes there and any unsigned request elsewhere get 403 ``AccessDenied``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AWS_BIN, REPO, Gateway, gateway_bin, new_bucket_name, run, sanitized_environ
from nebula_helpers import UNSIGNED, Creds, object_path, sign_headers, xml_error_code
from test_catalog import pg  # noqa: F401  (a fixture: the throwaway PostgreSQL)

COMPOSE = REPO / "compose"
CLUSTER = COMPOSE / "cluster"
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------
# helpers


def help_env_vars() -> list[str]:
    """The environment variable of every `serve` setting, from `--help`."""
    p = run([str(gateway_bin()), "serve", "--help"], timeout=30)
    names = re.findall(r"\[env: ([A-Z0-9_]+)", p.stdout_text)
    assert len(names) >= 20, p.stdout_text
    return sorted(set(names))


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (scripts/setup.sh --test installs it)")
    env = sanitized_environ()
    # Only compose/.env (absent in a clean tree) may feed the file, not this machine's settings.
    for k in list(env):
        if k.startswith("NEBULA_") or k in ("DATABASE_URL", "RENDER_GID", "POSTGRES_PASSWORD"):
            del env[k]
    return run(["docker-compose", "-f", str(COMPOSE / "docker-compose.yml"), *args], env=env, cwd=REPO, check=check)


def wait_closed(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closes `sock` (EOF or reset), reading and dropping whatever it
    sends; None if still open after `limit`."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Whatever the server sends until it closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not b:
            break
        data += b
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"content-length: *(\d+)", head, re.I)
            if m and len(body) >= int(m.group(1)):
                break
    return data


def signed_head(g: Gateway, method: str, path: str, query: list[tuple[str, str]], headers: dict) -> bytes:
    """A signed request head (UNSIGNED-PAYLOAD) as bytes, for raw-socket requests."""
    headers = {"host": g.hostport, **headers}
    headers, _ = sign_headers(g.creds, method, path, query, headers, UNSIGNED)
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(raw: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------
# compose/, Dockerfile, systemd unit


def test_compose_config_validates():
    compose("config", "-q")
    compose("--profile", "postgres", "config", "-q")
    services = compose("--profile", "postgres", "config", "--services").stdout_text.split()
    assert sorted(services) == ["gateway", "postgres"]
    resolved = compose("config").stdout_text
    # Secure and useful defaults as the engine would see them (no compose/.env).
    assert "127.0.0.1:9000:9000" in resolved or "host_ip: 127.0.0.1" in resolved, resolved
    assert "/dev/dri:/dev/dri" in resolved
    assert "dockerfile: compose/Dockerfile" in resolved
    assert "/_nebula/v1/ping" in resolved
    assert "profiles:" in resolved and "postgres:16" in resolved


def test_env_example_and_compose_name_every_setting():
    names = help_env_vars()
    example = (COMPOSE / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    missing = [n for n in names if n not in listed]
    assert not missing, f".env.example lacks {missing}"
    yml = (COMPOSE / "docker-compose.yml").read_text()
    passed = set(re.findall(r"^\s*-\s*([A-Z][A-Z0-9_]*)(?:=|\s*$)", yml, re.M))
    missing = [n for n in names if n not in passed]
    assert not missing, f"docker-compose.yml does not pass {missing} to the gateway"


def cluster_compose(*args: str, settings: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """docker-compose on compose/cluster/, fed only `settings` (its .env is absent in a clean tree)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (scripts/setup.sh --test installs it)")
    env = {k: v for k, v in sanitized_environ().items()
           if not k.startswith("NEBULA_") and k not in ("DATABASE_URL", "POSTGRES_PASSWORD")}
    env.update(settings)
    return run(["docker-compose", "-f", str(CLUSTER / "docker-compose.yml"), *args], env=env, cwd=REPO, check=check)


def test_cluster_compose_config_validates():
    settings = {"NEBULA_ACCESS_KEY": "cluster-admin", "NEBULA_SECRET_KEY": "s" * 40, "POSTGRES_PASSWORD": "pw-1"}
    cluster_compose("config", "-q", settings=settings)
    services = cluster_compose("config", "--services", settings=settings).stdout_text.split()
    assert sorted(services) == ["gateway1", "gateway2", "lb", "postgres"], services
    resolved = cluster_compose("config", settings=settings).stdout_text
    # Both gateways: one volume, one database, one admin pair, each its own advertised address.
    assert resolved.count("nebula-data:/data") == 2, resolved
    assert resolved.count("DATABASE_URL: postgres://nebula:pw-1@postgres:5432/nebula") == 2, resolved
    assert resolved.count(f"NEBULA_SECRET_KEY: {'s' * 40}") == 2, resolved
    for n in (1, 2):
        assert f"NEBULA_ADVERTISE_URL: http://gateway{n}:9000" in resolved, resolved
    assert resolved.count("dockerfile: compose/Dockerfile") == 2 and "dockerfile: lb.Dockerfile" in resolved
    # Only the load balancer is published, on loopback unless told otherwise.
    assert resolved.count("9000:9000") == 1 and ("127.0.0.1:9000:9000" in resolved or "host_ip: 127.0.0.1" in resolved)
    # A missing secret stops compose with a message naming it instead of starting gateways
    # that would each generate keys of their own.
    p = cluster_compose("config", "-q", settings={"POSTGRES_PASSWORD": "pw"}, check=False)
    assert p.returncode != 0 and "NEBULA_ACCESS_KEY" in p.stdout_text + p.stderr_text, p
    example = (CLUSTER / ".env.example").read_text()
    for name in ("NEBULA_ACCESS_KEY", "NEBULA_SECRET_KEY", "POSTGRES_PASSWORD", "NEBULA_PUBLISH"):
        assert re.search(rf"^#?{name}=", example, re.M), name
    # Its sample secret is one a gateway on a public listener refuses (see the refusal tests).
    assert re.search(r"^NEBULA_SECRET_KEY=(.+)$", example, re.M).group(1) == _env_example_secret()
    lb = (CLUSTER / "lb.Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm-slim", lb, re.M) and "apt-get install" in lb and " nginx" in lb
    assert "COPY nginx.conf /etc/nginx/nginx.conf" in lb
    upstreams = re.findall(r"^\s*server (\S+):9000", (CLUSTER / "nginx.conf").read_text(), re.M)
    assert upstreams == ["gateway1", "gateway2"], upstreams


def test_cluster_nginx_conf_spreads_s3_over_two_gateways(pg, tmp_path_factory, tmp_path):  # noqa: F811
    """compose/cluster/nginx.conf, run by the real nginx in front of two real gateways on one
    PostgreSQL and one folder (only the upstream addresses, the port and temp paths are
    changed): signed S3 requests of every kind go through, and both gateways serve them."""
    from test_cluster import Cluster

    cluster = Cluster(tmp_path_factory, pg)
    gws = [cluster.start(), cluster.start()]
    port = _free_any_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = (CLUSTER / "nginx.conf").read_text()
    for n, g in enumerate(gws, 1):
        conf = conf.replace(f"server gateway{n}:9000", f"server 127.0.0.1:{g.port}")
    conf = conf.replace("listen 9000;", f"listen 127.0.0.1:{port};")
    temps = "".join(f"    {t}_temp_path {prefix / t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = conf.replace("http {\n", "http {\n" + temps, 1)
    (prefix / "nginx.conf").write_text(conf)
    cmd = ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")]
    run([*cmd, "-t"], timeout=30)
    proc = subprocess.Popen([*cmd, "-g", f"daemon off; pid {prefix / 'nginx.pid'};"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "nginx did not listen"
                time.sleep(0.05)
        import boto3
        from botocore.config import Config

        a = gws[0]
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=a.access_key,
            aws_secret_access_key=a.secret_key, region_name=a.region,
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )

        def served() -> list[int]:
            out = []
            for g in gws:
                body = g.raw().request("GET", "/_nebula/v1/metrics").body.decode()
                out.append(sum(int(n) for n in re.findall(r'^nebula_requests_total\{op="(?!Api)\w+",status="2\d\d"\} (\d+)', body, re.M)))
            return out

        before = served()
        bucket = new_bucket_name("lb")
        s3.create_bucket(Bucket=bucket)
        bodies = {f"k{i}.bin": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(12)}
        for k, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=k, Body=body)
        for k, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == body
        got = s3.get_object(Bucket=bucket, Key="k3.bin", Range="bytes=10-19")["Body"].read()
        assert got == bodies["k3.bin"][10:20]
        listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(bodies)
        # A streamed multipart upload of 2 x 5 MiB + 1 byte: parts spread over both gateways.
        part = b"p" * (5 * MIB)
        up = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")["UploadId"]
        parts = [
            {"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=up, PartNumber=n, Body=body)["ETag"]}
            for n, body in ((1, part), (2, part), (3, b"z"))
        ]
        s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=up, MultipartUpload={"Parts": parts})
        assert hashlib.md5(s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()).hexdigest() == hashlib.md5(part + part + b"z").hexdigest()
        s3.delete_object(Bucket=bucket, Key="k0.bin")
        assert "k0.bin" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        after = served()
        spread = [x - y for x, y in zip(after, before)]
        assert sum(spread) >= 30 and min(spread) >= 5, spread
    finally:
        proc.terminate()
        proc.wait(10)
        cluster.close()


def test_dockerfile_shape_and_healthcheck_path_answers(gw):
    text = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"^FROM rust:1\.95-bookworm AS builder", text, re.M)
    assert re.search(r"^FROM debian:bookworm-slim", text, re.M)
    assert "--locked" in text and "-p nebula-gateway" in text and "-p nebula-cli" in text
    assert re.search(r"^USER nebula", text, re.M) and "--uid 10001" in text
    assert "NEBULA_LISTEN=0.0.0.0:9000" in text and "NEBULA_DATA_DIR=/data" in text
    health = text[text.index("HEALTHCHECK"):]
    path = re.search(r"https?://127\.0\.0\.1:\$\{p\}(/[^\"' ]+)", health).group(1)
    assert path == "/_nebula/v1/ping"
    # The same command the container runs, against a real gateway (unsigned, as curl sends it).
    p = run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", gw.endpoint + path], env=gw.client_env())
    assert p.stdout_text == "200"
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "target/" in ignore and ".git" in ignore


def test_systemd_unit_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = (COMPOSE / "nebula-gateway.service").read_text()
    for needle in (
        "User=nebula",
        "EnvironmentFile=-/etc/nebula/gateway.env",
        "ExecStart=/usr/local/bin/nebula-gateway serve",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/nebula",
        "DevicePolicy=closed",
        "DeviceAllow=char-drm rw",
        "TimeoutStopSec=40",
        "MemoryDenyWriteExecute=no",
    ):
        assert needle in unit, needle
    # verify insists that ExecStart exists: point it at the binary under test.
    copy = tmp_path / "nebula-gateway.service"
    copy.write_text(unit.replace("/usr/local/bin/nebula-gateway", str(gateway_bin())))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
    out = p.stdout + p.stderr
    # In a container without systemd as PID 1, verify cannot load sysinit.target; that line is
    # about the machine, not the unit. Everything about the unit file names it.
    about_unit = [l for l in out.splitlines() if str(copy) in l]
    assert p.returncode == 0, out
    assert not about_unit, "\n".join(about_unit)


# ------------------------------------------------------------------------------------------
# refusal of weak secrets on exposed listeners


def _env_example_secret() -> str:
    m = re.search(r"^#?NEBULA_SECRET_KEY=(.+)$", (COMPOSE / ".env.example").read_text(), re.M)
    return m.group(1).strip()


@pytest.mark.parametrize("secret", ["minioadmin", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "tooShort1", "env-example"])
def test_weak_secret_on_public_listener_refused(tmp_path, secret):
    if secret == "env-example":
        secret = _env_example_secret()
    port = _free_any_port()
    env = sanitized_environ()
    env = {k: v for k, v in env.items() if not k.startswith("NEBULA_")}
    env["RUST_BACKTRACE"] = "0"
    p = subprocess.run(
        [str(gateway_bin()), "serve", "--data-dir", str(tmp_path / "data"), "--listen", f"0.0.0.0:{port}",
         "--access-key", "nebula-admin", "--secret-key", secret],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert p.returncode != 0, p.stdout + p.stderr
    assert "refusing to start" in p.stderr and f"0.0.0.0:{port}" in p.stderr, p.stderr


def test_strong_secret_on_public_listener_starts(tmp_path):
    g = Gateway(tmp_path / "gw")
    g.listen = f"0.0.0.0:{g.port}"
    g.start()
    try:
        r = g.raw().put_bucket(new_bucket_name("pub"))
        assert r.status == 200, r
        assert f"http://0.0.0.0:{g.port}" in g.log_text()
    finally:
        g.assert_clean_exit()


def test_weak_secret_on_loopback_is_allowed(tmp_path):
    """Loopback is the developer's own machine: sample keys are fine there."""
    g = Gateway(tmp_path / "gw", access_key="minioadmin", secret_key="minioadmin")
    g.start()
    try:
        assert g.raw().put_bucket(new_bucket_name("dev")).status == 200
    finally:
        g.assert_clean_exit()


def _free_any_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=nebula-test",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory, tls_files):
    cert, key = tls_files
    g = Gateway(tmp_path_factory.mktemp("gw-tls"), tls_ca=cert,
                extra_args=["--tls-cert", str(cert), "--tls-key", str(key), "--header-timeout-secs", "3"])
    g.start()
    yield g
    g.assert_clean_exit()


def test_tls_banner_says_https(tls_gw):
    assert f"listening on https://127.0.0.1:{tls_gw.port}" in tls_gw.log_text()


def test_tls_aws_cli(tls_gw, tls_files, tmp_path):
    cert, _ = tls_files
    bucket = new_bucket_name("tls")
    env = tls_gw.client_env()
    base = [AWS_BIN, "--endpoint-url", tls_gw.endpoint, "--ca-bundle", str(cert)]
    run(base + ["s3", "mb", f"s3://{bucket}"], env=env)
    src = tmp_path / "hello.txt"
    src.write_bytes(b"over TLS\n" * 1000)
    run(base + ["s3", "cp", str(src), f"s3://{bucket}/hello.txt"], env=env)
    listing = run(base + ["s3", "ls", f"s3://{bucket}/"], env=env).stdout_text
    assert "hello.txt" in listing
    buckets = run(base + ["s3", "ls"], env=env).stdout_text
    assert bucket in buckets
    out = tmp_path / "back.txt"
    run(base + ["s3", "cp", f"s3://{bucket}/hello.txt", str(out)], env=env)
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("proto,version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_tls_curl_alpn(tls_gw, tls_files, proto, version):
    cert, _ = tls_files
    p = run(["curl", "-sS", proto, "--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             tls_gw.endpoint + "/_nebula/v1/ping"], env=tls_gw.client_env())
    assert p.stdout_text == f"200 {version}"


def test_plain_http_to_tls_port_fails_cleanly(tls_gw, tls_files):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", tls_gw.port), timeout=10) as s:
        s.sendall(b"GET /_nebula/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_response(s, 10)
    # rustls answers a non-TLS client with a TLS alert (or nothing) and closes: never HTTP.
    assert not data.startswith(b"HTTP/"), data[:200]
    assert time.monotonic() - started < 8
    # The listener is unharmed.
    cert, _ = tls_files
    p = run(["curl", "-sS", "--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_code}",
             tls_gw.endpoint + "/_nebula/v1/ping"], env=tls_gw.client_env())
    assert p.stdout_text == "200"


def test_tls_handshake_never_finished_is_cut_off(tls_gw):
    with socket.create_connection(("127.0.0.1", tls_gw.port), timeout=10) as s:
        closed = wait_closed(s, 15)
    assert closed is not None and 2 <= closed <= 10, closed


# ------------------------------------------------------------------------------------------
# limits


@pytest.fixture(scope="module")
def limits_gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("gw-limits"), extra_args=["--header-timeout-secs", "3", "--body-timeout-secs", "2"])
    g.start()
    yield g
    g.assert_clean_exit()


def test_slow_loris_headers_cut_off(limits_gw):
    head = f"GET /_nebula/v1/ping HTTP/1.1\r\nHost: {limits_gw.hostport}\r\nUser-Agent: slow-loris\r\n" + "X-Pad: a\r\n" * 20
    with socket.create_connection(("127.0.0.1", limits_gw.port), timeout=10) as s:
        s.settimeout(1.0)
        start = time.monotonic()
        closed_at = None
        for ch in head.encode():
            try:
                s.send(bytes([ch]))
            except OSError:
                closed_at = time.monotonic() - start
                break
            try:
                if s.recv(4096) == b"":
                    closed_at = time.monotonic() - start
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_at = time.monotonic() - start
                break
            if time.monotonic() - start > 20:
                break
    # Header timeout 3 s: one byte a second never completes the head.
    assert closed_at is not None, "the server kept a trickling client for 20 s"
    assert 2.5 <= closed_at <= 8, closed_at


def test_silent_connection_cut_off(limits_gw):
    with socket.create_connection(("127.0.0.1", limits_gw.port), timeout=10) as s:
        closed = wait_closed(s, 15)
    assert closed is not None and 2.5 <= closed <= 8, closed


def test_keep_alive_connection_outlives_the_first_deadline(limits_gw):
    """The deadline for a new connection's first bytes ends once it speaks HTTP/1: requests
    2 s apart on one connection keep working past 3 s (each pause is within the header
    timeout, which hyper applies to every request head)."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", limits_gw.port, timeout=10)
    try:
        for i in range(3):
            if i:
                time.sleep(2)
            c.request("GET", "/_nebula/v1/ping")
            r = c.getresponse()
            r.read()
            assert r.status == 200
    finally:
        c.close()


def _tmp_files(g: Gateway) -> list[Path]:
    # owner.lock marks the gateway's own temp folder as in use (kept while it runs).
    return [p for p in (g.data_dir / ".nebula" / "tmp").rglob("*") if p.is_file() and p.name != "owner.lock"]


def test_stalled_put_body_cut_off_and_cleaned(limits_gw):
    bucket = new_bucket_name("stall")
    assert limits_gw.raw().put_bucket(bucket).status == 200
    path = object_path(bucket, "stalled.bin")
    # More than the gateway gathers in memory (1 MiB) before its first write: the stalled
    # PUT has a temp file on disk, which must go.
    head = signed_head(limits_gw, "PUT", path, [], {"content-length": str(8 * MIB)})
    with socket.create_connection(("127.0.0.1", limits_gw.port), timeout=10) as s:
        s.sendall(head + b"x" * (3 * MIB))
        time.sleep(0.5)
        assert _tmp_files(limits_gw), "the PUT should be streaming into a temp file"
        start = time.monotonic()
        data = read_response(s, 15)
        elapsed = time.monotonic() - start
    # Body timeout 2 s: the request fails (400 IncompleteBody) and the connection closes.
    assert 1 <= elapsed <= 8, (elapsed, data[:300])
    if data:
        assert status_of(data) == 400, data[:500]
        assert b"IncompleteBody" in data, data[:500]
    deadline = time.monotonic() + 5
    while _tmp_files(limits_gw) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _tmp_files(limits_gw), _tmp_files(limits_gw)
    assert limits_gw.raw().head(bucket, "stalled.bin").status == 404
    assert not (limits_gw.data_dir / bucket / "stalled.bin").exists()


def test_slow_but_steady_put_succeeds(limits_gw):
    """The body timeout is for silence, not for the whole upload: 5 pieces 1 s apart pass."""
    bucket = new_bucket_name("steady")
    assert limits_gw.raw().put_bucket(bucket).status == 200
    pieces = [bytes([65 + i]) * 1000 for i in range(5)]

    def slow():
        for p in pieces:
            time.sleep(1)
            yield p

    r = limits_gw.raw().request("PUT", object_path(bucket, "steady.bin"), body=slow(), content_length=5000)
    assert r.status == 200, r
    got = limits_gw.raw().get(bucket, "steady.bin")
    assert got.status == 200 and got.body == b"".join(pieces)


@pytest.mark.parametrize("shape", ["one_huge_header", "too_many_headers"])
def test_oversize_headers_rejected(limits_gw, shape):
    if shape == "one_huge_header":
        extra = "X-Big: " + "a" * (100 * 1024) + "\r\n"
    else:
        extra = "".join(f"X-H{i}: v\r\n" for i in range(150))
    req = f"GET /_nebula/v1/ping HTTP/1.1\r\nHost: {limits_gw.hostport}\r\n{extra}\r\n".encode()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", limits_gw.port), timeout=10) as s:
        try:
            s.sendall(req)
        except OSError:
            pass  # closed while sending: also a refusal
        data = read_response(s, 10)
    assert time.monotonic() - start < 5, "oversize headers must not hang"
    assert data == b"" or status_of(data) == 431, data[:300]


def test_oversize_xml_body_refused_before_it_is_sent(limits_gw):
    bucket = new_bucket_name("xml")
    assert limits_gw.raw().put_bucket(bucket).status == 200
    size = 5 * MIB
    head = signed_head(limits_gw, "POST", object_path(bucket), [("delete", "")],
                       {"content-length": str(size), "content-type": "application/xml", "expect": "100-continue"})
    with socket.create_connection(("127.0.0.1", limits_gw.port), timeout=10) as s:
        s.sendall(head)
        data = read_response(s, 10)
    assert status_of(data) == 400, data[:500]
    assert b"MaxMessageLengthExceeded" in data, data[:500]


def test_largest_legitimate_delete_objects_fits(limits_gw):
    """DeleteObjects at S3's maximum (1000 keys of 1024 bytes: over 1 MiB of XML) is within
    the XML limit."""
    bucket = new_bucket_name("delmax")
    raw = limits_gw.raw()
    assert raw.put_bucket(bucket).status == 200
    seg = "s" * 250
    keys = [f"{seg}/{seg}/{seg}/{seg}/{i:020d}" for i in range(1000)]
    assert all(len(k) == 1024 for k in keys)
    body = ("<Delete>" + "".join(f"<Object><Key>{k}</Key></Object>" for k in keys) + "</Delete>").encode()
    assert len(body) > MIB
    import base64

    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = raw.request("POST", object_path(bucket), query=[("delete", "")], body=body,
                    headers={"content-md5": md5, "content-type": "application/xml"})
    assert r.status == 200, r
    assert r.body.count(b"<Deleted>") == 1000


# ------------------------------------------------------------------------------------------
# public-read buckets


@pytest.fixture(scope="module")
def pub_gw(tmp_path_factory):
    public, other_public = new_bucket_name("pub"), new_bucket_name("pub2")
    g = Gateway(tmp_path_factory.mktemp("gw-public"),
                extra_args=["--public-bucket", public, "--public-bucket", other_public])
    g.start()
    raw = g.raw()
    private = new_bucket_name("priv")
    for b in (public, other_public, private):
        assert raw.put_bucket(b).status == 200
        assert raw.put(b, "docs/readme.txt", b"hello public world\n").status == 200
    g.buckets = {"public": public, "other_public": other_public, "private": private}
    yield g
    g.assert_clean_exit()


def anon(g: Gateway, method: str, path: str, *extra: str) -> tuple[int, bytes]:
    """An unsigned request with curl: (status, body)."""
    cmd = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", *extra, g.endpoint + path]
    if method == "HEAD":
        cmd = ["curl", "-sS", "-I", "-o", "/dev/null", "-w", "\n%{http_code}", *extra, g.endpoint + path]
    p = run(cmd, env=g.client_env())
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), body


def test_public_bucket_anonymous_reads(pub_gw):
    for b in (pub_gw.buckets["public"], pub_gw.buckets["other_public"]):
        code, body = anon(pub_gw, "GET", f"/{b}/docs/readme.txt")
        assert (code, body) == (200, b"hello public world\n")
        code, _ = anon(pub_gw, "HEAD", f"/{b}/docs/readme.txt")
        assert code == 200
        code, body = anon(pub_gw, "GET", f"/{b}?list-type=2&prefix=docs/")
        assert code == 200 and b"<Key>docs/readme.txt</Key>" in body, body
        code, body = anon(pub_gw, "GET", f"/{b}")
        assert code == 200 and b"<Key>docs/readme.txt</Key>" in body, body


def test_public_bucket_anonymous_media_request_reaches_get_object(pub_gw):
    """`?quality=` is GetObject with parameters: allowed, and answered by the media layer
    (415: not a video; 501 on a machine without GStreamer), never 403."""
    code, body = anon(pub_gw, "GET", f"/{pub_gw.buckets['public']}/docs/readme.txt?quality=480")
    assert code in (415, 501), (code, body)
    assert xml_error_code(body) in ("UnsupportedMediaType", "NotImplemented"), body


def test_public_bucket_anonymous_writes_denied(pub_gw):
    b = pub_gw.buckets["public"]
    code, body = anon(pub_gw, "PUT", f"/{b}/evil.txt", "--data-binary", "x")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    code, body = anon(pub_gw, "DELETE", f"/{b}/docs/readme.txt")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    code, body = anon(pub_gw, "DELETE", f"/{b}")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    # Nothing changed.
    assert pub_gw.raw().get(b, "docs/readme.txt").status == 200
    assert pub_gw.raw().head(b, "evil.txt").status == 404


def test_anonymous_requests_elsewhere_denied(pub_gw):
    p = pub_gw.buckets["private"]
    code, body = anon(pub_gw, "GET", f"/{p}/docs/readme.txt")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    code, body = anon(pub_gw, "GET", f"/{p}?list-type=2")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    code, body = anon(pub_gw, "GET", "/")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body
    code, body = anon(pub_gw, "PUT", f"/{new_bucket_name('anon')}")
    assert code == 403 and xml_error_code(body) == "AccessDenied", body


def test_signed_requests_unchanged_on_public_bucket(pub_gw):
    raw = pub_gw.raw()
    b = pub_gw.buckets["public"]
    assert raw.put(b, "signed.txt", b"by the owner").status == 200
    assert raw.delete(b, "signed.txt").status == 204
    # A wrong signature is still an error, not an anonymous read.
    bad = raw.with_creds(Creds(pub_gw.access_key, "wrong-secret-wrong-secret-wrong", pub_gw.region))
    r = bad.get(b, "docs/readme.txt")
    assert r.status == 403 and r.code == "SignatureDoesNotMatch", r
