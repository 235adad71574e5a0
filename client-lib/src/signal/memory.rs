//! Reading this process's own memory from the signal handler without faulting on an address that is
//! not readable. **Everything here is async-signal-safe**: system calls on preallocated buffers.
//!
//! The first way is `process_vm_readv` on our own pid, which reports an unreadable page as a short
//! count or `EFAULT` instead of a fault. Sandboxes often deny it (seccomp filters: it is outside
//! systemd's `@system-service` set), and a filter may deny it by killing the process rather than
//! with an error: so it is not tried at all on a thread under a seccomp filter
//! ([`seccomp_filtered`]). The other way is `pread` on `/proc/self/mem`, opened in the handler (an
//! earlier descriptor could belong to the parent of a forked child). When both are denied, the
//! caller gets [`Denied`] with both errors, for the report's note of what is missing.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use super::PAGE;

/// Neither way of reading memory is allowed: the errno of each.
#[derive(Clone, Copy, Debug)]
pub(super) struct Denied {
    /// The errno of `process_vm_readv`.
    pub vm_readv: i32,
    /// The errno of opening or reading `/proc/self/mem`.
    pub proc_mem: i32,
}

/// Reads of this process's memory during one signal report.
pub(super) struct Memory<'m> {
    /// The text of `/proc/self/maps` read for this report (whole lines), and whether it was cut
    /// short: which addresses are readable is decided from it when it covers the address, because
    /// `/proc/self/mem` reads even inaccessible mappings such as guard pages.
    maps: Option<(&'m [u8], bool)>,
    pid: libc::pid_t,
    /// `/proc/self/mem`, once opened; -1 before.
    mem_fd: libc::c_int,
    /// The errno that made `process_vm_readv` unusable, 0 while it works.
    vm_denied: i32,
    /// The errno that made `/proc/self/mem` unusable, 0 while it works (or was not needed).
    mem_denied: i32,
}

fn errno() -> i32 {
    // SAFETY: errno is a thread-local of this thread; reading it is async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// Whether an errno says "not allowed" (rather than "nothing readable there").
fn is_denial(e: i32) -> bool {
    matches!(e, libc::EPERM | libc::EACCES | libc::ENOSYS)
}

/// The `vm_denied` of a thread under a seccomp filter: `process_vm_readv` was not tried.
pub(super) const NOT_TRIED_UNDER_SECCOMP: i32 = -1;

/// Whether a seccomp filter was in force for the thread that ran `init` (read at init from
/// `/proc/self/status`), for when the crashing thread's own status cannot be read.
static FILTERED_AT_INIT: AtomicBool = AtomicBool::new(false);

/// Reads, at init, whether a seccomp filter is in force (`Seccomp: 2` in `/proc/self/status`).
pub(super) fn note_seccomp_at_init() {
    let filtered =
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| seccomp_mode(s.as_bytes()) == Some(2));
    FILTERED_AT_INIT.store(filtered, Ordering::SeqCst);
}

/// The `Seccomp:` field of a `/proc/.../status` text.
fn seccomp_mode(status: &[u8]) -> Option<u8> {
    let at = status.windows(9).position(|w| w == b"Seccomp:\t")?;
    status.get(at + 9).filter(|b| b.is_ascii_digit()).map(|b| b - b'0')
}

