"""ACLs with real clients: canned ACLs on writes (aws CLI, boto3, a browser-style form upload)
read anonymously by curl, bucket and object grants to another scoped key and to the
AuthenticatedUsers group, the public access block refusing and ignoring public ACLs, an
explicit policy Deny beating an ACL grant, Get*Acl round trips of AccessControlPolicy
documents, one owner reported everywhere, and the errors S3 gives bad ACLs.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import AWS_BIN, gateway_bin, new_bucket_name, run
from nebula_helpers import Creds, RawS3, object_path

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


class UnsignedS3(RawS3):
    """Requests without a signature."""

    def request(self, *args, **kw):
        kw["sign"] = False
        return super().request(*args, **kw)


def new_key(gw, *args) -> dict:
    p = run([str(gateway_bin()), "keys", "create", "--json", *args, "--data-dir", str(gw.data_dir)], env=gw.client_env())
    return json.loads(p.stdout_text)


def as_key(gw, key: dict) -> RawS3:
    return gw.raw(Creds(key["access_key_id"], key["secret_access_key"]))


def boto3_as(gw, key: dict | None = None):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=gw.endpoint,
        aws_access_key_id=key["access_key_id"] if key else gw.access_key,
        aws_secret_access_key=key["secret_access_key"] if key else gw.secret_key,
        region_name=gw.region,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def curl_status(gw, bucket: str, key: str) -> tuple[int, bytes]:
    """An anonymous GET by curl: status and body."""
    p = run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", f"{gw.endpoint}{object_path(bucket, key)}"], env=gw.client_env())
    body, _, status = p.stdout.rpartition(b"\n")
    return int(status), body


def aws(gw, *args, check=True):
    return run([AWS_BIN, "--endpoint-url", gw.endpoint, *args], env=gw.client_env(), check=check)


def grants_of(resp) -> set[tuple[str, str]]:
    out = set()
    for g in resp["Grants"]:
        who = g["Grantee"].get("ID") or g["Grantee"].get("URI")
        out.add((who, g["Permission"]))
    return out


def error_code(call) -> str:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_canned_public_read_object_is_readable_by_curl_and_its_sibling_is_not(gw, tmp_path):
    bucket = new_bucket_name("acl")
    aws(gw, "s3", "mb", f"s3://{bucket}")
    src = tmp_path / "a.txt"
    src.write_bytes(b"shared")
    aws(gw, "s3", "cp", str(src), f"s3://{bucket}/pub/a.txt", "--acl", "public-read")
    aws(gw, "s3", "cp", str(src), f"s3://{bucket}/pub/b.txt")
    assert curl_status(gw, bucket, "pub/a.txt") == (200, b"shared")
    assert curl_status(gw, bucket, "pub/b.txt")[0] == 403
    # HEAD too; writing and listing stay closed to anonymous callers.
    anon = UnsignedS3(gw.host, gw.port, gw.creds)
    assert anon.head(bucket, "pub/a.txt").status == 200
    assert anon.put(bucket, "pub/a.txt", b"evil").status == 403
    assert anon.list_v2(bucket).status == 403
    acl = json.loads(aws(gw, "s3api", "get-object-acl", "--bucket", bucket, "--key", "pub/a.txt").stdout_text)
    assert grants_of(acl) == {("nebula", "FULL_CONTROL"), (ALL_USERS, "READ")}
    assert acl["Owner"]["ID"] == "nebula"
    # A copy does not take its source's ACL.
    aws(gw, "s3api", "copy-object", "--bucket", bucket, "--key", "pub/copy.txt", "--copy-source", f"{bucket}/pub/a.txt")
    assert curl_status(gw, bucket, "pub/copy.txt")[0] == 403
    aws(gw, "s3api", "copy-object", "--bucket", bucket, "--key", "pub/copy2.txt", "--copy-source", f"{bucket}/pub/b.txt", "--acl", "public-read")
    assert curl_status(gw, bucket, "pub/copy2.txt") == (200, b"shared")
    # PutObjectAcl takes it back; an overwrite without an ACL is private again.
    aws(gw, "s3api", "put-object-acl", "--bucket", bucket, "--key", "pub/a.txt", "--acl", "private")
    assert curl_status(gw, bucket, "pub/a.txt")[0] == 403
    aws(gw, "s3api", "put-object-acl", "--bucket", bucket, "--key", "pub/a.txt", "--acl", "public-read")
    assert curl_status(gw, bucket, "pub/a.txt")[0] == 200
    aws(gw, "s3", "cp", str(src), f"s3://{bucket}/pub/a.txt")
    assert curl_status(gw, bucket, "pub/a.txt")[0] == 403


def test_multipart_and_form_uploads_carry_their_acl(gw, tmp_path):
    s3 = boto3_as(gw)
    bucket = new_bucket_name("aclmp")
    s3.create_bucket(Bucket=bucket)
    up = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ACL="public-read")
    part = s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 1000)
    # Until completion there is no object to read.
    assert curl_status(gw, bucket, "big.bin")[0] == 403
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big.bin",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert curl_status(gw, bucket, "big.bin") == (200, b"m" * 1000)
    # A browser form upload with the acl field.
    post = s3.generate_presigned_post(bucket, "form/${filename}", Fields={"acl": "public-read"}, Conditions=[{"acl": "public-read"}, ["starts-with", "$key", "form/"]])
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"jpeg")
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:"]
    for k, v in post["fields"].items():
        cmd += ["--form-string", f"{k}={v}"]
    cmd += ["-F", f"file=@{f}", post["url"]]
    assert run(cmd, env=gw.client_env()).stdout_text.strip() == "204"
    assert curl_status(gw, bucket, "form/photo.jpg") == (200, b"jpeg")


def test_bucket_acl_grants_to_another_key(gw):
    s3 = boto3_as(gw)
    bucket = new_bucket_name("aclgrant")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    friend = new_key(gw, "--name", "acl-friend")
    other = new_key(gw, "--name", "acl-other")
    fr = as_key(gw, friend)
    assert fr.list_v2(bucket).status == 403
    # READ on the bucket: listing, not the objects (their own ACLs are private).
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{friend["access_key_id"]}"', GrantFullControl='id="nebula"')
    r = fr.list_v2(bucket)
    assert r.status == 200 and b"<Key>a.txt</Key>" in r.body, r
    assert fr.get(bucket, "a.txt").status == 403
    assert fr.put(bucket, "b.txt", b"b").status == 403
    assert as_key(gw, other).list_v2(bucket).status == 403
    # GetBucketAcl needs READ_ACP: the friend's boto3 is refused until it has it.
    f3 = boto3_as(gw, friend)
    assert error_code(lambda: f3.get_bucket_acl(Bucket=bucket)) == "AccessDenied"
    # WRITE: put and delete objects; READ_ACP: read the ACL. Grants replace the old ones.
    s3.put_bucket_acl(
        Bucket=bucket,
        GrantWrite=f'id="{friend["access_key_id"]}"',
        GrantReadACP=f'id="{friend["access_key_id"]}"',
    )
    assert fr.list_v2(bucket).status == 403
    assert fr.put(bucket, "b.txt", b"b").status == 200
    assert fr.delete(bucket, "a.txt").status == 204
    got = f3.get_bucket_acl(Bucket=bucket)
    assert grants_of(got) == {(friend["access_key_id"], "WRITE"), (friend["access_key_id"], "READ_ACP")}
    # An object grant to the key lets it read that object.
    s3.put_object(Bucket=bucket, Key="for-friend.txt", Body=b"hi", GrantRead=f'id="{friend["access_key_id"]}"')
    assert fr.get(bucket, "for-friend.txt").body == b"hi"
    assert as_key(gw, other).get(bucket, "for-friend.txt").status == 403
    # An explicit policy Deny wins over the ACL grant.
    deny = {
        "Statement": {
            "Effect": "Deny",
            "Principal": {"AWS": friend["access_key_id"]},
            "Action": "s3:*",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    assert fr.get(bucket, "for-friend.txt").status == 403
    assert fr.put(bucket, "c.txt", b"c").status == 403
    s3.delete_bucket_policy(Bucket=bucket)
    assert fr.get(bucket, "for-friend.txt").status == 200


def test_authenticated_users_is_every_key_of_the_gateway(gw, tmp_path):
    s3 = boto3_as(gw)
    bucket = new_bucket_name("aclauth")
    # CreateBucket with a canned ACL.
    s3.create_bucket(Bucket=bucket, ACL="authenticated-read")
    s3.put_object(Bucket=bucket, Key="x.txt", Body=b"x", ACL="authenticated-read")
    nobody = new_key(gw, "--name", "acl-nobody")
    assert as_key(gw, nobody).list_v2(bucket).status == 200
    assert as_key(gw, nobody).get(bucket, "x.txt").body == b"x"
    assert as_key(gw, nobody).put(bucket, "y.txt", b"y").status == 403
    anon = UnsignedS3(gw.host, gw.port, gw.creds)
    assert anon.list_v2(bucket).status == 403
    assert curl_status(gw, bucket, "x.txt")[0] == 403
    assert grants_of(s3.get_bucket_acl(Bucket=bucket)) == {("nebula", "FULL_CONTROL"), (AUTHENTICATED, "READ")}
    # public-read-write on a bucket: anyone may write into it.
    pub = new_bucket_name("aclprw")
    aws(gw, "s3api", "create-bucket", "--bucket", pub, "--acl", "public-read-write")
    assert anon.put(pub, "drop.txt", b"d").status == 200
    assert anon.list_v2(pub).status == 200
    assert curl_status(gw, pub, "drop.txt")[0] == 403  # the object itself is private


def test_public_access_block_refuses_and_ignores_public_acls(gw, tmp_path):
    s3 = boto3_as(gw)
    bucket = new_bucket_name("aclpab")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="p.txt", Body=b"p", ACL="public-read")
    assert curl_status(gw, bucket, "p.txt")[0] == 200
    # IgnorePublicAcls: the grant stays, but counts for nothing.
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert curl_status(gw, bucket, "p.txt")[0] == 403
    assert (ALL_USERS, "READ") in grants_of(s3.get_object_acl(Bucket=bucket, Key="p.txt"))
    # BlockPublicAcls: a write or an ACL change carrying a public ACL is refused; private ones pass.
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    assert curl_status(gw, bucket, "p.txt")[0] == 200
    assert error_code(lambda: s3.put_object(Bucket=bucket, Key="q.txt", Body=b"q", ACL="public-read")) == "AccessDenied"
    assert error_code(lambda: s3.put_object_acl(Bucket=bucket, Key="p.txt", GrantRead=f'uri="{ALL_USERS}"')) == "AccessDenied"
    assert error_code(lambda: s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")) == "AccessDenied"
    up = aws(gw, "s3", "cp", str(_file(tmp_path)), f"s3://{bucket}/r.txt", "--acl", "public-read", check=False)
    assert up.returncode != 0 and "AccessDenied" in up.stderr_text
    s3.put_object(Bucket=bucket, Key="q.txt", Body=b"q", ACL="private")
    s3.put_object_acl(Bucket=bucket, Key="p.txt", ACL="private")
    assert curl_status(gw, bucket, "p.txt")[0] == 403
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_object_acl(Bucket=bucket, Key="p.txt", ACL="public-read")
    assert curl_status(gw, bucket, "p.txt")[0] == 200


def _file(tmp_path):
    f = tmp_path / "r.txt"
    f.write_bytes(b"r")
    return f


def test_acl_documents_round_trip_and_one_owner_everywhere(gw):
    s3 = boto3_as(gw)
    bucket = new_bucket_name("aclxml")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="o.txt", Body=b"o")
    friend = new_key(gw, "--name", "acl-xml")
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]
    assert owner["ID"] == "nebula"
    assert s3.list_buckets()["Owner"]["ID"] == owner["ID"]
    listed = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"]
    assert listed["ID"] == owner["ID"]
    assert s3.get_object_acl(Bucket=bucket, Key="o.txt")["Owner"]["ID"] == owner["ID"]
    policy = {
        "Owner": owner,
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": "nebula"}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": friend["access_key_id"]}, "Permission": "READ"},
            {"Grantee": {"Type": "Group", "URI": AUTHENTICATED}, "Permission": "READ_ACP"},
        ],
    }
    want = {("nebula", "FULL_CONTROL"), (friend["access_key_id"], "READ"), (AUTHENTICATED, "READ_ACP")}
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=policy)
    assert grants_of(s3.get_bucket_acl(Bucket=bucket)) == want
    s3.put_object_acl(Bucket=bucket, Key="o.txt", AccessControlPolicy=policy)
    assert grants_of(s3.get_object_acl(Bucket=bucket, Key="o.txt")) == want
    assert as_key(gw, friend).get(bucket, "o.txt").body == b"o"
    # Bad ACLs get S3's errors and change nothing.
    bad = [
        ({"Grantee": {"Type": "CanonicalUser", "ID": "NEBNOSUCHKEY"}, "Permission": "READ"}, "InvalidArgument"),
        ({"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/s3/LogDelivery"}, "Permission": "WRITE"}, "InvalidArgument"),
        ({"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "a@example.com"}, "Permission": "READ"}, "UnresolvableGrantByEmailAddress"),
        ({"Grantee": {"Type": "CanonicalUser", "ID": "nebula"}, "Permission": "EVERYTHING"}, "MalformedACLError"),
    ]
    for grant, code in bad:
        doc = {"Owner": owner, "Grants": [grant]}
        assert error_code(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=doc)) == code, grant
        assert error_code(lambda: s3.put_object_acl(Bucket=bucket, Key="o.txt", AccessControlPolicy=doc)) == code, grant
    assert error_code(lambda: s3.put_object_acl(Bucket=bucket, Key="o.txt", GrantRead='id="NEBNOSUCHKEY"')) == "InvalidArgument"
    assert error_code(lambda: s3.put_object_acl(Bucket=bucket, Key="o.txt", ACL="public-read", GrantRead='id="nebula"')) == "InvalidRequest"
    assert error_code(lambda: s3.put_object(Bucket=bucket, Key="n.txt", Body=b"n", ACL="no-such-acl")) == "InvalidArgument"
    admin = gw.raw()
    for body in (b"<AccessControlPolicy><Grants>", b"<AccessControlPolicy><AccessControlList><Grant><Permission>READ</Permission></Grant></AccessControlList></AccessControlPolicy>"):
        r = admin.request("PUT", object_path(bucket), query=[("acl", "")], body=body)
        assert r.status == 400 and r.code == "MalformedACLError", r
    assert grants_of(s3.get_bucket_acl(Bucket=bucket)) == want
    assert grants_of(s3.get_object_acl(Bucket=bucket, Key="o.txt")) == want
