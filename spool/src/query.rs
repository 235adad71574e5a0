//! Read-only queries on a spool: list, stats, read one entry. They take no session, change nothing
//! and run no recovery, so they are safe to point at a spool that others are using.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::counters;
use crate::entry::{self, EntryName, Header};
use crate::error::{Result, SpoolError};
use crate::id::{EntryId, now_millis};
use crate::kind::Kind;
use crate::layout::{Layout, names_in};
use crate::quarantine::{is_reason_file, read_reason};

/// Where an entry is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Being written by a session (a temporary file, or a dead writer's leftover).
    Writing,
    /// Committed and waiting to be claimed.
    Ready,
    /// Claimed by a session.
    Claimed,
    /// Moved aside with a reason.
    Quarantined,
}

impl EntryState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Writing => "writing",
            EntryState::Ready => "ready",
            EntryState::Claimed => "claimed",
            EntryState::Quarantined => "quarantined",
        }
    }
}

impl std::str::FromStr for EntryState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        [EntryState::Writing, EntryState::Ready, EntryState::Claimed, EntryState::Quarantined]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?} (expected writing, ready, claimed or quarantined)"))
    }
}

/// One file in the spool, as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The file's name.
    pub file_name: String,
    /// Its state.
    pub state: EntryState,
    /// Its parsed name, when it is an entry name (a quarantined foreign file has none).
    pub id: Option<EntryId>,
    /// Its kind, when known from the name.
    pub kind: Option<Kind>,
    /// Size in bytes.
    pub size: u64,
    /// Milliseconds since the Unix epoch when the entry was made (from its id), when known. Serialized
    /// as `created_ms`, the wire protocol's name, as every `--json` of the `lastword` binary says it.
    #[serde(rename = "created_ms")]
    pub created_millis: Option<u64>,
    /// The session that holds it (claimed or writing).
    pub session: Option<String>,
    /// Why it is quarantined.
    pub reason: Option<String>,
    #[serde(skip)]
    path: PathBuf,
}

impl Listed {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Entries and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    /// Number of entries.
    pub entries: u64,
    /// Total bytes.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }
}

/// Counts of a spool, per state and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Per state, per kind (`"other"` for files whose kind is unknown).
    pub by_state: BTreeMap<EntryState, BTreeMap<String, Count>>,
    /// Totals per state.
    pub totals: BTreeMap<EntryState, Count>,
    /// Age in milliseconds of the oldest ready entry (serialized as `oldest_ready_age_ms`, with the
    /// `_ms` of every other millisecond field of the binary's `--json`).
    #[serde(rename = "oldest_ready_age_ms")]
    pub oldest_ready_age_millis: Option<u64>,
    /// Entries evicted by the limits, ever.
    pub evicted: u64,
    /// Sessions with a lock file (live, or dead and not yet recovered).
    pub sessions: u64,
}

/// A read-only view of a spool.
#[derive(Clone, Debug)]
pub struct SpoolView {
    layout: Layout,
}

/// One entry read back with its header.
#[derive(Clone, Debug)]
pub struct EntryData {
    /// Where it was found.
    pub listed: Listed,
    /// Its header.
    pub header: Header,
    /// Its body.
    pub body: Vec<u8>,
}

