//! Small safe wrappers over the Linux calls the backend needs to stay inside a bucket folder
//! (`openat2` with `RESOLVE_BENEATH`, `*at` calls on folder descriptors) and to write durably.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a folder as a descriptor usable as the base of `*at` calls.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned below.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` below `base` for reading; symlinks may be followed only while they stay below
/// `base` (`RESOLVE_BENEATH`), so no key can reach outside its bucket. Non-blocking open keeps a
/// FIFO someone dropped into a bucket from hanging the request.
pub fn open_beneath(base: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let c = cstr(rel)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    match openat2(base, &c, &how) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_nofollow_fallback(base, rel),
        other => other,
    }
}

/// The raw `openat2(2)` call.
fn openat2(base: BorrowedFd<'_>, path: &std::ffi::CStr, how: &libc::open_how) -> io::Result<File> {
    // SAFETY: arguments follow openat2(2); `how` and `path` live across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base.as_raw_fd(),
            path.as_ptr(),
            how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result is a fresh descriptor from openat2.
    Ok(unsafe { File::from_raw_fd(ret as libc::c_int) })
}

/// `openat2` that succeeds only when every path component is already in the kernel's lookup
/// cache (`RESOLVE_CACHED`, Linux 5.12): such an open never waits for the disk, so it may run on
/// an async worker thread. `Ok(None)` means "not cached, or not known here" (including any
/// error, and kernels without `RESOLVE_CACHED`): the caller takes its blocking path, which
/// gives the authoritative answer.
pub fn openat2_cached(
    base: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    resolve: u64,
) -> Option<File> {
    let c = cstr(rel).ok()?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve | libc::RESOLVE_CACHED;
    openat2(base, &c, &how).ok()
}

/// Reads `len` bytes at `off` into a fresh buffer, but only if they are all in the page cache
/// (`RWF_NOWAIT`), so the read never waits for the disk and may run on an async worker.
/// `None` when some are not (or the filesystem cannot tell): the caller reads on the blocking
/// pool instead.
pub fn read_block_cached(file: &File, len: usize, off: u64) -> Option<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: one iovec describing the buffer's spare capacity, which outlives the call.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            off as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    // A short read means part of the range was not cached (or the file shrank): let the
    // blocking path sort it out.
    if n < 0 || n as usize != len {
        return None;
    }
    // SAFETY: the kernel initialised all `len` bytes.
    unsafe { buf.set_len(len) };
    Some(buf)
}

/// `statx` of `name` in `dir` without following a symlink: size, times and identity of a
/// folder entry without opening it.
pub fn statx_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<libc::statx> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    // SAFETY: statx is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and out-parameter.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    })?;
    Ok(st)
}

/// For kernels before 5.6: walk the path one component at a time without following symlinks.
fn open_nofollow_fallback(base: BorrowedFd<'_>, rel: &Path) -> io::Result<File> {
    let dir = open_parent_nofollow(base, rel, false)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let c = cstr(Path::new(name))?;
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOFOLLOW,
        )
    })?;
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens (and with `create`, makes) the parent folders of `rel` below `base`, one component at a
/// time, never following a symlink. A component that is a file gives `NotADirectory`.
pub fn open_parent_nofollow(base: BorrowedFd<'_>, rel: &Path, create: bool) -> io::Result<OwnedFd> {
    // SAFETY: dup of a valid descriptor.
    let mut cur = unsafe { OwnedFd::from_raw_fd(check(libc::dup(base.as_raw_fd()))?) };
    let Some(parent) = rel.parent() else {
        return Ok(cur);
    };
    for comp in parent.components() {
        let c = cstr(Path::new(comp.as_os_str()))?;
        let open = |dir: &OwnedFd| {
            // SAFETY: valid fd and C string.
            unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            }
        };
        // The folder usually exists already: try it before making it.
        let mut fd = open(&cur);
        if fd < 0 && create && io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            // SAFETY: valid fd and C string.
            let r = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            fd = open(&cur);
        }
        if fd < 0 {
            let e = io::Error::last_os_error();
            // ENOTDIR: the component is a file (or a symlink, which we refuse to write through).
            if e.raw_os_error() == Some(libc::ENOTDIR) || e.raw_os_error() == Some(libc::ELOOP) {
                return Err(io::Error::from(io::ErrorKind::NotADirectory));
            }
            return Err(e);
        }
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(cur)
}

/// Makes `name` a folder in `dir` (no error if it is one already).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Atomically replaces `to` in `to_dir` with `from` in `from_dir`.
pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
        )
    })
    .map(|_| ())
}

