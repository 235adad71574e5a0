//! The claim guard: an entry taken from `ready/` that goes back unless it is acknowledged.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::entry::{EntryName, HEADER_LEN, Header};
use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::id::EntryId;
use crate::kind::Kind;
use crate::spool::{Inner, Settle, Spool};

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

    /// Takes the body out of the claim, which holds an empty one from then on: for an uploader that
    /// made its message of the body and needs it no more while it waits for the answer. Settling the
    /// claim does not need it.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// The spool this claim was taken from (the same session).
    pub fn spool(&self) -> Spool {
        Spool { inner: self.inner.clone() }
    }

    /// Replaces the entry's flags and body, durably, keeping its id, kind and creation time: what an
    /// uploader does once it has prepared an entry (a raw report made into the JSON it sends), so that
    /// the preparation and the decisions taken in it are made once, not on every send. The claim is
    /// held throughout and [`Claim::body`] is the new body afterwards.
    ///
    /// The new entry is written and fsynced in this session's `writing/` directory first, then takes
    /// the old one's place in `claimed/` (FORMAT.md, "Rewrite"); a crash at any point leaves the old
    /// entry or the new one, never both and never neither. On an error before the old file is
    /// removed, nothing changed. The spool's limits are not applied to the new size.
    pub fn rewrite(&mut self, flags: u16, body: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let old = self.name;
        let size = (HEADER_LEN + body.len()) as u64;
        let new = EntryName::new(old.kind(), old.id(), size);
        let header = Header { flags, body_len: body.len() as u64, ..self.header };
        let writing = inner.layout.writing.join(&inner.sid);
        let claimed = inner.layout.claimed.join(&inner.sid);
        let tmp = writing.join(new.to_string());
        let written = (|| -> io::Result<()> {
            let mut file = fsio::create_new(&tmp)?;
            fsio::write_all(&mut file, &header.encode(&[body]))?;
            fsio::write_all(&mut file, body)?;
            fsio::sync(&file)?;
            // The new entry's name must be durable before the old one goes.
            fsio::sync_dir(&fsio::open_dir(&writing)?)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpoolError::io("rewrite", &tmp, e));
        }
        if new != old {
            let old_path = claimed.join(old.to_string());
            if let Err(e) = fsio::unlink(&old_path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(SpoolError::io("rewrite: remove the old entry", &old_path, e));
            }
            // Not retried, and not needed for correctness: if the removal is undone by a machine
            // crash, recovery finds both and keeps the rewritten one (FORMAT.md).
            if let Ok(dir) = fsio::open_dir(&claimed) {
                let _ = fsio::sync_dir(&dir);
            }
        }
        // From here the entry is the new one, in writing/ until this rename; if the rename fails,
        // this session's close (or the recovery after its death) puts it into ready/.
        self.name = new;
        self.header = header;
        self.body = body.to_vec();
        inner.rewritten(old, new);
        fsio::rename(&tmp, &claimed.join(new.to_string()))
            .map_err(|e| SpoolError::io("rewrite: move into claimed", &tmp, e))
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

#[cfg(test)]
mod tests {
    use crate::{Kind, Spool, SpoolOptions};

    /// Taking the body changes the claim in memory only: a released entry comes back whole, and an
    /// acked one is gone.
    #[test]
    fn a_claim_whose_body_was_taken_still_releases_the_whole_entry_and_acks_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        let id = spool.write(Kind::Log, br#"{"message":"kept"}"#).unwrap();
        let mut claim = spool.claim().unwrap().unwrap();
        assert_eq!(claim.take_body(), br#"{"message":"kept"}"#);
        assert!(claim.body().is_empty());
        claim.release().unwrap();
        let mut again = spool.claim().unwrap().unwrap();
        assert_eq!((again.id(), again.body()), (id, &br#"{"message":"kept"}"#[..]));
        drop(again.take_body());
        again.ack().unwrap();
        assert!(spool.claim().unwrap().is_none());
        assert_eq!(spool.ready_count(), 0);
    }
}
