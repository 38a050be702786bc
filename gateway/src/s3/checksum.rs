//! Content-MD5 and `x-amz-checksum-*`: verification for uploads (headers or aws-chunked
//! trailers), the checksums S3 echoes, and the checksum of a multipart object (COMPOSITE, of
//! its parts' checksums, or FULL_OBJECT, a CRC combined from its parts' CRCs).
//! s3s parses these headers but leaves checking the data against them to the backend.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::CrcAlgorithm;
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
        e.also(algorithm)
    }

    /// Computes `algorithm` too (the SDK's choice, or a multipart upload's algorithm for a part
    /// sent with another).
    pub(crate) fn also(mut self, algorithm: Option<&ChecksumAlgorithm>) -> RequestResult<Self> {
        if let Some(a) = algorithm {
            let i = algo_index(a.as_str()).ok_or_else(|| {
                RequestError::InvalidArgument(format!(
                    "checksum algorithm {} is not supported",
                    a.as_str()
                ))
            })?;
            self.compute[i] = true;
        }
        Ok(self)
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
        checksum_type: checksum_type_of(c),
    }
}

/// The type of stored checksums: COMPOSITE for a multipart object's checksum of its parts'
/// checksums (the value ends in `-N`, a character base64 never holds), FULL_OBJECT for any
/// other; none without a checksum.
fn checksum_type_of(c: &StoredChecksums) -> Option<ChecksumType> {
    let values = [&c.crc32, &c.crc32c, &c.crc64nvme, &c.sha1, &c.sha256];
    let mut present = values.iter().filter_map(|v| v.as_deref()).peekable();
    present.peek()?;
    let kind = if present.any(|v| v.contains('-')) {
        ChecksumType::COMPOSITE
    } else {
        ChecksumType::FULL_OBJECT
    };
    Some(ChecksumType::from_static(kind))
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
fn value_of<'a>(c: &'a StoredChecksums, algorithm: &str) -> Option<&'a String> {
    match algorithm {
        "CRC32" => c.crc32.as_ref(),
        "CRC32C" => c.crc32c.as_ref(),
        "CRC64NVME" => c.crc64nvme.as_ref(),
        "SHA1" => c.sha1.as_ref(),
        "SHA256" => c.sha256.as_ref(),
        _ => None,
    }
}

/// Where the value of one algorithm is stored, by its S3 name.
fn slot_of<'a>(c: &'a mut StoredChecksums, algorithm: &str) -> Option<&'a mut Option<String>> {
    match algorithm {
        "CRC32" => Some(&mut c.crc32),
        "CRC32C" => Some(&mut c.crc32c),
        "CRC64NVME" => Some(&mut c.crc64nvme),
        "SHA1" => Some(&mut c.sha1),
        "SHA256" => Some(&mut c.sha256),
        _ => None,
    }
}

/// The checksum type of a multipart upload, as CreateMultipartUpload settles it: S3's default
/// when only the algorithm is given (FULL_OBJECT for CRC64NVME, COMPOSITE for the others), and
/// S3's refusals: a type without an algorithm, FULL_OBJECT with a SHA (a hash cannot be
/// combined from its parts), COMPOSITE with CRC64NVME.
pub(crate) fn upload_checksum_type(
    algorithm: Option<&ChecksumAlgorithm>,
    kind: Option<&ChecksumType>,
) -> RequestResult<Option<ChecksumType>> {
    let kind = kind.map(|k| k.as_str().to_ascii_uppercase());
    if let Some(k) = &kind
        && k != ChecksumType::COMPOSITE
        && k != ChecksumType::FULL_OBJECT
    {
        return Err(RequestError::InvalidRequest(
            "Value for x-amz-checksum-type header is invalid.".into(),
        ));
    }
    let Some(algorithm) = algorithm else {
        return match kind {
            Some(_) => Err(RequestError::InvalidRequest(
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.".into(),
            )),
            None => Ok(None),
        };
    };
    let algorithm = algorithm.as_str().to_ascii_uppercase();
    let kind = kind.unwrap_or_else(|| {
        if algorithm == "CRC64NVME" {
            ChecksumType::FULL_OBJECT.to_owned()
        } else {
            ChecksumType::COMPOSITE.to_owned()
        }
    });
    let allowed = match kind.as_str() {
        ChecksumType::FULL_OBJECT => crc_algorithm(&algorithm).is_some(),
        _ => algorithm != "CRC64NVME",
    };
    if !allowed {
        return Err(RequestError::InvalidRequest(format!(
            "The {kind} checksum type cannot be used with the {} checksum algorithm.",
            algorithm.to_ascii_lowercase()
        )));
    }
    Ok(Some(ChecksumType::from(kind)))
}

