//! Alternate signal stacks for every thread that can run code, so that a stack overflow anywhere
//! reaches the handler (a thread without one dies of the overflow before any handler runs).
//!
//! - The thread that calls `init` gets one at once ([`give_this_thread`]).
//! - Threads made with `pthread_create` (std's threads, tokio's, C libraries' and FFI code's) start
//!   through the trampoline of the interposed `pthread_create` (`interpose.rs`), before init as well
//!   as after. It calls [`give_new_thread`] when the new thread first runs (glibc has unblocked its
//!   signals by then): once init has set `ENABLED`, the thread maps a stack (a guard page below it),
//!   installs it, and frees it when the thread ends (a thread-specific key's destructor). A thread
//!   that started before init runs with its signals unblocked, so the sweep below reaches it; one
//!   that had not run yet when init looked covers itself when it does.
//! - Threads that existed before `init` are asked to install one each: a real-time signal (one whose
//!   disposition is the default, so no one else uses it) is sent to each of them with `tgkill`, and
//!   its tiny handler, running on that thread, installs a stack that init mapped for it. Init waits
//!   for their answers for at most [`SWEEP_WAIT`] (a thread that exits meanwhile is not waited for),
//!   then puts the signal's disposition back (through SIG_IGN, which discards a delivery still
//!   pending on a thread that did not answer).
//!
//! Here too a thread's stack is disabled at its end only if it is still ours (another runtime may
//! have put its own in place), unlike crash-handling's interposer.
//!
//! Not covered: threads that block the real-time signal when init runs and started before it (they
//! keep the stack they had: std's small one for std's threads, none for C threads), threads made
//! without `pthread_create` (a raw `clone`), threads created by shared libraries that resolve
//! `pthread_create` to the C library directly (the executable's definition is used only where the
//! executable exports it: link with `-C link-arg=-Wl,--export-dynamic-symbol=pthread_create` to cover
//! those), and programs without the interposer (statically linked, sanitized, Miri, or the
//! `interpose` feature off): there only threads that exist at init get a stack from lastword.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::PAGE;

/// Size of each alternate signal stack (a guard page below it is not counted), mapped with
/// `MAP_NORESERVE` (address space; pages are used only as far as a handler reaches). The handler runs
/// on it, and so do the previous handlers it calls (which may not have asked for an alternate stack:
/// wasmtime wants 256 KiB for its own), and a nested SIGABRT when one of them aborts.
pub(super) const ALT_STACK: usize = 256 * 1024;

/// How long `init` waits at most for the threads that existed before it to take their stacks.
pub(super) const SWEEP_WAIT: Duration = Duration::from_millis(500);

/// Set once init succeeded: from then on new threads get a stack as they start.
static ENABLED: AtomicBool = AtomicBool::new(false);
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

/// Turns the stacks of new threads on, then gives one to each thread that exists already. A thread
/// being made now either is in the list that `cover_existing` reads (and runs with its signals
/// unblocked by the time it read `ENABLED` as false), or reads `ENABLED` as true when it starts.
pub(super) fn enable_and_cover_existing() {
    ENABLED.store(true, Ordering::SeqCst);
    cover_existing();
}

/// Gives the calling thread, which has just started, its own stack, freed when it ends.
#[cfg_attr(not(all(lastword_interposer, not(miri))), allow(dead_code))]
pub(super) fn give_new_thread() {
    if !ENABLED.load(Ordering::SeqCst) || has_usable_stack() {
        return;
    }
    let Some(sp) = map_stack() else { return };
    if install(sp) {
        // SAFETY: KEY was made by `prepare` before ENABLED was set.
        unsafe { libc::pthread_setspecific(KEY.load(Ordering::SeqCst), sp) };
    } else {
        release(sp);
    }
}

/// The real-time signal used to reach the threads that existed before init, 0 when none.
static SWEEP_SIGNAL: AtomicUsize = AtomicUsize::new(0);
/// The stacks mapped for them: lowest usable address of the first, and how many.
static SWEEP_BASE: AtomicUsize = AtomicUsize::new(0);
static SWEEP_COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many stacks were taken.
static SWEEP_NEXT: AtomicUsize = AtomicUsize::new(0);
/// The threads the signal was sent to (leaked, `SWEEP_COUNT` of them): each thread's entry is set
/// to 0 when it answers.
static SWEEP_TIDS: AtomicPtr<AtomicI32> = AtomicPtr::new(ptr::null_mut());

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

/// Whether thread `tid` of this process still exists.
fn alive(pid: libc::pid_t, tid: libc::pid_t) -> bool {
    // SAFETY: tgkill with signal 0 only checks that the thread exists.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) == 0 }
}

