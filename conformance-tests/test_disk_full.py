"""A full disk is a clear error, never an InternalError (issue 18).

The gateway's data folder is a small tmpfs mounted in a user and mount namespace of the
gateway's own (``conftest.Gateway(data_tmpfs=...)``), so the disk really fills up. The test
reaches the files inside that namespace through ``/proc/<pid>/root``.

* ``--min-free`` refuses writes early (PUT, UploadPart, CopyObject, CreateMultipartUpload, with
  boto3, the aws CLI and raw requests) with 507 ``InsufficientStorage`` and a message naming the
  reserve, before the body is sent; reads, listings and deletes go on; a delete makes room again;
  health, metrics and ``nebula status`` say when writes are refused.
* A bucket on a disk of its own is held to the reserve of that disk (a percentage here).
* Without a reserve (``--min-free 0``) the disk itself refuses: 507 from ``ENOSPC`` for PUT,
  UploadPart and CopyObject, never a 500, no temp file or partial object left behind, and the
  gateway keeps serving.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import AWS_BIN, cli_bin, new_bucket_name, run
from nebula_helpers import UNSIGNED, cli_env, object_path, parse_list, sign_headers
from test_jobs import Api, make_video

MIB = 1024 * 1024
API = "/_nebula/v1/"


@pytest.fixture(autouse=True)
def small_filesystems(tmp_path):
    """These tests need a tmpfs mounted in a namespace of the gateway's own. CI runs as root,
    where that always works: there a failure to mount fails the test. Elsewhere the machine
    may forbid unprivileged user namespaces, the one reason to skip."""
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m t "$0"', str(tmp_path)],
        capture_output=True,
    )
    if probe.returncode != 0:
        why = probe.stderr.decode(errors="replace").strip()
        if os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs in a user and mount namespace as root: {why}")
        pytest.skip(f"this machine allows no unprivileged user and mount namespace to mount a tmpfs ({why})")


def inside(g, *parts: str) -> Path:
    """A path of the gateway's data folder as the gateway sees it (its own mount namespace)."""
    return Path(f"/proc/{g.pid}/root") / str(g.data_dir).lstrip("/") / Path(*parts)


