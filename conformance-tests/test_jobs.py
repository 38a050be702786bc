"""Background transcode jobs and the JSON API (``/_nebula/v1/files``, ``transcode``, ``jobs``).

The real binary on SQLite (default) and on a throwaway PostgreSQL cluster (the one of
``test_catalog.py``).  Videos are made with ``gst-launch-1.0`` and kept small: CI has 2 cores.
API requests are signed like S3 requests (``RawS3``); renditions are fetched with presigned URLs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Gateway, free_port, new_bucket_name
from nebula_helpers import GatewayGroup, object_path, presign
from test_catalog import PgCluster, pg, wait_for  # noqa: F401  (pg is a fixture)

API = "/_nebula/v1/"
TEMP_SUFFIXES = (".part", ".faststart")


# --------------------------------------------------------------------------------------------
# media


def make_video(path: Path, seconds: int, width: int = 640, height: int = 360, mux: str = "mp4mux faststart=true") -> Path:
    frames = seconds * 30
    pipeline = (
        f"videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 ! "
        f"x264enc speed-preset=ultrafast ! h264parse ! {mux} name=mux ! filesink location={path} "
        f"audiotestsrc num-buffers={seconds * 44100 // 1024} ! audio/x-raw,rate=44100 ! audioconvert ! avenc_aac ! aacparse ! mux."
    )
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True, capture_output=True, timeout=300)
    assert path.stat().st_size > 10_000
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("job-media")
    return {
        "short": make_video(d / "short.mp4", 3),
        "medium": make_video(d / "medium.mp4", 20),
        # Long enough to still be running a few seconds after it started on a fast machine.
        "long": make_video(d / "long.mp4", 60),
        "mkv": make_video(d / "clip.mkv", 2, mux="matroskamux"),
    }


# --------------------------------------------------------------------------------------------
# gateways and the API


class Api:
    """Signed JSON calls to one gateway."""

    def __init__(self, g: Gateway):
        self.g = g
        self.raw = g.raw()

    def call(self, method: str, path: str, query=None, body=None, sign: bool = True):
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data else {}
        r = self.raw.request(method, API + path, query=list(query or []), headers=headers, body=data, sign=sign)
        try:
            doc = json.loads(r.body) if r.body else None
        except ValueError:
            raise AssertionError(f"{method} {path}: not JSON: {r!r}")
        return r.status, doc

    def ok(self, method: str, path: str, query=None, body=None, status: int = 200):
        st, doc = self.call(method, path, query, body)
        assert st == status, f"{method} {path}: {st} {doc}\n{self.g.log_tail(20)}"
        return doc

    def job(self, job_id: int) -> dict:
        return self.ok("GET", f"jobs/{job_id}")

    def transcode(self, bucket: str, key: str, qualities) -> list[dict]:
        return self.ok("POST", "transcode", body={"bucket": bucket, "key": key, "qualities": qualities}, status=201)["jobs"]

    def wait_job(self, job_id: int, statuses=("completed",), timeout: float = 180) -> dict:
        final = ("completed", "failed", "cancelled")

        def done():
            j = self.job(job_id)
            if j["status"] in final and j["status"] not in statuses:
                raise AssertionError(f"job ended {j['status']}, expected {statuses}: {j}\n{self.g.log_tail(20)}")
            return j if j["status"] in statuses else None

        return wait_for(done, timeout=timeout, interval=0.2, what=f"job {job_id} to become {statuses}")


class Env(GatewayGroup):
    """Gateways of one test on one catalog database; stopped (and checked) at the end."""

    def __init__(self, engine: str, tmp_path_factory, pg_cluster: PgCluster | None):
        super().__init__()
        self.engine = engine
        self.tmp = tmp_path_factory
        self.pg = pg_cluster
        self.db = pg_cluster.create_db() if pg_cluster else None

    def db_args(self) -> list[str]:
        return ["--database-url", self.pg.url(self.db)] if self.engine == "postgres" else []

    def start(self, *args: str, workdir: Path | None = None, data_dir: Path | None = None) -> Gateway:
        g = Gateway(workdir or self.tmp.mktemp(f"gw-jobs-{self.engine}"), extra_args=[*self.db_args(), *args])
        if data_dir is not None:
            g.data_dir = data_dir
        return self.add(g)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    cluster = request.getfixturevalue("pg") if request.param == "postgres" else None
    e = Env(request.param, tmp_path_factory, cluster)
    yield e
    e.close()


def renditions_dir(g: Gateway) -> Path:
    return g.data_dir / ".nebula" / "renditions"


def temp_files(g: Gateway) -> list[str]:
    d = renditions_dir(g)
    if not d.exists():
        return []
    return [p.name for p in d.iterdir() if p.name.endswith(TEMP_SUFFIXES)]


def upload(g: Gateway, bucket: str, key: str, path: Path, content_type: str = "video/mp4"):
    raw = g.raw()
    if raw.request("HEAD", object_path(bucket)).status != 200:
        assert raw.put_bucket(bucket).status == 200
    r = raw.put(bucket, key, path.read_bytes(), headers={"content-type": content_type})
    assert r.status == 200, r


def presigned_get(g: Gateway, bucket: str, key: str, query, headers=None):
    raw = g.raw()
    target = presign(g.creds, "GET", raw.host_header, object_path(bucket, key), extra_query=list(query))
    return raw.send("GET", target, {"host": raw.host_header, **(headers or {})})


def wait_processing(api: Api, job_id: int, min_progress: int = 1, timeout: float = 120) -> dict:
    def running():
        j = api.job(job_id)
        assert j["status"] in ("pending", "processing"), f"job finished too early for this test: {j}"
        return j if j["status"] == "processing" and j["progress"] >= min_progress else None

    return wait_for(running, timeout=timeout, interval=0.1, what=f"job {job_id} processing")


# --------------------------------------------------------------------------------------------
# the lifecycle


def test_job_completes_and_rendition_serves_ranges(env, videos):
    g = env.start()
    api = Api(g)
    b = new_bucket_name("jobs")
    upload(g, b, "clips/medium.mp4", videos["medium"])

    [job] = api.transcode(b, "clips/medium.mp4", [480])
    assert job["status"] == "pending" and job["progress"] == 0 and job["attempts"] == 0, job
    assert (job["bucket"], job["key"], job["quality"]) == (b, "clips/medium.mp4", 480)
    for field in ("id", "output_size", "error", "encoder", "created_at", "started_at", "completed_at", "worker_id"):
        assert field in job, job

    seen = []
    deadline = time.monotonic() + 180
    while True:
        j = api.job(job["id"])
        seen.append((j["status"], j["progress"]))
        if j["status"] in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job did not finish: {seen[-5:]}"
        time.sleep(0.05)
    assert j["status"] == "completed", (j, g.log_tail(20))
    progress = [p for s, p in seen if s == "processing"]
    assert progress, f"never saw the job processing: {seen}"
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert any(0 < p < 100 for p in progress), f"no intermediate progress seen: {seen}"
    assert j["progress"] == 100 and j["output_size"] > 10_000 and j["encoder"], j
    assert j["attempts"] == 1 and j["error"] is None, j
    assert re.fullmatch(rf".+:{g.pid}:1", j["worker_id"]), j
    assert j["created_at"] and j["started_at"] and j["completed_at"], j

    # The rendition serves from the file: length known, byte ranges, encoder header.
    r = presigned_get(g, b, "clips/medium.mp4", [("quality", "480")], {"range": "bytes=100-1099"})
    assert r.status == 206, r
    assert len(r.body) == 1000 and r.header("content-range") == f"bytes 100-1099/{j['output_size']}", r.headers
    assert r.header("x-nebula-encoder") == j["encoder"], r.headers
    full = presigned_get(g, b, "clips/medium.mp4", [("quality", "480")])
    assert full.status == 200 and int(full.header("content-length")) == j["output_size"] == len(full.body)
    assert full.body[4:8] == b"ftyp" and full.body[100:1100] == r.body
    assert not temp_files(g)

    # The catalog lists it; the health report counts it.
    files = api.ok("GET", "files", [("bucket", b), ("prefix", "clips/")])
    [item] = files["items"]
    assert files["next_cursor"] is None
    assert item["key"] == "clips/medium.mp4" and item["size"] == videos["medium"].stat().st_size
    assert item["variants"]["480"] == {"size": j["output_size"], "encoder": j["encoder"]}, item
    media = wait_for(lambda: api.ok("GET", "files", [("bucket", b)])["items"][0]["media"], what="probe")
    assert (media["width"], media["height"], media["video_codec"]) == (640, 360, "h264"), media
    assert set(media) == {"duration_secs", "width", "height", "fps", "video_codec", "audio_codec", "bitrate", "container"}
    health = api.ok("GET", "health")
    assert health["jobs"]["completed"] >= 1 and set(health["jobs"]) == {"pending", "processing", "completed", "failed", "cancelled"}

    listed = api.ok("GET", "jobs", [("bucket", b), ("key", "clips/medium.mp4"), ("status", "completed")])["jobs"]
    assert [x["id"] for x in listed] == [job["id"]]


def test_cancel_stops_a_running_job(env, videos):
    g = env.start()
    api = Api(g)
    b = new_bucket_name("jobs")
    upload(g, b, "long.mp4", videos["long"])
    [job] = api.transcode(b, "long.mp4", [720])
    wait_processing(api, job["id"])
    t0 = time.monotonic()
    cancelled = api.ok("POST", f"jobs/{job['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["completed_at"], cancelled
    # The pipeline stops and its partial output is removed within about a second.
    wait_for(lambda: not temp_files(g) and "job cancelled" in g.log_text(), timeout=3, interval=0.05, what="pipeline stopped")
    assert time.monotonic() - t0 < 2.5
    time.sleep(1)
    j = api.job(job["id"])
    assert j["status"] == "cancelled" and j["progress"] < 100 and j["output_size"] is None, j
    assert api.ok("GET", "health")["jobs"]["processing"] == 0
    # Cancelling again changes nothing; a new request queues a new job.
    assert api.ok("POST", f"jobs/{job['id']}/cancel")["status"] == "cancelled"
    [again] = api.transcode(b, "long.mp4", [720])
    assert again["id"] != job["id"]
    api.ok("POST", f"jobs/{again['id']}/cancel")


def test_job_survives_a_killed_gateway(env, videos):
    args = ("--job-lease-secs", "3")
    g = env.start(*args)
    api = Api(g)
    b = new_bucket_name("jobs")
    upload(g, b, "long.mp4", videos["long"])
    [job] = api.transcode(b, "long.mp4", [360])
    first = wait_processing(api, job["id"])
    env.kill(g)

    g2 = env.start(*args, workdir=g.workdir)
    api2 = Api(g2)
    done = api2.wait_job(job["id"], timeout=240)
    assert done["attempts"] == 2, done
    assert done["worker_id"] != first["worker_id"] and f":{g2.pid}:" in done["worker_id"], (first, done)
    assert done["output_size"] > 0 and done["error"] is None, done
    assert not temp_files(g2)
    r = presigned_get(g2, b, "long.mp4", [("quality", "360")], {"range": "bytes=0-99"})
    assert r.status == 206 and len(r.body) == 100, r


def test_two_gateways_share_one_postgres_queue(request, tmp_path_factory, videos):
    cluster = request.getfixturevalue("pg")
    env = Env("postgres", tmp_path_factory, cluster)
    try:
        g1 = env.start()
        g2 = env.start(data_dir=g1.data_dir)
        a1, a2 = Api(g1), Api(g2)
        b = new_bucket_name("jobs")
        keys = [f"v{i}.mp4" for i in range(3)]
        for k in keys:
            upload(g1, b, k, videos["short"])
        ids = []
        for i, k in enumerate(keys):
            api = a1 if i % 2 == 0 else a2
            ids += [j["id"] for j in api.transcode(b, k, [240, 360])]
        assert len(set(ids)) == 6
        jobs = [a1.wait_job(i, timeout=300) for i in ids]
        assert all(j["attempts"] == 1 for j in jobs), jobs
        # Each job ran exactly once, on the gateway its worker_id names (one gateway may
        # legitimately take them all: the queue promises once, not a fair share).
        by_pid = {str(g1.pid): g1.log_text(), str(g2.pid): g2.log_text()}
        for j in jobs:
            pid = j["worker_id"].split(":")[-2]
            assert pid in by_pid, (j["worker_id"], list(by_pid))
            for other, log in by_pid.items():
                runs = 1 if other == pid else 0
                assert len(re.findall(rf"job started job={j['id']} ", log)) == runs, (j, other)
                assert len(re.findall(rf"job completed job={j['id']} ", log)) == runs, (j, other)
        variants = {it["key"]: it["variants"] for it in a2.ok("GET", "files", [("bucket", b)])["items"]}
        assert all(set(v) == {"240", "360"} for v in variants.values()), variants
    finally:
        env.close()


# --------------------------------------------------------------------------------------------
# auto-transcode rules


def test_auto_transcode_rules(env, videos):
    g = env.start("--auto-transcode", "240", "--auto-web-friendly")
    api = Api(g)
    b = new_bucket_name("auto")
    upload(g, b, "a.mp4", videos["short"])
    upload(g, b, "b.mkv", videos["mkv"], content_type="video/x-matroska")
    upload(g, b, "notes.txt", Path(__file__), content_type="text/plain")

    def queued():
        jobs = api.ok("GET", "jobs", [("bucket", b)])["jobs"]
        got = sorted((j["key"], j["quality"]) for j in jobs)
        return jobs if got == [("a.mp4", 240), ("b.mkv", 240), ("b.mkv", 360)] else None

    jobs = wait_for(queued, timeout=120, what="auto-transcode jobs")
    for j in jobs:
        api.wait_job(j["id"])


# --------------------------------------------------------------------------------------------
# errors


def test_bad_inputs_get_json_errors(env, videos):
    # No workers: queued jobs stay pending, so duplicates and cancels can be checked.
    g = env.start("--transcode-workers", "0")
    api = Api(g)
    b = new_bucket_name("bad")
    upload(g, b, "v.mp4", videos["short"])
    upload(g, b, "notes.txt", Path(__file__), content_type="text/plain")

    def error(method, path, query=None, body=None, sign=True):
        st, doc = api.call(method, path, query, body, sign)
        assert isinstance(doc, dict) and set(doc["error"]) == {"code", "message"} and doc["error"]["message"], doc
        return st, doc["error"]["code"]

    assert error("POST", "transcode", body={"bucket": b, "key": "nope.mp4", "qualities": [480]}) == (404, "NoSuchKey")
    assert error("POST", "transcode", body={"bucket": "no-such-bucket-x", "key": "v.mp4", "qualities": [480]}) == (404, "NoSuchKey")
    assert error("POST", "transcode", body={"bucket": b, "key": "v.mp4", "qualities": [999]}) == (400, "InvalidQuality")
    assert error("POST", "transcode", body={"bucket": b, "key": "v.mp4", "qualities": []}) == (400, "InvalidQuality")
    assert error("POST", "transcode", body={"bucket": b, "key": "notes.txt", "qualities": [480]}) == (415, "NotVideo")
    assert error("POST", "transcode", body=b"{not json") == (400, "MalformedJson")
    assert error("POST", "transcode", body={"bucket": b}) == (400, "MalformedJson")
    assert error("GET", "jobs/999999") == (404, "NoSuchJob")
    assert error("GET", "jobs/abc") == (404, "NoSuchJob")
    assert error("POST", "jobs/999999/cancel") == (404, "NoSuchJob")
    assert error("GET", "jobs", [("status", "bogus")]) == (400, "InvalidArgument")
    assert error("GET", "files") == (400, "InvalidArgument")
    assert error("GET", "files", [("bucket", b), ("limit", "0")]) == (400, "InvalidArgument")
    assert error("GET", "files", [("bucket", "no-such-bucket-x")]) == (404, "NoSuchBucket")
    assert error("GET", "files", [("bucket", "../etc")]) == (400, "InvalidBucketName")
    assert error("GET", "jobs", sign=False) == (403, "AccessDenied")
    assert error("DELETE", "jobs") == (405, "MethodNotAllowed")

    # The same object and quality while pending: the same job, not a duplicate.
    first = api.transcode(b, "v.mp4", [480, "720"])
    second = api.transcode(b, "v.mp4", ["480p"])
    assert second[0]["id"] == first[0]["id"] and second[0]["status"] == "pending"
    listed = api.ok("GET", "jobs", [("status", "pending"), ("bucket", b)])["jobs"]
    assert [j["id"] for j in listed] == sorted((j["id"] for j in first), reverse=True), listed
    assert api.ok("GET", "jobs", [("limit", "1"), ("bucket", b)])["jobs"][0]["id"] == first[1]["id"]
    assert api.ok("POST", f"jobs/{first[0]['id']}/cancel")["status"] == "cancelled"
    third = api.transcode(b, "v.mp4", [480])
    assert third[0]["id"] not in (first[0]["id"], first[1]["id"])
    health = api.ok("GET", "health")["jobs"]
    assert (health["pending"], health["cancelled"]) == (2, 1), health

    # Paging through files.
    page1 = api.ok("GET", "files", [("bucket", b), ("limit", "1")])
    assert [i["key"] for i in page1["items"]] == ["notes.txt"] and page1["next_cursor"] == "notes.txt"
    page2 = api.ok("GET", "files", [("bucket", b), ("limit", "1"), ("cursor", page1["next_cursor"])])
    assert [i["key"] for i in page2["items"]] == ["v.mp4"] and page2["next_cursor"] is None
    assert page1["items"][0]["media"] is None and page1["items"][0]["variants"] == {}


def test_database_down_gives_503(start_gateway):
    # Nothing listens on this port: the catalog is down from the start.
    url = f"postgres://postgres@127.0.0.1:{free_port()}/nebula?sslmode=disable"
    g = start_gateway(extra_args=["--database-url", url])
    # The bucket exists on disk (the folder is the truth), so only the catalog can fail.
    (g.data_dir / "down-bucket").mkdir()
    api = Api(g)
    for method, path, query, body in (
        ("GET", "files", [("bucket", "down-bucket")], None),
        ("POST", "transcode", None, {"bucket": "down-bucket", "key": "v.mp4", "qualities": [480]}),
    ):
        st, doc = api.call(method, path, query, body)
        assert st == 503 and doc["error"]["code"] == "ServiceUnavailable", (path, st, doc)
