//! Unit tests against a SQLite catalog in a temp folder (PostgreSQL is covered by
//! `conformance-tests/test_catalog.py`, which runs everything on both engines).

use std::sync::Arc;

use super::model::NewObject;
use super::*;
use crate::store::Store;
use crate::store::meta::ObjectMeta;

async fn catalog(dir: &Path) -> Catalog {
    let c = Catalog::connect(None, dir).unwrap();
    c.migrate().await.unwrap();
    c
}

fn meta(etag: &str, size: u64, content_type: &str) -> ObjectMeta {
    ObjectMeta {
        etag: etag.into(),
        size,
        mtime_ns: 1_700_000_000_123_456_789,
        content_type: Some(content_type.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn migrate_is_idempotent_and_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path()).await;
    c.migrate().await.unwrap();
    assert!(dir.path().join(SQLITE_FILE).exists());
    assert_eq!(
        c.health().await,
        Health {
            engine: "sqlite",
            ok: true,
            error: None
        }
    );

    let Db::Sqlite(pool) = &c.db else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    let err = c.migrate().await.unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::SchemaTooNew {
                found: 99990101000000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("newer than this nebula-gateway knows"),
        "{err}"
    );
}

#[tokio::test]
async fn rows_follow_writes_and_keep_media_only_for_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path()).await;
    c.upsert(NewObject::from_meta(
        "bkt",
        "v/clip.mp4",
        &meta("e1", 10, "video/mp4"),
    ))
    .await
    .unwrap();
    c.upsert(NewObject::from_meta(
        "bkt",
        "notes.txt",
        &meta("e2", 3, "text/plain"),
    ))
    .await
    .unwrap();

    let o = c.get_object("bkt", "v/clip.mp4").await.unwrap().unwrap();
    assert_eq!(
        (o.size, o.etag.as_str(), o.probe_status),
        (10, "e1", ProbeStatus::Pending)
    );
    assert_eq!(o.modified_at.unix_timestamp(), 1_700_000_000);
    assert_eq!(
        c.get_object("bkt", "notes.txt")
            .await
            .unwrap()
            .unwrap()
            .probe_status,
        ProbeStatus::None
    );
    assert_eq!(
        c.next_pending_probe().await.unwrap(),
        Some(("bkt".into(), "v/clip.mp4".into(), "e1".into()))
    );

    let pending = c.get_object("bkt", "v/clip.mp4").await.unwrap().unwrap();
    assert_eq!(pending.poster(), None, "no poster before the probe");
    let media = MediaMeta {
        duration: Some(2.0),
        width: 320,
        height: 240,
        ..Default::default()
    };
    c.set_probe_result("bkt", "v/clip.mp4", "e1", Ok(media.clone()))
        .await
        .unwrap();
    // A probed video lists its poster, taken 10 % in.
    let probed = c.get_object("bkt", "v/clip.mp4").await.unwrap().unwrap();
    assert_eq!(probed.poster(), Some(PosterMeta { at_secs: 0.2 }));
    let v = Variant {
        path: "/r/480.mp4".into(),
        size: 5,
        encoder: "x264enc".into(),
    };
    assert!(c.set_variant("bkt", "v/clip.mp4", "480", &v).await.unwrap());
    assert!(!c.set_variant("bkt", "missing", "480", &v).await.unwrap());

    // Same bytes again (e.g. a metadata-only copy): media and renditions stay.
    c.upsert(NewObject::from_meta(
        "bkt",
        "v/clip.mp4",
        &meta("e1", 10, "video/mp4"),
    ))
    .await
    .unwrap();
    let o = c.get_object("bkt", "v/clip.mp4").await.unwrap().unwrap();
    assert_eq!(o.media, Some(media));
    assert_eq!(o.variants.get("480"), Some(&v));
    assert_eq!(o.probe_status, ProbeStatus::Ok);
    assert_eq!(c.next_pending_probe().await.unwrap(), None);

    // New bytes: both are dropped and the object is probed again.
    c.upsert(NewObject::from_meta(
        "bkt",
        "v/clip.mp4",
        &meta("e3", 11, "video/mp4"),
    ))
    .await
    .unwrap();
    let o = c.get_object("bkt", "v/clip.mp4").await.unwrap().unwrap();
    assert_eq!(
        (o.media, o.variants.len(), o.probe_status),
        (None, 0, ProbeStatus::Pending)
    );
    // A result for the old bytes is not recorded.
    c.set_probe_result("bkt", "v/clip.mp4", "e1", Err("stale".into()))
        .await
        .unwrap();
    assert_eq!(
        c.get_object("bkt", "v/clip.mp4")
            .await
            .unwrap()
            .unwrap()
            .probe_status,
        ProbeStatus::Pending
    );

    c.delete("bkt", "v/clip.mp4").await.unwrap();
    assert_eq!(c.get_object("bkt", "v/clip.mp4").await.unwrap(), None);
}

