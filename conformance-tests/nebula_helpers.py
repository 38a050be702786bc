"""Helpers shared by the conformance tests: a small, fully controllable S3 client.

The real-client tests drive aws CLI, rclone, s3cmd, boto3, the JS SDK, curl, mpv and ffprobe.
The semantics tests additionally need requests no SDK will send (malformed ranges, traversal keys,
tampered signatures, expired presigned URLs, aws-chunked bodies with a bad chunk signature, ...),
so this module implements AWS Signature Version 4 itself (header auth, presigned query auth and
STREAMING-AWS4-HMAC-SHA256-PAYLOAD chunk signatures) on top of ``http.client``.
``test_s3_semantics.py::test_signer_matches_botocore`` checks the signer against botocore.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import http.client
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# hashing / files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: os.PathLike | str, bufsize: int = 8 * MIB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def md5_file(path: os.PathLike | str, bufsize: int = 8 * MIB) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def random_chunks(size: int, chunk: int = MIB) -> Iterator[bytes]:
    """Yield ``size`` bytes of incompressible data in ``chunk``-sized pieces.

    Up to 64 MiB comes straight from os.urandom.  Beyond that (the 100 MiB-2 GiB cases) each chunk is
    a window of a 64 MiB random pool at a pseudo-random offset, tagged with its index, so that every
    chunk is distinct (a lost, duplicated or reordered chunk changes the sha256) while generation stays
    at memcpy speed instead of the kernel RNG's."""
    if size <= 64 * MIB:
        left = size
        while left > 0:
            b = os.urandom(min(chunk, left))
            left -= len(b)
            yield b
        return
    pool = os.urandom(64 * MIB + chunk)
    rng = __import__("random").Random(os.urandom(16))
    left, i = size, 0
    while left > 0:
        n = min(chunk, left)
        off = rng.randrange(0, 64 * MIB)
        tag = i.to_bytes(8, "big") + off.to_bytes(8, "big")
        b = (tag + pool[off + 16 : off + n])[:n]
        left -= n
        i += 1
        yield b


def make_random_file(path: os.PathLike | str, size: int, chunk: int = MIB, md5: bool = False):
    """Write ``size`` random bytes to ``path`` without holding them in memory; return sha256 hex
    (and the md5 hex when ``md5`` is true)."""
    h = hashlib.sha256()
    m = hashlib.md5() if md5 else None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for b in random_chunks(size, chunk):
            f.write(b)
            h.update(b)
            if m is not None:
                m.update(b)
    return (h.hexdigest(), m.hexdigest()) if md5 else h.hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def content_md5(data: bytes) -> str:
    return b64(hashlib.md5(data).digest())


