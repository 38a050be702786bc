//! Just enough ISO-BMFF to read mp4mux's fragmented output back: top-level box framing,
//! the track list of the `moov`, and the samples of each `moof` (`run.rs` regroups them
//! into one `moof` per HLS segment, written by `mux.rs`).

use super::mux::FragSample;
use crate::MediaError;

/// A track of the init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    pub id: u32,
    pub timescale: u32,
    pub video: bool,
    /// From the track's `trex`.
    pub defaults: SampleDefaults,
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
            defaults: SampleDefaults::default(),
        });
    }
    if let Some((mvex, mvex_size)) = child(moov, 8, moov.len(), b"mvex")? {
        for (kind, trex, _) in children(moov, mvex + 8, mvex + mvex_size)? {
            if &kind != b"trex" {
                continue;
            }
            // trex: version/flags, track_ID, sample description index, then the defaults.
            let id = be32(moov, trex + 12)?;
            if let Some(track) = out.iter_mut().find(|t| t.id == id) {
                track.defaults = SampleDefaults {
                    duration: be32(moov, trex + 20)?,
                    size: be32(moov, trex + 24)?,
                    flags: be32(moov, trex + 28)?,
                };
            }
        }
    }
    Ok(out)
}

/// Sample defaults of a track (its `trex`, or a `tfhd` overriding them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SampleDefaults {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
}

/// `sample_is_non_sync_sample` in ISO-BMFF sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// The samples one `traf` of a fragment holds, their bytes copied out of its `mdat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrafSamples {
    pub track_id: u32,
    /// `tfdt` as written.
    pub decode_time: u64,
    pub samples: Vec<FragSample>,
    /// The samples' bytes, one after the other.
    pub data: Vec<u8>,
}

