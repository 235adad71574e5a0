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
//! overflow handler calling `abort`). While it runs, a disposition it sets is held back by the
//! interposed `sigaction` (`interpose`) until the report is written. A sent signal goes to that
//! handler too, and lastword stays installed; a one-shot (`SA_RESETHAND`) handler is used once, by
//! lastword's own bookkeeping, without touching the real disposition. REPORT.md, "Other signal
//! handlers", states the rules.
//!
//! The report itself is written on a stack of its own (`record_on_report_stack`), with every signal
//! blocked: the handler may run on a small alternate stack (std's) or under another handler's
//! frames, and its own frames are kept small for that.
//!
//! This is the crate's only module with `unsafe` code (a small module of our own rather than the
//! `crash-handler` crate, which takes locks in its handler). Every function reachable from the
//! handler is marked async-signal-safe: no allocation, no locks, no formatting machinery.

#![allow(unsafe_code)]

pub(crate) mod atexit;
pub(crate) mod crumbs;
mod interpose;
mod maps;
mod memory;
mod modules;
pub(crate) mod scope_line;
mod stacks;
mod write;

pub(crate) use modules::{Module as LoadedModule, gnu_build_id, loaded as loaded_modules};

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

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
    scope: UnsafeCell<[u8; scope_line::SCOPE_MAX]>,
    maps: UnsafeCell<[u8; maps::MAPS_MAX]>,
    modules: UnsafeCell<[u8; 128 * 1024]>,
    module_line: UnsafeCell<[u8; 4200]>,
    elf: UnsafeCell<[u8; 4096]>,
    stack_line: UnsafeCell<[u8; 128]>,
    stack: UnsafeCell<[u8; STACK_COPY]>,
    /// The signal masks of `record_on_report_stack`.
    all_signals: UnsafeCell<libc::sigset_t>,
    saved_mask: UnsafeCell<libc::sigset_t>,
}

// SAFETY: the buffers are only accessed by the one thread that won the `BUSY` flag in the handler.
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers = Buffers {
    header: UnsafeCell::new([0; 8192]),
    crumbs: UnsafeCell::new([0; CRUMBS_BUF]),
    crumb_line: UnsafeCell::new([0; crumbs::LINE_MAX]),
    scope: UnsafeCell::new([0; scope_line::SCOPE_MAX]),
    maps: UnsafeCell::new([0; maps::MAPS_MAX]),
    modules: UnsafeCell::new([0; 128 * 1024]),
    module_line: UnsafeCell::new([0; 4200]),
    elf: UnsafeCell::new([0; 4096]),
    stack_line: UnsafeCell::new([0; 128]),
    stack: UnsafeCell::new([0; STACK_COPY]),
    // SAFETY: all-zero is a valid (empty) sigset_t.
    all_signals: UnsafeCell::new(unsafe { std::mem::zeroed() }),
    // SAFETY: as above.
    saved_mask: UnsafeCell::new(unsafe { std::mem::zeroed() }),
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
    /// The disposition a previous handler set that the interposer did not hold back, from
    /// `after_first_chance` to its caller. Constant-initialized, without a destructor.
    static APPLIED: Cell<Option<libc::sigaction>> = const { Cell::new(None) };
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
    memory::note_seccomp_at_init();
    map_report_stack();
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
            let action = our_action();
            for (i, sig) in SIGNALS.into_iter().enumerate() {
                if interpose::real_sigaction(sig, &raw const action, &raw mut (*state).previous[i]) != 0 {
                    let error = std::io::Error::last_os_error();
                    // Put back what was installed before this one failed.
                    for (j, installed) in SIGNALS.into_iter().enumerate().take(i) {
                        interpose::real_sigaction(
                            installed,
                            &raw const (*state).previous[j],
                            ptr::null_mut(),
                        );
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

/// lastword's own disposition for each of `SIGNALS`. Async-signal-safe (`sigemptyset`, `sigaddset`).
fn our_action() -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction, then the fields are set; the signal-set calls get a
    // valid set.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&raw mut action.sa_mask);
        for sig in SIGNALS {
            libc::sigaddset(&raw mut action.sa_mask, sig);
        }
        action
    }
}

/// The default disposition. Async-signal-safe.
fn default_action() -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction: SIG_DFL, an empty mask, no flags.
    unsafe { std::mem::zeroed() }
}

/// The current handler address of `sig` (or SIG_DFL, SIG_IGN). Async-signal-safe.
#[inline(never)]
fn current_handler(sig: libc::c_int) -> usize {
    current_action(sig).sa_sigaction
}

/// The current disposition of `sig`. Async-signal-safe.
fn current_action(sig: libc::c_int) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { interpose::real_sigaction(sig, ptr::null(), &raw mut current) };
    current
}

