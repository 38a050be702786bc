//! Which objects are audio or video, by content type or file extension, and which videos
//! browsers play as they are. The one list of media extensions: transcode requests, the
//! catalog's prober and the auto-transcode rules all ask here.

/// What a file extension says about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Video in a container browsers play (MP4, MOV, WebM, ...).
    WebVideo,
    /// Video in a container only players read (Matroska, AVI, MPEG-TS, ...).
    Video,
    /// Audio.
    Audio,
}

/// Media file extensions (lowercase) and what they hold.
const EXTENSIONS: &[(&str, Kind)] = &[
    ("mp4", Kind::WebVideo),
    ("m4v", Kind::WebVideo),
    ("mov", Kind::WebVideo),
    ("webm", Kind::WebVideo),
    ("3gp", Kind::WebVideo),
    ("ogv", Kind::WebVideo),
    ("mkv", Kind::Video),
    ("avi", Kind::Video),
    ("wmv", Kind::Video),
    ("flv", Kind::Video),
    ("ts", Kind::Video),
    ("m2ts", Kind::Video),
    ("mts", Kind::Video),
    ("mpg", Kind::Video),
    ("mpeg", Kind::Video),
    ("mp3", Kind::Audio),
    ("m4a", Kind::Audio),
    ("aac", Kind::Audio),
    ("flac", Kind::Audio),
    ("ogg", Kind::Audio),
    ("oga", Kind::Audio),
    ("opus", Kind::Audio),
    ("wav", Kind::Audio),
    ("wma", Kind::Audio),
];

/// Containers browsers do not play, by the names [`crate::MediaInfo::container`] uses.
const PLAYER_ONLY_CONTAINERS: &[&str] = &["matroska", "avi", "asf", "flv", "mpegts", "mpeg"];

/// The kind of the extension of the key's last segment. A name that is only an extension
/// (`.mp4`, a hidden file) has none, as with [`std::path::Path::extension`].
fn kind_of(key: &str) -> Option<Kind> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    EXTENSIONS
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, k)| *k)
}

/// Whether a content type is of the top-level type `top` (`video`, `audio`), in any case.
fn type_is(content_type: Option<&str>, top: &str) -> bool {
    content_type
        .and_then(|ct| ct.trim().split_once('/'))
        .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top))
}

/// True for objects that look like video by content type or extension: the objects
/// `?quality=` and transcode jobs accept.
pub fn is_video(key: &str, content_type: Option<&str>) -> bool {
    type_is(content_type, "video") || matches!(kind_of(key), Some(Kind::WebVideo | Kind::Video))
}

/// True for objects that look like audio or video by content type or extension: the objects
/// the catalog probes.
pub fn is_media(key: &str, content_type: Option<&str>) -> bool {
    type_is(content_type, "video") || type_is(content_type, "audio") || kind_of(key).is_some()
}

/// Whether browsers play a video as it is: H.264 (or an unknown codec) in a container they
/// read. `container` and `video_codec` are the probe's names ([`crate::MediaInfo`]).
pub fn browser_plays(key: &str, container: Option<&str>, video_codec: Option<&str>) -> bool {
    if kind_of(key) == Some(Kind::Video) {
        return false;
    }
    if container.is_some_and(|c| PLAYER_ONLY_CONTAINERS.contains(&c)) {
        return false;
    }
    video_codec.is_none_or(|c| c == "h264")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_detection() {
        assert!(is_video("x", Some("video/mp4")));
        assert!(is_video("a/b.MKV", Some("application/octet-stream")));
        assert!(!is_video("notes.txt", Some("text/plain")));
        assert!(!is_video("song.mp3", None));
    }

    #[test]
    fn media_by_type_or_extension() {
        assert!(is_media("a/b.MP4", None));
        assert!(is_media("song.flac", Some("application/octet-stream")));
        assert!(is_media("blob", Some("video/mp4")));
        assert!(is_media("blob", Some("Audio/mpeg")));
        assert!(!is_media("notes.txt", Some("text/plain")));
        assert!(!is_media(".mp4", None));
        assert!(!is_media("dir.mp4/readme", None));
    }

    #[test]
    fn browsers_play_h264_in_web_containers() {
        assert!(browser_plays("a.mp4", Some("mp4"), Some("h264")));
        assert!(!browser_plays("a.mkv", Some("mp4"), Some("h264")));
        assert!(!browser_plays("a.mp4", Some("mp4"), Some("hevc")));
        assert!(!browser_plays("clip", Some("mpegts"), Some("h264")));
        assert!(browser_plays("a.webm", Some("webm"), None));
    }
}
