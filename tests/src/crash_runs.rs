//! Running the crash app (`lastword-crash-app`) as a child process, and reading the crash reports it
//! left in its spool as the uploader would send them: JSON reports as they are, raw signal reports
//! parsed and symbolized.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus};

use lastword::report::CrashReport;
use lastword::spool::{EntryId, FLAG_RAW_SIGNAL, Kind, SpoolView};
use lastword::symbolize::{RawReport, parse_raw, symbolize};

/// One crash entry of a spool.
pub struct StoredCrash {
    /// The entry's id.
    pub id: EntryId,
    /// The raw signal report, when the entry is one.
    pub raw: Option<RawReport>,
    /// The crash report: the JSON one, or the raw report symbolized.
    pub report: CrashReport,
}

/// Every crash entry in the spool at `dir` (none when there is no spool there). Panics on an entry
/// that does not read: these are tests.
pub fn crash_reports(dir: &Path) -> Vec<StoredCrash> {
    let Ok(view) = SpoolView::open(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for item in view.list().expect("list the spool") {
        let Some(id) = item.id.filter(|_| item.kind == Some(Kind::Crash)) else { continue };
        let entry = view.read(id).expect("read a crash entry");
        if entry.header.flags & FLAG_RAW_SIGNAL != 0 {
            let raw = parse_raw(&entry.body).expect("a raw signal report that parses");
            out.push(StoredCrash { id, report: symbolize(&raw), raw: Some(raw) });
        } else {
            // A panic's raw capture is symbolized as the uploader prepares it.
            let report =
                lastword::symbolize::readable(entry.header.flags, &entry.body).expect("a JSON crash report");
            out.push(StoredCrash { id, raw: None, report });
        }
    }
    out
}

/// The crash app at `app` (the test's `CARGO_BIN_EXE_lastword-crash-app`) for one `case`, on the spool
/// at `spool`, with no collector; `lastword: false` runs the same case without lastword.
pub fn command(app: &str, case: &str, spool: &Path, lastword: bool) -> Command {
    let mut c = Command::new(app);
    c.arg(case).env("LASTWORD_SPOOL", spool).env_remove("LASTWORD_URL");
    if !lastword {
        c.env("LASTWORD_OFF", "1");
    }
    c
}

/// How a process ended, for comparing a run with lastword and one without.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".into(),
    }
}