/// Sets the disposition of `sig`. Async-signal-safe.
fn set_action(sig: libc::c_int, action: &libc::sigaction) {
    // SAFETY: a valid action; the old one is not asked for.
    unsafe { interpose::real_sigaction(sig, action, ptr::null_mut()) };
}

/// Puts `action` in place for `sig` and returns the disposition it replaced, in one call.
/// Async-signal-safe.
fn swap_action(sig: libc::c_int, action: &libc::sigaction) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction, overwritten by the call.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a valid action and room for the old one.
    unsafe { interpose::real_sigaction(sig, action, &raw mut old) };
    old
}

/// What the disposition that was there before lastword has become, per signal (see `previous`):
/// still the saved one, or the default (a one-shot handler that was used, or a handler that put the
/// default in place for a sent signal), or ignored.
const SAVED: u8 = 0;
const NOW_DEFAULT: u8 = 1;
const NOW_IGNORED: u8 = 2;
static PREVIOUS_NOW: [AtomicU8; SIGNALS.len()] = [const { AtomicU8::new(SAVED) }; SIGNALS.len()];

/// The disposition that was there before lastword, as a handler of the signal would find it now.
#[derive(Clone, Copy)]
enum Previous<'a> {
    Default,
    Ignore,
    Function(&'a libc::sigaction),
}

/// The previous disposition of `SIGNALS[index]`, for one delivery. A one-shot handler
/// (`SA_RESETHAND`) is handed out once, as the kernel would deliver it once: from then on it is the
/// default, without lastword's own disposition ever being changed for it. **Async-signal-safe.**
fn take_previous(state: &HandlerState, index: usize) -> Previous<'_> {
    let saved = &state.previous[index];
    match PREVIOUS_NOW[index].load(Ordering::SeqCst) {
        NOW_DEFAULT => return Previous::Default,
        NOW_IGNORED => return Previous::Ignore,
        _ => {}
    }
    if saved.sa_sigaction == libc::SIG_DFL {
        Previous::Default
    } else if saved.sa_sigaction == libc::SIG_IGN {
        Previous::Ignore
    } else if saved.sa_flags & libc::SA_RESETHAND == 0
        || PREVIOUS_NOW[index]
            .compare_exchange(SAVED, NOW_DEFAULT, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        // A one-shot handler is handed out by the delivery that used it up, and by no other.
        Previous::Function(saved)
    } else {
        Previous::Default
    }
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
///
/// What it does, by the kind of signal and what was there before lastword (REPORT.md, "Other signal
/// handlers"):
/// - a fault, before it a handler: that handler gets the first chance; if it gives the fault up
///   (sets another disposition), the disposition stays lastword's until the report is written (the
///   interposer holds the change back; a change it did not see is undone at once), so that a second
///   thread's fault reaches lastword rather than the default action; then what that handler set goes
///   in place, and returning lets the fault happen again and take that course;
/// - a fault, before it SIG_DFL or SIG_IGN: report, then the default action (which the kernel
///   forces for an ignored fault);
/// - a sent signal, before it SIG_IGN: nothing (SIGABRT is reported: `abort()` ends the process
///   anyway); before it a handler: that handler is called, and lastword stays installed (SIGABRT is
///   reported first); before it SIG_DFL: report, then the default action.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let state = STATE.load(Ordering::SeqCst);
    // SAFETY: STATE is null or the leaked HandlerState, never freed.
    let Some(state) = (unsafe { state.as_ref() }) else {
        // SAFETY: the default action, then the signal takes its course.
        unsafe { resume_default(sig, info) };
        return;
    };
    let index = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: `info` is the kernel's siginfo or null.
    let fault = unsafe { is_fault(info) };
    // A signal sent while the previous handler runs on this thread for a fault we gave it: that
    // handler gave the fault up and ends the process (std's stack overflow handler prints and calls
    // `abort`). Report the fault; this signal then takes its course below. (A fault inside that
    // handler is handled like any other fault.)
    if !fault && let Some(outer) = nested_first_chance(context) {
        report(state, outer.sig, outer.info, outer.context);
    }
    // The previous handler that this thread is calling for `sig` sent `sig` itself, after setting a
    // disposition for it (held back by the interposer): "put the default back and raise again", with
    // SA_NODEFER. It gets what it asked for: that disposition, and the signal again.
    if !fault
        && let Some(depth) = interpose::handing(sig)
        && reraised_by_previous(state, depth, sig, info, context)
    {
        return;
    }
    match (fault, take_previous(state, index)) {
        (true, Previous::Function(previous)) => fault_to_previous(state, previous, sig, info, context),
        (true, Previous::Default | Previous::Ignore) | (false, Previous::Default) => {
            report(state, sig, info, context);
            // SAFETY: `info` is the kernel's siginfo or null.
            unsafe { resume_default(sig, info) };
        }
        (false, Previous::Ignore) => {
            if sig == libc::SIGABRT {
                // `abort()` puts the default back and raises again when the signal returns.
                report(state, sig, info, context);
            }
        }
        (false, Previous::Function(previous)) => sent_to_previous(state, index, previous, sig, info, context),
    }
}