#[tokio::test]
async fn list_pages_by_prefix_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path()).await;
    let keys = ["a/1", "a/2", "a/3", "a0", "b/1", "a/\u{e9}"];
    let rows: Vec<NewObject> = keys
        .iter()
        .map(|k| NewObject::from_meta("bkt", k, &meta("e", 1, "text/plain")))
        .collect();
    c.upsert_batch(&rows).await.unwrap();
    c.upsert(NewObject::from_meta(
        "other",
        "a/9",
        &meta("e", 1, "text/plain"),
    ))
    .await
    .unwrap();

    let p1 = c.list_objects("bkt", "a/", 2, None).await.unwrap();
    assert_eq!(
        p1.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["a/1", "a/2"]
    );
    let p2 = c
        .list_objects("bkt", "a/", 2, p1.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(
        p2.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["a/3", "a/\u{e9}"]
    );
    assert_eq!(p2.next_cursor, None);
    let all = c.list_objects("bkt", "", 100, None).await.unwrap();
    assert_eq!(all.objects.len(), keys.len());
}

#[tokio::test]
async fn reconcile_follows_out_of_band_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let c = catalog(store.internal_dir()).await;
    let b = dir.path().join("media-bucket");
    std::fs::create_dir_all(b.join("sub")).unwrap();
    std::fs::write(b.join("one.txt"), b"hello").unwrap();
    std::fs::write(b.join("sub/two.mkv"), b"not really").unwrap();
    std::fs::create_dir_all(b.join(".nebula-tmp")).unwrap();
    std::fs::write(b.join(".nebula-tmp/partial"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", b.join("link")).unwrap();

    let r = c.reconcile(store.clone()).await.unwrap();
    assert_eq!(
        (r.buckets, r.added, r.updated, r.removed, r.unchanged),
        (1, 2, 0, 0, 0)
    );
    let one = c
        .get_object("media-bucket", "one.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (one.size, one.etag.as_str()),
        (5, "5d41402abc4b2a76b9719d911017c592")
    );
    assert_eq!(
        c.get_object("media-bucket", "sub/two.mkv")
            .await
            .unwrap()
            .unwrap()
            .probe_status,
        ProbeStatus::Pending
    );

    let r = c.reconcile(store.clone()).await.unwrap();
    assert_eq!((r.added, r.updated, r.removed, r.unchanged), (0, 0, 0, 2));

    std::fs::write(b.join("one.txt"), b"hello, world").unwrap();
    std::fs::remove_file(b.join("sub/two.mkv")).unwrap();
    let r = c.reconcile(store.clone()).await.unwrap();
    assert_eq!((r.added, r.updated, r.removed, r.unchanged), (0, 1, 1, 0));
    assert_eq!(
        c.get_object("media-bucket", "one.txt")
            .await
            .unwrap()
            .unwrap()
            .size,
        12
    );

    std::fs::remove_dir_all(&b).unwrap();
    let r = c.reconcile(store.clone()).await.unwrap();
    assert_eq!((r.buckets, r.removed), (0, 1));
}

/// The start-up scan lists the buckets, then finds the catalog's buckets it did not list: one
/// created between the two (a client's first upload) must keep its rows.
#[tokio::test]
async fn reconcile_keeps_a_bucket_created_after_its_listing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let c = catalog(store.internal_dir()).await;
    let b = dir.path().join("late");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("new.mp4"), b"just uploaded").unwrap();
    c.upsert_batch(&[NewObject::from_meta(
        "late",
        "new.mp4",
        &meta("e", 13, "video/mp4"),
    )])
    .await
    .unwrap();
    c.upsert_batch(&[NewObject::from_meta(
        "late",
        "gone.mp4",
        &meta("f", 3, "video/mp4"),
    )])
    .await
    .unwrap();

    // As if the listing had been taken before "late" was created.
    let mut r = ScanReport::default();
    c.reconcile_unlisted(
        &store,
        &std::collections::HashSet::new(),
        super::scan::Busy::Wait,
        &mut r,
    )
    .await
    .unwrap();
    assert_eq!(r.removed, 1);
    assert!(c.get_object("late", "new.mp4").await.unwrap().is_some());
    assert!(c.get_object("late", "gone.mp4").await.unwrap().is_none());
}

#[test]
fn urls() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Catalog::connect(Some("mysql://x/y"), dir.path()),
        Err(CatalogError::BadUrl(_))
    ));
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
}

