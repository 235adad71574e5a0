//! Crash loops: an app that crashes the same way at every start must not fill the disk or flood the
//! collector. Each fingerprint is stored at most N times per clock hour of the crashes' own time
//! (not the time they are looked at: a backlog uploaded late is counted in the hours it happened);
//! beyond that the crash is counted, and the count travels with the next stored report of that
//! fingerprint.
//!
//! The counts live in `<spool>/client/crashloop.json` (REPORT.md), shared by every process on the
//! spool under an flock, so that they survive the restarts a crash loop is made of. The file is
//! rewritten in place and not fsynced: it is a rate limiter's state, which a power cut may set back
//! by its last few counts (or, torn, reset); the decisions that matter are recorded with the reports
//! themselves. So the panic hook's one durable write is the report's.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

/// The spool counter (`counters/crash_loop_suppressed`) of crashes the limit did not store, since the
/// spool was created: what the uploader's `hello` reports in `losses.crash_loop_suppressed`.
pub(crate) const SUPPRESSED_COUNTER: &str = "crash_loop_suppressed";
/// The spool counter (`counters/event_loop_suppressed`) of events the events' limit did not send.
pub(crate) const EVENTS_SUPPRESSED_COUNTER: &str = "event_loop_suppressed";

const HOUR_MS: u64 = 3_600_000;
/// Hours further back than this from a fingerprint's latest are forgotten.
const KEEP_HOURS: u64 = 48;
/// At most this many fingerprints are remembered (the least recent go first).
const KEEP_FINGERPRINTS: usize = 1024;

/// The state file, version 2.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    fingerprints: BTreeMap<String, Counts>,
}

/// One fingerprint's counts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counts {
    /// Reports stored, by clock hour (hours since the Unix epoch).
    #[serde(default)]
    hours: BTreeMap<u64, Hour>,
    /// Crashes counted and not stored since the last stored one.
    #[serde(default)]
    suppressed: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Hour {
    stored: u32,
    /// The spool entries admitted in this hour, with the suppressed count each one took: asked
    /// again about one of them (its preparation was cut short by a crash), the answer is the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    entries: BTreeMap<String, u64>,
}

/// The state file as lastword 0.1 wrote it: one window per fingerprint, from its first crash.
#[derive(Deserialize)]
struct LegacyWindow {
    start_ms: u64,
    stored: u32,
    suppressed: u64,
}

impl State {
    /// The state in `bytes`, of either version (an untagged enum would not do: serde cannot read the
    /// hours' integer keys through one).
    fn read(bytes: &[u8]) -> Option<Self> {
        if let Ok(state) = serde_json::from_slice::<State>(bytes) {
            return Some(state);
        }
        let windows: BTreeMap<String, LegacyWindow> = serde_json::from_slice(bytes).ok()?;
        let fingerprints = windows
            .into_iter()
            .map(|(fingerprint, w)| {
                let hour = Hour { stored: w.stored, entries: BTreeMap::new() };
                let hours = BTreeMap::from([(w.start_ms / HOUR_MS, hour)]);
                (fingerprint, Counts { hours, suppressed: w.suppressed })
            })
            .collect();
        Some(State { version: 2, fingerprints })
    }
}

