//! Alternate signal stacks for every thread that can run code, so that a stack overflow anywhere
//! reaches the handler (a thread without one dies of the overflow before any handler runs).
//!
//! - The thread that calls `init` gets one at once ([`give_this_thread`]).
//! - Threads created after `init` with `pthread_create` (std's threads, tokio's, C libraries' and FFI
//!   code's) get one as they start: this module defines `pthread_create`, which calls the C library's
//!   and runs the new thread through [`start`], which maps a stack (a guard page below it), installs
//!   it, and frees it when the thread ends (a thread-specific key's destructor).
//! - Threads that existed before `init` are asked to install one each: a real-time signal (one whose
//!   disposition is the default, so no one else uses it) is sent to each of them with `tgkill`, and
//!   its tiny handler, running on that thread, installs a stack that init mapped for it.
//!
//! Before `init` (and when init failed) the interposed `pthread_create` only calls the real one: a
//! program that links lastword without starting it is not changed. What crash-handling's interposer
//! had trouble with, and what is done here instead: it could not find the real function in statically
//! linked programs and panicked on every thread creation (EmbarkStudios/crash-handling#98): here the
//! interposer is only built for dynamically linked glibc programs, and a missing function is an
//! `EAGAIN`, never a panic; it bypassed a sanitizer's own `pthread_create` interceptor (#123): here the
//! sanitizer's interceptor is called when there is one; it was active before any handler existed:
//! here it does nothing until init succeeded; and it disabled whatever alternate stack the thread had
//! at exit: here a thread's stack is disabled only if it is still ours (another runtime may have put
//! its own in place).
//!
//! Not covered: threads that block the real-time signal when init runs (they keep the stack they had,
//! none for C threads), threads made without `pthread_create` (a raw `clone`), threads created by
//! shared libraries that resolve `pthread_create` to the C library directly (the executable's
//! definition is used only where the executable exports it: link with
//! `-C link-arg=-Wl,--export-dynamic-symbol=pthread_create` to cover those), and statically linked
//! programs (no interposition).

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::PAGE;

/// Size of each alternate signal stack (a guard page below it is not counted). The handler runs on
/// it, and so does a previous handler it calls, and a nested SIGABRT when that one aborts.
pub(super) const ALT_STACK: usize = 64 * 1024;

/// Set once init succeeded: from then on new threads get a stack as they start.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Calls to `pthread_create` that read `ENABLED` as false and have not yet returned.
static CREATING: AtomicUsize = AtomicUsize::new(0);
/// The thread-specific key whose destructor frees a thread's stack; `u32::MAX` until made.
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes what new threads' stacks need (the key). Called at init before anything is installed.
pub(super) fn prepare() -> std::io::Result<()> {
    if KEY.load(Ordering::SeqCst) != u32::MAX {
        return Ok(());
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is valid for writing; `release` has the destructor's signature.
    let rc = unsafe { libc::pthread_key_create(&raw mut key, Some(release)) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    KEY.store(key, Ordering::SeqCst);
    Ok(())
}

/// Maps an alternate stack of `ALT_STACK` bytes with an inaccessible guard page below it; returns
/// its lowest usable address. Not async-signal-safe only in being slow (mmap and mprotect are
/// system calls).
fn map_stack() -> Option<*mut libc::c_void> {
    // SAFETY: an anonymous private mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            ALT_STACK + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the first page of the mapping just made becomes the guard.
    unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) };
    // SAFETY: within the mapping.
    Some(unsafe { base.cast::<u8>().add(PAGE) }.cast())
}

/// Whether the calling thread has an alternate stack of at least `ALT_STACK` bytes, or runs on its
/// alternate stack now (it cannot be changed then). Async-signal-safe.
fn has_usable_stack() -> bool {
    // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is valid for writing.
    if unsafe { libc::sigaltstack(ptr::null(), &raw mut old) } != 0 {
        return true;
    }
    old.ss_flags & libc::SS_ONSTACK != 0 || (old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= ALT_STACK)
}

/// Installs the stack at `sp` (from [`map_stack`]) on the calling thread. Async-signal-safe.
fn install(sp: *mut libc::c_void) -> bool {
    let stack = libc::stack_t { ss_sp: sp, ss_flags: 0, ss_size: ALT_STACK };
    // SAFETY: `sp` points at `ALT_STACK` bytes mapped for this purpose, never unmapped while
    // installed (see `release`).
    unsafe { libc::sigaltstack(&raw const stack, ptr::null_mut()) == 0 }
}

/// Gives the calling thread (the one that runs `init`) an alternate stack, unless it has one large
/// enough. Its memory is never freed: the thread may take signals until the process ends.
pub(super) fn give_this_thread() {
    if !has_usable_stack()
        && let Some(sp) = map_stack()
    {
        install(sp);
    }
}

/// Turns the stacks of new threads on, then gives one to each thread that exists already.
pub(super) fn enable_and_cover_existing() {
    ENABLED.store(true, Ordering::SeqCst);
    // A `pthread_create` that saw ENABLED false may still be making its thread: wait until the
    // thread exists, so that the list below has it (bounded: a stuck caller is not waited for).
    let deadline = Instant::now() + Duration::from_secs(1);
    while CREATING.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    cover_existing();
}

