//! A spool on a real, full ext4 file system, where (unlike tmpfs) a new directory needs a free block:
//! an application whose spool a dead session left damaged starts with its hooks installed and reports
//! a later crash once there is space, and `lastword drain` delivers what is ready on a full disk (which
//! frees space).
//!
//! The file system is an 8 MiB image made with `mkfs.ext4 -m 0` (no blocks reserved for root: the tests
//! run as root) and loop-mounted; mounting needs root. Where a step cannot be done, the test fails with
//! the reason rather than pass without a full disk. The guard unmounts and deletes it on every path.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, FLAG_RAW_SIGNAL, Kind, Spool, SpoolOptions, SpoolView};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
/// Set in a child: it plays the application (`die` or `crash`, see `child_application`).
const ROLE_ENV: &str = "LASTWORD_TEST_FULL_DISK_ROLE";

/// An ext4 image mounted on a fresh directory; unmounted and deleted on drop.
struct Ext4 {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

fn must(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (the test needs root, and e2fsprogs: apt-get install -y e2fsprogs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ext4 {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        must(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&img), "mkfs.ext4");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        // From here on the guard exists: whatever fails below, drop unmounts.
        let disk = Self { dir, mnt };
        must(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&disk.mnt), "mount -o loop");
        disk
    }

    fn path(&self) -> &Path {
        &self.mnt
    }

    /// Fills the file system until not one block is left (statvfs says 0 available) and returns the
    /// file that holds the space.
    fn fill(&self) -> PathBuf {
        let filler = self.mnt.join(format!("filler-{}", Instant::now().elapsed().as_nanos()));
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 16, 1024, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        let free = rustix::fs::statvfs(&self.mnt).unwrap().f_bavail;
        assert_eq!(free, 0, "the disk is full");
        let made = std::fs::create_dir(self.mnt.join("probe"));
        assert!(made.is_err(), "on a full ext4, a new directory needs a block that is not there");
        filler
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.mnt).status().is_ok_and(|s| s.success());
        if !done {
            // Something still holds a file on it (a test that failed with a child running).
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = std::fs::remove_file(self.dir.path().join("img"));
    }
}

/// The entry point of the child application; passes at once in an ordinary test run. It starts
/// lastword on `LASTWORD_SPOOL`, prints `ready <session id>` (or why init failed), waits for a line
/// on stdin, then, as `crash`, aborts (SIGABRT); as `die`, waits to be killed.
#[test]
fn child_application() {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let guard = match lastword::init(lastword::Config::new("full-disk").no_url()) {
        Ok(guard) => guard,
        Err(e) => {
            println!("init failed: {e}");
            std::process::exit(70);
        }
    };
    println!("ready {}", guard.spool().session_id());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    if role == "crash" {
        // A fatal signal (SIGABRT), reported by lastword's signal handler through its signal slot.
        std::process::abort();
    }
    loop {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The application, started; killed on drop if it is still running.
struct App {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl App {
    fn start(role: &str, spool: &Path) -> Self {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "child_application", "--nocapture", "-q", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env("LASTWORD_SPOOL", spool)
            .env_remove("LASTWORD_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    /// The session id the application printed once `init` returned; panics with its words if init
    /// failed.
    fn ready(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the application ended before init returned");
            if let Some(at) = line.find("ready ") {
                return line[at + 6..].trim().to_owned();
            }
            assert!(!line.contains("init failed"), "the application could not start lastword: {line}");
        }
    }

    fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "the application did not end within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn on_a_full_ext4_disk_an_application_starts_with_its_hooks_and_drain_delivers_what_is_ready() {
    let disk = Ext4::mount();
    let spool = disk.path().join("spool");
    // What an earlier run left ready for delivery.
    {
        let s = Spool::open(&spool, SpoolOptions::default()).unwrap();
        for i in 0..3 {
            s.write(Kind::Crash, format!(r#"{{"i":{i}}}"#).as_bytes()).unwrap();
        }
    }
    // An application that died in the middle of a write: killed, and its half-written entry.
    let mut dead = App::start("die", &spool);
    let dead_sid = dead.ready();
    dead.child.kill().unwrap();
    dead.wait(Duration::from_secs(30));
    let partial = spool.join("writing").join(&dead_sid).join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-900.crash");
    std::fs::write(&partial, b"LWSP half a crash report").unwrap();

    // The disk fills up. An application starts: init succeeds, with its hooks installed.
    let filler = disk.fill();
    let mut app = App::start("crash", &spool);
    let sid = app.ready();
    assert!(partial.exists(), "the partial write that cannot be quarantined is kept where it was");
    assert!(
        !spool.join("writing").join(&sid).exists(),
        "no room for the application's writing/ directory: its signal slot is made at the crash"
    );
    // Space comes back, then the application dies of a fatal signal: its report is in the spool.
    std::fs::remove_file(&filler).unwrap();
    app.go();
    let status = app.wait(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(rustix::process::Signal::ABORT.as_raw()), "{status:?}");
    let view = SpoolView::open(&spool).unwrap();
    let signal_reports: Vec<_> = view
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.state == EntryState::Ready && e.kind == Some(Kind::Crash))
        .filter(|e| view.read(e.id.unwrap()).unwrap().header.flags & FLAG_RAW_SIGNAL != 0)
        .collect();
    assert_eq!(signal_reports.len(), 1, "the signal handler committed its report");

    // Full again: drain delivers everything that is ready.
    let _filler = disk.fill();
    let collector = TestCollector::start(Behaviour::Accept);
    let out = Command::new(BIN)
        .args(["drain", "--deadline", "20s", "--url", &collector.url(), "--spool"])
        .arg(&spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .env_remove("LASTWORD_APP")
        .env_remove("LASTWORD_SPOOL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(collector.stored_ids().len(), 4, "the three earlier entries and the crash: {err}");
    // It says what it had to leave, naming it.
    let said = format!(
        "skipped 1 file it could neither recover nor quarantine, left in place and tried again at every start: {}: cannot quarantine it",
        partial.display()
    );
    assert!(err.contains(&said), "{err}");
    assert!(err.contains("no space left on the device"), "{err}");
}
