//! Crash loops: an app that crashes the same way at every start must not fill the disk or flood the
//! collector. Each fingerprint is stored at most N times per hour; beyond that the crash is counted,
//! and the count travels with the next stored report of that fingerprint.
//!
//! The counts live in `<spool>/client/crashloop.json` (REPORT.md), shared by every process on the
//! spool under an flock, so that they survive the restarts a crash loop is made of.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

const HOUR_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    start_ms: u64,
    stored: u32,
    suppressed: u64,
}

/// The crash-loop limiter of one spool.
#[derive(Debug, Clone)]
pub(crate) struct CrashLoop {
    dir: PathBuf,
    per_hour: u32,
}

/// What to do with a crash.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Store it; this many of its kind were counted and not stored since the last one.
    Store { suppressed_before: u64 },
    /// Count it only.
    Suppress,
}

impl CrashLoop {
    pub fn new(spool: &Path, per_hour: u32) -> Self {
        Self { dir: spool.join("client"), per_hour }
    }

    /// Decides for one crash with `fingerprint` at `now_ms`. When the state cannot be read or
    /// written, the crash is stored: losing a report is worse than a loop.
    pub fn admit(&self, fingerprint: &str, now_ms: u64) -> Admit {
        self.try_admit(fingerprint, now_ms).unwrap_or(Admit::Store { suppressed_before: 0 })
    }

    fn try_admit(&self, fingerprint: &str, now_ms: u64) -> std::io::Result<Admit> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("crashloop.lock"))?;
        flock(&lock, FlockOperation::LockExclusive)?;
        let path = self.dir.join("crashloop.json");
        let mut windows: BTreeMap<String, Window> =
            fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        windows.retain(|_, w| now_ms.saturating_sub(w.start_ms) < HOUR_MS || w.suppressed > 0);
        let w = windows.entry(fingerprint.to_owned()).or_default();
        if now_ms.saturating_sub(w.start_ms) >= HOUR_MS {
            w.start_ms = now_ms;
            w.stored = 0;
        }
        let admit = if w.stored < self.per_hour {
            w.stored += 1;
            Admit::Store { suppressed_before: std::mem::take(&mut w.suppressed) }
        } else {
            w.suppressed += 1;
            Admit::Suppress
        };
        let tmp = self.dir.join(".crashloop.json.tmp");
        let mut f: File =
            OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec(&windows).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(admit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_crash_beyond_the_limit_is_counted_and_the_count_travels_with_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = CrashLoop::new(dir.path(), 2);
        let t = 1_000_000;
        assert_eq!(limiter.admit("a", t), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", t + 1), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", t + 2), Admit::Suppress);
        assert_eq!(limiter.admit("a", t + 3), Admit::Suppress);
        assert_eq!(
            limiter.admit("b", t + 4),
            Admit::Store { suppressed_before: 0 },
            "other crashes unaffected"
        );
        // A new process (a restart) sees the same counts.
        let restarted = CrashLoop::new(dir.path(), 2);
        assert_eq!(restarted.admit("a", t + 5), Admit::Suppress);
        assert_eq!(restarted.admit("a", t + HOUR_MS + 10), Admit::Store { suppressed_before: 3 });
    }
}
