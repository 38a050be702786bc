//! The free-space reserve (`--min-free`): a write is refused, before any of its bytes are
//! read, when it would leave less than the reserve free on a filesystem the gateway writes to
//! (the data folder's, which also holds the catalog, metadata sidecars and multipart staging,
//! and that of any bucket mounted from another disk). The small writes that cannot be refused
//! cleanly (the catalog's rows, metadata, a delete's marker or a version record) then always
//! find room, and a full disk is a clear `507` instead of a failure half-way through.
//!
//! Asking the kernel (`statvfs`) for every small PUT would cost a syscall each, so the figures
//! of each filesystem are kept for [`FRESH_FOR`] and trusted while a write leaves well over
//! the reserve free ([`NEAR`]); close to it, and before any refusal, they are read again, so a
//! delete that freed space counts at once. A write holds a [`SpaceClaim`] of its declared
//! size from its admission until it ends: concurrent uploads cannot all be admitted into the
//! same free space.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fsutil::{self, DiskSpace};
use super::{StoreError, StoreResult};

/// How long a filesystem's figures (and which filesystem a bucket is on) are trusted.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A write that would leave less than this above the reserve is decided on fresh figures.
const NEAR: u64 = 64 << 20;

/// How much free space writes must leave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// No reserve: writes go on until the filesystem itself refuses (`ENOSPC`, also a 507).
    Off,
    /// A number of bytes on every filesystem written to.
    Bytes(u64),
    /// A share of each filesystem's size, in percent (more than 0, less than 100).
    Percent(f64),
}

impl MinFree {
    /// The reserve on a filesystem of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFree::Off => 0,
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Off => f.write_str("0 (off)"),
            MinFree::Bytes(b) => f.write_str(&human(*b)),
            MinFree::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What a write's admission decides from a filesystem's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fits with room to spare: cached figures are good enough.
    Fits,
    /// Fits, but close to the reserve: decide on fresh figures.
    Near,
    /// Would leave less than the reserve free.
    Refused,
}

/// Decides a write of `incoming` bytes on a filesystem with `available` bytes free, of which
/// admitted writes still in progress hold `claimed`, keeping `reserve` free.
pub fn decide(available: u64, claimed: u64, incoming: u64, reserve: u64) -> Verdict {
    let needed = u128::from(reserve) + u128::from(claimed) + u128::from(incoming);
    let available = u128::from(available);
    if available < needed {
        Verdict::Refused
    } else if available - needed < u128::from(NEAR) {
        Verdict::Near
    } else {
        Verdict::Fits
    }
}

/// Bytes as people read them (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One filesystem written to: its last figures and the bytes admitted writes still hold.
#[derive(Debug)]
struct Fs {
    /// A folder on it, for `statvfs`.
    path: PathBuf,
    /// The figures and when they were read (`None`: never).
    figures: Mutex<Option<(Instant, DiskSpace)>>,
    claimed: AtomicU64,
}

impl Fs {
    fn fresh(&self, now: Instant) -> Option<DiskSpace> {
        match *self.figures.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, space)) if now.duration_since(at) < FRESH_FOR => Some(space),
            _ => None,
        }
    }

    fn read(&self) -> std::io::Result<DiskSpace> {
        let space = fsutil::disk_space(&self.path)?;
        *self.figures.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), space));
        Ok(space)
    }
}

/// Bytes a write was admitted with, counted against its filesystem until dropped.
#[derive(Debug, Default)]
#[must_use = "the space is held only while the claim lives"]
pub struct SpaceClaim {
    held: Option<(Arc<Fs>, u64)>,
}

impl SpaceClaim {
    /// Holds `bytes` on `fs`; also returns what other writes held there just before.
    fn take(fs: Arc<Fs>, bytes: u64) -> (Self, u64) {
        let others = fs.claimed.fetch_add(bytes, Ordering::Relaxed);
        let claim = SpaceClaim {
            held: Some((fs, bytes)),
        };
        (claim, others)
    }
}