/// Every `traf` of a `moof` with its samples. `moof_pos` and `mdat_pos` are the stream
/// offsets of the two boxes (a `tfhd` base data offset counts from the stream start);
/// `tracks` gives the `trex` defaults.
pub(crate) fn read_fragment(
    moof: &[u8],
    moof_pos: u64,
    mdat: &[u8],
    mdat_pos: u64,
    tracks: &[Track],
) -> Result<Vec<TrafSamples>, MediaError> {
    let mut out = Vec::new();
    // End of the previous traf's data: the base of a traf that names none (ISO 14496-12).
    let mut prev_end = moof_pos;
    for (kind, off, size) in children(moof, 8, moof.len())? {
        if &kind != b"traf" {
            continue;
        }
        let (tfhd, _) =
            child(moof, off + 8, off + size, b"tfhd")?.ok_or_else(|| bad("traf without tfhd"))?;
        let tf_flags = be32(moof, tfhd + 8)? & 0x00FF_FFFF;
        let track_id = be32(moof, tfhd + 12)?;
        let track = tracks
            .iter()
            .find(|t| t.id == track_id)
            .ok_or_else(|| bad("fragment of an unknown track"))?;
        let mut defaults = track.defaults;
        let mut at = tfhd + 16;
        let mut base = if tf_flags & 0x02_0000 != 0 {
            moof_pos
        } else {
            prev_end
        };
        if tf_flags & 0x01 != 0 {
            base = (u64::from(be32(moof, at)?) << 32) | u64::from(be32(moof, at + 4)?);
            at += 8;
        }
        if tf_flags & 0x02 != 0 {
            at += 4; // sample description index: one per track here
        }
        for (flag, field) in [
            (0x08, &mut defaults.duration),
            (0x10, &mut defaults.size),
            (0x20, &mut defaults.flags),
        ] {
            if tf_flags & flag != 0 {
                *field = be32(moof, at)?;
                at += 4;
            }
        }
        let (tfdt, _) =
            child(moof, off + 8, off + size, b"tfdt")?.ok_or_else(|| bad("traf without tfdt"))?;
        let decode_time = if moof[tfdt + 8] == 1 {
            (u64::from(be32(moof, tfdt + 12)?) << 32) | u64::from(be32(moof, tfdt + 16)?)
        } else {
            u64::from(be32(moof, tfdt + 12)?)
        };
        let mut traf = TrafSamples {
            track_id,
            decode_time,
            samples: Vec::new(),
            data: Vec::new(),
        };
        let mut next = base;
        for (kind, trun, _) in children(moof, off + 8, off + size)? {
            if &kind != b"trun" {
                continue;
            }
            let version = moof[trun + 8];
            let tr_flags = be32(moof, trun + 8)? & 0x00FF_FFFF;
            let count = be32(moof, trun + 12)?;
            let mut at = trun + 16;
            if tr_flags & 0x001 != 0 {
                let data_offset = be32(moof, at)? as i32;
                next = base
                    .checked_add_signed(i64::from(data_offset))
                    .ok_or_else(|| bad("trun data offset before the stream"))?;
                at += 4;
            }
            let mut first_flags = None;
            if tr_flags & 0x004 != 0 {
                first_flags = Some(be32(moof, at)?);
                at += 4;
            }
            for i in 0..count {
                let mut field = |flag: u32, default: u32| -> Result<u32, MediaError> {
                    if tr_flags & flag == 0 {
                        return Ok(default);
                    }
                    let v = be32(moof, at)?;
                    at += 4;
                    Ok(v)
                };
                let duration = field(0x100, defaults.duration)?;
                let size = field(0x200, defaults.size)?;
                let flags = field(0x400, defaults.flags)?;
                let flags = match (i, first_flags) {
                    (0, Some(f)) if tr_flags & 0x400 == 0 => f,
                    _ => flags,
                };
                let raw_cto = field(0x800, 0)?;
                let cto = if version == 0 {
                    i32::try_from(raw_cto).map_err(|_| bad("composition offset too large"))?
                } else {
                    raw_cto as i32
                };
                // Past the mdat's 8-byte header, within the mdat.
                let bytes = next
                    .checked_sub(mdat_pos)
                    .filter(|&from| from >= 8)
                    .and_then(|from| usize::try_from(from).ok())
                    .and_then(|from| mdat.get(from..from + size as usize))
                    .ok_or_else(|| bad("sample data outside its mdat"))?;
                traf.data.extend_from_slice(bytes);
                traf.samples.push(FragSample {
                    duration,
                    size,
                    keyframe: flags & NON_SYNC == 0,
                    cto,
                });
                next += u64::from(size);
            }
        }
        prev_end = next;
        out.push(traf);
    }
    if out.is_empty() {
        return Err(bad("moof without traf"));
    }
    Ok(out)
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

    fn track(id: u32, video: bool) -> Track {
        Track {
            id,
            timescale: 90_000,
            video,
            defaults: SampleDefaults::default(),
        }
    }

    #[test]
    fn reads_back_what_mux_writes() {
        let v = [
            FragSample {
                duration: 3000,
                size: 3,
                keyframe: true,
                cto: -3000,
            },
            FragSample {
                duration: 3000,
                size: 1,
                keyframe: false,
                cto: 6000,
            },
        ];
        let a = [FragSample {
            duration: 1024,
            size: 2,
            keyframe: true,
            cto: 0,
        }];
        let f = super::super::mux::fragment(
            3,
            &[
                super::super::mux::FragTrack {
                    track_id: 1,
                    decode_time: 1 << 33,
                    samples: &v,
                    data: &[1, 2, 3, 4],
                },
                super::super::mux::FragTrack {
                    track_id: 2,
                    decode_time: 48_000,
                    samples: &a,
                    data: &[5, 6],
                },
            ],
        );
        let moof_len = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        let tracks = [track(1, true), track(2, false)];
        let at = 5000;
        let trafs = read_fragment(
            &f[..moof_len],
            at,
            &f[moof_len..],
            at + moof_len as u64,
            &tracks,
        )
        .unwrap();
        assert_eq!(trafs.len(), 2);
        assert_eq!((trafs[0].track_id, trafs[0].decode_time), (1, 1 << 33));
        assert_eq!(
            (trafs[0].samples.as_slice(), trafs[0].data.as_slice()),
            (&v[..], &[1, 2, 3, 4][..])
        );
        assert_eq!((trafs[1].track_id, trafs[1].decode_time), (2, 48_000));
        assert_eq!(
            (trafs[1].samples.as_slice(), trafs[1].data.as_slice()),
            (&a[..], &[5, 6][..])
        );
    }

    #[test]
    fn reads_mp4mux_style_defaults_and_offsets() {
        // tfhd: default duration and flags, no base (the moof's start); trun version 0 with
        // a data offset, first-sample flags and per-sample sizes; tfdt version 0.
        let mut tfhd = vec![0, 0, 0, 0x28];
        tfhd.extend_from_slice(&2u32.to_be_bytes());
        tfhd.extend_from_slice(&1024u32.to_be_bytes());
        tfhd.extend_from_slice(&0x0101_0000u32.to_be_bytes());
        let tfdt = boxed(b"tfdt", &[0, 0, 0, 0, 0, 0, 0x10, 0]);
        let trun = |data_offset: u32| {
            let mut b = vec![0, 0, 0x02, 0x05];
            b.extend_from_slice(&3u32.to_be_bytes());
            b.extend_from_slice(&data_offset.to_be_bytes());
            b.extend_from_slice(&0x0200_0000u32.to_be_bytes());
            for size in [2u32, 1, 3] {
                b.extend_from_slice(&size.to_be_bytes());
            }
            boxed(b"trun", &b)
        };
        let moof = |data_offset| {
            let traf = boxed(
                b"traf",
                &[boxed(b"tfhd", &tfhd), tfdt.clone(), trun(data_offset)].concat(),
            );
            boxed(b"moof", &[boxed(b"mfhd", &[0; 8]), traf].concat())
        };
        let len = moof(0).len() as u32;
        let moof = moof(len + 8 + 1);
        let mdat = boxed(b"mdat", &[0xEE, 1, 2, 3, 4, 5, 6]);
        let mut audio = track(2, false);
        audio.defaults.duration = 7;
        let trafs = read_fragment(&moof, 100, &mdat, 100 + u64::from(len), &[audio]).unwrap();
        assert_eq!(trafs.len(), 1);
        let t = &trafs[0];
        assert_eq!((t.track_id, t.decode_time), (2, 0x1000));
        assert_eq!(t.data, [1, 2, 3, 4, 5, 6]);
        let got: Vec<(u32, u32, bool)> = t
            .samples
            .iter()
            .map(|s| (s.duration, s.size, s.keyframe))
            .collect();
        assert_eq!(got, [(1024, 2, true), (1024, 1, false), (1024, 3, false)]);
        // Data past the mdat is an error, not a panic.
        let short = boxed(b"mdat", &[0xEE, 1, 2]);
        assert!(read_fragment(&moof, 100, &short, 100 + u64::from(len), &[audio]).is_err());
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
