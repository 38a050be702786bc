//! One pipeline per rendition, and the tee of a live transcode into the renditions store.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::claims::Claim;
use crate::renditions::{RenditionInfo, RenditionStore};
use crate::{MediaError, TranscodeStream};

/// Renditions being produced, by name; each receiver turns `true` when its producer is done
/// (finished or not).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

/// What a request does about a rendition that is not finished.
pub(crate) enum Step {
    /// Another request is producing it: wait for this to turn `true`.
    Wait(watch::Receiver<bool>),
    /// This request produces it, in this transcode slot.
    Produce(Producer, OwnedSemaphorePermit),
    /// No transcode slot is free.
    Busy,
}

impl Flights {
    /// Joins the producer of `name`, or becomes it if one of `slots` is free.
    pub(crate) fn step(self: &Arc<Self>, name: &str, slots: &Arc<Semaphore>) -> Step {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(rx) = inflight.get(name)
            && !*rx.borrow()
        {
            return Step::Wait(rx.clone());
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            return Step::Busy;
        };
        let (tx, rx) = watch::channel(false);
        inflight.insert(name.to_owned(), rx);
        let producer = Producer {
            flights: self.clone(),
            name: name.to_owned(),
            done: tx,
        };
        Step::Produce(producer, slot)
    }
}

/// The one producer of a rendition. Dropping it (finished, failed or abandoned) releases
/// the requests waiting for it.
pub(crate) struct Producer {
    flights: Arc<Flights>,
    name: String,
    done: watch::Sender<bool>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.flights
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&self.name);
        let _ = self.done.send(true);
    }
}

/// A live transcode passed to the client and copied into the renditions store; the copy
/// becomes a rendition only if the whole stream was produced. Dropping it (client gone)
/// drops the pipeline, which stops within about 100 ms, removes the partial copy and frees
/// the transcode slot. Poll it inside a tokio runtime (the install runs on its blocking pool).
pub struct LiveRendition {
    inner: TranscodeStream,
    info: RenditionInfo,
    store: RenditionStore,
    name: String,
    part: PathBuf,
    copy: Option<File>,
    producer: Option<Producer>,
    _slot: OwnedSemaphorePermit,
    /// Given up once the rendition is installed (or abandoned), after the producer.
    claim: Option<Claim>,
}

impl std::fmt::Debug for LiveRendition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRendition")
            .field("name", &self.name)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LiveRendition {
    pub(crate) fn new(
        inner: TranscodeStream,
        store: RenditionStore,
        name: String,
        producer: Producer,
        slot: OwnedSemaphorePermit,
        claim: Claim,
    ) -> Self {
        let info = RenditionInfo {
            width: inner.width,
            height: inner.height,
            encoder: inner.encoder.element_name().to_owned(),
            segments: None,
        };
        let part = store.part_path(&name);
        // Without a copy (store full or gone) the stream is still served.
        let copy = File::create(&part).ok();
        LiveRendition {
            inner,
            info,
            store,
            name,
            part,
            copy,
            producer: Some(producer),
            _slot: slot,
            claim: Some(claim),
        }
    }

    /// What is being produced.
    pub fn info(&self) -> &RenditionInfo {
        &self.info
    }

    /// The stream ended: the copy is complete. Installed on the blocking pool; requests
    /// waiting for this rendition are released once it is in place.
    fn complete(&mut self) {
        let (Some(copy), Some(producer)) = (self.copy.take(), self.producer.take()) else {
            return;
        };
        let claim = self.claim.take();
        drop(copy);
        let (store, part, name, info) = (
            self.store.clone(),
            std::mem::take(&mut self.part),
            self.name.clone(),
            self.info.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.install(&part, &name, &info) {
                tracing::warn!(rendition = %name, error = %e, "rendition not kept");
                let _ = std::fs::remove_file(&part);
            }
            drop(producer);
            drop(claim);
        });
    }
}

impl Stream for LiveRendition {
    type Item = Result<Bytes, MediaError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some(f) = self.copy.as_mut()
                    && f.write_all(&bytes).is_err()
                {
                    // The store is full or gone: keep streaming, just do not keep a copy.
                    self.copy = None;
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, rendition = %self.name, "live transcode failed");
                self.copy = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.complete();
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for LiveRendition {
    fn drop(&mut self) {
        // Taken by `complete` when the copy went to be installed.
        if !self.part.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}
