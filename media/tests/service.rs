//! The media service end to end: renditions from open files (the gateway's way in), one
//! pipeline per rendition, the tee into the store, jobs, and the slot limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use futures::StreamExt;
use nebula_media::hls::SegmentId;
use nebula_media::{
    CancelFlag, EncoderChoice, MediaEngine, MediaError, MediaService, ObjectRef, Quality, Rendition,
};

use common::{assert_same_tracks, mp4_boxes, source};

fn service(dir: &std::path::Path, slots: usize) -> Arc<MediaService> {
    let engine = MediaEngine::new(EncoderChoice::Auto).expect("media engine");
    Arc::new(MediaService::new(engine, dir.join("renditions"), slots, u64::MAX).unwrap())
}

fn object(key: &str) -> ObjectRef<'_> {
    ObjectRef {
        bucket: "media",
        key,
        etag: "etag-1",
    }
}

/// A copy of a test source opened and then unlinked: only the open descriptor reaches it.
fn opened_and_unlinked(name: &str, dir: &std::path::Path) -> std::fs::File {
    let path = dir.join(name);
    std::fs::copy(source(name), &path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

async fn read_all(
    mut stream: impl futures::Stream<Item = Result<bytes::Bytes, MediaError>> + Unpin,
) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rendition_from_an_open_file_is_kept_and_then_served_finished() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 2);
    // The sources have their moov at the end: the pipeline must pull through the descriptor.
    let src = opened_and_unlinked("av360.mp4", dir.path());
    let live = match svc
        .rendition(object("a.mp4"), src, Quality::P240)
        .await
        .unwrap()
    {
        Rendition::Live(l) => l,
        Rendition::Finished(_) => panic!("nothing was produced yet"),
    };
    assert_eq!((live.info().width, live.info().height), (426, 240));
    // A second request for the same rendition waits for this one instead of transcoding.
    let follower = {
        let (svc, src) = (svc.clone(), opened_and_unlinked("av360.mp4", dir.path()));
        tokio::spawn(async move { svc.rendition(object("a.mp4"), src, Quality::P240).await })
    };
    let bytes = read_all(live).await;
    assert_eq!(&mp4_boxes(&bytes)[..2], ["ftyp", "moov"]);
    let Rendition::Finished(f) = follower.await.unwrap().unwrap() else {
        panic!("the follower must get the finished file");
    };
    assert_eq!(f.size, bytes.len() as u64);
    assert_eq!((f.info.width, f.info.height), (426, 240));
    // The pipeline thread sets the finished pipeline to NULL just after the end of stream.
    let ended = std::time::Instant::now();
    while svc.engine().active_pipelines() > 0 {
        assert!(
            ended.elapsed() < std::time::Duration::from_secs(1),
            "pipeline still running 1 s after the end of the stream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Replacing the object drops its renditions; nothing in the making is left behind.
    svc.invalidate("media", "a.mp4");
    let src = opened_and_unlinked("av360.mp4", dir.path());
    let again = svc
        .rendition(object("a.mp4"), src, Quality::P240)
        .await
        .unwrap();
    assert!(matches!(again, Rendition::Live(_)));
    drop(again);
    let leftovers: Vec<_> = std::fs::read_dir(svc.renditions().dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.iter().all(|n| !n.ends_with(".part")),
        "{leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_answers_busy_and_not_video_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1);
    let src = opened_and_unlinked("av360_long.mp4", dir.path());
    let held = svc
        .rendition(object("long.mp4"), src, Quality::P240)
        .await
        .unwrap();
    let src = opened_and_unlinked("av360.mp4", dir.path());
    let err = svc
        .rendition(object("other.mp4"), src, Quality::P240)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Busy(1)), "{err}");
    drop(held);
    let src = opened_and_unlinked("notes.txt", dir.path());
    let err = svc
        .rendition(object("notes.mp4"), src, Quality::P240)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::NotVideo(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_installs_the_rendition_requests_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 1);
    let src = opened_and_unlinked("av360_long.mp4", dir.path());
    let info = svc.engine().probe(&src).unwrap();
    assert!(info.duration.is_some_and(|d| d.as_secs() >= 11), "{info:?}");
    let progress = Arc::new(AtomicU8::new(0));
    let installed = {
        let (svc, p) = (svc.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            svc.produce(
                object("long.mp4"),
                &src,
                Quality::P240,
                "job-1",
                |v| p.store(v, Ordering::Relaxed),
                &CancelFlag::new(),
            )
        })
        .await
        .unwrap()
        .unwrap()
    };
    assert_eq!(progress.load(Ordering::Relaxed), 100);
    assert_eq!(installed.outcome.height, 240);
    assert_eq!(
        std::fs::metadata(&installed.path).unwrap().len(),
        installed.outcome.bytes
    );
    let src = opened_and_unlinked("av360_long.mp4", dir.path());
    let Rendition::Finished(f) = svc
        .rendition(object("long.mp4"), src, Quality::P240)
        .await
        .unwrap()
    else {
        panic!("the job's rendition must be served");
    };
    assert_eq!(f.size, installed.outcome.bytes);

    // Its HLS segments are ranges of that file: no session, no pipeline.
    let read = |seg: nebula_media::HlsSegment| {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = seg.file;
        file.seek(SeekFrom::Start(seg.offset)).unwrap();
        let mut buf = vec![0; seg.size as usize];
        file.read_exact(&mut buf).unwrap();
        buf
    };
    let src = opened_and_unlinked("av360_long.mp4", dir.path());
    let seg = svc
        .hls_segment(
            object("long.mp4"),
            src,
            &info,
            Quality::P240,
            SegmentId::Media(2),
        )
        .await
        .unwrap();
    let index = &installed.outcome.segments;
    assert_eq!(
        Some((seg.offset, seg.size)),
        index.range(SegmentId::Media(2))
    );
    assert_eq!(&read(seg)[4..8], b"moof");
    let src = opened_and_unlinked("av360_long.mp4", dir.path());
    let init = svc
        .hls_segment(
            object("long.mp4"),
            src,
            &info,
            Quality::P240,
            SegmentId::Init,
        )
        .await
        .unwrap();
    let job_init = read(init);
    assert_eq!(svc.hls_sessions(), 0);
    assert_eq!(svc.engine().active_pipelines(), 0);

    // The same init segment as an on-demand run's: the job's segments and a run's mix.
    let other = tempfile::tempdir().unwrap();
    let svc2 = service(other.path(), 1);
    let src = opened_and_unlinked("av360_long.mp4", other.path());
    let run_init = svc2
        .hls_segment(
            object("long.mp4"),
            src,
            &info,
            Quality::P240,
            SegmentId::Init,
        )
        .await
        .unwrap();
    assert_eq!(svc2.hls_sessions(), 1);
    let run_init = read(run_init);
    assert_same_tracks(&run_init, &job_init);
}
