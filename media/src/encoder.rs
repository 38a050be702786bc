//! H.264 encoder choice and selection.

use std::fmt;

use gst::prelude::*;

use crate::MediaError;

/// Which H.264 encoder the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderChoice {
    /// VA-API if a VA device works, else x264, else OpenH264.
    #[default]
    Auto,
    /// Force `vaapih264enc`; an error if it cannot run.
    Vaapi,
    /// Force `x264enc`; an error if it is not installed.
    X264,
    /// Force `openh264enc`; an error if it is not installed.
    OpenH264,
}

impl std::str::FromStr for EncoderChoice {
    type Err = MediaError;

    /// Accepts `auto`, `vaapi`, `x264`, `openh264` (case-insensitive), for config files.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(EncoderChoice::Auto),
            "vaapi" => Ok(EncoderChoice::Vaapi),
            "x264" => Ok(EncoderChoice::X264),
            "openh264" => Ok(EncoderChoice::OpenH264),
            other => Err(MediaError::EncoderUnavailable(format!(
                "unknown encoder `{other}` (expected auto, vaapi, x264 or openh264)"
            ))),
        }
    }
}

/// The H.264 encoder actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoder {
    /// Hardware encoding through VA-API (`vaapih264enc`).
    Vaapi,
    /// Software encoding with libx264 (`x264enc`).
    X264,
    /// Software encoding with Cisco OpenH264 (`openh264enc`).
    OpenH264,
}

impl Encoder {
    /// GStreamer element factory name of the encoder.
    pub fn element_name(self) -> &'static str {
        match self {
            Encoder::Vaapi => "vaapih264enc",
            Encoder::X264 => "x264enc",
            Encoder::OpenH264 => "openh264enc",
        }
    }

    /// Raw video format the encoder is fed. Pinned so a 4:4:4 or 10-bit source cannot make
    /// x264 negotiate a High 4:4:4 / High 10 profile that browsers do not play.
    pub(crate) fn input_format(self) -> &'static str {
        match self {
            // VA surfaces are NV12; converting in videoconvert lets vaapih264enc upload
            // system memory directly without a vaapipostproc.
            Encoder::Vaapi => "NV12",
            Encoder::X264 | Encoder::OpenH264 => "I420",
        }
    }

    /// Debian package providing the element, for error messages.
    fn package(self) -> &'static str {
        match self {
            Encoder::Vaapi => "gstreamer1.0-vaapi and a VA-API driver",
            Encoder::X264 => "gstreamer1.0-plugins-ugly",
            Encoder::OpenH264 => "gstreamer1.0-plugins-bad",
        }
    }
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element_name())
    }
}

/// Picks the encoder for `choice`. `gst::init` must have been called.
pub(crate) fn select(choice: EncoderChoice) -> Result<Encoder, MediaError> {
    let forced = match choice {
        EncoderChoice::Auto => None,
        EncoderChoice::Vaapi => Some(Encoder::Vaapi),
        EncoderChoice::X264 => Some(Encoder::X264),
        EncoderChoice::OpenH264 => Some(Encoder::OpenH264),
    };
    if let Some(encoder) = forced {
        return check_usable(encoder).map(|()| encoder);
    }
    let mut reasons = Vec::new();
    for encoder in [Encoder::Vaapi, Encoder::X264, Encoder::OpenH264] {
        match check_usable(encoder) {
            Ok(()) => return Ok(encoder),
            Err(err) => {
                tracing::debug!(encoder = encoder.element_name(), %err, "encoder not usable");
                reasons.push(err.to_string());
            }
        }
    }
    Err(MediaError::EncoderUnavailable(format!(
        "no H.264 encoder can run: {}",
        reasons.join("; ")
    )))
}

/// Checks that the encoder exists and can start.
///
/// The factory check alone is enough for software encoders. For VA-API the plugin registers
/// no features without a device, but a half-working setup (driver present, display cannot be
/// opened) only shows when the element opens its VA display, which it does on NULL -> READY.
fn check_usable(encoder: Encoder) -> Result<(), MediaError> {
    let name = encoder.element_name();
    let factory = gst::ElementFactory::find(name).ok_or_else(|| {
        MediaError::EncoderUnavailable(format!(
            "GStreamer element `{name}` not found (needs {})",
            encoder.package()
        ))
    })?;
    let element = factory
        .create()
        .build()
        .map_err(|err| MediaError::EncoderUnavailable(format!("cannot create `{name}`: {err}")))?;
    let ready = element.set_state(gst::State::Ready);
    // Always go back to NULL so the element releases its device before being dropped.
    let _ = element.set_state(gst::State::Null);
    ready.map_err(|_| {
        MediaError::EncoderUnavailable(format!(
            "`{name}` failed to start (for VA-API: no usable VA display)"
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parsing_and_names() {
        assert_eq!(
            "AUTO".parse::<EncoderChoice>().unwrap(),
            EncoderChoice::Auto
        );
        assert_eq!(
            "x264".parse::<EncoderChoice>().unwrap(),
            EncoderChoice::X264
        );
        assert_eq!(
            " vaapi".parse::<EncoderChoice>().unwrap(),
            EncoderChoice::Vaapi
        );
        assert_eq!(
            "openh264".parse::<EncoderChoice>().unwrap(),
            EncoderChoice::OpenH264
        );
        assert!("nvenc".parse::<EncoderChoice>().is_err());
        assert_eq!(Encoder::Vaapi.element_name(), "vaapih264enc");
        assert_eq!(Encoder::OpenH264.to_string(), "openh264enc");
        assert_eq!(Encoder::Vaapi.input_format(), "NV12");
    }
}
