//! CreateMultipartUpload through CompleteMultipartUpload, with UploadPartCopy and the two
//! multipart listings, end to end over a real store in a temp folder.

use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request};

use super::*;
use crate::s3::copy::upload_part_copy;
use crate::s3::list::{list_multipart_uploads, list_parts};
use crate::store::keys::parse_key;
use crate::store::meta::ObjectMeta;
use crate::store::{Commit, Store};

const MIB: usize = 1024 * 1024;

fn gateway() -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_bucket("bkt").unwrap();
    (dir, Gateway::new(Arc::new(store), "us-east-1".into()))
}

fn req<T>(input: T) -> S3Request<T> {
    S3Request {
        input,
        method: http::Method::POST,
        uri: http::Uri::from_static("/"),
        headers: HeaderMap::new(),
        extensions: http::Extensions::new(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}

/// Distinct, position-dependent bytes, so misordered or misplaced copies show.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8 ^ seed)
        .collect()
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// The multipart ETag computed independently of the gateway's helper.
fn expected_etag(parts: &[&[u8]]) -> String {
    let mut cat = Vec::new();
    for p in parts {
        cat.extend_from_slice(&Md5::digest(p));
    }
    format!("{}-{}", hex::encode(Md5::digest(&cat)), parts.len())
}

fn body(bytes: Vec<u8>) -> Option<StreamingBlob> {
    // Several chunks, as a network body would arrive.
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(300_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Some(StreamingBlob::wrap(futures::stream::iter(chunks)))
}

async fn create(gw: &Gateway, key: &str) -> String {
    let input = CreateMultipartUploadInput {
        bucket: "bkt".into(),
        key: key.into(),
        content_type: Some("video/mp4".into()),
        metadata: Some(
            [("Origin".to_owned(), "camera".to_owned())]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    create_multipart_upload(gw, req(input))
        .await
        .unwrap()
        .output
        .upload_id
        .unwrap()
}

async fn upload(
    gw: &Gateway,
    key: &str,
    id: &str,
    n: i32,
    bytes: Vec<u8>,
) -> RequestResult<String> {
    let input = UploadPartInput {
        bucket: "bkt".into(),
        key: key.into(),
        upload_id: id.into(),
        part_number: n,
        content_length: Some(bytes.len() as i64),
        body: body(bytes),
        ..Default::default()
    };
    let out = upload_part(gw, req(input)).await?;
    Ok(out.output.e_tag.unwrap().value().to_owned())
}

async fn complete(
    gw: &Gateway,
    key: &str,
    id: &str,
    parts: &[(i32, &str)],
) -> RequestResult<CompleteMultipartUploadOutput> {
    let parts = parts
        .iter()
        .map(|(n, e)| CompletedPart {
            part_number: Some(*n),
            e_tag: Some(ETag::Strong((*e).to_owned())),
            ..Default::default()
        })
        .collect();
    let input = CompleteMultipartUploadInput {
        bucket: "bkt".into(),
        key: key.into(),
        upload_id: id.into(),
        multipart_upload: Some(CompletedMultipartUpload { parts: Some(parts) }),
        ..Default::default()
    };
    Ok(complete_multipart_upload(gw, req(input)).await?.output)
}

async fn parts_of(
    gw: &Gateway,
    key: &str,
    id: &str,
    max: Option<i32>,
    marker: Option<i32>,
) -> RequestResult<ListPartsOutput> {
    let input = ListPartsInput {
        bucket: "bkt".into(),
        key: key.into(),
        upload_id: id.into(),
        max_parts: max,
        part_number_marker: marker,
        ..Default::default()
    };
    Ok(list_parts(gw, req(input)).await?.output)
}

fn read_object(gw: &Gateway, key: &str) -> (Vec<u8>, ObjectMeta) {
    let mut obj = gw
        .store
        .open_object("bkt", &parse_key(key).unwrap())
        .unwrap();
    let mut buf = Vec::new();
    obj.file.read_to_end(&mut buf).unwrap();
    (buf, obj.meta)
}

fn put_object(gw: &Gateway, key: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut tmp = gw.store.create_temp("bkt").unwrap();
    tmp.file.write_all(bytes).unwrap();
    let meta = ObjectMeta {
        etag: md5_hex(bytes),
        ..Default::default()
    };
    gw.store
        .commit(tmp, "bkt", &parse_key(key).unwrap(), meta, Commit::Replace)
        .unwrap();
}

/// The S3 code a client would see.
fn code<T>(r: RequestResult<T>) -> S3ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.into_s3().code().clone(),
    }
}

#[tokio::test]
async fn three_parts_complete_into_their_concatenation() {
    let (_d, gw) = gateway();
    let id = create(&gw, "videos/cat.mp4").await;
    let (p1, p2, p3) = (pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(1024, 3));
    // Upload out of order: the part numbers, not arrival, decide the layout.
    let e3 = upload(&gw, "videos/cat.mp4", &id, 3, p3.clone())
        .await
        .unwrap();
    let e1 = upload(&gw, "videos/cat.mp4", &id, 1, p1.clone())
        .await
        .unwrap();
    let e2 = upload(&gw, "videos/cat.mp4", &id, 2, p2.clone())
        .await
        .unwrap();
    assert_eq!(e1, md5_hex(&p1));
    let out = complete(
        &gw,
        "videos/cat.mp4",
        &id,
        &[(1, &e1), (2, &format!("\"{e2}\"")), (3, &e3)],
    )
    .await
    .unwrap();
    let want = expected_etag(&[&p1, &p2, &p3]);
    assert_eq!(out.e_tag.unwrap().value(), want);
    assert_eq!(out.location.as_deref(), Some("/bkt/videos/cat.mp4"));
    assert_eq!(out.key.as_deref(), Some("videos/cat.mp4"));
    let (bytes, meta) = read_object(&gw, "videos/cat.mp4");
    assert_eq!(bytes.len(), p1.len() + p2.len() + p3.len());
    assert!(bytes == [p1, p2, p3].concat());
    assert_eq!(meta.etag, want);
    assert_eq!(meta.parts, Some(3));
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(meta.user.get("origin").map(String::as_str), Some("camera"));
    // The upload is gone once completed.
    assert_eq!(
        code(parts_of(&gw, "videos/cat.mp4", &id, None, None).await),
        S3ErrorCode::NoSuchUpload
    );
    assert!(gw.store.list_uploads("bkt").unwrap().is_empty());
}

fn assembly_ino(gw: &Gateway, id: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = gw
        .store
        .internal_dir()
        .join("multipart")
        .join(id)
        .join("object");
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn object_ino(gw: &Gateway, key: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(gw.store.root().join("bkt").join(key))
        .unwrap()
        .ino()
}

#[tokio::test]
async fn equal_parts_are_written_in_place_and_the_assembly_becomes_the_object() {
    let (_d, gw) = gateway();
    let id = create(&gw, "in-place").await;
    let parts: Vec<Vec<u8>> = (1..=4u8)
        .map(|i| pattern(if i == 4 { 3 * MIB + 7 } else { 5 * MIB }, i))
        .collect();
    // Arrival order is not part order: part 2 fixes the stride here.
    let mut etags = vec![String::new(); 4];
    for n in [2usize, 1, 4, 3] {
        etags[n - 1] = upload(&gw, "in-place", &id, n as i32, parts[n - 1].clone())
            .await
            .unwrap();
    }
    let staged = gw.store.list_parts(&id).unwrap();
    assert_eq!(
        staged.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(staged[3].size, 3 * MIB as u64 + 7);
    let ino = assembly_ino(&gw, &id).expect("parts were written into the assembly file");
    let listed: Vec<(i32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as i32 + 1, e.as_str()))
        .collect();
    let out = complete(&gw, "in-place", &id, &listed).await.unwrap();
    let want: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    assert_eq!(out.e_tag.unwrap().value(), expected_etag(&want));
    // Nothing was copied: the assembly file itself was renamed into the bucket.
    assert_eq!(object_ino(&gw, "in-place"), ino);
    assert!(read_object(&gw, "in-place").0 == parts.concat());
}

#[tokio::test]
async fn parts_that_do_not_line_up_with_their_slots_are_copied() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let (p1, p2, p3) = (
        pattern(5 * MIB, 1),
        pattern(5 * MIB, 2),
        pattern(5 * MIB, 3),
    );
    let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
    let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
    let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
    // A rejected completion changes nothing...
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &e1), (3, &e2)]).await),
        S3ErrorCode::InvalidPart
    );
    // ...and leaving out part 2 moves part 3 to where part 2's slot is.
    complete(&gw, "k", &id, &[(1, &e1), (3, &e3)])
        .await
        .unwrap();
    assert!(read_object(&gw, "k").0 == [p1, p3].concat());
}

