//! Fatal-signal handlers: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, and stack overflow on
//! any thread (the handlers run on an alternate stack, which `stacks` gives every thread).
//!
//! The handler records raw state only, with async-signal-safe calls: the signal, its code and (for
//! faults) the fault address, the thread, the uptime, the registers from the signal context, a copy
//! of the top of the crashing thread's stack (from the first readable address at or above the stack
//! pointer, so that a stack overflow's copy starts above the guard page), whether the fault is a
//! stack overflow, the module list read from `/proc/self/maps` at crash time, and the context
//! prepared at init. It commits that through the spool's [`SignalSlot`] and lets the signal take its
//! course, so the exit status and any core dump are what they would have been without lastword.
//! Unwinding and symbolization happen later, out of the handler (`crate::symbolize`), the way
//! minidumps work. REPORT.md gives the raw format.
//!
//! Another runtime's handler (a JIT, a GC, a wasm engine) installed before lastword gets the first
//! chance at a fault, as such runtimes expect of whoever is installed after them: it is called, and
//! the fault is a crash only if it gives the fault up (it puts another disposition in place to let the
//! fault kill the process, or it ends the process with another fatal signal, such as std's stack
//! overflow handler calling `abort`). REPORT.md, "Other signal handlers", states the rule.
//!
//! This is the crate's only module with `unsafe` code (a small module of our own rather than the
//! `crash-handler` crate, which takes locks in its handler). Every function reachable from the
//! handler is marked async-signal-safe: no allocation, no locks, no formatting machinery.

#![allow(unsafe_code)]

pub(crate) mod atexit;
pub(crate) mod crumbs;
mod maps;
mod memory;
mod modules;
mod stacks;
mod write;

pub(crate) use modules::{Module as LoadedModule, gnu_build_id, loaded as loaded_modules};

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use lastword_spool::{FLAG_RAW_SIGNAL, Kind, SignalSlot, Spool};

use crate::init::InitError;
use crate::report::Context;
use memory::{Denied, Memory, errno_name};
use modules::Module;
use write::Writer;

/// The signals handled, in the order of `HandlerState::previous`.
const SIGNALS: [libc::c_int; 6] =
    [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT, libc::SIGTRAP];
/// How much of the crashing thread's stack is copied, from the stack pointer up.
const STACK_COPY: usize = 32 * 1024;
const PAGE: usize = 4096;
/// How far above an unreadable stack pointer (or fault address) the stack may start: the kernel's
/// guard gap below a growing stack (256 pages) plus a large frame.
const GUARD_MAX: usize = (256 + 16) * PAGE;
/// How near the stack pointer the fault address of a stack overflow is.
const NEAR_SP: usize = 64 * 1024;

struct HandlerState {
    slot: SignalSlot,
    /// The `context` line, formatted at init.
    context_line: Vec<u8>,
    /// The modules loaded at init, with their build ids.
    modules: Vec<Module>,
    /// Their `module` lines, for when `/proc/self/maps` cannot be read at crash time.
    module_lines: Vec<u8>,
    /// CLOCK_MONOTONIC at init, in milliseconds.
    init_ms: u64,
    previous: [libc::sigaction; SIGNALS.len()],
}

/// Room for the `crumb` lines of a report: every slot of the ring at its longest escaped size.
const CRUMBS_BUF: usize = crumbs::SLOTS * crumbs::LINE_MAX;

/// Buffers used by the handler; only the thread that set `BUSY` touches them.
struct Buffers {
    header: UnsafeCell<[u8; 8192]>,
    crumbs: UnsafeCell<[u8; CRUMBS_BUF]>,
    crumb_line: UnsafeCell<[u8; crumbs::LINE_MAX]>,
    maps: UnsafeCell<[u8; maps::MAPS_MAX]>,
    modules: UnsafeCell<[u8; 128 * 1024]>,
    module_line: UnsafeCell<[u8; 4200]>,
    elf: UnsafeCell<[u8; 4096]>,
    stack_line: UnsafeCell<[u8; 128]>,
    stack: UnsafeCell<[u8; STACK_COPY]>,
}

