//! Writes fragmented MP4 for HLS: the init segment of stream-copied segments (`copy.rs`)
//! from the source's codec configuration, and for every segment, copied or transcoded
//! (`run.rs`), one `moof` with a `traf` per track and one `mdat` holding their samples,
//! video first.
//!
//! Copied segments are written here rather than by mp4mux: mp4mux cuts fragments by its
//! own clock and restamps from the first buffer it sees, while a copied segment must hold
//! exactly the samples the playlist promised, stamped with their place on the source
//! timeline (both known from the index), so segments from separate runs join without a gap
//! or a double. Transcoded segments come out of mp4mux as one `moof` per track; `run.rs`
//! regroups them here, because VLC 3.0's MP4 demuxer only reads a `tfdt` at a break in
//! the `mfhd` sequence numbers: with one `moof` per track, the second track of a segment
//! reached by a seek kept its old time and nothing played (`--start-time`).

/// Video timescale: 90 kHz, fine enough for any frame rate and MPEG-TS timestamps.
pub(crate) const VIDEO_TIMESCALE: u32 = 90_000;

/// One track of the init segment.
pub(crate) enum TrackConfig<'a> {
    /// H.264: the `avcC` record (GStreamer's `codec_data`) and the coded size.
    Avc {
        avcc: &'a [u8],
        width: u32,
        height: u32,
    },
    /// AAC: the AudioSpecificConfig (GStreamer's `codec_data`), rate and channels.
    Aac {
        asc: &'a [u8],
        rate: u32,
        channels: u32,
    },
}

impl TrackConfig<'_> {
    fn timescale(&self) -> u32 {
        match self {
            TrackConfig::Avc { .. } => VIDEO_TIMESCALE,
            TrackConfig::Aac { rate, .. } => *rate,
        }
    }
}

/// One sample of a fragment, times in its track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragSample {
    pub duration: u32,
    pub size: u32,
    pub keyframe: bool,
    /// Presentation minus decode time (signed: `trun` version 1).
    pub cto: i32,
}

/// The samples of one track in a fragment.
pub(crate) struct FragTrack<'a> {
    /// 1-based, in init-segment order.
    pub track_id: u32,
    /// Decode time of the first sample (`tfdt`).
    pub decode_time: u64,
    pub samples: &'a [FragSample],
    /// The samples' bytes, one after the other.
    pub data: &'a [u8],
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 8);
    b.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&flags.to_be_bytes()[1..]);
    b.extend_from_slice(body);
    boxed(kind, &b)
}

/// The identity matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

fn push32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn push16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// `ftyp` and `moov` describing `tracks` (track ids 1, 2, ... in this order), no samples.
pub(crate) fn init_segment(tracks: &[TrackConfig<'_>]) -> Vec<u8> {
    let mut ftyp = b"iso6".to_vec();
    push32(&mut ftyp, 0);
    for brand in [b"iso6", b"cmfc", b"mp41", b"avc1"] {
        ftyp.extend_from_slice(brand);
    }
    let mut out = boxed(b"ftyp", &ftyp);

    let mut mvhd = Vec::new();
    push32(&mut mvhd, 0); // creation time
    push32(&mut mvhd, 0); // modification time
    push32(&mut mvhd, 1000); // timescale
    push32(&mut mvhd, 0); // duration: fragmented
    push32(&mut mvhd, 0x10000); // rate 1.0
    push16(&mut mvhd, 0x100); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]);
    MATRIX.iter().for_each(|v| push32(&mut mvhd, *v));
    mvhd.extend_from_slice(&[0; 24]);
    push32(&mut mvhd, tracks.len() as u32 + 1); // next track id
    let mut moov = full(b"mvhd", 0, 0, &mvhd);

    let mut mvex = Vec::new();
    for (i, track) in tracks.iter().enumerate() {
        let id = i as u32 + 1;
        moov.extend_from_slice(&trak(id, track));
        let mut trex = Vec::new();
        push32(&mut trex, id);
        push32(&mut trex, 1); // sample description index
        push32(&mut trex, 0);
        push32(&mut trex, 0);
        push32(&mut trex, 0);
        mvex.extend_from_slice(&full(b"trex", 0, 0, &trex));
    }
    moov.extend_from_slice(&boxed(b"mvex", &mvex));
    out.extend_from_slice(&boxed(b"moov", &moov));
    out
}

