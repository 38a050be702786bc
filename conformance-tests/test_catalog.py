"""The catalog database, on SQLite (the default) and on a real PostgreSQL.

Every case that depends on the engine runs twice.  PostgreSQL is a throwaway cluster: initdb into
a temp folder, started on a free loopback port for this module and stopped at its end (as the
``postgres`` user when the suite runs as root).  The gateway is the real binary driven with boto3;
the rows are read straight from the database (``sqlite3`` module / ``psql``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import Gateway, free_port, gateway_bin, new_bucket_name, sanitized_environ

MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# PostgreSQL cluster


def _pg_bin_dir() -> Path | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    return Path(dirs[-1]) if dirs else None


class PgCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust authentication."""

    def __init__(self):
        self.bin = _pg_bin_dir()
        if self.bin is None or not (self.bin / "initdb").exists():
            pytest.fail("PostgreSQL is not installed: run scripts/setup.sh --test (Debian package postgresql)")
        self.port = free_port()
        # Not below pytest's 0700 temp folders: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="nebula-pg-", dir="/tmp"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def start(self) -> "PgCluster":
        data = self.dir / "data"
        subprocess.run(
            self._as_owner([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        p = subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "-t", "60", "start"]),
            capture_output=True,
        )
        if p.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace") if (self.dir / "log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {p.stderr.decode(errors='replace')}\n{log}")
        return self

    def stop(self):
        subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def psql(self, db: str, sql: str) -> str:
        p = subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True,
            env=sanitized_environ(),
        )
        if p.returncode != 0:
            raise AssertionError(f"psql failed: {sql}\n{p.stderr.decode(errors='replace')}")
        return p.stdout.decode()

    def create_db(self) -> str:
        name = "nebula_" + uuid.uuid4().hex[:12]
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name


@pytest.fixture(scope="module")
def pg():
    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


# --------------------------------------------------------------------------------------------
# the catalog as the tests see it


class CatalogDb:
    """Reads the objects table of one gateway's catalog."""

    COLUMNS = "bucket, key, size, etag, content_type, user_metadata, sha256, media, variants, probe_status, probe_error"

    def __init__(self, engine: str, data_dir: Path, pg: PgCluster | None = None, db: str | None = None):
        self.engine = engine
        self.data_dir = data_dir
        self.pg = pg
        self.db = db

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / ".nebula" / "catalog.sqlite"

    @property
    def url_args(self) -> list[str]:
        # SQLite is the default: no flag at all, so the default location is what is tested.
        return ["--database-url", self.pg.url(self.db)] if self.engine == "postgres" else []

    def query(self, sql: str) -> list[dict]:
        if self.engine == "sqlite":
            con = sqlite3.connect(self.sqlite_path, timeout=10)
            con.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in con.execute(sql)]
            finally:
                con.close()
            return rows
        out = self.pg.psql(self.db, f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t")
        return json.loads(out)

    def objects(self, bucket: str) -> dict[str, dict]:
        rows = self.query(f"SELECT {self.COLUMNS} FROM objects WHERE bucket = '{bucket}' ORDER BY key")
        out = {}
        for r in rows:
            for col in ("user_metadata", "media", "variants"):
                if isinstance(r[col], str):
                    r[col] = json.loads(r[col])
            out[r["key"]] = r
        return out

    def execute(self, sql: str):
        if self.engine == "sqlite":
            con = sqlite3.connect(self.sqlite_path, timeout=10)
            try:
                con.execute(sql)
                con.commit()
            finally:
                con.close()
        else:
            self.pg.psql(self.db, sql)

    def lose(self):
        """Loses the whole database (file deleted / database dropped and made anew, empty)."""
        if self.engine == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.sqlite_path) + suffix).unlink(missing_ok=True)
        else:
            self.pg.psql("postgres", f"DROP DATABASE {self.db}")
            self.pg.psql("postgres", f"CREATE DATABASE {self.db}")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    return request.param


