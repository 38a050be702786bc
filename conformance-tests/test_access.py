"""Scoped keys with real clients: a read-only key (aws CLI), an upload-only key (rclone), the
auth-negative matrix (every operation class x no auth, wrong key, expired key, key without the
right, key with the right), prefix-narrowed keys, copies, bucket creation, the JSON API's view
of a scoped key, and both ways of managing keys: `nebula-gateway keys` on the data folder of a
running gateway, and `nebula keys` through the API. Every change takes effect without a restart.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import AWS_BIN, cli_bin, gateway_bin, new_bucket_name, run
from nebula_helpers import Creds, RawS3, object_path


# --------------------------------------------------------------------------------------------
# helpers


def gw_keys(gw, *args, check=True):
    """`nebula-gateway keys ARGS --data-dir DATA` on the running gateway's folder."""
    return run([str(gateway_bin()), "keys", *args, "--data-dir", str(gw.data_dir)], env=gw.client_env(), check=check)


def new_key(gw, *args) -> dict:
    p = gw_keys(gw, "create", "--json", *args)
    key = json.loads(p.stdout_text)
    assert key["access_key_id"].startswith("NEB") and len(key["secret_access_key"]) == 40
    return key


def creds(key: dict) -> Creds:
    return Creds(key["access_key_id"], key["secret_access_key"])


def as_key(gw, key: dict):
    return gw.raw(creds(key))


def cli(gw, tmp_path, *args, key: dict | None = None, check=True):
    env = gw.client_env(
        NEBULA_SERVER_URL=gw.endpoint,
        NEBULA_ACCESS_KEY=key["access_key_id"] if key else gw.access_key,
        NEBULA_SECRET_KEY=key["secret_access_key"] if key else gw.secret_key,
        NEBULA_REGION=gw.region,
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        HOME=str(tmp_path),
    )
    return run([cli_bin(), *args], env=env, check=check)


def api(raw, method: str, path: str, body: bytes = b""):
    headers = {"content-type": "application/json"} if body else {}
    path, _, query = path.partition("?")
    q = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return raw.request(method, f"/_nebula/v1/{path}", query=q, headers=headers, body=body)


@pytest.fixture(scope="module")
def media(gw):
    """A bucket with one object, made by the admin."""
    name = new_bucket_name("media")
    admin = gw.raw()
    assert admin.put_bucket(name).status == 200
    assert admin.put(name, "films/a.txt", b"hello").status == 200
    return name


# --------------------------------------------------------------------------------------------
# real clients


