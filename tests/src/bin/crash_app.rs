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
    // The cases of tests/tests/signal_edges.rs that act before `init`, or call it themselves.
    if case.starts_with("init-retry-") {
        init_retry(&case);
    }
    edge_before_init(&case);
    review::before_init(&case);
    let _guard = if std::env::var_os("LASTWORD_OFF").is_some() {
        None
    } else {
        let config = lastword::Config::new("crash-app")
            .release("1.0.0")
            .environment("test")
            .exit_deadline(Duration::from_secs(3))
            .log_level(lastword::Level::Warn)
            // The library never prints: the application says what it wants said (the tests read
            // stderr for a crash report that could not be stored).
            .diagnostics(|level, message| {
                if level == lastword::upload::DiagnosticLevel::Error {
                    eprintln!("lastword: {message}");
                }
            });
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
        // The cases of tests/tests/signal_edges.rs (their helpers are at the end of this file).
        "overflow-thread" => {
            let deep = std::thread::Builder::new().name("deep".into()).spawn(|| recurse(1));
            let _ = deep.expect("spawn a thread").join();
        }
        "overflow-pthread" => join_pthread(spawn_pthread(overflow_in_pthread)),
        "overflow-pre-init-thread" => {
            PRE_INIT_GO.store(true, Ordering::SeqCst);
            join_pthread(PRE_INIT_THREAD.load(Ordering::SeqCst) as libc::pthread_t);
        }
        "fork-crashes" => fork_crashes(),
        "fork-ids" => fork_ids(),
        "dlopen-crash" => dlopen_crash(),
        "trap" => trap(),
        "seccomp-no-vm-readv" | "seccomp-no-memory-read" => null_deref(),
        "runtime-before-init" | "runtime-after-init" => {
            if case == "runtime-after-init" {
                install_gc_handler();
            }
            touch_gc_page(3);
            println!("the runtime handled {} faults", GC_HANDLED.load(Ordering::SeqCst));
            null_deref();
        }
        "segv-after-sleep" => {
            std::thread::sleep(Duration::from_millis(300));
            null_deref();
        }
        // Grouping and frames (tests/tests/panic_profiles.rs): two different panics on `None`, in two
        // functions of their own; and a panic whose report must be durable before a supervisor's kill.
        "panic-none-first" => println!("{}", first_lookup()),
        "panic-none-second" => println!("{}", second_lookup()),
        "panic-thread-then-wait" => panic_in_a_thread_then_wait(),
        other if review::run(other) => {}
        other if scope_cases::run(other) => {}
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

// ---- Helpers of the cases of tests/tests/signal_edges.rs ----

/// Set up what a case needs before `init`: a thread that exists before it, a runtime's fault handler
/// installed before it, a seccomp filter that denies reading memory.
fn edge_before_init(case: &str) {
    match case {
        "overflow-pre-init-thread" => {
            let thread = spawn_pthread(overflow_after_go);
            PRE_INIT_THREAD.store(thread as usize, Ordering::SeqCst);
        }
        "runtime-before-init" => install_gc_handler(),
        "seccomp-no-vm-readv" => deny_syscalls(&[libc::SYS_process_vm_readv]),
        "seccomp-no-memory-read" => deny_syscalls(&[libc::SYS_process_vm_readv, libc::SYS_pread64]),
        _ => {}
    }
}

static PRE_INIT_GO: AtomicBool = AtomicBool::new(false);
static PRE_INIT_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A thread made with `pthread_create` directly, as C code makes them (no Rust runtime set-up).
fn spawn_pthread(start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> libc::pthread_t {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is valid for writing; default attributes; `start` has the C signature.
    let rc = unsafe { libc::pthread_create(&raw mut thread, std::ptr::null(), start, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_create");
    thread
}

fn join_pthread(thread: libc::pthread_t) {
    // SAFETY: a joinable thread made by `spawn_pthread`, joined once.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
}

extern "C" fn overflow_in_pthread(_: *mut libc::c_void) -> *mut libc::c_void {
    recurse(1);
    std::ptr::null_mut()
}

extern "C" fn overflow_after_go(_: *mut libc::c_void) -> *mut libc::c_void {
    while !PRE_INIT_GO.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    recurse(1);
    std::ptr::null_mut()
}

/// A child crashes, then (after it died) the parent does: two crashes, two processes.
fn fork_crashes() {
    // SAFETY: the child only crashes (it calls nothing that could deadlock on a lock held by a thread
    // of the parent).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        null_deref();
        // SAFETY: _exit is async-signal-safe; not reached.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is valid for writing.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    println!("child: signal {}", if libc::WIFSIGNALED(status) { libc::WTERMSIG(status) } else { 0 });
    null_deref();
}

/// Ids made in a parent and its child right after a fork, 50 times: printed one pair a line.
fn fork_ids() {
    use lastword::spool::EntryId;
    for _ in 0..50 {
        let _before = EntryId::generate();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child makes one id, writes it to the pipe and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let text = EntryId::generate().to_string();
            // SAFETY: write and _exit with valid arguments.
            unsafe {
                libc::write(fds[1], text.as_ptr().cast(), text.len());
                libc::_exit(0);
            }
        }
        let mine = EntryId::generate();
        let mut buf = [0u8; 26];
        // SAFETY: the parent's ends of the pipe; `buf` is valid for 26 bytes.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        println!("{mine} {}", String::from_utf8_lossy(&buf));
    }
}

/// Loads the shared library named by `CRASH_APP_DSO` (after init) and calls its function named by
/// `CRASH_APP_DSO_CALL` (`void f(void)`; default `lw_crash_in_c`).
fn dlopen_crash() {
    let path = std::env::var("CRASH_APP_DSO").expect("CRASH_APP_DSO");
    let path = std::ffi::CString::new(path).expect("a path without NUL");
    let call = std::env::var("CRASH_APP_DSO_CALL").unwrap_or_else(|_| "lw_crash_in_c".into());
    let call = std::ffi::CString::new(call).expect("a name without NUL");
    // SAFETY: dlopen of a library the test built; dlsym of a function `void f(void)` in it.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen failed");
        let f = libc::dlsym(handle, call.as_ptr());
        assert!(!f.is_null(), "dlsym failed");
        let f: extern "C" fn() = std::mem::transmute(f);
        f();
    }
}

/// A breakpoint instruction, as `core::intrinsics::breakpoint` emits it.
#[inline(never)]
fn trap() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: int3 raises SIGTRAP on purpose; it touches no memory.
    unsafe {
        std::arch::asm!("int3");
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: brk raises SIGTRAP on purpose; it touches no memory.
    unsafe {
        std::arch::asm!("brk #0xf000");
    }
}

/// A seccomp filter, for this thread and every other one, that makes the given system calls fail
/// with EPERM, as a sandbox (e.g. systemd's `SystemCallFilter=@system-service`) does.
fn deny_syscalls(calls: &[libc::c_long]) {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    // seccomp_data: nr at offset 0, arch at offset 4.
    let mut program = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jeq(ARCH, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    for &call in calls {
        program.push(jeq(call as u32, 0, 1));
        program.push(stmt(libc::BPF_RET | libc::BPF_K, deny));
    }
    program.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: prctl and seccomp with a valid filter program that outlives the calls.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        let rc = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &raw const prog,
        );
        assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// A GC-style runtime: it owns the faults on one protected page (it makes the page readable and
/// returns) and hands every other fault to the handler that was there before it, the way wasmtime
/// does (call it; or, for SIG_DFL/SIG_IGN, put it back and return to fault again).
static GC_PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static GC_HANDLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
struct PreviousAction(std::cell::UnsafeCell<std::mem::MaybeUninit<libc::sigaction>>);
// SAFETY: written once by `install_gc_handler` before the handler can run, then only read.
unsafe impl Sync for PreviousAction {}
static GC_PREVIOUS: PreviousAction =
    PreviousAction(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));

fn install_gc_handler() {
    // SAFETY: maps one inaccessible page (the runtime's protected page) and installs a handler with
    // a fully initialised action; the previous one is stored in GC_PREVIOUS before any fault.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        GC_PAGE.store(page as usize, Ordering::SeqCst);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = gc_handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&raw mut action.sa_mask);
        let previous = (*GC_PREVIOUS.0.get()).as_mut_ptr();
        assert_eq!(libc::sigaction(libc::SIGSEGV, &raw const action, previous), 0);
    }
}

extern "C" fn gc_handler(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let page = GC_PAGE.load(Ordering::SeqCst);
    // SAFETY: `info` is the kernel's siginfo for this SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if page != 0 && (page..page + 4096).contains(&addr) {
        // SAFETY: the runtime's own page; mprotect is async-signal-safe.
        unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ | libc::PROT_WRITE) };
        GC_HANDLED.fetch_add(1, Ordering::SeqCst);
        return;
    }
    // SAFETY: GC_PREVIOUS was written before this handler was installed; the previous handler is
    // called with the arguments the kernel gave, as its flags say it expects them.
    unsafe {
        let previous = (*GC_PREVIOUS.0.get()).assume_init_ref();
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            f(sig, info, context);
        } else if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
            libc::sigaction(sig, previous, std::ptr::null_mut());
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            f(sig);
        }
    }
}