#[tokio::test]
async fn concurrent_changes_are_committed_together_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path()).await;
    // Many writers at once, several of them on the same keys, so batches hold the same key
    // more than once (one multi-row statement may not).
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", i % 8);
            c.upsert(NewObject::from_meta(
                "bkt",
                &key,
                &meta(&format!("e{i}"), i, "text/plain"),
            ))
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for k in 0..8 {
        assert!(
            c.get_object("bkt", &format!("k{k}"))
                .await
                .unwrap()
                .is_some(),
            "k{k}"
        );
    }
    // Within one caller, order holds: a write then a delete leaves no row, a delete then a
    // write leaves the write.
    let (a, b) = tokio::join!(
        async {
            c.upsert(NewObject::from_meta(
                "bkt",
                "k0",
                &meta("x", 1, "text/plain"),
            ))
            .await
            .unwrap();
            c.delete("bkt", "k0").await.unwrap();
        },
        async {
            c.delete("bkt", "k1").await.unwrap();
            c.upsert(NewObject::from_meta(
                "bkt",
                "k1",
                &meta("y", 2, "text/plain"),
            ))
            .await
            .unwrap();
        }
    );
    let ((), ()) = (a, b);
    assert!(c.get_object("bkt", "k0").await.unwrap().is_none());
    let k1 = c.get_object("bkt", "k1").await.unwrap().unwrap();
    assert_eq!((k1.etag.as_str(), k1.size), ("y", 2));
}

#[test]
fn posters_are_listed_for_probed_videos_only() {
    let video = CatalogObject {
        id: 1,
        bucket: "b".into(),
        key: "clip.mkv".into(),
        size: 1,
        etag: "e".into(),
        content_type: None,
        user_metadata: Default::default(),
        sha256: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        modified_at: time::OffsetDateTime::UNIX_EPOCH,
        description: None,
        media: Some(MediaMeta {
            duration: None,
            width: 640,
            height: 360,
            ..Default::default()
        }),
        variants: Default::default(),
        probe_status: ProbeStatus::Ok,
        probe_error: None,
    };
    // Unknown duration: the first frame.
    assert_eq!(video.poster(), Some(PosterMeta { at_secs: 0.0 }));
    // Audio with cover art can report a picture: no poster, as `?thumbnail=` refuses it.
    let audio = CatalogObject {
        key: "song.m4a".into(),
        content_type: Some("audio/mp4".into()),
        ..video.clone()
    };
    assert_eq!(audio.poster(), None);
    let no_picture = CatalogObject {
        media: Some(MediaMeta::default()),
        ..video.clone()
    };
    assert_eq!(no_picture.poster(), None);
    let failed = CatalogObject {
        probe_status: ProbeStatus::Error,
        ..video
    };
    assert_eq!(failed.poster(), None);
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path()).await;
    let ttl = std::time::Duration::from_millis(300);
    assert!(c.try_lease("sweep", "a", ttl).await.unwrap());
    assert!(!c.try_lease("sweep", "b", ttl).await.unwrap(), "held by a");
    assert!(c.try_lease("sweep", "a", ttl).await.unwrap(), "a renews");
    assert!(
        c.try_lease("other", "b", ttl).await.unwrap(),
        "names are independent"
    );
    assert_eq!(c.lease_holder("sweep").await.unwrap().unwrap().0, "a");
    // a stops renewing (killed): once the lease expires, b takes the work over.
    tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
    assert!(c.lease_holder("sweep").await.unwrap().is_none());
    assert!(c.try_lease("sweep", "b", ttl).await.unwrap());
    assert!(
        !c.try_lease("sweep", "a", ttl).await.unwrap(),
        "now held by b"
    );
    c.release_lease("sweep", "a").await.unwrap();
    assert!(
        !c.try_lease("sweep", "a", ttl).await.unwrap(),
        "only the holder releases"
    );
    c.release_lease("sweep", "b").await.unwrap();
    assert!(
        c.try_lease("sweep", "a", ttl).await.unwrap(),
        "released: free at once"
    );

    // A held lease is renewed while its guard lives and given up when it is dropped.
    let held = c
        .hold_lease("scan", std::time::Duration::from_millis(600))
        .await
        .unwrap()
        .expect("free");
    assert!(
        c.hold_lease("scan", ttl).await.unwrap().is_some(),
        "same holder"
    );
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert!(!held.lost());
    assert!(
        !c.try_lease("scan", "someone-else", ttl).await.unwrap(),
        "renewed"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        c.try_lease("scan", "someone-else", ttl).await.unwrap(),
        "given up"
    );
}

#[tokio::test]
async fn gateways_report_themselves_with_a_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = catalog(dir.path()).await;
    let hb = c.start_heartbeat(vec!["http://127.0.0.1:9000".into()], HEARTBEAT);
    assert_eq!(c.stale_after(), HEARTBEAT * 3);
    let mut rows = Vec::new();
    for _ in 0..50 {
        rows = c.gateways().await.unwrap().1;
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (now, _) = c.gateways().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, gateway_id());
    assert_eq!(rows[0].address_list(), vec!["http://127.0.0.1:9000"]);
    assert!((now - rows[0].heartbeat_ms).abs() < 5_000, "{now} {rows:?}");
    hb.stop().await;
    assert!(
        c.gateways().await.unwrap().1.is_empty(),
        "a clean stop removes the row"
    );
}
