//! A spool that a dead session left damaged never disables capture: an application whose spool holds
//! leftovers that cannot be recovered (a stray directory, a FIFO, a partial write on a full disk) still
//! starts with its panic hook and signal handlers installed, and its crashes are in the spool.
//!
//! The full disk is a real small tmpfs (mounting needs root, as in full_disk.rs: where mounting is
//! refused, the test fails with the reason rather than pass without a full disk).

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, FLAG_RAW_SIGNAL, Kind, Spool, SpoolOptions, SpoolView};

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");
/// A session that no process holds.
const DEAD: &str = "01HZZZZZZZZZZZZZZZZZZDEAD0";

/// Runs the crash app's `case` on `spool`, at most 30 s (a recovery that blocks is a failure).
fn run(case: &str, spool: &Path) -> Output {
    let mut child = Command::new(APP)
        .arg(case)
        .env("LASTWORD_SPOOL", spool)
        .env_remove("LASTWORD_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{case}: the application did not finish: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The crash entries in `spool`'s ready/: whether each is a raw signal report.
fn crashes(spool: &Path) -> Vec<bool> {
    let view = SpoolView::open(spool).unwrap();
    view.list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(Kind::Crash) && e.state == EntryState::Ready)
        .map(|e| view.read(e.id.unwrap()).unwrap().header.flags & FLAG_RAW_SIGNAL != 0)
        .collect()
}

fn quarantined(spool: &Path) -> Vec<String> {
    SpoolView::open(spool)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.state == EntryState::Quarantined)
        .map(|e| e.reason.unwrap_or_default())
        .collect()
}

/// A spool with the `writing/` folder of a dead session.
fn spool_with_a_dead_writer(root: &Path) -> PathBuf {
    drop(Spool::open(root, SpoolOptions::default()).unwrap());
    let writing = root.join("writing").join(DEAD);
    std::fs::create_dir(&writing).unwrap();
    writing
}

#[test]
fn an_application_on_a_spool_with_a_stray_directory_and_a_fifo_left_by_a_dead_session_reports_its_crashes() {
    for case in ["panic-thread", "segv"] {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let writing = spool_with_a_dead_writer(&spool);
        std::fs::create_dir(writing.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-48.crash")).unwrap();
        let made =
            Command::new("mkfifo").arg(writing.join(".slot-01HZZZZZZZZZZZZZZZZZZZZZZZ")).status().unwrap();
        assert!(made.success());

        let out = run(case, &spool);
        let err = stderr(&out);
        assert!(!err.contains("lastword::init failed"), "{case}: init failed: {err}");
        match case {
            "segv" => assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{case}: {err}"),
            _ => assert_eq!(out.status.code(), Some(0), "{case}: {err}"),
        }
        assert_eq!(crashes(&spool), vec![case == "segv"], "{case}: the crash is in the spool");
        let reasons = quarantined(&spool);
        assert_eq!(reasons.len(), 2, "{case}: both leftovers set aside: {reasons:?}");
        assert!(reasons.iter().all(|r| r.contains("not a regular file")), "{reasons:?}");
    }
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a small tmpfs (run the tests as root to test a full disk): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { _dir: dir, path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn an_application_whose_spool_holds_a_partial_write_on_a_full_disk_starts_with_its_hooks_installed() {
    let disk = SmallDisk::mount("128k");
    let spool = disk.path.join("spool");
    let writing = spool_with_a_dead_writer(&spool);
    std::fs::write(writing.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-900.crash"), b"LWSP half a crash report")
        .unwrap();
    // Fill the disk: the reason of a quarantine can no longer be written.
    let filler = disk.path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 256 * 1024]);

    let out = run("panic-thread", &spool);
    let err = stderr(&out);
    assert!(!err.contains("lastword::init failed"), "init failed: {err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The panic hook ran: it says why the report could not be stored.
    assert!(err.contains("lastword: could not store the crash report: no space left"), "{err}");
    assert_eq!(std::fs::read_dir(&writing).unwrap().count(), 1, "the partial write is still there, kept");

    // With space again, the next start quarantines the leftover and stores its crash.
    std::fs::remove_file(filler).unwrap();
    let out = run("panic-thread", &spool);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(crashes(&spool), vec![false]);
    let reasons = quarantined(&spool);
    assert!(reasons.len() == 1 && reasons[0].starts_with("partial write by a dead session"), "{reasons:?}");
    assert!(!writing.exists());
}