/// Reads the runtime's protected page `times` times, protecting it again after each fault.
fn touch_gc_page(times: usize) {
    let page = GC_PAGE.load(Ordering::SeqCst);
    for _ in 0..times {
        // SAFETY: the read faults and the runtime's handler makes the page readable; then it is
        // protected again for the next round.
        unsafe {
            std::ptr::read_volatile(page as *const u8);
            libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE);
        }
    }
}

/// `init` fails for real (the process is out of file descriptors) after the spool opened; then a
/// retried `init` with the descriptors back succeeds, and the case's crash follows. The failed
/// attempts use spools of their own beside `LASTWORD_SPOOL` (`attempt-N`).
fn init_retry(case: &str) -> ! {
    let crash = || -> ! {
        if case == "init-retry-panic" {
            panic!("boom after a retried init");
        }
        null_deref();
        std::process::exit(0)
    };
    if std::env::var_os("LASTWORD_OFF").is_some() {
        crash();
    }
    let spool = std::path::PathBuf::from(std::env::var("LASTWORD_SPOOL").expect("LASTWORD_SPOOL"));
    let dir = spool.parent().expect("the spool has a parent").to_path_buf();
    let config = |spool: &std::path::Path| lastword::Config::new("crash-app").spool(spool).no_url();
    let mut limits = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and dup/close with valid arguments.
    let lowest_free = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limits);
        let fd = libc::dup(0);
        libc::close(fd);
        fd
    };
    let mut late_failure = false;
    for extra in 0..64 {
        let attempt = dir.join(format!("attempt-{extra}"));
        let tight =
            libc::rlimit { rlim_cur: (lowest_free + extra) as libc::rlim_t, rlim_max: limits.rlim_max };
        // SAFETY: setrlimit with a valid limit, restored right after.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const tight) };
        let result = lastword::init(config(&attempt));
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limits) };
        match result {
            Ok(_) => {
                println!("attempt {extra} succeeded before any failure after the spool opened");
                std::process::exit(75);
            }
            Err(e) => {
                let text = e.to_string();
                println!("attempt {extra} failed: {text}");
                // Past the spool's own opening: its session directory exists.
                if text.contains("slot") || text.contains("writing") {
                    late_failure = true;
                    break;
                }
            }
        }
    }
    if !late_failure {
        println!("no attempt failed after the spool opened");
        std::process::exit(75);
    }
    let _guard = match lastword::init(config(&spool)) {
        Ok(guard) => guard,
        Err(e) => {
            println!("the retried init failed: {e}");
            std::process::exit(76);
        }
    };
    println!("the retried init succeeded");
    crash()
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