/// A real-time signal that nobody handles (its disposition is the default), highest first, with
/// that disposition.
fn free_signal() -> Option<(libc::c_int, libc::sigaction)> {
    (libc::SIGRTMIN()..=libc::SIGRTMAX()).rev().find_map(|sig| {
        // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let read = unsafe { super::interpose::real_sigaction(sig, ptr::null(), &raw mut old) == 0 };
        (read && old.sa_sigaction == libc::SIG_DFL).then_some((sig, old))
    })
}

/// Asks each thread that existed before init to install an alternate stack mapped here for it, and
/// waits for the answers, at most [`SWEEP_WAIT`] (plus 15 ms for threads that block the signal a
/// moment). Best effort: what cannot be done (no free signal, no memory, a thread that blocks the
/// signal or does not answer in time) leaves that thread as it was. Afterwards the signal has the
/// disposition it had before.
fn cover_existing() {
    let threads = other_threads();
    if threads.is_empty() {
        return;
    }
    let Some((sig, previous)) = free_signal() else { return };
    // A thread being created runs with every signal blocked until it first runs (glibc unblocks
    // them in the new thread's start). Threads made through the interposer cover themselves then;
    // for others, look again a few times in 15 ms before taking a block for a thread's own choice.
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
    // Leaked: a handler that runs late (a delivery under way when the wait ends) may still read it.
    let tids: &'static [AtomicI32] = Box::leak(targets.iter().map(|&t| AtomicI32::new(t)).collect());
    SWEEP_TIDS.store(tids.as_ptr().cast_mut(), Ordering::SeqCst);
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
        if super::interpose::real_sigaction(sig, &raw const action, ptr::null_mut()) != 0 {
            return;
        }
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    for slot in tids {
        let tid = slot.load(Ordering::SeqCst);
        // SAFETY: tgkill to a thread of this process with the signal our handler now takes.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } != 0 {
            // Gone already: not waited for.
            let _ = slot.compare_exchange(tid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    let deadline = Instant::now() + SWEEP_WAIT;
    let mut round = 0u32;
    loop {
        let mut waiting = false;
        for slot in tids {
            let tid = slot.load(Ordering::SeqCst);
            if tid == 0 {
                continue;
            }
            // Now and then, a thread that exited before it took the signal is not waited for.
            if round % 8 == 7 && !alive(pid, tid) {
                let _ = slot.compare_exchange(tid, 0, Ordering::SeqCst, Ordering::SeqCst);
                continue;
            }
            waiting = true;
        }
        if !waiting || Instant::now() >= deadline {
            break;
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    // The disposition the signal had. SIG_IGN first: it discards a delivery still pending on a
    // thread that did not answer, which would otherwise meet the default action (for a real-time
    // signal, the end of the process).
    // SAFETY: SIG_IGN, then the disposition read before, for the signal we took.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        super::interpose::real_sigaction(sig, &raw const ignore, ptr::null_mut());
        super::interpose::real_sigaction(sig, &raw const previous, ptr::null_mut());
    }
}

/// The handler of the sweep's real-time signal, on one thread that existed before init: gives the
/// thread the next stack mapped for it, unless it has a large enough one. The stack goes into the
/// signal context's `uc_stack`, not through `sigaltstack`: returning from a handler (`rt_sigreturn`)
/// sets the thread's alternate stack to what `uc_stack` says, which would undo a change made during
/// the handler. **Async-signal-safe**: atomics, `getpid`, `gettid` and `sigaltstack` (to read).
extern "C" fn sweep_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: `info` is the kernel's siginfo for an SA_SIGINFO handler; getpid cannot fail.
    let ours =
        !info.is_null() && unsafe { (*info).si_code == libc::SI_TKILL && (*info).si_pid() == libc::getpid() };
    if !ours || context.is_null() {
        return;
    }
    let count = SWEEP_COUNT.load(Ordering::SeqCst);
    if !has_usable_stack() {
        let i = SWEEP_NEXT.fetch_add(1, Ordering::SeqCst);
        if i < count {
            let sp = SWEEP_BASE.load(Ordering::SeqCst) + i * (ALT_STACK + PAGE);
            let stack = libc::stack_t { ss_sp: sp as *mut libc::c_void, ss_flags: 0, ss_size: ALT_STACK };
            // SAFETY: `context` is the kernel's ucontext_t for this handler; the stack was mapped for
            // this thread and is never unmapped.
            unsafe { (*context.cast::<libc::ucontext_t>()).uc_stack = stack };
        }
    }
    let tids = SWEEP_TIDS.load(Ordering::SeqCst);
    if !tids.is_null() {
        // SAFETY: gettid cannot fail.
        let me = unsafe { libc::gettid() };
        for i in 0..count {
            // SAFETY: SWEEP_TIDS points at `count` leaked entries, published before the signal was
            // sent.
            let slot = unsafe { &*tids.add(i) };
            if slot.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                break;
            }
        }
    }
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
