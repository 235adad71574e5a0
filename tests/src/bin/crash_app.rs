//! A small application that links lastword and crashes on request, one way per run:
//! `lastword-crash-app <case>`. With `LASTWORD_OFF=1` it runs the same case without lastword, so
//! that tests can compare exit statuses. The spool is `LASTWORD_SPOOL`; the collector `LASTWORD_URL`.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// For `two-panics-at-once`: each thread's report is stored.
static FIRST_STORED: AtomicBool = AtomicBool::new(false);
static SECOND_STORED: AtomicBool = AtomicBool::new(false);

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    if case == "two-panics-at-once" {
        // A hook of the application's own, installed before lastword (which calls it after storing
        // its report): thread "first" stores its report, then waits until thread "second" stored its
        // report too, then goes on to the abort of `panic = "abort"`; "second" never returns.
        std::panic::set_hook(Box::new(|_| {
            if std::thread::current().name() == Some("second") {
                SECOND_STORED.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(30));
            } else {
                FIRST_STORED.store(true, Ordering::SeqCst);
                while !SECOND_STORED.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }));
    }
    let _guard = if std::env::var_os("LASTWORD_OFF").is_some() {
        None
    } else {
        let config = lastword::Config::new("crash-app")
            .release("1.0.0")
            .environment("test")
            .exit_deadline(Duration::from_secs(3))
            .log_level(lastword::Level::Warn);
        let config = match std::env::var("CRASH_APP_LOOP_LIMIT").ok().and_then(|v| v.parse().ok()) {
            Some(n) => config.crash_loop_per_hour(n),
            None => config,
        };
        // A scrubbing hook, the way an application removes personal data before anything is stored.
        let config = if std::env::var_os("CRASH_APP_SCRUB").is_some() {
            config.before_send(|report| {
                report.message = report.message.replace("boom", "[scrubbed]");
                !report.message.contains("drop me")
            })
        } else {
            config
        };
        match lastword::init(config) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("crash-app: lastword::init failed: {e}");
                std::process::exit(70);
            }
        }
    };
    lastword::log(lastword::Level::Info, "crash_app", "starting the case");
    lastword::log(lastword::Level::Warn, "crash_app", format!("about to run {case}"));
    match case.as_str() {
        "ok" => {}
        "panic-main" => panic!("boom in main"),
        "panic-thread" => {
            let joined =
                std::thread::Builder::new().name("worker".into()).spawn(|| panic!("boom in a thread"));
            assert!(joined.expect("spawn").join().is_err());
        }
        "panic-drop-me" => panic!("drop me"),
        "panic-then-exit" => {
            let joined =
                std::thread::Builder::new().name("worker".into()).spawn(|| panic!("boom, then exit"));
            assert!(joined.expect("spawn").join().is_err());
            std::process::exit(3);
        }
        "panic-tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
            let result = rt.block_on(async { tokio::spawn(async { panic!("boom in a task") }).await });
            assert!(result.is_err());
        }
        "double-panic" => double_panic(),
        "segv" => null_deref(),
        "abort" => call_abort(),
        "two-panics-at-once" => {
            let first = std::thread::Builder::new()
                .name("first".into())
                .spawn(|| panic!("first"))
                .expect("spawn a thread");
            while !FIRST_STORED.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let second = std::thread::Builder::new()
                .name("second".into())
                .spawn(|| panic!("second"))
                .expect("spawn a thread");
            let _ = (first.join(), second.join());
        }
        "panic-extern-c" => callback(),
        "panic-caught-then-abort" => {
            // A panic the application survives (as a tokio runtime survives a task's panic), then an
            // unrelated abort: two crashes.
            let _ = std::panic::catch_unwind(|| panic!("caught and survived"));
            call_abort();
        }
        "ill" => illegal_instruction(),
        "fpe" => divide_by_zero(),
        "bus" => bus_error(),
        "overflow" => {
            recurse(1);
        }
        "logs" => {
            for i in 0..50 {
                lastword::log(lastword::Level::Error, "crash_app", format!("error {i}"));
                lastword::log(lastword::Level::Debug, "crash_app", format!("debug {i}"));
            }
        }
        "unwritable-spool-panic" => {
            // Make the spool unwritable underneath lastword, then panic: the hook must not hang and
            // the default message must still print.
            let spool = std::env::var("LASTWORD_SPOOL").expect("LASTWORD_SPOOL");
            std::fs::remove_dir_all(spool).expect("remove the spool");
            panic!("boom with no spool");
        }
        // Grouping and frames (tests/tests/panic_profiles.rs): two different panics on `None`, in two
        // functions of their own; and a panic whose report must be durable before a supervisor's kill.
        "panic-none-first" => println!("{}", first_lookup()),
        "panic-none-second" => println!("{}", second_lookup()),
        "panic-thread-then-wait" => panic_in_a_thread_then_wait(),
        other => {
            eprintln!("crash-app: unknown case {other:?}");
            std::process::exit(64);
        }
    }
}