// SAFETY: the buffers are only accessed by the one thread that won the `BUSY` flag in the handler.
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers = Buffers {
    header: UnsafeCell::new([0; 8192]),
    crumbs: UnsafeCell::new([0; CRUMBS_BUF]),
    crumb_line: UnsafeCell::new([0; crumbs::LINE_MAX]),
    maps: UnsafeCell::new([0; maps::MAPS_MAX]),
    modules: UnsafeCell::new([0; 128 * 1024]),
    module_line: UnsafeCell::new([0; 4200]),
    elf: UnsafeCell::new([0; 4096]),
    stack_line: UnsafeCell::new([0; 128]),
    stack: UnsafeCell::new([0; STACK_COPY]),
};
static STATE: AtomicPtr<HandlerState> = AtomicPtr::new(ptr::null_mut());
static BUSY: AtomicBool = AtomicBool::new(false);

/// A fault handed to the handler that was installed before lastword, while that handler runs.
#[derive(Clone, Copy)]
struct FirstChance {
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
}

thread_local! {
    /// Set by the panic hook once it stored this thread's panic report, cleared when the hook starts.
    /// A SIGABRT on a thread that has it set, while the thread is still panicking, is the abort that
    /// follows that panic (`panic = "abort"`, a panic during unwinding, a panic out of an
    /// `extern "C"` function): the same crash, not reported twice. A panic that was caught is over
    /// (the thread is no longer panicking): a later abort is a crash of its own, and so is an abort on
    /// any other thread. Per thread, so that threads panicking at once do not confuse each other.
    /// Constant-initialized and without a destructor: reading it is a plain thread-local access.
    static PANIC_REPORTED: Cell<bool> = const { Cell::new(false) };
    /// The fault this thread handed to the previous handler, while that handler runs (see
    /// `first_chance`). Constant-initialized, without a destructor.
    static FIRST_CHANCE: Cell<Option<FirstChance>> = const { Cell::new(None) };
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

fn monotonic_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid clock and timespec; async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000 + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Everything the handlers need, made by [`prepare`] before anything is installed.
pub(crate) struct Prepared {
    state: Box<HandlerState>,
}

/// Makes what the handlers need: the spool's signal slot, the context line, the module list. Every
/// step that can fail is here; nothing is installed yet (dropping the result gives the slot back).
pub(crate) fn prepare(spool: &Spool, context: &Context) -> Result<Prepared, InitError> {
    let slot = spool.reserve_signal_slot()?;
    let json = serde_json::to_string(context).unwrap_or_else(|_| "{}".into());
    let modules = modules::loaded();
    let mut module_lines = Vec::new();
    for m in &modules {
        module_lines.extend_from_slice(
            format!("module {:#x} {:#x} {:#x} {} {}\n", m.start, m.end, m.bias, m.build_id, m.path)
                .as_bytes(),
        );
    }
    stacks::prepare().map_err(InitError::Thread)?;
    // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty mask, no flags); each entry
    // is overwritten with the previous disposition by the `sigaction` call that installs our handler
    // for that signal, before that handler can run.
    let previous = unsafe { std::mem::zeroed() };
    let state = HandlerState {
        slot,
        context_line: format!("context {json}\n").into_bytes(),
        modules,
        module_lines,
        init_ms: monotonic_ms(),
        previous,
    };
    Ok(Prepared { state: Box::new(state) })
}

impl Prepared {
    /// Installs the handlers for the process and alternate signal stacks for its threads. Fails only
    /// if `sigaction` does (it cannot for these signals), and then puts back what it installed.
    pub(crate) fn install(self) -> Result<(), InitError> {
        if !STATE.load(Ordering::SeqCst).is_null() {
            return Ok(());
        }
        stacks::give_this_thread();
        // Published (and leaked: a handler may run until the process ends) before any handler is
        // installed, so that a handler never finds it missing.
        let state = Box::into_raw(self.state);
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
                    STATE.store(ptr::null_mut(), Ordering::SeqCst);
                    drop(Box::from_raw(state));
                    return Err(InitError::Thread(error));
                }
            }
        }
        stacks::enable_and_cover_existing();
        Ok(())
    }
}

/// The current handler address of `sig`. Async-signal-safe.
fn current_handler(sig: libc::c_int) -> usize {
    // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigaction(sig, ptr::null(), &raw mut current) };
    current.sa_sigaction
}

/// Whether a disposition is a function (not SIG_DFL, SIG_IGN).
fn is_function(action: &libc::sigaction) -> bool {
    action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN
}