#[tokio::test]
async fn reuploaded_and_oversized_parts_go_to_their_own_files() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let (p1, p2) = (pattern(5 * MIB, 1), pattern(5 * MIB, 2));
    let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
    let _ = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
    // A second upload of part 2 must not touch the first one's bytes until it has
    // succeeded; one larger than the stride cannot fit in a slot at all.
    let p2b = pattern(6 * MIB, 9);
    let e2b = upload(&gw, "k", &id, 2, p2b.clone()).await.unwrap();
    let p3 = pattern(5 * MIB + 1, 3);
    let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
    complete(&gw, "k", &id, &[(1, &e1), (2, &e2b), (3, &e3)])
        .await
        .unwrap();
    assert!(read_object(&gw, "k").0 == [p1, p2b, p3].concat());
}

#[tokio::test]
async fn a_failed_in_place_part_leaves_no_record_and_its_retry_succeeds() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let p1 = pattern(5 * MIB, 1);
    let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
    // The body stops short of its Content-Length.
    let p2 = pattern(5 * MIB, 2);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::copy_from_slice(&p2[..MIB])),
        Err(std::io::Error::other("connection reset")),
    ];
    let input = UploadPartInput {
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: id.clone(),
        part_number: 2,
        content_length: Some(p2.len() as i64),
        body: Some(StreamingBlob::wrap(futures::stream::iter(chunks))),
        ..Default::default()
    };
    assert!(upload_part(&gw, req(input)).await.is_err());
    let staged = gw.store.list_parts(&id).unwrap();
    assert_eq!(staged.iter().map(|p| p.number).collect::<Vec<_>>(), [1]);
    let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
    complete(&gw, "k", &id, &[(1, &e1), (2, &e2)])
        .await
        .unwrap();
    assert!(read_object(&gw, "k").0 == [p1, p2].concat());
}

