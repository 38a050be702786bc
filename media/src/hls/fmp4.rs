//! Just enough ISO-BMFF to cut mp4mux's fragmented output into HLS segments: top-level
//! box framing, the track list of the `moov`, and the `mfhd`/`tfdt`/`trun` fields of a `moof`.

use crate::MediaError;

/// A track of the init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    pub id: u32,
    pub timescale: u32,
    pub video: bool,
}

/// A whole box: its type and all its bytes (header included).
pub(crate) type RawBox = ([u8; 4], Vec<u8>);

/// Splits a byte stream into complete top-level boxes.
#[derive(Debug, Default)]
pub(crate) struct BoxReader {
    buf: Vec<u8>,
}

impl BoxReader {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete box (type and all its bytes), if one has arrived.
    pub fn next_box(&mut self) -> Result<Option<RawBox>, MediaError> {
        let Some((kind, size)) = header(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < size {
            return Ok(None);
        }
        let rest = self.buf.split_off(size);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Ok(Some((kind, bytes)))
    }
}

/// Type and total size of the box at the start of `b`, once its header is there.
fn header(b: &[u8]) -> Result<Option<([u8; 4], usize)>, MediaError> {
    if b.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes(b[0..4].try_into().unwrap());
    let kind: [u8; 4] = b[4..8].try_into().unwrap();
    let size = match size32 {
        1 => {
            if b.len() < 16 {
                return Ok(None);
            }
            u64::from_be_bytes(b[8..16].try_into().unwrap())
        }
        // "Extends to the end of the file" cannot be cut from a stream.
        0 => return Err(bad("box without size in a stream")),
        n => u64::from(n),
    };
    let size = usize::try_from(size).map_err(|_| bad("box too large"))?;
    if size < 8 {
        return Err(bad("box smaller than its header"));
    }
    Ok(Some((kind, size)))
}

fn bad(what: &str) -> MediaError {
    MediaError::Pipeline(format!("unexpected fragmented MP4 from mp4mux: {what}"))
}

/// Children of a box body: (type, offset of the child in `b`, child size).
fn children(
    b: &[u8],
    start: usize,
    end: usize,
) -> Result<Vec<([u8; 4], usize, usize)>, MediaError> {
    let mut out = Vec::new();
    let mut off = start;
    while off + 8 <= end {
        let (kind, size) = header(&b[off..end])?.ok_or_else(|| bad("truncated child box"))?;
        if off + size > end {
            return Err(bad("child box overruns its parent"));
        }
        out.push((kind, off, size));
        off += size;
    }
    Ok(out)
}

fn child(
    b: &[u8],
    start: usize,
    end: usize,
    kind: &[u8; 4],
) -> Result<Option<(usize, usize)>, MediaError> {
    Ok(children(b, start, end)?
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, off, size)| (off, size)))
}

fn be32(b: &[u8], at: usize) -> Result<u32, MediaError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
        .ok_or_else(|| bad("truncated field"))
}

/// Tracks of a `moov` box (the whole box, header included).
pub(crate) fn tracks(moov: &[u8]) -> Result<Vec<Track>, MediaError> {
    let mut out = Vec::new();
    for (kind, off, size) in children(moov, 8, moov.len())? {
        if &kind != b"trak" {
            continue;
        }
        let (tkhd, _) =
            child(moov, off + 8, off + size, b"tkhd")?.ok_or_else(|| bad("trak without tkhd"))?;
        // tkhd: version(1) flags(3), then creation/modification times (4 or 8 each).
        let id_at = if moov[tkhd + 8] == 1 {
            tkhd + 28
        } else {
            tkhd + 20
        };
        let id = be32(moov, id_at)?;
        let (mdia, mdia_size) =
            child(moov, off + 8, off + size, b"mdia")?.ok_or_else(|| bad("trak without mdia"))?;
        let (mdhd, _) = child(moov, mdia + 8, mdia + mdia_size, b"mdhd")?
            .ok_or_else(|| bad("mdia without mdhd"))?;
        let scale_at = if moov[mdhd + 8] == 1 {
            mdhd + 28
        } else {
            mdhd + 20
        };
        let timescale = be32(moov, scale_at)?;
        let (hdlr, _) = child(moov, mdia + 8, mdia + mdia_size, b"hdlr")?
            .ok_or_else(|| bad("mdia without hdlr"))?;
        // hdlr: version/flags(4), pre_defined(4), handler_type(4).
        let video = moov.get(hdlr + 16..hdlr + 20) == Some(b"vide");
        if timescale == 0 {
            return Err(bad("track with timescale 0"));
        }
        out.push(Track {
            id,
            timescale,
            video,
        });
    }
    Ok(out)
}

