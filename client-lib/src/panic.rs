//! The panic hook: a durable crash report before the hook returns, then a bounded chance for the
//! uploader to deliver it, then the hook that was installed before (so the default message prints).

use std::cell::Cell;
use std::panic::PanicHookInfo;

use crate::init::{Shared, shared};
use crate::report::{CrashReport, Frame, Location, ThreadInfo, fingerprint, is_machinery, strip_hash};

thread_local! {
    /// Set while this thread runs our part of the hook: a panic inside it (which would be a bug) is
    /// not reported again, so it cannot loop.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Installs the hook, chained to the one installed before.
pub(crate) fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_HOOK.with(Cell::get) {
            IN_HOOK.with(|f| f.set(true));
            // The standard library's own panic that ends a panic which cannot unwind further is part
            // of that crash, already reported: keep the mark, so that the abort after it is skipped too.
            if !(crate::signal::panic_reported() && is_std_nounwind(info)) {
                // Until this panic's report is stored, an abort on this thread is not "already reported".
                crate::signal::note_panic_reported(false);
                if let Some(shared) = shared() {
                    report(&shared, info);
                }
            }
            IN_HOOK.with(|f| f.set(false));
        }
        previous(info);
    }));
}

/// The messages of the panics the standard library raises when a panic reaches a frame it cannot
/// unwind through (an `extern "C"` function, a destructor during unwinding); the process aborts next.
const STD_NOUNWIND: [&str; 2] =
    ["panic in a function that cannot unwind", "panic in a destructor during cleanup"];

/// Whether this panic is one of [`STD_NOUNWIND`].
fn is_std_nounwind(info: &PanicHookInfo<'_>) -> bool {
    let message = match info.payload().downcast_ref::<&str>() {
        Some(s) => Some(*s),
        None => info.payload().downcast_ref::<String>().map(String::as_str),
    };
    message.is_some_and(|m| STD_NOUNWIND.contains(&m))
}

fn report(shared: &Shared, info: &PanicHookInfo<'_>) {
    let message = match info.payload().downcast_ref::<&str>() {
        Some(s) => (*s).to_owned(),
        None => match info.payload().downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => "Box<dyn Any>".to_owned(),
        },
    };
    let location =
        info.location().map(|l| Location { file: l.file().to_owned(), line: l.line(), column: l.column() });
    let frames = capture_frames();
    let current = std::thread::current();
    let mut report = CrashReport {
        kind: "panic".into(),
        fingerprint: fingerprint(&frames, &message),
        message,
        location,
        signal: None,
        thread: ThreadInfo { name: current.name().map(str::to_owned), id: Some(thread_id()) },
        symbolized: frames.iter().any(|f| f.function.is_some()),
        symbolization_error: None,
        frames,
        context: shared.context_now(),
        breadcrumbs: shared.logs.breadcrumbs.snapshot(),
        crash_loop_suppressed: 0,
        registers: Vec::new(),
    };
    if !report.symbolized {
        report.symbolization_error = Some("no symbols in this binary (built without debug info?)".into());
    }
    let Some(id) = shared.store_crash(report) else { return };
    // With panic = "abort", or a panic during unwinding, the process aborts next, on this thread and
    // while it is still panicking: that SIGABRT is this crash, already reported.
    crate::signal::note_panic_reported(true);
    shared.deliver_now(id);
}

/// The frames of the panicking thread, innermost first, without the panic and backtrace machinery
/// on top.
fn capture_frames() -> Vec<Frame> {
    let trace = backtrace::Backtrace::new();
    let mut frames = Vec::new();
    for frame in trace.frames() {
        let address = format!("{:#x}", frame.ip() as usize);
        let symbols = frame.symbols();
        if symbols.is_empty() {
            frames.push(Frame { address, ..Frame::default() });
            continue;
        }
        // Inlined functions give several symbols for one frame, innermost first.
        for symbol in symbols {
            frames.push(Frame {
                // `{:#}` leaves out the hash and the crate disambiguators of the mangled name.
                function: symbol.name().map(|n| strip_hash(&format!("{n:#}"))),
                file: symbol.filename().map(|p| p.display().to_string()),
                line: symbol.lineno(),
                address: address.clone(),
                module: None,
            });
        }
    }
    let first_own =
        frames.iter().position(|f| f.function.as_deref().is_some_and(|n| !is_machinery(n))).unwrap_or(0);
    frames.split_off(first_own)
}

fn thread_id() -> u64 {
    u64::try_from(rustix::thread::gettid().as_raw_nonzero().get()).unwrap_or(0)
}