/// The checksum type of an upload in progress (records made before the type was settled at
/// creation get S3's default for their algorithm).
pub(crate) fn record_checksum_type(record: &UploadRecord) -> Option<ChecksumType> {
    let algorithm = record
        .checksum_algorithm
        .clone()
        .map(ChecksumAlgorithm::from);
    let kind = record.checksum_type.clone().map(ChecksumType::from);
    upload_checksum_type(algorithm.as_ref(), kind.as_ref())
        .ok()
        .flatten()
}

/// The CRCs that can be combined from their parts' CRCs, by S3 name.
fn crc_algorithm(algorithm: &str) -> Option<CrcAlgorithm> {
    match algorithm {
        "CRC32" => Some(CrcAlgorithm::Crc32IsoHdlc),
        "CRC32C" => Some(CrcAlgorithm::Crc32Iscsi),
        "CRC64NVME" => Some(CrcAlgorithm::Crc64Nvme),
        _ => None,
    }
}

/// The CRC of the parts' bytes one after the other, from each part's CRC (big-endian, as S3
/// encodes them) and size, without reading the bytes again. `None` if a CRC is malformed.
fn combine_crcs(algorithm: CrcAlgorithm, parts: &[(Vec<u8>, u64)]) -> Option<Vec<u8>> {
    let width = parts.first()?.0.len();
    if width != 4 && width != 8 {
        return None;
    }
    let mut whole = None;
    for (raw, size) in parts {
        if raw.len() != width {
            return None;
        }
        let mut be = [0u8; 8];
        be[8 - width..].copy_from_slice(raw);
        let crc = u64::from_be_bytes(be);
        whole = Some(match whole {
            None => crc,
            Some(before) => crc_fast::checksum_combine(algorithm, before, crc, *size),
        });
    }
    Some(whole?.to_be_bytes()[8 - width..].to_vec())
}

/// The checksum of a multipart object, for uploads created with a checksum algorithm when
/// every part has that checksum: COMPOSITE is S3's checksum of the parts' checksums with a
/// `-N` suffix; FULL_OBJECT is the CRC of the whole object, combined from the parts' CRCs.
/// Without a value nothing is claimed.
pub(crate) fn multipart_checksums(record: &UploadRecord, parts: &[PartInfo]) -> StoredChecksums {
    let mut out = StoredChecksums::default();
    let Some(alg) = record.checksum_algorithm.as_deref() else {
        return out;
    };
    let Some(raws) = parts
        .iter()
        .map(|p| value_of(&p.checksums, alg).and_then(|v| B64.decode(v).ok()))
        .collect::<Option<Vec<Vec<u8>>>>()
    else {
        return out;
    };
    let full =
        record_checksum_type(record).is_some_and(|t| t.as_str() == ChecksumType::FULL_OBJECT);
    let value = if full {
        let Some(crc) = crc_algorithm(alg) else {
            return out;
        };
        let sized: Vec<(Vec<u8>, u64)> =
            raws.into_iter().zip(parts.iter().map(|p| p.size)).collect();
        combine_crcs(crc, &sized).map(|v| B64.encode(v))
    } else {
        let Ok(expect) = Expect::from_request(
            None,
            &HeaderMap::new(),
            Some(&ChecksumAlgorithm::from(alg.to_owned())),
        ) else {
            return out;
        };
        let mut hasher = expect.hasher();
        for raw in &raws {
            hasher.update(raw);
        }
        let sum = hasher.finalize();
        let n = parts.len();
        algo_index(alg).and_then(|i| get(&sum, i).map(|v| format!("{v}-{n}")))
    };
    if let Some(slot) = slot_of(&mut out, alg) {
        *slot = value;
    }
    out
}

