//! Fatal-signal handlers: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, and stack overflow (the handlers
//! run on an alternate stack).
//!
//! The handler records raw state only, with async-signal-safe calls: the signal, its code and fault
//! address, the thread, the registers from the signal context, a copy of the top of the crashing
//! thread's stack, and (prepared at init) the context and the map of loaded modules with their build
//! ids. It commits that through the spool's [`SignalSlot`], restores the disposition that was there
//! before and lets the signal take its course, so the exit status and any core dump are what they
//! would have been without lastword. Unwinding and symbolization happen later, out of the handler
//! (`crate::symbolize`), the way minidumps work. REPORT.md gives the raw format.
//!
//! This is the crate's only module with `unsafe` code (a small module of our own rather than the
//! `crash-handler` crate, which takes locks in its handler). Every function reachable from the
//! handler is marked async-signal-safe: no allocation, no locks, no formatting machinery.

#![allow(unsafe_code)]

pub(crate) mod crumbs;
mod modules;
mod write;

pub(crate) use modules::{Module as LoadedModule, gnu_build_id, loaded as loaded_modules};

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use lastword_spool::{FLAG_RAW_SIGNAL, Kind, SignalSlot};

use crate::init::{InitError, Shared};
use write::Writer;

/// The signals handled, in the order of `HandlerState::previous`.
const SIGNALS: [libc::c_int; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT];
/// How much of the crashing thread's stack is copied, from the stack pointer up.
const STACK_COPY: usize = 32 * 1024;
const PAGE: usize = 4096;
/// Size of the alternate signal stack installed on the thread that calls `init`.
const ALT_STACK: usize = 64 * 1024;

struct HandlerState {
    slot: SignalSlot,
    /// Context and module map, formatted at init.
    prebuilt: Vec<u8>,
    previous: [libc::sigaction; SIGNALS.len()],
}

/// Room for the `crumb` lines of a report: every slot of the ring at its longest escaped size.
const CRUMBS_BUF: usize = crumbs::SLOTS * crumbs::LINE_MAX;

/// Buffers used by the handler; only the thread that set `BUSY` touches them.
struct Buffers {
    header: UnsafeCell<[u8; 4096]>,
    crumbs: UnsafeCell<[u8; CRUMBS_BUF]>,
    crumb_line: UnsafeCell<[u8; crumbs::LINE_MAX]>,
    stack_line: UnsafeCell<[u8; 128]>,
    stack: UnsafeCell<[u8; STACK_COPY]>,
}

// SAFETY: the buffers are only accessed by the one thread that won the `BUSY` flag in the handler.
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers = Buffers {
    header: UnsafeCell::new([0; 4096]),
    crumbs: UnsafeCell::new([0; CRUMBS_BUF]),
    crumb_line: UnsafeCell::new([0; crumbs::LINE_MAX]),
    stack_line: UnsafeCell::new([0; 128]),
    stack: UnsafeCell::new([0; STACK_COPY]),
};
static STATE: AtomicPtr<HandlerState> = AtomicPtr::new(ptr::null_mut());
static BUSY: AtomicBool = AtomicBool::new(false);
thread_local! {
    /// Set by the panic hook once it stored this thread's panic report, cleared when the hook starts.
    /// A SIGABRT on a thread that has it set, while the thread is still panicking, is the abort that
    /// follows that panic (`panic = "abort"`, a panic during unwinding, a panic out of an
    /// `extern "C"` function): the same crash, not reported twice. A panic that was caught is over
    /// (the thread is no longer panicking): a later abort is a crash of its own, and so is an abort on
    /// any other thread. Per thread, so that threads panicking at once do not confuse each other.
    /// Constant-initialized and without a destructor: reading it is a plain thread-local access.
    static PANIC_REPORTED: Cell<bool> = const { Cell::new(false) };
}

/// Notes whether the calling thread's panic was stored as a report (see [`PANIC_REPORTED`]).
pub(crate) fn note_panic_reported(reported: bool) {
    PANIC_REPORTED.with(|r| r.set(reported));
}

