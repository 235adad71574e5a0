//! Persistent counters shared by every process on a spool (FORMAT.md: `counters/`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::{FlockOperation, flock};

use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::layout::Layout;

const EVICTED: &str = "evicted";

/// How many entries the limits have evicted from this spool, ever.
pub(crate) fn evicted(layout: &Layout) -> Result<u64> {
    let path = layout.counters.join(EVICTED);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            SpoolError::io(
                "parse counter",
                &path,
                std::io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a number: {:?}", text.chars().take(40).collect::<String>()),
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(SpoolError::io("read", &path, e)),
    }
}

/// Adds `n` to the evicted counter, durably, under the counters lock.
pub(crate) fn add_evicted(layout: &Layout, n: u64) -> Result<()> {
    let lock_path = layout.counters.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(fsio::FILE_MODE)
        .open(&lock_path)
        .map_err(|e| SpoolError::io("open", &lock_path, e))?;
    flock(&lock, FlockOperation::LockExclusive).map_err(|e| SpoolError::io("lock", &lock_path, e.into()))?;
    let path = layout.counters.join(EVICTED);
    // A damaged counter is kept aside (never silently reset) and counting starts again from zero.
    let total = match evicted(layout) {
        Ok(count) => count,
        Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidData => {
            let aside = layout.counters.join(format!("evicted.damaged-{}", crate::id::now_millis()));
            fsio::rename(&path, &aside).map_err(|e| SpoolError::io("move aside", &path, e))?;
            0
        }
        Err(e) => return Err(e),
    }
    .saturating_add(n);
    let tmp = layout.counters.join(".evicted.tmp");
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = fsio::create_new(&tmp)?;
        f.write_all(format!("{total}\n").as_bytes())?;
        fsio::sync(&f)?;
        fsio::rename(&tmp, &path)?;
        fsio::sync_dir(&fsio::open_dir(&layout.counters)?)
    };
    write().map_err(|e| SpoolError::io("write counter", &path, e))
}