/// The real-time signal used to reach the threads that existed before init, 0 when none.
static SWEEP_SIGNAL: AtomicUsize = AtomicUsize::new(0);
/// The stacks mapped for them: lowest usable address of the first, and how many.
static SWEEP_BASE: AtomicUsize = AtomicUsize::new(0);
static SWEEP_COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many stacks were taken, and how many threads answered.
static SWEEP_NEXT: AtomicUsize = AtomicUsize::new(0);
static SWEEP_DONE: AtomicUsize = AtomicUsize::new(0);

/// The other threads of this process, from `/proc/self/task`.
fn other_threads() -> Vec<libc::pid_t> {
    // SAFETY: gettid cannot fail.
    let me = unsafe { libc::gettid() };
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
        .filter(|&tid| tid != me)
        .collect()
}

/// Whether thread `tid` blocks `sig` (its `SigBlk` in `/proc/self/task/<tid>/status`).
fn blocks(tid: libc::pid_t, sig: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else { return true };
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    mask & (1u64 << (sig - 1)) != 0
}

/// A real-time signal that nobody handles (its disposition is the default), highest first.
fn free_signal() -> Option<libc::c_int> {
    (libc::SIGRTMIN()..=libc::SIGRTMAX()).rev().find(|&sig| {
        // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaction(sig, ptr::null(), &raw mut old) == 0 && old.sa_sigaction == libc::SIG_DFL }
    })
}