@pytest.fixture
def catalog_env(engine, request, tmp_path_factory):
    """A started gateway on its own data folder and catalog, and that catalog."""
    workdir = tmp_path_factory.mktemp(f"gw-catalog-{engine}")
    if engine == "postgres":
        pg = request.getfixturevalue("pg")
        db = CatalogDb("postgres", workdir / "data", pg, pg.create_db())
    else:
        db = CatalogDb("sqlite", workdir / "data")
    g = Gateway(workdir, extra_args=db.url_args)
    g.start()
    yield g, db
    g.assert_clean_exit()


def reindex(db: CatalogDb, timeout: float = 120) -> tuple[dict[str, int], str]:
    """Runs `nebula-gateway reindex` and returns its counts and output."""
    cmd = [str(gateway_bin()), "reindex", "--data-dir", str(db.data_dir), *db.url_args]
    env = sanitized_environ()
    env.pop("DATABASE_URL", None)
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, f"reindex failed ({p.returncode}):\n{out}\n{p.stderr.decode(errors='replace')}"
    counts = {}
    for word in ("added", "updated", "removed", "unchanged"):
        # "reindexed 1 buckets: 3 added, 0 updated, 1 removed, 5 unchanged (...)"
        before = out.split(f" {word}")[0]
        counts[word] = int(before.rsplit(" ", 1)[-1])
    return counts, out


def wait_for(predicate, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# rows follow S3 writes


def test_rows_follow_put_copy_delete(catalog_env):
    g, db = catalog_env
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)

    r = s3.put_object(Bucket=b, Key="docs/a.txt", Body=b"hello", ContentType="text/plain", Metadata={"owner": "me"})
    s3.put_object(Bucket=b, Key="b.bin", Body=b"\x00" * 1000)
    s3.copy_object(Bucket=b, Key="docs/c.txt", CopySource={"Bucket": b, "Key": "docs/a.txt"})
    rows = db.objects(b)
    assert sorted(rows) == ["b.bin", "docs/a.txt", "docs/c.txt"]
    a = rows["docs/a.txt"]
    assert a["size"] == 5
    assert a["etag"] == r["ETag"].strip('"') == "5d41402abc4b2a76b9719d911017c592"
    assert a["content_type"] == "text/plain"
    assert a["user_metadata"] == {"owner": "me"}
    assert a["probe_status"] == "none"
    assert rows["docs/c.txt"]["etag"] == a["etag"] and rows["docs/c.txt"]["user_metadata"] == {"owner": "me"}
    assert rows["b.bin"]["size"] == 1000

    # Overwrite: the row follows the new bytes.
    r = s3.put_object(Bucket=b, Key="docs/a.txt", Body=b"hello, world")
    a = db.objects(b)["docs/a.txt"]
    assert (a["size"], a["etag"]) == (12, r["ETag"].strip('"'))
    assert a["user_metadata"] == {}

    s3.delete_object(Bucket=b, Key="b.bin")
    assert sorted(db.objects(b)) == ["docs/a.txt", "docs/c.txt"]
    s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "docs/c.txt"}, {"Key": "docs/a.txt"}]})
    assert db.objects(b) == {}


def test_row_follows_multipart_upload(catalog_env):
    g, db = catalog_env
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)
    up = s3.create_multipart_upload(Bucket=b, Key="big/video.mkv", ContentType="video/x-matroska")
    parts = [b"a" * (5 * MIB), b"b" * 1234]
    done = []
    for n, body in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=b, Key="big/video.mkv", UploadId=up["UploadId"], PartNumber=n, Body=body)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    r = s3.complete_multipart_upload(Bucket=b, Key="big/video.mkv", UploadId=up["UploadId"], MultipartUpload={"Parts": done})
    row = db.objects(b).get("big/video.mkv")
    assert row is not None, "CompleteMultipartUpload did not reach the catalog"
    assert row["size"] == 5 * MIB + 1234
    assert row["etag"] == r["ETag"].strip('"') and row["etag"].endswith("-2")
    assert row["content_type"] == "video/x-matroska"
    # Looks like video but is not: the background probe records an error, the gateway lives on.
    row = wait_for(lambda: (x := db.objects(b)["big/video.mkv"])["probe_status"] != "pending" and x, what="probe")
    assert row["probe_status"] == "error" and row["probe_error"]