/// Whether the calling thread's last panic was stored as a report (see [`PANIC_REPORTED`]).
pub(crate) fn panic_reported() -> bool {
    PANIC_REPORTED.with(Cell::get)
}

/// Whether a SIGABRT on the calling thread follows a panic of this thread that was reported.
/// **Async-signal-safe**: a constant-initialized thread-local without a destructor, and
/// `std::thread::panicking`, which reads an atomic and a constant-initialized thread-local counter (no
/// allocation, no lock).
fn abort_follows_reported_panic() -> bool {
    PANIC_REPORTED.with(Cell::get) && std::thread::panicking()
}

/// Installs the handlers for the process and an alternate signal stack on the calling thread.
/// (Threads spawned by Rust's standard library get an alternate stack of their own from it.)
pub(crate) fn install(shared: &Shared) -> Result<(), InitError> {
    if !STATE.load(Ordering::SeqCst).is_null() {
        return Ok(());
    }
    let slot = shared.spool.reserve_signal_slot()?;
    let mut prebuilt = Vec::new();
    let context = serde_json::to_string(shared.context()).unwrap_or_else(|_| "{}".into());
    prebuilt.extend_from_slice(format!("context {context}\n").as_bytes());
    for m in modules::loaded() {
        prebuilt.extend_from_slice(
            format!("module {:#x} {:#x} {:#x} {} {}\n", m.start, m.end, m.bias, m.build_id, m.path)
                .as_bytes(),
        );
    }
    install_alt_stack();
    // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty mask, no flags); each entry
    // is overwritten with the previous disposition by the `sigaction` call that installs our handler
    // for that signal, before that handler can run.
    let state = Box::new(HandlerState { slot, prebuilt, previous: unsafe { std::mem::zeroed() } });
    // Published (and leaked: a handler may run until the process ends) before any handler is
    // installed, so that a handler never finds it missing.
    let state = Box::into_raw(state);
    STATE.store(state, Ordering::SeqCst);
    // SAFETY: `action` is fully initialised (zeroed, then the fields set); `handler` has the
    // signature SA_SIGINFO requires; `(*state).previous[i]` is valid, leaked memory for the old
    // action, written by the kernel as part of the call that installs the new one.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&raw mut action.sa_mask);
        for sig in SIGNALS {
            libc::sigaddset(&raw mut action.sa_mask, sig);
        }
        for (i, sig) in SIGNALS.into_iter().enumerate() {
            if libc::sigaction(sig, &raw const action, &raw mut (*state).previous[i]) != 0 {
                let error = std::io::Error::last_os_error();
                // Put back what was installed before this one failed.
                for (j, installed) in SIGNALS.into_iter().enumerate().take(i) {
                    libc::sigaction(installed, &raw const (*state).previous[j], ptr::null_mut());
                }
                return Err(InitError::Thread(error));
            }
        }
    }
    Ok(())
}

/// Gives the calling thread an alternate signal stack of `ALT_STACK` bytes, unless it has one that
/// large already. The memory is leaked on purpose: it must outlive the thread's last signal.
fn install_alt_stack() {
    // SAFETY: sigaltstack with a null new stack only reads the current one into `old`.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is valid for writing.
    if unsafe { libc::sigaltstack(ptr::null(), &raw mut old) } == 0
        && old.ss_flags & libc::SS_DISABLE == 0
        && old.ss_size >= ALT_STACK
    {
        return;
    }
    let memory: &'static mut [u8] = Box::leak(vec![0u8; ALT_STACK].into_boxed_slice());
    let stack = libc::stack_t { ss_sp: memory.as_mut_ptr().cast(), ss_flags: 0, ss_size: memory.len() };
    // SAFETY: `stack` points at leaked memory of `ss_size` bytes that is never freed or reused.
    unsafe { libc::sigaltstack(&raw const stack, ptr::null_mut()) };
}