/// Where the per-track fields of one `traf` sit in a `moof`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrafFields {
    pub track_id: u32,
    /// Offset of the `tfdt` box in the moof.
    tfdt_at: usize,
    pub decode_time: u64,
    /// Sum of the fragment's sample durations (track timescale), when every sample's
    /// duration is written in the `trun` or as the `tfhd` default.
    pub duration: Option<u64>,
}

/// The `traf`s of a `moof` (whole box).
pub(crate) fn trafs(moof: &[u8]) -> Result<Vec<TrafFields>, MediaError> {
    let mut out = Vec::new();
    for (kind, off, size) in children(moof, 8, moof.len())? {
        if &kind != b"traf" {
            continue;
        }
        let (tfhd, _) =
            child(moof, off + 8, off + size, b"tfhd")?.ok_or_else(|| bad("traf without tfhd"))?;
        let track_id = be32(moof, tfhd + 12)?;
        let (tfdt, _) =
            child(moof, off + 8, off + size, b"tfdt")?.ok_or_else(|| bad("traf without tfdt"))?;
        let decode_time = if moof[tfdt + 8] == 1 {
            let hi = be32(moof, tfdt + 12)?;
            let lo = be32(moof, tfdt + 16)?;
            (u64::from(hi) << 32) | u64::from(lo)
        } else {
            u64::from(be32(moof, tfdt + 12)?)
        };
        let duration = traf_duration(moof, off + 8, off + size, tfhd)?;
        out.push(TrafFields {
            track_id,
            tfdt_at: tfdt,
            decode_time,
            duration,
        });
    }
    if out.is_empty() {
        return Err(bad("moof without traf"));
    }
    Ok(out)
}