#[inline(never)]
fn double_panic() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("second panic, in drop");
        }
    }
    let _d = PanicsOnDrop;
    panic!("first panic");
}

#[inline(never)]
fn null_deref() {
    let p: *const u64 = std::hint::black_box(std::ptr::null());
    // SAFETY: not safe at all: this reads address 0 on purpose to die of SIGSEGV.
    let v = unsafe { std::ptr::read_volatile(p) };
    println!("{v}");
}

/// A callback as C code would call it: a panic cannot unwind out of it, so the process aborts.
#[inline(never)]
extern "C" fn callback() {
    panic!("boom in a callback");
}

#[inline(never)]
fn call_abort() {
    std::process::abort();
}

#[inline(never)]
fn illegal_instruction() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: ud2 raises SIGILL on purpose; it touches no memory.
    unsafe {
        std::arch::asm!("ud2");
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: raise is always safe to call.
    unsafe {
        libc::raise(libc::SIGILL);
    }
}

#[inline(never)]
fn divide_by_zero() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: idiv by zero raises SIGFPE on purpose; the registers named are declared clobbered.
    unsafe {
        std::arch::asm!("xor edx, edx", "mov eax, 1", "xor ecx, ecx", "idiv ecx", out("eax") _, out("edx") _, out("ecx") _);
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: raise is always safe to call.
    unsafe {
        libc::raise(libc::SIGFPE);
    }
}

#[inline(never)]
fn bus_error() {
    let file = tempfile_in_spool();
    // SAFETY: maps one page of an empty file; touching it past the end of the file raises SIGBUS on
    // purpose.
    unsafe {
        use std::os::fd::AsRawFd;
        let p =
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED);
        let v = std::ptr::read_volatile(p.cast::<u8>());
        println!("{v}");
    }
}

fn tempfile_in_spool() -> std::fs::File {
    // Beside the spool (the test's temporary directory), not in it.
    let spool =
        std::env::var("LASTWORD_SPOOL").map_or_else(|_| std::env::temp_dir(), std::path::PathBuf::from);
    let dir = spool.parent().map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let path = dir.join(format!("bus-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create an empty file")
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let big = std::hint::black_box([n; 64]);
    if n == u64::MAX { 0 } else { recurse(n + 1) + big[3] }
}

/// `.expect()` on `None`: one panic site.
#[inline(never)]
fn first_lookup() -> u32 {
    std::hint::black_box(None::<u32>).expect("the first lookup found nothing")
}

/// `.unwrap()` on `None`: another panic site, in another function.
#[inline(never)]
#[allow(clippy::unwrap_used, reason = "the panic of `unwrap` on `None` is what this case is")]
fn second_lookup() -> u32 {
    std::hint::black_box(None::<u32>).unwrap()
}

/// A hook of the application's own, chained in front of lastword's, says on stdout that a panic
/// started; a thread panics; the process then waits (for its supervisor's kill) instead of exiting.
fn panic_in_a_thread_then_wait() {
    let lastword = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "panic started");
        let _ = out.flush();
        drop(out);
        lastword(info);
    }));
    let worker = std::thread::Builder::new().name("worker".into()).spawn(|| panic!("boom before a kill"));
    let _ = worker.expect("spawn a thread").join();
    std::thread::sleep(Duration::from_secs(60));
}