fn trak(id: u32, track: &TrackConfig<'_>) -> Vec<u8> {
    let video = matches!(track, TrackConfig::Avc { .. });
    let (w, h) = match track {
        TrackConfig::Avc { width, height, .. } => (*width, *height),
        TrackConfig::Aac { .. } => (0, 0),
    };
    let mut tkhd = Vec::new();
    push32(&mut tkhd, 0);
    push32(&mut tkhd, 0);
    push32(&mut tkhd, id);
    push32(&mut tkhd, 0); // reserved
    push32(&mut tkhd, 0); // duration
    tkhd.extend_from_slice(&[0; 8]);
    push16(&mut tkhd, 0); // layer
    push16(&mut tkhd, 0); // alternate group
    push16(&mut tkhd, if video { 0 } else { 0x100 }); // volume
    push16(&mut tkhd, 0);
    MATRIX.iter().for_each(|v| push32(&mut tkhd, *v));
    push32(&mut tkhd, w << 16);
    push32(&mut tkhd, h << 16);
    // Flags: enabled, in movie.
    let tkhd = full(b"tkhd", 0, 3, &tkhd);

    let mut mdhd = Vec::new();
    push32(&mut mdhd, 0);
    push32(&mut mdhd, 0);
    push32(&mut mdhd, track.timescale());
    push32(&mut mdhd, 0);
    push16(&mut mdhd, 0x55C4); // "und"
    push16(&mut mdhd, 0);
    let mdhd = full(b"mdhd", 0, 0, &mdhd);

    let mut hdlr = vec![0; 4];
    hdlr.extend_from_slice(if video { b"vide" } else { b"soun" });
    hdlr.extend_from_slice(&[0; 12]);
    hdlr.extend_from_slice(if video {
        b"VideoHandler\0".as_slice()
    } else {
        b"SoundHandler\0".as_slice()
    });
    let hdlr = full(b"hdlr", 0, 0, &hdlr);

    let media_header = if video {
        full(b"vmhd", 0, 1, &[0; 8])
    } else {
        full(b"smhd", 0, 0, &[0; 4])
    };
    let dref = full(
        b"dref",
        0,
        0,
        &[&1u32.to_be_bytes()[..], &full(b"url ", 0, 1, &[])].concat(),
    );
    let dinf = boxed(b"dinf", &dref);
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend_from_slice(&sample_entry(track));
    let stbl = [
        full(b"stsd", 0, 0, &stsd),
        full(b"stts", 0, 0, &[0; 4]),
        full(b"stsc", 0, 0, &[0; 4]),
        full(b"stsz", 0, 0, &[0; 8]),
        full(b"stco", 0, 0, &[0; 4]),
    ]
    .concat();
    let minf = boxed(
        b"minf",
        &[media_header, dinf, boxed(b"stbl", &stbl)].concat(),
    );
    let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
    boxed(b"trak", &[tkhd, mdia].concat())
}

fn sample_entry(track: &TrackConfig<'_>) -> Vec<u8> {
    match track {
        TrackConfig::Avc {
            avcc,
            width,
            height,
        } => {
            let mut b = vec![0; 6];
            push16(&mut b, 1); // data reference index
            b.extend_from_slice(&[0; 16]);
            push16(&mut b, *width as u16);
            push16(&mut b, *height as u16);
            push32(&mut b, 0x0048_0000); // 72 dpi
            push32(&mut b, 0x0048_0000);
            push32(&mut b, 0);
            push16(&mut b, 1); // frame count
            b.extend_from_slice(&[0; 32]); // compressor name
            push16(&mut b, 0x18); // depth
            push16(&mut b, 0xFFFF);
            b.extend_from_slice(&boxed(b"avcC", avcc));
            boxed(b"avc1", &b)
        }
        TrackConfig::Aac {
            asc,
            rate,
            channels,
        } => {
            let mut b = vec![0; 6];
            push16(&mut b, 1);
            b.extend_from_slice(&[0; 8]);
            push16(&mut b, *channels as u16);
            push16(&mut b, 16); // sample size
            push32(&mut b, 0);
            // 16.16 fixed point; rates above 65535 Hz do not fit (AAC stops at 96 kHz,
            // which the AudioSpecificConfig carries exactly anyway).
            push32(&mut b, (*rate).min(0xFFFF) << 16);
            b.extend_from_slice(&full(b"esds", 0, 0, &es_descriptor(asc)));
            boxed(b"mp4a", &b)
        }
    }
}

