"""Object lock with real clients (boto3, aws CLI s3api): buckets created with object lock,
default retention, COMPLIANCE and GOVERNANCE retention, legal holds, and rules that survive a
restart of the gateway."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError

from conftest import AWS_BIN, Gateway, new_bucket_name, run
from test_access import boto3_as, new_key


def locked_bucket(s3) -> str:
    b = new_bucket_name("lk")
    s3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    return b


def future(days: float = 1) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)


def code_of(e: pytest.ExceptionInfo) -> tuple[int, str]:
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def test_bucket_created_with_object_lock_is_versioned(gw):
    s3 = gw.boto3_client()
    b = locked_bucket(s3)
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    cfg = s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]
    assert cfg == {"ObjectLockEnabled": "Enabled"}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    assert code_of(e) == (409, "InvalidBucketState")
    plain = new_bucket_name("pl")
    s3.create_bucket(Bucket=plain)
    with pytest.raises(ClientError) as e:
        s3.get_object_lock_configuration(Bucket=plain)
    assert code_of(e) == (404, "ObjectLockConfigurationNotFoundError")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=plain, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=future())
    assert code_of(e) == (400, "InvalidRequest")
    # An unversioned bucket cannot take a lock configuration.
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(Bucket=plain, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert code_of(e) == (409, "InvalidBucketState")


def test_compliance_locked_object_survives_the_admin_key(gw, tmp_path):
    """The admin key (the gateway's only key) cannot delete or shorten a COMPLIANCE version,
    not even with the governance bypass; the object stays readable and on disk."""
    s3 = gw.boto3_client()
    b = locked_bucket(s3)
    v = s3.put_object(
        Bucket=b, Key="backup.tar", Body=b"precious backup",
        ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(2),
    )["VersionId"]
    head = s3.head_object(Bucket=b, Key="backup.tar")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > future(1)
    env = gw.client_env()
    aws = [AWS_BIN, "--endpoint-url", gw.endpoint, "s3api"]
    for extra in ([], ["--bypass-governance-retention"]):
        p = run(aws + ["delete-object", "--bucket", b, "--key", "backup.tar", "--version-id", v] + extra, env=env, check=False)
        assert p.returncode != 0 and "AccessDenied" in p.stderr_text, p.stderr_text
    p = run(aws + ["delete-objects", "--bucket", b, "--delete", json.dumps({"Objects": [{"Key": "backup.tar", "VersionId": v}]})], env=env)
    assert json.loads(p.stdout_text)["Errors"][0]["Code"] == "AccessDenied"
    # Shortening or switching to GOVERNANCE is refused; extending is allowed.
    for mode, until in (("COMPLIANCE", future(1)), ("GOVERNANCE", future(3))):
        with pytest.raises(ClientError) as e:
            s3.put_object_retention(
                Bucket=b, Key="backup.tar", VersionId=v, BypassGovernanceRetention=True,
                Retention={"Mode": mode, "RetainUntilDate": until},
            )
        assert code_of(e) == (403, "AccessDenied")
    s3.put_object_retention(Bucket=b, Key="backup.tar", VersionId=v, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": future(5)})
    r = s3.get_object_retention(Bucket=b, Key="backup.tar", VersionId=v)["Retention"]
    assert r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"] > future(4)
    # A plain delete only adds a marker: the locked version is still there, bytes and all.
    s3.delete_object(Bucket=b, Key="backup.tar")
    assert s3.get_object(Bucket=b, Key="backup.tar", VersionId=v)["Body"].read() == b"precious backup"
    assert (gw.data_dir / ".nebula" / "versions" / b / "backup.tar@v" / v).read_bytes() == b"precious backup"
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=b)
    assert code_of(e)[1] == "BucketNotEmpty"


def test_governance_bypass_and_legal_hold(gw):
    s3 = gw.boto3_client()
    b = locked_bucket(s3)
    v = s3.put_object(
        Bucket=b, Key="k", Body=b"g", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=future(),
    )["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=b, Key="k", VersionId=v)
    assert code_of(e) == (403, "AccessDenied")
    s3.delete_object(Bucket=b, Key="k", VersionId=v, BypassGovernanceRetention=True)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=b, Key="k", VersionId=v)
    assert code_of(e)[0] == 404

    v = s3.put_object(Bucket=b, Key="held", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.get_object_legal_hold(Bucket=b, Key="held")["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket=b, Key="held")
    assert code_of(e) == (404, "NoSuchObjectLockConfiguration")
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=b, Key="held", VersionId=v, BypassGovernanceRetention=True)
    assert code_of(e) == (403, "AccessDenied")
    s3.put_object_legal_hold(Bucket=b, Key="held", VersionId=v, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=b, Key="held", VersionId=v)["LegalHold"]["Status"] == "OFF"
    s3.delete_object(Bucket=b, Key="held", VersionId=v)


def test_governance_bypass_is_a_permission_of_its_own(gw):
    """Sending x-amz-bypass-governance-retention needs s3:BypassGovernanceRetention: a key that
    may write the bucket but does not own it is refused (DeleteObject, DeleteObjects,
    PutObjectRetention) and the version stays; the owner, or a key a bucket policy allows the
    action, may bypass."""
    admin = gw.boto3_client()
    b = locked_bucket(admin)
    writer_key = new_key(gw, "--name", "lock-writer", "--write", b, "--read", b)
    owner_key = new_key(gw, "--name", "lock-owner", "--owner", b)
    writer, owner = boto3_as(gw, writer_key), boto3_as(gw, owner_key)

    def governed(key: str) -> str:
        return admin.put_object(
            Bucket=b, Key=key, Body=b"g", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=future()
        )["VersionId"]

    v = governed("k")
    with pytest.raises(ClientError) as e:
        writer.delete_object(Bucket=b, Key="k", VersionId=v, BypassGovernanceRetention=True)
    assert code_of(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        writer.put_object_retention(
            Bucket=b, Key="k", VersionId=v, BypassGovernanceRetention=True, Retention={}
        )
    assert code_of(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        writer.delete_objects(
            Bucket=b, BypassGovernanceRetention=True, Delete={"Objects": [{"Key": "k", "VersionId": v}]}
        )
    assert code_of(e) == (403, "AccessDenied")
    assert admin.head_object(Bucket=b, Key="k", VersionId=v)["ObjectLockMode"] == "GOVERNANCE"
    # Without the header the writer's delete is a plain one: a delete marker, the version kept.
    assert writer.delete_object(Bucket=b, Key="k")["DeleteMarker"] is True
    # The bucket's owner may bypass.
    owner.delete_object(Bucket=b, Key="k", VersionId=v, BypassGovernanceRetention=True)
    with pytest.raises(ClientError) as e:
        admin.head_object(Bucket=b, Key="k", VersionId=v)
    assert code_of(e)[0] == 404
    # So may a key a bucket policy allows s3:BypassGovernanceRetention.
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": [writer_key["access_key_id"]]},
            "Action": "s3:BypassGovernanceRetention",
            "Resource": f"arn:aws:s3:::{b}/*",
        }],
    }
    admin.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    v = governed("p")
    writer.put_object_retention(Bucket=b, Key="p", VersionId=v, BypassGovernanceRetention=True, Retention={})
    writer.delete_object(Bucket=b, Key="p", VersionId=v)


def test_default_retention_applies_and_survives_a_restart(start_gateway):
    g = start_gateway()
    s3 = g.boto3_client()
    b = locked_bucket(s3)
    s3.put_object_lock_configuration(
        Bucket=b,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(
            Bucket=b,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1, "Years": 1}},
            },
        )
    assert code_of(e) == (400, "MalformedXML")
    v = s3.put_object(Bucket=b, Key="photo.jpg", Body=b"jpeg")["VersionId"]
    # Multipart and copy take the default too.
    up = s3.create_multipart_upload(Bucket=b, Key="mp.bin")
    etag = s3.upload_part(Bucket=b, Key="mp.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"part")["ETag"]
    mp = s3.complete_multipart_upload(
        Bucket=b, Key="mp.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )["VersionId"]
    cp = s3.copy_object(Bucket=b, Key="copy.jpg", CopySource={"Bucket": b, "Key": "photo.jpg"})["VersionId"]
    for key, vid in (("photo.jpg", v), ("mp.bin", mp), ("copy.jpg", cp)):
        r = s3.get_object_retention(Bucket=b, Key=key, VersionId=vid)["Retention"]
        assert r["Mode"] == "COMPLIANCE"
        assert future(0.9) < r["RetainUntilDate"] < future(1.1)
    # Overwriting keeps the locked version; a restart changes nothing.
    s3.put_object(Bucket=b, Key="photo.jpg", Body=b"edited")
    g.stop()
    g2 = Gateway(g.workdir).start()
    try:
        s3 = g2.boto3_client()
        assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]["Rule"] == {
            "DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}
        }
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=b, Key="photo.jpg", VersionId=v, BypassGovernanceRetention=True)
        assert code_of(e) == (403, "AccessDenied")
        assert s3.get_object(Bucket=b, Key="photo.jpg", VersionId=v)["Body"].read() == b"jpeg"
    finally:
        g2.assert_clean_exit()
