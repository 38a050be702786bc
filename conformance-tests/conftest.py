"""Fixtures for the Nebula real-client conformance suite.

Every test talks to the real ``nebula-gateway`` binary over loopback.  The binary is taken from
``$NEBULA_GATEWAY_BIN`` or ``<repo>/target/debug/nebula-gateway`` (build it first with
``cargo build -p nebula-gateway``).

* ``gw``            module-scoped gateway: each test module (one per client) gets a fresh process,
                    a fresh data dir and known keys; it is stopped with SIGTERM at the end of the
                    module and must exit with status 0 and without a panic in its log.
* ``start_gateway`` factory for tests that need their own process (RSS measurement, other region,
                    generated credentials, env-var configuration).
* ``raw``           a ``nebula_helpers.RawS3`` signed with the gateway's keys.
* ``client_env``    environment for client subprocesses: the machine's CA-bundle variables and
                    any AWS_* / RCLONE_* settings are removed, the gateway's keys and region set,
                    and the clients' config files pointed at empty files.

Set ``NEBULA_COMPAT_TABLE=/path/table.md`` to write a client compatibility table at the end of
the run (versions are read from the tools at run time).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from nebula_helpers import Creds, RawS3  # noqa: E402

ACCESS_KEY = "NEBULATESTACCESSKEY1"
SECRET_KEY = "nebula/test+Secret0123456789abcdefghijkl"
REGION = "us-east-1"
AWS_BIN = "/usr/bin/aws"  # Debian's awscli; a pyenv shim may shadow `aws` on PATH

# Variables that must never leak from the machine into the clients under test.
_CA_VARS = (
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTPLIB2_CA_CERTS",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
)
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
_EMPTY_CONFIG_DIR = None


def _empty_config_dir() -> Path:
    global _EMPTY_CONFIG_DIR
    if _EMPTY_CONFIG_DIR is None:
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="nebula-client-config-"))
        (d / "aws-config").write_text("")
        (d / "aws-credentials").write_text("")
        (d / "rclone.conf").write_text("")
        _EMPTY_CONFIG_DIR = d
    return _EMPTY_CONFIG_DIR


def sanitized_environ(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    for k in list(env):
        if k in _CA_VARS or k in _PROXY_VARS or k.startswith("AWS_") or k.startswith("RCLONE_"):
            del env[k]
    cfg = _empty_config_dir()
    env["AWS_CONFIG_FILE"] = str(cfg / "aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(cfg / "aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_PAGER"] = ""
    env["RCLONE_CONFIG"] = str(cfg / "rclone.conf")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def pytest_configure(config):
    # boto3 runs inside this process: give it the same clean environment as the subprocesses.
    clean = sanitized_environ()
    for k in list(os.environ):
        if k not in clean:
            del os.environ[k]
    os.environ.update(clean)
    config.addinivalue_line("markers", "slow: long-running case (large objects)")


# --------------------------------------------------------------------------------------------
# gateway process


def gateway_bin() -> Path:
    p = os.environ.get("NEBULA_GATEWAY_BIN")
    return Path(p) if p else REPO / "target" / "debug" / "nebula-gateway"


def _die_with_parent():
    """Runs in the child before exec: SIGTERM the gateway if pytest itself dies (killed by a CI
    timeout, Ctrl-C twice...), so no orphaned gateway keeps its port and memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def cli_bin() -> str:
    """The `nebula` CLI under test: ``$NEBULA_CLI_BIN`` or ``<repo>/target/debug/nebula``."""
    p = os.environ.get("NEBULA_CLI_BIN")
    path = Path(p) if p else REPO / "target" / "debug" / "nebula"
    if not path.exists():
        pytest.fail(f"nebula binary {path} not found: run `cargo build --workspace` or set NEBULA_CLI_BIN")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(
        self,
        workdir: Path,
        *,
        access_key: str | None = ACCESS_KEY,
        secret_key: str | None = SECRET_KEY,
        region: str | None = None,
        use_env: bool = False,
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
        listen: str | None = None,
        tls_ca: Path | None = None,
        data_tmpfs: str | None = None,
        bucket_tmpfs: dict[str, str] | None = None,
    ):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "gateway.log"
        self.port = free_port()
        # Where clients and the readiness probe connect; `listen` overrides --listen (default
        # host:port), e.g. an interface name that resolves to `host`.
        self.host = host
        self.listen = listen
        # With TLS (--tls-cert in extra_args): the CA that signed the gateway's certificate.
        self.tls_ca = tls_ca
        # A tmpfs of this size (e.g. "4m") mounted on the data folder, in a user and mount
        # namespace of the gateway's own (`unshare`): a disk that really fills up.
        self.data_tmpfs = data_tmpfs
        # Bucket folders that are tmpfs mounts of their own (bucket name -> size), inside the
        # data folder's tmpfs: buckets on another disk than the data folder.
        self.bucket_tmpfs = dict(bucket_tmpfs or {})
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region or REGION
        self.use_env = use_env
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    # -- identity -------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://{self.hostport}"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def creds(self) -> Creds:
        return Creds(self.access_key, self.secret_key, self.region)

    def raw(self, creds: Creds | None = None) -> RawS3:
        return RawS3(self.host, self.port, creds or self.creds)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "Gateway":
        binary = gateway_bin()
        if not binary.exists():
            pytest.fail(
                f"gateway binary {binary} not found: run `cargo build -p nebula-gateway` "
                "or set NEBULA_GATEWAY_BIN"
            )
        env = sanitized_environ()
        for k in list(env):
            if k.startswith("NEBULA_"):
                del env[k]
        env["RUST_LOG"] = os.environ.get("NEBULA_TEST_RUST_LOG", "info")
        env["RUST_BACKTRACE"] = "1"
        env["NO_COLOR"] = "1"
        cmd = [str(binary), "serve"]
        if self.use_env:
            env["NEBULA_DATA_DIR"] = str(self.data_dir)
            env["NEBULA_LISTEN"] = self.listen or self.hostport
            if self.access_key:
                env["NEBULA_ACCESS_KEY"] = self.access_key
                env["NEBULA_SECRET_KEY"] = self.secret_key
        else:
            cmd += ["--data-dir", str(self.data_dir), "--listen", self.listen or self.hostport]
            if self.access_key:
                cmd += ["--access-key", self.access_key, "--secret-key", self.secret_key]
        if self.region != REGION or "--region" in self.extra_args:
            cmd += ["--region", self.region]
        cmd += self.extra_args
        if self.data_tmpfs:
            mount = f'mount -t tmpfs -o size={self.data_tmpfs} nebula-data "$0"'
            for name, size in self.bucket_tmpfs.items():
                mount += f' && mkdir "$0/{name}" && mount -t tmpfs -o size={size} nebula-{name} "$0/{name}"'
            mount += ' && exec "$@"'
            cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, str(self.data_dir)] + cmd
        self.cmd = cmd
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"gateway exited early with {self.proc.returncode}: {' '.join(cmd)}\n{self.log_tail()}"
                )
            try:
                if self.tls_ca:
                    import ssl

                    ctx = ssl.create_default_context(cafile=str(self.tls_ca))
                    conn = http.client.HTTPSConnection(self.host, self.port, timeout=2, context=ctx)
                else:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"gateway did not answer on {self.endpoint} within {timeout}s\n{self.log_tail()}")
                time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a graceful exit, return the exit status (-9 if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = -9
                self._log.close()
                return -9
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def assert_clean_exit(self):
        rc = self.stop()
        problems = []
        if rc != 0:
            problems.append(f"exit status {rc} after SIGTERM (expected 0; -9 = had to be killed)")
        log = self.log_text()
        if "panicked at" in log:
            problems.append("panic in gateway log")
        # GLib and GStreamer report a broken assertion (a refcount or state bug) on stderr and
        # go on; nothing else would notice it.
        if "-CRITICAL **" in log:
            problems.append("GLib/GStreamer CRITICAL in gateway log")
        if problems:
            pytest.fail(
                "gateway shutdown: " + "; ".join(problems) + "\n"
                + self.log_grep("panicked", 5) + self.log_grep("-CRITICAL", 5) + self.log_tail(30)
            )

    # -- observation ----------------------------------------------------------------------
    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("VmHWM not found")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("VmRSS not found")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_text().splitlines()
        return "---- gateway log (last %d lines) ----\n%s\n" % (n, "\n".join(lines[-n:]))

    def log_grep(self, needle: str, n: int = 10) -> str:
        lines = [l for l in self.log_text().splitlines() if needle in l]
        return "\n".join(lines[:n]) + ("\n" if lines else "")

    # -- clients --------------------------------------------------------------------------
    def client_env(self, **extra) -> dict:
        env = sanitized_environ()
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        env["AWS_DEFAULT_REGION"] = self.region
        env["AWS_REGION"] = self.region
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def boto3_client(self, **config_kw):
        import boto3
        from botocore.config import Config

        cfg = {"retries": {"max_attempts": 1, "mode": "standard"}, "s3": {"addressing_style": "path"}}
        cfg.update(config_kw)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**cfg),
        )


