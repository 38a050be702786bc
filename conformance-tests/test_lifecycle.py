"""Lifecycle rules with real clients (boto3, aws CLI s3api), on a gateway whose lifecycle "day"
is shortened to 2 seconds (``--lifecycle-day-seconds 2``): expiration, non-current version
expiration, expired delete markers, stale multipart uploads, and object lock winning over a
rule."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import AWS_BIN, new_bucket_name, run

DAY = 2  # seconds in a lifecycle "day" on the test gateway


@pytest.fixture(scope="module")
def lgw(tmp_path_factory):
    from conftest import Gateway

    g = Gateway(tmp_path_factory.mktemp("gw-lifecycle"), extra_args=["--lifecycle-day-seconds", str(DAY)])
    g.start()
    yield g
    g.assert_clean_exit()


def wait_for(what, check, timeout=6 * DAY + 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def keys(s3, b) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])]


def test_configuration_round_trip_and_errors(lgw):
    s3 = lgw.boto3_client()
    b = new_bucket_name("lc")
    s3.create_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=b)
    assert e.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3}},
        {
            "ID": "big-old",
            "Status": "Disabled",
            "Filter": {"And": {"Prefix": "logs/", "ObjectSizeGreaterThan": 100, "ObjectSizeLessThan": 1000}},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
        {"ID": "markers", "Status": "Enabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert [r["ID"] for r in got] == ["tmp", "big-old", "markers"]
    assert got[0]["Filter"] == {"Prefix": "tmp/"} and got[0]["Expiration"] == {"Days": 3}
    assert got[1]["Filter"]["And"] == {"Prefix": "logs/", "ObjectSizeGreaterThan": 100, "ObjectSizeLessThan": 1000}
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2}
    assert got[1]["Status"] == "Disabled"
    assert got[2]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    bad = [
        [{"ID": "x", "Status": "Enabled", "Filter": {}}],  # no action
        [{"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True}}],
        [{"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 0}}],
        [
            {"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1}},
            {"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 2}},
        ],
    ]
    for rules in bad:
        with pytest.raises(ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, rules
        assert e.value.response["Error"]["Code"] in ("MalformedXML", "InvalidArgument"), rules
    # The aws CLI sees the same document, and deletes it.
    env = lgw.client_env()
    aws = [AWS_BIN, "--endpoint-url", lgw.endpoint, "s3api"]
    out = json.loads(run(aws + ["get-bucket-lifecycle-configuration", "--bucket", b], env=env).stdout_text)
    assert [r["ID"] for r in out["Rules"]] == ["tmp", "big-old", "markers"]
    run(aws + ["delete-bucket-lifecycle", "--bucket", b], env=env)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=b)
    assert e.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"


def test_expiration_and_stale_multipart_upload(lgw):
    s3 = lgw.boto3_client()
    b = new_bucket_name("lc")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_lifecycle_configuration(
        Bucket=b,
        LifecycleConfiguration={
            "Rules": [
                {"ID": "tmp-files", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}},
                {"ID": "uploads", "Status": "Enabled", "Filter": {}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            ]
        },
    )
    r = s3.put_object(Bucket=b, Key="tmp/scratch.txt", Body=b"scratch")
    assert 'rule-id="tmp-files"' in r["Expiration"]
    head = s3.head_object(Bucket=b, Key="tmp/scratch.txt")
    assert 'rule-id="tmp-files"' in head["Expiration"]
    s3.put_object(Bucket=b, Key="keep/photo.jpg", Body=b"keep me")
    assert "Expiration" not in s3.head_object(Bucket=b, Key="keep/photo.jpg")
    up = s3.create_multipart_upload(Bucket=b, Key="keep/big.bin")["UploadId"]
    s3.upload_part(Bucket=b, Key="keep/big.bin", UploadId=up, PartNumber=1, Body=b"part")
    wait_for("tmp/scratch.txt to expire", lambda: keys(s3, b) == ["keep/photo.jpg"])
    assert not (lgw.data_dir / b / "tmp").exists()
    wait_for("the stale upload to be aborted", lambda: not s3.list_multipart_uploads(Bucket=b).get("Uploads"))
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=b, Key="keep/big.bin", UploadId=up)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    assert s3.get_object(Bucket=b, Key="keep/photo.jpg")["Body"].read() == b"keep me"
    log = lgw.log_text()
    assert "lifecycle: expired the current version" in log and "tmp/scratch.txt" in log
    assert "lifecycle: aborted an incomplete multipart upload" in log


def test_noncurrent_versions_and_delete_markers(lgw):
    s3 = lgw.boto3_client()
    b = new_bucket_name("lc")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=b, Key="doc.txt", Body=b"v%d" % n)["VersionId"] for n in range(4)]
    s3.put_object(Bucket=b, Key="gone.txt", Body=b"x")
    gone = s3.list_object_versions(Bucket=b, Prefix="gone.txt")["Versions"][0]["VersionId"]
    gone_marker = s3.delete_object(Bucket=b, Key="gone.txt")["VersionId"]
    # A delete of a key that never existed leaves a delete marker with no version under it.
    s3.delete_object(Bucket=b, Key="lone.txt")
    s3.put_bucket_lifecycle_configuration(
        Bucket=b,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "old-versions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1},
                },
                {"ID": "markers", "Status": "Enabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
            ]
        },
    )

    def state():
        r = s3.list_object_versions(Bucket=b)
        return (
            [(v["Key"], v["VersionId"]) for v in r.get("Versions", [])],
            [(m["Key"], m["VersionId"]) for m in r.get("DeleteMarkers", [])],
        )

    # doc.txt keeps its current version and the newest non-current one; so does gone.txt (its
    # one non-current version, under a marker that is therefore not alone); lone.txt's marker
    # goes.
    want = ([("doc.txt", ids[3]), ("doc.txt", ids[2]), ("gone.txt", gone)], [("gone.txt", gone_marker)])
    wait_for("old versions and the lone marker to go", lambda: state() == want)
    assert s3.get_object(Bucket=b, Key="doc.txt")["Body"].read() == b"v3"
    assert "lifecycle: removed an expired delete marker" in lgw.log_text()


def test_object_lock_wins_over_lifecycle(lgw):
    s3 = lgw.boto3_client()
    b = new_bucket_name("lc")
    s3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    locked = s3.put_object(
        Bucket=b, Key="backup.tar", Body=b"locked", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
    )["VersionId"]
    free = s3.put_object(Bucket=b, Key="backup.tar", Body=b"free")["VersionId"]
    s3.put_object(Bucket=b, Key="backup.tar", Body=b"current")
    s3.put_bucket_lifecycle_configuration(
        Bucket=b,
        LifecycleConfiguration={
            "Rules": [{"ID": "all-old", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]
        },
    )

    def noncurrent():
        return [v["VersionId"] for v in s3.list_object_versions(Bucket=b)["Versions"] if not v["IsLatest"]]

    wait_for("the unlocked non-current version to go", lambda: free not in noncurrent())
    time.sleep(2 * DAY)
    assert noncurrent() == [locked]
    assert s3.get_object(Bucket=b, Key="backup.tar", VersionId=locked)["Body"].read() == b"locked"


def test_tag_filters(lgw):
    """Filter.Tag and And.Tags match object tags: in the stored rules, in x-amz-expiration and in
    what the sweeper removes; rules that could never match (tags with AbortIncompleteMultipartUpload
    or ExpiredObjectDeleteMarker) are refused as S3 refuses them."""
    s3 = lgw.boto3_client()
    b = new_bucket_name("lc")
    s3.create_bucket(Bucket=b)
    rules = [
        {"ID": "temp", "Status": "Enabled", "Filter": {"Tag": {"Key": "temp", "Value": "yes"}}, "Expiration": {"Days": 1}},
        {
            "ID": "old-logs",
            "Status": "Enabled",
            "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}},
            "Expiration": {"Days": 1},
        },
    ]
    for bad in (
        {"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "t", "Value": "v"}},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "x", "Status": "Enabled", "Filter": {"Tag": {"Key": "t", "Value": "v"}},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ):
        with pytest.raises(ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [bad]})
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert e.value.response["Error"]["Code"] == "InvalidRequest"
    # Objects written before the rules are matched by their tags too.
    s3.put_object(Bucket=b, Key="scratch.txt", Body=b"s", Tagging="temp=yes")
    s3.put_object(Bucket=b, Key="keep.txt", Body=b"k", Tagging="temp=no")
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert got[0]["Filter"] == {"Tag": {"Key": "temp", "Value": "yes"}}
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    assert 'rule-id="temp"' in s3.head_object(Bucket=b, Key="scratch.txt")["Expiration"]
    assert "Expiration" not in s3.head_object(Bucket=b, Key="keep.txt")
    r = s3.put_object(Bucket=b, Key="logs/full.log", Body=b"f", Tagging="a=1&b=2&c=3")
    assert 'rule-id="old-logs"' in r["Expiration"]
    r = s3.put_object(Bucket=b, Key="logs/half.log", Body=b"h", Tagging="a=1")
    assert "Expiration" not in r
    # Tags set later count: the untagged object becomes due.
    s3.put_object(Bucket=b, Key="later.txt", Body=b"l")
    assert "Expiration" not in s3.head_object(Bucket=b, Key="later.txt")
    s3.put_object_tagging(Bucket=b, Key="later.txt", Tagging={"TagSet": [{"Key": "temp", "Value": "yes"}]})
    assert 'rule-id="temp"' in s3.get_object(Bucket=b, Key="later.txt")["Expiration"]
    wait_for("the tagged objects to expire", lambda: keys(s3, b) == ["keep.txt", "logs/half.log"])
    time.sleep(2 * DAY)
    assert keys(s3, b) == ["keep.txt", "logs/half.log"]
    log = lgw.log_text()
    assert "logs/full.log" in log and "scratch.txt" in log and "later.txt" in log
