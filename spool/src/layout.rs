//! Where things are in a spool directory, how a spool is created and checked on open, and the
//! read-only scan behind `ls` and `stats` (FORMAT.md, "Directory layout").

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::id::EntryId;

/// The content of the VERSION file of a format 1 spool.
pub const VERSION_TEXT: &str = "lastword-spool 1\n";
/// Prefix of the temporary file a creator writes VERSION into (followed by its pid and a random id).
const VERSION_TMP_PREFIX: &str = ".VERSION.";

/// The paths of one spool.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub ready: PathBuf,
    pub sessions: PathBuf,
    pub writing: PathBuf,
    pub claimed: PathBuf,
    pub quarantine: PathBuf,
    pub counters: PathBuf,
}

/// How old a spool's `VERSION` must be for an open with `create` to take the spool as settled.
pub(crate) const SETTLED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Layout {
    pub fn new(root: &Path) -> Self {
        let root = root.to_path_buf();
        Self {
            ready: root.join("ready"),
            sessions: root.join("sessions"),
            writing: root.join("writing"),
            claimed: root.join("claimed"),
            quarantine: root.join("quarantine"),
            counters: root.join("counters"),
            root,
        }
    }

    /// Checks that `root` is a spool this code may use, creating it first when asked. Returns the
    /// layout and whether the spool was being created (it had no `VERSION` when this looked).
    ///
    /// Any number of processes may create the same spool at the same moment: each of them opens it.
    /// Every directory this makes is fsynced into its parent, so that what is written into it later
    /// does not depend on the file system keeping the order of metadata across a power loss; a
    /// creator that finds them made (perhaps by another creator an instant ago, not fsynced yet)
    /// fsyncs their parents all the same.
    /// `open` with `create` fsyncs the root and its parent again unless the spool's `VERSION` is
    /// older than this (see `open`).
    pub fn open(root: &Path, create: bool) -> Result<(Self, bool)> {
        let layout = Self::new(root);
        // A creator that finds the spool made fsyncs what another creator may have made an instant
        // ago. A spool made long enough ago is settled: its creator fsynced it then, or died and the
        // kernel has written its metadata back since (ext4 commits its journal every 5 s, and dirty
        // data is written back after 30 s by default), so an open on it costs no fsync.
        let settled = create && layout.version_older_than(SETTLED_AFTER);
        let meta = match fs::metadata(root) {
            Ok(m) => {
                if create && !settled {
                    sync_parent(root)?;
                }
                m
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Err(SpoolError::NotFound { path: root.to_path_buf() });
                }
                create_dir_all_durably(root)?;
                fs::metadata(root).map_err(|e| SpoolError::io("stat", root, e))?
            }
            Err(e) => return Err(SpoolError::io("stat", root, e)),
        };
        if !meta.is_dir() {
            return Err(SpoolError::NotADirectory { path: root.to_path_buf() });
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(SpoolError::ForeignOwner { path: root.to_path_buf(), owner: meta.uid(), me });
        }
        let fresh = layout.check_version(create)?;
        if create {
            layout.create_state_dirs(!settled)?;
        }
        Ok((layout, fresh))
    }

    /// Whether `VERSION` is there and was last changed more than `age` ago.
    fn version_older_than(&self, age: std::time::Duration) -> bool {
        fs::symlink_metadata(self.root.join("VERSION"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
    }

    /// Makes the state directories that are missing, and fsyncs the root if it made any (or
    /// `always`, for a creator: another creator may have made them and not fsynced them yet).
    pub fn create_state_dirs(&self, always: bool) -> Result<()> {
        let mut made = always;
        for dir in
            [&self.ready, &self.sessions, &self.writing, &self.claimed, &self.quarantine, &self.counters]
        {
            made |= fsio::create_dir(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
        }
        if made {
            fsio::sync_dir_at(&self.root).map_err(|e| SpoolError::io("fsync", &self.root, e))?;
        }
        Ok(())
    }

    /// Checks VERSION, writing it when `create` and the directory is empty. Returns whether the spool
    /// is being created (VERSION was not there at first).
    fn check_version(&self, create: bool) -> Result<bool> {
        let path = self.root.join("VERSION");
        if self.read_version(&path)? {
            return Ok(false);
        }
        // No VERSION. A creator killed before its rename leaves only its temporary `.VERSION.*`:
        // such a directory is still an empty one, or the spool could never be created.
        let mut empty = true;
        for item in fs::read_dir(&self.root).map_err(|e| SpoolError::io("read directory", &self.root, e))? {
            let item = item.map_err(|e| SpoolError::io("read directory", &self.root, e))?;
            if !item.file_name().as_encoded_bytes().starts_with(VERSION_TMP_PREFIX.as_bytes()) {
                empty = false;
                break;
            }
        }
        if !empty {
            // Another creator may have renamed its VERSION into place between our read and the
            // listing: a creator makes nothing else before its VERSION, so whatever the listing saw
            // came after it, and a second read finds it.
            if self.read_version(&path)? {
                return Ok(true);
            }
            return Err(SpoolError::Version {
                path: self.root.clone(),
                found: "no VERSION file in a non-empty directory".into(),
            });
        }
        if !create {
            return Err(SpoolError::EmptyDirectory { path: self.root.clone() });
        }
        self.write_version(&path)?;
        Ok(true)
    }

    /// Whether VERSION is there and says format 1; an error if it says anything else.
    fn read_version(&self, path: &Path) -> Result<bool> {
        match fs::read_to_string(path) {
            Ok(text) if text == VERSION_TEXT => Ok(true),
            Ok(text) => {
                Err(SpoolError::Version { path: self.root.clone(), found: text.chars().take(64).collect() })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SpoolError::io("read", path, e)),
        }
    }

    fn write_version(&self, path: &Path) -> Result<()> {
        // Several creators (processes, or threads of one process) may create the same spool at once:
        // each writes a temporary file of its own and renames it into place; all write the same bytes.
        let tmp =
            self.root.join(format!("{VERSION_TMP_PREFIX}{}.{}", std::process::id(), EntryId::generate()));
        let result = (|| {
            let mut f = fsio::create_new(&tmp)?;
            f.write_all(VERSION_TEXT.as_bytes())?;
            fsio::sync(&f)?;
            fsio::rename(&tmp, path)?;
            fsio::sync_dir_at(&self.root)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| SpoolError::io("write", path, e))
    }

    pub fn session_lock(&self, sid: &str) -> PathBuf {
        self.sessions.join(format!("{sid}.lock"))
    }
}

/// Creates `path` and whatever ancestors it lacks, each with mode 0700 and fsynced into its parent.
/// Another process creating the same directories at the same moment is no error.
fn create_dir_all_durably(path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match fs::symlink_metadata(at) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(SpoolError::io("stat", at, e)),
        }
    }
    for dir in missing.into_iter().rev() {
        // Made here or by another creator an instant ago: fsync the parent either way, since the
        // other one may not have done so yet.
        fsio::create_dir(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
        sync_parent(dir)?;
    }
    Ok(())
}

/// fsyncs the directory that holds `path`.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fsio::sync_dir_at(parent).map_err(|e| SpoolError::io("fsync", parent, e))
}

/// File names in a directory, without those starting with `.`; a missing directory is empty.
pub(crate) fn names_in(dir: &Path) -> Result<Vec<OsString>> {
    let iter = match fsio::read_dir(dir) {
        Ok(iter) => iter,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for item in iter {
        let item = item.map_err(|e| SpoolError::io("read directory", dir, e))?;
        let name = item.file_name();
        if !name.as_encoded_bytes().starts_with(b".") {
            names.push(name);
        }
    }
    Ok(names)
}
