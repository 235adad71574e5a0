//! Registers a function that libc runs when the process exits through `exit(3)`: Rust's
//! `std::process::exit` and the return from `main` both go through it; `_exit`, `abort` and a fatal
//! signal do not. The registration is this crate's only `atexit` call, made once per process.

use std::sync::Once;

static REGISTERED: Once = Once::new();

/// Has libc call `hook` at `exit`, once per process however often this is called (a retried
/// `init` registers nothing more). `hook` runs on the exiting thread while the other threads still
/// run; it must return in bounded time and must not unwind.
pub(crate) fn register(hook: extern "C" fn()) {
    REGISTERED.call_once(|| {
        // SAFETY: `atexit` only stores the function pointer, which libc calls once with no
        // arguments at `exit`. `hook` is a plain `extern "C" fn()` of this binary, valid for the
        // whole life of the process; a failure (no room for more handlers) registers nothing, and
        // only costs the flush at exit.
        let _ = unsafe { libc::atexit(hook) };
    });
}