/// Whether the signal was raised by the kernel for a fault (an instruction), rather than sent.
///
/// # Safety
/// `info` is null or the kernel's siginfo.
unsafe fn is_fault(info: *const libc::siginfo_t) -> bool {
    // SAFETY: per the contract.
    !info.is_null() && unsafe { (*info).si_code } > 0
}

/// The signal handler. **Async-signal-safe**: besides what `record` calls, it calls `sigaction`,
/// `pthread_sigmask`, `sigismember`/`sigaddset`, `raise`, `nanosleep` and the previous handler; it
/// allocates nothing and takes no lock.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let state = STATE.load(Ordering::SeqCst);
    // SAFETY: STATE is null or the leaked HandlerState, never freed.
    let Some(state) = (unsafe { state.as_ref() }) else {
        // SAFETY: the default action, then the signal takes its course.
        unsafe { resume_with(sig, None, info) };
        return;
    };
    let index = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: `info` is the kernel's siginfo or null.
    let fault = unsafe { is_fault(info) };
    // A signal sent while the previous handler runs on this thread for a fault we gave it: that
    // handler gave the fault up and ends the process (std's stack overflow handler prints and calls
    // `abort`). Report the fault, then let this signal take its course. (A fault inside that handler
    // is handled like any other fault, below.)
    if !fault && let Some(outer) = nested_first_chance(context) {
        report(state, outer.sig, outer.info, outer.context);
        // SAFETY: `info` is the kernel's siginfo for this signal.
        unsafe { resume_with(sig, Some(&state.previous[index]), info) };
        return;
    }
    let previous = &state.previous[index];
    if fault && is_function(previous) {
        let before = current_handler(sig);
        // SAFETY: the previous handler, with the kernel's arguments for this signal.
        unsafe { first_chance(previous, sig, info, context) };
        if current_handler(sig) == before {
            // It handled the fault (and may have changed the context to resume elsewhere): resume.
            return;
        }
        // It gave the fault up by putting another disposition in place; returning re-executes the
        // faulting instruction, which then takes that course.
        report(state, sig, info, context);
        return;
    }
    report(state, sig, info, context);
    // SAFETY: `info` is the kernel's siginfo or null.
    unsafe { resume_with(sig, Some(previous), info) };
}

/// The fault this thread handed to the previous handler, if the signal being handled now arrived
/// while that handler runs: the interrupted code ran on this thread's alternate stack, below the
/// first-chance frame. (A stale mark, left by a previous handler that jumped out with `longjmp`, is
/// not mistaken for it: a signal later interrupts code on the thread's own stack.)
/// **Async-signal-safe.**
fn nested_first_chance(context: *mut libc::c_void) -> Option<FirstChance> {
    let outer = FIRST_CHANCE.with(Cell::get)?;
    // SAFETY: `context` is the kernel's ucontext_t for this signal, or null.
    let sp = unsafe { context_sp(context) };
    // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
    let mut alt: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(ptr::null(), &raw mut alt) } != 0 || alt.ss_flags & libc::SS_DISABLE != 0 {
        return None;
    }
    let (low, frame) = (alt.ss_sp as usize, outer.context as usize);
    (low <= sp && sp < frame && frame <= low.saturating_add(alt.ss_size)).then_some(outer)
}

/// Calls the handler that was installed before lastword with the kernel's arguments, the way the
/// kernel would have: with its signal mask added to the one at the fault (and the signal itself
/// unless it asked for SA_NODEFER), after resetting the disposition if it asked for SA_RESETHAND.
/// **Async-signal-safe** (as far as that handler is).
///
/// # Safety
/// `previous` is a disposition that is a function; `info` and `context` are the kernel's.
unsafe fn first_chance(
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: signal-mask calls on valid sigset_t values; `context` is the kernel's ucontext_t (or
    // null); the previous handler is called with the signature its SA_SIGINFO flag says it has.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        if context.is_null() {
            libc::pthread_sigmask(libc::SIG_SETMASK, ptr::null(), &raw mut mask);
        } else {
            mask = (*context.cast::<libc::ucontext_t>()).uc_sigmask;
        }
        for s in 1..=64 {
            if libc::sigismember(&previous.sa_mask, s) == 1 {
                libc::sigaddset(&raw mut mask, s);
            }
        }
        if previous.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&raw mut mask, sig);
        }
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const mask, &raw mut saved);
        if previous.sa_flags & libc::SA_RESETHAND != 0 {
            libc::signal(sig, libc::SIG_DFL);
        }
        // Kept for the call, then the mark of an enclosing call (a fault inside a previous handler
        // that we handed a fault to) is put back.
        let enclosing = FIRST_CHANCE.with(|f| f.replace(Some(FirstChance { sig, info, context })));
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            f(sig, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            f(sig);
        }
        FIRST_CHANCE.with(|f| f.set(enclosing));
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const saved, ptr::null_mut());
    }
}

