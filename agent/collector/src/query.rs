//! `lastword store ...`: what people ask of a collector's store. Readable tables by default, JSON with
//! `--json` (one array, or one object for `show`).

use std::io::Write;

use lastword_spool::{EntryId, Kind};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::crash_view::CrashView;
use crate::store::location::StoreLocation;
use crate::store::{GroupFilter, ReportFilter, Store, StoreError};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No report has that id.
    #[error("no report {id} in the store")]
    NoSuchReport {
        /// The id asked for.
        id: EntryId,
    },
    /// The output could not be written. (The cause is in the message of this and the next, so it
    /// is not also their `source()`: a chain printed whole says it once.)
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// The output could not be encoded.
    #[error("cannot encode the output: {0}")]
    Json(serde_json::Error),
}

impl From<std::io::Error> for QueryError {
    fn from(error: std::io::Error) -> Self {
        QueryError::Output(error)
    }
}

impl From<serde_json::Error> for QueryError {
    fn from(error: serde_json::Error) -> Self {
        QueryError::Json(error)
    }
}

/// A question people ask of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Reports, the most recently received first.
    Reports(ReportFilter),
    /// Groups with their kind and counts, the most recently seen first.
    Groups(GroupFilter),
    /// One report: a crash as a readable report, another kind with its body; as JSON, the stored row
    /// and the raw body.
    Show {
        /// The report id.
        id: EntryId,
        /// Every frame of a crash, not only the application's.
        all: bool,
    },
    /// What each agent (app and host) last said it could not deliver.
    Losses,
}

/// How an answer is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Readable tables.
    Table,
    /// JSON: one array, or one object for [`Query::Show`].
    Json,
}

/// Runs `query` on the store at `location` (opened read-only) and prints its answer on `out`.
pub async fn run(
    location: &StoreLocation,
    query: Query,
    format: Format,
    out: &mut impl Write,
) -> Result<(), QueryError> {
    let store = location.open_read_only().await?;
    let json = format == Format::Json;
    match query {
        Query::Reports(filter) => {
            let rows = store.reports(filter).await?;
            if json {
                return json_line(out, &rows);
            }
            let mut table = Table::new(["RECEIVED (UTC)", "KIND", "APP", "RELEASE", "HOST", "ID", "SUMMARY"]);
            for r in &rows {
                table.row([
                    utc(r.received_ms),
                    r.kind.to_string(),
                    r.app.clone(),
                    r.release.clone().unwrap_or_default(),
                    r.host.clone().unwrap_or_default(),
                    r.id.to_string(),
                    r.summary.clone(),
                ]);
            }
            table.print(out, "no reports")
        }
        Query::Groups(filter) => {
            let groups = store.groups_of(filter).await?;
            if json {
                return json_line(out, &groups);
            }
            let mut table = Table::new([
                "KIND",
                "COUNT",
                "LAST SEEN (UTC)",
                "FIRST SEEN (UTC)",
                "APP",
                "FINGERPRINT",
                "TITLE",
            ]);
            for kg in &groups {
                let g = &kg.group;
                table.row([
                    kg.kind.to_string(),
                    g.count.to_string(),
                    utc(g.last_seen_ms),
                    utc(g.first_seen_ms),
                    g.app.clone(),
                    g.fingerprint.clone(),
                    g.title.clone(),
                ]);
            }
            table.print(out, "no groups")
        }
        Query::Show { id, all } => {
            let report = store.report(id).await?.ok_or(QueryError::NoSuchReport { id })?;
            let body = RawValue::from_string(report.body.clone())?;
            if json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    row: &'a crate::store::ReportRow,
                    body: &'a RawValue,
                }
                return json_line(out, &Shown { row: &report.row, body: &body });
            }
            let r = &report.row;
            let fields = [
                ("id", r.id.to_string()),
                ("kind", r.kind.to_string()),
                ("app", r.app.clone()),
                ("release", r.release.clone().unwrap_or_default()),
                ("host", r.host.clone().unwrap_or_default()),
                ("created", format!("{} UTC ({} ms)", utc(r.created_ms), r.created_ms)),
                ("received", format!("{} UTC ({} ms)", utc(r.received_ms), r.received_ms)),
                ("fingerprint", r.fingerprint.clone().unwrap_or_default()),
                ("summary", r.summary.clone()),
            ];
            for (name, value) in fields {
                writeln!(out, "{:<12} {value}", format!("{name}:"))?;
            }
            let value: serde_json::Value = serde_json::from_str(body.get())?;
            let crash = (r.kind == Kind::Crash).then(|| CrashView::from_json(&value)).flatten();
            match crash {
                Some(view) => write!(out, "\n{}", view.to_text(all))?,
                None => writeln!(out, "body:\n{}", serde_json::to_string_pretty(&value)?)?,
            }
            Ok(())
        }
        Query::Losses => {
            let rows = store.losses().await?;
            if json {
                return json_line(out, &rows);
            }
            let mut table = Table::new([
                "APP",
                "HOST",
                "RELEASE",
                "AGENT",
                "LOGS DROPPED",
                "EVENTS DROPPED",
                "EVICTED",
                "QUARANTINED",
                "CRASH LOOPS",
                "REPORTED (UTC)",
            ]);
            for l in &rows {
                table.row([
                    l.app.clone(),
                    l.host.clone(),
                    l.release.clone().unwrap_or_default(),
                    format!("{} {}", l.agent.name, l.agent.version),
                    l.losses.logs_dropped.to_string(),
                    l.losses.events_dropped.to_string(),
                    l.losses.evicted.to_string(),
                    l.losses.quarantined.to_string(),
                    l.losses.crash_loop_suppressed.to_string(),
                    utc(l.reported_ms),
                ]);
            }
            table.print(out, "no agent has connected yet")
        }
    }
}

