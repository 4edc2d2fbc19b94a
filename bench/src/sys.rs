//! Small system helpers: the monotonic clock shared by processes, the open
//! file limit, UDP socket buffers, and a counting allocator.

use anyhow::{bail, Result};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// CLOCK_MONOTONIC in nanoseconds. It is one clock for every process of
/// the machine, so timestamps taken in the coordinator process and in the
/// driver compare directly.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft open-file limit to at least `want` (up to the hard
/// limit). Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(NOFILE): {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(lim.rlim_cur);
        }
        lim.rlim_cur = want.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit(NOFILE): {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Asks for `bytes` of receive and send buffer on a UDP socket (the kernel
/// caps it at net.core.[rw]mem_max) and returns what it granted.
pub fn set_udp_buffers(sock: &std::net::UdpSocket, bytes: usize) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    set_fd_buffers(sock.as_raw_fd(), bytes)
}

/// The file descriptor of this process's IPv4 UDP socket bound to `port`.
pub fn udp_fd_bound_to(port: u16) -> Option<libc::c_int> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<libc::c_int>() else {
            continue;
        };
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt/getsockname write into values we own; on a
        // descriptor that is not a socket they fail and we skip it.
        let is_udp = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                &mut ty as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            ) == 0
                && ty == libc::SOCK_DGRAM
        };
        if !is_udp {
            continue;
        }
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut alen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        let ok = unsafe {
            libc::getsockname(
                fd,
                &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr,
                &mut alen,
            ) == 0
        };
        if ok
            && addr.sin_family as libc::c_int == libc::AF_INET
            && u16::from_be(addr.sin_port) == port
        {
            return Some(fd);
        }
    }
    None
}

/// [`set_udp_buffers`] on a raw descriptor.
pub fn set_fd_buffers(fd: libc::c_int, bytes: usize) -> (usize, usize) {
    let set = |opt| {
        let v = bytes as libc::c_int;
        // SAFETY: setsockopt reads an int we own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    };
    let get = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int we own.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        v as usize
    };
    set(libc::SO_RCVBUF);
    set(libc::SO_SNDBUF);
    (get(libc::SO_RCVBUF), get(libc::SO_SNDBUF))
}

/// The system allocator, counting live heap bytes and allocation calls, so
/// that a process can tell its heap apart from its RSS (the difference is
/// allocator overhead and fragmentation).
pub struct CountingAlloc;

static LIVE: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// (live heap bytes, allocation calls so far)
pub fn heap() -> (u64, u64) {
    (LIVE.load(Ordering::Relaxed), CALLS.load(Ordering::Relaxed))
}

// SAFETY: every call is forwarded to `System` unchanged; the counters have
// no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_limits() {
        let a = mono_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(mono_ns() >= a + 2_000_000);
        let now = raise_nofile(64).unwrap();
        assert!(now >= 64);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        assert_eq!(
            udp_fd_bound_to(port),
            Some(std::os::fd::AsRawFd::as_raw_fd(&sock))
        );
        let (r, s) = set_udp_buffers(&sock, 1 << 20);
        // Linux doubles the request for bookkeeping; it never grants less
        // than the default here.
        assert!(r >= 1 << 17 && s >= 1 << 17, "{r} {s}");
    }
}
