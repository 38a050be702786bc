//! Content-MD5 and `x-amz-checksum-*`: verification for uploads (headers or aws-chunked
//! trailers), the checksums S3 echoes, and the composite checksum of a multipart object.
//! s3s parses these headers but leaves checking the data against them to the backend.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, ChecksumAlgorithm, ChecksumType, CompletedPart};
use std::os::unix::fs::FileExt;

use super::{RequestError, RequestResult};
use crate::store::StoreError;
use crate::store::meta::{IO_BLOCK, StoredChecksums};
use crate::store::multipart::{PartInfo, UploadRecord};

/// The checksum algorithms S3 knows, with their header names and digest sizes.
const ALGOS: [(&str, &str, usize); 5] = [
    ("CRC32", "x-amz-checksum-crc32", 4),
    ("CRC32C", "x-amz-checksum-crc32c", 4),
    ("CRC64NVME", "x-amz-checksum-crc64nvme", 8),
    ("SHA1", "x-amz-checksum-sha1", 20),
    ("SHA256", "x-amz-checksum-sha256", 32),
];

/// What the client promised about an upload's bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expect {
    md5: Option<[u8; 16]>,
    /// Values given in headers, by algorithm index.
    given: [Option<String>; 5],
    /// Algorithms to compute (given in a header, announced in `x-amz-trailer`, or asked for).
    compute: [bool; 5],
}

fn algo_index(name: &str) -> Option<usize> {
    ALGOS
        .iter()
        .position(|(a, h, _)| a.eq_ignore_ascii_case(name) || h.eq_ignore_ascii_case(name))
}

fn get(c: &Checksum, i: usize) -> Option<&String> {
    match i {
        0 => c.checksum_crc32.as_ref(),
        1 => c.checksum_crc32c.as_ref(),
        2 => c.checksum_crc64nvme.as_ref(),
        3 => c.checksum_sha1.as_ref(),
        _ => c.checksum_sha256.as_ref(),
    }
}

impl Expect {
    /// Reads the promises from a request: `Content-MD5`, `x-amz-checksum-*` headers,
    /// `x-amz-trailer` and the SDK's algorithm choice.
    pub(crate) fn from_request(
        content_md5: Option<&str>,
        headers: &HeaderMap,
        algorithm: Option<&ChecksumAlgorithm>,
    ) -> RequestResult<Self> {
        let mut e = Expect::default();
        if let Some(m) = content_md5 {
            let raw = B64.decode(m.trim()).map_err(|_| {
                RequestError::InvalidDigest("the Content-MD5 you specified was invalid".into())
            })?;
            e.md5 = Some(raw.try_into().map_err(|_| {
                RequestError::InvalidDigest("the Content-MD5 you specified was invalid".into())
            })?);
        }
        for (i, (name, header, len)) in ALGOS.iter().enumerate() {
            if let Some(v) = headers.get(*header) {
                let v = v.to_str().unwrap_or("").trim().to_owned();
                if B64.decode(&v).map(|d| d.len()) != Ok(*len) {
                    return Err(RequestError::InvalidDigest(format!(
                        "value for {header} header is invalid"
                    )));
                }
                e.given[i] = Some(v);
                e.compute[i] = true;
            }
            let _ = name;
        }
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for name in t.split(',') {
                if let Some(i) = algo_index(name.trim()) {
                    e.compute[i] = true;
                }
            }
        }
        if let Some(a) = algorithm {
            let i = algo_index(a.as_str()).ok_or_else(|| {
                RequestError::InvalidArgument(format!(
                    "checksum algorithm {} is not supported",
                    a.as_str()
                ))
            })?;
            e.compute[i] = true;
        }
        Ok(e)
    }

    /// A hasher computing every algorithm this upload needs.
    pub(crate) fn hasher(&self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        if self.compute[0] {
            h.crc32 = Some(s3s::crypto::Crc32::new());
        }
        if self.compute[1] {
            h.crc32c = Some(s3s::crypto::Crc32c::new());
        }
        if self.compute[2] {
            h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new());
        }
        if self.compute[3] {
            h.sha1 = Some(s3s::crypto::Sha1::new());
        }
        if self.compute[4] {
            h.sha256 = Some(s3s::crypto::Sha256::new());
        }
        h
    }

    /// Checks the computed digests against headers and trailers; returns what to store.
    pub(crate) fn verify(
        &self,
        md5: &[u8; 16],
        computed: &Checksum,
        trailers: Option<&HeaderMap>,
    ) -> RequestResult<StoredChecksums> {
        if let Some(want) = &self.md5
            && want != md5
        {
            return Err(RequestError::BadDigest(
                "the Content-MD5 you specified did not match what we received".into(),
            ));
        }
        for (i, (name, header, len)) in ALGOS.iter().enumerate() {
            let from_trailer = trailers
                .and_then(|t| t.get(*header))
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_owned());
            let want = self.given[i].clone().or(from_trailer);
            let Some(want) = want else { continue };
            if B64.decode(&want).map(|d| d.len()) != Ok(*len) {
                return Err(RequestError::InvalidDigest(format!(
                    "value for {header} is invalid"
                )));
            }
            if get(computed, i) != Some(&want) {
                return Err(RequestError::BadDigest(format!(
                    "the {name} you specified did not match the calculated checksum"
                )));
            }
        }
        Ok(StoredChecksums {
            crc32: computed.checksum_crc32.clone(),
            crc32c: computed.checksum_crc32c.clone(),
            crc64nvme: computed.checksum_crc64nvme.clone(),
            sha1: computed.checksum_sha1.clone(),
            sha256: computed.checksum_sha256.clone(),
        })
    }
}