#[tokio::test]
async fn small_middle_part_is_rejected_and_the_upload_survives() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let (p1, small, p3) = (pattern(5 * MIB, 1), pattern(1024, 2), pattern(10, 3));
    let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
    let e2 = upload(&gw, "k", &id, 2, small).await.unwrap();
    let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
    let err = complete(&gw, "k", &id, &[(1, &e1), (2, &e2), (3, &e3)]).await;
    assert_eq!(code(err), S3ErrorCode::EntityTooSmall);
    assert!(
        gw.store
            .open_object("bkt", &parse_key("k").unwrap())
            .is_err(),
        "nothing may be written"
    );
    assert_eq!(
        parts_of(&gw, "k", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap()
            .len(),
        3
    );
    // Fix the part (re-upload replaces it) and complete.
    let p2 = pattern(5 * MIB, 4);
    let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
    let out = complete(&gw, "k", &id, &[(1, &e1), (2, &e2), (3, &e3)])
        .await
        .unwrap();
    assert_eq!(out.e_tag.unwrap().value(), expected_etag(&[&p1, &p2, &p3]));
    assert!(read_object(&gw, "k").0 == [p1, p2, p3].concat());
}

#[tokio::test]
async fn wrong_or_missing_parts_are_invalid_part() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let e1 = upload(&gw, "k", &id, 1, b"one".to_vec()).await.unwrap();
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &md5_hex(b"other"))]).await),
        S3ErrorCode::InvalidPart
    );
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &e1), (2, &e1)]).await),
        S3ErrorCode::InvalidPart
    );
    assert_eq!(
        code(complete(&gw, "k", &id, &[(0, &e1)]).await),
        S3ErrorCode::InvalidPart
    );
    assert_eq!(
        code(complete(&gw, "k", &id, &[]).await),
        S3ErrorCode::MalformedXML
    );
    // Still intact and completable; unlisted parts would simply be dropped.
    let out = complete(&gw, "k", &id, &[(1, &e1)]).await.unwrap();
    assert_eq!(out.e_tag.unwrap().value(), expected_etag(&[b"one"]));
    assert_eq!(read_object(&gw, "k").0, b"one");
}

