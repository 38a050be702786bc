//! The workspace's only `unsafe` code: the few system calls that neither std nor `rustix`
//! wraps safely. Everything else, [`super::fsutil`] included, calls them through safe APIs;
//! the `unsafe_code` lint refuses `unsafe` anywhere but here.
//!
//! Two are on the hot path and stay raw for speed: `preadv2(RWF_NOWAIT)` into a buffer that is
//! never zero-filled first (`rustix::io::preadv2` takes only initialised buffers) and
//! `sync_file_range` (not in `rustix`). The other two are not about files but live here to
//! keep the unsafe code in one place: `getifaddrs` (listeners bound to an interface) and
//! `mallopt` (allocator tuning at start).
#![allow(unsafe_code)]

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Reads `len` bytes at `off` into the spare capacity of `buf` (which must have room for
/// them), but only if they are all in the page cache (`RWF_NOWAIT`). True when all `len`
/// bytes were read; `buf` then holds them after its previous contents. A short or failed read
/// leaves `buf` as it was.
pub fn preadv2_nowait_into(file: &File, buf: &mut Vec<u8>, len: usize, off: u64) -> bool {
    let spare = buf.spare_capacity_mut();
    assert!(spare.len() >= len, "buffer too small");
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    let Ok(off) = libc::off_t::try_from(off) else {
        return false;
    };
    // SAFETY: one iovec describing `len` bytes of `buf`'s spare capacity (checked above), which
    // outlives the call; the kernel writes only there.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
    if usize::try_from(n).ok() != Some(len) {
        return false;
    }
    // SAFETY: the kernel initialised the `len` bytes after `buf.len()` just above.
    unsafe { buf.set_len(buf.len() + len) };
    true
}

/// `sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE)`: starts writeback of a range without
/// waiting for it. Errors are ignored: it is only a hint, the later fsync reports real ones.
pub fn sync_file_range_write(file: &File, off: u64, len: u64) {
    let (Ok(off), Ok(len)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor `file` keeps open; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A network interface's name and one of its IP addresses (as `getifaddrs` lists them; an
/// interface without addresses appears once with `None`).
#[derive(Debug, Clone)]
pub struct InterfaceAddr {
    /// Interface name (`eth0`).
    pub name: String,
    /// An address of it, with the interface's scope for IPv6 link-local addresses.
    pub addr: Option<(IpAddr, u32)>,
}

/// Lists the machine's interfaces and addresses with `getifaddrs(3)`.
pub fn interfaces() -> std::io::Result<Vec<InterfaceAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and that is still alive.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let addr = if ifa.ifa_addr.is_null() {
            None
        } else {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: family AF_INET: the sockaddr is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    Some((IpAddr::V4(ip), 0))
                }
                libc::AF_INET6 => {
                    // SAFETY: family AF_INET6: the sockaddr is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    Some((IpAddr::V6(ip), sin6.sin6_scope_id))
                }
                // AF_PACKET and others: the interface exists, no IP address in this entry.
                _ => None,
            }
        };
        out.push(InterfaceAddr { name, addr });
    }
    // SAFETY: `head` came from getifaddrs and is freed once, after its last use.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Streams and uploads move data in blocks of 1 MiB, allocated on one thread and freed on
/// another. glibc's defaults hand such blocks back to the kernel when freed (mmap, or trimming
/// an arena's top), and every next block then faults in 256 fresh zeroed pages: more CPU than
/// copying the data (measured: 9 % of a large GET's CPU). Blocks up to 32 MiB now come from the
/// arenas, and an arena gives memory back only once 16 MiB of it lie free at its top.
///
/// Call it at the start of `main`, before any other thread exists.
pub fn keep_freed_blocks() {
    // SAFETY: mallopt only adjusts allocator parameters; the caller runs it before any other
    // thread starts, so no allocation races with the change.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}