/// Output checksums as S3 echoes them.
pub(crate) fn checksum_fields(c: &StoredChecksums) -> Checksum {
    Checksum {
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_crc64nvme: c.crc64nvme.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        checksum_type: None,
    }
}

/// The checksums a CompleteMultipartUpload part list gives for one part.
pub(crate) fn stored_from_request(c: &CompletedPart) -> StoredChecksums {
    StoredChecksums {
        crc32: c.checksum_crc32.clone(),
        crc32c: c.checksum_crc32c.clone(),
        crc64nvme: c.checksum_crc64nvme.clone(),
        sha1: c.checksum_sha1.clone(),
        sha256: c.checksum_sha256.clone(),
    }
}

/// MD5 and the upload's checksum of the first `len` bytes of a file, read in large blocks.
pub(crate) fn hash_file(
    file: &std::fs::File,
    len: u64,
    algorithm: Option<&ChecksumAlgorithm>,
) -> RequestResult<([u8; 16], StoredChecksums)> {
    let expect = Expect::from_request(None, &HeaderMap::new(), algorithm)?;
    let mut hasher = expect.hasher();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; IO_BLOCK];
    let mut off = 0;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = file
            .read_at(&mut buf[..want], off)
            .map_err(StoreError::from)?;
        if n == 0 {
            return Err(StoreError::from(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "copied part is short",
            ))
            .into());
        }
        md5.update(&buf[..n]);
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    let md5: [u8; 16] = md5.finalize().into();
    let checksums = expect.verify(&md5, &hasher.finalize(), None)?;
    Ok((md5, checksums))
}

/// The stored value of one algorithm, by its S3 name.
fn checksum_value(c: &StoredChecksums, algorithm: &str) -> Option<String> {
    match algorithm {
        "CRC32" => c.crc32.clone(),
        "CRC32C" => c.crc32c.clone(),
        "SHA1" => c.sha1.clone(),
        "SHA256" => c.sha256.clone(),
        _ => None,
    }
}

/// S3's composite ("checksum of checksums", `-N` suffix) checksum for uploads created with a
/// checksum algorithm, when every part has that checksum. Full-object CRCs would need CRC
/// combination and are not offered; without a value nothing is claimed.
pub(crate) fn composite_checksums(record: &UploadRecord, parts: &[PartInfo]) -> StoredChecksums {
    let mut out = StoredChecksums::default();
    let Some(alg) = record.checksum_algorithm.as_deref() else {
        return out;
    };
    if record
        .checksum_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ChecksumType::FULL_OBJECT))
    {
        return out;
    }
    let Ok(expect) = Expect::from_request(
        None,
        &HeaderMap::new(),
        Some(&ChecksumAlgorithm::from(alg.to_owned())),
    ) else {
        return out;
    };
    let mut hasher = expect.hasher();
    for p in parts {
        let Some(raw) = checksum_value(&p.checksums, alg).and_then(|v| B64.decode(v).ok()) else {
            return out;
        };
        hasher.update(&raw);
    }
    let sum = hasher.finalize();
    let n = parts.len();
    let composite = |v: Option<String>| v.map(|v| format!("{v}-{n}"));
    match alg {
        "CRC32" => out.crc32 = composite(sum.checksum_crc32),
        "CRC32C" => out.crc32c = composite(sum.checksum_crc32c),
        "SHA1" => out.sha1 = composite(sum.checksum_sha1),
        "SHA256" => out.sha256 = composite(sum.checksum_sha256),
        _ => {}
    }
    out
}

/// True when every checksum the client listed for a part matches one computed at upload.
/// Checksums not computed at upload cannot be checked and are not held against the part.
pub(crate) fn checksums_agree(sent: &StoredChecksums, have: &StoredChecksums) -> bool {
    let pairs = [
        (&sent.crc32, &have.crc32),
        (&sent.crc32c, &have.crc32c),
        (&sent.crc64nvme, &have.crc64nvme),
        (&sent.sha1, &have.sha1),
        (&sent.sha256, &have.sha256),
    ];
    pairs.iter().all(|(s, h)| match (s, h) {
        (Some(s), Some(h)) => s == h,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_header_is_checked() {
        let mut h = HeaderMap::new();
        // CRC32 of "hello" is 0x3610a686.
        h.insert(
            "x-amz-checksum-crc32",
            B64.encode(0x3610a686u32.to_be_bytes()).parse().unwrap(),
        );
        let e = Expect::from_request(None, &h, None).unwrap();
        let mut hasher = e.hasher();
        hasher.update(b"hello");
        let sum = hasher.finalize();
        let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(b"hello").into();
        assert!(e.verify(&md5, &sum, None).is_ok());
        let mut hasher = e.hasher();
        hasher.update(b"hellO");
        let bad = hasher.finalize();
        assert!(matches!(
            e.verify(&md5, &bad, None),
            Err(RequestError::BadDigest(_))
        ));
    }

    #[test]
    fn malformed_digests_are_invalid() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-checksum-sha256", "bm90LWEtc2hhMjU2".parse().unwrap());
        assert!(matches!(
            Expect::from_request(None, &h, None),
            Err(RequestError::InvalidDigest(_))
        ));
        assert!(matches!(
            Expect::from_request(Some("%%%"), &HeaderMap::new(), None),
            Err(RequestError::InvalidDigest(_))
        ));
    }
}