/// Records the crash once per process: the first thread to get here writes the report, another
/// thread crashing at the same time waits for it (the process is about to end). A SIGABRT that
/// follows a reported panic, or the abort after a crash already reported, is the same crash.
/// **Async-signal-safe.**
fn report(state: &HandlerState, sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if BUSY.swap(true, Ordering::SeqCst) {
        // Another thread is writing its report and will end the process; give it time.
        for _ in 0..1000 {
            let pause = libc::timespec { tv_sec: 0, tv_nsec: 10_000_000 };
            // SAFETY: nanosleep with a valid timespec and a null remainder.
            unsafe { libc::nanosleep(&raw const pause, ptr::null_mut()) };
        }
        return;
    }
    let skip = state.slot.is_used() || (sig == libc::SIGABRT && abort_follows_reported_panic());
    if !skip {
        // SAFETY: BUSY gives this thread the buffers; `info` and `context` come from the kernel for
        // an SA_SIGINFO handler.
        unsafe { record(state, sig, info, context) };
    }
    BUSY.store(false, Ordering::SeqCst);
}

/// Writes the raw report. **Async-signal-safe.**
///
/// # Safety
/// Called only by the thread holding `BUSY`, with the kernel's `info` and `context`.
unsafe fn record(
    state: &HandlerState,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: BUSY is held by this thread: nobody else uses the buffers.
    let (header, crumbs_buf, crumb_line, maps_buf, modules_buf, module_line, elf, stack_line, stack) = unsafe {
        (
            &mut *BUFFERS.header.get(),
            &mut *BUFFERS.crumbs.get(),
            &mut *BUFFERS.crumb_line.get(),
            &mut *BUFFERS.maps.get(),
            &mut *BUFFERS.modules.get(),
            &mut *BUFFERS.module_line.get(),
            &mut *BUFFERS.elf.get(),
            &mut *BUFFERS.stack_line.get(),
            &mut *BUFFERS.stack.get(),
        )
    };
    // The mappings first: they say which addresses are readable, and which modules are loaded.
    let maps_read = maps::read_maps(maps_buf);
    let maps_text = match maps_read {
        Ok((len, cut)) => Some((maps_buf.split_at(len).0, cut)),
        Err(_) => None,
    };
    let mut memory = Memory::new(maps_text);
    let mut w = Writer::new(header);
    w.str("lastword-raw-signal 1\nsignal ").int(i64::from(sig)).str("\n");
    let mut fault_addr = None;
    if !info.is_null() {
        // SAFETY: `info` is the kernel's siginfo for this signal.
        let code = unsafe { (*info).si_code };
        w.str("code ").int(i64::from(code)).str("\n");
        // Only a fault has an address; a sent signal's siginfo holds the sender's pid and uid there,
        // and SI_KERNEL faults (a general protection fault, int3) carry none.
        if code > 0 && code < libc::SI_KERNEL {
            // SAFETY: as above.
            let addr = unsafe { (*info).si_addr() } as usize;
            fault_addr = Some(addr);
            w.str("addr ").hex(addr as u64).str("\n");
        }
    }
    // SAFETY: getpid and gettid cannot fail.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    w.str("pid ").int(i64::from(pid)).str("\ntid ").int(tid).str("\n");
    if tid == i64::from(pid) {
        w.str("thread main\n");
    } else {
        let mut name = [0u8; 17];
        // SAFETY: PR_GET_NAME writes at most 16 bytes plus NUL into the 17-byte buffer.
        if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0 {
            let len = name.iter().position(|&b| b == 0).unwrap_or(16);
            w.str("thread ").bytes(&name[..len]).str("\n");
        }
    }
    w.str("uptime_ms ")
        .int(i64::try_from(monotonic_ms().saturating_sub(state.init_ms)).unwrap_or(0))
        .str("\n");
    // SAFETY: `context` is the kernel's ucontext_t for an SA_SIGINFO handler (or null).
    let sp = unsafe { registers(&mut w, context) };
    let mut missing: Option<Denied> = None;
    // The copy starts at the first readable address at or above sp: on a stack overflow sp is in
    // the guard page.
    let copy_from = if sp == 0 {
        None
    } else {
        match memory.first_readable(sp, GUARD_MAX) {
            Ok(start) => start,
            Err(d) => {
                missing = Some(d);
                None
            }
        }
    };
    if sig == libc::SIGSEGV
        && let (Some(addr), Some(start)) = (fault_addr, copy_from)
        && addr.abs_diff(sp) <= NEAR_SP
        && start > addr
        && start - addr <= GUARD_MAX
        && matches!(memory.readable(addr), Ok(false))
    {
        w.str("fault stack-overflow\n");
    }
    let copied = match copy_from.map(|start| memory.read(start, stack)) {
        Some(Ok(n)) => n,
        Some(Err(d)) => {
            missing = Some(d);
            0
        }
        None => 0,
    };
    if let Some(d) = missing {
        w.str("missing stack process_vm_readv ")
            .str(errno_name(d.vm_readv))
            .str(", /proc/self/mem ")
            .str(errno_name(d.proc_mem))
            .str("\n");
    }
    let mut modules = Writer::new(modules_buf);
    match (maps_text, maps_read) {
        (Some((text, cut)), _) => {
            if let Some(d) =
                maps::write_modules(&mut modules, module_line, text, cut, &state.modules, &mut memory, elf)
                && missing.is_none()
            {
                w.str("missing build-ids process_vm_readv ")
                    .str(errno_name(d.vm_readv))
                    .str(", /proc/self/mem ")
                    .str(errno_name(d.proc_mem))
                    .str("\n");
            }
        }
        (None, e) => {
            let e = e.err().unwrap_or(0);
            w.str("missing modules-loaded-after-init /proc/self/maps ").str(errno_name(e)).str("\n");
            modules.whole(&state.module_lines);
        }
    }
    let mut line = Writer::new(stack_line);
    line.str("stack ").hex(copy_from.unwrap_or(sp) as u64).str(" ").int(copied as i64).str("\n");
    let mut crumb_lines = Writer::new(crumbs_buf);
    crumbs::RING.write_lines(&mut crumb_lines, crumb_line);
    let parts: [&[u8]; 6] = [
        w.written(),
        crumb_lines.written(),
        &state.context_line,
        modules.written(),
        line.written(),
        &stack[..copied],
    ];
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

/// Lets the signal take its course after lastword: puts back the disposition that was there before
/// (or the default) and, for a signal that was sent (kill, raise, abort) or a trap (which does not
/// happen again when the instruction after it runs), raises it again, to arrive when the handler
/// returns; a fault returns and re-executes, and gets that disposition. **Async-signal-safe.**
///
/// # Safety
/// `info` is the kernel's siginfo or null.
unsafe fn resume_with(sig: libc::c_int, previous: Option<&libc::sigaction>, info: *mut libc::siginfo_t) {
    // SAFETY: sigaction gets a valid action or SIG_DFL; raise is async-signal-safe; `info` per the
    // contract.
    unsafe {
        match previous {
            Some(previous) => {
                libc::sigaction(sig, previous, ptr::null_mut());
            }
            None => {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if !is_fault(info) || sig == libc::SIGTRAP {
            libc::raise(sig);
        }
    }
}

/// The stack pointer at the signal. **Async-signal-safe.**
///
/// # Safety
/// `context` is null or the kernel's `ucontext_t` for this signal.
unsafe fn context_sp(context: *mut libc::c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: non-null, and the kernel passes a ucontext_t as the third handler argument.
        let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        gregs.get(libc::REG_RSP as usize).copied().unwrap_or(0) as usize
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        // SAFETY: non-null, and the kernel passes a ucontext_t as the third handler argument.
        unsafe { (*context.cast::<libc::ucontext_t>()).uc_mcontext.sp as usize }
    }
    #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        0
    }
}