/// The signal handler. **Async-signal-safe**: it calls `getpid`, `gettid`, `prctl`,
/// `process_vm_readv`, `nanosleep`, `sigaction`, `raise` and `write`, and the spool slot's commit
/// (see its docs); it allocates nothing and takes no lock.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let won = !BUSY.swap(true, Ordering::SeqCst);
    if !won {
        // Another thread is writing its report and will end the process; give it time.
        for _ in 0..1000 {
            let pause = libc::timespec { tv_sec: 0, tv_nsec: 10_000_000 };
            // SAFETY: nanosleep with a valid timespec and a null remainder.
            unsafe { libc::nanosleep(&raw const pause, ptr::null_mut()) };
        }
    } else {
        let state = STATE.load(Ordering::SeqCst);
        // SAFETY: STATE is null or the leaked HandlerState, never freed.
        let used = unsafe { state.as_ref() }.is_none_or(|s| s.slot.is_used());
        // A SIGABRT that follows a reported panic, or the abort that follows a stack overflow we
        // reported, is the same crash.
        let skip = used || (sig == libc::SIGABRT && abort_follows_reported_panic());
        if !skip {
            // SAFETY: STATE points at the leaked HandlerState, never freed; `info` and `context` come
            // from the kernel for an SA_SIGINFO handler; BUSY gives this thread the buffers.
            unsafe { record(&*state, sig, info, context) };
        }
    }
    // SAFETY: as above for STATE; `info` is valid for this handler invocation.
    unsafe { restore_and_resume(STATE.load(Ordering::SeqCst), sig, info) };
    // Only the thread that owns the buffers gives them back.
    if won {
        BUSY.store(false, Ordering::SeqCst);
    }
}

/// Writes the raw report. **Async-signal-safe.**
///
/// # Safety
/// Called only from `handler` by the thread holding `BUSY`, with the kernel's `info` and `context`.
unsafe fn record(
    state: &HandlerState,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: BUSY is held by this thread: nobody else uses the buffers.
    let (header, crumbs_buf, crumb_line, stack_line, stack) = unsafe {
        (
            &mut *BUFFERS.header.get(),
            &mut *BUFFERS.crumbs.get(),
            &mut *BUFFERS.crumb_line.get(),
            &mut *BUFFERS.stack_line.get(),
            &mut *BUFFERS.stack.get(),
        )
    };
    let mut w = Writer::new(header);
    w.str("lastword-raw-signal 1\nsignal ").int(i64::from(sig)).str("\n");
    if !info.is_null() {
        // SAFETY: `info` is the kernel's siginfo for this signal.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        w.str("code ").int(i64::from(code)).str("\naddr ").hex(addr as u64).str("\n");
    }
    // SAFETY: getpid and gettid cannot fail.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    w.str("pid ").int(i64::from(pid)).str("\ntid ").int(tid).str("\n");
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes plus NUL into the 17-byte buffer.
    if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0 {
        let len = name.iter().position(|&b| b == 0).unwrap_or(16);
        w.str("thread ").bytes(&name[..len]).str("\n");
    }
    // SAFETY: `context` is the kernel's ucontext_t for an SA_SIGINFO handler (or null).
    let sp = unsafe { registers(&mut w, context) };
    let copied = copy_stack(sp, stack);
    let mut line = Writer::new(stack_line);
    line.str("stack ").hex(sp as u64).str(" ").int(copied as i64).str("\n");
    let mut crumb_lines = Writer::new(crumbs_buf);
    crumbs::RING.write_lines(&mut crumb_lines, crumb_line);
    let parts: [&[u8]; 5] =
        [w.written(), crumb_lines.written(), &state.prebuilt, line.written(), &stack[..copied]];
    if state.slot.commit(Kind::Crash, FLAG_RAW_SIGNAL, &parts).is_err() {
        let msg = b"lastword: could not store the crash report of a fatal signal\n";
        // SAFETY: write(2) to stderr with a valid buffer.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

/// Writes the registers of `context` as `reg NAME VALUE` lines and `pc`/`sp`; returns the stack
/// pointer. **Async-signal-safe.**
///
/// # Safety
/// `context` is null or the kernel's `ucontext_t` for this signal.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn registers(w: &mut Writer<'_>, context: *mut libc::c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    // SAFETY: non-null, and the kernel passes a ucontext_t as the third handler argument.
    let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    const NAMES: [(&str, libc::c_int); 18] = [
        ("rax", libc::REG_RAX),
        ("rbx", libc::REG_RBX),
        ("rcx", libc::REG_RCX),
        ("rdx", libc::REG_RDX),
        ("rsi", libc::REG_RSI),
        ("rdi", libc::REG_RDI),
        ("rbp", libc::REG_RBP),
        ("rsp", libc::REG_RSP),
        ("r8", libc::REG_R8),
        ("r9", libc::REG_R9),
        ("r10", libc::REG_R10),
        ("r11", libc::REG_R11),
        ("r12", libc::REG_R12),
        ("r13", libc::REG_R13),
        ("r14", libc::REG_R14),
        ("r15", libc::REG_R15),
        ("rip", libc::REG_RIP),
        ("eflags", libc::REG_EFL),
    ];
    for (name, index) in NAMES {
        let value = gregs.get(index as usize).copied().unwrap_or(0) as u64;
        w.str("reg ").str(name).str(" ").hex(value).str("\n");
    }
    let pc = gregs.get(libc::REG_RIP as usize).copied().unwrap_or(0) as u64;
    let sp = gregs.get(libc::REG_RSP as usize).copied().unwrap_or(0) as u64;
    w.str("pc ").hex(pc).str("\nsp ").hex(sp).str("\n");
    sp as usize
}

/// # Safety
/// `context` is null or the kernel's `ucontext_t` for this signal.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
unsafe fn registers(w: &mut Writer<'_>, context: *mut libc::c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    // SAFETY: non-null, and the kernel passes a ucontext_t as the third handler argument.
    let mc = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext };
    for (i, value) in mc.regs.iter().enumerate() {
        w.str("reg x").int(i as i64).str(" ").hex(*value).str("\n");
    }
    w.str("pc ").hex(mc.pc).str("\nsp ").hex(mc.sp).str("\n");
    mc.sp as usize
}