#[tokio::test]
async fn parts_out_of_order_are_invalid_part_order() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let e1 = upload(&gw, "k", &id, 1, pattern(5 * MIB, 1)).await.unwrap();
    let e2 = upload(&gw, "k", &id, 2, b"two".to_vec()).await.unwrap();
    assert_eq!(
        code(complete(&gw, "k", &id, &[(2, &e2), (1, &e1)]).await),
        S3ErrorCode::InvalidPartOrder
    );
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &e1), (1, &e1)]).await),
        S3ErrorCode::InvalidPartOrder
    );
    assert_eq!(
        parts_of(&gw, "k", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn reuploading_a_part_replaces_it() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let old = upload(&gw, "k", &id, 1, b"aaa".to_vec()).await.unwrap();
    let new = upload(&gw, "k", &id, 1, b"bbbb".to_vec()).await.unwrap();
    let parts = parts_of(&gw, "k", &id, None, None)
        .await
        .unwrap()
        .parts
        .unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].size, Some(4));
    assert_eq!(parts[0].e_tag.as_ref().unwrap().value(), md5_hex(b"bbbb"));
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &old)]).await),
        S3ErrorCode::InvalidPart
    );
    complete(&gw, "k", &id, &[(1, &new)]).await.unwrap();
    assert_eq!(read_object(&gw, "k").0, b"bbbb");
}

#[tokio::test]
async fn aborted_and_unknown_uploads_are_no_such_upload() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    upload(&gw, "k", &id, 1, b"x".to_vec()).await.unwrap();
    // An upload belongs to its bucket and key.
    assert_eq!(
        code(upload(&gw, "other", &id, 1, b"x".to_vec()).await),
        S3ErrorCode::NoSuchUpload
    );
    assert_eq!(
        code(upload(&gw, "k", "../../../etc", 1, b"x".to_vec()).await),
        S3ErrorCode::NoSuchUpload
    );
    let abort = |id: String| {
        let gw = gw.clone();
        async move {
            let input = AbortMultipartUploadInput {
                bucket: "bkt".into(),
                key: "k".into(),
                upload_id: id,
                ..Default::default()
            };
            abort_multipart_upload(&gw, req(input)).await
        }
    };
    abort(id.clone()).await.unwrap();
    assert_eq!(code(abort(id.clone()).await), S3ErrorCode::NoSuchUpload);
    assert_eq!(
        code(upload(&gw, "k", &id, 2, b"y".to_vec()).await),
        S3ErrorCode::NoSuchUpload
    );
    assert_eq!(
        code(parts_of(&gw, "k", &id, None, None).await),
        S3ErrorCode::NoSuchUpload
    );
    assert_eq!(
        code(complete(&gw, "k", &id, &[(1, &md5_hex(b"x"))]).await),
        S3ErrorCode::NoSuchUpload
    );
    assert!(gw.store.list_uploads("bkt").unwrap().is_empty());
    let input = CreateMultipartUploadInput {
        bucket: "missing".into(),
        key: "k".into(),
        ..Default::default()
    };
    assert_eq!(
        code(create_multipart_upload(&gw, req(input)).await),
        S3ErrorCode::NoSuchBucket
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_commit_once() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    let e1 = upload(&gw, "k", &id, 1, pattern(5 * MIB, 1)).await.unwrap();
    let e2 = upload(&gw, "k", &id, 2, b"tail".to_vec()).await.unwrap();
    let parts = [(1, e1.as_str()), (2, e2.as_str())];
    let (a, b) = tokio::join!(
        complete(&gw, "k", &id, &parts),
        complete(&gw, "k", &id, &parts)
    );
    // One assembles the object; the other finds the upload gone and answers what it became,
    // as a retry after a lost answer would get.
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.e_tag, b.e_tag);
    assert_eq!(a.checksum_crc32, b.checksum_crc32);
    assert_eq!(read_object(&gw, "k").0.len(), 5 * MIB + 4);
    assert!(gw.store.list_uploads("bkt").unwrap().is_empty());
}

#[tokio::test]
async fn part_numbers_outside_1_to_10000_are_invalid_argument() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    for n in [0, -1, 10_001] {
        assert_eq!(
            code(upload(&gw, "k", &id, n, b"x".to_vec()).await),
            S3ErrorCode::InvalidArgument
        );
    }
    upload(&gw, "k", &id, 10_000, b"x".to_vec()).await.unwrap();
}

