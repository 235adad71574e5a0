//! The example application `lastword demo` runs (the binary `lastword-demo-app`): it logs, panics in a thread, then dies of a real SIGSEGV.
//! Its spool is `LASTWORD_SPOOL`; it has no collector URL, so the sidecar delivers its reports.

#![allow(unsafe_code)]

fn main() {
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
