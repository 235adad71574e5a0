//! The panic hook: the panic's raw capture, durable in the spool before the hook returns, then a
//! bounded chance for the uploader to deliver it, then the hook that was installed before (so the
//! default message prints).
//!
//! Nothing slow happens before the report is durable: the hook records the instruction addresses of
//! an unresolved backtrace, the modules they are in (build id, load bias, range: taken at init,
//! taken again only when an address falls outside them), the message, location, thread,
//! breadcrumbs and context, and decides the crash-loop limit and `before_send` there, once. Names,
//! files and lines come later, when the uploader (or the sidecar, or `lastword show`) prepares the
//! report ([`crate::symbolize::resolve`]).

use std::cell::Cell;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::crashloop::CrashLoop;
use crate::grouping::panic_fingerprint;
use crate::init::{Shared, Stored, shared};
use crate::report::{CrashReport, Frame, Location, Module, ThreadInfo};
use crate::signal::{LoadedModule, loaded_modules};
use crate::symbolize::{RawModule, module_entries};

/// The most frames a panic report keeps (a deep recursion is cut, its innermost frames kept).
const MAX_FRAMES: usize = 256;

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The hook that was installed before lastword's, called after it.
static PREVIOUS: OnceLock<Hook> = OnceLock::new();
/// The loaded modules, taken at install and again when a frame's address is in none of them.
static MODULES: RwLock<Option<Arc<Vec<LoadedModule>>>> = RwLock::new(None);

