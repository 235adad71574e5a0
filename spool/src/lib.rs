//! # lastword-spool
//!
//! The on-disk spool of lastword: a crash-consistent queue of crash reports, events and log batches,
//! shared by every process that writes to it or drains it. Synchronous; no network, no async runtime.
//!
//! The format and the state machine are specified in `FORMAT.md` beside this crate. In short:
//!
//! - [`Spool::write`] returns only when the entry survives a crash of the process or the machine
//!   (write to a temporary file, fsync, rename into `ready/`, fsync the directory).
//! - [`Spool::claim`] takes the oldest entry of the highest priority by an atomic rename: two
//!   claimers never hold the same entry. The [`Claim`] is a guard: [`Claim::ack`] deletes the entry,
//!   every other way of letting go of it puts it back. Claims of a process that died are taken back
//!   by the next scan, decided by an OS lock (`flock`) and never by a timeout.
//! - [`Spool::reserve_signal_slot`] prepares a [`SignalSlot`] whose [`SignalSlot::commit`] is
//!   async-signal-safe, for fatal-signal handlers.
//! - [`Claim::rewrite`] replaces a claimed entry's body (an uploader's prepared report) crash-safely.
//! - [`Limits`] cap the queue; logs are evicted first, crashes last, and every eviction is counted;
//!   [`Spool::add_to_counter`] keeps other persistent counts beside that one.
//! - [`SpoolView`] answers `ls`, `show` and `stats` without changing anything.
//!
//! ```
//! use lastword_spool::{Kind, Spool, SpoolOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! let spool = Spool::open(dir.path(), SpoolOptions::default())?;
//! let id = spool.write(Kind::Crash, b"{\"message\":\"boom\"}")?;
//! let claim = spool.claim()?.expect("the entry just written");
//! assert_eq!(claim.id(), id);
//! claim.ack()?; // delivered: gone from the spool
//! assert!(spool.claim()?.is_none());
//! # Ok::<(), lastword_spool::SpoolError>(())
//! ```

mod claim;
mod counters;
mod entry;
mod error;
pub mod fsio;
mod id;
mod kind;
mod layout;
mod quarantine;
mod query;
mod reaper;
mod session;
mod signal;
mod spool;

pub use claim::Claim;
pub use entry::{
    CorruptReason, EntryName, FLAG_JSON, FLAG_RAW_SIGNAL, FLAG_UNSYMBOLIZED, FORMAT_VERSION, HEADER_LEN,
    Header, decode,
};
pub use error::{Result, SpoolError};
pub use id::{EntryId, ParseIdError};
pub use kind::{Kind, ParseKindError};
pub use layout::VERSION_TEXT;
pub use query::{Count, EntryData, EntryState, Listed, SpoolView, Stats};
pub use session::{Recovered, Skipped};
pub use signal::{SignalSlot, SlotError};
pub use spool::{Deletes, Limits, Purge, Purged, Spool, SpoolOptions};