def new_bucket_name(prefix: str = "b") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
    assert 3 <= len(name) <= 63
    return name


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory):
    """A fresh gateway for the whole test module (one module per client)."""
    name = request.module.__name__.split(".")[-1]
    g = Gateway(tmp_path_factory.mktemp(f"gw-{name}"))
    g.start()
    yield g
    g.assert_clean_exit()


@pytest.fixture
def start_gateway(tmp_path_factory):
    """Factory for a dedicated gateway; every one started is stopped and checked at teardown."""
    started: list[Gateway] = []

    def _start(**kw) -> Gateway:
        g = Gateway(tmp_path_factory.mktemp("gw-own"), **kw)
        started.append(g)
        return g.start()

    yield _start
    for g in started:
        g.assert_clean_exit()


@pytest.fixture(scope="module")
def raw(gw) -> RawS3:
    return gw.raw()


@pytest.fixture
def client_env(gw):
    return gw.client_env()


@pytest.fixture
def bucket(gw):
    """A new empty bucket on the module gateway (created with a raw signed request)."""
    name = new_bucket_name("t")
    r = gw.raw().put_bucket(name)
    assert r.status == 200, f"CreateBucket {name}: {r}"
    return name


def run(cmd, env=None, timeout=600, check=True, input=None, cwd=None) -> subprocess.CompletedProcess:
    """Run a client command, capture output, fail with the whole transcript if it fails."""
    p = subprocess.run(
        cmd,
        env=env,
        timeout=timeout,
        capture_output=True,
        input=input,
        cwd=cwd,
    )
    p.stdout_text = p.stdout.decode(errors="replace")
    p.stderr_text = p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        pytest.fail(
            f"command failed with {p.returncode}: {' '.join(map(str, cmd))}\n"
            f"stdout:\n{p.stdout_text[-4000:]}\nstderr:\n{p.stderr_text[-4000:]}"
        )
    return p