thread_local! {
    /// Set while this thread runs our part of the hook: a panic inside it (which would be a bug) is
    /// not reported again, so it cannot loop.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Installs the hook, chained to the one installed before. What a first panic would otherwise do for
/// the first time is done here: the module list is taken, the unwinder has walked this thread's stack
/// once, a report was encoded, and the crash-loop state's files exist and were read.
pub(crate) fn install() {
    refresh_modules();
    // A first run of the hook's own steps, so that their code and data are in memory when the
    // first panic comes (in a debug build that is a third of a first panic's time): the stack walk,
    // the frames and modules, the report's encoding, the crash-loop state read. Nothing is written.
    let (frames, modules) = raw_frames(&capture());
    if let Some(shared) = shared() {
        let report = CrashReport { frames, modules, context: shared.context_now(), ..CrashReport::default() };
        drop(std::hint::black_box(serde_json::to_vec(&report)));
        CrashLoop::new(shared.spool.path(), 0).prepare_files();
    }
    let current = std::panic::take_hook();
    match PREVIOUS.set(current) {
        Ok(()) => std::panic::set_hook(Box::new(panic_hook)),
        // Installed before, in an `init` that failed later: what is installed now already chains.
        Err(current) => std::panic::set_hook(current),
    }
}

/// lastword's panic hook. Not inlined, and a function of its own (not a closure), so that its frame
/// can be found by address in a backtrace whatever the build's debug information: everything from
/// it up is lastword's and is not part of the report.
#[inline(never)]
fn panic_hook(info: &PanicHookInfo<'_>) {
    if !IN_HOOK.with(Cell::get) {
        IN_HOOK.with(|f| f.set(true));
        // The standard library's own panic that ends a panic which cannot unwind further is part
        // of that crash, already reported: keep the mark, so that the abort after it is skipped too.
        if !(crate::signal::panic_reported() && is_std_nounwind(info)) {
            // Until this panic is decided, an abort on this thread is not "already reported".
            crate::signal::note_panic_reported(false);
            if let Some(shared) = shared() {
                report(&shared, info);
            }
        }
        IN_HOOK.with(|f| f.set(false));
    }
    if let Some(previous) = PREVIOUS.get() {
        previous(info);
    }
}

/// The messages of the panics the standard library raises when a panic reaches a frame it cannot
/// unwind through (an `extern "C"` function, a destructor during unwinding); the process aborts next.
const STD_NOUNWIND: [&str; 2] =
    ["panic in a function that cannot unwind", "panic in a destructor during cleanup"];

fn message_of<'a>(info: &'a PanicHookInfo<'_>) -> Option<&'a str> {
    match info.payload().downcast_ref::<&str>() {
        Some(s) => Some(*s),
        None => info.payload().downcast_ref::<String>().map(String::as_str),
    }
}

/// Whether this panic is one of [`STD_NOUNWIND`].
fn is_std_nounwind(info: &PanicHookInfo<'_>) -> bool {
    message_of(info).is_some_and(|m| STD_NOUNWIND.contains(&m))
}

fn report(shared: &Shared, info: &PanicHookInfo<'_>) {
    let addresses = capture();
    let message = message_of(info).unwrap_or("Box<dyn Any>").to_owned();
    let location =
        info.location().map(|l| Location { file: l.file().to_owned(), line: l.line(), column: l.column() });
    let (frames, modules) = raw_frames(&addresses);
    let current = std::thread::current();
    let mut context = shared.context_now();
    // The panicking thread's (or task's) scope; never waited for.
    let scope = crate::scope::current().as_deref().cloned().unwrap_or_default();
    crate::scope::apply_environment(&scope, &mut context);
    let report = CrashReport {
        scope,
        kind: "panic".into(),
        fingerprint: panic_fingerprint(&context.app, location.as_ref(), &message),
        message,
        location,
        signal: None,
        thread: ThreadInfo { name: current.name().map(str::to_owned), id: Some(thread_id()) },
        symbolized: false,
        symbolization_error: None,
        frames,
        context,
        breadcrumbs: shared.logs.breadcrumbs.snapshot(),
        crash_loop_suppressed: 0,
        registers: Vec::new(),
        modules,
    };
    match shared.store_crash(report) {
        Stored::Entry(id) => {
            // With panic = "abort", or a panic during unwinding, the process aborts next, on this
            // thread and while it is still panicking: that SIGABRT is this crash, already reported.
            crate::signal::note_panic_reported(true);
            shared.deliver_now(id);
        }
        // Dropped by `before_send`, or beyond the crash-loop limit: decided, so the abort that may
        // follow is this crash too, and is not reported in its place.
        Stored::Decided => crate::signal::note_panic_reported(true),
        // Not stored (the spool failed): an abort that follows is then the only trace, and is
        // reported by the signal handler.
        Stored::Failed => {}
    }
}

/// The return addresses of the panicking thread below the hook, innermost first: an unresolved
/// backtrace, cut at the hook's own frame (see [`addresses_below`]; symbolization cuts by name if
/// that frame is not found).
#[inline(never)]
fn capture() -> Vec<usize> {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    addresses_below(panic_hook as fn(&PanicHookInfo<'_>) as usize, &SEEN, MAX_FRAMES)
}

/// The return addresses of the calling thread below the frame of the function that starts at
/// `marker`, innermost first, at most `max`: an unresolved backtrace cut at that frame. If that frame
/// is not found, every frame is kept. For the panic hook and `capture_error` (client-lib/src/event.rs).
///
/// The frame is found by its function's start address (from the unwind tables, present in every
/// build, stripped ones included), which costs a search of those tables for each frame above it:
/// most of a walk's cost. So `seen` keeps the frame's return address once it was found: the marker
/// calls its capture from one call site, so the same return address marks the same frame on every
/// later walk, and comparing it costs nothing. Should a walk not meet it (a marker with two call
/// sites), the frame is searched by its start address again, and `seen` updated.
#[inline(never)]
pub(crate) fn addresses_below(marker: usize, seen: &AtomicUsize, max: usize) -> Vec<usize> {
    let known = seen.load(Ordering::Relaxed);
    if known != 0 {
        if let (true, addresses) = walk_below(max, |ip, _| ip == known) {
            return addresses;
        }
    }
    let mut found_at = 0;
    let (found, addresses) = walk_below(max, |ip, frame| {
        let is = frame.symbol_address() as usize == marker;
        if is {
            found_at = ip;
        }
        is
    });
    if found {
        seen.store(found_at, Ordering::Relaxed);
    }
    addresses
}

/// One walk of the calling thread's stack, at most `max` frames: whether a frame `is_marker`
/// accepted (given its return address and the frame), and then the return addresses below it,
/// innermost first; otherwise all of them.
#[inline(always)]
fn walk_below(max: usize, mut is_marker: impl FnMut(usize, &backtrace::Frame) -> bool) -> (bool, Vec<usize>) {
    let mut above = Vec::with_capacity(16);
    let mut below = Vec::with_capacity(64);
    let mut found = false;
    backtrace::trace(|frame| {
        let ip = frame.ip() as usize;
        if found {
            if ip != 0 {
                below.push(ip);
            }
        } else if is_marker(ip, frame) {
            found = true;
        } else if ip != 0 {
            above.push(ip);
        }
        above.len() + below.len() < max
    });
    if found {
        (true, below)
    } else {
        above.extend(below);
        (false, above)
    }
}

/// The frames of `addresses` (the address alone: which module each is in, its build id and offset
/// are filled in when the report is symbolized, from the modules list) and the modules they are in.
pub(crate) fn raw_frames(addresses: &[usize]) -> (Vec<Frame>, Vec<Module>) {
    let mut loaded = current_modules();
    // A return address is one past its call: the call's byte is what belongs to a module.
    let covers = |m: &LoadedModule, ip: usize| (m.start..m.end).contains(&(ip as u64).saturating_sub(1));
    if addresses.iter().any(|&ip| !loaded.iter().any(|m| covers(m, ip))) {
        // A module loaded since the list was taken (dlopen): take it again, once.
        loaded = refresh_modules();
    }
    let used: Vec<RawModule> = loaded
        .iter()
        .filter(|m| addresses.iter().any(|&ip| covers(m, ip)))
        .map(|m| RawModule {
            start: m.start,
            end: m.end,
            bias: m.bias,
            build_id: m.build_id.clone(),
            path: m.path.clone(),
        })
        .collect();
    let frames =
        addresses.iter().map(|&ip| Frame { address: format!("{ip:#x}"), ..Frame::default() }).collect();
    (frames, module_entries(&used.iter().collect::<Vec<_>>()))
}

fn current_modules() -> Arc<Vec<LoadedModule>> {
    let cached = MODULES.read().unwrap_or_else(PoisonError::into_inner).clone();
    cached.unwrap_or_else(refresh_modules)
}

fn refresh_modules() -> Arc<Vec<LoadedModule>> {
    let fresh = Arc::new(loaded_modules());
    *MODULES.write().unwrap_or_else(PoisonError::into_inner) = Some(fresh.clone());
    fresh
}

pub(crate) fn thread_id() -> u64 {
    u64::try_from(rustix::thread::gettid().as_raw_nonzero().get()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The marker: calls the capture from one call site, like the panic hook and `capture_error`.
    #[inline(never)]
    fn marker(seen: &AtomicUsize) -> Vec<usize> {
        std::hint::black_box(grab(seen))
    }

    #[inline(never)]
    fn grab(seen: &AtomicUsize) -> Vec<usize> {
        addresses_below(marker as fn(&AtomicUsize) -> Vec<usize> as usize, seen, MAX_FRAMES)
    }

    fn name_of(ip: usize) -> String {
        let mut name = String::new();
        backtrace::resolve((ip - 1) as *mut std::ffi::c_void, |s| {
            if name.is_empty() {
                name = s.name().map(|n| n.to_string()).unwrap_or_default();
            }
        });
        name
    }

    #[test]
    fn the_marker_frame_found_by_its_start_is_then_found_by_its_return_address() {
        let seen = AtomicUsize::new(0);
        let walks: Vec<Vec<usize>> = (0..3).map(|_| marker(&seen)).collect();
        assert_ne!(seen.load(Ordering::Relaxed), 0, "the marker's return address is kept");
        assert_eq!(walks[0], walks[1], "the kept address cuts where the search by start cut");
        assert_eq!(walks[1], walks[2]);
        let top = name_of(walks[0][0]);
        assert!(top.contains("the_marker_frame_found"), "the innermost frame is the marker's caller: {top}");
        assert!(walks[0].iter().all(|&ip| !name_of(ip).contains("grab")), "nothing above the marker");
    }

    #[test]
    fn a_kept_address_that_no_frame_has_is_searched_again_by_start() {
        let right = AtomicUsize::new(0);
        let stale = AtomicUsize::new(1);
        let walks: Vec<(Vec<usize>, Vec<usize>)> = (0..1).map(|_| (marker(&right), marker(&stale))).collect();
        let (expected, got) = &walks[0];
        assert_eq!(got.get(1..), expected.get(1..), "the same cut below the marker's caller");
        assert_eq!(name_of(got[0]), name_of(expected[0]));
        assert_ne!(stale.load(Ordering::Relaxed), 1, "the stale address is replaced");
        assert_ne!(stale.load(Ordering::Relaxed), 0);
    }
}