// The handler's frames are kept small, because it may run on a small alternate stack (std's, about
// 8 KiB, on a thread that kept it), where a previous handler then runs and may abort, which nests a
// second signal frame and this handler again before the report moves to its own stack: each case is
// a function of its own, and no `sigaction` value lives in a frame that is on the stack while a
// previous handler runs.

/// `sig` sent on this thread while the previous handler runs for `sig` (at `depth`): if that handler
/// set a disposition for it (held back by the interposer), it is put in place and the signal is
/// raised again, to arrive with it when this handler returns; true then. **Async-signal-safe.**
#[inline(never)]
fn reraised_by_previous(
    state: &HandlerState,
    depth: usize,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) -> bool {
    let Some(set) = interpose::held_back(depth) else { return false };
    if set.sa_sigaction == libc::SIG_DFL {
        report(state, sig, info, context);
    }
    set_action(sig, &set);
    // SAFETY: raise is async-signal-safe; the signal arrives when this handler returns.
    unsafe { libc::raise(sig) };
    true
}

/// A fault, and a handler before lastword: it gets the first chance. **Async-signal-safe.**
#[inline(never)]
fn fault_to_previous(
    state: &HandlerState,
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: `info` and `context` are the kernel's for this signal.
    if sig == libc::SIGSEGV && unsafe { near_sp(info, context) } && short_of_room() {
        overflow_short_of_room(state, previous, sig, info, context);
        return;
    }
    // SAFETY: the previous handler, with the kernel's arguments for this signal.
    match unsafe { first_chance(previous, sig, info, context, true) } {
        // It handled the fault (and may have changed the context to resume elsewhere): resume.
        Change::None => {}
        change => fault_given_up(state, sig, info, context, change),
    }
}

/// What a previous handler needs below this handler's frames on an alternate stack, for its own
/// frames and for a signal it raises there (`abort`) to reach this handler: two signal frames of the
/// largest kind (on x86-64 with AVX-512 state the kernel's minimum, `AT_MINSIGSTKSZ`, is 3,376
/// bytes; without it about 2 KiB) and both handlers' frames. std's alternate stack is 8 KiB
/// (`SIGSTKSZ`), lastword's [`stacks::ALT_STACK`].
const NESTED_ROOM: usize = 32 * 1024;

/// Whether this handler runs on an alternate stack with less than [`NESTED_ROOM`] left below its
/// frames. **Async-signal-safe** (`sigaltstack`, to read).
#[inline(never)]
fn short_of_room() -> bool {
    // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
    let mut alt: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(ptr::null(), &raw mut alt) } != 0 || alt.ss_flags & libc::SS_ONSTACK == 0 {
        return false;
    }
    let here = 0u8;
    let here = std::hint::black_box(&raw const here) as usize;
    here.saturating_sub(alt.ss_sp as usize) < NESTED_ROOM
}

/// Whether the fault address is near the stack pointer at the fault: a stack overflow, most likely.
/// **Async-signal-safe.**
///
/// # Safety
/// `info` and `context` are null or the kernel's for this signal.
unsafe fn near_sp(info: *mut libc::siginfo_t, context: *mut libc::c_void) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: per the contract.
    let (addr, sp) = unsafe { ((*info).si_addr() as usize, context_sp(context)) };
    sp != 0 && addr.abs_diff(sp) <= NEAR_SP
}

