#!/usr/bin/env python3
"""Nebula performance benchmark: nebula-gateway against nginx (static files + PUT) on the same
data folder, and the gateway's live transcode against gst-launch-1.0 running the same pipeline;
for scale-out, 2 gateways behind compose/cluster's nginx against 1, and a PUT's latency with the
PostgreSQL catalog against SQLite.

    python3 conformance-tests/perf/bench.py [--smoke] [--out results.json]

Each measured run starts its server fresh, runs one workload and stops it; the servers take
turns (nginx, nebula, nginx, nebula, ...) so noise from other processes shows as spread. The
numbers are never judged: targets are printed as PASS/MISS for information. See README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # nebula_helpers (SigV4 signing)
sys.path.insert(0, str(HERE))

import browser  # noqa: E402
import gst_pipeline  # noqa: E402
import loads  # noqa: E402
from loads import Req  # noqa: E402
from nebula_helpers import Creds  # noqa: E402
from report import LEGEND, NEBULA, Metric, Target, table  # noqa: E402
from servers import Balanced, Gateway, Nginx, Postgres, Server, copy_binary, free_port, host_busy_s  # noqa: E402

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BUCKET = "bench-data"
MEDIA_BUCKET = "bench-media"
CREDS = Creds("NEBULAPERFACCESSKEY1", "nebula/perf+Secret0123456789abcdefghijk", "us-east-1")
FLOOR = "fs floor"  # floor.c, the durable-write floor for small PUTs
ONE_GATEWAY = "1 gateway"  # the reference of the 2-gateway rows: 1 gateway behind the same nginx
SQLITE = "SQLite catalog"  # the reference of the PostgreSQL catalog's PUT latency
CLUSTER_NGINX = REPO / "compose" / "cluster" / "nginx.conf"
SMALL_OBJECTS = 100  # distinct 4 KiB objects read by the small GETs
MID_OBJECTS = 8  # distinct "16 MiB" objects
PUT_LARGE_KEYS = 8  # "16 MiB" PUTs overwrite these in turn
RANGE_REQUESTS = 1000  # seeded random offsets per run
FPS = 30


@dataclasses.dataclass(frozen=True)
class Scale:
    duration: float  # seconds per wrk run
    warmup: float  # untimed wrk run before each measured one
    rounds: int
    get_mid: int  # "16 MiB"
    get_big: int  # "256 MiB", also the object the ranged GETs read
    range_size: int  # "1 MiB"
    put_large: int  # "16 MiB"
    upload: int  # "1 GiB"
    part: int
    list_big: int  # "100,000 keys"
    put_small_keys: int  # new keys per small-PUT run (more than a run can write)
    list_repeats: int
    video_seconds: int
    seek_video_loops: int  # the HLS seek source is the source video this many times over


FULL = Scale(10, 2, 2, 16 * MIB, 256 * MIB, 1 * MIB, 16 * MIB, 1 * GIB, 64 * MIB, 100_000, 100_000, 20, 20, 30)
SMOKE = Scale(1, 0, 1, 1 * MIB, 8 * MIB, 64 * KIB, 1 * MIB, 16 * MIB, 8 * MIB, 2_000, 5_000, 3, 2, 2)
LIST_SMALL = 1000
UPLOAD_THREADS = 4


def size_label(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# data


def write_random_file(path: Path, size: int, block: bytes) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def make_files(path_size: list[tuple[Path, int]]) -> None:
    block = os.urandom(16 * MIB)
    for path, size in path_size:
        path.parent.mkdir(parents=True, exist_ok=True)
        if size <= KIB * 64:
            path.write_bytes(os.urandom(size))
        else:
            write_random_file(path, size, block)


def make_many(bucket_dir: Path, count: int) -> None:
    """`count` small files, created directly on disk (out of band)."""
    bucket_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with open(bucket_dir / f"obj-{i:06d}", "wb") as f:
            f.write(b"%010d" % i)


# --------------------------------------------------------------------------------------------
# the benchmark


def settle(quiet_cores: float = 0.05, window: float = 0.5, limit: float = 60.0) -> None:
    """Waits (at most `limit` seconds) until the machine is idle: a run that starts while the
    kernel still writes back, discards or initialises what earlier runs left (or while anything
    else runs) measures that too, and only the server that writes durably waits for the disk."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = host_busy_s()
        time.sleep(window)
        if (host_busy_s() - before) / window <= quiet_cores:
            return
    log(f"  (machine still busy after {limit:.0f} s; measuring anyway)")


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.scale = SMOKE if args.smoke else FULL
        if args.duration:
            self.scale = dataclasses.replace(self.scale, duration=args.duration)
        if args.rounds:
            self.scale = dataclasses.replace(self.scale, rounds=args.rounds)
        self.work = Path(tempfile.mkdtemp(prefix="nebula-perf-", dir=args.workdir))
        self.data = self.work / "data"
        self.list_data = self.work / "list-data"
        self.binary = copy_binary(Path(args.gateway_bin), self.work)
        self.ports = {"nginx": free_port(), NEBULA: free_port(), "balancer": free_port()}
        self.metrics: list[Metric] = []
        self.audio_encoder = next(
            (e for e in ("avenc_aac", "voaacenc") if subprocess.run(["gst-inspect-1.0", "--exists", e]).returncode == 0),
            None,
        )

    # -- servers ------------------------------------------------------------------------------
    def server(self, kind: str, data_dir: Path | None = None) -> Server:
        data_dir = data_dir or self.data
        if kind == "nginx":
            return Nginx(self.work, data_dir, self.ports["nginx"])
        return Gateway(self.work, data_dir, self.ports[NEBULA], self.binary, CREDS, self.args.gateway_log)

    def measure(self, metric: Metric, kind: str, run, server: Server | None = None, **extra) -> dict:
        """Starts `server` (if any), calls run(server) -> raw dict, stops it; never raises."""
        # Smoke runs only check the harness: a machine that never quite idles must not make
        # them slow.
        settle(limit=5.0 if self.args.smoke else 60.0)
        t0 = time.monotonic()
        try:
            if server:
                server.start(timeout=600)
            raw = run(server)
        except Exception as e:  # a failed run is reported, the benchmark goes on
            raw = {"error": f"{type(e).__name__}: {e}"[:2000]}
            if server:
                raw["server_log"] = server.log_tail(10)
        finally:
            if server:
                server.stop()
            os.sync()  # nginx does not fsync: flush its writes before the next server runs
        raw.update(extra)
        metric.add_run(kind, raw)
        if raw.get("error"):
            log(f"  {metric.id:24} {kind:10} ERROR {raw['error'][:300]}")
        else:
            log(f"  {metric.id:24} {kind:10} {raw['value']:12.3f} {metric.unit:10} cpu {raw['cpu_per_unit']:.4g} "
                f"{metric.cpu_unit}  busy {raw.get('others_cores', 0):.2f}  ({time.monotonic() - t0:.1f} s)")
        return raw

    def fresh_data(self, run_id: str) -> Path:
        """An empty data folder (one empty bucket) for one small-PUT run: the tens of thousands
        of objects a run leaves would otherwise be scanned into the catalog at every later
        gateway start, and counted in its memory."""
        data = self.work / "put-data" / run_id
        (data / BUCKET).mkdir(parents=True)
        return data

    # -- setup --------------------------------------------------------------------------------
    def wanted(self, *ids: str) -> bool:
        return any(not self.args.only or re.search(self.args.only, i) for i in ids)

    def prime(self, data_dir: Path) -> None:
        """One untimed gateway start: the catalog scan and the media probe of files written out
        of band happen here instead of inside the next measured run."""
        gw = self.server(NEBULA, data_dir)
        try:
            gw.start(timeout=600)
        finally:
            gw.stop()

    def prepare_objects(self) -> None:
        sc = self.scale
        b = self.data / BUCKET
        files = [(b / f"get-4k-{i:03d}", 4 * KIB) for i in range(SMALL_OBJECTS)]
        files += [(b / f"get-mid-{i}", sc.get_mid) for i in range(MID_OBJECTS)]
        files += [(b / "get-big-0", sc.get_big)]
        log(f"preparing data in {self.work}")
        make_files(files)
        os.sync()
        self.prime(self.data)

    # -- wrk metrics --------------------------------------------------------------------------
    def wrk_metric(self, id: str, label: str, method: str, size: int, conc: int, per_op: bool,
                   targets: list[Target], range_size: int | None = None, floor: bool = False) -> None:
        """One wrk metric against nginx. With `floor` (small PUTs), every round also runs floor.c
        and a second metric, `<id>_floor`, sets the same gateway runs against it."""
        if not self.wanted(id):
            return
        sc = self.scale
        params = {"method": method, "size": size, "range": range_size, "concurrency": conc, "duration_s": sc.duration}
        metric = Metric(
            id, f"{label} c{conc}", "op/s" if per_op else "MiB/s", "µs/op" if per_op else "CPU s/GiB",
            True, "nginx", targets, params,
        )
        self.metrics.append(metric)
        floor_metric = None
        if floor:
            floor_metric = Metric(f"{id}_floor", f"{label} c{conc}", metric.unit, metric.cpu_unit, True, FLOOR, [],
                                  {**params, "floor": "floor.c: create, write, fsync, rename, fsync folder; "
                                                      f"{conc} threads, no HTTP"})
            self.metrics.append(floor_metric)
            floor_bin = loads.build_floor(self.work)
        for rnd in range(sc.rounds):
            if floor_metric:
                run_id = f"{id}-r{rnd}-floor"

                def run_floor(_: Server | None, run_id=run_id) -> dict:
                    res = loads.run_floor(floor_bin, self.fresh_data(run_id), f"{BUCKET}/put-new/{run_id}", conc,
                                          size, sc.duration, sc.warmup)
                    return {**res, "value": res["ops"] / res["seconds"],
                            "cpu_per_unit": res["server_cpu_s"] / res["ops"] * 1e6}

                self.measure(floor_metric, FLOOR, run_floor, round=rnd)
            for kind in ("nginx", NEBULA):
                run_id = f"{id}-r{rnd}-{kind}"
                server = self.server(kind, self.fresh_data(run_id) if method == "PUT" and size <= 64 * KIB else None)
                reqs, n_check, expect = self.requests(kind, server.hostport, method, size, range_size, run_id)
                warm = (self.requests(kind, server.hostport, method, size, range_size, run_id + "-warm")[0]
                        if method == "PUT" else None)

                def run(server: Server, reqs=reqs, n_check=n_check, expect=expect, warm=warm) -> dict:
                    return self.wrk_run(server, reqs[:n_check], expect, reqs, warm, conc, method, size, per_op)

                raw = self.measure(metric, kind, run, server, round=rnd)
                if floor_metric and kind == NEBULA:
                    floor_metric.add_run(NEBULA, raw)

    def wrk_run(self, server: Server, check: list[Req], expect: int | None, reqs: list[Req], warm: list[Req] | None,
                conc: int, method: str, size: int, per_op: bool) -> dict:
        """Checks the first requests, then one wrk run: op/s and µs/op, or MiB/s and CPU s/GiB."""
        sc = self.scale
        loads.check_requests(server.hostport, check, expect)
        res = loads.run_wrk(server, reqs, conc, sc.duration, self.work, sc.warmup, warm)
        ok = res["requests"] - res["errors"]["status"]
        if ok <= 0:
            raise RuntimeError(f"no successful requests: {res}")
        seconds = res["duration_us"] / 1e6
        moved = res["bytes"] if method == "GET" else ok * size
        if per_op:
            value, cpu = ok / seconds, res["server_cpu_s"] / ok * 1e6
        else:
            value, cpu = moved / MIB / seconds, res["server_cpu_s"] / (moved / GIB)
        return {**res, "value": value, "cpu_per_unit": cpu, "ok_requests": ok}

    def requests(self, kind: str, hostport: str, method: str, size: int, range_size: int | None,
                 run_id: str) -> tuple[list[Req], int, int | None]:
        """The request list for one run, how many leading entries to check, expected body length.

        Small PUTs create new keys, unique to the run. Overwriting a fixed set of keys frees an
        inode per PUT, and ext4 without a journal (this machine's root filesystem) then skips
        every inode freed in the last 60 to 360 seconds when it allocates the next one, reading
        each from the inode table: the cost of a file creation grows with the deletions of the
        previous minutes. In runs that alternate between servers, each run would pay for the
        previous server's deletions. Large PUTs free a few inodes a second and keep overwriting.
        """
        def url(m: str, key: str) -> str:
            return loads.target(kind, CREDS, hostport, m, BUCKET, key)

        if range_size:
            rng = random.Random(42)
            get = url("GET", "get-big-0")
            reqs = []
            for _ in range(RANGE_REQUESTS):
                o = rng.randrange(0, self.scale.get_big - range_size)
                reqs.append(Req("GET", get, f"bytes={o}-{o + range_size - 1}"))
            return reqs, 1, range_size
        if method == "GET":
            keys = ([f"get-4k-{i:03d}" for i in range(SMALL_OBJECTS)] if size == 4 * KIB else
                    [f"get-mid-{i}" for i in range(MID_OBJECTS)] if size == self.scale.get_mid else ["get-big-0"])
            return [Req("GET", url("GET", k)) for k in keys], len(keys), size
        if size <= 64 * KIB:
            keys = [f"put-new/{run_id}/{i:06d}" for i in range(self.scale.put_small_keys)]
        else:
            keys = [f"put-{size}-{i:04d}" for i in range(PUT_LARGE_KEYS)]
        return [Req("PUT", url("PUT", k), None, size) for k in keys], 1, None

    def wrk_metrics(self) -> None:
        sc = self.scale
        for c in (1, 8, 64):
            t = [Target("value_min", 10_000), Target("ratio_min", 0.15), Target("cpu_max", 50)] if c == 8 else []
            self.wrk_metric(f"get_4k_c{c}", "GET 4 KiB", "GET", 4 * KIB, c, True, t)
        for name, size in (("16m", sc.get_mid), ("256m", sc.get_big)):
            for c in (1, 8):
                self.wrk_metric(f"get_{name}_c{c}", f"GET {size_label(size)}", "GET", size, c, False,
                                [Target("ratio_min", 0.9), Target("cpu_max", 0.5)])
        self.wrk_metric("range_1m_c8", f"GET {size_label(sc.range_size)} ranges", "GET", sc.get_big, 8, False,
                        [Target("ratio_min", 0.7)], range_size=sc.range_size)
        for c in (1, 8):
            self.wrk_metric(f"put_4k_c{c}", "PUT 4 KiB new keys", "PUT", 4 * KIB, c, True,
                            [Target("ratio_min", 0.5)] if c == 8 else [], floor=c == 8)
        for c in (1, 8):
            self.wrk_metric(f"put_16m_c{c}", f"PUT {size_label(sc.put_large)}", "PUT", sc.put_large, c, False,
                            [Target("ratio_min", 0.8)])

    # -- several gateways (issue 19) ----------------------------------------------------------
    def cluster_metrics(self) -> None:
        """Small GETs and PUTs through compose/cluster's nginx to 2 gateways against 1 gateway
        behind the same nginx (one data folder, one PostgreSQL catalog, same wrk load). This
        machine has 2 cores, which two gateways plus nginx, PostgreSQL and wrk already share, so
        2 gateways cannot be faster here: the ratio is what the coordination costs. And the PUT
        latency at c1 of one gateway on PostgreSQL (a NOTIFY trigger per change, which other
        gateways listen to) against one on SQLite (nothing to tell anyone)."""
        ids = ("cluster_get_4k_c8", "cluster_put_4k_c8", "put_4k_c1_postgres")
        if not self.wanted(*ids):
            return
        pg = Postgres(free_port()).start()
        try:
            self.balanced_metric("cluster_get_4k_c8", "GET", pg)
            self.balanced_metric("cluster_put_4k_c8", "PUT", pg)
            self.catalog_latency_metric(pg)
        finally:
            pg.stop()

    def balanced(self, gateways: int, data: Path, pg: Postgres, db: str) -> Balanced:
        gws = [Gateway(self.work, data, free_port(), self.binary, CREDS, self.args.gateway_log, (pg, db),
                       log_name=f"nebula-{n}") for n in range(gateways)]
        return Balanced(self.work, self.ports["balancer"], CLUSTER_NGINX.read_text(), gws)

    def balanced_metric(self, id: str, method: str, pg: Postgres) -> None:
        if not self.wanted(id):
            return
        sc = self.scale
        conc, size = 8, 4 * KIB
        label = "GET 4 KiB" if method == "GET" else "PUT 4 KiB new keys"
        metric = Metric(id, f"{label} via nginx, 2 gateways c{conc}", "op/s", "µs/op", True, ONE_GATEWAY,
                        [Target("ratio_min", 0.8)],
                        {"method": method, "size": size, "concurrency": conc, "duration_s": sc.duration,
                         "balancer": "compose/cluster/nginx.conf", "catalog": "PostgreSQL, one database per run",
                         "cpu": "nginx + gateways + PostgreSQL"})
        self.metrics.append(metric)
        get_db = pg.create_db(f"bench_{id}") if method == "GET" else None
        for rnd in range(sc.rounds):
            for kind, n in ((ONE_GATEWAY, 1), (NEBULA, 2)):
                run_id = f"{id}-r{rnd}-{n}gw"
                if method == "GET":
                    data, db = self.data, get_db
                else:
                    data, db = self.fresh_data(run_id), pg.create_db(f"bench_{id}_r{rnd}_{n}gw")
                server = self.balanced(n, data, pg, db)
                reqs, n_check, expect = self.requests(NEBULA, server.hostport, method, size, None, run_id)
                warm = self.requests(NEBULA, server.hostport, method, size, None, run_id + "-warm")[0] \
                    if method == "PUT" else None

                def run(server: Balanced, reqs=reqs, n_check=n_check, expect=expect, warm=warm) -> dict:
                    before = server.gateway_cpu_s()
                    res = self.wrk_run(server, reqs[:n_check], expect, reqs, warm, conc, method, size, True)
                    # Each gateway's share: nginx must have spread the load over all of them.
                    return {**res, "gateway_cpu_s": [b - a for a, b in zip(before, server.gateway_cpu_s())]}

                self.measure(metric, kind, run, server, round=rnd, gateways=n)

    def catalog_latency_metric(self, pg: Postgres) -> None:
        id = "put_4k_c1_postgres"
        if not self.wanted(id):
            return
        sc = self.scale
        size = 4 * KIB
        metric = Metric(id, "PUT 4 KiB new keys latency c1, PostgreSQL catalog", "ms", "µs/op", False, SQLITE,
                        [Target("ratio_max", 1.5)],
                        {"size": size, "concurrency": 1, "duration_s": sc.duration, "value": "wrk's median latency",
                         "cpu": "gateway (+ PostgreSQL)"})
        self.metrics.append(metric)
        for rnd in range(sc.rounds):
            for kind in (SQLITE, NEBULA):
                run_id = f"{id}-r{rnd}-{'pg' if kind == NEBULA else 'sqlite'}"
                catalog = (pg, pg.create_db(f"bench_{id}_r{rnd}")) if kind == NEBULA else None
                server = Gateway(self.work, self.fresh_data(run_id), self.ports[NEBULA], self.binary, CREDS,
                                 self.args.gateway_log, catalog)
                reqs = self.requests(NEBULA, server.hostport, "PUT", size, None, run_id)[0]
                warm = self.requests(NEBULA, server.hostport, "PUT", size, None, run_id + "-warm")[0]

                def run(server: Server, reqs=reqs, warm=warm) -> dict:
                    res = self.wrk_run(server, reqs[:1], None, reqs, warm, 1, "PUT", size, True)
                    return {**res, "value": res["latency_us"]["p50"] / 1000}

                self.measure(metric, kind, run, server, round=rnd)
        base, pg_run = metric.summary(SQLITE), metric.summary(NEBULA)
        if base and pg_run:
            metric.notes.append(f"PostgreSQL adds {pg_run['median'] - base['median']:.3f} ms to a PUT's median latency")

    # -- large upload -------------------------------------------------------------------------
    def upload_metric(self) -> None:
        if not self.wanted("multipart_1g"):
            return
        sc = self.scale
        src = self.work / "upload.bin"
        make_files([(src, sc.upload)])
        key = "upload-large"
        metric = Metric(
            "multipart_1g", f"upload {size_label(sc.upload)} (nginx 1 PUT, nebula multipart)", "s", "CPU s",
            False, "nginx", [Target("ratio_max", 1.5), Target("rss_max_mib", 64)],
            {"size": sc.upload, "part_size": sc.part, "threads": UPLOAD_THREADS},
        )
        self.metrics.append(metric)
        dest = self.data / BUCKET / key

        def finish(res: dict) -> dict:
            size = dest.stat().st_size
            dest.unlink()
            if size != sc.upload:
                raise RuntimeError(f"uploaded object has {size} bytes, expected {sc.upload}")
            return {**res, "value": res["wall_s"], "cpu_per_unit": res["server_cpu_s"]}

        for rnd in range(sc.rounds):
            self.measure(metric, "nginx", lambda s: finish(loads.put_with_curl(s, f"/{BUCKET}/{key}", src)),
                         self.server("nginx"), round=rnd)
            self.measure(metric, NEBULA,
                         lambda s: finish(loads.multipart_upload(s, CREDS, BUCKET, key, src, sc.part, UPLOAD_THREADS)),
                         self.server(NEBULA), round=rnd)

    # -- listing ------------------------------------------------------------------------------
    def list_metrics(self) -> None:
        sc = self.scale
        specs = [
            ("list_1k", "list-1k", f"ListObjectsV2 {LIST_SMALL:,} keys", 10, False),
            ("list_100k_first_page", "list-100k", f"ListObjectsV2 page 1 of {sc.list_big:,} keys", 50, True),
        ]
        if not self.wanted(*(spec[0] for spec in specs)):
            return
        make_many(self.list_data / "list-1k", LIST_SMALL)
        make_many(self.list_data / "list-100k", sc.list_big)
        os.sync()
        self.prime(self.list_data)
        for id, bucket, label, limit, truncated in specs:
            if not self.wanted(id):
                continue
            metric = Metric(id, label, "ms", "CPU ms/op", False, None, [Target("value_max", limit)],
                            {"bucket_keys": LIST_SMALL if bucket == "list-1k" else sc.list_big,
                             "requests": sc.list_repeats})
            self.metrics.append(metric)

            def run(server: Server, bucket=bucket, truncated=truncated) -> dict:
                res = loads.time_list(server, CREDS, bucket, sc.list_repeats)
                if res["keys"] != LIST_SMALL or res["truncated"] != truncated:
                    raise RuntimeError(f"listing returned {res['keys']} keys, truncated={res['truncated']}")
                return {**res, "value": res["median_ms"], "cpu_per_unit": res["server_cpu_s"] / res["requests"] * 1000}

            for rnd in range(sc.rounds):
                self.measure(metric, NEBULA, run, self.server(NEBULA, self.list_data), round=rnd)
            metric.notes.append("runs[].cold_ms = the first listing after each gateway start (not in the median)")

    # -- transcodes ---------------------------------------------------------------------------
    def source_video(self) -> Path:
        """The 1080p source video in the media bucket, generated on first use."""
        video = self.data / MEDIA_BUCKET / "src-1080p.mp4"
        if not video.exists():
            video.parent.mkdir(parents=True, exist_ok=True)
            log(f"generating a {self.scale.video_seconds} s 1080p source with gst-launch")
            subprocess.run(
                ["gst-launch-1.0", "-q", *gst_pipeline.source_args(video, self.scale.video_seconds, FPS)],
                check=True, timeout=1800, capture_output=True,
            )
            os.sync()
            self.prime(self.data)
        self.video = video
        return video

    def long_video(self) -> tuple[Path, int]:
        """The HLS seek source: the source video `seek_video_loops` times over in one MP4 (a
        10-minute 1080p file in a full run, as the HLS issue asks), made by stream copy, so it
        costs seconds instead of a 10-minute encode. Returns it and its length in seconds."""
        src = self.source_video()
        loops = self.scale.seek_video_loops
        video = self.data / MEDIA_BUCKET / "src-1080p-long.mp4"
        if not video.exists():
            log(f"making a {loops * self.scale.video_seconds} s 1080p source by looping it")
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(src),
                 "-map", "0", "-c", "copy", "-movflags", "+faststart", str(video)],
                check=True, timeout=600, capture_output=True,
            )
            os.sync()
            self.prime(self.data)
        return video, loops * self.scale.video_seconds

    def transcode_metrics(self) -> None:
        sc = self.scale
        qualities = [q for q in (720, 480) if self.wanted(f"transcode_{q}p", f"transcode_{q}p_ttfb")]
        if not qualities:
            return
        self.source_video()
        renditions = self.data / ".nebula" / "renditions"
        for q in qualities:
            rtf = Metric(f"transcode_{q}p", f"transcode 1080p→{q}p", "× realtime", "CPU s", True, "gst-launch",
                         [Target("ratio_min", 0.9)], {"source_seconds": sc.video_seconds, "quality": q})
            ttfb = Metric(f"transcode_{q}p_ttfb", f"transcode 1080p→{q}p first byte", "s", "CPU s", False,
                          "gst-launch", [Target("ratio_max", 1.1)], {"source_seconds": sc.video_seconds, "quality": q})
            self.metrics += [rtf, ttfb]
            gst_args = gst_pipeline.launch_args(self.video, 1920, 1080, FPS, q, self.audio_encoder)
            rtf.params["gst_launch"] = "gst-launch-1.0 -q " + " ".join(gst_args)
            url = loads.target(NEBULA, CREDS, f"127.0.0.1:{self.ports[NEBULA]}", "GET", MEDIA_BUCKET, self.video.name,
                               extra_query=[("transcode", "h264"), ("quality", str(q))])
            head = loads.target(NEBULA, CREDS, f"127.0.0.1:{self.ports[NEBULA]}", "HEAD", MEDIA_BUCKET, self.video.name)
            outputs = {}
            for rnd in range(sc.rounds):
                for kind in ("gst-launch", NEBULA):
                    out = self.work / f"out-{kind}-{q}.mp4"

                    def run(server: Server | None, kind=kind, out=out) -> dict:
                        if server is None:
                            res = loads.gst_to_pipe(gst_args, out)
                        else:
                            loads.send(server.hostport, Req("HEAD", head))  # ETag + page cache, untimed
                            res = loads.curl_transcode(server, url, out)
                        outputs[kind] = loads.probe_video(out)
                        out.unlink()
                        return {**res, "output": outputs[kind], "value": sc.video_seconds / res["wall_s"],
                                "cpu_per_unit": res["server_cpu_s"]}

                    if kind == NEBULA:
                        shutil.rmtree(renditions, ignore_errors=True)  # no cached rendition
                    res = self.measure(rtf, kind, run, self.server(NEBULA) if kind == NEBULA else None, round=rnd)
                    ttfb.add_run(kind, {**res, "value": res["ttfb_s"]} if not res.get("error") else res)
            if len(outputs) == 2 and outputs["gst-launch"] != outputs[NEBULA]:
                rtf.notes.append(f"outputs differ (pipeline.rs changed?): gst-launch {outputs['gst-launch']}, "
                                 f"nebula {outputs[NEBULA]}")

    # -- HLS ----------------------------------------------------------------------------------
    def hls_metrics(self) -> None:
        """HLS of the 1080p source at 720p, each run on a fresh gateway with no segment made:
        the first segment after a seek to 50 % (against the same pipeline from the same place,
        run by GStreamer's parser as gst-launch-1.0 runs it, plus the seek it cannot do); all
        segments one after the other (against the live fMP4 stream of the same quality); and a
        segment already made (against nginx serving the same file by range)."""
        ids = ("hls_seek_first_segment", "hls_segments_720p", "hls_cached_segment_c8")
        if not self.wanted(*ids):
            return
        sc = self.scale
        video = self.source_video()
        long_video, long_seconds = self.long_video()
        q = 720

        def segments(seconds: int) -> int:
            return max(1, -(-int(seconds * 1000) // int(gst_pipeline.SEGMENT_S * 1000)))

        count = segments(sc.video_seconds)
        seek_n = segments(long_seconds) // 2
        cached_n = count // 2
        hostport = f"127.0.0.1:{self.ports[NEBULA]}"
        playlist = loads.target(NEBULA, CREDS, hostport, "GET", MEDIA_BUCKET, video.name,
                                extra_query=[("stream", "hls"), ("quality", str(q))])
        long_playlist = loads.target(NEBULA, CREDS, hostport, "GET", MEDIA_BUCKET, long_video.name,
                                     extra_query=[("stream", "hls"), ("quality", str(q))])
        live = loads.target(NEBULA, CREDS, hostport, "GET", MEDIA_BUCKET, video.name,
                            extra_query=[("transcode", "h264"), ("quality", str(q))])
        renditions = self.data / ".nebula" / "renditions"
        seek = Metric("hls_seek_first_segment", f"HLS 1080p→{q}p segment {seek_n} cold (seek to 50 %)", "s",
                      "CPU s", False, "gst-launch", [Target("ratio_max", 1.1), Target("value_max", 1.5)],
                      {"source_seconds": long_seconds, "segment": seek_n, "quality": q,
                       "gst-launch": "perf/gst_seek.py: gst_pipeline.hls_launch_args, seek to the segment"})
        steady = Metric("hls_segments_720p", f"HLS 1080p→{q}p all {count} segments in turn", "× realtime", "CPU s",
                        True, "live fMP4", [Target("ratio_min", 0.9)],
                        {"source_seconds": sc.video_seconds, "segments": count, "quality": q,
                         "live fMP4": f"?quality={q}, the whole stream"})
        cached = Metric("hls_cached_segment_c8", "HLS segment already made c8", "MiB/s", "CPU s/GiB", True, "nginx",
                        [Target("ratio_min", 0.9)],
                        {"segment": cached_n, "concurrency": 8, "duration_s": sc.duration,
                         "nginx": "the segment's file, by range"})
        self.metrics += [seek, steady, cached]
        out = self.work / "hls-ref.mp4"
        ref_args = gst_pipeline.hls_launch_args(long_video, out, 1920, 1080, FPS, q, self.audio_encoder)
        start = seek_n * gst_pipeline.SEGMENT_S
        stop = min(start + gst_pipeline.SEGMENT_S, float(long_seconds))
        scratch = self.work / "hls-gets"
        scratch.mkdir(exist_ok=True)
        for rnd in range(sc.rounds):
            def run_ref(_: Server | None) -> dict:
                res = loads.gst_seek(ref_args, start, stop)
                out.unlink()
                return {**res, "value": res["first_segment_s"], "cpu_per_unit": res["server_cpu_s"]}

            def run_seek(server: Server) -> dict:
                uris = loads.hls_uris(server.hostport, long_playlist)  # probes the source: untimed
                res = loads.curl_sequence(server, [uris[1 + seek_n]], scratch)
                return {**res, "value": res["each_s"][0], "cpu_per_unit": res["server_cpu_s"]}

            def run_live(server: Server) -> dict:
                res = loads.curl_transcode(server, live, scratch / "live.mp4")
                (scratch / "live.mp4").unlink()
                return {**res, "value": sc.video_seconds / res["wall_s"], "cpu_per_unit": res["server_cpu_s"]}

            def run_steady(server: Server) -> dict:
                uris = loads.hls_uris(server.hostport, playlist)
                res = loads.curl_sequence(server, uris, scratch)
                return {**res, "value": sc.video_seconds / res["wall_s"], "cpu_per_unit": res["server_cpu_s"]}

            self.measure(seek, "gst-launch", run_ref, round=rnd)
            shutil.rmtree(renditions, ignore_errors=True)
            self.measure(seek, NEBULA, run_seek, self.server(NEBULA), round=rnd)
            shutil.rmtree(renditions, ignore_errors=True)
            self.measure(steady, "live fMP4", run_live, self.server(NEBULA), round=rnd)
            shutil.rmtree(renditions, ignore_errors=True)
            self.measure(steady, NEBULA, run_steady, self.server(NEBULA), round=rnd)
            # The segments of that run stay: the next two runs read one of them.
            segment = next(iter(renditions.glob(f"*.hls/{cached_n}.m4s")), None)
            for kind in ("nginx", NEBULA):
                def run_cached(server: Server, kind=kind) -> dict:
                    if segment is None:
                        raise RuntimeError("no segment file was made")
                    size = segment.stat().st_size
                    if kind == NEBULA:
                        uris = loads.hls_uris(server.hostport, playlist)
                        reqs = [Req("GET", uris[1 + cached_n])]
                    else:
                        reqs = [Req("GET", "/" + str(segment.relative_to(self.data)), f"bytes=0-{size - 1}")]
                    loads.check_requests(server.hostport, reqs, size)
                    res = loads.run_wrk(server, reqs, 8, sc.duration, self.work, sc.warmup)
                    ok = res["requests"] - res["errors"]["status"]
                    if ok <= 0:
                        raise RuntimeError(f"no successful requests: {res}")
                    moved = res["bytes"]
                    return {**res, "value": moved / MIB / (res["duration_us"] / 1e6),
                            "cpu_per_unit": res["server_cpu_s"] / (moved / GIB)}

                self.measure(cached, kind, run_cached, self.server(kind), round=rnd)

    # -- web app ------------------------------------------------------------------------------
    def webapp_metrics(self) -> None:
        """The web app in headless Chromium: the bucket view's first paint and Play to the first
        frame of a cold 720p stream (no rendition cached), measured in the same browser run.
        The reference, in the same rounds and browser: nginx's listing of the bucket's folder
        and a plain <video> page playing the 720p file gst-launch makes with the same pipeline
        (what serving pre-made renditions as static files gives)."""
        if not self.wanted("webapp_first_paint", "webapp_play_720p"):
            return
        video = self.source_video()
        paint = Metric("webapp_first_paint", "web app: bucket view drawn", "ms", "CPU s", False, "nginx",
                       [], {"bucket": MEDIA_BUCKET, "from": "navigation start",
                            "nginx": "autoindex listing of the bucket's folder, first contentful paint"})
        play = Metric("webapp_play_720p", "web app: Play to first frame (720p, cold)", "s", "CPU s", False, "nginx",
                      [], {"source": "1080p", "quality": 720,
                           "nginx": "the 720p file gst-launch makes with the same pipeline, in a plain <video>"})
        self.metrics += [paint, play]
        # Under a dot folder: not a bucket, so the gateway's listing stays the same.
        static = self.data / ".bench-static"
        static.mkdir(exist_ok=True)
        clip = static / "clip-720p.mp4"
        if not clip.exists():
            loads.gst_to_pipe(gst_pipeline.launch_args(video, 1920, 1080, FPS, 720, self.audio_encoder), clip)
        (static / "player.html").write_text(browser.PLAYER_PAGE.format(src=clip.name))
        os.sync()
        renditions = self.data / ".nebula" / "renditions"

        def record(res: dict, kind: str) -> None:
            play.add_run(kind, {**res, "value": res["play_first_frame_s"]} if not res.get("error") else res)

        for rnd in range(self.scale.rounds):
            def run_nginx(server: Server) -> dict:
                res = browser.static_timings(server, f"/{MEDIA_BUCKET}/", "/.bench-static/player.html", 720)
                return {**res, "value": res["first_paint_ms"], "cpu_per_unit": res["server_cpu_s"]}

            record(self.measure(paint, "nginx", run_nginx, self.server("nginx"), round=rnd), "nginx")
            shutil.rmtree(renditions, ignore_errors=True)

            def run(server: Server) -> dict:
                res = browser.webapp_timings(server, CREDS, MEDIA_BUCKET, video.name, 720)
                return {**res, "value": res["first_paint_ms"], "cpu_per_unit": res["server_cpu_s"]}

            record(self.measure(paint, NEBULA, run, self.server(NEBULA), round=rnd), NEBULA)

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> dict:
        started = datetime.datetime.now(datetime.timezone.utc)
        load_before = os.getloadavg()
        self.prepare_objects()
        self.wrk_metrics()
        self.cluster_metrics()
        self.upload_metric()
        self.list_metrics()
        self.transcode_metrics()
        self.hls_metrics()
        self.webapp_metrics()
        return {
            "meta": {
                "mode": "smoke" if self.args.smoke else "full",
                "started": started.isoformat(timespec="seconds"),
                "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
                "scale": self.scale.__dict__,
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "gateway_binary": self.args.gateway_bin,
                "gateway_binary_mtime": datetime.datetime.fromtimestamp(
                    Path(self.args.gateway_bin).stat().st_mtime).isoformat(timespec="seconds"),
                "gateway_log": self.args.gateway_log,
                "git": git_describe(),
                "versions": tool_versions(),
                "audio_encoder": self.audio_encoder,
            },
            "metrics": {m.id: m.to_json() for m in self.metrics},
        }

    def cleanup(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def git_describe() -> str:
    p = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return p.stdout.strip()


def tool_versions() -> dict:
    def first_line(cmd: list[str]) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr).strip() else ""

    return {
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "gst-launch": first_line(["gst-launch-1.0", "--version"]),
        "curl": first_line(["curl", "--version"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 s runs, one round (CI)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--rounds", type=int, help="rounds per metric (default 2, smoke 1)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 10, smoke 1)")
    ap.add_argument("--gateway-bin", default=os.environ.get("NEBULA_GATEWAY_BIN", str(REPO / "target/debug/nebula-gateway")))
    ap.add_argument("--gateway-log", default="warn", help="RUST_LOG for the gateway (default warn: no per-request lines)")
    ap.add_argument("--workdir", help="parent folder for the data (default: the system temp dir)")
    ap.add_argument("--only", metavar="REGEX", help="run only the metrics whose id matches (e.g. 'get_4k|put')")
    ap.add_argument("--keep", action="store_true", help="keep the data folder and server logs")
    args = ap.parse_args(argv)
    for tool in ("nginx", "wrk", "curl", "gst-launch-1.0", "ffprobe"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found: run scripts/setup.sh --test")
    if not Path(args.gateway_bin).exists():
        ap.error(f"{args.gateway_bin} not found: cargo build -p nebula-gateway (or --gateway-bin)")

    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.cleanup()
    print(table(bench.metrics))
    print()
    print(LEGEND)
    for m in bench.metrics:
        for note in m.notes:
            print(f"note: {m.id}: {note}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
