"""Several gateways on one data folder and one PostgreSQL (issue 19: scale-out).

Real `nebula-gateway` processes on loopback ports share a temp data folder and a throwaway
PostgreSQL cluster (the one of test_catalog.py): each reports itself in the catalog (`nebula
status` lists them, a killed one turns stale), named leases pass from a dead holder to a live
one, and whatever one gateway writes is read, listed and ranged through another at once.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import Gateway, cli_bin, gateway_bin, new_bucket_name, run, sanitized_environ
from nebula_helpers import GatewayGroup, cli_env
from test_catalog import PgCluster, pg, wait_for  # noqa: F401  (pg is a fixture)

API = "/_nebula/v1/"


class Cluster(GatewayGroup):
    """Gateways sharing one data folder and one database; stopped (and checked) at the end."""

    def __init__(self, tmp_path_factory, pg_cluster: PgCluster):
        super().__init__()
        self.tmp = tmp_path_factory
        self.pg = pg_cluster
        self.db = pg_cluster.create_db()
        self.data_dir: Path | None = None

    @property
    def url(self) -> str:
        return self.pg.url(self.db)

    def start(self, *args: str) -> Gateway:
        g = Gateway(self.tmp.mktemp("gw-cluster"), extra_args=["--database-url", self.url, *args])
        if self.data_dir is None:
            self.data_dir = g.data_dir
        g.data_dir = self.data_dir
        return self.add(g)


@pytest.fixture
def cluster(request, tmp_path_factory):
    c = Cluster(tmp_path_factory, request.getfixturevalue("pg"))
    yield c
    c.close()


def api_get(g: Gateway, path: str, query=None) -> dict:
    r = g.raw().request("GET", API + path, query=list(query or []))
    assert r.status == 200, (path, r)
    return json.loads(r.body)


def remote_changes(g: Gateway) -> int:
    r = g.raw().request("GET", API + "metrics")
    assert r.status == 200, r
    m = re.search(rb"^nebula_remote_changes_total (\d+)", r.body, re.M)
    return int(m.group(1)) if m else 0


def nebula(g: Gateway, tmp_path: Path, *args: str) -> str:
    return run([cli_bin(), *args], env=cli_env(g, tmp_path), timeout=60).stdout_text


# --------------------------------------------------------------------------------------------
# every gateway reports itself


def test_status_lists_every_gateway_and_marks_a_killed_one_stale(cluster, tmp_path):
    g1 = cluster.start("--heartbeat-secs", "1")
    g2 = cluster.start("--heartbeat-secs", "1", "--advertise-url", "http://gw2.example:9000")

    def both():
        gws = api_get(g1, "health")["gateways"]
        return gws if len(gws) == 2 else None

    gws = wait_for(both, timeout=10, what="both gateways in the catalog")
    by_pid = {g["id"].rsplit(":", 1)[1]: g for g in gws}
    assert set(by_pid) == {str(g1.pid), str(g2.pid)}, gws
    one, two = by_pid[str(g1.pid)], by_pid[str(g2.pid)]
    assert one["this"] and not two["this"], gws
    assert one["addresses"] == [g1.endpoint] and two["addresses"] == ["http://gw2.example:9000"], gws
    assert not one["stale"] and not two["stale"], gws
    assert one["version"] == two["version"] and re.match(r"\d+\.\d+\.\d+", one["version"]), gws
    assert one["heartbeat_age_secs"] < 3 and one["last_heartbeat"] >= one["started_at"], gws

    status = json.loads(nebula(g2, tmp_path, "status", "--json"))
    assert {g["id"] for g in status["gateways"]} == {one["id"], two["id"]}, status
    assert [g["this"] for g in status["gateways"] if g["id"] == two["id"]] == [True], status
    text = nebula(g1, tmp_path, "status")
    assert "Cluster  2 gateway(s)" in text and f"{one['id']} {g1.endpoint}" in text and "STALE" not in text, text

    # SIGKILL: no goodbye, the row stays and ages; three missed heartbeats make it stale.
    cluster.kill(g2)

    def stale():
        gws = {g["id"]: g for g in api_get(g1, "health")["gateways"]}
        return gws if gws[two["id"]]["stale"] else None

    gws = wait_for(stale, timeout=15, what="the killed gateway to turn stale")
    assert not gws[one["id"]]["stale"] and gws[two["id"]]["heartbeat_age_secs"] > 3, gws
    text = nebula(g1, tmp_path, "status")
    assert re.search(rf"{re.escape(two['id'])} http://gw2.example:9000 .*STALE: no heartbeat for", text), text

    # A clean stop removes the gateway's own row: it is gone, not stale.
    g1.assert_clean_exit()
    cluster.killed.add(id(g1))
    rows = cluster.pg.psql(cluster.db, "SELECT id FROM gateways ORDER BY id").split()
    assert rows == [two["id"]], rows


# --------------------------------------------------------------------------------------------
# leases: one scan of a bucket at a time, and a dead holder's lease is taken over


def test_scan_leases_pass_over_busy_buckets_and_expire_with_their_holder(cluster):
    g1 = cluster.start()
    s3 = g1.boto3_client()
    b = new_bucket_name("lease")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="a.txt", Body=b"a")
    g1.assert_clean_exit()
    cluster.killed.add(id(g1))
    # Out of band, and a "gateway" that died mid-scan of the bucket: its lease runs 4 s more.
    (cluster.data_dir / b / "outside.txt").write_bytes(b"added by hand")
    cluster.pg.psql(
        cluster.db,
        f"INSERT INTO leases (name, holder, expires_ms) VALUES ('reconcile:{b}', 'dead-host:1', "
        "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT) + 4000)",
    )
    # A gateway starting now passes the bucket over (the holder's scan covers it)...
    g2 = cluster.start()
    wait_for(lambda: "catalog reconciled" in g2.log_text(), timeout=20, what="start scan")
    assert re.search(rf"another gateway is scanning this bucket; passed over bucket=\"?{b}", g2.log_text()), g2.log_tail()
    assert "1 passed over" in g2.log_grep("catalog reconciled"), g2.log_grep("catalog reconciled")
    listed = api_get(g2, "files", [("bucket", b)])["items"]
    assert [i["key"] for i in listed] == ["a.txt"], listed
    # ...and `reindex` waits for the lease, which expires with its dead holder, then scans.
    t0 = time.monotonic()
    p = subprocess.run(
        [str(gateway_bin()), "reindex", "--data-dir", str(cluster.data_dir), "--database-url", cluster.url],
        capture_output=True,
        timeout=60,
        env={**sanitized_environ(), "RUST_LOG": "info", "NO_COLOR": "1"},
    )
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, out
    assert "waiting for it" in out and "1 added" in out, out
    assert time.monotonic() - t0 > 1.5, "reindex did not wait for the lease"
    listed = api_get(g2, "files", [("bucket", b)])["items"]
    assert [i["key"] for i in listed] == ["a.txt", "outside.txt"], listed
    assert cluster.pg.psql(cluster.db, "SELECT count(*) FROM leases").strip() == "0", "leases given back"


def test_lifecycle_sweeps_take_turns_through_catalog_leases(cluster):
    """Two gateways sweeping every second take turns per bucket through the catalog's
    `lifecycle:<bucket>` lease: none sweeps while a (dead) holder's lease runs, and every
    removal is made, and logged, by exactly one of them."""
    gws = [cluster.start("--lifecycle-day-seconds", "1") for _ in range(2)]
    clients = [g.boto3_client() for g in gws]
    s3 = clients[0]
    b = new_bucket_name("lcl")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    # A gateway that died in the middle of sweeping the bucket: its lease runs 10 s more.
    cluster.pg.psql(
        cluster.db,
        f"INSERT INTO leases (name, holder, expires_ms) VALUES ('lifecycle:{b}', 'dead-host:1', "
        "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT) + 10000)",
    )
    rnd = random.Random(7)
    noncurrent = set()
    for i in range(30):
        ids = [rnd.choice(clients).put_object(Bucket=b, Key=f"k{i:02}", Body=b"v%d" % n)["VersionId"] for n in range(3)]
        noncurrent.update(ids[:2])
    s3.put_bucket_lifecycle_configuration(
        Bucket=b,
        LifecycleConfiguration={
            "Rules": [{"ID": "old", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]
        },
    )

    def versions() -> list[dict]:
        out = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=b):
            out += page.get("Versions", [])
        return out

    # Both gateways pass the bucket over while the lease is held (a pass every second, a day of
    # one second: without the lease the versions would be gone by now).
    time.sleep(4)
    assert len(versions()) == 90, "a gateway swept the bucket while another held its lease"
    wait_for(lambda: len(versions()) == 30, timeout=30, what="the non-current versions to go")
    assert all(v["IsLatest"] for v in versions())
    removed = []
    for g in gws:
        removed += re.findall(
            rf"lifecycle: removed a non-current version bucket=\"?{b}\"? key=\"?k\d+\"? version=([0-9a-f]{{32}})",
            g.log_text(),
        )
    assert len(removed) == len(noncurrent) and set(removed) == noncurrent, (len(removed), len(noncurrent))


# --------------------------------------------------------------------------------------------
# one truth: written through one gateway, seen through the other at once


def test_written_through_one_gateway_is_seen_through_another_at_once(cluster):
    a, b = cluster.start(), cluster.start()
    sa, sb = a.boto3_client(), b.boto3_client()
    bucket = new_bucket_name("raw")
    sa.create_bucket(Bucket=bucket)
    rnd = random.Random(7)
    for i in range(40):
        key = f"k{i % 5}.bin"
        # Same size every time: only the ETag and the bytes tell versions apart.
        body = rnd.randbytes(4096)
        etag = hashlib.md5(body).hexdigest()
        writer, reader = (sa, sb) if i % 2 == 0 else (sb, sa)
        if i >= 5:  # the reader has served this key before: its caches hold the old version
            reader.get_object(Bucket=bucket, Key=key, Range="bytes=0-9")["Body"].read()
        writer.put_object(Bucket=bucket, Key=key, Body=body)
        got = reader.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body and got["ETag"].strip('"') == etag, (i, key)
        head = reader.head_object(Bucket=bucket, Key=key)
        assert head["ETag"].strip('"') == etag, (i, key)
        ranged = reader.get_object(Bucket=bucket, Key=key, Range="bytes=100-199")["Body"].read()
        assert ranged == body[100:200], (i, key)
        listed = {o["Key"]: o for o in reader.list_objects_v2(Bucket=bucket)["Contents"]}
        assert listed[key]["ETag"].strip('"') == etag and listed[key]["Size"] == 4096, (i, key)
    # Each gateway heard of the other's 20 writes through PostgreSQL (LISTEN/NOTIFY), not of
    # its own.
    for g in (a, b):
        wait_for(lambda: remote_changes(g) >= 20, timeout=5, what=f"announcements at {g.endpoint}")
        assert remote_changes(g) < 40, remote_changes(g)
    sa.delete_object(Bucket=bucket, Key="k0.bin")
    with pytest.raises(sb.exceptions.NoSuchKey):
        sb.get_object(Bucket=bucket, Key="k0.bin")
    assert "k0.bin" not in [o["Key"] for o in sb.list_objects_v2(Bucket=bucket)["Contents"]]

    # A big folder's sorted listing is cached (once it settled): a key added through the other
    # gateway is listed at once all the same.
    big = new_bucket_name("big")
    sa.create_bucket(Bucket=big)
    names = [f"f{i:04d}" for i in range(1000)]
    for n in names:
        (cluster.data_dir / big / n).write_bytes(b"x")
    time.sleep(2.5)

    def all_keys(s3):
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=big):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    assert all_keys(sb) == names
    assert all_keys(sb) == names  # from the cache now
    sa.put_object(Bucket=big, Key="f0500a", Body=b"new")
    assert "f0500a" in all_keys(sb)
    sa.delete_object(Bucket=big, Key="f0001")
    assert "f0001" not in all_keys(sb)


# --------------------------------------------------------------------------------------------
# three gateways, 32 clients, one killed midway


STRESS_SECS = 30
CLIENTS = 32
PART = 5 * 1024 * 1024


class Stress:
    """32 boto3 threads, each on keys of its own, sending every request to a random gateway
    and checking every answer against what it wrote (read-after-write, list-after-write).
    A request to a gateway that is gone is retried on another; anything else is an error."""

    def __init__(self, gateways: list[Gateway], bucket: str):
        self.bucket = bucket
        self.lock = threading.Lock()
        self.alive: dict[str, object] = {}
        for g in gateways:
            self.add(g)
        self.errors: list[str] = []
        self.ops: dict[str, int] = {}
        self.retries = 0
        self.stop = threading.Event()

    def add(self, g: Gateway):
        s3 = g.boto3_client(max_pool_connections=CLIENTS, connect_timeout=2, read_timeout=20)
        with self.lock:
            self.alive[g.endpoint] = s3

    def remove(self, g: Gateway):
        with self.lock:
            self.alive.pop(g.endpoint, None)

    def pick(self, rnd: random.Random):
        with self.lock:
            return rnd.choice(list(self.alive.items()))

    def call(self, rnd: random.Random, op: str, **kw):
        """`op` on a random live gateway; a connection to a dead one is retried elsewhere."""
        return self._retried(rnd, op, lambda s3: getattr(s3, op)(**kw))

    def get_bytes(self, rnd: random.Random, **kw) -> bytes:
        """GetObject's body, read inside the retry: a gateway killed while it streams an
        answer cuts the body short, and the client fetches it again elsewhere."""
        return self._retried(rnd, "get_object", lambda s3: s3.get_object(**kw)["Body"].read())

    def _retried(self, rnd: random.Random, op: str, request):
        from botocore.exceptions import (
            ConnectionClosedError,
            EndpointConnectionError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        for _ in range(6):
            endpoint, s3 = self.pick(rnd)
            try:
                return request(s3)
            except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ResponseStreamingError) as e:
                with self.lock:
                    gone = endpoint not in self.alive
                    self.retries += 1
                if not gone:
                    # The gateway may be the one being killed right now: give the kill a moment.
                    time.sleep(0.5)
                    with self.lock:
                        if endpoint in self.alive:
                            raise AssertionError(f"{op} on live gateway {endpoint}: {e!r}")
        raise AssertionError(f"{op}: no gateway answered")

    def note(self, op: str):
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1

    def worker(self, n: int):
        rnd = random.Random(n)
        b = self.bucket
        prefix = f"w{n:02d}/"
        model: dict[str, bytes] = {}

        def check_get(key: str):
            want = model.get(key)
            try:
                got = self.get_bytes(rnd, Bucket=b, Key=key)
            except Exception as e:  # noqa: BLE001
                if want is None and getattr(e, "response", {}).get("Error", {}).get("Code") == "NoSuchKey":
                    return
                raise
            if got != want:
                raise AssertionError(f"stale read of {key}: {len(got)} bytes, want {None if want is None else len(want)}")

        try:
            while not self.stop.is_set():
                r = rnd.random()
                key = prefix + f"k{rnd.randrange(8)}"
                if r < 0.35:
                    body = rnd.randbytes(rnd.choice([0, 1, 100, 4096, 65536]))
                    self.call(rnd, "put_object", Bucket=b, Key=key, Body=body)
                    model[key] = body
                    check_get(key)
                    self.note("put")
                elif r < 0.60:
                    check_get(key)
                    if key in model and model[key]:
                        n0 = rnd.randrange(len(model[key]))
                        got = self.get_bytes(rnd, Bucket=b, Key=key, Range=f"bytes={n0}-")
                        if got != model[key][n0:]:
                            raise AssertionError(f"stale range of {key}")
                    self.note("get")
                elif r < 0.75:
                    listed = self.call(rnd, "list_objects_v2", Bucket=b, Prefix=prefix).get("Contents", [])
                    seen = {o["Key"]: o["Size"] for o in listed}
                    want = {k: len(v) for k, v in model.items()}
                    if seen != want:
                        raise AssertionError(f"stale listing of {prefix}: {sorted(seen.items())} != {sorted(want.items())}")
                    self.note("list")
                elif r < 0.87:
                    self.call(rnd, "delete_object", Bucket=b, Key=key)
                    model.pop(key, None)
                    check_get(key)
                    self.note("delete")
                elif r < 0.97:
                    if key in model:
                        dst = prefix + f"k{(int(key[-1]) + rnd.randrange(1, 8)) % 8}"
                        self.call(rnd, "copy_object", Bucket=b, Key=dst, CopySource={"Bucket": b, "Key": key})
                        model[dst] = model[key]
                        check_get(dst)
                        self.note("copy")
                else:
                    self.multipart(rnd, key, model)
                    check_get(key)
                    self.note("multipart")
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.errors.append(f"client {n}: {e!r}")

    def multipart(self, rnd: random.Random, key: str, model: dict[str, bytes]):
        """Created on one gateway, parts through others, completed on yet another."""
        b = self.bucket
        parts = [rnd.randbytes(PART), rnd.randbytes(1000)]
        up = self.call(rnd, "create_multipart_upload", Bucket=b, Key=key)["UploadId"]
        done = []
        for i, data in enumerate(parts, 1):
            etag = self.call(rnd, "upload_part", Bucket=b, Key=key, UploadId=up, PartNumber=i, Body=data)["ETag"]
            done.append({"PartNumber": i, "ETag": etag})
        try:
            self.call(rnd, "complete_multipart_upload", Bucket=b, Key=key, UploadId=up, MultipartUpload={"Parts": done})
        except Exception as e:  # noqa: BLE001
            # Completed by a gateway killed before it answered: the retry finds no upload.
            if getattr(e, "response", {}).get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        model[key] = b"".join(parts)


def test_three_gateways_32_clients_one_killed(cluster, tmp_path):
    from test_jobs import make_video

    video = make_video(tmp_path / "clip.mp4", 12, 320, 240)
    args = ("--job-lease-secs", "3", "--heartbeat-secs", "1")
    gws = [cluster.start(*args) for _ in range(3)]
    bucket = new_bucket_name("stress")
    s3 = gws[0].boto3_client()
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(video), bucket, "clip.mp4", ExtraArgs={"ContentType": "video/mp4"})
    stress = Stress(gws, bucket)
    threads = [threading.Thread(target=stress.worker, args=(n,), daemon=True) for n in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(STRESS_SECS * 0.3)
        # A transcode job: whichever gateway takes it is the one killed, mid-transcode.
        r = gws[1].raw().request(
            "POST", API + "transcode", body=json.dumps({"bucket": bucket, "key": "clip.mp4", "qualities": [240]}).encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status == 201, r
        job = json.loads(r.body)["jobs"][0]

        def holder():
            j = api_get(gws[0], f"jobs/{job['id']}")
            return j if j["status"] == "processing" else None

        held = wait_for(holder, timeout=20, interval=0.05, what="a gateway to take the job")
        victim = next(g for g in gws if f":{g.pid}:" in held["worker_id"])
        stress.remove(victim)
        cluster.kill(victim)
        survivors = [g for g in gws if g is not victim]
        # A gateway started now, while the others serve, sees everything and joins in.
        late = cluster.start(*args)
        stress.add(late)
        survivors.append(late)
        time.sleep(max(0.0, STRESS_SECS - (time.monotonic() - t0)))
    finally:
        stress.stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not stress.errors, "\n".join(stress.errors[:10])
    total = sum(stress.ops.values())
    print(f"\nstress: {total} operations in {time.monotonic() - t0:.1f}s {stress.ops}, {stress.retries} retried elsewhere")
    assert total > 300 and all(stress.ops.get(op, 0) > 0 for op in ("put", "get", "list", "delete", "copy", "multipart")), stress.ops

    # The killed gateway's job lease expired and a survivor finished the job.
    done = wait_for(
        lambda: (j := api_get(survivors[0], f"jobs/{job['id']}"))["status"] == "completed" and j,
        timeout=120,
        what="the job to finish on a survivor",
    )
    assert done["attempts"] == 2 and done["worker_id"] != held["worker_id"], (held, done)
    assert any(f":{g.pid}:" in done["worker_id"] for g in survivors), done
    # The killed one is stale in everyone's view; the survivors are not.
    view = {g["id"]: g for g in api_get(survivors[0], "health")["gateways"]}
    assert len(view) == 4, view
    assert not any(g["stale"] for i, g in view.items() if not i.endswith(f":{victim.pid}")), view

    def victim_stale():
        rows = api_get(survivors[0], "health")["gateways"]
        return [g["stale"] for g in rows if g["id"].endswith(f":{victim.pid}")] == [True]

    wait_for(victim_stale, timeout=10, what="the killed gateway to turn stale")
    # Every gateway lists the same objects, with the bytes the files hold.
    listings = []
    for g in survivors:
        c = g.boto3_client()
        keys = []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        listings.append(keys)
    assert listings[0] == listings[1] == listings[2], "gateways disagree"
    on_disk = sorted(
        (str(p.relative_to(cluster.data_dir / bucket)), p.stat().st_size)
        for p in (cluster.data_dir / bucket).rglob("*")
        if p.is_file() and ".nebula-tmp" not in p.parts
    )
    assert sorted(listings[0]) == on_disk


# --------------------------------------------------------------------------------------------
# media: one producer of a rendition, poster or HLS segment in the whole cluster


def media_counters(g: Gateway) -> dict[str, int]:
    """This gateway's pipelines started by kind, and requests that waited for another's."""
    r = g.raw().request("GET", API + "metrics")
    assert r.status == 200, r
    text = r.body.decode()
    out = {k: 0 for k in ("live_transcode", "poster", "hls_run", "waited")}
    for kind, n in re.findall(r'^nebula_media_produced_total\{kind="(\w+)"\} (\d+)', text, re.M):
        out[kind] = int(n)
    m = re.search(r"^nebula_media_waited_for_other_gateway_total (\d+)", text, re.M)
    out["waited"] = int(m.group(1)) if m else 0
    return out


def test_two_gateways_asked_for_the_same_media_at_once_produce_it_once(cluster, tmp_path):
    from test_jobs import make_video

    a, b = cluster.start(), cluster.start()
    bucket = new_bucket_name("media1")
    s3 = a.boto3_client()
    s3.create_bucket(Bucket=bucket)
    video = make_video(tmp_path / "clip.mp4", 8, 320, 240)
    s3.upload_file(str(video), bucket, "clip.mp4", ExtraArgs={"ContentType": "video/mp4"})

    def at_once(query: list[tuple[str, str]]) -> list:
        """The same GET through both gateways at the same moment."""
        go = threading.Barrier(2)
        answers: list = [None, None]

        def fetch(i: int, g: Gateway):
            go.wait()
            answers[i] = g.raw().request("GET", f"/{bucket}/clip.mp4", query=query)

        threads = [threading.Thread(target=fetch, args=(i, g)) for i, g in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for r in answers:
            assert r is not None and r.status == 200, (query, answers)
        return answers

    cases = [
        ("live_transcode", [("quality", "240")]),
        ("poster", [("thumbnail", "160")]),
        ("hls_run", [("stream", "hls"), ("quality", "240"), ("segment", "1")]),
    ]
    for kind, query in cases:
        before = [media_counters(g) for g in (a, b)]
        ra, rb = at_once(query)
        after = [media_counters(g) for g in (a, b)]
        started = [after[i][kind] - before[i][kind] for i in (0, 1)]
        # One pipeline in the cluster; the other gateway served its file, byte for byte.
        assert sum(started) == 1, (kind, before, after)
        assert ra.body == rb.body and len(ra.body) > 1000, (kind, len(ra.body), len(rb.body))
    # Every claim was given back once its file was in place.
    wait_for(
        lambda: cluster.pg.psql(cluster.db, "SELECT count(*) FROM leases WHERE name LIKE 'media:%'").strip() == "0",
        timeout=20,
        what="media leases released",
    )
