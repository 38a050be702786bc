//! Every call the store makes to the filesystem below std's `File`, through `rustix`'s safe
//! wrappers: folder descriptors and `*at` calls that stay inside a bucket folder (`openat2`
//! with `RESOLVE_BENEATH`, lookups that follow no symlink), reading folders, xattrs, durable
//! writes (`fsync`, `rename`, `link`), kernel copies, `O_DIRECT` appends, `statvfs`, and
//! `flock` (through std's `File::lock`). The two file calls nothing safe covers are in
//! [`super::sys`].

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, XattrFlags};
use rustix::io::Errno;

pub use rustix::fs::{FileType, Statx};

use super::sys;

/// Mode of the folders the store creates.
const DIR_MODE: Mode = Mode::from_raw_mode(0o755);

/// Opens a folder as a descriptor usable as the base of `*at` calls.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` below `base` for reading; symlinks may be followed only while they stay below
/// `base` (`RESOLVE_BENEATH`), so no key can reach outside its bucket. Non-blocking open keeps a
/// FIFO someone dropped into a bucket from hanging the request.
pub fn open_beneath(base: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    match rustix::fs::openat2(
        base,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOSYS) => open_nofollow_fallback(base, rel),
        Err(e) => Err(e.into()),
    }
}

/// Opens `rel` below `base` for reading, following no symlink at all, and only when every
/// path component is already in the kernel's lookup cache (`RESOLVE_CACHED`, Linux 5.12): such
/// an open never waits for the disk, so it may run on an async worker thread. `None` means
/// "not cached, or not known here" (including any error, and kernels without
/// `RESOLVE_CACHED`): the caller takes its blocking path, which gives the authoritative answer.
pub fn open_cached_nofollow(base: BorrowedFd<'_>, rel: &Path) -> Option<File> {
    rustix::fs::openat2(
        base,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::CACHED,
    )
    .ok()
    .map(File::from)
}

/// Reads `len` bytes at `off` into a fresh buffer, but only if they are all in the page cache
/// (`RWF_NOWAIT`), so the read never waits for the disk and may run on an async worker.
/// `None` when some are not (or the filesystem cannot tell): the caller reads on the blocking
/// pool instead.
pub fn read_block_cached(file: &File, len: usize, off: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    // A short read means part of the range was not cached (or the file shrank): the blocking
    // path sorts it out.
    sys::preadv2_nowait_into(file, &mut buf, len, off).then_some(buf)
}

/// `statx` of `name` in `dir` without following a symlink: size, times and identity of a
/// folder entry without opening it.
pub fn statx_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Statx> {
    Ok(rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_SYNC_AS_STAT,
        StatxFlags::BASIC_STATS,
    )?)
}

/// The type of file a `statx` result describes.
pub fn statx_type(st: &Statx) -> FileType {
    FileType::from_raw_mode(st.stx_mode.into())
}

/// Device number of the filesystem an open file or folder is on.
pub fn device(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_dev)
}

/// Opens `name` in `dir` for reading, refusing a symlink (`O_NOFOLLOW`).
fn open_nofollow_at(dir: BorrowedFd<'_>, name: &Path, extra: OFlags) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra;
    Ok(File::from(rustix::fs::openat(
        dir,
        name,
        flags,
        Mode::empty(),
    )?))
}

/// For kernels before 5.6: walk the path one component at a time without following symlinks.
fn open_nofollow_fallback(base: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let dir = open_parent_nofollow(base, rel, false)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    open_nofollow_at(dir.as_fd(), Path::new(name), OFlags::NONBLOCK)
}

/// Opens the subfolder `name` of `dir` for reading its entries, refusing a symlink.
pub fn open_subdir_nofollow(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    open_nofollow_at(dir, Path::new(name), OFlags::DIRECTORY)
}

/// Opens the file `name` in `dir` for reading, refusing a symlink. Non-blocking so a FIFO
/// swapped in meanwhile cannot hang the caller.
pub fn open_file_nofollow(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    open_nofollow_at(dir, Path::new(name), OFlags::NONBLOCK)
}