def available(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def api_get(g, path: str):
    r = g.raw().request("GET", API + path)
    assert r.status == 200, (path, r)
    return r.body


def health(g) -> dict:
    return json.loads(api_get(g, "health"))


def metric(g, name: str) -> float:
    for line in api_get(g, "metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def assert_507(r, *phrases: str):
    """A 507 InsufficientStorage XML error whose message holds each phrase."""
    assert r.status == 507 and r.code == "InsufficientStorage", r
    assert r.header("content-type", "").startswith("application/xml"), r
    message = r.xml().findtext("Message") or ""
    for p in phrases:
        assert p in message, (p, message)
    assert r.xml().findtext("RequestId") == r.header("x-amz-request-id"), r


def assert_boto3_507(call):
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response
    assert err["Error"]["Code"] == "InsufficientStorage", err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 507, err
    return err["Error"].get("Message", "")


def fill(raw, bucket: str, size: int, most: int) -> tuple[dict, object]:
    """PUTs objects of `size` until one is refused; returns {key: sha256} and the refusal."""
    stored = {}
    for i in range(most):
        data = os.urandom(size)
        r = raw.put(bucket, f"fill/{i:03d}", data)
        if r.status != 200:
            return stored, r
        stored[f"fill/{i:03d}"] = hashlib.sha256(data).hexdigest()
    pytest.fail(f"{most} objects of {size} bytes fitted on the small disk")


def put_without_body(g, bucket: str, key: str, length: int) -> tuple[int, bytes]:
    """A signed PUT announcing `length` bytes with `Expect: 100-continue`, of which none is
    sent: the answer must come without the body."""
    path = object_path(bucket, key)
    headers = {
        "host": g.hostport,
        "content-length": str(length),
        "expect": "100-continue",
    }
    headers, _ = sign_headers(g.creds, "PUT", path, [], headers, UNSIGNED)
    conn = http.client.HTTPConnection(g.host, g.port, timeout=10)
    conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def check_reads(raw, bucket: str, stored: dict):
    for key, digest in stored.items():
        r = raw.get(bucket, key)
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == digest, (key, r)
    r = raw.list_v2(bucket, max_keys=1000)
    assert r.status == 200, r
    listed = set(parse_list(r.body)["keys"])
    assert set(stored) <= listed, set(stored) - listed


def test_min_free_refuses_writes_early_and_deletes_make_room(start_gateway, tmp_path):
    reserve = 16 * MIB
    g = start_gateway(data_tmpfs="64m", extra_args=["--min-free", "16MiB"])
    data = inside(g)
    assert 60 * MIB <= os.statvfs(data).f_blocks * os.statvfs(data).f_frsize <= 68 * MIB
    raw, s3 = g.raw(), g.boto3_client()
    b = new_bucket_name("reserve")
    assert raw.put_bucket(b).status == 200

    h = health(g)
    assert h["status"] == "ok", h
    assert h["disk"]["min_free_bytes"] == reserve and h["disk"]["writes_refused"] is False, h
    assert h["bucket_disks"] == [], h

    # Writes go on until the next would leave less than the reserve: refused, before the disk
    # is full, with a message that says why and what to do.
    stored, refused = fill(raw, b, 4 * MIB, 20)
    assert len(stored) >= 8, f"only {len(stored)} × 4 MiB fitted above a 16 MiB reserve on 64 MiB"
    assert_507(refused, "not enough free space", "data folder", "16.0 MiB", "--min-free", "this write of 4.0 MiB does not fit")
    left = available(data)
    # Admitted writes kept the reserve (their metadata and catalog rows may take a little of
    # it, which is what it is for); the refused one would not have.
    assert reserve - MIB <= left < reserve + 4 * MIB, left
    assert "write refused: not enough free space" in g.log_text()
    assert "InternalError" not in g.log_text()

    # Refused before the body is read: the client announcing 32 MiB gets the answer without
    # sending a byte of it.
    status, body = put_without_body(g, b, "never-sent", 32 * MIB)
    assert status == 507 and b"InsufficientStorage" in body, (status, body)

    # boto3 and the aws CLI show the code; the connection stays usable.
    message = assert_boto3_507(lambda: s3.put_object(Bucket=b, Key="boto3", Body=os.urandom(4 * MIB)))
    assert "--min-free" in message, message
    assert s3.head_object(Bucket=b, Key="fill/000")["ContentLength"] == 4 * MIB
    assert_boto3_507(lambda: s3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "fill/000"}))
    src = tmp_path / "four-mib"
    src.write_bytes(os.urandom(4 * MIB))
    p = run(
        [AWS_BIN, "--endpoint-url", g.endpoint, "s3api", "put-object", "--bucket", b, "--key", "cli", "--body", str(src)],
        env=g.client_env(),
        check=False,
    )
    assert p.returncode != 0 and "InsufficientStorage" in p.stderr_text, p.stderr_text

    # Reads, listings and deletes go on; nothing refused was stored.
    check_reads(raw, b, stored)
    for key in ("boto3", "copy", "cli", "never-sent"):
        assert raw.head(b, key).status == 404, key
    first = next(iter(stored))
    assert raw.delete(b, first).status == 204
    del stored[first]

    # Multipart: starting an upload writes almost nothing; a part that would cross the reserve
    # is refused before its body; aborting works.
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    assert_boto3_507(lambda: s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=os.urandom(9 * MIB)))
    s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up)

    # The delete made room: a write that fits is stored again.
    again = os.urandom(2 * MIB)
    assert raw.put(b, "after-delete", again).status == 200
    assert raw.get(b, "after-delete").body == again
    h = health(g)
    assert h["status"] == "ok" and h["disk"]["writes_refused"] is False, h
    clip = make_video(tmp_path / "clip.mp4", 1, 320, 180)
    assert raw.put(b, "clip.mp4", clip.read_bytes(), headers={"content-type": "video/mp4"}).status == 200

    # Another program fills the disk past the reserve: every write is refused, health says so
    # (degraded, so readers keep being routed here), and reads and deletes still work.
    filler = inside(g, b, "filler.bin")
    with open(filler, "wb") as f:
        f.write(b"\0" * (available(data) - reserve + 2 * MIB))
    h = health(g)
    assert h["status"] == "degraded", h
    d = h["disk"]
    assert d["writes_refused"] is True and d["available_bytes"] < d["min_free_bytes"] == reserve, h
    assert metric(g, "nebula_writes_refused") == 1
    assert metric(g, "nebula_data_disk_min_free_bytes") == reserve
    assert_507(raw.put(b, "tiny", b"x"), "this write of 1 B does not fit")
    assert_507(raw.request("POST", object_path(b, "mp2"), query=[("uploads", "")]), "--min-free")
    status = run([cli_bin(), "status"], env=cli_env(g, tmp_path)).stdout_text
    assert "DEGRADED" in status and "keeps 16.00 MiB free: FULL, writes refused (507)" in status, status
    # A background transcode (its rendition goes to the data folder's disk) is queued but
    # waits for room.
    api = Api(g)
    [job] = api.transcode(b, "clip.mp4", [240])
    time.sleep(3)
    assert api.job(job["id"])["status"] == "pending"
    assert "transcode jobs wait for free space: not enough free space" in g.log_text()
    check_reads(raw, b, stored)
    assert raw.delete(b, "filler.bin").status == 204
    assert not filler.exists()
    h = health(g)
    assert h["status"] == "ok" and h["disk"]["writes_refused"] is False, h
    assert metric(g, "nebula_writes_refused") == 0
    assert raw.put(b, "tiny", b"x").status == 200
    assert api.wait_job(job["id"], timeout=120)["status"] == "completed"
    assert "transcode jobs resume" in g.log_text()