/// Atomically creates `to` as a new name of `from`; fails with `AlreadyExists` if `to` exists.
/// Used for conditional creates (`If-None-Match: *`) without a check-then-act race.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
            0,
        )
    })
    .map(|_| ())
}

/// Removes the file `name` in `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
}

/// Removes the empty folder `name` in `dir`.
pub fn rmdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
}

/// Flushes a folder's entries so a completed rename survives a crash.
pub fn fsync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // O_PATH descriptors cannot be fsync'ed: reopen the folder itself for reading.
    let dot = c".";
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            dot.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    let f = unsafe { File::from_raw_fd(fd) };
    f.sync_all()
}

/// What a read or write call that returned `n` achieved: the bytes it moved, `None` when it
/// was interrupted and should be retried, an error when it failed or moved nothing (`stalled`,
/// with `what` as the message).
fn progress(n: isize, stalled: io::ErrorKind, what: &str) -> io::Result<Option<usize>> {
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Err(io::Error::new(stalled, what.to_owned()));
    }
    Ok(Some(n as usize))
}

/// Reads exactly `len` bytes at `off` into a fresh buffer that is never zero-filled first:
/// streaming a large object is a few memory copies per byte, and clearing every 1 MiB block
/// before the read overwrites it would add one more.
pub fn read_block_at(file: &File, len: usize, off: u64) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        // SAFETY: the kernel writes at most `len - filled` bytes into the spare capacity
        // starting at `filled`, which the allocation above provides.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                len - filled,
                (off + filled as u64) as libc::off_t,
            )
        };
        let Some(n) = progress(
            n,
            io::ErrorKind::UnexpectedEof,
            "file shorter than expected",
        )?
        else {
            continue;
        };
        // SAFETY: the kernel initialised these `n` bytes just above.
        unsafe { buf.set_len(filled + n) };
    }
    Ok(buf)
}

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
    use std::os::unix::fs::FileExt;
    while len > 0 {
        let mut so = src_off as libc::loff_t;
        let mut d = dst_off as libc::loff_t;
        let chunk = len.min(1 << 30) as usize;
        // SAFETY: valid descriptors; the offsets are read and advanced by the kernel.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, chunk, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV)
                    | Some(libc::ENOSYS)
                    | Some(libc::EOPNOTSUPP)
                    | Some(libc::EINVAL)
            ) {
                // Fall back to positioned reads and writes in large blocks.
                let mut buf = vec![0u8; super::meta::IO_BLOCK];
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
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source file shorter than expected",
            ));
        }
        src_off += n as u64;
        dst_off += n as u64;
        len -= n as u64;
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

/// Writes every buffer of `bufs`, in order, at `off` with as few `pwritev` calls as the kernel
/// allows: a request body arrives in many small pieces, and gathering them into one buffer
/// first would copy every byte once more.
pub fn pwritev_all(file: &File, bufs: &[bytes::Bytes], mut off: u64) -> io::Result<()> {
    // IOV_MAX is 1024 on Linux; callers batch far fewer pieces than that.
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut start = 0;
    while start < iovs.len() {
        let count = (iovs.len() - start).min(1024);
        // SAFETY: the iovecs point into `bufs`, which outlive the call; the kernel only reads.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovs[start..].as_ptr(),
                count as libc::c_int,
                off as libc::off_t,
            )
        };
        let Some(n) = progress(n, io::ErrorKind::WriteZero, "pwritev wrote nothing")? else {
            continue;
        };
        off += n as u64;
        // Skip what was written; a short write leaves a partly written iovec to resume.
        let mut left = n;
        while left > 0 {
            let iov = &mut iovs[start];
            if left >= iov.iov_len {
                left -= iov.iov_len;
                start += 1;
            } else {
                // SAFETY: still inside the same buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left).cast() };
                iov.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `off` back to disk now, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a large upload then reaches the disk while the
/// rest of it is still arriving, and the fsync that makes it durable has only the tail left to
/// wait for. Purely an optimisation: errors are ignored, the fsync reports real ones.
pub fn start_writeback(file: &File, off: u64, len: u64) {
    // SAFETY: plain syscall on a valid descriptor.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Alignment of `O_DIRECT` transfers: buffer address, length and file offset (the largest
/// logical block size in common use).
pub const DIRECT_ALIGN: usize = 4096;

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
        let direct = File::options()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
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
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.direct.is_some() => {
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
        if let Err(e) = File::options()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            eprintln!(
                "skipped: the filesystem of {} refuses O_DIRECT: {e}",
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
    }
}