impl SpoolView {
    /// Opens an existing spool for queries. It is never created: a missing spool is
    /// [`SpoolError::NotFound`], an empty directory [`SpoolError::EmptyDirectory`]; an unknown
    /// format is [`SpoolError::Version`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self { layout: Layout::open(path.as_ref(), false)?.0 })
    }

    pub(crate) fn from_layout(layout: Layout) -> Self {
        Self { layout }
    }

    /// The spool's root directory.
    pub fn path(&self) -> &Path {
        &self.layout.root
    }

    /// Every file in every state, ready entries in claim order first.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let l = &self.layout;
        let mut out = Vec::new();
        let mut ready: Vec<Listed> = Vec::new();
        for name in names_in(&l.ready)? {
            ready.push(listed(&l.ready, &name, EntryState::Ready, None));
        }
        ready.sort_by_cached_key(claim_order);
        out.extend(ready);
        for (dir, state) in [(&l.claimed, EntryState::Claimed), (&l.writing, EntryState::Writing)] {
            for sid in names_in(dir)? {
                let sub = dir.join(&sid);
                if !sub.is_dir() {
                    continue;
                }
                let sid = sid.to_string_lossy().into_owned();
                for name in names_in(&sub)? {
                    out.push(listed(&sub, &name, state, Some(sid.clone())));
                }
            }
        }
        for name in names_in(&l.quarantine)? {
            if is_reason_file(l, &name) {
                continue;
            }
            let mut item = listed(&l.quarantine, &name, EntryState::Quarantined, None);
            item.reason = read_reason(l, &name).map(|r| r.lines().next().unwrap_or_default().to_owned());
            out.push(item);
        }
        Ok(out)
    }

    /// Counts per state and kind, the oldest ready entry's age and the evicted counter.
    pub fn stats(&self) -> Result<Stats> {
        let mut stats = Stats { evicted: counters::evicted(&self.layout)?, ..Stats::default() };
        let now = now_millis();
        for item in self.list()? {
            let kind = item.kind.map_or("other", Kind::as_str).to_owned();
            stats.by_state.entry(item.state).or_default().entry(kind).or_default().add(item.size);
            stats.totals.entry(item.state).or_default().add(item.size);
            if item.state == EntryState::Ready
                && let Some(created) = item.created_millis
            {
                let age = now.saturating_sub(created);
                stats.oldest_ready_age_millis =
                    Some(stats.oldest_ready_age_millis.map_or(age, |a| a.max(age)));
            }
        }
        stats.sessions = names_in(&self.layout.sessions)?
            .iter()
            .filter(|n| n.to_string_lossy().ends_with(".lock"))
            .count() as u64;
        Ok(stats)
    }

    /// Entries evicted by the limits, ever (the persistent counter).
    pub fn evicted(&self) -> Result<u64> {
        counters::evicted(&self.layout)
    }

    /// The persistent counter `name` (see [`crate::Spool::add_to_counter`]); 0 if never counted.
    pub fn counter(&self, name: &str) -> Result<u64> {
        counters::read(&self.layout, name)
    }

    /// How many files are in quarantine (reason files not counted).
    pub fn quarantined_count(&self) -> Result<u64> {
        let names = names_in(&self.layout.quarantine)?;
        Ok(names.iter().filter(|n| !is_reason_file(&self.layout, n)).count() as u64)
    }

    /// Reads the entry with this id, wherever it is, and checks it.
    pub fn read(&self, id: EntryId) -> Result<EntryData> {
        let listed = self
            .list()?
            .into_iter()
            .find(|item| item.id == Some(id))
            .ok_or(SpoolError::NoSuchEntry { id })?;
        let bytes = crate::fsio::read(&listed.path).map_err(|e| SpoolError::io("read", &listed.path, e))?;
        let name = listed.file_name.parse_entry_name();
        let (header, body) = entry::decode(&bytes, name.as_ref())
            .map_err(|reason| SpoolError::Corrupt { path: listed.path.clone(), reason })?;
        let body = body.to_vec();
        Ok(EntryData { listed, header, body })
    }
}

trait ParseEntryName {
    fn parse_entry_name(&self) -> Option<EntryName>;
}

impl ParseEntryName for String {
    fn parse_entry_name(&self) -> Option<EntryName> {
        // Quarantined copies may carry a ".N" suffix; the name proper is before it.
        EntryName::parse(self).or_else(|| self.rsplit_once('.').and_then(|(stem, _)| EntryName::parse(stem)))
    }
}

fn claim_order(item: &Listed) -> (u8, Option<EntryId>, String) {
    (item.kind.map_or(9, Kind::priority), item.id, item.file_name.clone())
}

fn listed(dir: &Path, name: &std::ffi::OsStr, state: EntryState, session: Option<String>) -> Listed {
    let file_name = name.to_string_lossy().into_owned();
    let path = dir.join(name);
    let parsed = file_name.parse_entry_name();
    let size = match parsed {
        Some(n) if state != EntryState::Writing => n.size(),
        _ => fs::symlink_metadata(&path).map_or(0, |m| m.len()),
    };
    Listed {
        id: parsed.map(|n| n.id()),
        kind: parsed.map(|n| n.kind()),
        created_millis: parsed.map(|n| n.id().millis()),
        file_name,
        state,
        size,
        session,
        reason: None,
        path,
    }
}