/// A stack overflow on a thread whose alternate stack is too small for a signal nested in it (std's
/// 8 KiB, on a thread that lastword's sweep could not reach), and a handler before lastword (std's,
/// which prints its message and aborts). The abort's SIGABRT would not fit on what is left of that
/// stack for lastword's handler: the kernel would end the process with SIGSEGV, before any report
/// (seen on x86-64 with AVX-512, whose signal frames are the largest). So the report is written
/// first, and while the previous handler runs SIGABRT has the disposition it would have without
/// lastword: an abort then ends the process as it would without lastword. If the handler returns,
/// lastword's SIGABRT disposition is back, and the fault takes the course the handler set, as in
/// [`fault_given_up`] (the report is not written twice). **Async-signal-safe.**
#[inline(never)]
fn overflow_short_of_room(
    state: &HandlerState,
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    report(state, sig, info, context);
    let abort = SIGNALS.iter().position(|&s| s == libc::SIGABRT).unwrap_or(0);
    let without_lastword = match PREVIOUS_NOW[abort].load(Ordering::SeqCst) {
        NOW_DEFAULT => default_action(),
        NOW_IGNORED => libc::sigaction { sa_sigaction: libc::SIG_IGN, ..default_action() },
        _ => state.previous[abort],
    };
    let in_place = swap_action(libc::SIGABRT, &without_lastword);
    // SAFETY: the previous handler, with the kernel's arguments for this signal.
    let change = unsafe { first_chance(previous, sig, info, context, true) };
    set_action(libc::SIGABRT, &in_place);
    if !matches!(change, Change::None) {
        fault_given_up(state, sig, info, context, change);
    }
}

/// The previous handler gave the fault up by setting another disposition. Until the report is
/// written the disposition stays (or, if the change was not held back, at once becomes again)
/// lastword's, so that another thread's fault meanwhile reaches lastword (and waits for this report)
/// rather than that disposition; then what it set is put in place, and returning re-executes the
/// faulting instruction, which takes that course. **Async-signal-safe.**
#[inline(never)]
fn fault_given_up(
    state: &HandlerState,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
    change: Change,
) {
    let Some(after) = change.what_it_set(sig) else { return };
    report(state, sig, info, context);
    set_action(sig, &after);
}

/// A sent signal, and a handler before lastword: it is called (after the report, for SIGABRT), and
/// lastword stays installed. **Async-signal-safe.**
#[inline(never)]
fn sent_to_previous(
    state: &HandlerState,
    index: usize,
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    if sig == libc::SIGABRT {
        report(state, sig, info, context);
    }
    // SAFETY: the previous handler, with the kernel's arguments for this signal.
    let change = unsafe { first_chance(previous, sig, info, context, false) };
    if !matches!(change, Change::None) {
        sent_changed(index, sig, change);
    }
}

/// The previous handler set another disposition while it handled a sent signal. SIG_DFL or SIG_IGN
/// is what the program sees from now on behind lastword, which stays installed; another handler is
/// put in place, in front of lastword (it found lastword's disposition as the one before it).
/// **Async-signal-safe.**
#[inline(never)]
fn sent_changed(index: usize, sig: libc::c_int, change: Change) {
    let Some(after) = change.what_it_set(sig) else { return };
    let now = match after.sa_sigaction {
        libc::SIG_DFL => NOW_DEFAULT,
        libc::SIG_IGN => NOW_IGNORED,
        _ => {
            set_action(sig, &after);
            return;
        }
    };
    PREVIOUS_NOW[index].store(now, Ordering::SeqCst);
    set_action(sig, &our_action());
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

/// What the previous handler did to the disposition of the signal it was handed.
#[derive(Clone, Copy)]
enum Change {
    /// Nothing.
    None,
    /// It set one, which the interposer held back (`interpose::held_back` at that depth).
    Held(usize),
    /// It set one, which the interposer did not see (`APPLIED` has it); lastword's own disposition
    /// is back in place if it was there before.
    Applied,
}

impl Change {
    /// The disposition the previous handler set, taken from where `first_chance` left it.
    /// **Async-signal-safe.**
    fn what_it_set(self, sig: libc::c_int) -> Option<libc::sigaction> {
        match self {
            Change::None => None,
            Change::Held(depth) => interpose::held_back(depth),
            Change::Applied => APPLIED.with(Cell::take),
        }
        .or_else(|| (!matches!(self, Change::None)).then(|| current_action(sig)))
    }
}

/// Calls the handler that was installed before lastword with the kernel's arguments, the way the
/// kernel would have: with its signal mask added to the one at the signal (and the signal itself
/// unless it asked for SA_NODEFER). (SA_RESETHAND is `take_previous`'s business: the disposition is
/// never changed here.) With `mark`, the call is marked for `nested_first_chance` while it runs.
/// Returns what the handler did to the signal's disposition. **Async-signal-safe** (as far as that
/// handler is).
///
/// # Safety
/// `previous` is a disposition that is a function; `info` and `context` are the kernel's.
unsafe fn first_chance(
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
    mark: bool,
) -> Change {
    let before = current_handler(sig);
    // SAFETY: `context` is the kernel's ucontext_t (or null); the previous handler is called with
    // the signature its SA_SIGINFO flag says it has.
    unsafe {
        let saved = block_as_kernel_would(previous, sig, context);
        // Kept for the call, then the mark of an enclosing call (a fault inside a previous handler
        // that we handed a fault to) is put back.
        let enclosing = if mark {
            FIRST_CHANCE.with(|f| f.replace(Some(FirstChance { sig, info, context })))
        } else {
            FIRST_CHANCE.with(Cell::get)
        };
        // A local of this frame: the previous handler's frames are all below it.
        let marker = 0u8;
        let hand_over = interpose::HandOver::begin(sig, std::hint::black_box(&raw const marker) as usize);
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            f(sig, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            f(sig);
        }
        // First of all, before the mask and the marks: the sooner lastword's disposition is back,
        // the shorter the window for a change the interposer did not see.
        let change = after_first_chance(sig, before, hand_over.end());
        FIRST_CHANCE.with(|f| f.set(enclosing));
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const saved, ptr::null_mut());
        change
    }
}

