//! The real `Front` served over in-memory streams with the peer facts a tailnet listener
//! attaches: the node reaches handlers (ping reports it), the request still needs SigV4, and
//! `--tailscale-allow` refuses unlisted nodes with S3's 403. Needs no tailnet and no network.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use hyper_util::server::graceful::GracefulShutdown;
use nebula_gateway::front::Front;
use nebula_gateway::peer::{AllowList, PeerInfo, TailnetPeer};
use nebula_gateway::{access, api, build_front, s3, server, store};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACCESS_KEY: &str = "TAILNETTESTACCESSKEY";
const SECRET_KEY: &str = "tailnet/test+Secret0123456789abcdefghij";
const REGION: &str = "us-east-1";

fn front(data: &std::path::Path, allow: &str) -> Front {
    let store = Arc::new(store::Store::open(data).expect("data folder"));
    let gateway = s3::Gateway::new(store.clone(), REGION.to_owned());
    let keys = access::KeyStore::in_folder(store.internal_dir());
    let access = Arc::new(access::Access::new(ACCESS_KEY, SECRET_KEY, keys, []));
    let api = api::ApiState {
        started: std::time::Instant::now(),
        store,
        media: None,
        catalog: None,
        jobs: None,
        access,
    };
    build_front(gateway, api, None).with_tailnet_allow(AllowList::parse(allow).expect("allow-list"))
}

fn tailnet_peer(hostname: &str, tags: &[&str]) -> PeerInfo {
    PeerInfo {
        addr: Some("100.101.102.103:40000".parse().unwrap()),
        tailnet: Some(TailnetPeer {
            hostname: hostname.to_owned(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }),
        tls: false,
    }
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Header-signed (SigV4) GET of `path` with no query and an empty body.
fn signed_get(path: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let amz_date = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap();
    let day = &amz_date[..8];
    let payload = hex_sha256(b"");
    let host = "nebula.example.ts.net:9000";
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "GET\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed}\n{payload}"
    );
    let scope = format!("{day}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), day);
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex::encode(hmac(&key, &to_sign));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {amz_date}\r\nx-amz-content-sha256: {payload}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed}, Signature={signature}\r\n\
         Connection: close\r\n\r\n"
    )
}

fn anonymous_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: nebula:9000\r\nConnection: close\r\n\r\n")
}

/// Sends one raw HTTP/1.1 request over an in-memory stream served by `front` as if it came
/// from `peer`; returns the status and the body (with the headers, for simplicity).
async fn exchange(front: &Front, peer: PeerInfo, request: String) -> (u16, String) {
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let graceful = GracefulShutdown::new();
    server::serve_stream(server_side, peer, front.clone(), &graceful);
    client.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.read_to_end(&mut out),
    )
    .await
    .expect("response within 20 s")
    .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn tailnet_node_reaches_handlers_and_still_needs_sigv4() {
    let dir = tempfile::tempdir().unwrap();
    let front = front(dir.path(), "");

    let (status, text) = exchange(
        &front,
        tailnet_peer("laptop", &["tag:media"]),
        anonymous_get("/_nebula/v1/ping"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#""tailnet_node":{"hostname":"laptop","tags":["tag:media"]}"#),
        "ping must report the caller's node: {text}"
    );

    // Not a tailnet peer: no node in the answer.
    let plain = PeerInfo::from_addr("127.0.0.1:5000".parse().unwrap());
    let (status, text) = exchange(&front, plain, anonymous_get("/_nebula/v1/ping")).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("tailnet_node"), "{text}");

    // The tailnet is not a credential: an unsigned ListBuckets is refused...
    let (status, text) = exchange(&front, tailnet_peer("laptop", &[]), anonymous_get("/")).await;
    assert_eq!(status, 403, "{text}");
    // ...and a signed one works.
    let (status, text) = exchange(&front, tailnet_peer("laptop", &[]), signed_get("/")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ListAllMyBucketsResult"), "{text}");
}

#[tokio::test]
async fn allow_list_refuses_unlisted_nodes_with_s3_403() {
    let dir = tempfile::tempdir().unwrap();
    let front = front(dir.path(), "laptop,tag:media");

    // Listed by hostname, and by tag: signed requests go through.
    for peer in [
        tailnet_peer("laptop", &[]),
        tailnet_peer("tv", &["tag:other", "tag:media"]),
    ] {
        let (status, text) = exchange(&front, peer, signed_get("/")).await;
        assert_eq!(status, 200, "{text}");
    }

    // Not listed: refused even with a valid signature, as S3 XML.
    for peer in [
        tailnet_peer("tv", &["tag:other"]),
        tailnet_peer("phone", &[]),
    ] {
        let (status, text) = exchange(&front, peer, signed_get("/")).await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
        assert!(text.contains("--tailscale-allow"), "{text}");
        let (status, _) = exchange(
            &front,
            tailnet_peer("phone", &[]),
            anonymous_get("/_nebula/v1/ping"),
        )
        .await;
        assert_eq!(status, 403);
    }

    // Connections that are not from the tailnet (loopback, LAN) are not the allow-list's.
    let plain = PeerInfo::from_addr("127.0.0.1:5000".parse().unwrap());
    let (status, text) = exchange(&front, plain, signed_get("/")).await;
    assert_eq!(status, 200, "{text}");
}