fn json_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), QueryError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table with left-aligned columns as wide as their widest cell.
struct Table<const N: usize> {
    header: [&'static str; N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    fn new(header: [&'static str; N]) -> Self {
        Self { header, rows: Vec::new() }
    }

    fn row(&mut self, cells: [String; N]) {
        // Keep one row one line whatever the data holds.
        self.rows.push(cells.map(|c| c.replace(['\n', '\r', '\t'], " ")));
    }

    fn print(&self, out: &mut impl Write, empty: &str) -> Result<(), QueryError> {
        if self.rows.is_empty() {
            writeln!(out, "({empty})")?;
            return Ok(());
        }
        let mut widths = self.header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
            let text: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            writeln!(out, "{}", text.join("  ").trim_end())
        };
        line(out, &mut self.header.iter().copied())?;
        for row in &self.rows {
            line(out, &mut row.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC of milliseconds since the Unix epoch (the latest instant a date can
/// show for one beyond year 9999).
pub fn utc(ms: u64) -> String {
    let ts = i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    ts.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` or the same with a space,
/// read as UTC (what an HTML `datetime-local` input sends); `None` for anything else or before 1970.
pub fn parse_utc(s: &str) -> Option<u64> {
    let s = s.trim();
    let civil: jiff::civil::DateTime = match s.parse() {
        Ok(dt) => dt,
        Err(_) => s.parse::<jiff::civil::Date>().ok()?.to_datetime(jiff::civil::Time::midnight()),
    };
    let ts = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(ts.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_764_165_000_123), "2025-11-26 13:50:00");
        // Beyond what a date can show: the latest instant one can (jiff's `Timestamp::MAX`).
        assert_eq!(utc(u64::MAX), "9999-12-30 22:00:00");
    }

    #[test]
    fn parse_utc_reads_what_datetime_local_inputs_send() {
        assert_eq!(parse_utc("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_utc("2025-11-26T13:50"), Some(1_764_165_000_000));
        assert_eq!(parse_utc("2000-02-29 00:00:01"), Some(951_782_401_000));
        assert_eq!(parse_utc("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_utc("2000-13-01T00:00"), None);
        assert_eq!(parse_utc("1969-12-31T23:59"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc(&utc(1_764_165_000_000)), Some(1_764_165_000_000));
    }

    #[test]
    fn table_columns_line_up() {
        let mut t = Table::new(["A", "BB"]);
        t.row(["xyz".into(), "1".into()]);
        t.row(["q".into(), "two\nlines".into()]);
        let mut out = Vec::new();
        t.print(&mut out, "none").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB\nxyz  1\nq    two lines\n");
    }
}
