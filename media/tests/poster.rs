//! Posters against real GStreamer, checked with ffmpeg/ffprobe.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use nebula_media::{EncoderChoice, MAX_POSTER_WIDTH, MediaEngine, MediaError, Poster};

use common::{ffprobe_streams, source};

fn engine() -> &'static MediaEngine {
    static ENGINE: OnceLock<MediaEngine> = OnceLock::new();
    ENGINE.get_or_init(|| MediaEngine::new(EncoderChoice::Auto).expect("media engine"))
}

/// Checks the bytes are a JPEG ffprobe reads at the poster's own size, and returns it.
fn check_jpeg(poster: &Poster) -> Poster {
    assert_eq!(
        &poster.jpeg[..2],
        [0xFF, 0xD8],
        "JPEG start-of-image marker"
    );
    assert_eq!(poster.height % 2, 0, "{poster:?}");
    let file = tempfile::Builder::new().suffix(".jpg").tempfile().unwrap();
    std::fs::write(file.path(), &poster.jpeg).unwrap();
    let streams = ffprobe_streams(file.path());
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].codec_name, "mjpeg");
    assert_eq!(streams[0].width, Some(u64::from(poster.width)));
    assert_eq!(streams[0].height, Some(u64::from(poster.height)));
    poster.clone()
}

/// Width and height of the grey pictures compared.
const GREY: (usize, usize) = (160, 90);

