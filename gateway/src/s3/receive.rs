//! Request bodies of PutObject and UploadPart: streamed to disk in large batches, hashed on the
//! way (MD5 for the ETag, plus any `x-amz-checksum-*`), then checked against what the client
//! promised. Nothing is committed here.
//!
//! The network read of one batch overlaps the hashing and disk write of the previous one, and
//! each full batch is handed to the kernel's writeback at once, so the fsync at commit has only
//! the tail of a large body left to wait for. Small bodies stay in memory: they are written by
//! the same blocking call that commits them.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::TrailingHeaders;
use s3s::dto::StreamingBlob;
use tokio::task::JoinHandle;

use super::checksum::Expect;
use super::{RequestError, RequestResult};
use crate::store::meta::StoredChecksums;
use crate::store::multipart::PartSlot;
use crate::store::{Store, TempFile, fsutil};

/// Bytes gathered before one write to disk: large writes keep syscalls and thread hops rare.
const WRITE_BATCH: usize = 1024 * 1024;

/// Pieces gathered before one write at most (well under the kernel's 1024 iovecs per call).
const MAX_PIECES: usize = 256;

/// Bodies up to this size are kept in memory and hashed on the async worker (about 80 µs of
/// MD5 at most): writing them is left to the commit, in the same trip to the blocking pool.
const SMALL_BODY: usize = 64 * 1024;

/// Where a body goes.
pub(crate) enum Dest {
    /// A new temp file on the bucket's filesystem (made only if the body is not small).
    Temp {
        /// The store to create it in.
        store: Arc<Store>,
        /// The bucket the temp file must share a filesystem with.
        bucket: String,
    },
    /// A multipart upload's assembly file, at the part's slot.
    Slot(PartSlot),
}

/// Where a body landed.
pub(crate) enum Landed {
    /// Small enough to stay in memory.
    Memory(Bytes),
    /// In a temp file.
    Temp(TempFile),
    /// In its slot of an assembly file.
    Slot(PartSlot),
}

/// A request body received and verified.
pub(crate) struct Received {
    /// Where the bytes are.
    pub landed: Landed,
    /// Body length.
    pub size: u64,
    /// MD5 of the body (the ETag of a single PUT, the part ETag of UploadPart).
    pub md5: [u8; 16],
    /// Checksums computed (and verified where the client sent values).
    pub checksums: StoredChecksums,
}

/// The running digests of a body.
struct Digests {
    md5: Md5,
    other: s3s::checksum::ChecksumHasher,
}

impl Digests {
    fn update(mut self, pieces: &[Bytes]) -> Self {
        for piece in pieces {
            self.md5.update(piece);
            self.other.update(piece);
        }
        self
    }
}

/// The open destination and how much of the body it holds.
struct Sink {
    out: Out,
    size: u64,
}

enum Out {
    Temp(TempFile),
    Slot(PartSlot),
}

impl Sink {
    fn open(dest: Dest) -> RequestResult<Self> {
        let out = match dest {
            Dest::Temp { store, bucket } => Out::Temp(store.create_temp(&bucket)?),
            Dest::Slot(slot) => Out::Slot(slot),
        };
        Ok(Sink { out, size: 0 })
    }

    /// Writes one batch after what was written so far; `full` batches are passed on to
    /// writeback at once (a large body is still arriving).
    fn write(mut self, pieces: &[Bytes], full: bool) -> RequestResult<Self> {
        let len: u64 = pieces.iter().map(|b| b.len() as u64).sum();
        match &mut self.out {
            Out::Temp(t) => {
                fsutil::pwritev_all(&t.file, pieces, self.size)?;
                if full {
                    fsutil::start_writeback(&t.file, self.size, len);
                }
            }
            Out::Slot(s) => {
                if self.size + len > s.capacity {
                    // It would overwrite the next part's slot.
                    return Err(RequestError::InvalidRequest(
                        "the part is larger than its declared Content-Length".into(),
                    ));
                }
                s.write_at(pieces, s.offset + self.size, full)?;
            }
        }
        self.size += len;
        Ok(self)
    }
}

/// Maps a failure of the request body stream to the S3 error the client should see: s3s
/// reports signature and length problems as errors in the stream itself.
fn body_error(e: s3s::StdError) -> RequestError {
    let other = match e.downcast::<s3s::S3Error>() {
        Ok(s3) => return RequestError::Protocol(*s3),
        Err(other) => other,
    };
    // s3s's stream error types are private; their messages name the failed check.
    let text = other.to_string();
    if text.contains("Sha256Mismatch") {
        RequestError::ContentSha256Mismatch
    } else if text.contains("SignatureMismatch") {
        RequestError::ChunkSignatureMismatch
    } else {
        RequestError::IncompleteBody(text)
    }
}

