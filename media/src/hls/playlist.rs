//! Master and media playlists (RFC 8216).
//!
//! Written by hand: the two playlists are a dozen fixed tags, and the URLs come from the
//! caller (the gateway presigns them), so a playlist crate would only add a parser we never
//! use.

use std::fmt::Write;
use std::time::Duration;

use super::{SEGMENT_DURATION, SegmentId, Variant, segment_count};
use crate::Quality;

/// The master playlist: one `EXT-X-STREAM-INF` per variant, its URL from `url`.
pub fn master_playlist(variants: &[Variant], url: &dyn Fn(Quality) -> String) -> String {
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
    let mut out = String::new();
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"\n",
        seg.ceil() as u64,
        url(SegmentId::Init)
    );
    let total = duration.as_secs_f64();
    for n in 0..count {
        let start = n as f64 * seg;
        let len = if n + 1 == count {
            (total - start).max(0.001)
        } else {
            seg
        };
        let _ = writeln!(out, "#EXTINF:{len:.3},");
        out.push_str(&url(SegmentId::Media(n)));
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
        let p = master_playlist(&ladder(&info, Encoder::X264, true), &|q| {
            format!("q{}", q.height())
        });
        assert_eq!(p.matches("#EXT-X-STREAM-INF:").count(), 4);
        assert!(p.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=3060000,RESOLUTION=1280x720,\
             FRAME-RATE=25.000,CODECS=\"avc1.42C02A\"\nq720\n"
        ));
    }
}
