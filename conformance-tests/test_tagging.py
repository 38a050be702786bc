"""Tagging (issue 18) with boto3 and the aws CLI: object tags set on PUT, copy and multipart or
later, counted on GET/HEAD, kept through copies; bucket tags; S3's limits and errors."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from conftest import AWS_BIN, new_bucket_name, run


@pytest.fixture(scope="module")
def s3(gw):
    return gw.boto3_client(signature_version="s3v4")


@pytest.fixture(scope="module")
def tbucket(s3):
    name = new_bucket_name("tags")
    s3.create_bucket(Bucket=name)
    return name


def tags_of(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def error_of(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def test_put_with_tagging_header_and_counts(s3, tbucket):
    s3.put_object(Bucket=tbucket, Key="a.txt", Body=b"a", Tagging="project=nebula&note=two%20words")
    assert tags_of(s3, tbucket, "a.txt") == {"project": "nebula", "note": "two words"}
    assert s3.get_object(Bucket=tbucket, Key="a.txt")["TagCount"] == 2
    head = s3.head_object(Bucket=tbucket, Key="a.txt")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    s3.put_object(Bucket=tbucket, Key="plain.txt", Body=b"p")
    assert "TagCount" not in s3.get_object(Bucket=tbucket, Key="plain.txt")
    assert s3.get_object_tagging(Bucket=tbucket, Key="plain.txt")["TagSet"] == []


def test_put_get_delete_object_tagging(s3, tbucket):
    s3.put_object(Bucket=tbucket, Key="b.bin", Body=b"bytes", ContentType="application/x-b", Metadata={"m": "1"})
    etag = s3.head_object(Bucket=tbucket, Key="b.bin")["ETag"]
    s3.put_object_tagging(
        Bucket=tbucket, Key="b.bin", Tagging={"TagSet": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": ""}]}
    )
    assert tags_of(s3, tbucket, "b.bin") == {"k1": "v1", "k2": ""}
    # The bytes and the other metadata are untouched.
    got = s3.get_object(Bucket=tbucket, Key="b.bin")
    assert got["Body"].read() == b"bytes" and got["ETag"] == etag
    assert got["ContentType"] == "application/x-b" and got["Metadata"] == {"m": "1"}
    s3.put_object_tagging(Bucket=tbucket, Key="b.bin", Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    assert tags_of(s3, tbucket, "b.bin") == {"only": "one"}
    s3.delete_object_tagging(Bucket=tbucket, Key="b.bin")
    assert tags_of(s3, tbucket, "b.bin") == {}
    assert error_of(lambda: s3.get_object_tagging(Bucket=tbucket, Key="missing")) == (404, "NoSuchKey")
    assert error_of(
        lambda: s3.put_object_tagging(Bucket=tbucket, Key="missing", Tagging={"TagSet": []})
    ) == (404, "NoSuchKey")


def test_tags_round_trip_through_copy_and_multipart(s3, tbucket):
    s3.put_object(Bucket=tbucket, Key="src.txt", Body=b"src", Tagging="a=1&b=2")
    s3.copy_object(Bucket=tbucket, Key="copy.txt", CopySource={"Bucket": tbucket, "Key": "src.txt"})
    assert tags_of(s3, tbucket, "copy.txt") == {"a": "1", "b": "2"}
    s3.copy_object(
        Bucket=tbucket,
        Key="copy2.txt",
        CopySource={"Bucket": tbucket, "Key": "src.txt"},
        TaggingDirective="REPLACE",
        Tagging="c=3",
    )
    assert tags_of(s3, tbucket, "copy2.txt") == {"c": "3"}
    s3.copy_object(
        Bucket=tbucket,
        Key="copy3.txt",
        CopySource={"Bucket": tbucket, "Key": "src.txt"},
        MetadataDirective="REPLACE",
        ContentType="text/x-new",
    )
    assert tags_of(s3, tbucket, "copy3.txt") == {"a": "1", "b": "2"}
    up = s3.create_multipart_upload(Bucket=tbucket, Key="mp.bin", Tagging="multi=part")["UploadId"]
    e1 = s3.upload_part(Bucket=tbucket, Key="mp.bin", UploadId=up, PartNumber=1, Body=b"x" * (5 * 1024 * 1024))["ETag"]
    e2 = s3.upload_part(Bucket=tbucket, Key="mp.bin", UploadId=up, PartNumber=2, Body=b"end")["ETag"]
    s3.complete_multipart_upload(
        Bucket=tbucket,
        Key="mp.bin",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert tags_of(s3, tbucket, "mp.bin") == {"multi": "part"}
    assert s3.get_object(Bucket=tbucket, Key="mp.bin", Range="bytes=0-0")["TagCount"] == 1


def test_object_tag_limits(s3, tbucket):
    s3.put_object(Bucket=tbucket, Key="lim.txt", Body=b"l")

    def put(tag_set):
        return lambda: s3.put_object_tagging(Bucket=tbucket, Key="lim.txt", Tagging={"TagSet": tag_set})

    eleven = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    assert error_of(put(eleven)) == (400, "BadRequest")
    assert error_of(put([{"Key": "k" * 129, "Value": "v"}])) == (400, "InvalidTag")
    assert error_of(put([{"Key": "k", "Value": "v" * 257}])) == (400, "InvalidTag")
    assert error_of(put([{"Key": "d", "Value": "1"}, {"Key": "d", "Value": "2"}])) == (400, "InvalidTag")
    assert error_of(put([{"Key": "aws:reserved", "Value": "1"}])) == (400, "InvalidTag")
    ten = [{"Key": "k" * 128 if i == 0 else f"k{i}", "Value": "v" * 256} for i in range(10)]
    s3.put_object_tagging(Bucket=tbucket, Key="lim.txt", Tagging={"TagSet": ten})
    assert len(tags_of(s3, tbucket, "lim.txt")) == 10
    # The header on PUT is held to the same limits, and nothing is written when it fails.
    header = "&".join(f"k{i}=v" for i in range(11))
    assert error_of(lambda: s3.put_object(Bucket=tbucket, Key="lim2.txt", Body=b"x", Tagging=header)) == (
        400,
        "BadRequest",
    )
    assert error_of(lambda: s3.head_object(Bucket=tbucket, Key="lim2.txt"))[0] == 404


def test_bucket_tagging(s3):
    name = new_bucket_name("tags")
    s3.create_bucket(Bucket=name)
    assert error_of(lambda: s3.get_bucket_tagging(Bucket=name)) == (404, "NoSuchTagSet")
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": "team", "Value": "media"}]})
    assert s3.get_bucket_tagging(Bucket=name)["TagSet"] == [{"Key": "team", "Value": "media"}]
    fifty = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": fifty})
    assert len(s3.get_bucket_tagging(Bucket=name)["TagSet"]) == 50
    fifty_one = fifty + [{"Key": "k50", "Value": "v"}]
    assert error_of(lambda: s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": fifty_one}))[0] == 400
    dup = [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]
    assert error_of(lambda: s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": dup})) == (400, "InvalidTag")
    s3.delete_bucket_tagging(Bucket=name)
    assert error_of(lambda: s3.get_bucket_tagging(Bucket=name)) == (404, "NoSuchTagSet")
    assert error_of(lambda: s3.get_bucket_tagging(Bucket="no-such-bucket-tags"))[1] == "NoSuchBucket"


def test_awscli_object_and_bucket_tagging(gw, tbucket, tmp_path):
    env = gw.client_env()
    ep = ["--endpoint-url", gw.endpoint]
    src = tmp_path / "f.txt"
    src.write_bytes(b"cli")
    run([AWS_BIN, *ep, "s3api", "put-object", "--bucket", tbucket, "--key", "cli.txt", "--body", str(src),
         "--tagging", "from=cli"], env=env)
    out = run([AWS_BIN, *ep, "s3api", "get-object-tagging", "--bucket", tbucket, "--key", "cli.txt"], env=env)
    assert json.loads(out.stdout_text)["TagSet"] == [{"Key": "from", "Value": "cli"}]
    run([AWS_BIN, *ep, "s3api", "put-object-tagging", "--bucket", tbucket, "--key", "cli.txt",
         "--tagging", "TagSet=[{Key=x,Value=y}]"], env=env)
    out = run([AWS_BIN, *ep, "s3api", "get-object-tagging", "--bucket", tbucket, "--key", "cli.txt"], env=env)
    assert json.loads(out.stdout_text)["TagSet"] == [{"Key": "x", "Value": "y"}]
    run([AWS_BIN, *ep, "s3api", "put-bucket-tagging", "--bucket", tbucket,
         "--tagging", "TagSet=[{Key=env,Value=test}]"], env=env)
    out = run([AWS_BIN, *ep, "s3api", "get-bucket-tagging", "--bucket", tbucket], env=env)
    assert json.loads(out.stdout_text)["TagSet"] == [{"Key": "env", "Value": "test"}]


def test_tags_of_one_version(s3):
    """Put/Get/DeleteObjectTagging with a versionId reach that version only, current or kept,
    and answer with its id; each version's tags stay its own through overwrites and deletes."""
    b = new_bucket_name("tags")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"before versioning", Tagging="era=null")
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"one", Tagging="n=1")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"two", Tagging="n=2")["VersionId"]

    def tags(version=None):
        kw = {"VersionId": version} if version else {}
        r = s3.get_object_tagging(Bucket=b, Key="k", **kw)
        return r["VersionId"], {t["Key"]: t["Value"] for t in r["TagSet"]}

    assert tags() == (v2, {"n": "2"})
    assert tags(v1) == (v1, {"n": "1"})
    assert tags("null") == ("null", {"era": "null"})
    # Tag a kept version: only it changes.
    r = s3.put_object_tagging(Bucket=b, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "kept", "Value": "yes"}]})
    assert r["VersionId"] == v1
    assert tags(v1) == (v1, {"kept": "yes"})
    assert tags() == (v2, {"n": "2"})
    assert s3.get_object(Bucket=b, Key="k", VersionId=v1)["TagCount"] == 1
    # Tag the current version by its id.
    s3.put_object_tagging(Bucket=b, Key="k", VersionId=v2, Tagging={"TagSet": [{"Key": "n", "Value": "two"}]})
    assert tags() == (v2, {"n": "two"})
    # A delete marker on top, then removed: the versions keep their own tags.
    marker = s3.delete_object(Bucket=b, Key="k")["VersionId"]
    assert tags(v1) == (v1, {"kept": "yes"})
    assert error_of(lambda: s3.get_object_tagging(Bucket=b, Key="k", VersionId=marker)) == (405, "MethodNotAllowed")
    s3.delete_object(Bucket=b, Key="k", VersionId=marker)
    assert tags() == (v2, {"n": "two"})
    r = s3.delete_object_tagging(Bucket=b, Key="k", VersionId="null")
    assert r["VersionId"] == "null"
    assert tags("null") == ("null", {})
    assert tags(v1) == (v1, {"kept": "yes"})
    # Deleting the current version brings v1 back with its tags.
    s3.delete_object(Bucket=b, Key="k", VersionId=v2)
    assert tags() == (v1, {"kept": "yes"})
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"one"
    missing = "0" * 32
    assert error_of(lambda: s3.get_object_tagging(Bucket=b, Key="k", VersionId=missing)) == (404, "NoSuchVersion")
    assert error_of(
        lambda: s3.put_object_tagging(Bucket=b, Key="k", VersionId=missing, Tagging={"TagSet": []})
    ) == (404, "NoSuchVersion")
    assert error_of(lambda: s3.get_object_tagging(Bucket=b, Key="k", VersionId="bogus"))[0] == 400