/// Where [`receive_body`] is with a body: nothing written yet, or the disk write and the
/// hashing of the last batch under way on the blocking pool, side by side (MD5 alone runs at
/// about the speed of the network read, so one thread for both would halve a large upload).
enum State {
    Fresh(Dest, Box<Digests>),
    Busy {
        sink: JoinHandle<RequestResult<Sink>>,
        digests: JoinHandle<Digests>,
    },
}

async fn join<T>(h: JoinHandle<T>) -> RequestResult<T> {
    h.await
        .map_err(|e| RequestError::Internal(format!("worker failed: {e}")))
}

impl State {
    /// Waits for the batch under way (at most one is), then starts writing and hashing
    /// `pieces` on the blocking pool.
    async fn write(self, pieces: Vec<Bytes>, full: bool) -> RequestResult<State> {
        let pieces = Arc::new(pieces);
        let (sink, digests) = match self {
            State::Fresh(dest, digests) => {
                let p = pieces.clone();
                let sink = tokio::task::spawn_blocking(move || Sink::open(dest)?.write(&p, full));
                (sink, *digests)
            }
            State::Busy { sink, digests } => {
                let (sink, digests) = (join(sink).await??, join(digests).await?);
                let p = pieces.clone();
                (
                    tokio::task::spawn_blocking(move || sink.write(&p, full)),
                    digests,
                )
            }
        };
        let digests = tokio::task::spawn_blocking(move || digests.update(&pieces));
        Ok(State::Busy { sink, digests })
    }

    /// The sink and the digests once every batch is written (the sink opened now if
    /// nothing was).
    async fn finish(self) -> RequestResult<(Sink, Digests)> {
        match self {
            State::Fresh(dest, digests) => {
                let sink = join(tokio::task::spawn_blocking(move || Sink::open(dest))).await??;
                Ok((sink, *digests))
            }
            State::Busy { sink, digests } => Ok((join(sink).await??, join(digests).await?)),
        }
    }
}

/// Reads and drops the body of a request refused before its body was read, unless the client
/// waits for `100 Continue` (then it sends none). A client that sends its body unasked reads
/// the answer only once it has sent it, and a connection closed on unread bytes is reset,
/// losing the answer. The body timeout still cuts off a client that stalls.
pub(crate) async fn discard_body(headers: &http::HeaderMap, body: Option<StreamingBlob>) {
    let waits = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let (false, Some(mut body)) = (waits, body) {
        while let Some(Ok(_)) = body.next().await {}
    }
}

/// Streams a request body to `dest`, hashing as it goes, then checks Content-MD5 and
/// checksums (from headers or aws-chunked trailers).
pub(crate) async fn receive_body(
    dest: Dest,
    body: Option<StreamingBlob>,
    expect: &Expect,
    trailers: Option<TrailingHeaders>,
) -> RequestResult<Received> {
    let digests = Digests {
        md5: Md5::new(),
        other: expect.hasher(),
    };
    let mut state = State::Fresh(dest, Box::new(digests));
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut pending = 0usize;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            if chunk.is_empty() {
                continue;
            }
            pending += chunk.len();
            pieces.push(chunk);
            if pending >= WRITE_BATCH || pieces.len() >= MAX_PIECES {
                state = state.write(std::mem::take(&mut pieces), true).await?;
                pending = 0;
            }
        }
    }
    let trailer_map = trailers.and_then(|t| t.take());
    let (landed, size, digests) = match state {
        State::Fresh(Dest::Temp { .. }, digests) if pending <= SMALL_BODY => {
            let bytes = match pieces.len() {
                1 => pieces.pop().unwrap_or_default(),
                _ => {
                    let mut all = BytesMut::with_capacity(pending);
                    for p in &pieces {
                        all.extend_from_slice(p);
                    }
                    all.freeze()
                }
            };
            let digests = digests.update(std::slice::from_ref(&bytes));
            let size = bytes.len() as u64;
            (Landed::Memory(bytes), size, digests)
        }
        state => {
            let state = if pieces.is_empty() {
                state
            } else {
                state.write(pieces, false).await?
            };
            let (sink, digests) = state.finish().await?;
            let landed = match sink.out {
                Out::Temp(t) => Landed::Temp(t),
                Out::Slot(s) => Landed::Slot(s),
            };
            (landed, sink.size, digests)
        }
    };
    let md5: [u8; 16] = digests.md5.finalize().into();
    let computed = digests.other.finalize();
    let checksums = expect.verify(&md5, &computed, trailer_map.as_ref())?;
    Ok(Received {
        landed,
        size,
        md5,
        checksums,
    })
}
