//! Master and media playlists (RFC 8216).
//!
//! Written by hand: the two playlists are a dozen fixed tags, and the URLs come from the
//! caller (the gateway presigns them), so a playlist crate would only add a parser we never
//! use.

use std::fmt::Write;
use std::time::Duration;

use super::{CopyIndex, HlsQuality, SEGMENT_DURATION, SegmentId, Variant, segment_count};

/// The master playlist: one `EXT-X-STREAM-INF` per variant, its URL from `url`.
pub fn master_playlist(variants: &[Variant], url: &dyn Fn(HlsQuality) -> String) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{}",
            v.bandwidth, v.average_bandwidth, v.width, v.height
        );
        if let Some(fps) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        let _ = writeln!(out, ",CODECS=\"{}\"", v.codecs);
        out.push_str(&url(v.quality));
        out.push('\n');
    }
    out
}

/// The VOD media playlist of a source lasting `duration`: every segment listed up front,
/// [`SEGMENT_DURATION`] each (the last one what remains), after the `EXT-X-MAP` init
/// segment. With `start`, the playlist begins at the segment holding that moment (see
/// [`Start`]). URLs come from `url`.
pub fn media_playlist(
    duration: Duration,
    start: Option<Duration>,
    url: &dyn Fn(SegmentId) -> String,
) -> String {
    let count = segment_count(duration);
    let seg = SEGMENT_DURATION.as_secs_f64();
    let total = duration.as_secs_f64();
    let spans: Vec<(f64, f64)> = (0..count)
        .map(|n| {
            let from = n as f64 * seg;
            let len = if n + 1 == count {
                (total - from).max(0.001)
            } else {
                seg
            };
            (from, len)
        })
        .collect();
    write_media_playlist(seg.ceil() as u64, &spans, start, url)
}

/// The VOD media playlist of a stream-copied source: its segments run from keyframe to
/// keyframe, so their lengths differ; the target duration is the longest one rounded up
/// (RFC 8216: every `EXTINF` rounded to the nearest integer must not exceed it).
pub fn copy_media_playlist(
    index: &CopyIndex,
    start: Option<Duration>,
    url: &dyn Fn(SegmentId) -> String,
) -> String {
    let spans: Vec<(f64, f64)> = index
        .segments
        .iter()
        .map(|s| {
            (
                s.start_ns as f64 / 1e9,
                (s.end_ns - s.start_ns) as f64 / 1e9,
            )
        })
        .collect();
    let target = spans.iter().map(|s| s.1).fold(1.0, f64::max).ceil() as u64;
    write_media_playlist(target, &spans, start, url)
}

/// Where a playlist asked to start at a moment begins.
///
/// Players built on FFmpeg (mpv, ffplay; FFmpeg 5.1 as in Debian 12) cannot seek in fMP4
/// HLS and ignore `EXT-X-START`, so a playlist for "play from 1:23:45" lists the segments
/// from the one holding that moment on (`EXT-X-MEDIA-SEQUENCE` keeps their numbers), and
/// `EXT-X-START` names the exact moment within it for players that honour it (hls.js,
/// Safari). Segment decode times stay on the source timeline, so players show the real
/// position.
struct Start {
    /// First segment listed.
    first: usize,
    /// From the first listed segment's start to the moment asked for, in seconds.
    offset: f64,
}

impl Start {
    /// `spans` are the segments' (start, length) in seconds, in order.
    fn find(spans: &[(f64, f64)], at: Duration) -> Start {
        let at = at.as_secs_f64();
        let first = spans.iter().rposition(|&(from, _)| from <= at).unwrap_or(0);
        let (from, len) = spans.get(first).copied().unwrap_or_default();
        let offset = (at - from).clamp(0.0, len);
        Start { first, offset }
    }
}

fn write_media_playlist(
    target: u64,
    spans: &[(f64, f64)],
    start: Option<Duration>,
    url: &dyn Fn(SegmentId) -> String,
) -> String {
    let start = start.map(|at| Start::find(spans, at));
    let first = start.as_ref().map_or(0, |s| s.first);
    let mut out = String::new();
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    if let Some(s) = &start {
        let _ = writeln!(out, "#EXT-X-START:TIME-OFFSET={:.3},PRECISE=YES", s.offset);
    }
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", url(SegmentId::Init));
    for (n, (_, len)) in spans.iter().enumerate().skip(first) {
        let _ = writeln!(out, "#EXTINF:{len:.3},");
        out.push_str(&url(SegmentId::Media(n as u64)));
        out.push('\n');
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::ladder;
    use crate::{Encoder, MediaInfo};

    #[test]
    fn media_playlist_lists_every_segment() {
        let p = media_playlist(Duration::from_millis(7000), None, &|s| match s {
            SegmentId::Init => "init.mp4".into(),
            SegmentId::Media(n) => format!("s{n}.m4s?a=1&b=2"),
        });
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:3.200,\ns0.m4s?a=1&b=2\n#EXTINF:3.200,\ns1.m4s?a=1&b=2\n\
             #EXTINF:0.600,\ns2.m4s?a=1&b=2\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn media_playlist_from_a_moment_starts_at_its_segment() {
        let url = |s: SegmentId| match s {
            SegmentId::Init => "init.mp4".into(),
            SegmentId::Media(n) => format!("s{n}.m4s"),
        };
        let p = media_playlist(
            Duration::from_millis(10_000),
            Some(Duration::from_millis(7_000)),
            &url,
        );
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-START:TIME-OFFSET=0.600,PRECISE=YES\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:3.200,\ns2.m4s\n#EXTINF:0.400,\ns3.m4s\n#EXT-X-ENDLIST\n"
        );
        // The very start, and past the last segment's start: the first and the last segment.
        let p = media_playlist(Duration::from_millis(10_000), Some(Duration::ZERO), &url);
        assert!(p.contains("MEDIA-SEQUENCE:0\n") && p.contains("TIME-OFFSET=0.000,"));
        let p = media_playlist(
            Duration::from_millis(10_000),
            Some(Duration::from_secs(60)),
            &url,
        );
        assert!(p.contains("MEDIA-SEQUENCE:3\n") && p.contains("TIME-OFFSET=0.400,"));
        assert!(p.ends_with("s3.m4s\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn master_playlist_has_one_entry_per_variant() {
        let info = MediaInfo {
            duration: Some(Duration::from_secs(10)),
            width: 1280,
            height: 720,
            frame_rate: Some((25, 1)),
            video_codec: Some("h264".into()),
            audio_codec: None,
            bitrate: None,
            container: None,
            has_video: true,
            has_audio: false,
        };
        let p = master_playlist(&ladder(&info, Encoder::X264, true, None), &|q| {
            format!("q{}", q.param())
        });
        assert_eq!(p.matches("#EXT-X-STREAM-INF:").count(), 4);
        assert!(p.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=3060000,RESOLUTION=1280x720,\
             FRAME-RATE=25.000,CODECS=\"avc1.42C02A\"\nq720\n"
        ));
    }
}
