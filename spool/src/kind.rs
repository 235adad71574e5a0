//! What an entry is: a crash report, an event or a log batch, and the priority that follows from it.

use std::fmt;
use std::str::FromStr;

/// The kind of a spool entry. The kind fixes the priority: crashes are delivered first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A crash report (panic or fatal signal). Priority 0, the most important.
    Crash,
    /// A single event worth reporting that is not a crash. Priority 1.
    Event,
    /// A batch of log records. Priority 2, the first to be evicted when the spool is full.
    Log,
}

impl Kind {
    /// Every kind, most important first.
    pub const ALL: [Kind; 3] = [Kind::Crash, Kind::Event, Kind::Log];

    /// The priority: lower is delivered first and evicted last.
    pub const fn priority(self) -> u8 {
        match self {
            Kind::Crash => 0,
            Kind::Event => 1,
            Kind::Log => 2,
        }
    }

    /// The kind's code in the entry header.
    pub const fn code(self) -> u8 {
        self.priority()
    }

    /// The kind of a header code.
    pub const fn from_code(code: u8) -> Option<Kind> {
        match code {
            0 => Some(Kind::Crash),
            1 => Some(Kind::Event),
            2 => Some(Kind::Log),
            _ => None,
        }
    }

    /// The name used in file names and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Crash => "crash",
            Kind::Event => "event",
            Kind::Log => "log",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a kind's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?} (expected crash, event or log)")]
pub struct ParseKindError(pub String);

impl FromStr for Kind {
    type Err = ParseKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| ParseKindError(s.to_owned()))
    }
}