impl Drop for SpaceClaim {
    fn drop(&mut self) {
        if let Some((fs, bytes)) = self.held.take() {
            fs.claimed.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// A filesystem the gateway writes to, as health reports it.
#[derive(Debug, Clone)]
pub struct FsReport {
    /// The data folder, or the first bucket folder on that filesystem.
    pub path: PathBuf,
    /// Buckets on it (empty for the data folder's filesystem).
    pub buckets: Vec<String>,
    /// Its size and free space.
    pub space: DiskSpace,
    /// The reserve writes keep free on it.
    pub min_free: u64,
    /// True while writes are refused there (less than the reserve free).
    pub writes_refused: bool,
}

/// The reserve and the figures of every filesystem written to (one per [`super::Store`]).
#[derive(Debug)]
pub struct Space {
    min_free: MinFree,
    root: PathBuf,
    root_dev: u64,
    /// By device number; the data folder's is always there.
    filesystems: Mutex<HashMap<u64, Arc<Fs>>>,
    /// Which device each bucket folder was on, and when that was looked up.
    buckets: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Space {
    /// The reserve over the data folder `root` (on device `root_dev`).
    pub fn new(min_free: MinFree, root: &Path, root_dev: u64) -> Self {
        let root_fs = Arc::new(Fs {
            path: root.to_owned(),
            figures: Mutex::new(None),
            claimed: AtomicU64::new(0),
        });
        Space {
            min_free,
            root: root.to_owned(),
            root_dev,
            filesystems: Mutex::new(HashMap::from([(root_dev, root_fs)])),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The reserve as configured.
    pub fn min_free(&self) -> MinFree {
        self.min_free
    }

    fn fs(&self, dev: u64, path: &Path) -> Arc<Fs> {
        self.filesystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dev)
            .or_insert_with(|| {
                Arc::new(Fs {
                    path: path.to_owned(),
                    figures: Mutex::new(None),
                    claimed: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn root_fs(&self) -> Arc<Fs> {
        self.fs(self.root_dev, &self.root)
    }

    /// The filesystem of `bucket` (`None`: the data folder's, or not looked up lately).
    fn cached_bucket_fs(&self, bucket: &str, now: Instant) -> Option<Arc<Fs>> {
        let (dev, at) = *self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)?;
        if now.duration_since(at) >= FRESH_FOR {
            return None;
        }
        self.filesystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dev)
            .cloned()
    }

    /// Looks up which filesystem `bucket`'s folder is on (the data folder's when it does not
    /// exist: the write fails on its own then).
    fn bucket_fs(&self, bucket: &str) -> Arc<Fs> {
        let path = self.root.join(bucket);
        let Ok(md) = std::fs::metadata(&path) else {
            return self.root_fs();
        };
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bucket.to_owned(), (md.dev(), Instant::now()));
        self.fs(md.dev(), &path)
    }

    /// Admits a write of `bytes` into `bucket` from cached figures alone, without a syscall:
    /// `None` when they are stale or the write comes near the reserve (then
    /// [`Space::admit`], which may block, decides).
    pub fn admit_cached(&self, bucket: Option<&str>, bytes: u64) -> Option<SpaceClaim> {
        if self.min_free == MinFree::Off {
            return Some(SpaceClaim::default());
        }
        let now = Instant::now();
        let root = self.root_fs();
        let dest = match bucket {
            Some(b) => self.cached_bucket_fs(b, now)?,
            None => root.clone(),
        };
        let fits = |fs: &Fs, claimed: u64, bytes: u64| {
            fs.fresh(now).is_some_and(|s| {
                let reserve = self.min_free.bytes_of(s.total);
                decide(s.available, claimed, bytes, reserve) == Verdict::Fits
            })
        };
        if !Arc::ptr_eq(&dest, &root) && !fits(&root, root.claimed.load(Ordering::Relaxed), 0) {
            return None;
        }
        // Claimed before deciding, so two writes deciding at once each count the other.
        let (claim, others) = SpaceClaim::take(dest.clone(), bytes);
        fits(&dest, others, bytes).then_some(claim)
    }

    /// Admits a write of `bytes` into `bucket` (`None`: into the reserved folder, as
    /// multipart staging), reading the figures again where they are stale or close to the
    /// reserve. Refused with [`StoreError::BelowReserve`]; may block (`statvfs`).
    pub fn admit(&self, bucket: Option<&str>, bytes: u64) -> StoreResult<SpaceClaim> {
        if let Some(claim) = self.admit_cached(bucket, bytes) {
            return Ok(claim);
        }
        let root = self.root_fs();
        let dest = match bucket {
            Some(b) => self.bucket_fs(b),
            None => root.clone(),
        };
        // The data folder's filesystem takes the catalog's and the metadata's writes even
        // when the bytes go to a bucket on another disk.
        if !Arc::ptr_eq(&dest, &root) {
            self.check(&root, root.claimed.load(Ordering::Relaxed), 0, None)?;
        }
        let (claim, others) = SpaceClaim::take(dest.clone(), bytes);
        self.check(&dest, others, bytes, bucket)?;
        Ok(claim)
    }

    /// Refuses unless `bytes` more leave the reserve free on `fs`, by its current figures,
    /// where other writes hold `claimed`.
    fn check(&self, fs: &Fs, claimed: u64, bytes: u64, bucket: Option<&str>) -> StoreResult<()> {
        let space = fs.read()?;
        let reserve = self.min_free.bytes_of(space.total);
        if decide(space.available, claimed, bytes, reserve) != Verdict::Refused {
            return Ok(());
        }
        let place = match bucket {
            Some(b) if fs.path != self.root => format!("the disk of bucket '{b}'"),
            _ => "the gateway's data folder".to_owned(),
        };
        let outcome = if bytes > 0 {
            format!("this write of {} does not fit", human(bytes))
        } else {
            "writes are refused".to_owned()
        };
        Err(StoreError::BelowReserve(format!(
            "not enough free space: {place} has {} free and the gateway keeps {} free (--min-free), \
             so {outcome}; deleting objects frees space (reads, listings and deletes still work)",
            human(space.available.saturating_sub(claimed)),
            human(reserve)
        )))
    }

    /// The data folder's filesystem, then each other filesystem a bucket folder is on, with
    /// fresh figures. Blocking.
    pub fn report(&self, buckets: &[String]) -> Vec<FsReport> {
        let mut out: Vec<(u64, FsReport)> = Vec::new();
        let mut add = |dev: u64, path: &Path, bucket: Option<&str>| {
            if let Some((_, r)) = out.iter_mut().find(|(d, _)| *d == dev) {
                r.buckets.extend(bucket.map(str::to_owned));
                return;
            }
            let fs = self.fs(dev, path);
            let Ok(space) = fs.read() else {
                return;
            };
            let min_free = self.min_free.bytes_of(space.total);
            let claimed = fs.claimed.load(Ordering::Relaxed);
            out.push((
                dev,
                FsReport {
                    path: path.to_owned(),
                    buckets: bucket.map(str::to_owned).into_iter().collect(),
                    space,
                    min_free,
                    writes_refused: self.min_free != MinFree::Off
                        && decide(space.available, claimed, 0, min_free) == Verdict::Refused,
                },
            ));
        };
        add(self.root_dev, &self.root, None);
        for b in buckets {
            let path = self.root.join(b);
            if let Ok(md) = std::fs::metadata(&path)
                && md.dev() != self.root_dev
            {
                add(md.dev(), &path, Some(b));
            }
        }
        out.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_against_the_reserve_and_the_claims() {
        let gib = 1u64 << 30;
        assert_eq!(decide(10 * gib, 0, gib, gib), Verdict::Fits);
        // Exactly the reserve left is allowed; a byte more is not.
        assert_eq!(decide(2 * gib, 0, gib, gib), Verdict::Near);
        assert_eq!(decide(2 * gib, 0, gib + 1, gib), Verdict::Refused);
        // Writes in progress hold their bytes.
        assert_eq!(decide(3 * gib, gib, gib + 1, gib), Verdict::Refused);
        // Already below the reserve: even an empty write is refused.
        assert_eq!(decide(gib - 1, 0, 0, gib), Verdict::Refused);
        assert_eq!(decide(0, 0, 0, 0), Verdict::Near);
        assert_eq!(
            decide(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
            Verdict::Refused
        );
    }

    #[test]
    fn percent_reserves_scale_with_the_filesystem() {
        assert_eq!(MinFree::Percent(5.0).bytes_of(1000), 50);
        assert_eq!(MinFree::Bytes(7).bytes_of(1000), 7);
        assert_eq!(MinFree::Off.bytes_of(1000), 0);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }

    #[test]
    fn admits_until_the_reserve_then_refuses_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        let free = fsutil::disk_space(dir.path()).unwrap().available;
        // A reserve well under what is free now (other writers may take some meanwhile): a
        // small write fits, one of a pebibyte does not.
        let space = Space::new(
            MinFree::Bytes(free.saturating_sub(256 << 20)),
            dir.path(),
            dev,
        );
        let claim = space.admit(None, 1024).expect("1 KiB fits");
        let err = space.admit(None, 1 << 50).expect_err("1 PiB does not fit");
        let text = err.to_string();
        assert!(matches!(err, StoreError::BelowReserve(_)), "{err:?}");
        assert!(
            text.contains("data folder") && text.contains("--min-free"),
            "{text}"
        );
        drop(claim);
        // Admitted writes hold their bytes until they end: two that fit only one at a time
        // are not both admitted; the second fits once the first is dropped.
        let free = fsutil::disk_space(dir.path()).unwrap().available;
        let half = (free / 2).min(1 << 40);
        let space = Space::new(MinFree::Bytes(free - half - (64 << 20)), dir.path(), dev);
        let first = space
            .admit(None, half / 2 + (48 << 20))
            .expect("the first fits");
        assert!(space.admit(None, half / 2 + (48 << 20)).is_err());
        drop(first);
        assert!(space.admit(None, half / 2 + (48 << 20)).is_ok());
        let off = Space::new(MinFree::Off, dir.path(), dev);
        assert!(off.admit(None, u64::MAX).is_ok());
        let report = space.report(&[]);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].path, dir.path());
    }
}
