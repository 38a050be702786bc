"""The servers under test (nginx, nebula-gateway, several gateways behind compose/cluster's
nginx, with their PostgreSQL catalog) and what /proc tells about them.

All serve the same data folder: bucket = folder ``DATA/<bucket>``, object = file. Each is
started fresh for every measured run and stopped after it, so only one server is alive at a time
and the peak RSS (VmHWM) belongs to that run alone.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def host_busy_s() -> float:
    """CPU time spent by everything on the machine (all cores, not idle or iowait), in seconds."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / CLK_TCK


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


class Server:
    """A server process; subclasses say how to start it and which processes do the work."""

    name = ""

    def __init__(self, workdir: Path, data_dir: Path, port: int):
        self.workdir = workdir
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def pids(self) -> list[int]:
        """Processes whose CPU counts as the server's."""
        return [self.proc.pid]

    def rss_pids(self) -> list[int]:
        """Processes whose peak RSS is reported (summed)."""
        return self.pids()

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not listen on {self.hostport} within {timeout:.0f} s")
                time.sleep(0.05)
        self.wait_idle(deadline)

    def wait_idle(self, deadline: float) -> None:
        """Waits until start-up work (catalog scan, media probes) has stopped using CPU."""
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            before = self.cpu_s()
            time.sleep(0.2)
            quiet = quiet + 1 if self.cpu_s() - before <= 0.02 else 0

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += proc_cpu_s(pid)
            except FileNotFoundError:
                pass
        return total

    def peak_rss_kib(self) -> int:
        return sum(proc_hwm_kib(pid) for pid in self.rss_pids())

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])


class Nginx(Server):
    """nginx serving DATA as static files and accepting plain PUTs (core dav module)."""

    name = "nginx"

    def __init__(self, workdir: Path, data_dir: Path, port: int):
        super().__init__(workdir, data_dir, port)
        self.prefix = workdir / "nginx"
        # Request bodies are buffered here and renamed into place: same filesystem as DATA.
        body_temp = data_dir / ".nginx-body"
        for d in (self.prefix, body_temp):
            d.mkdir(parents=True, exist_ok=True)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(
            f"""# generated by conformance-tests/perf/bench.py
daemon off;
user root;
worker_processes 2;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {body_temp};
    server {{
        listen {self.hostport} reuseport;
        root {data_dir};
        location / {{
            autoindex on;  # a folder's listing: the web app benchmark's reference page
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
    }}
}}
"""
        )

    def command(self) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(self.conf)]

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def rss_pids(self) -> list[int]:
        return children(self.proc.pid)

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        deadline = time.monotonic() + 10
        while len(children(self.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)


class Gateway(Server):
    """nebula-gateway on DATA, with logging at warn (no per-request log lines)."""

    name = "nebula"

    def __init__(self, workdir: Path, data_dir: Path, port: int, binary: Path, creds, log_filter: str,
                 catalog: tuple[Postgres, str] | None = None, log_name: str = "nebula"):
        """`catalog`: a PostgreSQL cluster and database for the catalog (default: SQLite in DATA);
        its processes' CPU is counted as the gateway's."""
        super().__init__(workdir, data_dir, port)
        self.binary = binary
        self.creds = creds
        self.log_filter = log_filter
        self.catalog = catalog
        self.log_path = workdir / f"{log_name}.log"

    def command(self) -> list[str]:
        db = ["--database-url", self.catalog[0].url(self.catalog[1])] if self.catalog else []
        return [
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.hostport,
            "--access-key", self.creds.access_key,
            "--secret-key", self.creds.secret_key,
            *db,
        ]

    def pids(self) -> list[int]:
        return [self.proc.pid, *(self.catalog[0].pids() if self.catalog else [])]

    def rss_pids(self) -> list[int]:
        return [self.proc.pid]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEBULA_", "AWS_", "DATABASE_URL"))}
        env["RUST_LOG"] = self.log_filter
        env["NO_COLOR"] = "1"
        return env


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the catalog, with PostgreSQL's default
    settings (fsync and synchronous commit on: the durability a deployment has). Run as the
    `postgres` user when the harness runs as root (initdb refuses root)."""

    def __init__(self, port: int):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: run scripts/setup.sh --test")
        self.bin = Path(bins[-1])
        self.port = port
        # The system temp folder, not the work dir: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="nebula-perf-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def start(self) -> "Postgres":
        data = self.dir / "data"
        subprocess.run(self._as_owner([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                       "-E", "UTF8"]), check=True, capture_output=True, timeout=300)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        p = subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts,
                                           "-l", str(self.dir / "log"), "-w", "-t", "120", "start"]),
                           capture_output=True, timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {p.stderr.decode(errors='replace')}")
        return self

    def stop(self) -> None:
        subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w",
                                       "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def create_db(self, name: str) -> str:
        subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", "postgres", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True, timeout=60)
        return name

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, checkpointer, ...)."""
        try:
            pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return []
        return [pid, *children(pid)]


class Balanced(Server):
    """Gateways behind nginx running compose/cluster/nginx.conf (only the upstream addresses,
    the listen address and temp paths changed, as test_deploy.py runs it). CPU counts nginx,
    every gateway and PostgreSQL; peak RSS is the gateways' sum."""

    name = "balanced"

    def __init__(self, workdir: Path, port: int, conf: str, gateways: list[Gateway]):
        super().__init__(workdir, gateways[0].data_dir, port)
        self.gateways = gateways
        self.prefix = workdir / "balancer"
        self.prefix.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10):
            if n <= len(gateways):
                conf = conf.replace(f"server gateway{n}:9000", f"server 127.0.0.1:{gateways[n - 1].port}")
            else:  # fewer gateways than the example: drop the others' upstream lines
                conf = "".join(line for line in conf.splitlines(keepends=True)
                               if f"server gateway{n}:9000" not in line)
        conf = conf.replace("listen 9000;", f"listen {self.hostport};")
        conf = conf.replace("error_log /dev/stderr warn;", f"error_log {self.prefix}/error.log warn;")
        temps = "".join(f"    {t}_temp_path {self.prefix / t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                            "scgi"))
        conf = conf.replace("http {\n", "http {\n" + temps, 1)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(conf)

    def command(self) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(self.conf),
                "-g", f"daemon off; pid {self.prefix / 'nginx.pid'};"]

    def start(self, timeout: float = 60.0) -> None:
        for g in self.gateways:
            g.start(timeout)
        super().start(timeout)

    def stop(self) -> None:
        super().stop()
        for g in self.gateways:
            g.stop()

    def pids(self) -> list[int]:
        nginx = [self.proc.pid, *children(self.proc.pid)] if self.proc else []
        gateways = [g.proc.pid for g in self.gateways if g.proc]
        catalog = self.gateways[0].catalog[0].pids() if self.gateways[0].catalog else []
        return nginx + gateways + catalog

    def rss_pids(self) -> list[int]:
        return [g.proc.pid for g in self.gateways if g.proc]

    def gateway_cpu_s(self) -> list[float]:
        """Each gateway's own CPU (PostgreSQL not included), in seconds."""
        return [proc_cpu_s(g.proc.pid) for g in self.gateways]


def copy_binary(binary: Path, workdir: Path) -> Path:
    """A private copy, so a rebuild during the run cannot mix two gateway versions."""
    dest = workdir / "nebula-gateway"
    shutil.copy2(binary, dest)
    return dest