def crc32_b64(data: bytes) -> str:
    return b64((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big"))


def multipart_etag(parts: list[bytes]) -> str:
    """The ETag S3 gives a completed multipart upload: md5(concat(md5(part)))-N, quoted."""
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


# --------------------------------------------------------------------------------------------
# SigV4


def uri_encode(s: str | bytes, encode_slash: bool = True) -> str:
    """AWS URI encoding: everything except unreserved characters is %XX (upper-case hex)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    if not encode_slash:
        safe += b"/"
    out = []
    for byte in s:
        if byte in safe:
            out.append(chr(byte))
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def object_path(bucket: str, key: str | bytes | None = None) -> str:
    """Encoded path-style request path for bucket/key (slashes in the key are kept)."""
    if key is None:
        return "/" + uri_encode(bucket)
    return "/" + uri_encode(bucket) + "/" + uri_encode(key, encode_slash=False)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_query(query: list[tuple[str, str]]) -> str:
    enc = sorted((uri_encode(k), uri_encode(v)) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in enc)


def amz_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def amz_date_str(t: _dt.datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Creds:
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def sign_headers(
    creds: Creds,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    payload_hash: str,
    when: _dt.datetime | None = None,
) -> tuple[dict[str, str], str]:
    """Add x-amz-date / x-amz-content-sha256 / Authorization to ``headers``.

    ``path`` must be the encoded path exactly as it goes on the wire.  Returns the new headers and
    the signature (the seed signature for aws-chunked bodies).
    """
    when = when or amz_now()
    amz_date = amz_date_str(when)
    date = amz_date[:8]
    headers = dict(headers)
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    lower = {}
    for k, v in headers.items():
        lower[k.lower().strip()] = re.sub(r"\s+", " ", str(v).strip())
    signed = sorted(lower)
    canonical_headers = "".join(f"{k}:{lower[k]}\n" for k in signed)
    signed_headers = ";".join(signed)
    creq = "\n".join(
        [method, path, canonical_query(query), canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date}/{creds.region}/s3/aws4_request"
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    sig = hmac.new(signing_key(creds.secret_key, date, creds.region), sts.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={sig}"
    )
    return headers, sig


def presign(
    creds: Creds,
    method: str,
    host: str,
    path: str,
    expires: int = 3600,
    when: _dt.datetime | None = None,
    extra_query: list[tuple[str, str]] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> str:
    """Return a presigned path+query (without scheme/host) for ``method path``."""
    when = when or amz_now()
    amz_date = amz_date_str(when)
    date = amz_date[:8]
    scope = f"{date}/{creds.region}/s3/aws4_request"
    hdrs = {"host": host}
    for k, v in (extra_headers or {}).items():
        hdrs[k.lower()] = v
    signed = sorted(hdrs)
    query = list(extra_query or []) + [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{creds.access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", ";".join(signed)),
    ]
    canonical_headers = "".join(f"{k}:{hdrs[k].strip()}\n" for k in signed)
    creq = "\n".join(
        [method, path, canonical_query(query), canonical_headers, ";".join(signed), UNSIGNED]
    )
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    sig = hmac.new(signing_key(creds.secret_key, date, creds.region), sts.encode(), hashlib.sha256).hexdigest()
    query.append(("X-Amz-Signature", sig))
    return path + "?" + canonical_query(query)


def aws_chunked_signed(
    creds: Creds,
    data: bytes,
    chunk_size: int,
    seed_signature: str,
    when: _dt.datetime,
    corrupt_chunk: int | None = None,
) -> bytes:
    """Encode ``data`` as a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body."""
    amz_date = amz_date_str(when)
    date = amz_date[:8]
    scope = f"{date}/{creds.region}/s3/aws4_request"
    key = signing_key(creds.secret_key, date, creds.region)
    prev = seed_signature
    out = bytearray()
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for idx, chunk in enumerate(chunks):
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                prev,
                EMPTY_SHA256,
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if corrupt_chunk is not None and idx == corrupt_chunk:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        out += f"{len(chunk):x};chunk-signature={sig}\r\n".encode() + chunk + b"\r\n"
    return bytes(out)


def aws_chunked_signed_length(data_len: int, chunk_size: int) -> int:
    n_full, rest = divmod(data_len, chunk_size)
    sizes = [chunk_size] * n_full + ([rest] if rest else []) + [0]
    return sum(len(f"{s:x}") + len(";chunk-signature=") + 64 + 2 + s + 2 for s in sizes)


def aws_chunked_unsigned_trailer(data: bytes, chunk_size: int, trailer_name: str, trailer_value: str) -> bytes:
    """Encode ``data`` as a STREAMING-UNSIGNED-PAYLOAD-TRAILER body with one checksum trailer."""
    out = bytearray()
    for i in range(0, len(data), chunk_size):
        chunk = data[i : i + chunk_size]
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n" + f"{trailer_name}:{trailer_value}\r\n".encode() + b"\r\n"
    return bytes(out)


# --------------------------------------------------------------------------------------------
# raw HTTP client


@dataclass
class Resp:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    header_list: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def code(self) -> str | None:
        """The S3 error <Code> of an XML error body, or None."""
        return xml_error_code(self.body)

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    def __repr__(self) -> str:  # short, useful in assertion messages
        body = self.body[:400]
        return f"Resp(status={self.status}, headers={self.headers!r}, body={body!r})"


def playlist_uris(text: str) -> list[str]:
    """The URIs of an HLS playlist in order: its EXT-X-MAP, then every non-tag line."""
    out = []
    for line in text.splitlines():
        m = re.match(r'#EXT-X-MAP:URI="([^"]+)"', line)
        if m:
            out.append(m.group(1))
        elif line and not line.startswith("#"):
            out.append(line)
    return out


def xml_error_code(body: bytes) -> str | None:
    if not body:
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.split("}")[-1] == "Code":
            return el.text
    return None


def strip_ns(root: ET.Element) -> ET.Element:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


class RawS3:
    """Minimal path-style S3 client with explicit control over every byte of the request."""

    def __init__(self, host: str, port: int, creds: Creds, timeout: float = 120.0):
        self.host = host
        self.port = port
        self.creds = creds
        self.timeout = timeout

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def with_creds(self, creds: Creds) -> "RawS3":
        return RawS3(self.host, self.port, creds, self.timeout)

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes] | object | None = b"",
        *,
        sign: bool = True,
        payload_hash: str | None = None,
        content_length: int | None = None,
        when: _dt.datetime | None = None,
        raw_query: str | None = None,
        stream_to=None,
    ) -> Resp:
        """Send one request.  ``path`` is the encoded path; ``body`` bytes, a file object or an
        iterable of bytes (then ``content_length`` must be given).  If ``stream_to`` is a callable,
        the response body is fed to it in pieces instead of being kept."""
        query = list(query or [])
        headers = dict(headers or {})
        headers.setdefault("host", self.host_header)
        if isinstance(body, (bytes, bytearray)):
            if payload_hash is None:
                payload_hash = hashlib.sha256(body).hexdigest()
            if method in ("PUT", "POST") or body:
                headers.setdefault("content-length", str(len(body)))
        else:
            if content_length is not None:
                headers.setdefault("content-length", str(content_length))
            if payload_hash is None:
                payload_hash = UNSIGNED
        if sign:
            headers, _ = sign_headers(self.creds, method, path, query, headers, payload_hash, when)
        if raw_query is not None:
            target = path + ("?" + raw_query if raw_query else "")
        else:
            target = path + ("?" + canonical_query(query) if query else "")
        return self.send(method, target, headers, body, stream_to=stream_to)

    def send(self, method: str, target: str, headers: dict[str, str], body=b"", stream_to=None) -> Resp:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if isinstance(body, (bytes, bytearray)):
                if body:
                    conn.send(body)
            elif hasattr(body, "read"):
                while True:
                    b = body.read(1024 * 1024)
                    if not b:
                        break
                    conn.send(b)
            elif body is not None:
                for b in body:
                    conn.send(b)
            r = conn.getresponse()
            hl = r.getheaders()
            if stream_to is not None and method != "HEAD":
                while True:
                    b = r.read(1024 * 1024)
                    if not b:
                        break
                    stream_to(b)
                data = b""
            else:
                data = r.read()
            return Resp(r.status, r.reason, {k.lower(): v for k, v in hl}, data, hl)
        finally:
            conn.close()

    def presigned_url(self, method: str, path: str, expires: int = 3600, **kw) -> str:
        return self.endpoint + presign(self.creds, method, self.host_header, path, expires, **kw)

    # convenience wrappers -----------------------------------------------------------------
    def put_bucket(self, bucket: str, **kw) -> Resp:
        return self.request("PUT", object_path(bucket), **kw)

    def delete_bucket(self, bucket: str) -> Resp:
        return self.request("DELETE", object_path(bucket))

    def put(self, bucket: str, key, data: bytes = b"", headers=None, **kw) -> Resp:
        return self.request("PUT", object_path(bucket, key), headers=headers, body=data, **kw)

    def get(self, bucket: str, key, headers=None, query=None, **kw) -> Resp:
        return self.request("GET", object_path(bucket, key), headers=headers, query=query, **kw)

    def head(self, bucket: str, key, headers=None, **kw) -> Resp:
        return self.request("HEAD", object_path(bucket, key), headers=headers, **kw)

    def delete(self, bucket: str, key, **kw) -> Resp:
        return self.request("DELETE", object_path(bucket, key), **kw)

    def list_v2(self, bucket: str, **params) -> Resp:
        q = [("list-type", "2")] + [(k.replace("_", "-"), str(v)) for k, v in params.items()]
        return self.request("GET", object_path(bucket), query=q)

    def list_v1(self, bucket: str, **params) -> Resp:
        q = [(k.replace("_", "-"), str(v)) for k, v in params.items()]
        return self.request("GET", object_path(bucket), query=q)


def parse_list(body: bytes) -> dict:
    """Parse a ListObjects(V1|V2) result into plain Python values."""
    root = strip_ns(ET.fromstring(body))
    if root.tag != "ListBucketResult":
        raise AssertionError(f"expected a ListBucketResult, got {body[:300]!r}")
    out: dict = {
        "keys": [c.findtext("Key") for c in root.findall("Contents")],
        "contents": [
            {
                "Key": c.findtext("Key"),
                "Size": int(c.findtext("Size") or -1),
                "ETag": c.findtext("ETag"),
                "LastModified": c.findtext("LastModified"),
            }
            for c in root.findall("Contents")
        ],
        "prefixes": [p.findtext("Prefix") for p in root.findall("CommonPrefixes")],
    }
    for name in (
        "IsTruncated",
        "NextContinuationToken",
        "ContinuationToken",
        "NextMarker",
        "Marker",
        "KeyCount",
        "MaxKeys",
        "Prefix",
        "Delimiter",
        "StartAfter",
        "EncodingType",
        "Name",
    ):
        el = root.find(name)
        out[name] = None if el is None else (el.text or "")
    return out


def iter_file_chunks(path, chunk=MIB) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return
            yield b


# --------------------------------------------------------------------------------------------
# media


_AUTO_ENCODER: list[str] = []


def expected_auto_encoder() -> str:
    """The H.264 encoder ``--encoder auto`` must pick on this machine, found without the gateway:
    ``vaapih264enc`` when it encodes a frame here (element present and a VA display opens),
    else ``x264enc`` when installed, else ``openh264enc``."""
    import subprocess

    if not _AUTO_ENCODER:
        def works(pipeline: str) -> bool:
            try:
                p = subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                return False
            return p.returncode == 0

        frame = "videotestsrc num-buffers=2 ! video/x-raw,width=320,height=240"
        if works(f"{frame},format=NV12 ! vaapih264enc ! fakesink"):
            _AUTO_ENCODER.append("vaapih264enc")
        elif works(f"{frame} ! x264enc ! fakesink"):
            _AUTO_ENCODER.append("x264enc")
        else:
            _AUTO_ENCODER.append("openh264enc")
    return _AUTO_ENCODER[0]


# -- gateways and the nebula CLI in tests -------------------------------------------------------


def cli_env(gw, home: os.PathLike | str, **extra) -> dict:
    """The environment of a `nebula` CLI run against test gateway `gw` (a ``conftest.Gateway``)
    with its keys, and its config under `home`; `extra` adds variables (an empty value removes
    one)."""
    env = gw.client_env(
        NEBULA_SERVER_URL=gw.endpoint,
        NEBULA_ACCESS_KEY=gw.access_key,
        NEBULA_SECRET_KEY=gw.secret_key,
        NEBULA_REGION=gw.region,
        XDG_CONFIG_HOME=str(Path(home) / "cfg"),
        HOME=str(home),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return {k: v for k, v in env.items() if v != ""}


class GatewayGroup:
    """The gateways of one test: subclasses start them with :meth:`add`; :meth:`close` stops
    the ones not killed and checks each exited cleanly."""

    def __init__(self):
        self.gateways: list = []
        self.killed: set[int] = set()

    def add(self, g):
        """Starts gateway `g` (a ``conftest.Gateway``) as one of the group."""
        self.gateways.append(g)
        return g.start()

    def kill(self, g):
        g.kill()
        self.killed.add(id(g))

    def close(self):
        for g in self.gateways:
            if id(g) not in self.killed:
                g.assert_clean_exit()