/// Checks what a CompleteMultipartUpload says about the whole object: its
/// `x-amz-checksum-type` must be the upload's, and an `x-amz-checksum-*` value must be the
/// checksum the parts make (`made`, from [`multipart_checksums`]; a COMPOSITE one may be
/// given without its `-N`).
pub(crate) fn check_complete(
    record: &UploadRecord,
    sent_type: Option<&ChecksumType>,
    sent: &StoredChecksums,
    made: &StoredChecksums,
) -> RequestResult<()> {
    let kind = record_checksum_type(record);
    if let Some(t) = sent_type
        && !kind
            .as_ref()
            .is_some_and(|k| k.as_str().eq_ignore_ascii_case(t.as_str()))
    {
        return Err(RequestError::InvalidRequest(format!(
            "The upload was created using the {} checksum mode. The complete request must use the same checksum mode.",
            kind.as_ref().map_or("null", |k| k.as_str())
        )));
    }
    for (name, header, _) in ALGOS {
        let Some(want) = value_of(sent, name) else {
            continue;
        };
        match value_of(made, name) {
            Some(have) if have == want || have.split_once('-').is_some_and(|(v, _)| v == want) => {}
            Some(_) => {
                return Err(RequestError::BadDigest(format!(
                    "The {name} you specified did not match the calculated checksum."
                )));
            }
            None => {
                return Err(RequestError::InvalidRequest(format!(
                    "{header} cannot be checked: the {name} checksums of this upload's parts are not all known"
                )));
            }
        }
    }
    Ok(())
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

    /// The checksums S3 computes of `data` for `algorithm`, whole.
    fn whole(algorithm: &str, data: &[u8]) -> StoredChecksums {
        let alg = ChecksumAlgorithm::from(algorithm.to_owned());
        let e = Expect::from_request(None, &HeaderMap::new(), Some(&alg)).unwrap();
        let mut h = e.hasher();
        h.update(data);
        let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(data).into();
        e.verify(&md5, &h.finalize(), None).unwrap()
    }

    fn record(algorithm: &str, kind: Option<&str>) -> UploadRecord {
        UploadRecord {
            bucket: "b".into(),
            key: "k".into(),
            meta: Default::default(),
            checksum_algorithm: Some(algorithm.into()),
            checksum_type: kind.map(str::to_owned),
            initiated_ns: 0,
            initiator: None,
        }
    }

    /// Parts of `data` cut at `cuts`, each with its own checksum as UploadPart computes it.
    fn parts(algorithm: &str, data: &[u8], cuts: &[usize]) -> Vec<PartInfo> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(data.len());
        bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| PartInfo {
                number: i as u32 + 1,
                etag: String::new(),
                size: (w[1] - w[0]) as u64,
                checksums: whole(algorithm, &data[w[0]..w[1]]),
                modified: std::time::SystemTime::UNIX_EPOCH,
            })
            .collect()
    }

    #[test]
    fn combined_crcs_are_the_crcs_of_the_whole_buffer() {
        // The CRC catalogue's check values of "123456789".
        let check = [
            ("CRC32", 0xcbf43926u64, 4),
            ("CRC32C", 0xe3069283, 4),
            ("CRC64NVME", 0xae8b14860a799888, 8),
        ];
        for (alg, value, width) in check {
            let expected = B64.encode(&value.to_be_bytes()[8 - width..]);
            for cuts in [&[][..], &[1], &[4], &[1, 2, 8], &[3, 6]] {
                let made = multipart_checksums(
                    &record(alg, Some("FULL_OBJECT")),
                    &parts(alg, b"123456789", cuts),
                );
                assert_eq!(value_of(&made, alg), Some(&expected), "{alg} {cuts:?}");
            }
        }
        // Larger, uneven parts against the whole buffer hashed in one go.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for alg in ["CRC32", "CRC32C", "CRC64NVME"] {
            let made = multipart_checksums(
                &record(alg, Some("FULL_OBJECT")),
                &parts(alg, &data, &[100_000, 100_001, 250_000]),
            );
            assert_eq!(made, whole(alg, &data), "{alg}");
            assert_eq!(
                checksum_type_of(&made).as_ref().map(|t| t.as_str()),
                Some(ChecksumType::FULL_OBJECT)
            );
        }
    }

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        let data = b"hello, multipart world";
        let ps = parts("SHA256", data, &[5, 12]);
        let made = multipart_checksums(&record("SHA256", None), &ps);
        let mut cat = Vec::new();
        for p in &ps {
            cat.extend(B64.decode(p.checksums.sha256.as_ref().unwrap()).unwrap());
        }
        let expected = format!("{}-3", whole("SHA256", &cat).sha256.unwrap());
        assert_eq!(made.sha256, Some(expected));
        assert_eq!(
            checksum_type_of(&made).as_ref().map(|t| t.as_str()),
            Some(ChecksumType::COMPOSITE)
        );
        // CRC32 defaults to COMPOSITE, CRC64NVME to FULL_OBJECT.
        let crc = multipart_checksums(&record("CRC32", None), &parts("CRC32", data, &[5]));
        assert!(crc.crc32.unwrap().ends_with("-2"));
        let nvme = multipart_checksums(&record("CRC64NVME", None), &parts("CRC64NVME", data, &[5]));
        assert_eq!(nvme, whole("CRC64NVME", data));
    }

    #[test]
    fn checksum_types_s3_refuses() {
        let alg = |a: &str| ChecksumAlgorithm::from(a.to_owned());
        let kind = |k: &str| ChecksumType::from(k.to_owned());
        let settle = |a: Option<&str>, k: Option<&str>| {
            upload_checksum_type(a.map(alg).as_ref(), k.map(kind).as_ref())
                .map(|t| t.map(|t| t.as_str().to_owned()))
        };
        assert_eq!(settle(None, None).unwrap(), None);
        assert_eq!(
            settle(Some("SHA1"), None).unwrap().as_deref(),
            Some("COMPOSITE")
        );
        assert_eq!(
            settle(Some("CRC64NVME"), None).unwrap().as_deref(),
            Some("FULL_OBJECT")
        );
        for a in ["CRC32", "CRC32C", "CRC64NVME"] {
            assert_eq!(
                settle(Some(a), Some("FULL_OBJECT")).unwrap().as_deref(),
                Some("FULL_OBJECT")
            );
        }
        for (a, k) in [
            ("SHA1", Some("FULL_OBJECT")),
            ("SHA256", Some("FULL_OBJECT")),
            ("CRC64NVME", Some("COMPOSITE")),
            ("CRC32", Some("WHOLE")),
        ] {
            assert!(
                matches!(settle(Some(a), k), Err(RequestError::InvalidRequest(_))),
                "{a} {k:?}"
            );
        }
        assert!(matches!(
            settle(None, Some("COMPOSITE")),
            Err(RequestError::InvalidRequest(_))
        ));
    }

    #[test]
    fn complete_checks_the_whole_object_checksum() {
        let data = b"123456789";
        let rec = record("CRC32", Some("FULL_OBJECT"));
        let made = multipart_checksums(&rec, &parts("CRC32", data, &[4]));
        let full = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
        assert!(check_complete(&rec, full.as_ref(), &made, &made).is_ok());
        assert!(check_complete(&rec, None, &StoredChecksums::default(), &made).is_ok());
        let wrong = whole("CRC32", b"12345678X");
        assert!(matches!(
            check_complete(&rec, full.as_ref(), &wrong, &made),
            Err(RequestError::BadDigest(_))
        ));
        let composite = Some(ChecksumType::from_static(ChecksumType::COMPOSITE));
        assert!(matches!(
            check_complete(&rec, composite.as_ref(), &made, &made),
            Err(RequestError::InvalidRequest(_))
        ));
        // A value of an algorithm the upload does not have cannot be vouched for.
        assert!(matches!(
            check_complete(&rec, None, &whole("CRC32C", data), &made),
            Err(RequestError::InvalidRequest(_))
        ));
        // A COMPOSITE value may be given with or without its part count.
        let rec = record("CRC32C", None);
        let made = multipart_checksums(&rec, &parts("CRC32C", data, &[4]));
        let value = made.crc32c.clone().unwrap();
        let bare = StoredChecksums {
            crc32c: value.split_once('-').map(|(v, _)| v.to_owned()),
            ..Default::default()
        };
        assert!(check_complete(&rec, composite.as_ref(), &made, &made).is_ok());
        assert!(check_complete(&rec, None, &bare, &made).is_ok());
        // An upload created without a checksum has no checksum mode to complete with.
        let mut none = record("CRC32", None);
        none.checksum_algorithm = None;
        assert!(matches!(
            check_complete(&none, full.as_ref(), &StoredChecksums::default(), &made),
            Err(RequestError::InvalidRequest(_))
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