/// Opens (and with `create`, makes) the parent folders of `rel` below `base`, one component at a
/// time, never following a symlink. A component that is a file gives `NotADirectory`.
pub fn open_parent_nofollow(base: BorrowedFd<'_>, rel: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut cur = rustix::io::dup(base)?;
    let Some(parent) = rel.parent() else {
        return Ok(cur);
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for comp in parent.components() {
        let name = comp.as_os_str();
        // The folder usually exists already: try it before making it.
        let mut opened = rustix::fs::openat(&cur, name, flags, Mode::empty());
        if create && matches!(opened, Err(Errno::NOENT)) {
            match rustix::fs::mkdirat(&cur, name, DIR_MODE) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            opened = rustix::fs::openat(&cur, name, flags, Mode::empty());
        }
        cur = match opened {
            Ok(fd) => fd,
            // The component is a file, or a symlink, which we refuse to write through.
            Err(Errno::NOTDIR | Errno::LOOP) => {
                return Err(io::Error::from(io::ErrorKind::NotADirectory));
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(cur)
}

/// Makes `name` a folder in `dir` (no error if it is one already).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    match rustix::fs::mkdirat(dir, name, DIR_MODE) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the new file `name` in `dir` for reading and writing; fails with `AlreadyExists` if
/// there is one.
pub fn create_new_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644))?;
    Ok(File::from(fd))
}

/// Atomically replaces `to` in `to_dir` with `from` in `from_dir`.
pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// Atomically swaps the entries `a` in `a_dir` and `b` in `b_dir` (`renameat2` with
/// `RENAME_EXCHANGE`): both names exist before and after, so a file can become a folder with
/// no moment where neither is there.
pub fn exchange_at(
    a_dir: BorrowedFd<'_>,
    a: &Path,
    b_dir: BorrowedFd<'_>,
    b: &Path,
) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        a_dir,
        a,
        b_dir,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )?)
}

/// Atomically creates `to` as a new name of `from`; fails with `AlreadyExists` if `to` exists.
/// Used for conditional creates (`If-None-Match: *`) without a check-then-act race.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_dir,
        from,
        to_dir,
        to,
        AtFlags::empty(),
    )?)
}

/// Removes the file `name` in `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the empty folder `name` in `dir`.
pub fn rmdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Opens the folder `dir` itself for reading (an `O_PATH` descriptor can be neither fsync'ed
/// nor listed).
fn reopen_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Flushes a folder's entries so a completed rename survives a crash.
pub fn fsync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    File::from(reopen_dir(dir)?).sync_all()
}

/// Bytes of folder entries read per `getdents64` call (what glibc's `readdir` uses).
const DIR_BUF: usize = 32 * 1024;

/// Calls `f` with the name and type of every entry of the folder `dir` except `.` and `..`.
/// Types come from the folder itself (no `stat` per entry) except on filesystems that do not
/// report them, where each such entry is looked up without following a symlink.
pub fn read_dir(dir: BorrowedFd<'_>, mut f: impl FnMut(&[u8], FileType)) -> io::Result<()> {
    let fd = reopen_dir(dir)?;
    let mut buf: Vec<u8> = Vec::with_capacity(DIR_BUF);
    let mut entries = rustix::fs::RawDir::new(&fd, buf.spare_capacity_mut());
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => type_by_stat(fd.as_fd(), entry.file_name()),
            known => known,
        };
        f(name, kind);
    }
    Ok(())
}

/// File type by `statx` without following a symlink, for filesystems whose folders do not
/// record types.
fn type_by_stat(dir: BorrowedFd<'_>, name: &CStr) -> FileType {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_SYNC_AS_STAT,
        StatxFlags::TYPE,
    )
    .map_or(FileType::Unknown, |st| statx_type(&st))
}

/// Bytes of an xattr value read in one call before asking the size (covers the usual record).
const XATTR_STACK: usize = 1024;