# --------------------------------------------------------------------------------------------
# reconcile: at start, and with `reindex`


def test_reindex_reconciles_out_of_band_changes(catalog_env):
    g, db = catalog_env
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="keep.txt", Body=b"keep")
    s3.put_object(Bucket=b, Key="gone.txt", Body=b"gone")
    s3.put_object(Bucket=b, Key="sub/changed.txt", Body=b"old")

    folder = db.data_dir / b
    (folder / "gone.txt").unlink()
    (folder / "sub" / "changed.txt").write_bytes(b"new and longer")
    (folder / "oob").mkdir()
    (folder / "oob" / "added.txt").write_bytes(b"added out of band")
    (folder / "link.txt").symlink_to(folder / "keep.txt")
    (folder / ".nebula-tmp-x").mkdir()
    (folder / ".nebula-tmp-x" / "partial").write_bytes(b"x")

    counts, out = reindex(db)
    assert (counts["added"], counts["updated"], counts["removed"]) == (1, 1, 1), out
    rows = db.objects(b)
    assert sorted(rows) == ["keep.txt", "oob/added.txt", "sub/changed.txt"]
    assert rows["oob/added.txt"]["size"] == 17
    assert rows["oob/added.txt"]["etag"] == hashlib.md5(b"added out of band").hexdigest()
    assert rows["sub/changed.txt"]["size"] == 14

    # A second run finds nothing to do.
    counts, out = reindex(db)
    assert (counts["added"], counts["updated"], counts["removed"]) == (0, 0, 0), out

    # The gateway still serves what reindex cataloged.
    assert s3.get_object(Bucket=b, Key="oob/added.txt")["Body"].read() == b"added out of band"


def test_start_scan_catalogs_existing_files(engine, request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"gw-scan-{engine}")
    if engine == "postgres":
        pg = request.getfixturevalue("pg")
        db = CatalogDb("postgres", workdir / "data", pg, pg.create_db())
    else:
        db = CatalogDb("sqlite", workdir / "data")
    folder = workdir / "data" / "preexisting"
    (folder / "deep" / "er").mkdir(parents=True)
    for i in range(50):
        (folder / "deep" / "er" / f"f{i:03}.txt").write_bytes(b"x" * i)
    g = Gateway(workdir, extra_args=db.url_args)
    g.start()
    try:
        rows = wait_for(lambda: len(x := db.objects("preexisting")) == 50 and x, what="start-up scan")
        assert rows["deep/er/f049.txt"]["size"] == 49
    finally:
        g.assert_clean_exit()


def test_lost_database_is_rebuilt_by_reindex(catalog_env):
    g, db = catalog_env
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)
    for i in range(5):
        s3.put_object(Bucket=b, Key=f"k{i}", Body=b"v" * i, Metadata={"n": str(i)})
    before = db.objects(b)
    assert len(before) == 5
    s3.close()  # an open keep-alive connection would hold the graceful shutdown
    g.assert_clean_exit()

    db.lose()
    counts, out = reindex(db)
    assert counts["added"] == 5 and counts["removed"] == 0, out
    after = db.objects(b)
    assert {k: (r["size"], r["etag"], r["user_metadata"]) for k, r in after.items()} == {
        k: (r["size"], r["etag"], r["user_metadata"]) for k, r in before.items()
    }