def test_aws_cli_read_only_key_lists_and_reads_but_cannot_write(gw, media, tmp_path):
    other = new_bucket_name("other")
    assert gw.raw().put_bucket(other).status == 200
    tv = new_key(gw, "--name", "tv", "--read", media)
    env = gw.client_env(AWS_ACCESS_KEY_ID=tv["access_key_id"], AWS_SECRET_ACCESS_KEY=tv["secret_access_key"])
    aws = [AWS_BIN, "--endpoint-url", gw.endpoint, "s3"]
    # ListBuckets shows only the buckets the key can read.
    buckets = run([*aws, "ls"], env=env).stdout_text
    assert media in buckets and other not in buckets
    assert "a.txt" in run([*aws, "ls", f"s3://{media}/films/"], env=env).stdout_text
    run([*aws, "cp", f"s3://{media}/films/a.txt", str(tmp_path / "a.txt")], env=env)
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    src = tmp_path / "up.txt"
    src.write_bytes(b"nope")
    up = run([*aws, "cp", str(src), f"s3://{media}/up.txt"], env=env, check=False)
    assert up.returncode != 0 and "AccessDenied" in up.stderr_text, up.stderr_text
    rm = run([*aws, "rm", f"s3://{media}/films/a.txt"], env=env, check=False)
    assert rm.returncode != 0 and "AccessDenied" in rm.stderr_text, rm.stderr_text
    assert gw.raw().head(media, "films/a.txt").status == 200
    denied = run([*aws, "ls", f"s3://{other}/"], env=env, check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr_text


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")
def test_rclone_upload_only_key_copies_in_but_sees_nothing_else(gw, media, tmp_path):
    cam = new_bucket_name("cam")
    assert gw.raw().put_bucket(cam).status == 200
    phone = new_key(gw, "--name", "phone", "--write", cam, "--write-only")
    assert phone["buckets"][cam] == {"read": False, "write": True, "owner": False}
    env = gw.client_env(
        RCLONE_CONFIG_PHONE_TYPE="s3",
        RCLONE_CONFIG_PHONE_PROVIDER="Other",
        RCLONE_CONFIG_PHONE_ACCESS_KEY_ID=phone["access_key_id"],
        RCLONE_CONFIG_PHONE_SECRET_ACCESS_KEY=phone["secret_access_key"],
        RCLONE_CONFIG_PHONE_ENDPOINT=gw.endpoint,
        RCLONE_CONFIG_PHONE_REGION=gw.region,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HOME=str(tmp_path),
    )
    src = tmp_path / "camera"
    src.mkdir()
    for i in range(3):
        (src / f"IMG_{i}.jpg").write_bytes(b"jpeg" * (i + 1))
    rclone = ["rclone", "--low-level-retries", "1", "--retries", "1"]
    # An upload-only key cannot list the destination or read back what it wrote: copy without
    # checking the destination, and without the HEAD after each upload.
    run([*rclone, "copy", "--no-check-dest", "--s3-no-head", str(src), f"phone:{cam}/backup"], env=env)
    for i in range(3):
        r = gw.raw().get(cam, f"backup/IMG_{i}.jpg")
        assert r.status == 200 and r.body == b"jpeg" * (i + 1)
    # It lists no bucket (it can read none), and cannot read the others or its own.
    assert run([*rclone, "lsd", "phone:"], env=env).stdout_text.strip() == ""
    for target in (f"phone:{media}", f"phone:{cam}/backup"):
        p = run([*rclone, "ls", target], env=env, check=False)
        assert p.returncode != 0 and "AccessDenied" in p.stderr_text, p.stderr_text


# --------------------------------------------------------------------------------------------
# the auth-negative matrix


def _ops(bucket: str):
    """One operation per class, as (class, name, request), each on `raw` (a RawS3)."""
    return [
        ("read", "GetObject", lambda raw: raw.get(bucket, "films/a.txt")),
        ("read", "ListObjectsV2", lambda raw: raw.list_v2(bucket)),
        ("read", "HeadBucket", lambda raw: raw.request("HEAD", object_path(bucket))),
        ("write", "PutObject", lambda raw: raw.put(bucket, "matrix/put.txt", b"x")),
        ("write", "DeleteObject", lambda raw: raw.delete(bucket, "matrix/gone.txt")),
        (
            "write",
            "CopyObject",
            lambda raw: raw.request(
                "PUT", object_path(bucket, "matrix/copy.txt"), headers={"x-amz-copy-source": f"/{bucket}/films/a.txt"}
            ),
        ),
        ("owner", "GetBucketAcl", lambda raw: raw.request("GET", object_path(bucket), query=[("acl", "")])),
        ("create", "CreateBucket", lambda raw: raw.put_bucket(new_bucket_name("made"))),
        ("admin", "GET health", lambda raw: api(raw, "GET", "health")),
        ("admin", "GET keys", lambda raw: api(raw, "GET", "keys")),
    ]


class UnsignedS3(RawS3):
    """The same requests, without a signature."""

    def request(self, *args, **kw):
        kw["sign"] = False
        return super().request(*args, **kw)


def test_auth_negative_matrix(gw, media):
    # Each key has exactly one class of rights on the bucket (read / write / owner) or may
    # create buckets; the expired key had every right.
    with_right = {
        "read": new_key(gw, "--name", "reader", "--read", media),
        "write": new_key(gw, "--name", "writer", "--write", media),
        "owner": new_key(gw, "--name", "owner", "--owner", media),
        "create": new_key(gw, "--name", "creator", "--create-buckets"),
    }
    without_right = {
        "read": new_key(gw, "--name", "no-read", "--write", media, "--write-only"),
        "write": with_right["read"],
        "owner": with_right["write"],
        "create": with_right["owner"],
        "admin": with_right["owner"],
    }
    expired = new_key(gw, "--name", "expired", "--owner", media, "--create-buckets", "--expires", "2s")
    time.sleep(2.5)
    callers = [
        ("no auth", UnsignedS3(gw.host, gw.port, gw.creds), "AccessDenied"),
        ("wrong key", gw.raw(Creds("NEBNOSUCHKEY00000000", "x" * 40)), "InvalidAccessKeyId"),
        ("expired key", as_key(gw, expired), "AccessDenied"),
    ]
    failures = []
    for klass, name, op in _ops(media):
        cases = callers + [("without the right", as_key(gw, without_right[klass]), "AccessDenied")]
        for who, raw, code in cases:
            r = op(raw)
            # HEAD answers carry no body, so no code to compare.
            got = None if name == "HeadBucket" else (r.code or _json_code(r))
            if r.status != 403 or (name != "HeadBucket" and got != code):
                failures.append(f"{name} ({klass}) {who}: expected 403 {code}, got {r}")
        right = with_right.get(klass)
        r = op(as_key(gw, right) if right else gw.raw())
        if not 200 <= r.status < 300:
            failures.append(f"{name} ({klass}) with the right: {r}")
    assert not failures, "\n".join(failures)


def _json_code(resp):
    try:
        return json.loads(resp.body)["error"]["code"]
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------------------------
# narrower rules


def test_prefix_narrowed_key_stays_under_its_prefix(gw, media):
    k = new_key(gw, "--name", "films-only", "--write", media, "--prefix", "films/")
    raw = as_key(gw, k)
    assert raw.put(media, "films/b.txt", b"b").status == 200
    r = raw.put(media, "other/b.txt", b"b")
    assert r.status == 403 and r.code == "AccessDenied", r
    assert raw.list_v2(media, prefix="films/").status == 200
    r = raw.list_v2(media)
    assert r.status == 403 and r.code == "AccessDenied", r
    # DeleteObjects names its keys in the body: one outside the prefix refuses the request.
    body = (
        b"<Delete><Object><Key>films/b.txt</Key></Object>"
        b"<Object><Key>other/x.txt</Key></Object></Delete>"
    )
    import base64
    import hashlib

    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = raw.request("POST", object_path(media), query=[("delete", "")], headers={"content-md5": md5}, body=body)
    assert r.status == 403 and r.code == "AccessDenied", r
    assert gw.raw().head(media, "films/b.txt").status == 200


def test_copy_needs_read_on_the_source(gw, media):
    dst = new_bucket_name("dst")
    assert gw.raw().put_bucket(dst).status == 200
    k = new_key(gw, "--name", "copier", "--write", dst)
    r = as_key(gw, k).request("PUT", object_path(dst, "a.txt"), headers={"x-amz-copy-source": f"/{media}/films/a.txt"})
    assert r.status == 403 and r.code == "AccessDenied", r
    gw_keys(gw, "allow", k["access_key_id"], "--read", media)
    r = as_key(gw, k).request("PUT", object_path(dst, "a.txt"), headers={"x-amz-copy-source": f"/{media}/films/a.txt"})
    assert r.status == 200, r


def test_a_key_owns_the_buckets_it_creates(gw):
    k = new_key(gw, "--name", "maker", "--create-buckets")
    name = new_bucket_name("mine")
    raw = as_key(gw, k)
    assert raw.put_bucket(name).status == 200
    assert raw.put(name, "x.txt", b"x").status == 200
    shown = json.loads(gw_keys(gw, "show", k["access_key_id"], "--json").stdout_text)
    assert shown["buckets"][name] == {"read": True, "write": True, "owner": True}
    assert raw.delete(name, "x.txt").status == 204
    assert raw.delete_bucket(name).status == 204


def test_presigned_urls_of_a_scoped_key_keep_its_scope(gw, media):
    k = new_key(gw, "--name", "sharer", "--read", media)
    raw = as_key(gw, k)
    import urllib.error
    import urllib.request

    ok = raw.presigned_url("GET", object_path(media, "films/a.txt"), expires=60)
    assert urllib.request.urlopen(ok).read() == b"hello"
    put = raw.presigned_url("PUT", object_path(media, "films/evil.txt"), expires=60)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(put, data=b"x", method="PUT"))
    assert e.value.code == 403