#[tokio::test]
async fn list_parts_pages_with_markers() {
    let (_d, gw) = gateway();
    let id = create(&gw, "k").await;
    for n in [5, 1, 3, 2, 4] {
        upload(&gw, "k", &id, n, vec![n as u8; n as usize])
            .await
            .unwrap();
    }
    let numbers = |o: &ListPartsOutput| {
        o.parts
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.part_number.unwrap())
            .collect::<Vec<_>>()
    };
    let p = parts_of(&gw, "k", &id, Some(2), None).await.unwrap();
    assert_eq!(numbers(&p), vec![1, 2]);
    assert_eq!(
        (p.is_truncated, p.next_part_number_marker),
        (Some(true), Some(2))
    );
    assert_eq!(p.parts.as_ref().unwrap()[1].size, Some(2));
    let p = parts_of(&gw, "k", &id, Some(2), Some(2)).await.unwrap();
    assert_eq!(numbers(&p), vec![3, 4]);
    assert_eq!(
        (p.is_truncated, p.next_part_number_marker),
        (Some(true), Some(4))
    );
    let p = parts_of(&gw, "k", &id, Some(2), Some(4)).await.unwrap();
    assert_eq!(numbers(&p), vec![5]);
    assert_eq!(
        (p.is_truncated, p.next_part_number_marker),
        (Some(false), None)
    );
    let p = parts_of(&gw, "k", &id, None, None).await.unwrap();
    assert_eq!(numbers(&p), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        p.storage_class.as_ref().map(|s| s.as_str()),
        Some("STANDARD")
    );
}