def test_newer_schema_is_refused(catalog_env):
    g, db = catalog_env
    g.assert_clean_exit()
    success = "true" if db.engine == "postgres" else "1"
    checksum = "'\\x00'::bytea" if db.engine == "postgres" else "x'00'"
    db.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
        f"VALUES (99990101000000, 'from the future', {success}, {checksum}, 0)"
    )
    cmd = [str(gateway_bin()), "reindex", "--data-dir", str(db.data_dir), *db.url_args]
    p = subprocess.run(cmd, capture_output=True, timeout=60, env=sanitized_environ())
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert "newer than this nebula-gateway knows" in err, err

    port = free_port()
    cmd = [str(gateway_bin()), "serve", "--data-dir", str(db.data_dir), "--listen", f"127.0.0.1:{port}",
           "--access-key", g.access_key, "--secret-key", g.secret_key, *db.url_args]
    p = subprocess.run(cmd, capture_output=True, timeout=60, env=sanitized_environ())
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0 and "newer than this nebula-gateway knows" in err, err


# --------------------------------------------------------------------------------------------
# media probing


@pytest.fixture(scope="module")
def sample_mp4(tmp_path_factory) -> Path:
    """A 2-second 320x240 H.264 + AAC MP4 made with GStreamer."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    pipeline = (
        "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc ! h264parse ! "
        f"mp4mux name=mux ! filesink location={path} "
        "audiotestsrc num-buffers=86 ! audio/x-raw,rate=44100 ! audioconvert ! avenc_aac ! aacparse ! mux."
    )
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True, capture_output=True, timeout=120)
    assert path.stat().st_size > 10_000
    return path


def test_probe_fills_media_and_records_errors(catalog_env, sample_mp4):
    g, db = catalog_env
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="videos/clip.mp4", Body=sample_mp4.read_bytes(), ContentType="video/mp4")
    s3.put_object(Bucket=b, Key="videos/fake.mp4", Body=b"this is only text, not a video\n" * 10)
    s3.put_object(Bucket=b, Key="notes.txt", Body=b"not media")

    def settled():
        rows = db.objects(b)
        return all(r["probe_status"] != "pending" for r in rows.values()) and rows

    rows = wait_for(settled, timeout=90, what="background probes")
    clip = rows["videos/clip.mp4"]
    assert clip["probe_status"] == "ok", clip
    m = clip["media"]
    assert abs(m["duration"] - 2.0) < 0.3, m
    assert (m["width"], m["height"]) == (320, 240), m
    assert m["video_codec"] == "h264" and m["audio_codec"] == "aac", m
    assert abs(m["frame_rate"] - 30.0) < 0.01, m
    assert m["bitrate"] and m["bitrate"] > 0, m
    assert m["container"], m

    fake = rows["videos/fake.mp4"]
    assert fake["probe_status"] == "error" and fake["probe_error"] and fake["media"] is None, fake
    assert rows["notes.txt"]["probe_status"] == "none"

    # New bytes under the same key drop the old media and are probed again.
    s3.put_object(Bucket=b, Key="videos/clip.mp4", Body=b"replaced by text")
    row = wait_for(lambda: (x := db.objects(b)["videos/clip.mp4"])["probe_status"] != "pending" and x, what="re-probe")
    assert row["probe_status"] == "error" and row["media"] is None
    assert s3.get_object(Bucket=b, Key="videos/fake.mp4")["Body"].read().startswith(b"this is only text")


# --------------------------------------------------------------------------------------------
# a database that is down


def test_unreachable_database_keeps_s3_working(start_gateway):
    # Nothing listens on this port: the catalog is down from the start.
    url = f"postgres://postgres@127.0.0.1:{free_port()}/nebula?sslmode=disable"
    g = start_gateway(extra_args=["--database-url", url])
    s3 = g.boto3_client()
    b = new_bucket_name("cat")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k.txt", Body=b"bytes are safe")
    assert s3.get_object(Bucket=b, Key="k.txt")["Body"].read() == b"bytes are safe"
    s3.delete_object(Bucket=b, Key="k.txt")
    log = g.log_text()
    assert "catalog database unavailable" in log, g.log_tail()
    assert "catalog not updated after write" in log, g.log_tail()