/// Asks each thread that existed before init to install an alternate stack mapped here for it.
/// Best effort: what cannot be done (no free signal, no memory, a thread that blocks the signal or
/// does not answer within the deadline) leaves that thread as it was.
fn cover_existing() {
    let threads = other_threads();
    if threads.is_empty() {
        return;
    }
    let Some(sig) = free_signal() else { return };
    // A thread being created runs with every signal blocked for a moment (glibc unblocks them in
    // the new thread's start): look again, a few times in 15 ms, before taking a block for a
    // thread's own choice.
    let (mut targets, mut blocking): (Vec<_>, Vec<_>) =
        threads.into_iter().partition(|&tid| !blocks(tid, sig));
    for _ in 0..3 {
        if blocking.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        let (now_free, still): (Vec<_>, Vec<_>) = blocking.into_iter().partition(|&tid| !blocks(tid, sig));
        targets.extend(now_free);
        blocking = still;
    }
    if targets.is_empty() {
        return;
    }
    let size = ALT_STACK + PAGE;
    // SAFETY: an anonymous private mapping for the stacks, never unmapped (a thread may use its
    // stack until the process ends).
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size * targets.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return;
    }
    for i in 0..targets.len() {
        // SAFETY: the guard page at the bottom of each stack, within the mapping.
        unsafe { libc::mprotect(base.cast::<u8>().add(i * size).cast(), PAGE, libc::PROT_NONE) };
    }
    SWEEP_BASE.store(base as usize + PAGE, Ordering::SeqCst);
    SWEEP_COUNT.store(targets.len(), Ordering::SeqCst);
    SWEEP_SIGNAL.store(sig as usize, Ordering::SeqCst);
    // SAFETY: a fully initialised action for a signal whose disposition is the default;
    // SA_RESTART so that the system calls it interrupts are restarted where the kernel can.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = sweep_handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(sig, &raw const action, ptr::null_mut()) != 0 {
            return;
        }
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let mut sent = 0;
    for &tid in &targets {
        // SAFETY: tgkill to a thread of this process with the signal our handler now takes.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } == 0 {
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while SWEEP_DONE.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // When every thread answered, the signal goes back to its default. Otherwise the handler stays:
    // a thread that answers late (or a signal still pending) must not meet the default action,
    // which for a real-time signal ends the process.
    if SWEEP_DONE.load(Ordering::SeqCst) >= sent {
        // SAFETY: the default disposition for the signal we took.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// The handler of the sweep's real-time signal, on one thread that existed before init: gives the
/// thread the next stack mapped for it, unless it has a large enough one. The stack goes into the
/// signal context's `uc_stack`, not through `sigaltstack`: returning from a handler (`rt_sigreturn`)
/// sets the thread's alternate stack to what `uc_stack` says, which would undo a change made during
/// the handler. **Async-signal-safe**: atomics, `getpid` and `sigaltstack` (to read).
extern "C" fn sweep_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: `info` is the kernel's siginfo for an SA_SIGINFO handler; getpid cannot fail.
    let ours =
        !info.is_null() && unsafe { (*info).si_code == libc::SI_TKILL && (*info).si_pid() == libc::getpid() };
    if !ours || context.is_null() {
        return;
    }
    if !has_usable_stack() {
        let i = SWEEP_NEXT.fetch_add(1, Ordering::SeqCst);
        if i < SWEEP_COUNT.load(Ordering::SeqCst) {
            let sp = SWEEP_BASE.load(Ordering::SeqCst) + i * (ALT_STACK + PAGE);
            let stack = libc::stack_t { ss_sp: sp as *mut libc::c_void, ss_flags: 0, ss_size: ALT_STACK };
            // SAFETY: `context` is the kernel's ucontext_t for this handler; the stack was mapped for
            // this thread and is never unmapped.
            unsafe { (*context.cast::<libc::ucontext_t>()).uc_stack = stack };
        }
    }
    SWEEP_DONE.fetch_add(1, Ordering::SeqCst);
}

/// The destructor of [`KEY`]: frees a thread's stack as the thread ends. If the stack is still the
/// thread's alternate stack it is disabled first; if the thread runs on it now, it is kept.
extern "C" fn release(sp: *mut libc::c_void) {
    if sp.is_null() {
        return;
    }
    // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigaltstack(ptr::null(), &raw mut current) };
    if current.ss_sp == sp {
        if current.ss_flags & libc::SS_ONSTACK != 0 {
            return;
        }
        let disable = libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        // SAFETY: disables this thread's alternate stack (ours) before it is unmapped.
        unsafe { libc::sigaltstack(&raw const disable, ptr::null_mut()) };
    }
    // SAFETY: `sp` came from `map_stack` (one guard page below it) and is no longer installed.
    unsafe { libc::munmap(sp.cast::<u8>().sub(PAGE).cast(), ALT_STACK + PAGE) };
}

/// The interposed `pthread_create`: only for dynamically linked glibc programs, where the C
/// library's function can be found behind ours.
#[cfg(all(target_os = "linux", target_env = "gnu", not(target_feature = "crt-static")))]
mod interpose {
    use super::{CREATING, ENABLED, KEY, has_usable_stack, install, map_stack, release};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What [`start`] runs, given by [`pthread_create`].
    struct Start {
        routine: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        arg: *mut libc::c_void,
    }

    /// The start routine of threads created after init: installs the thread's stack, then runs the
    /// routine it was created with.
    extern "C" fn start(data: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `data` is the `Start` boxed by `pthread_create` for this thread, taken once.
        let Start { routine, arg } = *unsafe { Box::from_raw(data.cast::<Start>()) };
        if !has_usable_stack()
            && let Some(sp) = map_stack()
        {
            if install(sp) {
                // SAFETY: KEY was made by `prepare` before ENABLED was set.
                unsafe { libc::pthread_setspecific(KEY.load(Ordering::SeqCst), sp) };
            } else {
                release(sp);
            }
        }
        routine(arg)
    }

    type PthreadCreate = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;

    /// The `pthread_create` this one stands in front of: a sanitizer's interceptor if there is one, else
    /// the C library's. 0 until looked up; 1 when none was found.
    static REAL: AtomicUsize = AtomicUsize::new(0);

    fn real_pthread_create() -> Option<PthreadCreate> {
        let mut found = REAL.load(Ordering::Acquire);
        if found == 0 {
            let ours = pthread_create as *const () as usize;
            let candidates: [(*mut libc::c_void, &std::ffi::CStr); 3] = [
                (libc::RTLD_DEFAULT, c"__interceptor_pthread_create"),
                (libc::RTLD_DEFAULT, c"___interceptor_pthread_create"),
                (libc::RTLD_NEXT, c"pthread_create"),
            ];
            found = candidates
                .iter()
                // SAFETY: dlsym with a valid handle and a NUL-terminated name.
                .map(|(handle, name)| unsafe { libc::dlsym(*handle, name.as_ptr()) } as usize)
                .find(|&f| f != 0 && f != ours)
                .unwrap_or(1);
            REAL.store(found, Ordering::Release);
        }
        // SAFETY: a non-sentinel value is the address of a function with pthread_create's signature.
        (found > 1).then(|| unsafe { std::mem::transmute::<usize, PthreadCreate>(found) })
    }

    /// Stands in for the C library's `pthread_create` (see the module docs): after init, the new thread
    /// runs [`start`] first, which gives it an alternate signal stack.
    ///
    /// # Safety
    /// The caller's contract is `pthread_create`'s.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        routine: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        let Some(real) = real_pthread_create() else { return libc::EAGAIN };
        CREATING.fetch_add(1, Ordering::SeqCst);
        if !ENABLED.load(Ordering::SeqCst) {
            // SAFETY: the caller's arguments, passed on unchanged.
            let rc = unsafe { real(thread, attr, routine, arg) };
            CREATING.fetch_sub(1, Ordering::SeqCst);
            return rc;
        }
        CREATING.fetch_sub(1, Ordering::SeqCst);
        let data = Box::into_raw(Box::new(Start { routine, arg }));
        // SAFETY: the caller's thread and attributes; `start` takes `data` back exactly once, in the new
        // thread, which exists only if the call succeeds.
        let rc = unsafe { real(thread, attr, start, data.cast()) };
        if rc != 0 {
            // SAFETY: no thread was made, so `data` was not taken.
            drop(unsafe { Box::from_raw(data) });
        }
        rc
    }
}