# --------------------------------------------------------------------------------------------
# report helpers: gateway log tail on failure, compatibility table


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("call", "setup"):
        g = item.funcargs.get("gw") if hasattr(item, "funcargs") else None
        if isinstance(g, Gateway):
            rep.sections.append(("nebula-gateway log", g.log_tail(25)))


_RESULTS: dict[str, list[tuple[str, str]]] = {}

CLIENTS = {
    "test_awscli": "aws CLI (Debian awscli)",
    "test_rclone": "rclone",
    "test_s3cmd": "s3cmd",
    "test_boto3": "boto3",
    "test_js_sdk": "AWS SDK for JavaScript v3",
    "test_curl_presigned": "curl (presigned URLs)",
    "test_players": "mpv + ffprobe",
    "test_s3_semantics": "raw SigV4 requests (S3 semantics matrix)",
}


def pytest_runtest_logreport(report):
    mod = report.nodeid.split("::")[0].split("/")[-1].removesuffix(".py")
    name = report.nodeid.split("::")[-1]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "passed" if report.passed else ("skipped" if report.skipped else "failed")
        _RESULTS.setdefault(mod, []).append((name, outcome))
    elif report.when == "teardown" and report.failed:
        _RESULTS.setdefault(mod, []).append((name + " [teardown]", "failed"))


