//! Output qualities and the output-size rule.

use std::fmt;
use std::str::FromStr;

use crate::MediaError;

/// A target output height. The width follows the source aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quality {
    /// 240 lines.
    P240,
    /// 360 lines.
    P360,
    /// 480 lines.
    P480,
    /// 720 lines.
    P720,
    /// 1080 lines.
    P1080,
}

impl Quality {
    /// All qualities, smallest first.
    pub const ALL: [Quality; 5] = [
        Quality::P240,
        Quality::P360,
        Quality::P480,
        Quality::P720,
        Quality::P1080,
    ];

    /// Target height in pixels.
    pub fn height(self) -> u32 {
        match self {
            Quality::P240 => 240,
            Quality::P360 => 360,
            Quality::P480 => 480,
            Quality::P720 => 720,
            Quality::P1080 => 1080,
        }
    }

    /// H.264 video bitrate in kbit/s (see the crate's README.md).
    pub fn video_bitrate_kbps(self) -> u32 {
        match self {
            Quality::P240 => 400,
            Quality::P360 => 800,
            Quality::P480 => 1500,
            Quality::P720 => 3000,
            Quality::P1080 => 6000,
        }
    }

    /// x264 speed preset. Small sizes are cheap, so they get `superfast` (High profile,
    /// better quality per bit); 720p/1080p use `ultrafast` because on 2 cores that is what
    /// allows ~4 concurrent realtime streams (superfast 720p allows ~3).
    pub fn x264_speed_preset(self) -> &'static str {
        match self {
            Quality::P240 | Quality::P360 | Quality::P480 => "superfast",
            Quality::P720 | Quality::P1080 => "ultrafast",
        }
    }

    /// The quality whose settings fit an actual output height: the smallest quality at least
    /// that tall (1080 for anything taller). Used when the source is smaller than asked,
    /// so a 360-line output does not get a 720p bitrate.
    pub fn for_output_height(height: u32) -> Quality {
        Quality::ALL
            .into_iter()
            .find(|q| q.height() >= height)
            .unwrap_or(Quality::P1080)
    }
}

impl FromStr for Quality {
    type Err = MediaError;

    /// Accepts `"240"`..`"1080"`, with or without a trailing `p`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim().trim_end_matches(['p', 'P']);
        Quality::ALL
            .into_iter()
            .find(|q| q.height().to_string() == digits)
            .ok_or_else(|| MediaError::InvalidQuality(s.to_string()))
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}p", self.height())
    }
}

/// Output frame size for a source of `src_w` x `src_h` (display size, square pixels) asked
/// at `target_h` lines.
///
/// Never upscales: if the source is not taller than the target, the source size is kept
/// (rounded down to even numbers). Otherwise the height is `target_h` and the width keeps the
/// aspect ratio, rounded to the nearest even number, because H.264 encoders reject odd
/// widths (videoscale alone would pick 853 for 1920x1080 at 480 lines and x264enc fails).
pub fn output_size(src_w: u32, src_h: u32, target_h: u32) -> (u32, u32) {
    let src_w = src_w.max(2);
    let src_h = src_h.max(2);
    if src_h <= target_h {
        return (src_w & !1, src_h & !1);
    }
    let h = (target_h & !1).max(2);
    // round(src_w * h / src_h / 2) * 2, in integers.
    let w = (u64::from(src_w) * u64::from(h) + u64::from(src_h)) / (2 * u64::from(src_h)) * 2;
    // h < src_h, so w never exceeds src_w + 2 and fits in u32.
    (u32::try_from(w).unwrap_or(src_w & !1).max(2), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_keeps_aspect_with_even_width() {
        assert_eq!(output_size(1920, 1080, 480), (854, 480));
        assert_eq!(output_size(1920, 1080, 720), (1280, 720));
        assert_eq!(output_size(1920, 1080, 360), (640, 360));
        assert_eq!(output_size(1920, 1080, 240), (426, 240));
        assert_eq!(output_size(3840, 2160, 1080), (1920, 1080));
        // 4:3 and portrait sources.
        assert_eq!(output_size(1440, 1080, 480), (640, 480));
        assert_eq!(output_size(1080, 1920, 720), (406, 720));
        // 2.39:1 scope: 1920x804 -> 480 lines gives 1146.27 -> 1146.
        assert_eq!(output_size(1920, 804, 480), (1146, 480));
    }

    #[test]
    fn never_upscales_and_rounds_source_to_even() {
        assert_eq!(output_size(640, 360, 720), (640, 360));
        assert_eq!(output_size(1920, 1080, 1080), (1920, 1080));
        assert_eq!(output_size(641, 361, 480), (640, 360));
        assert_eq!(output_size(1, 1, 240), (2, 2));
    }

    #[test]
    fn every_width_is_even() {
        for w in (100..4000).step_by(7) {
            for h in [101, 240, 479, 481, 720, 1080, 1081, 2160] {
                for q in Quality::ALL {
                    let (ow, oh) = output_size(w, h, q.height());
                    assert_eq!(ow % 2, 0, "{w}x{h} at {q}");
                    assert_eq!(oh % 2, 0, "{w}x{h} at {q}");
                    assert!(oh <= h.max(2), "upscaled {w}x{h} at {q}");
                }
            }
        }
    }

    #[test]
    fn quality_parsing() {
        assert_eq!("480".parse::<Quality>().unwrap(), Quality::P480);
        assert_eq!("1080p".parse::<Quality>().unwrap(), Quality::P1080);
        assert_eq!(" 240 ".parse::<Quality>().unwrap(), Quality::P240);
        assert!(matches!(
            "481".parse::<Quality>(),
            Err(MediaError::InvalidQuality(_))
        ));
        assert!("".parse::<Quality>().is_err());
        assert_eq!(Quality::P720.to_string(), "720p");
    }

    #[test]
    fn settings_follow_actual_output_height() {
        assert_eq!(Quality::for_output_height(360), Quality::P360);
        assert_eq!(Quality::for_output_height(300), Quality::P360);
        assert_eq!(Quality::for_output_height(100), Quality::P240);
        assert_eq!(Quality::for_output_height(1440), Quality::P1080);
    }
}
