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
/// segment. URLs come from `url`.
pub fn media_playlist(duration: Duration, url: &dyn Fn(SegmentId) -> String) -> String {
    let count = segment_count(duration);
    let seg = SEGMENT_DURATION.as_secs_f64();
    let total = duration.as_secs_f64();
    let lengths: Vec<f64> = (0..count)
        .map(|n| {
            if n + 1 == count {
                (total - n as f64 * seg).max(0.001)
            } else {
                seg
            }
        })
        .collect();
    write_media_playlist(seg.ceil() as u64, &lengths, url)
}

/// The VOD media playlist of a stream-copied source: its segments run from keyframe to
/// keyframe, so their lengths differ; the target duration is the longest one rounded up
/// (RFC 8216: every `EXTINF` rounded to the nearest integer must not exceed it).
pub fn copy_media_playlist(index: &CopyIndex, url: &dyn Fn(SegmentId) -> String) -> String {
    let lengths: Vec<f64> = index
        .segments
        .iter()
        .map(|s| (s.end_ns - s.start_ns) as f64 / 1e9)
        .collect();
    let target = lengths.iter().copied().fold(1.0, f64::max).ceil() as u64;
    write_media_playlist(target, &lengths, url)
}

fn write_media_playlist(target: u64, lengths: &[f64], url: &dyn Fn(SegmentId) -> String) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"\n",
        url(SegmentId::Init)
    );
    for (n, len) in lengths.iter().enumerate() {
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
        let p = media_playlist(Duration::from_millis(7000), &|s| match s {
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