/// The ES_Descriptor of an `esds` box (ISO 14496-1), for AAC with this AudioSpecificConfig.
fn es_descriptor(asc: &[u8]) -> Vec<u8> {
    let descriptor = |tag: u8, body: &[u8]| {
        let mut d = vec![tag];
        // Four-byte length form: any body size, read by every parser.
        let n = body.len() as u32;
        d.extend_from_slice(&[
            0x80 | ((n >> 21) & 0x7F) as u8,
            0x80 | ((n >> 14) & 0x7F) as u8,
            0x80 | ((n >> 7) & 0x7F) as u8,
            (n & 0x7F) as u8,
        ]);
        d.extend_from_slice(body);
        d
    };
    let mut config = vec![0x40, 0x15]; // MPEG-4 audio, audio stream
    config.extend_from_slice(&[0; 3]); // buffer size
    config.extend_from_slice(&[0; 8]); // max and average bitrate: unknown
    config.extend_from_slice(&descriptor(5, asc));
    let mut es = vec![0, 0, 0]; // ES_ID 0, no flags
    es.extend_from_slice(&descriptor(4, &config));
    es.extend_from_slice(&descriptor(6, &[2]));
    descriptor(3, &es)
}

/// `moof` + `mdat` of one segment: every track's samples, in `tracks` order in the mdat.
pub(crate) fn fragment(sequence: u32, tracks: &[FragTrack<'_>]) -> Vec<u8> {
    // Per sample: duration, size, flags, composition offset.
    const TRUN_FLAGS: u32 = 0x001 | 0x100 | 0x200 | 0x400 | 0x800;
    let build = |data_offsets: &[u32]| {
        let mut moof = full(b"mfhd", 0, 0, &sequence.to_be_bytes());
        for (t, offset) in tracks.iter().zip(data_offsets) {
            // default-base-is-moof: data offsets count from the moof's first byte.
            let tfhd = full(b"tfhd", 0, 0x02_0000, &t.track_id.to_be_bytes());
            let tfdt = full(b"tfdt", 1, 0, &t.decode_time.to_be_bytes());
            let mut trun = Vec::with_capacity(8 + 16 * t.samples.len());
            push32(&mut trun, t.samples.len() as u32);
            push32(&mut trun, *offset);
            for s in t.samples {
                push32(&mut trun, s.duration);
                push32(&mut trun, s.size);
                // sample_depends_on 2 (an I frame) or 1 plus sample_is_non_sync_sample.
                push32(
                    &mut trun,
                    if s.keyframe { 0x0200_0000 } else { 0x0101_0000 },
                );
                trun.extend_from_slice(&s.cto.to_be_bytes());
            }
            let trun = full(b"trun", 1, TRUN_FLAGS, &trun);
            moof.extend_from_slice(&boxed(b"traf", &[tfhd, tfdt, trun].concat()));
        }
        boxed(b"moof", &moof)
    };
    // The moof's size does not depend on the offsets written into it.
    let moof_len = build(&vec![0; tracks.len()]).len() as u32;
    let mut offsets = Vec::with_capacity(tracks.len());
    let mut at = moof_len + 8;
    for t in tracks {
        offsets.push(at);
        at += t.data.len() as u32;
    }
    let mut out = build(&offsets);
    let data_len: usize = tracks.iter().map(|t| t.data.len()).sum();
    out.reserve(data_len + 8);
    out.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for t in tracks {
        out.extend_from_slice(t.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fmp4;
    use super::*;

    #[test]
    fn init_segment_names_its_tracks() {
        let avcc = [1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0];
        let init = init_segment(&[
            TrackConfig::Avc {
                avcc: &avcc,
                width: 320,
                height: 180,
            },
            TrackConfig::Aac {
                asc: &[0x11, 0x90],
                rate: 48_000,
                channels: 2,
            },
        ]);
        let moov_at = u32::from_be_bytes(init[0..4].try_into().unwrap()) as usize;
        assert_eq!(&init[moov_at + 4..moov_at + 8], b"moov");
        let tracks = fmp4::tracks(&init[moov_at..]).unwrap();
        assert_eq!(tracks.len(), 2);
        assert_eq!(
            (tracks[0].id, tracks[0].timescale, tracks[0].video),
            (1, 90_000, true)
        );
        assert_eq!(
            (tracks[1].id, tracks[1].timescale, tracks[1].video),
            (2, 48_000, false)
        );
    }
}
