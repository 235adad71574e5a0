//! The claim guard: an entry taken from `ready/` that goes back unless it is acknowledged.

use std::fmt;
use std::sync::Arc;

use crate::entry::{EntryName, Header};
use crate::error::Result;
use crate::id::EntryId;
use crate::kind::Kind;
use crate::spool::{Inner, Settle};

/// An entry claimed by this session. Exactly one claimer holds an entry at a time.
///
/// Settle it with [`Claim::ack`] once the collector has acknowledged it. Every other path gives the
/// entry back to `ready/`: [`Claim::release`], an error that drops the guard, a panic that unwinds
/// through it, a cancelled task that owned it. If the process dies, the next session that scans the
/// spool gives it back.
#[must_use = "dropping a claim puts the entry back; call ack() once it is delivered"]
pub struct Claim {
    inner: Arc<Inner>,
    name: EntryName,
    header: Header,
    body: Vec<u8>,
    settled: bool,
}

impl Claim {
    pub(crate) fn new(inner: Arc<Inner>, name: EntryName, header: Header, body: Vec<u8>) -> Self {
        Self { inner, name, header, body, settled: false }
    }

    /// The entry's id.
    pub fn id(&self) -> EntryId {
        self.name.id()
    }

    /// The entry's kind.
    pub fn kind(&self) -> Kind {
        self.name.kind()
    }

    /// The entry's header flags.
    pub fn flags(&self) -> u16 {
        self.header.flags
    }

    /// When the entry was written (milliseconds since the Unix epoch).
    pub fn created_millis(&self) -> u64 {
        self.header.created_millis
    }

    /// The entry's file name.
    pub fn name(&self) -> EntryName {
        self.name
    }

    /// The entry's body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The entry was delivered: delete it. If deleting fails the entry goes back to `ready/` (and
    /// is delivered again, which the collector answers as a duplicate).
    pub fn ack(mut self) -> Result<()> {
        let result = self.inner.settle(&self.name, Settle::Ack);
        self.settled = result.is_ok();
        result
    }

    /// Gives the entry back to `ready/` now.
    pub fn release(mut self) -> Result<()> {
        self.settled = true;
        self.inner.settle(&self.name, Settle::Release)
    }

    /// Moves the entry to quarantine with `reason` (for example: the collector rejected it for good).
    /// If that fails, the entry goes back to `ready/`.
    pub fn quarantine(mut self, reason: &str) -> Result<()> {
        let result = self.inner.settle(&self.name, Settle::Quarantine(reason));
        self.settled = result.is_ok();
        result
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled && !self.inner.abandoned() {
            // An error here leaves the entry in this session's claimed/ directory, from which the
            // session's close (or, if the process dies, the next recovery) puts it back.
            let _ = self.inner.settle(&self.name, Settle::Release);
        }
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim").field("name", &self.name).field("settled", &self.settled).finish()
    }
}