/// The cases of tests/tests/signal_edges.rs that came with the review of the signal handler: threads
/// crashing at once, threads made just before init, one-shot and sent-signal handlers, ignored signals,
/// a seccomp filter that kills, large handler frames, and the sweep's real-time signal.
mod review {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{GC_HANDLED, GC_PAGE, null_deref, recurse, trap};

    /// How many threads `overflow-pre-init-threads` makes before init; the first one overflows.
    const PRE_INIT_THREADS: usize = 8;
    static INIT_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static GO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static CHECKED: AtomicUsize = AtomicUsize::new(0);
    static LAST_THREAD: AtomicUsize = AtomicUsize::new(0);
    static STD_THREAD: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(None);
    /// Signals seen by the application's own handler (`raise-trap-with-handler`, `abort-with-handler`).
    static APP_HANDLED: AtomicUsize = AtomicUsize::new(0);

    /// What a case sets up before `init`.
    pub fn before_init(case: &str) {
        match case {
            "overflow-pre-init-threads" => {
                // The threads are made just before init on a CPU that a real-time thread keeps busy
                // until init is done: they first run (and unblock their signals, which glibc starts
                // them with all blocked) only after init looked at them, as a thread may wait that
                // long on a loaded machine.
                let cpu = busy_cpu_until_init_done();
                for i in 0..PRE_INIT_THREADS {
                    let thread = create_thread_on(cpu, i);
                    if i == 0 {
                        LAST_THREAD.store(thread as usize, Ordering::SeqCst);
                    }
                }
            }
            "overflow-std-thread-std-stack" => {
                // A std thread made before init keeps std's own small alternate stack: it blocks the
                // real-time signals, so init's sweep cannot reach it.
                let thread = std::thread::Builder::new()
                    .name("std-stack".into())
                    .spawn(|| {
                        // SAFETY: a signal set built with sigemptyset/sigaddset, applied to this thread.
                        unsafe {
                            let mut set: libc::sigset_t = std::mem::zeroed();
                            libc::sigemptyset(&raw mut set);
                            for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
                                libc::sigaddset(&raw mut set, sig);
                            }
                            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
                        }
                        CHECKED.store(1, Ordering::SeqCst);
                        wait_for_go();
                        recurse(1);
                    })
                    .expect("spawn a thread");
                *STD_THREAD.lock().expect("not poisoned") = Some(thread);
                while CHECKED.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "trap-ignored" | "raise-trap-ignored" => {
                // SAFETY: SIG_IGN for SIGTRAP.
                unsafe { libc::signal(libc::SIGTRAP, libc::SIG_IGN) };
            }
            "raise-trap-with-handler" => install(libc::SIGTRAP, counting_handler as *const () as usize, 0),
            "abort-with-handler" => install(libc::SIGABRT, counting_handler as *const () as usize, 0),
            "runtime-one-shot-before-init" => {
                // A one-shot runtime handler: the kernel resets it to SIG_DFL when it is delivered.
                map_gc_page();
                install(
                    libc::SIGSEGV,
                    one_shot_gc_handler as *const () as usize,
                    libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER,
                );
            }
            "runtime-big-frame-handler" => {
                // A runtime whose handler needs a large frame and did not ask for an alternate stack.
                map_gc_page();
                install(libc::SIGSEGV, big_frame_gc_handler as *const () as usize, libc::SA_SIGINFO);
            }
            "seccomp-kill-vm-readv" => {
                seccomp_filter(&[libc::SYS_process_vm_readv], libc::SECCOMP_RET_KILL_PROCESS);
            }
            "runtime-reraise-before-init" => {
                // A crash handler of the classic kind: put the default back and raise again, from
                // a handler that does not block its own signal (SA_NODEFER).
                install(
                    libc::SIGSEGV,
                    reraising_handler as *const () as usize,
                    libc::SA_SIGINFO | libc::SA_NODEFER,
                );
            }
            "sweep-signal-stuck-thread" => stuck_thread(),
            "runtime-longjmp" => call_in_library("lw_runtime_install"),
            _ => {}
        }
    }