/// The summed sample durations of the `trun`s of a `traf` (body `start..end`, its `tfhd` at
/// `tfhd`); `None` when a sample's duration is only in the `trex` defaults.
fn traf_duration(
    b: &[u8],
    start: usize,
    end: usize,
    tfhd: usize,
) -> Result<Option<u64>, MediaError> {
    // tfhd flags: base-data-offset (8 bytes), sample-description-index (4), then
    // default-sample-duration (4).
    let tfhd_flags = be32(b, tfhd + 8)? & 0x00ff_ffff;
    let mut at = tfhd + 16;
    if tfhd_flags & 0x01 != 0 {
        at += 8;
    }
    if tfhd_flags & 0x02 != 0 {
        at += 4;
    }
    let default = if tfhd_flags & 0x08 != 0 {
        Some(u64::from(be32(b, at)?))
    } else {
        None
    };
    let mut total = 0u64;
    for (kind, off, _) in children(b, start, end)? {
        if &kind != b"trun" {
            continue;
        }
        let flags = be32(b, off + 8)? & 0x00ff_ffff;
        let count = be32(b, off + 12)? as usize;
        if flags & 0x100 == 0 {
            match default {
                Some(d) => total += d * count as u64,
                None => return Ok(None),
            }
            continue;
        }
        let mut at = off + 16;
        if flags & 0x01 != 0 {
            at += 4;
        }
        if flags & 0x04 != 0 {
            at += 4;
        }
        // Per sample: duration, then size, flags and composition offset when present.
        let stride = 4 * [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count();
        for i in 0..count {
            total += u64::from(be32(b, at + i * stride)?);
        }
    }
    Ok(Some(total))
}

/// Writes a new decode time into the `tfdt` of `traf` (a 32-bit field must fit).
pub(crate) fn set_decode_time(
    moof: &mut [u8],
    traf: &TrafFields,
    decode_time: u64,
) -> Result<(), MediaError> {
    let at = traf.tfdt_at;
    if moof[at + 8] == 1 {
        moof[at + 12..at + 20].copy_from_slice(&decode_time.to_be_bytes());
    } else {
        let v = u32::try_from(decode_time)
            .map_err(|_| bad("decode time overflows a version-0 tfdt"))?;
        moof[at + 12..at + 16].copy_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// Writes the `mfhd` sequence number of a `moof`.
pub(crate) fn set_sequence(moof: &mut [u8], sequence: u32) -> Result<(), MediaError> {
    let (mfhd, _) = child(moof, 8, moof.len(), b"mfhd")?.ok_or_else(|| bad("moof without mfhd"))?;
    moof[mfhd + 12..mfhd + 16].copy_from_slice(&sequence.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn moof(track: u32, tfdt_v1: bool, time: u64) -> Vec<u8> {
        let mfhd = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 7]);
        let mut tfhd_body = vec![0, 0, 0, 0];
        tfhd_body.extend_from_slice(&track.to_be_bytes());
        let tfdt = if tfdt_v1 {
            let mut b = vec![1, 0, 0, 0];
            b.extend_from_slice(&time.to_be_bytes());
            boxed(b"tfdt", &b)
        } else {
            let mut b = vec![0, 0, 0, 0];
            b.extend_from_slice(&(time as u32).to_be_bytes());
            boxed(b"tfdt", &b)
        };
        let traf = boxed(b"traf", &[boxed(b"tfhd", &tfhd_body), tfdt].concat());
        boxed(b"moof", &[mfhd, traf].concat())
    }

    #[test]
    fn reads_and_rewrites_moof() {
        for v1 in [false, true] {
            let mut m = moof(2, v1, 153_600);
            let t = trafs(&m).unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!((t[0].track_id, t[0].decode_time), (2, 153_600));
            set_decode_time(&mut m, &t[0], 9_999_999).unwrap();
            set_sequence(&mut m, 42).unwrap();
            assert_eq!(trafs(&m).unwrap()[0].decode_time, 9_999_999);
            assert_eq!(&m[20..24], &42u32.to_be_bytes());
        }
        let mut m = moof(1, false, 0);
        let t = trafs(&m).unwrap();
        assert!(set_decode_time(&mut m, &t[0], u64::from(u32::MAX) + 1).is_err());
    }

    /// A traf of `track` whose trun carries `durations` (with sizes), or none when the
    /// durations are left to a tfhd default of `default`.
    fn moof_with_samples(track: u32, durations: &[u32], default: Option<u32>) -> Vec<u8> {
        let mfhd = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]);
        let mut tfhd_body = vec![0, 0, 0, if default.is_some() { 0x08 } else { 0 }];
        tfhd_body.extend_from_slice(&track.to_be_bytes());
        if let Some(d) = default {
            tfhd_body.extend_from_slice(&d.to_be_bytes());
        }
        let tfdt = boxed(b"tfdt", &[0, 0, 0, 0, 0, 0, 0, 0]);
        let mut trun = vec![0, 0, if default.is_some() { 0x02 } else { 0x03 }, 0x01];
        trun.extend_from_slice(&(durations.len() as u32).to_be_bytes());
        trun.extend_from_slice(&100u32.to_be_bytes()); // data offset
        for d in durations {
            if default.is_none() {
                trun.extend_from_slice(&d.to_be_bytes());
            }
            trun.extend_from_slice(&500u32.to_be_bytes()); // size
        }
        let traf = [boxed(b"tfhd", &tfhd_body), tfdt, boxed(b"trun", &trun)].concat();
        boxed(b"moof", &[mfhd, boxed(b"traf", &traf)].concat())
    }

    #[test]
    fn sums_fragment_durations() {
        let m = moof_with_samples(1, &[3000, 3000, 3003], None);
        assert_eq!(trafs(&m).unwrap()[0].duration, Some(9003));
        let m = moof_with_samples(2, &[1024; 150], Some(1024));
        assert_eq!(trafs(&m).unwrap()[0].duration, Some(153_600));
        // No trun, no default: nothing to sum.
        assert_eq!(trafs(&moof(1, false, 0)).unwrap()[0].duration, Some(0));
    }

    #[test]
    fn box_reader_waits_for_whole_boxes() {
        let a = boxed(b"ftyp", b"isom");
        let b = boxed(b"mdat", &[9; 100]);
        let all = [a.clone(), b.clone()].concat();
        let mut r = BoxReader::default();
        r.push(&all[..5]);
        assert!(r.next_box().unwrap().is_none());
        r.push(&all[5..50]);
        assert_eq!(r.next_box().unwrap().unwrap(), (*b"ftyp", a));
        assert!(r.next_box().unwrap().is_none());
        r.push(&all[50..]);
        assert_eq!(r.next_box().unwrap().unwrap(), (*b"mdat", b));
        r.push(&[0, 0, 0, 3, b'f', b'r', b'e', b'e']);
        assert!(r.next_box().is_err());
    }
}
