//! Debug files: the ELF executables, shared objects and separate debug files (`objcopy
//! --only-keep-debug`) of the builds whose reports the collector holds, kept content-addressed by GNU
//! build id, so that a report from a stripped binary, or from a binary replaced before its report was
//! read, is symbolized on the collector (`crate::symbolize`), and so that `gdb`/`debuginfod-find`
//! fetch them over the debuginfod API.
//!
//! [`DebugFiles`] is the one handle the rest of the collector uses: [`DebugFiles::symbols`] gives the
//! local path of a file with symbols for a build id, [`DebugFiles::subscribe`] tells of each build id
//! whose file just arrived (the reports waiting for it are then symbolized again).
//!
//! Local layout (the SQLite store keeps it in `DIR/debug-files/`): `<dir>/<build id>/debuginfo` (a
//! file with DWARF or a symbol table: a separate debug file, or an unstripped binary) and
//! `<dir>/<build id>/executable` (the binary as shipped), the build id in lowercase hex.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;

/// What a debug file of a build is, as the debuginfod API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A file with the build's symbols: DWARF or at least a symbol table.
    Debuginfo,
    /// The binary as shipped (it may be stripped).
    Executable,
}

impl FileKind {
    /// The name of the file in a build id's directory, and of the debuginfod route.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Debuginfo => "debuginfo",
            FileKind::Executable => "executable",
        }
    }
}

/// Is `id` a build id as the collector keys files by: lowercase hex, an even count of 2 to 128
/// digits. Nothing else ever becomes a path.
pub fn is_build_id(id: &str) -> bool {
    (2..=128).contains(&id.len())
        && id.len() % 2 == 0
        && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The collector's debug files. Cheap to clone: every clone is the same set.
#[derive(Clone, Debug)]
pub struct DebugFiles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    arrivals: broadcast::Sender<String>,
}

impl DebugFiles {
    /// The debug files kept under `dir` (see the module doc for the layout).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let (arrivals, _) = broadcast::channel(1024);
        DebugFiles { inner: Arc::new(Inner { dir: dir.into(), arrivals }) }
    }

    /// The local directory the files are kept in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The local path of the file that best symbolizes `build_id` (its `debuginfo`, else its
    /// `executable`), or `None` when the collector has neither (or `build_id` is not one).
    pub async fn symbols(&self, build_id: &str) -> Option<PathBuf> {
        if !is_build_id(build_id) {
            return None;
        }
        let at = self.inner.dir.join(build_id);
        for kind in [FileKind::Debuginfo, FileKind::Executable] {
            let path = at.join(kind.name());
            if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                return Some(path);
            }
        }
        None
    }

    /// The build ids of files as they arrive, from now on. A receiver that falls behind is told so
    /// (`RecvError::Lagged`) and should look at every waiting report again.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.arrivals.subscribe()
    }

    /// Tells the subscribers that a file of `build_id` has arrived (after it is durably in place).
    pub fn announce(&self, build_id: &str) {
        // No subscriber is not an error: nothing waits.
        let _ = self.inner.arrivals.send(build_id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_even_length_is_a_build_id() {
        assert!(is_build_id("8f3eb1"));
        for bad in ["", "a", "8F3E", "../etc", "abc", "zz", &"a".repeat(130)] {
            assert!(!is_build_id(bad), "{bad:?}");
        }
    }
}