def test_a_bucket_on_its_own_disk_keeps_that_disks_reserve(start_gateway, tmp_path):
    media = new_bucket_name("media")
    g = start_gateway(data_tmpfs="64m", bucket_tmpfs={media: "24m"}, extra_args=["--min-free", "25%"])
    raw = g.raw()
    assert raw.put_bucket(media).status == 200, "the mounted folder is the bucket"
    plain = new_bucket_name("plain")
    assert raw.put_bucket(plain).status == 200

    h = health(g)
    assert h["disk"]["min_free_bytes"] == h["disk"]["total_bytes"] // 4, h
    [bd] = h["bucket_disks"]
    assert bd["buckets"] == [media] and bd["path"].endswith("/" + media), bd
    assert 22 * MIB <= bd["total_bytes"] <= 26 * MIB and bd["min_free_bytes"] == bd["total_bytes"] // 4, bd

    stored, refused = fill(raw, media, 2 * MIB, 20)
    assert_507(refused, f"the disk of bucket '{media}'", "--min-free")
    left = available(inside(g, media))
    assert bd["min_free_bytes"] - MIB <= left < bd["min_free_bytes"] + 2 * MIB, left
    # The data folder's disk still has room: its buckets take writes.
    assert raw.put(plain, "k", os.urandom(2 * MIB)).status == 200
    check_reads(raw, media, stored)
    text = run([cli_bin(), "status"], env=cli_env(g, tmp_path)).stdout_text
    assert f"(buckets {media})" in text and "keeps 6.00 MiB free" in text, text


def test_without_a_reserve_a_full_disk_is_507_and_leaves_nothing_behind(start_gateway):
    g = start_gateway(data_tmpfs="24m", extra_args=["--min-free", "0"])
    raw, s3 = g.raw(), g.boto3_client()
    b = new_bucket_name("enospc")
    assert raw.put_bucket(b).status == 200
    h = health(g)
    assert h["disk"]["min_free_bytes"] == 0 and h["disk"]["writes_refused"] is False, h

    # A multipart upload fills the disk: the part that does not fit is 507 from ENOSPC.
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    parts = 0
    for n in range(1, 10):
        try:
            s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=n, Body=os.urandom(5 * MIB))
            parts += 1
        except ClientError as e:
            err = e.response
            assert err["Error"]["Code"] == "InsufficientStorage", err
            assert err["ResponseMetadata"]["HTTPStatusCode"] == 507, err
            break
    else:
        pytest.fail("45 MiB of parts fitted on a 24 MiB disk")
    assert parts >= 1
    s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up)

    # PUTs fill it again; the one that does not fit is 507 with the disk's own message.
    stored, refused = fill(raw, b, 3 * MIB, 20)
    assert stored, refused
    assert_507(refused, "there is no space left in the gateway's data folder")
    assert_boto3_507(lambda: s3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "fill/000"}))
    assert "the data folder is full" in g.log_text()
    assert "status=500" not in g.log_text()

    # Nothing half-written is left: no temp file, no partial object, no staged upload.
    tmp = inside(g, ".nebula", "tmp")
    leftovers = [p for p in tmp.rglob("*") if p.is_file() and p.name != "owner.lock"]
    assert leftovers == [], leftovers
    on_disk = {str(p.relative_to(inside(g, b))) for p in inside(g, b).rglob("*") if p.is_file()}
    assert on_disk == set(stored), on_disk ^ set(stored)
    assert [p for p in inside(g, ".nebula", "multipart").iterdir() if p.is_dir()] == []

    # The gateway keeps serving; a delete makes room for the next write.
    check_reads(raw, b, stored)
    assert health(g)["database"]["ok"] is True
    for key in list(stored)[:2]:
        assert raw.delete(b, key).status == 204
    data = os.urandom(3 * MIB)
    assert raw.put(b, "after-delete", data).status == 200
    assert raw.get(b, "after-delete").body == data