/// # Safety
/// Nothing is read on other platforms.
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
unsafe fn registers(_w: &mut Writer<'_>, _context: *mut libc::c_void) -> usize {
    0
}

/// Copies up to `out.len()` bytes of memory from `sp` upwards, stopping at the first page that is
/// not readable, with `process_vm_readv` on this process (which returns an error instead of
/// faulting). Returns the number of bytes copied. **Async-signal-safe.**
fn copy_stack(sp: usize, out: &mut [u8; STACK_COPY]) -> usize {
    if sp == 0 {
        return 0;
    }
    let mut remote = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; STACK_COPY / PAGE + 1];
    let mut count = 0;
    let mut addr = sp;
    let end = sp.saturating_add(STACK_COPY);
    while addr < end && count < remote.len() {
        let next = ((addr / PAGE) + 1) * PAGE;
        let len = next.min(end) - addr;
        remote[count] = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
        count += 1;
        addr += len;
    }
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    // SAFETY: `local` covers `out`; the remote ranges are only read by the kernel, which reports an
    // unreadable page as a short count or an error instead of faulting.
    let n = unsafe {
        libc::process_vm_readv(
            libc::getpid(),
            &raw const local,
            1,
            remote.as_ptr(),
            count as libc::c_ulong,
            0,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

/// Puts back the disposition that was there before lastword and lets the signal take its course:
/// a fault returns and re-executes (and gets the previous handler, or the default action); a signal
/// that was sent (kill, raise, abort) is raised again, and arrives when the handler returns.
/// **Async-signal-safe.**
///
/// # Safety
/// `state` is null or the leaked `HandlerState`; `info` is the kernel's siginfo or null.
unsafe fn restore_and_resume(state: *const HandlerState, sig: libc::c_int, info: *mut libc::siginfo_t) {
    let index = SIGNALS.iter().position(|&s| s == sig);
    // SAFETY: `state` is the leaked HandlerState or null; sigaction gets a valid action or
    // SIG_DFL; raise is async-signal-safe.
    unsafe {
        match (state.as_ref(), index) {
            (Some(state), Some(i)) => {
                libc::sigaction(sig, &raw const state.previous[i], ptr::null_mut());
            }
            _ => {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let sent = info.is_null() || (*info).si_code <= 0;
        if sent {
            libc::raise(sig);
        }
    }
}