    /// Calls `void name(void)` of the library named by `CRASH_APP_DSO` (loaded once, kept).
    fn call_in_library(name: &str) {
        static HANDLE: AtomicUsize = AtomicUsize::new(0);
        let name = std::ffi::CString::new(name).expect("a name without NUL");
        // SAFETY: dlopen of a library the test built, kept loaded; dlsym of a `void f(void)` in it.
        unsafe {
            if HANDLE.load(Ordering::SeqCst) == 0 {
                let path = std::env::var("CRASH_APP_DSO").expect("CRASH_APP_DSO");
                let path = std::ffi::CString::new(path).expect("a path without NUL");
                let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
                assert!(!handle.is_null(), "dlopen failed");
                HANDLE.store(handle as usize, Ordering::SeqCst);
            }
            let f = libc::dlsym(HANDLE.load(Ordering::SeqCst) as *mut libc::c_void, name.as_ptr());
            assert!(!f.is_null(), "dlsym failed");
            let f: extern "C" fn() = std::mem::transmute(f);
            f();
        }
    }

    /// Runs a case after `init`; false if `case` is not one of this block.
    pub fn run(case: &str) -> bool {
        match case {
            "two-threads-segv-at-once" => {
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
                let threads: Vec<_> = (0..2)
                    .map(|i| {
                        let barrier = barrier.clone();
                        std::thread::Builder::new()
                            .name(format!("crasher-{i}"))
                            .spawn(move || {
                                barrier.wait();
                                null_deref();
                            })
                            .expect("spawn a thread")
                    })
                    .collect();
                for t in threads {
                    let _ = t.join();
                }
            }
            "overflow-pre-init-threads" => {
                INIT_DONE.store(true, Ordering::SeqCst);
                GO.store(true, std::sync::atomic::Ordering::SeqCst);
                // SAFETY: the joinable thread made before init, joined once.
                unsafe {
                    libc::pthread_join(
                        LAST_THREAD.load(Ordering::SeqCst) as libc::pthread_t,
                        std::ptr::null_mut(),
                    )
                };
            }
            "overflow-std-thread-std-stack" => {
                GO.store(true, Ordering::SeqCst);
                if let Some(thread) = STD_THREAD.lock().expect("not poisoned").take() {
                    let _ = thread.join();
                }
            }
            "trap-ignored" => trap(),
            "raise-trap-ignored" => {
                for _ in 0..3 {
                    // SAFETY: raise is always safe to call; SIGTRAP is ignored.
                    unsafe { libc::raise(libc::SIGTRAP) };
                }
                println!(
                    "survived 3 ignored SIGTRAPs; SIGTRAP ignored now: {}",
                    disposition(libc::SIGTRAP) == libc::SIG_IGN
                );
                trap();
            }
            "raise-trap-with-handler" => {
                for _ in 0..2 {
                    // SAFETY: raise is always safe to call; the application's handler takes it.
                    unsafe { libc::raise(libc::SIGTRAP) };
                }
                trap();
                println!(
                    "the handler saw {} traps; SIGTRAP goes straight to it now: {}",
                    APP_HANDLED.load(Ordering::SeqCst),
                    disposition(libc::SIGTRAP) == counting_handler as *const () as usize
                );
                null_deref();
            }
            "abort-with-handler" => std::process::abort(),
            "runtime-one-shot-before-init" => {
                touch_gc_page();
                println!("the runtime handled {} faults", GC_HANDLED.load(Ordering::SeqCst));
                null_deref();
            }
            "runtime-big-frame-handler" => {
                touch_gc_page();
                println!("the runtime handled {} faults", GC_HANDLED.load(Ordering::SeqCst));
                null_deref();
            }
            "seccomp-kill-vm-readv" | "runtime-reraise-before-init" => null_deref(),
            "raise-segv-then-crash" => {
                // std's SIGSEGV handler takes a sent SIGSEGV for a fault that is not its own: it puts
                // SIG_DFL in place and returns, and the program goes on.
                // SAFETY: raise is always safe to call.
                unsafe { libc::raise(libc::SIGSEGV) };
                println!(
                    "survived a sent SIGSEGV; SIGSEGV at SIG_DFL now: {}",
                    disposition(libc::SIGSEGV) == libc::SIG_DFL
                );
                null_deref();
            }
            "runtime-longjmp" => {
                // The runtime's handler leaves its own fault with siglongjmp; then the application
                // puts a handler of its own in place, which must take the next fault.
                call_in_library("lw_runtime_touch");
                println!("the runtime jumped back");
                call_in_library("lw_install_exit_handler");
                null_deref();
            }
            "sweep-signal-stuck-thread" => {
                // SAFETY: raise is always safe to call; SIGRTMAX's default action ends the process.
                unsafe { libc::raise(libc::SIGRTMAX()) };
                println!("survived SIGRTMAX");
            }
            _ => return false,
        }
        true
    }

