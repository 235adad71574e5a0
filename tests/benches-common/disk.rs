//! Disk helpers the benchmarks of every crate share: a bare durable write (the baseline of the spool's
//! write), filling `ready/` without the spool, and writing everything back before a clock starts.
//! Included with `#[path = "…/tests/benches-common/disk.rs"] mod disk;`, like `stats.rs`.

#![allow(dead_code, reason = "each bench uses the part it needs")]

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use lastword_spool::{EntryId, EntryName, HEADER_LEN, Header, Kind};

/// The system calls of a durable write, without the spool around them:
/// create(O_EXCL) + write(each part) + fsync + rename + fsync(directory).
pub struct BareWriter {
    tmp: PathBuf,
    ready: PathBuf,
    /// Kept open for the directory fsync, as the spool keeps `ready/` open.
    ready_dir: File,
    next: u64,
}

impl BareWriter {
    /// A writer into `root/writing` and `root/ready`, created if missing.
    pub fn new(root: &Path) -> Self {
        let tmp = root.join("writing");
        let ready = root.join("ready");
        for dir in [&tmp, &ready] {
            fs::create_dir_all(dir).expect("create the baseline's directories");
        }
        let ready_dir = File::open(&ready).expect("open the baseline's ready directory");
        Self { tmp, ready, ready_dir, next: 0 }
    }

    /// Its `ready` directory.
    pub fn ready(&self) -> &Path {
        &self.ready
    }

    /// Writes `parts` as one file of `kind`, durably. The name is as long as an entry's, so that
    /// path handling costs the same.
    pub fn write(&mut self, kind: Kind, parts: &[&[u8]]) {
        self.next += 1;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let name = format!("{}-{:026}-{len}.{}", kind.priority(), self.next, kind.as_str());
        let tmp = self.tmp.join(&name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .expect("baseline: create the temporary file");
        for part in parts {
            file.write_all(part).expect("baseline: write");
        }
        file.sync_all().expect("baseline: fsync the file");
        drop(file);
        fs::rename(&tmp, self.ready.join(&name)).expect("baseline: rename into ready");
        self.ready_dir.sync_all().expect("baseline: fsync the directory");
    }
}

/// Writes a valid entry straight into `ready` (no temporary file, no fsync) and returns its name:
/// byte for byte what `Spool::write_flagged(kind, flags, body)` makes (lastword's own writers flag
/// their JSON bodies `FLAG_JSON`). Only for setting up, while nothing reads the directory.
pub fn put_ready(ready: &Path, kind: Kind, flags: u16, body: &[u8]) -> EntryName {
    let id = EntryId::generate();
    let header = Header { kind, flags, id, created_millis: id.millis(), body_len: body.len() as u64 };
    let name = EntryName::new(kind, id, (HEADER_LEN + body.len()) as u64);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(ready.join(name.to_string()))
        .expect("setup: create an entry file");
    file.write_all(&header.encode(&[body])).expect("setup: write the header");
    file.write_all(body).expect("setup: write the body");
    name
}

/// Writes back everything dirty on the file system of `path`, so that the setup's files are not
/// flushed by the fsyncs being measured.
pub fn settle_disk(path: &Path) {
    let dir = File::open(path).expect("open a bench directory");
    rustix::fs::syncfs(&dir).expect("syncfs");
}

/// The name of the file system that holds `path` (from `statfs`'s magic number), for the tables.
pub fn fs_name(path: &Path) -> String {
    let magic = match rustix::fs::statfs(path) {
        Ok(s) => s.f_type as u64,
        Err(e) => return format!("unknown file system ({e})"),
    };
    match magic {
        0x0102_1994 => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("file system {other:#x}"),
    }
}

/// A temporary directory on a tmpfs (`/dev/shm`), where no block is ever allocated or discarded: the
/// file system whose unlinks and renames are the cheapest this machine has. `None` without one.
pub fn tmpfs_dir(prefix: &str) -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if fs_name(shm) != "tmpfs" {
        return None;
    }
    tempfile::Builder::new().prefix(prefix).tempdir_in(shm).ok()
}