#[tokio::test]
async fn upload_part_copy_takes_ranges_of_an_object() {
    let (_d, gw) = gateway();
    let src = pattern(6 * MIB + 123, 9);
    put_object(&gw, "src.bin", &src);
    let id = create(&gw, "dst.bin").await;
    let copy = |n: i32, range: Option<&str>, if_match: Option<&str>| {
        let input = UploadPartCopyInput {
            bucket: "bkt".into(),
            key: "dst.bin".into(),
            upload_id: id.clone(),
            part_number: n,
            copy_source: CopySource::Bucket {
                bucket: "bkt".into(),
                key: "src.bin".into(),
                version_id: None,
            },
            copy_source_range: range.map(str::to_owned),
            copy_source_if_match: if_match.map(|e| ETagCondition::ETag(ETag::Strong(e.to_owned()))),
            copy_source_if_modified_since: None,
            copy_source_if_none_match: None,
            copy_source_if_unmodified_since: None,
            copy_source_sse_customer_algorithm: None,
            copy_source_sse_customer_key: None,
            copy_source_sse_customer_key_md5: None,
            expected_bucket_owner: None,
            expected_source_bucket_owner: None,
            request_payer: None,
            sse_customer_algorithm: None,
            sse_customer_key: None,
            sse_customer_key_md5: None,
        };
        let gw = gw.clone();
        async move {
            upload_part_copy(&gw, req(input))
                .await
                .map(|r| r.output.copy_part_result.unwrap())
        }
    };
    let split = 5 * MIB;
    let r1 = copy(
        1,
        Some(&format!("bytes=0-{}", split - 1)),
        Some(&md5_hex(&src)),
    )
    .await
    .unwrap();
    let r2 = copy(2, Some(&format!("bytes={}-{}", split, src.len() - 1)), None)
        .await
        .unwrap();
    let (e1, e2) = (
        r1.e_tag.unwrap().value().to_owned(),
        r2.e_tag.unwrap().value().to_owned(),
    );
    assert_eq!(e1, md5_hex(&src[..split]));
    assert_eq!(e2, md5_hex(&src[split..]));
    assert!(r1.last_modified.is_some());
    // Ranges past the end, malformed ranges and failed conditions change nothing.
    let past = format!("bytes=0-{}", src.len());
    assert_eq!(
        code(copy(3, Some(&past), None).await),
        S3ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(copy(3, Some("bytes=10-"), None).await),
        S3ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(copy(3, Some("bytes=9-1"), None).await),
        S3ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(copy(3, None, Some(&md5_hex(b"nope"))).await),
        S3ErrorCode::PreconditionFailed
    );
    assert_eq!(
        parts_of(&gw, "dst.bin", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap()
            .len(),
        2
    );
    let out = complete(&gw, "dst.bin", &id, &[(1, &e1), (2, &e2)])
        .await
        .unwrap();
    assert_eq!(
        out.e_tag.unwrap().value(),
        expected_etag(&[&src[..split], &src[split..]])
    );
    assert!(read_object(&gw, "dst.bin").0 == src);
}

#[tokio::test]
async fn if_none_match_star_refuses_an_existing_key_and_keeps_the_upload() {
    let (_d, gw) = gateway();
    put_object(&gw, "k", b"existing");
    let id = create(&gw, "k").await;
    let e1 = upload(&gw, "k", &id, 1, b"new".to_vec()).await.unwrap();
    let parts = vec![CompletedPart {
        part_number: Some(1),
        e_tag: Some(ETag::Strong(e1)),
        ..Default::default()
    }];
    let input = CompleteMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: id.clone(),
        multipart_upload: Some(CompletedMultipartUpload { parts: Some(parts) }),
        if_none_match: Some(ETagCondition::Any),
        ..Default::default()
    };
    assert_eq!(
        code(complete_multipart_upload(&gw, req(input)).await),
        S3ErrorCode::PreconditionFailed
    );
    assert_eq!(read_object(&gw, "k").0, b"existing");
    assert_eq!(
        parts_of(&gw, "k", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn checksum_algorithm_gives_part_and_composite_checksums() {
    let (_d, gw) = gateway();
    let input = CreateMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        checksum_algorithm: Some(ChecksumAlgorithm::from_static(ChecksumAlgorithm::CRC32)),
        ..Default::default()
    };
    let out = create_multipart_upload(&gw, req(input))
        .await
        .unwrap()
        .output;
    assert_eq!(
        out.checksum_algorithm.as_ref().map(|a| a.as_str()),
        Some("CRC32")
    );
    let id = out.upload_id.unwrap();
    let e1 = upload(&gw, "k", &id, 1, b"hello".to_vec()).await.unwrap();
    let parts = parts_of(&gw, "k", &id, None, None)
        .await
        .unwrap()
        .parts
        .unwrap();
    // CRC32 of "hello" is 0x3610a686.
    let crc = B64.encode(0x3610a686u32.to_be_bytes());
    assert_eq!(parts[0].checksum_crc32.as_deref(), Some(crc.as_str()));
    // A checksum in the part list that contradicts the stored one is an invalid part.
    let listed = |sum: &str| CompletedPart {
        part_number: Some(1),
        e_tag: Some(ETag::Strong(e1.clone())),
        checksum_crc32: Some(sum.to_owned()),
        ..Default::default()
    };
    let input = |sum: &str| CompleteMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: id.clone(),
        multipart_upload: Some(CompletedMultipartUpload {
            parts: Some(vec![listed(sum)]),
        }),
        ..Default::default()
    };
    let wrong = B64.encode(1u32.to_be_bytes());
    assert_eq!(
        code(complete_multipart_upload(&gw, req(input(&wrong))).await),
        S3ErrorCode::InvalidPart
    );
    let out = complete_multipart_upload(&gw, req(input(&crc)))
        .await
        .unwrap()
        .output;
    assert!(
        out.checksum_crc32
            .as_deref()
            .is_some_and(|c| c.ends_with("-1")),
        "{:?}",
        out.checksum_crc32
    );
    assert_eq!(read_object(&gw, "k").1.checksums.crc32, out.checksum_crc32);
}

#[tokio::test]
async fn full_object_crc_is_combined_checked_and_kept() {
    let (_d, gw) = gateway();
    let create_input = |kind: &str, algorithm: &str| CreateMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        checksum_algorithm: Some(ChecksumAlgorithm::from(algorithm.to_owned())),
        checksum_type: Some(ChecksumType::from(kind.to_owned())),
        ..Default::default()
    };
    // A hash cannot be combined from its parts: S3 refuses FULL_OBJECT for it.
    assert_eq!(
        code(create_multipart_upload(&gw, req(create_input("FULL_OBJECT", "SHA256"))).await),
        S3ErrorCode::InvalidRequest
    );
    let out = create_multipart_upload(&gw, req(create_input("FULL_OBJECT", "CRC32C")))
        .await
        .unwrap()
        .output;
    assert_eq!(
        out.checksum_type.as_ref().map(|t| t.as_str()),
        Some("FULL_OBJECT")
    );
    let id = out.upload_id.unwrap();
    let (a, b) = (pattern(5 * MIB + 7, 1), pattern(1234, 2));
    let e1 = upload(&gw, "k", &id, 1, a.clone()).await.unwrap();
    let e2 = upload(&gw, "k", &id, 2, b.clone()).await.unwrap();
    let listed = parts_of(&gw, "k", &id, None, None).await.unwrap();
    assert_eq!(
        listed.checksum_type.as_ref().map(|t| t.as_str()),
        Some("FULL_OBJECT")
    );
    let whole = [a, b].concat();
    let crc = B64
        .encode(&crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &whole).to_be_bytes()[4..]);
    let input = |sum: &str| CompleteMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: id.clone(),
        multipart_upload: Some(CompletedMultipartUpload {
            parts: Some(vec![
                CompletedPart {
                    part_number: Some(1),
                    e_tag: Some(ETag::Strong(e1.clone())),
                    ..Default::default()
                },
                CompletedPart {
                    part_number: Some(2),
                    e_tag: Some(ETag::Strong(e2.clone())),
                    ..Default::default()
                },
            ]),
        }),
        checksum_crc32c: Some(sum.to_owned()),
        checksum_type: Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
        ..Default::default()
    };
    let wrong = B64.encode(7u32.to_be_bytes());
    assert_eq!(
        code(complete_multipart_upload(&gw, req(input(&wrong))).await),
        S3ErrorCode::BadDigest
    );
    // The refused completion left the upload as it was.
    let out = complete_multipart_upload(&gw, req(input(&crc)))
        .await
        .unwrap()
        .output;
    assert_eq!(out.checksum_crc32c.as_deref(), Some(crc.as_str()));
    assert_eq!(
        out.checksum_type.as_ref().map(|t| t.as_str()),
        Some("FULL_OBJECT")
    );
    let (bytes, meta) = read_object(&gw, "k");
    assert_eq!(bytes, whole);
    assert_eq!(meta.checksums.crc32c.as_deref(), Some(crc.as_str()));
}