    fn wait_for_go() {
        while !GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Keeps the last CPU this process may use busy with a SCHED_FIFO thread until init is done
    /// (at most 300 ms, well within the kernel's real-time throttling); returns that CPU, or `None`
    /// when there is only one (or no real-time policy).
    fn busy_cpu_until_init_done() -> Option<usize> {
        // SAFETY: all-zero is a valid (empty) cpu_set_t; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is valid for writing, of the size given.
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
        // SAFETY: CPU_ISSET reads the set.
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
        let &cpu = cpus.last().filter(|_| cpus.len() > 1)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let fifo = pin_to(cpu) && {
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: this thread's own scheduling policy.
                unsafe {
                    libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &raw const param) == 0
                }
            };
            let _ = ready_tx.send(fifo);
            let start = std::time::Instant::now();
            while fifo && !INIT_DONE.load(Ordering::SeqCst) && start.elapsed() < Duration::from_millis(300) {
                std::hint::spin_loop();
            }
        });
        ready_rx.recv().unwrap_or(false).then_some(cpu)
    }

    fn pin_to(cpu: usize) -> bool {
        // SAFETY: a CPU set built with CPU_ZERO/CPU_SET, applied to the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set) == 0
        }
    }

    /// Makes one of the threads of `overflow-pre-init-threads` with `pthread_create`, as C code does,
    /// to run on `cpu` only (when given).
    fn create_thread_on(cpu: Option<usize>, index: usize) -> libc::pthread_t {
        let mut thread: libc::pthread_t = 0;
        // SAFETY: attributes initialised by pthread_attr_init and destroyed after use; a CPU set
        // built with CPU_ZERO/CPU_SET; `thread` is valid for writing; `pre_init_thread` has the C
        // signature and takes its index as the argument.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            libc::pthread_attr_init(&raw mut attr);
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                libc::pthread_attr_setaffinity_np(
                    &raw mut attr,
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &raw const set,
                );
            }
            let rc = libc::pthread_create(
                &raw mut thread,
                &raw const attr,
                pre_init_thread,
                index as *mut libc::c_void,
            );
            assert_eq!(rc, 0, "pthread_create");
            libc::pthread_attr_destroy(&raw mut attr);
        }
        thread
    }

    /// One of the threads made just before init: once init is done, it says whether it has an
    /// alternate signal stack (at least 64 KiB); the first one then overflows its stack, once every
    /// other one looked.
    extern "C" fn pre_init_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
        let index = arg as usize;
        wait_for_go();
        // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
        let mut stack: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaltstack(std::ptr::null(), &raw mut stack) };
        if stack.ss_flags & libc::SS_DISABLE != 0 || stack.ss_size < 64 * 1024 {
            eprintln!("thread {index}: no alternate signal stack (size {})", stack.ss_size);
        }
        CHECKED.fetch_add(1, Ordering::SeqCst);
        if index == 0 {
            while CHECKED.load(Ordering::SeqCst) < PRE_INIT_THREADS {
                std::thread::sleep(Duration::from_millis(1));
            }
            recurse(1);
        }
        std::ptr::null_mut()
    }

    /// The handler address of `sig` now.
    fn disposition(sig: libc::c_int) -> usize {
        // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaction(sig, std::ptr::null(), &raw mut current) };
        current.sa_sigaction
    }

    fn install(sig: libc::c_int, handler: usize, flags: libc::c_int) {
        // SAFETY: a fully initialised action with a handler of the signature its flags say.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            action.sa_flags = flags;
            libc::sigemptyset(&raw mut action.sa_mask);
            assert_eq!(libc::sigaction(sig, &raw const action, std::ptr::null_mut()), 0);
        }
    }

    /// The application's own handler of a signal: counts it, says so on stdout, and returns.
    extern "C" fn counting_handler(_sig: libc::c_int) {
        APP_HANDLED.fetch_add(1, Ordering::SeqCst);
        let msg = b"the application's handler ran\n";
        // SAFETY: write(2) to stdout with a valid buffer; async-signal-safe.
        unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
    }

    fn map_gc_page() {
        // SAFETY: one inaccessible anonymous page, the runtime's protected page.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        GC_PAGE.store(page as usize, Ordering::SeqCst);
    }

    fn touch_gc_page() {
        // SAFETY: the read faults and the runtime's handler makes the page readable.
        unsafe { std::ptr::read_volatile(GC_PAGE.load(Ordering::SeqCst) as *const u8) };
    }

    /// Makes the runtime's page readable if the fault is on it; true if it was.
    fn own_fault(info: *mut libc::siginfo_t) -> bool {
        let page = GC_PAGE.load(Ordering::SeqCst);
        // SAFETY: `info` is the kernel's siginfo for an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        if page == 0 || !(page..page + 4096).contains(&addr) {
            return false;
        }
        // SAFETY: the runtime's own page; mprotect is async-signal-safe.
        unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ | libc::PROT_WRITE) };
        GC_HANDLED.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// A one-shot handler (SA_RESETHAND): its own fault is fixed; for any other fault the kernel
    /// already put SIG_DFL back, so returning lets it take the default course.
    extern "C" fn one_shot_gc_handler(
        _sig: libc::c_int,
        info: *mut libc::siginfo_t,
        _context: *mut libc::c_void,
    ) {
        own_fault(info);
    }

    /// A handler with a 160 KiB frame (a runtime's handler doing real work), then the GC page's fix.
    extern "C" fn big_frame_gc_handler(
        sig: libc::c_int,
        info: *mut libc::siginfo_t,
        _context: *mut libc::c_void,
    ) {
        let mut scratch = [0u8; 160 * 1024];
        std::hint::black_box(&mut scratch);
        scratch[0] = 1;
        std::hint::black_box(&scratch);
        if !own_fault(info) {
            // Not its fault: give it up to the default action (the fault happens again).
            // SAFETY: SIG_DFL for the signal being handled.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }

    /// Puts the default back and raises the signal again (it arrives at once: SA_NODEFER).
    extern "C" fn reraising_handler(
        sig: libc::c_int,
        _info: *mut libc::siginfo_t,
        _context: *mut libc::c_void,
    ) {
        // SAFETY: a zeroed sigaction is SIG_DFL; sigaction and raise are async-signal-safe.
        unsafe {
            let default: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &raw const default, std::ptr::null_mut());
            libc::raise(sig);
        }
    }

    /// A seccomp filter, for every thread, that answers the given system calls with `action`.
    fn seccomp_filter(calls: &[libc::c_long], action: u32) {
        #[cfg(target_arch = "x86_64")]
        const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
        #[cfg(target_arch = "aarch64")]
        const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let mut program = vec![
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
            jeq(ARCH, 1, 0),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        ];
        for &call in calls {
            program.push(jeq(call as u32, 0, 1));
            program.push(stmt(libc::BPF_RET | libc::BPF_K, action));
        }
        program.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
        let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
        // SAFETY: prctl and seccomp with a valid filter program that outlives the calls.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
            let rc = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &raw const prog,
            );
            assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
        }
    }

    /// A thread that existed before init and cannot take a signal for a while: it waits in the
    /// kernel for a `CLONE_VFORK` child, which sleeps 3 s (a signal sent to it stays pending).
    fn stuck_thread() {
        std::thread::spawn(|| {
            const CHILD_STACK: usize = 64 * 1024;
            // SAFETY: the child's stack; the child runs `sleeper` on it and exits; never unmapped
            // (the child may outlive this thread).
            unsafe {
                let stack = libc::mmap(
                    std::ptr::null_mut(),
                    CHILD_STACK,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(stack, libc::MAP_FAILED);
                let top = stack.cast::<u8>().add(CHILD_STACK).cast();
                CHECKED.store(1, Ordering::SeqCst);
                libc::clone(
                    sleeper,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    std::ptr::null_mut(),
                );
            }
        });
        while CHECKED.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the thread reach the kernel's wait for the child.
        std::thread::sleep(Duration::from_millis(50));
    }

    extern "C" fn sleeper(_: *mut libc::c_void) -> libc::c_int {
        let pause = libc::timespec { tv_sec: 3, tv_nsec: 0 };
        // SAFETY: nanosleep with a valid timespec; the child then returns and clone's wrapper exits.
        unsafe { libc::nanosleep(&raw const pause, std::ptr::null_mut()) };
        0
    }
}

/// The scope's cases (tests/tests/scope.rs): a crash carries the scope of its time.
mod scope_cases {
    /// Runs `case` if it is one of these; false otherwise.
    pub fn run(case: &str) -> bool {
        match case {
            "segv-with-scope" => {
                set_process_scope();
                // A thread's own block: a fatal signal's report carries the process-wide scope only.
                lastword::with_scope(
                    |s| {
                        s.set_tag("block", "thread-only");
                    },
                    super::null_deref,
                );
            }
            "panic-with-scope" => {
                set_process_scope();
                lastword::with_scope(
                    |s| {
                        s.set_tag("block", "panicking-thread");
                    },
                    || panic!("boom in a scoped block"),
                );
            }
            _ => return false,
        }
        true
    }

    fn set_process_scope() {
        lastword::configure_scope(|s| {
            s.set_tag("region", "eu-west-1");
            s.set_user(Some(lastword::report::User {
                id: Some("42".into()),
                name: Some("ann".into()),
                ip: Some("192.0.2.7".into()),
            }));
            s.set_extra("build", serde_json::json!({"sha": "abc123"}));
            s.set_environment(Some("canary".into()));
        });
    }
}
