//! A full disk: the spool on a small tmpfs. Writes fail with a clear error, what is already in the
//! spool stays intact, an application keeps running, and writing resumes once space is freed.
//!
//! Mounting needs root (CI runs as root). Where mounting is refused, the test fails with the reason
//! rather than pass without the disk filling up; the spool's own tests cover ENOSPC through fault
//! injection as well (spool/tests/bad_input.rs).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lastword::spool::{Kind, Limits, Spool, SpoolError, SpoolOptions, SpoolView};

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
            .output();
        match out {
            Ok(o) if o.status.success() => Self { _dir: dir, path },
            Ok(o) => panic!(
                "cannot mount a small tmpfs (run the tests as root to test a full disk): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run mount: {e}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn fill(path: &Path) -> PathBuf {
    // Take most of the space with one file that can be deleted later.
    let filler = path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 160 * 1024]);
    filler
}

#[test]
fn a_full_disk_fails_writes_clearly_keeps_what_is_stored_and_recovers_when_space_is_freed() {
    let disk = SmallDisk::mount("256k");
    let root = disk.path.join("spool");
    let limits = Limits { max_bytes: 1 << 30, max_entries: 1 << 20 };
    let spool = Spool::open(&root, SpoolOptions { limits, ..SpoolOptions::default() }).unwrap();
    let filler = fill(&disk.path);
    let body = vec![b'x'; 4000];
    let json = format!("{{\"pad\":\"{}\"}}", String::from_utf8(body).unwrap());
    let mut written = Vec::new();
    let error = loop {
        match spool.write(Kind::Log, json.as_bytes()) {
            Ok(id) => written.push(id),
            Err(e) => break e,
        }
        assert!(written.len() < 1000, "the disk never filled up");
    };
    assert!(matches!(error, SpoolError::NoSpace { .. }), "a clear, typed error: {error}");
    assert!(error.to_string().contains("no space left"), "{error}");
    assert!(!written.is_empty());
    // Nothing already stored is damaged, and no partial entry is left behind.
    let view = SpoolView::open(&root).unwrap();
    let listed = view.list().unwrap();
    assert_eq!(listed.len(), written.len());
    for id in &written {
        assert_eq!(view.read(*id).unwrap().body, json.as_bytes());
    }
    // Space comes back: writing resumes.
    std::fs::remove_file(filler).unwrap();
    let id = spool.write(Kind::Crash, b"{\"after\":true}").unwrap();
    assert_eq!(view.read(id).unwrap().body, b"{\"after\":true}");
}

#[test]
fn an_application_with_a_full_spool_disk_keeps_running_and_says_why() {
    let disk = SmallDisk::mount("128k");
    let spool = disk.path.join("spool");
    // Create the spool, then fill the disk.
    drop(Spool::open(&spool, SpoolOptions::default()).unwrap());
    let filler = disk.path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 200 * 1024]);
    let app = env!("CARGO_BIN_EXE_lastword-crash-app");
    let out = Command::new(app)
        .arg("panic-thread")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the application goes on after its thread's panic");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lastword: could not store the crash report: no space left"), "{err}");
    std::fs::remove_file(filler).unwrap();
    let out = Command::new(app)
        .arg("panic-thread")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let crashes = SpoolView::open(&spool)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(Kind::Crash))
        .count();
    assert_eq!(crashes, 1, "with space again, the next crash is stored");
}
