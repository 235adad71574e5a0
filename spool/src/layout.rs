//! Where things are in a spool directory, how a spool is created and checked on open, and the
//! read-only scan behind `ls` and `stats` (FORMAT.md, "Directory layout").

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, SpoolError};
use crate::fsio;

/// The content of the VERSION file of a format 1 spool.
pub const VERSION_TEXT: &str = "lastword-spool 1\n";
/// Prefix of the temporary file a creator writes VERSION into (followed by its pid).
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

    /// Checks that `root` is a spool this code may use, creating it first when asked.
    pub fn open(root: &Path, create: bool) -> Result<Self> {
        let layout = Self::new(root);
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Err(SpoolError::NotFound { path: root.to_path_buf() });
                }
                create_dir_all(root)?;
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
        layout.check_version(create)?;
        if create {
            for dir in [&layout.ready, &layout.sessions, &layout.writing, &layout.claimed] {
                fsio::create_dir(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
            }
            for dir in [&layout.quarantine, &layout.counters] {
                fsio::create_dir(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
            }
        }
        Ok(layout)
    }

    fn check_version(&self, create: bool) -> Result<()> {
        let path = self.root.join("VERSION");
        match fs::read_to_string(&path) {
            Ok(text) if text == VERSION_TEXT => Ok(()),
            Ok(text) => {
                Err(SpoolError::Version { path: self.root.clone(), found: text.chars().take(64).collect() })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A creator killed before its rename leaves only its temporary `.VERSION.<pid>`:
                // such a directory is still an empty one, or the spool could never be created.
                let mut empty = true;
                for item in
                    fs::read_dir(&self.root).map_err(|e| SpoolError::io("read directory", &self.root, e))?
                {
                    let item = item.map_err(|e| SpoolError::io("read directory", &self.root, e))?;
                    if !item.file_name().as_encoded_bytes().starts_with(VERSION_TMP_PREFIX.as_bytes()) {
                        empty = false;
                        break;
                    }
                }
                if !empty {
                    return Err(SpoolError::Version {
                        path: self.root.clone(),
                        found: "no VERSION file in a non-empty directory".into(),
                    });
                }
                if !create {
                    return Err(SpoolError::NotFound { path: self.root.clone() });
                }
                self.write_version(&path)
            }
            Err(e) => Err(SpoolError::io("read", &path, e)),
        }
    }

    fn write_version(&self, path: &Path) -> Result<()> {
        // Two processes may create the same spool at once: each writes its own temporary file and
        // renames it into place; both write the same bytes.
        let tmp = self.root.join(format!("{VERSION_TMP_PREFIX}{}", std::process::id()));
        // A leftover of a dead process that had this pid before.
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = fsio::create_new(&tmp)?;
            f.write_all(VERSION_TEXT.as_bytes())?;
            fsio::sync(&f)?;
            fsio::rename(&tmp, path)?;
            fsio::sync_dir(&fsio::open_dir(&self.root)?)
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

fn create_dir_all(path: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, fsio::DIR_MODE);
    builder.recursive(true).create(path).map_err(|e| SpoolError::io("create directory", path, e))
}

/// File names in a directory, without those starting with `.`; a missing directory is empty.
pub(crate) fn names_in(dir: &Path) -> Result<Vec<OsString>> {
    let iter = match fs::read_dir(dir) {
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
