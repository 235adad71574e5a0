//! Persistent counters shared by every process on a spool (FORMAT.md: `counters/`).
//!
//! Each counter is one file, `counters/<name>`, holding a decimal count and `"\n"`. The spool keeps
//! `evicted`; the layers above keep their own under names of their choosing (the client library's
//! `crash_loop_suppressed`). Every update is made under `counters/lock` and is durable.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::{FlockOperation, flock};

use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::layout::Layout;

/// The spool's own counter of entries evicted by the limits.
pub(crate) const EVICTED: &str = "evicted";

/// Whether `name` can name a counter: 1 to 64 of `a-z`, `0-9` and `_`, and not `lock`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name != "lock"
}

fn check_name(layout: &Layout, name: &str) -> Result<()> {
    if valid_name(name) {
        return Ok(());
    }
    Err(SpoolError::io(
        "name counter",
        layout.counters.join(name),
        io::Error::new(io::ErrorKind::InvalidInput, "a counter's name is 1 to 64 of a-z, 0-9 and _"),
    ))
}

/// The value of the counter `name` (0 if it was never counted).
pub(crate) fn read(layout: &Layout, name: &str) -> Result<u64> {
    check_name(layout, name)?;
    let path = layout.counters.join(name);
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

/// Adds `n` to the counter `name`, durably, under the counters lock; returns the new total.
pub(crate) fn add(layout: &Layout, name: &str, n: u64) -> Result<u64> {
    check_name(layout, name)?;
    let lock_path = layout.counters.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(fsio::FILE_MODE)
        .open(&lock_path)
        .map_err(|e| SpoolError::io("open", &lock_path, e))?;
    flock(&lock, FlockOperation::LockExclusive).map_err(|e| SpoolError::io("lock", &lock_path, e.into()))?;
    let path = layout.counters.join(name);
    // A damaged counter is kept aside (never silently reset) and counting starts again from zero.
    let total = match read(layout, name) {
        Ok(count) => count,
        Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidData => {
            let aside = layout.counters.join(format!("{name}.damaged-{}", crate::id::now_millis()));
            fsio::rename(&path, &aside).map_err(|e| SpoolError::io("move aside", &path, e))?;
            0
        }
        Err(e) => return Err(e),
    }
    .saturating_add(n);
    let tmp = layout.counters.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = fsio::create_new(&tmp)?;
        f.write_all(format!("{total}\n").as_bytes())?;
        fsio::sync(&f)?;
        fsio::rename(&tmp, &path)?;
        fsio::sync_dir(&fsio::open_dir(&layout.counters)?)
    };
    write().map_err(|e| SpoolError::io("write counter", &path, e))?;
    Ok(total)
}

/// How many entries the limits have evicted from this spool, ever.
pub(crate) fn evicted(layout: &Layout) -> Result<u64> {
    read(layout, EVICTED)
}

/// Adds `n` to the evicted counter.
pub(crate) fn add_evicted(layout: &Layout, n: u64) -> Result<()> {
    add(layout, EVICTED, n).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn counter_names_are_plain_words_and_never_the_lock() {
        for good in ["evicted", "crash_loop_suppressed", "a1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "lock", ".hidden", "a/b", "Evicted", "x.tmp", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