def test_the_api_shows_a_key_only_its_buckets(gw, media):
    other = new_bucket_name("hidden")
    assert gw.raw().put_bucket(other).status == 200
    k = new_key(gw, "--name", "viewer", "--read", media)
    raw = as_key(gw, k)
    assert api(raw, "GET", f"files?bucket={media}").status == 200
    r = api(raw, "GET", f"files?bucket={other}")
    assert r.status == 403 and _json_code(r) == "AccessDenied", r
    for path in ("health", "logs", "metrics", "keys"):
        r = api(raw, "GET", path)
        assert r.status == 403 and _json_code(r) == "AccessDenied", (path, r)
    r = api(raw, "POST", "transcode", json.dumps({"bucket": media, "key": "films/a.txt", "qualities": [480]}).encode())
    assert r.status == 403, r
    assert api(gw.raw(), "GET", "health").status == 200


# --------------------------------------------------------------------------------------------
# managing keys: both ways, effective without a restart


def test_nebula_gateway_keys_on_a_running_gateways_folder(gw, media):
    k = new_key(gw, "--name", "changing", "--read", media)
    raw = as_key(gw, k)
    assert raw.get(media, "films/a.txt").status == 200
    assert raw.put(media, "films/w.txt", b"w").status == 403
    gw_keys(gw, "allow", k["access_key_id"], "--write", media)
    assert raw.put(media, "films/w.txt", b"w").status == 200
    gw_keys(gw, "deny", k["access_key_id"], "--read", media, "--write", media)
    r = raw.get(media, "films/a.txt")
    assert r.status == 403 and r.code == "AccessDenied", r
    listed = gw_keys(gw, "list").stdout_text
    assert k["access_key_id"] in listed and "changing" in listed
    assert k["secret_access_key"] not in listed
    gw_keys(gw, "delete", k["access_key_id"])
    r = raw.get(media, "films/a.txt")
    assert r.status == 403 and r.code == "InvalidAccessKeyId", r
    p = gw_keys(gw, "show", k["access_key_id"], check=False)
    assert p.returncode != 0 and "no access key" in p.stderr_text
    # The secret never leaves the 0600 file.
    mode = (gw.data_dir / ".nebula" / "access-keys.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_nebula_keys_through_the_api(gw, media, tmp_path):
    p = cli(gw, tmp_path, "keys", "create", "--name", "tv2", "--read", media, "--expires", "30d", "--json")
    k = json.loads(p.stdout_text)
    assert k["name"] == "tv2" and k["expires"] and not k["expired"]
    assert as_key(gw, k).get(media, "films/a.txt").status == 200
    listed = cli(gw, tmp_path, "keys", "list").stdout_text
    assert k["access_key_id"] in listed and f"{media}=r" in listed
    shown = json.loads(cli(gw, tmp_path, "keys", "allow", k["access_key_id"], "--owner", media, "--json").stdout_text)
    assert shown["buckets"][media] == {"read": True, "write": True, "owner": True}
    assert as_key(gw, k).put(media, "films/tv2.txt", b"t").status == 200
    cli(gw, tmp_path, "keys", "deny", k["access_key_id"], "--write", media)
    assert as_key(gw, k).put(media, "films/tv2.txt", b"t").status == 403
    # A scoped key cannot manage keys (remote error: exit 3).
    p = cli(gw, tmp_path, "keys", "list", key=k, check=False)
    assert p.returncode == 3 and "for the gateway's administrator" in p.stderr_text, p.stderr_text
    cli(gw, tmp_path, "keys", "delete", k["access_key_id"])
    assert k["access_key_id"] not in cli(gw, tmp_path, "keys", "list").stdout_text
    p = cli(gw, tmp_path, "keys", "show", k["access_key_id"], check=False)
    assert p.returncode == 3 and "no access key" in p.stderr_text, p.stderr_text
    p = cli(gw, tmp_path, "keys", "create", "--name", "bad", "--read", "Not_A_Bucket", check=False)
    assert p.returncode == 3 and "not a valid bucket name" in p.stderr_text, p.stderr_text


def test_keys_survive_a_restart(start_gateway):
    """Keys are in the data folder: a restarted gateway (same folder) still knows them."""
    g = start_gateway()
    b = new_bucket_name("keep")
    assert g.raw().put_bucket(b).status == 200
    k = new_key(g, "--name", "kept", "--read", b)
    assert as_key(g, k).list_v2(b).status == 200
    g.stop()
    g.start()
    assert as_key(g, k).list_v2(b).status == 200


def test_keys_in_a_shared_postgres_catalog(start_gateway):
    """With PostgreSQL, keys live in the catalog: a key made with `nebula-gateway keys
    --database-url` works on every gateway sharing it (each with a data folder of its own)."""
    from test_catalog import PgCluster

    pg = PgCluster().start()
    try:
        url = pg.url(pg.create_db())
        a = start_gateway(extra_args=["--database-url", url])
        b = start_gateway(extra_args=["--database-url", url])
        bucket = new_bucket_name("shared")
        for g in (a, b):
            assert g.raw().put_bucket(bucket).status == 200
        p = run(
            [str(gateway_bin()), "keys", "create", "--json", "--name", "shared", "--read", bucket,
             "--data-dir", str(a.data_dir), "--database-url", url],
            env=a.client_env(),
        )
        k = json.loads(p.stdout_text)
        assert not (a.data_dir / ".nebula" / "access-keys.json").exists()
        deadline = time.monotonic() + 5
        while as_key(b, k).list_v2(bucket).status != 200:
            assert time.monotonic() < deadline, "the second gateway never saw the key"
            time.sleep(0.2)
        assert as_key(a, k).list_v2(bucket).status == 200
        assert as_key(a, k).put(bucket, "x", b"x").status == 403
        # A change through one gateway's API reaches the other.
        body = json.dumps({"write": [bucket]}).encode()
        assert api(a.raw(), "POST", f"keys/{k['access_key_id']}/allow", body).status == 200
        deadline = time.monotonic() + 5
        while as_key(b, k).put(bucket, "x", b"x").status != 200:
            assert time.monotonic() < deadline, "the second gateway never saw the change"
            time.sleep(0.2)
        for g in (a, b):
            g.stop()
    finally:
        pg.stop()


# --------------------------------------------------------------------------------------------
# bucket policies


def boto3_as(gw, key: dict):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=gw.endpoint,
        aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"],
        region_name=gw.region,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def test_boto3_bucket_policy_public_prefix_and_denied_key_at_once(gw):
    from botocore.exceptions import ClientError

    bucket = new_bucket_name("pol")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    for k in ("public/a.txt", "private/b.txt"):
        assert admin.put(bucket, k, b"data").status == 200
    owner = new_key(gw, "--name", "pol-owner", "--owner", bucket)
    reader = new_key(gw, "--name", "pol-reader", "--read", bucket)
    banned = new_key(gw, "--name", "pol-banned", "--read", bucket)
    s3 = boto3_as(gw, owner)
    anon = UnsignedS3(gw.host, gw.port, gw.creds)
    assert anon.get(bucket, "public/a.txt").status == 403
    # A reader may not change the policy: that is the owner's.
    with pytest.raises(ClientError) as e:
        boto3_as(gw, reader).put_bucket_policy(Bucket=bucket, Policy='{"Statement": []}')
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "NoSuchBucketPolicy"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicPrefix",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/public/*",
            },
            {
                "Sid": "ListPublicFromHere",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": "public/*"}, "IpAddress": {"aws:SourceIp": "127.0.0.0/8"}},
            },
            {
                "Sid": "NotThisKey",
                "Effect": "Deny",
                "Principal": {"AWS": [banned["access_key_id"]]},
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    # Both take effect at once: the public prefix opens, the denied key is shut out.
    r = anon.get(bucket, "public/a.txt")
    assert r.status == 200 and r.body == b"data", r
    r = anon.get(bucket, "private/b.txt")
    assert r.status == 403 and r.code == "AccessDenied", r
    assert anon.list_v2(bucket, prefix="public/").status == 200
    assert anon.list_v2(bucket, prefix="private/").status == 403
    assert anon.put(bucket, "public/evil.txt", b"x").status == 403
    for k in ("public/a.txt", "private/b.txt"):
        r = as_key(gw, banned).get(bucket, k)
        assert r.status == 403 and r.code == "AccessDenied", r
        assert as_key(gw, reader).get(bucket, k).status == 200
    assert admin.get(bucket, "private/b.txt").status == 200
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == policy
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    # Malformed documents are refused and leave the policy as it was.
    for bad in (
        "not json",
        json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}]}),
        json.dumps({"Statement": [{"Effect": "Perhaps", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}),
    ):
        with pytest.raises(ClientError) as e:
            s3.put_bucket_policy(Bucket=bucket, Policy=bad)
        assert e.value.response["Error"]["Code"] == "MalformedPolicy", bad
    assert anon.get(bucket, "public/a.txt").status == 200
    s3.delete_bucket_policy(Bucket=bucket)
    assert anon.get(bucket, "public/a.txt").status == 403
    assert as_key(gw, banned).get(bucket, "private/b.txt").status == 200
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "NoSuchBucketPolicy"


def test_a_policy_can_grant_a_key_what_its_own_rights_do_not(gw, media):
    k = new_key(gw, "--name", "guest")
    r = as_key(gw, k).get(media, "films/a.txt")
    assert r.status == 403, r
    policy = {
        "Statement": {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::nebula:user/{k['access_key_id']}"},
            "Action": ["s3:Get*"],
            "Resource": f"arn:aws:s3:::{media}/films/*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    }
    body = json.dumps(policy).encode()
    r = gw.raw().request("PUT", object_path(media), query=[("policy", "")], body=body)
    assert r.status == 204, r
    try:
        assert as_key(gw, k).get(media, "films/a.txt").status == 200
        assert as_key(gw, k).put(media, "films/x.txt", b"x").status == 403
    finally:
        assert gw.raw().request("DELETE", object_path(media), query=[("policy", "")]).status == 204


def test_public_access_block_overrides_public_policies(gw):
    from botocore.exceptions import ClientError

    bucket = new_bucket_name("pab")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    assert admin.put(bucket, "public/a.txt", b"data").status == 200
    owner = new_key(gw, "--name", "pab-owner", "--owner", bucket)
    banned = new_key(gw, "--name", "pab-banned", "--read", bucket)
    s3 = boto3_as(gw, owner)
    anon = UnsignedS3(gw.host, gw.port, gw.creds)
    with pytest.raises(ClientError) as e:
        s3.get_public_access_block(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration"
    public = {
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/public/*"},
            {"Effect": "Deny", "Principal": {"AWS": banned["access_key_id"]}, "Action": "s3:*", "Resource": f"arn:aws:s3:::{bucket}/*"},
        ]
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    assert anon.get(bucket, "public/a.txt").status == 200
    # RestrictPublicBuckets: what the policy allows everyone is ignored; its Deny still holds.
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={"RestrictPublicBuckets": True, "BlockPublicPolicy": True},
    )
    got = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert got["RestrictPublicBuckets"] is True and got["BlockPublicPolicy"] is True and got["BlockPublicAcls"] is False
    r = anon.get(bucket, "public/a.txt")
    assert r.status == 403 and r.code == "AccessDenied", r
    assert as_key(gw, banned).get(bucket, "public/a.txt").status == 403
    # BlockPublicPolicy: a public policy cannot be put; a non-public one can.
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Statement": [public["Statement"][1]]}))
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    assert anon.get(bucket, "public/a.txt").status == 200
    s3.delete_bucket_policy(Bucket=bucket)


def test_anonymous_requests_may_not_use_response_overrides(gw, tmp_path):
    # A public object answers an anonymous GET, but not one with `response-*` overrides (S3
    # refuses them on anonymous requests: 400 InvalidRequest); a signed GET may use them.
    bucket = new_bucket_name("resp")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    assert admin.put(bucket, "share/a.txt", b"data").status == 200
    public = {"Statement": {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/share/*"}}
    r = admin.request("PUT", object_path(bucket), query=[("policy", "")], body=json.dumps(public).encode())
    assert r.status == 204, r
    url = f"{gw.endpoint}{object_path(bucket, 'share/a.txt')}"
    curl = ["curl", "-sS", "-o", str(tmp_path / "out"), "-w", "%{http_code}"]
    assert run([*curl, url], env=gw.client_env()).stdout_text == "200"
    for param in ("response-content-disposition=attachment%3B%20filename%3Dx.txt", "response-content-type=text%2Fhtml", "response-cache-control=no-cache"):
        assert run([*curl, f"{url}?{param}"], env=gw.client_env()).stdout_text == "400", param
        body = (tmp_path / "out").read_text()
        assert "<Code>InvalidRequest</Code>" in body and "anonymous" in body, body
    r = admin.get(bucket, "share/a.txt", query=[("response-content-disposition", "attachment; filename=x.txt")])
    assert r.status == 200 and r.headers["content-disposition"] == "attachment; filename=x.txt", r


def test_delete_objects_and_form_uploads_are_checked_against_policies_per_key(gw, tmp_path):
    # The bucket-level check sees only the bucket: a Deny on some keys must still refuse those
    # keys inside a DeleteObjects batch (each its own AccessDenied, the others deleted) and a
    # form upload naming them; `s3:x-amz-acl` sees a form's `acl` field.
    bucket = new_bucket_name("perkey")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    for k in ("secret/x", "public/y", "other/z"):
        assert admin.put(bucket, k, b"data").status == 200
    writer = new_key(gw, "--name", "perkey-writer", "--write", bucket)
    policy = {
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": ["s3:DeleteObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/secret/*"},
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
                "Condition": {"StringEquals": {"s3:x-amz-acl": "public-read"}},
            },
        ]
    }
    r = admin.request("PUT", object_path(bucket), query=[("policy", "")], body=json.dumps(policy).encode())
    assert r.status == 204, r
    s3 = boto3_as(gw, writer)
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ("secret/x", "public/y", "other/z")]})
    assert sorted(d["Key"] for d in out.get("Deleted", [])) == ["other/z", "public/y"], out
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("secret/x", "AccessDenied")], out
    assert admin.head(bucket, "secret/x").status == 200
    assert admin.head(bucket, "public/y").status == 404
    # The admin is not bound by the bucket's policies.
    assert gw.boto3_client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "secret/x"}]}).get("Errors") is None
    # Form uploads signed by the writer: a denied key, a denied ACL, and one that passes.
    f = tmp_path / "a.jpg"
    f.write_bytes(b"jpeg")

    def form(key, fields=None, conditions=None):
        post = s3.generate_presigned_post(bucket, key, Fields=fields or {}, Conditions=conditions or [])
        cmd = ["curl", "-sS", "-o", str(tmp_path / "resp"), "-w", "%{http_code}", "-H", "Expect:"]
        for k, v in post["fields"].items():
            cmd += ["--form-string", f"{k}={v}"]
        cmd += ["-F", f"file=@{f}", post["url"]]
        return run(cmd, env=gw.client_env()).stdout_text.strip()

    assert form("secret/a.jpg") == "403"
    assert "AccessDenied" in (tmp_path / "resp").read_text()
    assert form("public/a.jpg", {"acl": "public-read"}, [{"acl": "public-read"}]) == "403"
    assert form("public/a.jpg") == "204"
    assert admin.head(bucket, "public/a.jpg").status == 200
    assert admin.head(bucket, "secret/a.jpg").status == 404


def test_delete_objects_allowed_by_a_policy_on_some_keys(gw):
    # A key that may only read, allowed s3:DeleteObject on some keys by the bucket's policy:
    # DeleteObjects deletes those and answers AccessDenied for the rest, key by key as S3
    # decides (before: the bucket-level check, which sees no key, refused the whole request).
    from botocore.exceptions import ClientError

    bucket = new_bucket_name("perkeyallow")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    names = ("tmp/a", "keep/c", "tmp/b", "tmp/secret")
    for k in names:
        assert admin.put(bucket, k, b"data").status == 200
    reader = new_key(gw, "--name", "perkey-reader", "--read", bucket)
    other = new_key(gw, "--name", "perkey-other", "--read", bucket)
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [reader["access_key_id"]]},
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{bucket}/tmp/*",
            },
            {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{bucket}/tmp/secret"},
        ]
    }
    r = admin.request("PUT", object_path(bucket), query=[("policy", "")], body=json.dumps(policy).encode())
    assert r.status == 204, r
    out = boto3_as(gw, reader).delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in names]})
    assert sorted(d["Key"] for d in out.get("Deleted", [])) == ["tmp/a", "tmp/b"], out
    # The Deny wins over the Allow.
    assert sorted((e["Key"], e["Code"]) for e in out["Errors"]) == [
        ("keep/c", "AccessDenied"),
        ("tmp/secret", "AccessDenied"),
    ], out
    assert [admin.head(bucket, k).status for k in names] == [404, 200, 404, 200]
    # A key no policy names is still refused the whole request.
    with pytest.raises(ClientError) as e:
        boto3_as(gw, other).delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep/c"}]})
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert admin.head(bucket, "keep/c").status == 200


def test_the_api_honours_bucket_policies(gw):
    # The JSON API decides as the S3 side does: a policy Deny takes a key's own read away
    # from `files`, an Allow (with `s3:prefix`) lends another key a listing, an ACL grant too.
    bucket = new_bucket_name("apipol")
    admin = gw.raw()
    assert admin.put_bucket(bucket).status == 200
    assert admin.put(bucket, "shared/a.txt", b"a").status == 200
    reader = new_key(gw, "--name", "api-reader", "--read", bucket)
    guest = new_key(gw, "--name", "api-guest")
    assert api(as_key(gw, reader), "GET", f"files?bucket={bucket}").status == 200
    assert api(as_key(gw, guest), "GET", f"files?bucket={bucket}&prefix=shared/").status == 403
    policy = {
        "Statement": [
            {"Effect": "Deny", "Principal": {"AWS": reader["access_key_id"]}, "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
            {
                "Effect": "Allow",
                "Principal": {"AWS": guest["access_key_id"]},
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": "shared/*"}},
            },
        ]
    }
    r = admin.request("PUT", object_path(bucket), query=[("policy", "")], body=json.dumps(policy).encode())
    assert r.status == 204, r
    r = api(as_key(gw, reader), "GET", f"files?bucket={bucket}")
    assert r.status == 403 and _json_code(r) == "AccessDenied", r
    r = api(as_key(gw, guest), "GET", f"files?bucket={bucket}&prefix=shared/")
    assert r.status == 200, r
    assert api(as_key(gw, guest), "GET", f"files?bucket={bucket}&prefix=other/").status == 403
    assert api(admin, "GET", f"files?bucket={bucket}").status == 200
    assert admin.request("DELETE", object_path(bucket), query=[("policy", "")]).status == 204
    # A bucket ACL grant of READ lists through the API too.
    other = new_key(gw, "--name", "api-acl")
    assert api(as_key(gw, other), "GET", f"files?bucket={bucket}").status == 403
    grant = {"x-amz-grant-read": f'id="{other["access_key_id"]}"'}
    assert admin.request("PUT", object_path(bucket), query=[("acl", "")], headers=grant).status == 200
    assert api(as_key(gw, other), "GET", f"files?bucket={bucket}").status == 200