#[tokio::test]
async fn list_multipart_uploads_groups_and_pages() {
    let (_d, gw) = gateway();
    for key in ["a/1", "a/2", "c"] {
        create(&gw, key).await;
    }
    let b_first = create(&gw, "b").await;
    let b_second = create(&gw, "b").await;
    let list = |key_marker: Option<&str>, id_marker: Option<&str>, max: Option<i32>| {
        let input = ListMultipartUploadsInput {
            bucket: "bkt".into(),
            delimiter: Some("/".into()),
            key_marker: key_marker.map(str::to_owned),
            upload_id_marker: id_marker.map(str::to_owned),
            max_uploads: max,
            ..Default::default()
        };
        let gw = gw.clone();
        async move {
            list_multipart_uploads(&gw, req(input))
                .await
                .unwrap()
                .output
        }
    };
    let ids = |o: &ListMultipartUploadsOutput| {
        o.uploads
            .as_ref()
            .unwrap()
            .iter()
            .map(|u| (u.key.clone().unwrap(), u.upload_id.clone().unwrap()))
            .collect::<Vec<_>>()
    };
    let prefixes = |o: &ListMultipartUploadsOutput| {
        o.common_prefixes
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.prefix.clone().unwrap())
            .collect::<Vec<_>>()
    };

    let all = list(None, None, None).await;
    assert_eq!(prefixes(&all), vec!["a/"]);
    assert_eq!(
        ids(&all)
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        vec!["b", "b", "c"]
    );
    assert_eq!(ids(&all)[0].1, b_first, "same key: oldest first");
    assert_eq!(all.is_truncated, Some(false));

    let p1 = list(None, None, Some(2)).await;
    assert_eq!(prefixes(&p1), vec!["a/"]);
    assert_eq!(ids(&p1), vec![("b".to_owned(), b_first.clone())]);
    assert_eq!(p1.is_truncated, Some(true));
    assert_eq!(
        (
            p1.next_key_marker.as_deref(),
            p1.next_upload_id_marker.as_deref()
        ),
        (Some("b"), Some(b_first.as_str()))
    );
    let p2 = list(Some("b"), Some(&b_first), Some(2)).await;
    assert!(prefixes(&p2).is_empty());
    assert_eq!(
        ids(&p2).iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>(),
        vec![b_second.as_str(), &ids(&all)[2].1]
    );
    assert_eq!(p2.is_truncated, Some(false));
    // A page ending on a prefix continues after it.
    let p = list(None, None, Some(1)).await;
    assert_eq!(
        (prefixes(&p), p.next_key_marker.as_deref()),
        (vec!["a/".to_owned()], Some("a/"))
    );
    let p = list(Some("a/"), None, Some(1)).await;
    assert_eq!(ids(&p), vec![("b".to_owned(), b_first)]);
}