/// What the previous handler did to the disposition of `sig` (`before` was the handler in place
/// when it was called, `held` the interposer's answer). A change that is in place is undone at once
/// if `before` was lastword's own handler (put back in the same call that reads what the handler
/// set), and what it set is kept in `APPLIED` for the caller. **Async-signal-safe.**
#[inline(never)]
fn after_first_chance(sig: libc::c_int, before: usize, held: Option<usize>) -> Change {
    if let Some(depth) = held {
        return Change::Held(depth);
    }
    let after = if before == handler as *const () as usize {
        swap_action(sig, &our_action())
    } else {
        current_action(sig)
    };
    if after.sa_sigaction == before {
        return Change::None;
    }
    APPLIED.with(|a| a.set(Some(after)));
    Change::Applied
}

/// Sets the signal mask the kernel would have set for `previous`: its mask added to the one at the
/// signal, and the signal itself unless it asked for SA_NODEFER. Returns the mask it replaced.
/// **Async-signal-safe.**
///
/// # Safety
/// `context` is null or the kernel's `ucontext_t` for this signal.
#[inline(never)]
unsafe fn block_as_kernel_would(
    previous: &libc::sigaction,
    sig: libc::c_int,
    context: *mut libc::c_void,
) -> libc::sigset_t {
    // SAFETY: signal-mask calls on valid sigset_t values; `context` per the contract.
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
        saved
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
        // SAFETY: BUSY gives this thread the buffers and the report stack; `info` and `context` come
        // from the kernel for an SA_SIGINFO handler.
        unsafe { record_on_report_stack(state, sig, info, context) };
    }
    BUSY.store(false, Ordering::SeqCst);
}

/// Size of the stack that `record` runs on (a guard page below it is not counted).
const REPORT_STACK: usize = 256 * 1024;
/// The top of that stack, mapped once by `prepare` and never unmapped; 0 before.
static REPORT_STACK_TOP: AtomicUsize = AtomicUsize::new(0);

/// Maps the report stack (address space only: `MAP_NORESERVE`), once per process. Without it, the
/// report is written on the stack the handler runs on.
fn map_report_stack() {
    if REPORT_STACK_TOP.load(Ordering::SeqCst) != 0 {
        return;
    }
    // SAFETY: an anonymous private mapping that nothing else refers to, never unmapped; its first
    // page becomes the guard.
    unsafe {
        let base = libc::mmap(
            ptr::null_mut(),
            REPORT_STACK + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return;
        }
        libc::mprotect(base, PAGE, libc::PROT_NONE);
        REPORT_STACK_TOP.store(base as usize + PAGE + REPORT_STACK, Ordering::SeqCst);
    }
}

/// The arguments of `record`, handed to [`record_call`] across the stack switch.
struct RecordCall {
    state: *const HandlerState,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
}

