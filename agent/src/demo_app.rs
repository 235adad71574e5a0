//! The example application that `lastword demo` runs: it logs, panics in a thread, then dies of a real
//! SIGSEGV. It is the `lastword` binary itself, started as a separate process with the hidden
//! `demo-app` command, so that the one build of `lastword` is everything the demo runs (no second
//! binary, no nested `cargo build`). Its spool is `LASTWORD_SPOOL`; it has no collector URL, so the
//! sidecar delivers its reports.
//!
//! Not part of the library's API: `lastword demo` is its only user.

#![allow(unsafe_code, reason = "the demo dies of SIGSEGV on purpose: a write through a null pointer")]

/// Runs the example application; does not return (it dies of SIGSEGV).
pub fn main() -> ! {
    let guard = match lastword::init(lastword::Config::new("demo-app").release("1.0.0").no_url()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("demo-app: {e}");
            std::process::exit(70);
        }
    };
    lastword::log(lastword::Level::Info, "demo_app", "starting");
    lastword::log(lastword::Level::Warn, "demo_app", "the configuration file is missing; using defaults");
    let worker = std::thread::Builder::new().name("worker".into()).spawn(|| parse_order("42 apples"));
    let _ = worker.map(std::thread::JoinHandle::join);
    lastword::log(lastword::Level::Error, "demo_app", "a worker died; carrying on");
    let _ = guard.flush(std::time::Duration::from_secs(2));
    write_through_a_null_pointer();
    // Unreachable: the write above kills the process. Should a platform let it pass, end as a crash.
    std::process::abort()
}

#[inline(never)]
fn parse_order(text: &str) -> u32 {
    let count: Option<u32> = text.split(' ').nth(2).and_then(|w| w.parse().ok());
    count.expect("an order has three words")
}

#[inline(never)]
fn write_through_a_null_pointer() {
    let p: *mut u64 = std::hint::black_box(std::ptr::null_mut());
    // SAFETY: not safe: the demo dies of SIGSEGV here on purpose.
    unsafe { std::ptr::write_volatile(p, 1) };
}