def _version(cmd: list[str], pattern: str = r"(.*)") -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=30).stdout.decode(errors="replace")
        out = out.strip().splitlines()[0] if out.strip() else "?"
        m = re.search(pattern, out)
        return m.group(1).strip() if m else out
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def client_versions() -> dict[str, str]:
    import json

    v = {}
    v["test_awscli"] = _version([AWS_BIN, "--version"], r"(aws-cli/\S+)")
    v["test_rclone"] = _version(["rclone", "version"], r"rclone (\S+)")
    v["test_s3cmd"] = _version(["s3cmd", "--version"], r"version (\S+)")
    try:
        import boto3
        import botocore

        v["test_boto3"] = f"boto3 {boto3.__version__} / botocore {botocore.__version__}"
    except Exception:  # noqa: BLE001
        v["test_boto3"] = "?"
    try:
        pj = json.loads((HERE / "js/node_modules/@aws-sdk/client-s3/package.json").read_text())
        lj = json.loads((HERE / "js/node_modules/@aws-sdk/lib-storage/package.json").read_text())
        pr = json.loads((HERE / "js/node_modules/@aws-sdk/s3-request-presigner/package.json").read_text())
        node = _version(["node", "--version"])
        v["test_js_sdk"] = (
            f"client-s3 {pj['version']}, lib-storage {lj['version']}, "
            f"s3-request-presigner {pr['version']} (node {node})"
        )
    except Exception:  # noqa: BLE001
        v["test_js_sdk"] = "? (node_modules missing)"
    v["test_curl_presigned"] = _version(["curl", "--version"], r"curl (\S+)")
    v["test_players"] = (
        "mpv " + _version(["mpv", "--version"], r"mpv (\S+)")
        + ", ffprobe " + _version(["ffprobe", "-version"], r"version (\S+)")
        + ", gst-launch " + _version(["gst-launch-1.0", "--version"], r"version (\S+)")
    )
    v["test_s3_semantics"] = f"python {sys.version.split()[0]} http.client + own SigV4"
    return v


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("NEBULA_COMPAT_TABLE")
    if not target or not _RESULTS:
        return
    versions = client_versions()
    lines = [
        "| Client | Version tested | Operations covered | Status |",
        "| --- | --- | --- | --- |",
    ]
    for mod, label in CLIENTS.items():
        res = _RESULTS.get(mod)
        if not res:
            continue
        prefix = {"test_js_sdk": "js_", "test_curl_presigned": "curl_presigned_"}.get(mod, mod.removeprefix("test_") + "_")
        counts: dict[str, int] = {}
        for n, _ in res:
            op = n.split("[")[0].removesuffix(" [teardown]").removeprefix("test_").removeprefix(prefix)
            counts[op] = counts.get(op, 0) + 1
        ops = [f"{op} (×{c})" if c > 1 else op for op, c in counts.items()]
        passed = sum(1 for _, o in res if o == "passed")
        failed = [n for n, o in res if o == "failed"]
        skipped = sum(1 for _, o in res if o == "skipped")
        status = f"{passed}/{len(res)} pass"
        if skipped:
            status += f", {skipped} skipped"
        if failed:
            status += "; failing: " + ", ".join(f.removeprefix("test_") for f in failed)
        lines.append(f"| {label} | {versions.get(mod, '?')} | {', '.join(ops)} | {status} |")
    gb = gateway_bin()
    header = (
        f"# Nebula client compatibility\n\nGenerated by `conformance-tests` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} against `{gb}`.\n\n"
    )
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(header + "\n".join(lines) + "\n")