/// The crash-loop limiter of one spool.
#[derive(Debug, Clone)]
pub(crate) struct CrashLoop {
    dir: PathBuf,
    per_hour: u32,
    /// The state's file names: `crashloop` for crashes, `eventloop` for events (their own counts,
    /// their own 1024 fingerprints).
    name: &'static str,
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
        Self { dir: spool.join("client"), per_hour, name: "crashloop" }
    }

    /// The limiter of events (`<spool>/client/eventloop.json`, the same format), apart from the
    /// crashes' so that a flood of one never pushes the other's fingerprints out.
    pub fn for_events(spool: &Path, per_hour: u32) -> Self {
        Self { dir: spool.join("client"), per_hour, name: "eventloop" }
    }

    /// Decides for one crash with `fingerprint` that happened at `crash_ms`. `entry` names the spool
    /// entry being decided for, when there is one (a raw report prepared for upload): the same entry
    /// asked about again gets the same `Store` answer. When the state cannot be read or written, the
    /// crash is stored: losing a report is worse than a loop.
    pub fn admit(&self, fingerprint: &str, crash_ms: u64, entry: Option<&str>) -> Admit {
        self.try_admit(fingerprint, crash_ms, entry).unwrap_or(Admit::Store { suppressed_before: 0 })
    }

    /// Creates the state's directory and files if they are missing and reads the state, changing
    /// nothing (so that a first crash does not have to do it first). Failures are left for
    /// [`CrashLoop::admit`] to meet.
    pub fn prepare_files(&self) {
        if let Ok((_, mut file)) = self.open() {
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_ok() {
                drop(std::hint::black_box(State::read(&bytes)));
            }
        }
    }

    /// The lock file (not locked yet) and the state file, created if missing.
    fn open(&self) -> std::io::Result<(fs::File, fs::File)> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(self.dir.join(name))
        };
        Ok((open(&format!("{}.lock", self.name))?, open(&format!("{}.json", self.name))?))
    }

    fn try_admit(&self, fingerprint: &str, crash_ms: u64, entry: Option<&str>) -> std::io::Result<Admit> {
        let (lock, mut file) = self.open()?;
        flock(&lock, FlockOperation::LockExclusive)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut state = State::read(&bytes).unwrap_or_default();
        state.version = 2;
        let hour_of_crash = crash_ms / HOUR_MS;
        let counts = state.fingerprints.entry(fingerprint.to_owned()).or_default();
        if let Some(taken) = entry.and_then(|e| counts.hours.get(&hour_of_crash)?.entries.get(e)) {
            return Ok(Admit::Store { suppressed_before: *taken });
        }
        let hour = counts.hours.entry(hour_of_crash).or_default();
        let admit = if hour.stored < self.per_hour {
            hour.stored += 1;
            let taken = std::mem::take(&mut counts.suppressed);
            if let Some(entry) = entry {
                hour.entries.insert(entry.to_owned(), taken);
            }
            Admit::Store { suppressed_before: taken }
        } else {
            counts.suppressed += 1;
            Admit::Suppress
        };
        prune(&mut state);
        // Written in place, padded with spaces to the old length when it is shorter:
        // a file replaced by a rename would have its data flushed by the next fsync of the file
        // system's journal (ext4's replace-via-rename rule), which is the crash report's own fsync.
        let mut text = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
        text.resize(text.len().max(bytes.len()), b' ');
        file.write_all_at(&text, 0)?;
        Ok(admit)
    }
}