/// Whether the calling thread runs under a seccomp filter (filters are per thread: one installed
/// after init, or on one thread only, counts): `Seccomp: 2` in `/proc/thread-self/status`, read into
/// `buf`; if that cannot be read, what init saw. **Async-signal-safe**: `open`, `read`, `close`.
pub(super) fn seccomp_filtered(buf: &mut [u8]) -> bool {
    // SAFETY: open with a NUL-terminated path; async-signal-safe.
    let fd = unsafe { libc::open(c"/proc/thread-self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return FILTERED_AT_INIT.load(Ordering::SeqCst);
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: `buf[len..]` is valid for writing; read is async-signal-safe.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    match seccomp_mode(&buf[..len]) {
        Some(mode) => mode == 2,
        None => FILTERED_AT_INIT.load(Ordering::SeqCst),
    }
}

impl<'m> Memory<'m> {
    /// Reads with `process_vm_readv` first, unless `filtered` (the thread is under a seccomp
    /// filter, which may kill the process for that call): then with `/proc/self/mem` only.
    pub fn new(maps: Option<(&'m [u8], bool)>, filtered: bool) -> Self {
        let vm_denied = if filtered { NOT_TRIED_UNDER_SECCOMP } else { 0 };
        // SAFETY: getpid cannot fail.
        Self { maps, pid: unsafe { libc::getpid() }, mem_fd: -1, vm_denied, mem_denied: 0 }
    }

    /// Copies memory from `addr` into `out`, as far as it is readable: the copy stops at the first
    /// page that is not. Returns how many bytes were copied.
    pub fn read(&mut self, addr: usize, out: &mut [u8]) -> Result<usize, Denied> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.vm_denied == 0 {
            match self.vm_readv(addr, out) {
                Ok(n) => return Ok(n),
                Err(e) => self.vm_denied = e,
            }
        }
        self.proc_mem(addr, out)
    }

    /// `process_vm_readv` in page-sized pieces (the kernel stops at the first piece it cannot read).
    /// `Err` only for a denial.
    fn vm_readv(&self, addr: usize, out: &mut [u8]) -> Result<usize, i32> {
        const PIECES: usize = 64;
        let mut remote = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; PIECES];
        let mut done = 0;
        while done < out.len() {
            let mut count = 0;
            let mut at = addr.wrapping_add(done);
            let mut planned = 0;
            while count < PIECES && done + planned < out.len() {
                let next = (at / PAGE + 1).saturating_mul(PAGE);
                let len = (next - at).min(out.len() - done - planned);
                remote[count] = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: len };
                count += 1;
                planned += len;
                at = at.wrapping_add(len);
            }
            let local = libc::iovec { iov_base: out[done..].as_mut_ptr().cast(), iov_len: planned };
            // SAFETY: `local` covers the rest of `out`; the remote ranges are only read, by the kernel,
            // which reports an unreadable page as a short count or an error instead of faulting.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid,
                    &raw const local,
                    1,
                    remote.as_ptr(),
                    count as libc::c_ulong,
                    0,
                )
            };
            if n < 0 {
                let e = errno();
                return if is_denial(e) { Err(e) } else { Ok(done) };
            }
            let n = n as usize;
            done += n;
            if n < planned {
                break;
            }
        }
        Ok(done)
    }

    /// `pread` on `/proc/self/mem`, page by page.
    fn proc_mem(&mut self, addr: usize, out: &mut [u8]) -> Result<usize, Denied> {
        let denied = |m: &Self| Denied { vm_readv: m.vm_denied, proc_mem: m.mem_denied };
        if self.mem_denied != 0 {
            return Err(denied(self));
        }
        if self.mem_fd < 0 {
            // SAFETY: open with a NUL-terminated path; async-signal-safe.
            let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                self.mem_denied = errno();
                return Err(denied(self));
            }
            self.mem_fd = fd;
        }
        let mut done = 0;
        while done < out.len() {
            let at = addr.wrapping_add(done);
            let len = ((at / PAGE + 1).saturating_mul(PAGE) - at).min(out.len() - done);
            let Ok(offset) = libc::off64_t::try_from(at) else { break };
            // SAFETY: `out[done..done + len]` is valid for writing; pread reports an unreadable
            // address as an error (EIO) instead of faulting.
            let n = unsafe { libc::pread64(self.mem_fd, out[done..].as_mut_ptr().cast(), len, offset) };
            if n <= 0 {
                let e = if n < 0 { errno() } else { 0 };
                if is_denial(e) && done == 0 {
                    self.mem_denied = e;
                    return Err(denied(self));
                }
                break;
            }
            done += n as usize;
            if (n as usize) < len {
                break;
            }
        }
        Ok(done)
    }

    /// Whether the byte at `addr` is readable: by the permissions of its mapping in the maps text,
    /// else by trying to read it.
    pub fn readable(&mut self, addr: usize) -> Result<bool, Denied> {
        if let Some((text, cut)) = self.maps {
            match super::maps::permissions_at(text, addr) {
                Some(perms) => return Ok(perms.first() == Some(&b'r')),
                None if !cut => return Ok(false),
                None => {}
            }
        }
        let mut byte = [0u8; 1];
        Ok(self.read(addr, &mut byte)? == 1)
    }

    /// The first readable address at `from` or at the start of one of the pages above it, at most
    /// `max` bytes above `from`.
    pub fn first_readable(&mut self, from: usize, max: usize) -> Result<Option<usize>, Denied> {
        if self.readable(from)? {
            return Ok(Some(from));
        }
        let mut page = (from / PAGE + 1).saturating_mul(PAGE);
        while page.saturating_sub(from) <= max {
            if self.readable(page)? {
                return Ok(Some(page));
            }
            page = page.saturating_add(PAGE);
        }
        Ok(None)
    }
}