/// Runs `record` with the arguments in `call` (a `RecordCall`). `extern "C"`, so that a panic in it
/// (there should be none) aborts instead of unwinding across the stack switch.
extern "C" fn record_call(call: *mut libc::c_void) {
    // SAFETY: `call` points at the `RecordCall` of `record_on_report_stack`, alive during this call;
    // its contents satisfy `record`'s contract (BUSY is held).
    unsafe {
        let call = &*call.cast::<RecordCall>();
        record(&*call.state, call.sig, call.info, call.context);
    }
}

/// Runs `record` on the report stack, with every signal blocked. The handler may run on a small
/// alternate stack (std's, 8 KiB or so, on a thread that kept it) or deep in another handler's
/// frames; the report does not depend on what room is left there. Blocked signals, because a signal
/// delivered while the stack pointer is outside the alternate stack would be put at the alternate
/// stack's top, over the frames of this handler. **Async-signal-safe.**
///
/// # Safety
/// Called only by the thread holding `BUSY` (which owns the report stack), with the kernel's `info`
/// and `context`.
unsafe fn record_on_report_stack(
    state: &HandlerState,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let mut call = RecordCall { state, sig, info, context };
    let arg = (&raw mut call).cast::<libc::c_void>();
    // SAFETY: signal-mask calls on the BUSY holder's sets (kept in static memory, not in this frame,
    // which may be on a small stack); the stack switch gets the top of the mapped report stack,
    // which only the BUSY holder uses, and a function of the C ABI.
    unsafe {
        let (all, saved) = (BUFFERS.all_signals.get(), BUFFERS.saved_mask.get());
        libc::sigfillset(all);
        libc::pthread_sigmask(libc::SIG_SETMASK, all, saved);
        match REPORT_STACK_TOP.load(Ordering::SeqCst) {
            0 => record_call(arg),
            top => call_on_stack(top, record_call, arg),
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, saved, ptr::null_mut());
    }
}

/// Calls `f(arg)` with the stack pointer at `top`, and comes back to the stack it was called on.
/// **Async-signal-safe** (no system call).
///
/// # Safety
/// `top` is the 16-byte aligned top of a stack that nothing else uses during the call.
#[cfg(target_arch = "x86_64")]
unsafe fn call_on_stack(top: usize, f: extern "C" fn(*mut libc::c_void), arg: *mut libc::c_void) {
    // SAFETY: per the contract; r12 (callee-saved, so `f` keeps it) holds the old stack pointer
    // across the call and is declared clobbered; `f` follows the C ABI (its caller-saved registers
    // are declared clobbered); the stack is 16-byte aligned at the call, as the ABI wants.
    unsafe {
        std::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {f}",
            "mov rsp, r12",
            top = in(reg) top,
            f = in(reg) f,
            in("rdi") arg,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}

/// Elsewhere the report is written on the handler's own stack.
///
/// # Safety
/// None beyond `f`'s.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn call_on_stack(_top: usize, f: extern "C" fn(*mut libc::c_void), arg: *mut libc::c_void) {
    f(arg);
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
    let (
        header,
        crumbs_buf,
        crumb_line,
        scope_buf,
        maps_buf,
        modules_buf,
        module_line,
        elf,
        stack_line,
        stack,
    ) = unsafe {
        (
            &mut *BUFFERS.header.get(),
            &mut *BUFFERS.crumbs.get(),
            &mut *BUFFERS.crumb_line.get(),
            &mut *BUFFERS.scope.get(),
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
    let mut status = [0u8; 4096];
    let mut memory = Memory::new(maps_text, memory::seccomp_filtered(&mut status));
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
    // The process-wide scope's line (async-signal-safe: atomic loads and a copy).
    let scope_len = scope_line::LINE.read(scope_buf);
    let parts: [&[u8]; 7] = [
        w.written(),
        crumb_lines.written(),
        scope_buf.get(..scope_len).unwrap_or(&[]),
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

/// Lets the signal take its course after lastword: puts the default disposition in place (what
/// the kernel does for a fault whose signal is ignored, and what a sent signal that lastword reported
/// had) and, for a signal that was sent (kill, raise, abort) or a trap (which does not happen again
/// when the instruction after it runs), raises it again, to arrive when the handler returns; a fault
/// returns and re-executes, and gets that disposition. **Async-signal-safe.**
///
/// # Safety
/// `info` is the kernel's siginfo or null.
unsafe fn resume_default(sig: libc::c_int, info: *mut libc::siginfo_t) {
    // SAFETY: signal with SIG_DFL and raise are async-signal-safe; `info` per the contract.
    unsafe {
        set_action(sig, &default_action());
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
