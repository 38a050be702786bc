"""aws CLI (Debian's /usr/bin/aws) against the gateway: `s3` high-level and `s3api` low-level commands."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import AWS_BIN, new_bucket_name, run
from nebula_helpers import MIB, make_random_file, multipart_etag, sha256_file

pytestmark = pytest.mark.skipif(not os.path.exists(AWS_BIN), reason="Debian awscli (/usr/bin/aws) not installed")


class Aws:
    def __init__(self, gw):
        self.gw = gw
        self.env = gw.client_env()

    def __call__(self, *args, check=True, timeout=600):
        return run([AWS_BIN, "--endpoint-url", self.gw.endpoint, "--no-cli-pager", *map(str, args)], env=self.env, check=check, timeout=timeout)

    def api(self, *args, check=True):
        p = self("s3api", *args, "--output", "json", check=check)
        if not check:
            return p
        return json.loads(p.stdout_text) if p.stdout_text.strip() else {}


@pytest.fixture(scope="module")
def aws(gw):
    return Aws(gw)


@pytest.fixture(scope="module")
def abucket(aws):
    name = new_bucket_name("awscli")
    aws("s3", "mb", f"s3://{name}")
    return name


def tree_digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = sha256_file(p)
    return out


def test_awscli_s3_mb_ls_rb(aws):
    name = new_bucket_name("awsmb")
    p = aws("s3", "mb", f"s3://{name}")
    assert f"make_bucket: {name}" in p.stdout_text
    assert name in aws("s3", "ls").stdout_text
    p = aws("s3", "rb", f"s3://{name}")
    assert f"remove_bucket: {name}" in p.stdout_text
    assert name not in aws("s3", "ls").stdout_text


def test_awscli_s3_cp_small_roundtrip(aws, abucket, tmp_path):
    src = tmp_path / "small.bin"
    want = make_random_file(src, 300_000)
    aws("s3", "cp", src, f"s3://{abucket}/cp/small.bin")
    out = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{abucket}/cp/small.bin", out)
    assert sha256_file(out) == want
    ls = aws("s3", "ls", f"s3://{abucket}/cp/").stdout_text
    assert "small.bin" in ls and "300000" in ls


def test_awscli_s3_cp_100mib_multipart(aws, abucket, tmp_path):
    src = tmp_path / "big.bin"
    want = make_random_file(src, 100 * MIB)
    aws("s3", "cp", src, f"s3://{abucket}/cp/big.bin")
    head = aws.api("head-object", "--bucket", abucket, "--key", "cp/big.bin")
    assert head["ContentLength"] == 100 * MIB
    assert head["ETag"].strip('"').endswith("-13"), f"expected an 8 MiB-part multipart ETag, got {head['ETag']}"
    out = tmp_path / "big.back"
    aws("s3", "cp", f"s3://{abucket}/cp/big.bin", out)
    assert sha256_file(out) == want


def test_awscli_s3_mv_and_rm(aws, abucket, tmp_path):
    src = tmp_path / "moveme.txt"
    want = make_random_file(src, 4096)
    aws("s3", "mv", src, f"s3://{abucket}/mv/a.txt")
    assert not src.exists()
    aws("s3", "mv", f"s3://{abucket}/mv/a.txt", f"s3://{abucket}/mv/b.txt")
    ls = aws("s3", "ls", f"s3://{abucket}/mv/").stdout_text
    assert "b.txt" in ls and "a.txt" not in ls
    aws("s3", "mv", f"s3://{abucket}/mv/b.txt", tmp_path / "moved-back.txt")
    assert sha256_file(tmp_path / "moved-back.txt") == want
    assert "b.txt" not in aws("s3", "ls", f"s3://{abucket}/mv/", check=False).stdout_text
    aws("s3", "cp", tmp_path / "moved-back.txt", f"s3://{abucket}/rm/x.txt")
    p = aws("s3", "rm", f"s3://{abucket}/rm/x.txt")
    assert "delete:" in p.stdout_text
    assert aws.api("list-objects-v2", "--bucket", abucket, "--prefix", "rm/").get("KeyCount", 0) == 0


def test_awscli_s3_sync_recursive(aws, abucket, tmp_path):
    src = tmp_path / "tree"
    make_random_file(src / "video" / "large.bin", 100 * MIB)
    for i in range(12):
        make_random_file(src / f"d{i % 3}" / f"sub{i % 2}" / f"file{i}.txt", 1000 + i * 777)
    make_random_file(src / "top level name.txt", 10)
    want = tree_digest(src)
    p = aws("s3", "sync", src, f"s3://{abucket}/sync/")
    assert p.stdout_text.count("upload:") == len(want)
    # a second sync has nothing to do
    p = aws("s3", "sync", src, f"s3://{abucket}/sync/")
    assert "upload:" not in p.stdout_text, p.stdout_text
    dst = tmp_path / "down"
    aws("s3", "sync", f"s3://{abucket}/sync/", dst)
    assert tree_digest(dst) == want
    # change the tree: remove one, modify one, add one; sync --delete mirrors it
    (src / "d0" / "sub0" / "file0.txt").unlink()
    make_random_file(src / "d1" / "sub1" / "file1.txt", 5555)
    make_random_file(src / "new" / "added.txt", 321)
    want = tree_digest(src)
    p = aws("s3", "sync", "--delete", src, f"s3://{abucket}/sync/")
    assert "delete:" in p.stdout_text
    shutil.rmtree(dst)
    aws("s3", "sync", f"s3://{abucket}/sync/", dst)
    assert tree_digest(dst) == want
    aws("s3", "rm", "--recursive", f"s3://{abucket}/sync/")
    assert aws.api("list-objects-v2", "--bucket", abucket, "--prefix", "sync/").get("KeyCount", 0) == 0


def test_awscli_s3api_object_calls(aws, abucket, tmp_path):
    body = tmp_path / "body.json"
    want = make_random_file(body, 12345)
    put = aws.api(
        "put-object", "--bucket", abucket, "--key", "api/obj.json", "--body", body,
        "--content-type", "application/json", "--metadata", "owner=nebula,purpose=test",
        "--cache-control", "max-age=60",
    )
    assert put["ETag"]
    head = aws.api("head-object", "--bucket", abucket, "--key", "api/obj.json")
    assert head["ContentLength"] == 12345
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"owner": "nebula", "purpose": "test"}
    assert head["CacheControl"] == "max-age=60"
    assert head["ETag"] == put["ETag"]
    out = tmp_path / "out.json"
    get = aws.api("get-object", "--bucket", abucket, "--key", "api/obj.json", out)
    assert get["ContentLength"] == 12345
    assert sha256_file(out) == want
    cp = aws.api("copy-object", "--bucket", abucket, "--key", "api/copy.json", "--copy-source", f"{abucket}/api/obj.json")
    assert cp["CopyObjectResult"]["ETag"] == put["ETag"]
    aws.api("get-object", "--bucket", abucket, "--key", "api/copy.json", tmp_path / "copy.json")
    assert sha256_file(tmp_path / "copy.json") == want
    aws.api("delete-object", "--bucket", abucket, "--key", "api/obj.json")
    p = aws.api("head-object", "--bucket", abucket, "--key", "api/obj.json", check=False)
    assert p.returncode != 0 and "404" in p.stderr_text


def test_awscli_s3api_get_object_range(aws, abucket, tmp_path):
    src = tmp_path / "ranged.bin"
    make_random_file(src, 10_000)
    aws.api("put-object", "--bucket", abucket, "--key", "api/ranged.bin", "--body", src)
    out = tmp_path / "part.bin"
    get = aws.api("get-object", "--bucket", abucket, "--key", "api/ranged.bin", "--range", "bytes=100-199", out)
    assert get["ContentRange"] == "bytes 100-199/10000"
    assert get["ContentLength"] == 100
    assert out.read_bytes() == src.read_bytes()[100:200]


def test_awscli_s3api_list_objects_v2_pagination(aws, abucket, tmp_path):
    keys = [f"page/k{i:03d}" for i in range(25)]
    src = tmp_path / "page"
    for k in keys:
        make_random_file(tmp_path / k, 1)
    aws("s3", "cp", "--recursive", src, f"s3://{abucket}/page/")  # one CLI start instead of 25
    # the CLI follows continuation tokens itself when --page-size is smaller than the listing
    res = aws.api("list-objects-v2", "--bucket", abucket, "--prefix", "page/", "--page-size", "7")
    assert [o["Key"] for o in res["Contents"]] == keys
    # manual pagination with --max-items / --starting-token
    res = aws.api("list-objects-v2", "--bucket", abucket, "--prefix", "page/", "--max-items", "10", "--page-size", "4")
    got = [o["Key"] for o in res["Contents"]]
    assert got == keys[:10] and res.get("NextToken")
    while res.get("NextToken"):
        res = aws.api(
            "list-objects-v2", "--bucket", abucket, "--prefix", "page/", "--max-items", "10", "--page-size", "4",
            "--starting-token", res["NextToken"],
        )
        got += [o["Key"] for o in res.get("Contents", [])]
    assert got == keys
    res = aws.api("list-objects-v2", "--bucket", abucket, "--prefix", "page/", "--delimiter", "/", "--start-after", "page/k019")
    assert [o["Key"] for o in res["Contents"]] == keys[20:]


def test_awscli_s3api_multipart_step_by_step(aws, abucket, tmp_path):
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    make_random_file(p1, 5 * MIB)
    make_random_file(p2, 1 * MIB + 3)
    key = "api/multipart.bin"
    up = aws.api("create-multipart-upload", "--bucket", abucket, "--key", key, "--content-type", "application/x-parts")
    uid = up["UploadId"]
    etags = []
    for n, p in ((1, p1), (2, p2)):
        r = aws.api("upload-part", "--bucket", abucket, "--key", key, "--part-number", n, "--upload-id", uid, "--body", p)
        etags.append(r["ETag"])
    lp = aws.api("list-parts", "--bucket", abucket, "--key", key, "--upload-id", uid)
    assert [(x["PartNumber"], x["ETag"], x["Size"]) for x in lp["Parts"]] == [
        (1, etags[0], 5 * MIB),
        (2, etags[1], MIB + 3),
    ]
    lu = aws.api("list-multipart-uploads", "--bucket", abucket)
    assert uid in [u["UploadId"] for u in lu.get("Uploads", [])]
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]}))
    done = aws.api(
        "complete-multipart-upload", "--bucket", abucket, "--key", key, "--upload-id", uid,
        "--multipart-upload", f"file://{parts}",
    )
    assert done["ETag"] == multipart_etag([p1.read_bytes(), p2.read_bytes()])
    out = tmp_path / "mp.out"
    aws.api("get-object", "--bucket", abucket, "--key", key, out)
    assert out.read_bytes() == p1.read_bytes() + p2.read_bytes()
    assert aws.api("head-object", "--bucket", abucket, "--key", key)["ContentType"] == "application/x-parts"
    # abort path
    up = aws.api("create-multipart-upload", "--bucket", abucket, "--key", "api/aborted")
    aws.api("abort-multipart-upload", "--bucket", abucket, "--key", "api/aborted", "--upload-id", up["UploadId"])
    lu = aws.api("list-multipart-uploads", "--bucket", abucket)
    assert up["UploadId"] not in [u["UploadId"] for u in lu.get("Uploads", [])]


def test_awscli_s3_presign_then_curl(aws, abucket, tmp_path, gw):
    src = tmp_path / "shared.bin"
    want = make_random_file(src, 777_777)
    aws("s3", "cp", src, f"s3://{abucket}/presign/shared.bin")
    url = aws("s3", "presign", f"s3://{abucket}/presign/shared.bin", "--expires-in", "600").stdout_text.strip()
    assert url.startswith(gw.endpoint + f"/{abucket}/presign/shared.bin?"), url
    out = tmp_path / "curl.out"
    p = run(["curl", "-sS", "-o", out, "-w", "%{http_code}", url], env=gw.client_env())
    assert p.stdout_text == "200"
    assert sha256_file(out) == want


def test_awscli_s3_cp_tree_of_empty_and_small_files(aws, abucket, tmp_path, gw):
    """Empty files between non-empty ones: the aws CLI sends `Expect: 100-continue` even with no
    body, gets the final answer at once, and (botocore before 1.43.77, which Debian's aws CLI is)
    then misreads the next upload's response on that pooled connection: headers lost, a stall
    until the read timeout, a hidden retry (boto/botocore#3755). The gateway closes the
    connection after such an answer; urllib3 logs "Failed to parse headers" if it did not."""
    src = tmp_path / "mixed"
    src.mkdir()
    for i in range(16):
        (src / f"empty{i:02d}").write_bytes(b"")
        (src / f"small{i:02d}").write_bytes(f"content {i}\n".encode())
    p = aws("--debug", "--cli-read-timeout", "10", "s3", "cp", "--recursive", src, f"s3://{abucket}/mixed/")
    assert "Failed to parse headers" not in p.stderr_text
    dst = tmp_path / "back"
    aws("s3", "cp", "--recursive", f"s3://{abucket}/mixed/", dst)
    assert tree_digest(dst) == tree_digest(src)
    # The header is there for the empty upload only; other uploads keep their connection.
    c = gw.raw()
    r = c.request("PUT", f"/{abucket}/mixed/raw-empty", body=b"", headers={"expect": "100-continue"})
    assert r.status == 200 and r.headers.get("connection") == "close", (r.status, r.headers)
    r = c.request("PUT", f"/{abucket}/mixed/raw-full", body=b"abc", headers={"expect": "100-continue"})
    assert r.status == 200 and r.headers.get("connection") != "close", (r.status, r.headers)