/// Reads the xattr `name` of an open file and hands its value to `f`; `Ok(None)` when the file
/// has none. One `fgetxattr` into a stack buffer covers the usual record (asking the size first
/// would be two calls per read, and this runs for every GET, HEAD and listed key); only larger
/// values are read again into a buffer of their size.
pub fn with_xattr<R>(
    file: &File,
    name: &CStr,
    f: impl FnOnce(&[u8]) -> R,
) -> io::Result<Option<R>> {
    let mut stack = [0u8; XATTR_STACK];
    match rustix::fs::fgetxattr(file, name, &mut stack[..]) {
        Ok(n) => return Ok(Some(f(&stack[..n]))),
        Err(Errno::NODATA) => return Ok(None),
        Err(Errno::RANGE) => {}
        Err(e) => return Err(e.into()),
    }
    loop {
        let size = match rustix::fs::fgetxattr_query(file, name) {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut heap = vec![0u8; size];
        match rustix::fs::fgetxattr(file, name, &mut heap[..]) {
            Ok(n) => return Ok(Some(f(&heap[..n]))),
            Err(Errno::NODATA) => return Ok(None),
            // It grew between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets the xattr `name` of an open file to `value`.
pub fn set_xattr(file: &File, name: &CStr, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        file,
        name,
        value,
        XattrFlags::empty(),
    )?)
}

/// Removes the xattr `name` of an open file.
pub fn remove_xattr(file: &File, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::fremovexattr(file, name)?)
}

/// Takes an exclusive `flock` on the folder `dir` (any descriptor of it, `O_PATH` included),
/// waiting for it; the lock is held until the returned file is dropped.
pub fn lock_dir(dir: BorrowedFd<'_>) -> io::Result<File> {
    let f = File::from(reopen_dir(dir)?);
    lock(&f, true)?;
    Ok(f)
}

/// Takes an exclusive or shared `flock` on an open file, waiting for it.
pub fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    loop {
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        match locked {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Size.
    pub total: u64,
    /// Free, including blocks reserved for root.
    pub free: u64,
    /// Free for an unprivileged writer such as the gateway.
    pub available: u64,
}

/// Size and free space of the filesystem holding `path` (`statvfs`).
pub fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    let s = rustix::fs::statvfs(path)?;
    Ok(DiskSpace {
        total: s.f_blocks.saturating_mul(s.f_frsize),
        free: s.f_bfree.saturating_mul(s.f_frsize),
        available: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

/// Reads exactly `len` bytes at `off` into a fresh buffer that is never zero-filled first:
/// streaming a large object is a few memory copies per byte, and clearing every 1 MiB block
/// before the read overwrites it would add one more.
pub fn read_block_at(file: &File, len: usize, off: u64) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = off + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ));
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The allocation may have room for more than asked, and the reads may have filled it.
    buf.truncate(len);
    Ok(buf)
}

/// Bytes per read and write when a copy cannot be done in the kernel.
const COPY_BLOCK: usize = 1024 * 1024;

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off` in the kernel (reflinks
/// where the filesystem can). Unlike [`copy_range`] it leaves the file offsets alone, so
/// several threads can fill different ranges of one file at once.
pub fn copy_range_at(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    mut len: u64,
) -> io::Result<()> {
    while len > 0 {
        let chunk = len.min(1 << 30) as usize;
        let (mut so, mut d) = (src_off, dst_off);
        let n = match rustix::fs::copy_file_range(src, Some(&mut so), dst, Some(&mut d), chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source file shorter than expected",
                ));
            }
            Ok(n) => n as u64,
            Err(Errno::INTR) => continue,
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                // Fall back to positioned reads and writes in large blocks.
                let mut buf = vec![0u8; COPY_BLOCK];
                while len > 0 {
                    let want = (len as usize).min(buf.len());
                    src.read_exact_at(&mut buf[..want], src_off)?;
                    dst.write_all_at(&buf[..want], dst_off)?;
                    src_off += want as u64;
                    dst_off += want as u64;
                    len -= want as u64;
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        src_off += n;
        dst_off += n;
        len -= n;
    }
    Ok(())
}

/// Copies `len` bytes from `src` at `src_off` to the current position of `dst` in the kernel
/// (reflinks where the filesystem can), without passing through user space; `dst`'s position
/// moves past the copied bytes, as a write would.
pub fn copy_range(src: &File, src_off: u64, dst: &File, len: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut d = dst;
    let pos = d.stream_position()?;
    copy_range_at(src, src_off, dst, pos, len)?;
    d.seek(SeekFrom::Start(pos + len))?;
    Ok(())
}

/// `IOV_MAX` on Linux: buffers passed to one `pwritev` at most.
const IOV_MAX: usize = 1024;

/// Writes every buffer of `bufs`, in order, at `off` with as few `pwritev` calls as the kernel
/// allows: a request body arrives in many small pieces, and gathering them into one buffer
/// first would copy every byte once more.
pub fn pwritev_all(file: &File, bufs: &[bytes::Bytes], mut off: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| io::IoSlice::new(b))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        let n = match rustix::io::pwritev(file, &rest[..count], off) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        off += n as u64;
        // Drops what was written; a short write leaves a partly written buffer to resume.
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `off` back to disk now, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a large upload then reaches the disk while the
/// rest of it is still arriving, and the fsync that makes it durable has only the tail left to
/// wait for. Purely an optimisation: errors are ignored, the fsync reports real ones.
pub fn start_writeback(file: &File, off: u64, len: u64) {
    sys::sync_file_range_write(file, off, len);
}

/// Alignment of `O_DIRECT` transfers: buffer address, length and file offset (the largest
/// logical block size in common use).
pub const DIRECT_ALIGN: usize = 4096;

/// Opens `path` for writing with `O_DIRECT` (the page cache passed by); fails with
/// `InvalidInput` (`EINVAL`) on filesystems that refuse it (tmpfs before Linux 6.6, some FUSE).
pub fn open_direct(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .custom_flags((OFlags::DIRECT | OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// Bytes gathered before one `O_DIRECT` write.
const DIRECT_BLOCK: usize = 1024 * 1024;

/// Appends to a file with `O_DIRECT`, through an aligned buffer: large uploads skip the page
/// cache. Copying every byte into the page cache and writing it back later cost more CPU than
/// the copy into this buffer (here several times more, when the kernel had just freed the
/// pages it then reuses), and the fsync at the end has nothing left to write back. The last
/// bytes that do not fill an aligned block go through the ordinary handle the caller passes
/// (`buffered`, on the same file), as does everything if a write is refused after all.
pub struct DirectAppender {
    /// The `O_DIRECT` handle; None once a write was refused.
    direct: Option<File>,
    buf: Vec<u8>,
    /// Where the aligned window starts in `buf`.
    start: usize,
    fill: usize,
    /// File offset of the buffer's first byte.
    pos: u64,
}

impl std::fmt::Debug for DirectAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectAppender")
            .field("direct", &self.direct.is_some())
            .field("pos", &self.pos)
            .field("fill", &self.fill)
            .finish()
    }
}

impl DirectAppender {
    /// An appender writing the file at `path` from `pos`; None when `pos` is not aligned or
    /// the filesystem refuses `O_DIRECT` (the caller then writes as usual).
    pub fn new(path: &Path, pos: u64) -> Option<Self> {
        if !pos.is_multiple_of(DIRECT_ALIGN as u64) {
            return None;
        }
        let direct = open_direct(path).ok()?;
        let buf = vec![0u8; DIRECT_BLOCK + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        Some(DirectAppender {
            direct: Some(direct),
            buf,
            start,
            fill: 0,
            pos,
        })
    }

    /// Appends `pieces`; every full block goes to disk now.
    pub fn write(&mut self, pieces: &[bytes::Bytes], buffered: &File) -> io::Result<()> {
        for piece in pieces {
            let mut piece = &piece[..];
            while !piece.is_empty() {
                let take = (DIRECT_BLOCK - self.fill).min(piece.len());
                let at = self.start + self.fill;
                self.buf[at..at + take].copy_from_slice(&piece[..take]);
                self.fill += take;
                piece = &piece[take..];
                if self.fill == DIRECT_BLOCK {
                    self.flush(DIRECT_BLOCK, buffered)?;
                }
            }
        }
        Ok(())
    }

    /// Writes whatever is still buffered: the aligned part directly, the rest through the
    /// ordinary handle.
    pub fn finish(&mut self, buffered: &File) -> io::Result<()> {
        let aligned = self.fill / DIRECT_ALIGN * DIRECT_ALIGN;
        if aligned > 0 {
            self.flush(aligned, buffered)?;
        }
        if self.fill > 0 {
            let window = &self.buf[self.start..self.start + self.fill];
            buffered.write_all_at(window, self.pos)?;
            self.pos += self.fill as u64;
            self.fill = 0;
        }
        Ok(())
    }

    /// Writes the first `len` (aligned) buffered bytes and keeps the rest for the next block.
    fn flush(&mut self, len: usize, buffered: &File) -> io::Result<()> {
        let window = &self.buf[self.start..self.start + len];
        let direct = match &self.direct {
            Some(f) => f.write_all_at(window, self.pos),
            None => buffered.write_all_at(window, self.pos),
        };
        match direct {
            Ok(()) => {}
            // Refused after all (some filesystems accept the flag, then not the write).
            Err(e)
                if e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
                    && self.direct.is_some() =>
            {
                self.direct = None;
                buffered.write_all_at(window, self.pos)?;
            }
            Err(e) => return Err(e),
        }
        self.pos += len as u64;
        self.buf
            .copy_within(self.start + len..self.start + self.fill, self.start);
        self.fill -= len;
        Ok(())
    }

    /// File offset just past the bytes appended so far.
    pub fn end(&self) -> u64 {
        self.pos + self.fill as u64
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn xattrs_of_any_size_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("f")).expect("create");
        let name = c"user.nebula.test";
        match set_xattr(&file, name, b"1") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => {
                eprintln!("skipped: no user xattrs in {}: {e}", dir.path().display());
                return;
            }
            Err(e) => panic!("set_xattr: {e}"),
        }
        assert_eq!(
            with_xattr(&file, name, <[u8]>::to_vec).unwrap(),
            Some(b"1".to_vec())
        );
        // Larger than the stack buffer: the value is read again at its size.
        let big: Vec<u8> = (0..3 * XATTR_STACK).map(|i| (i % 251) as u8).collect();
        set_xattr(&file, name, &big).expect("big value");
        assert_eq!(with_xattr(&file, name, <[u8]>::to_vec).unwrap(), Some(big));
        remove_xattr(&file, name).expect("remove");
        assert_eq!(with_xattr(&file, name, <[u8]>::to_vec).unwrap(), None);
        assert!(remove_xattr(&file, name).is_err());
    }

    #[test]
    fn read_dir_names_every_entry_with_its_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        // More entries than one 32 KiB getdents64 buffer holds.
        for i in 0..2000 {
            std::fs::write(dir.path().join(format!("many-{i:04}")), b"").unwrap();
        }
        let fd = open_dir(dir.path()).expect("open_dir");
        let mut seen = std::collections::BTreeMap::new();
        read_dir(fd.as_fd(), |name, kind| {
            let name = String::from_utf8(name.to_vec()).unwrap();
            assert!(seen.insert(name, kind).is_none(), "listed twice");
        })
        .expect("read_dir");
        assert_eq!(seen.len(), 2003, "no . or .., every entry once");
        assert_eq!(seen["file"], FileType::RegularFile);
        assert_eq!(seen["folder"], FileType::Directory);
        assert_eq!(seen["link"], FileType::Symlink);
        assert_eq!(seen["many-1999"], FileType::RegularFile);
    }

    #[test]
    fn positioned_reads_and_gathered_writes_move_every_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .expect("create");
        // More pieces than one pwritev takes (IOV_MAX), some empty, of odd sizes.
        let pieces: Vec<Bytes> = (0..2500)
            .map(|i| Bytes::from(vec![(i % 251) as u8; i % 7]))
            .collect();
        let all: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
        pwritev_all(&file, &pieces, 10).expect("pwritev_all");
        assert_eq!(file.metadata().unwrap().len(), 10 + all.len() as u64);
        assert_eq!(read_block_at(&file, all.len(), 10).expect("read"), all);
        assert_eq!(read_block_at(&file, 5, 12).expect("read"), all[2..7]);
        let short = read_block_at(&file, all.len() + 1, 10).expect_err("past the end");
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        // Just written, so in the page cache: a RWF_NOWAIT read gets it, or (on a filesystem
        // without RWF_NOWAIT) declines; it never returns other bytes.
        if let Some(cached) = read_block_cached(&file, 100, 10) {
            assert_eq!(cached, all[..100]);
        }
        assert_eq!(read_block_cached(&file, all.len() + 1, 10), None);
        // A kernel copy of a range to another offset.
        let copy = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("g"))
            .expect("create");
        copy_range_at(&file, 10, &copy, 3, all.len() as u64).expect("copy");
        assert_eq!(read_block_at(&copy, all.len(), 3).expect("read"), all);
    }

    #[test]
    fn direct_appender_writes_every_byte_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("object");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("create");
        // ext4 (CI, the usual disk) takes O_DIRECT; tmpfs before Linux 6.6 and some FUSE
        // filesystems refuse it, and there the appender is never made: nothing to test.
        if let Err(e) = open_direct(&path) {
            let f_type = rustix::fs::fstatfs(&file).map(|s| s.f_type);
            eprintln!(
                "skipped: the filesystem of {} (statfs type {f_type:x?}) refuses O_DIRECT: {e}",
                dir.path().display()
            );
            return;
        }
        // Bytes before the slot must survive; the slot starts at an aligned offset.
        file.write_all_at(b"head", 0).expect("head");
        let at = 2 * DIRECT_ALIGN as u64;
        assert!(DirectAppender::new(&path, at + 1).is_none());
        let mut d = DirectAppender::new(&path, at).expect("aligned, and O_DIRECT opens");
        let data: Vec<u8> = (0..3 * DIRECT_BLOCK + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        // Pieces of awkward sizes, across block boundaries.
        let pieces: Vec<Bytes> = data.chunks(100_003).map(Bytes::copy_from_slice).collect();
        let (first, rest) = pieces.split_at(5);
        d.write(first, &file).expect("write");
        d.write(rest, &file).expect("write");
        assert_eq!(d.end(), at + data.len() as u64);
        d.finish(&file).expect("finish");
        let all = std::fs::read(&path).expect("read");
        assert_eq!(&all[..4], b"head");
        assert_eq!(all.len() as u64, at + data.len() as u64);
        assert!(all[at as usize..] == data[..], "bytes differ");
        if d.direct.is_none() {
            eprintln!(
                "this filesystem took the O_DIRECT open but not the writes: the buffered fallback ran"
            );
        }
    }
}