/// Forgets hours more than [`KEEP_HOURS`] before each fingerprint's latest, fingerprints whose
/// latest is that much older than the latest of all (and that have no count to pass on), and the
/// least recent fingerprints beyond [`KEEP_FINGERPRINTS`]. Relative to the crashes' hours, not the
/// clock: a backlog from days ago keeps its counts while it is decided.
fn prune(state: &mut State) {
    let latest_of_all = state.fingerprints.values().filter_map(|c| c.hours.keys().next_back()).max().copied();
    for counts in state.fingerprints.values_mut() {
        if let Some(&latest) = counts.hours.keys().next_back() {
            counts.hours.retain(|&h, _| h + KEEP_HOURS >= latest);
        }
    }
    state.fingerprints.retain(|_, c| {
        c.suppressed > 0
            || c.hours.keys().next_back().is_some_and(|&h| latest_of_all.is_none_or(|l| h + KEEP_HOURS >= l))
    });
    if state.fingerprints.len() > KEEP_FINGERPRINTS {
        let mut by_latest: Vec<(u64, String)> = state
            .fingerprints
            .iter()
            .map(|(f, c)| (c.hours.keys().next_back().copied().unwrap_or(0), f.clone()))
            .collect();
        by_latest.sort();
        for (_, fingerprint) in by_latest.iter().take(state.fingerprints.len() - KEEP_FINGERPRINTS) {
            state.fingerprints.remove(fingerprint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        crate::now_millis()
    }

    #[test]
    fn the_same_crash_beyond_the_limit_is_counted_and_the_count_travels_with_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = CrashLoop::new(dir.path(), 2);
        let t = now() / HOUR_MS * HOUR_MS;
        assert_eq!(limiter.admit("a", t, None), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", t + 1, None), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", t + 2, None), Admit::Suppress);
        assert_eq!(limiter.admit("a", t + 3, None), Admit::Suppress);
        assert_eq!(
            limiter.admit("b", t + 4, None),
            Admit::Store { suppressed_before: 0 },
            "other crashes unaffected"
        );
        // A new process (a restart) sees the same counts.
        let restarted = CrashLoop::new(dir.path(), 2);
        assert_eq!(restarted.admit("a", t + 5, None), Admit::Suppress);
        assert_eq!(restarted.admit("a", t + HOUR_MS + 10, None), Admit::Store { suppressed_before: 3 });
    }

    #[test]
    fn crashes_count_in_their_own_hour_whatever_the_order_they_are_decided_in() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = CrashLoop::new(dir.path(), 1);
        let h = now() / HOUR_MS * HOUR_MS - 5 * HOUR_MS;
        assert_eq!(limiter.admit("a", h + 3 * HOUR_MS, None), Admit::Store { suppressed_before: 0 });
        // An older crash decided later: its hour has room.
        assert_eq!(limiter.admit("a", h + 10, None), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", h + 20, None), Admit::Suppress);
        assert_eq!(limiter.admit("a", h + HOUR_MS, None), Admit::Store { suppressed_before: 1 });
    }

    #[test]
    fn an_entry_asked_about_again_gets_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = CrashLoop::new(dir.path(), 1);
        let t = now();
        assert_eq!(limiter.admit("a", t, None), Admit::Store { suppressed_before: 0 });
        assert_eq!(limiter.admit("a", t, None), Admit::Suppress);
        let h = t / HOUR_MS * HOUR_MS + HOUR_MS;
        assert_eq!(limiter.admit("a", h, Some("E1")), Admit::Store { suppressed_before: 1 });
        assert_eq!(
            limiter.admit("a", h, Some("E1")),
            Admit::Store { suppressed_before: 1 },
            "same entry, same answer"
        );
        assert_eq!(limiter.admit("a", h + 1, Some("E2")), Admit::Suppress, "another entry is another crash");
    }

    #[test]
    fn events_are_counted_apart_from_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let crashes = CrashLoop::new(dir.path(), 1);
        let events = CrashLoop::for_events(dir.path(), 1);
        let t = now();
        assert_eq!(crashes.admit("a", t, None), Admit::Store { suppressed_before: 0 });
        assert_eq!(events.admit("a", t, None), Admit::Store { suppressed_before: 0 }, "its own counts");
        assert_eq!(events.admit("a", t, None), Admit::Suppress);
        assert!(dir.path().join("client/eventloop.json").exists());
    }

    #[test]
    fn the_state_of_lastword_0_1_is_read_on() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("client")).unwrap();
        let t = now();
        let legacy = format!(r#"{{"a":{{"start_ms":{t},"stored":2,"suppressed":5}}}}"#);
        fs::write(dir.path().join("client/crashloop.json"), legacy).unwrap();
        let limiter = CrashLoop::new(dir.path(), 2);
        assert_eq!(limiter.admit("a", t, None), Admit::Suppress, "its window is full");
        let next_hour = t / HOUR_MS * HOUR_MS + HOUR_MS;
        assert_eq!(limiter.admit("a", next_hour, None), Admit::Store { suppressed_before: 6 });
    }

    #[test]
    fn old_hours_and_old_fingerprints_are_forgotten() {
        let mut state = State::default();
        let counts = |hours: &[u64], suppressed| Counts {
            hours: hours.iter().map(|&h| (h, Hour { stored: 1, entries: BTreeMap::new() })).collect(),
            suppressed,
        };
        state.fingerprints.insert("recent".into(), counts(&[900, 1000], 0));
        state.fingerprints.insert("stale".into(), counts(&[10], 0));
        state.fingerprints.insert("stale-with-a-count".into(), counts(&[10], 3));
        prune(&mut state);
        assert_eq!(state.fingerprints["recent"].hours.keys().copied().collect::<Vec<_>>(), [1000]);
        assert!(!state.fingerprints.contains_key("stale"));
        assert!(state.fingerprints.contains_key("stale-with-a-count"), "its count must still travel");
    }
}
