//! Moving damaged entries and foreign files aside, with the reason, never deleting them.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::id::now_millis;
use crate::layout::Layout;

/// Suffix of the file that holds a quarantined file's reason.
pub const REASON_SUFFIX: &str = ".reason";

/// Moves `src` (named `file_name`) into `quarantine/`, next to a `.reason` file that says why.
///
/// If `src` is gone by the time it is moved (another process dealt with it), nothing is left behind
/// and this returns `Ok(false)`.
pub(crate) fn quarantine(layout: &Layout, src: &Path, file_name: &OsStr, reason: &str) -> Result<bool> {
    let (dest, reason_path) = free_name(layout, file_name)?;
    let text = format!("{reason}\nquarantined at {} ms by pid {}\n", now_millis(), std::process::id());
    let write_reason = || -> io::Result<()> {
        let mut f = fsio::create_new(&reason_path)?;
        f.write_all(text.as_bytes())?;
        fsio::sync(&f)
    };
    if let Err(e) = write_reason() {
        let _ = std::fs::remove_file(&reason_path);
        return Err(SpoolError::io("write quarantine reason", &reason_path, e));
    }
    match fsio::rename(src, &dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(&reason_path);
            return Ok(false);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&reason_path);
            return Err(SpoolError::io("move to quarantine", src, e));
        }
    }
    // The file has moved. If the directory fsync fails, a machine crash may undo the move; the
    // entry then reappears where it was and is checked (and quarantined) again: nothing is lost, so
    // the failure is not reported as a failed quarantine.
    if let Ok(dir) = fsio::open_dir(&layout.quarantine) {
        let _ = fsio::sync_dir(&dir);
    }
    Ok(true)
}

/// A name in quarantine that neither a file nor a reason uses yet.
fn free_name(layout: &Layout, file_name: &OsStr) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    for n in 0..10_000u32 {
        let mut name = file_name.to_owned();
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let dest = layout.quarantine.join(&name);
        let reason = layout.quarantine.join(reason_name(&name));
        if !dest.exists() && !reason.exists() {
            return Ok((dest, reason));
        }
    }
    Err(SpoolError::io(
        "find a free name in quarantine for",
        layout.quarantine.join(file_name),
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

fn reason_name(name: &OsStr) -> OsString {
    let mut r = name.to_owned();
    r.push(REASON_SUFFIX);
    r
}

/// The reason file of the quarantined file at `path`.
pub(crate) fn reason_path(layout: &Layout, path: &Path) -> std::path::PathBuf {
    layout.quarantine.join(reason_name(path.file_name().unwrap_or_default()))
}

/// The reason recorded for a quarantined file, if it has one.
pub(crate) fn read_reason(layout: &Layout, name: &OsStr) -> Option<String> {
    std::fs::read_to_string(layout.quarantine.join(reason_name(name))).ok()
}

/// Whether `name` in quarantine is the reason file of another quarantined file.
pub(crate) fn is_reason_file(layout: &Layout, name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.ends_with(REASON_SUFFIX.as_bytes()) && {
        let stem = &bytes[..bytes.len() - REASON_SUFFIX.len()];
        // Names that are not UTF-8 are looked up by their lossy spelling: at worst such a name's
        // reason file is listed as a file of its own, nothing is lost.
        let stem = String::from_utf8_lossy(stem);
        layout.quarantine.join(stem.as_ref()).exists()
    }
}