impl Drop for Memory<'_> {
    fn drop(&mut self) {
        if self.mem_fd >= 0 {
            // SAFETY: our own descriptor, closed once; close is async-signal-safe.
            unsafe { libc::close(self.mem_fd) };
        }
    }
}

/// The symbolic name of an errno the handler may meet, for the report's notes.
pub(super) fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EFAULT => "EFAULT",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        NOT_TRIED_UNDER_SECCOMP => "not tried (seccomp filter)",
        0 => "no error",
        _ => "another error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_first_unreadable_page() {
        // SAFETY: maps four pages and makes the last two inaccessible; unmapped at the end.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                4 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the mapping above, two pages of it written, the third protected.
        unsafe {
            std::ptr::write_bytes(base.cast::<u8>(), 7, 2 * PAGE);
            libc::mprotect(base.cast::<u8>().add(2 * PAGE).cast(), 2 * PAGE, libc::PROT_NONE);
        }
        let addr = base as usize;
        let mut memory = Memory::new(None, false);
        let mut out = vec![0u8; 3 * PAGE];
        assert_eq!(memory.read(addr + 100, &mut out).unwrap(), 2 * PAGE - 100);
        assert!(out[..2 * PAGE - 100].iter().all(|&b| b == 7));
        assert!(!memory.readable(addr + 2 * PAGE).unwrap());
        assert_eq!(memory.first_readable(addr + 2 * PAGE, PAGE).unwrap(), None);
        assert_eq!(memory.first_readable(addr + PAGE + 8, 2 * PAGE).unwrap(), Some(addr + PAGE + 8));
        // Through /proc/self/mem, as when process_vm_readv is denied. It reads inaccessible pages
        // too: readability comes from the maps text.
        let mut maps = vec![0u8; super::super::maps::MAPS_MAX];
        let (len, cut) = super::super::maps::read_maps(&mut maps).unwrap();
        let mut memory = Memory::new(Some((&maps[..len], cut)), true);
        out.fill(0);
        assert!(memory.read(addr + 100, &mut out).unwrap() >= 2 * PAGE - 100);
        assert!(out[..2 * PAGE - 100].iter().all(|&b| b == 7));
        assert!(!memory.readable(addr + 2 * PAGE).unwrap());
        assert!(memory.readable(addr + PAGE).unwrap());
        assert_eq!(memory.first_readable(addr + 2 * PAGE, PAGE).unwrap(), None);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, 4 * PAGE) };
    }

    #[test]
    fn the_seccomp_mode_is_read_from_a_status_text() {
        assert_eq!(seccomp_mode(b"Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"), Some(2));
        assert_eq!(seccomp_mode(b"Seccomp:\t0\n"), Some(0));
        assert_eq!(seccomp_mode(b"Name:\tx\n"), None);
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(seccomp_filtered(&mut buf), seccomp_mode(status.as_bytes()) == Some(2));
    }
}