/// The first frame of `input` (ffmpeg arguments) as 160x90 grey pixels.
fn grey(input: &[&str]) -> Vec<u8> {
    let scale = format!("scale={}:{}", GREY.0, GREY.1);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(input)
        .args([
            "-frames:v",
            "1",
            "-vf",
            &scale,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ])
        .output()
        .expect("ffmpeg must be installed");
    assert!(
        out.status.success(),
        "ffmpeg {input:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), GREY.0 * GREY.1);
    out.stdout
}

/// Where the white ball of videotestsrc's `ball` pattern is: the centre of the bright pixels.
fn ball_position(jpeg: &[u8]) -> (f64, f64) {
    let file = tempfile::Builder::new().suffix(".jpg").tempfile().unwrap();
    std::fs::write(file.path(), jpeg).unwrap();
    let pixels = grey(&["-i", file.path().to_str().unwrap()]);
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (i, &p) in pixels.iter().enumerate() {
        if p > 128 {
            sx += (i % GREY.0) as f64;
            sy += (i / GREY.0) as f64;
            n += 1.0;
        }
    }
    assert!(n > 0.0, "no ball in the picture");
    (sx / n, sy / n)
}

/// ffmpeg's own decode of the source at `secs` (`-ss` before `-i` is accurate when
/// decoding), as a JPEG so it is compared the same way as a poster.
fn reference_jpeg(src: &Path, secs: f64) -> Vec<u8> {
    let ss = format!("{secs:.3}");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-ss", &ss, "-i"])
        .arg(src)
        .args(["-frames:v", "1", "-c:v", "mjpeg", "-f", "image2pipe", "-"])
        .output()
        .expect("ffmpeg must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

#[test]
fn poster_of_1080p_is_320_wide_at_a_tenth() {
    let poster = engine()
        .poster(&source("av1080.mp4"), 320, None)
        .expect("poster");
    let poster = check_jpeg(&poster);
    assert_eq!((poster.width, poster.height), (320, 180));
    // 10 % of the 2 s source, to the frame (30 fps).
    let at = poster.at.as_secs_f64();
    assert!((at - 0.2).abs() < 0.034, "{poster:?}");
    assert!(poster.jpeg.len() > 1000, "{poster:?}");
}

#[test]
fn at_picks_the_frame_shown_at_that_moment() {
    // The ball moves every frame and keyframes are 3 s apart, so a seek that lands on the
    // keyframe instead of the moment shows a different picture.
    let src = source("ball.mp4");
    let moments = [1.0, 2.5, 4.2];
    let refs: Vec<(f64, f64)> = moments
        .iter()
        .map(|&s| ball_position(&reference_jpeg(&src, s)))
        .collect();
    let mut jpegs = Vec::new();
    for (i, &secs) in moments.iter().enumerate() {
        let poster = engine()
            .poster(&src, 320, Some(Duration::from_secs_f64(secs)))
            .expect("poster");
        let poster = check_jpeg(&poster);
        assert_eq!((poster.width, poster.height), (320, 180));
        assert!(
            (poster.at.as_secs_f64() - secs).abs() < 0.034,
            "asked {secs}, got {poster:?}"
        );
        // The ball is where ffmpeg shows it at that moment (within 2 of 160 columns), and
        // clearly not where it is at the other moments.
        let ball = ball_position(&poster.jpeg);
        let own = distance(ball, refs[i]);
        assert!(
            own < 2.0,
            "ball at {ball:?}, ffmpeg has it at {:?}",
            refs[i]
        );
        for (j, other) in refs.iter().enumerate() {
            if i != j {
                assert!(
                    distance(ball, *other) > 10.0,
                    "poster at {secs} s looks like ffmpeg's frame at {} s",
                    moments[j]
                );
            }
        }
        jpegs.push(poster.jpeg);
    }
    assert_ne!(jpegs[0], jpegs[1]);
    assert_ne!(jpegs[1], jpegs[2]);
}

#[test]
fn at_past_the_end_gives_a_frame_near_the_end() {
    let poster = engine()
        .poster(&source("ball.mp4"), 160, Some(Duration::from_secs(3600)))
        .expect("poster");
    check_jpeg(&poster);
    let at = poster.at.as_secs_f64();
    assert!((5.5..6.0).contains(&at), "{poster:?}");
}

#[test]
fn odd_sizes_work_and_nothing_is_upscaled() {
    let src = source("odd.mkv");
    // Odd width asked: honoured; height follows 321x241 and is even.
    let poster = check_jpeg(&engine().poster(&src, 101, None).expect("poster"));
    assert_eq!((poster.width, poster.height), (101, 76));
    // Wider than the source: the source's own width, height even and not above 241.
    let poster = check_jpeg(&engine().poster(&src, 1280, None).expect("poster"));
    assert_eq!((poster.width, poster.height), (321, 240));
}

#[test]
fn anamorphic_source_comes_out_in_its_display_shape() {
    // 320x240 stored with 2:1 pixels is shown 640x240.
    let src = source("anamorphic.mp4");
    let poster = check_jpeg(
        &engine()
            .poster(&src, MAX_POSTER_WIDTH, None)
            .expect("poster"),
    );
    assert_eq!((poster.width, poster.height), (640, 240));
    let poster = check_jpeg(&engine().poster(&src, 320, None).expect("poster"));
    assert_eq!((poster.width, poster.height), (320, 120));
}

#[test]
fn non_video_is_not_video() {
    for name in ["audio_only.m4a", "notes.txt", "fake.mp4"] {
        let err = engine().poster(&source(name), 320, None).unwrap_err();
        assert!(matches!(err, MediaError::NotVideo(_)), "{name}: {err}");
    }
}

#[test]
fn bad_width_and_missing_file_are_errors() {
    let src = source("av360.mp4");
    for width in [0, MAX_POSTER_WIDTH + 1] {
        let err = engine().poster(&src, width, None).unwrap_err();
        assert!(matches!(err, MediaError::InvalidPoster(_)), "{err}");
    }
    let err = engine()
        .poster(Path::new("no/such/file.mp4"), 320, None)
        .unwrap_err();
    assert!(matches!(err, MediaError::Io(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_stores_a_poster_and_serves_it_from_the_file_next_time() {
    use std::io::Read;

    use nebula_media::{MediaService, ObjectRef};

    let dir = tempfile::tempdir().unwrap();
    let svc =
        MediaService::new(engine().clone(), dir.path().join("renditions"), 1, u64::MAX).unwrap();
    let object = ObjectRef {
        bucket: "media",
        key: "ball.mp4",
        etag: "etag-1",
    };
    let open = || std::fs::File::open(source("ball.mp4")).unwrap();
    let mut first = svc.poster(object, open(), 200, None).await.unwrap();
    assert_eq!((first.info.width, first.info.height), (200, 112));
    let mut jpeg = Vec::new();
    first.file.read_to_end(&mut jpeg).unwrap();
    assert_eq!(jpeg.len() as u64, first.size);
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let stored = svc
        .renditions()
        .dir()
        .join(svc.renditions().poster_name(object, 200, None));
    assert_eq!(std::fs::read(&stored).unwrap(), jpeg);

    // Served from the file: what is stored under the poster's name is what comes back.
    std::fs::write(&stored, b"stored bytes").unwrap();
    let mut again = svc.poster(object, open(), 200, None).await.unwrap();
    let mut body = Vec::new();
    again.file.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"stored bytes");

    // Other bytes of the object (another ETag) are another poster.
    let replaced = ObjectRef {
        etag: "etag-2",
        ..object
    };
    let mut other = svc.poster(replaced, open(), 200, None).await.unwrap();
    body.clear();
    other.file.read_to_end(&mut body).unwrap();
    assert_eq!(body, jpeg);
}
