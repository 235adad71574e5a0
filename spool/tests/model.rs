//! Model-based property test of the spool's state machine: random sequences of write, claim, ack,
//! release, drop of a claim, quarantine, rewrite of a claim (also one that fails at a step), reopen
//! and crash, checked after every step against a small in-memory model (a ready set ordered by
//! priority then id, a claimed set, a quarantined set, the bodies, and the acked entries).
//!
//! Acks are deleted in the background and held until their session closes
//! ([`Spool::hold_deletes`]): the acked files (FORMAT.md, "Ack") are on disk at every step and at
//! every simulated crash, and the model checks that no acked entry is ever seen, claimed or put
//! back again, and that the recovery of a dead session deletes exactly what it had acked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use lastword_spool::fsio::{Op as Disk, faults};
use lastword_spool::{Claim, Deletes, EntryId, EntryName, EntryState, Kind, Spool, SpoolOptions};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    Write {
        kind: Kind,
        size: usize,
    },
    Claim,
    /// The operations on a held claim pick it by index (modulo the number held).
    Ack(usize),
    Release(usize),
    DropClaim(usize),
    Quarantine(usize),
    /// Replace a held claim's body (with one of this size).
    Rewrite(usize, usize),
    /// A rewrite whose disk operation number `.1` (of the five before the old entry is removed)
    /// fails: the claim keeps its body.
    FailedRewrite(usize, usize),
    /// Close this handle and open a new one. Claims still held keep their (live) session.
    Reopen,
    /// The process dies: `abandon`, drop the handle and every claim, open again.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![Just(Kind::Crash), Just(Kind::Event), Just(Kind::Log)];
    prop_oneof![
        6 => (kind, 0usize..300).prop_map(|(kind, size)| Op::Write { kind, size }),
        5 => Just(Op::Claim),
        2 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::DropClaim),
        1 => any::<usize>().prop_map(Op::Quarantine),
        2 => (any::<usize>(), 0usize..300).prop_map(|(i, size)| Op::Rewrite(i, size)),
        1 => (any::<usize>(), 0usize..5).prop_map(|(i, step)| Op::FailedRewrite(i, step)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// What the spool should hold.
#[derive(Default)]
struct Model {
    ready: BTreeSet<(u8, EntryId)>,
    claimed: BTreeSet<EntryId>,
    quarantined: BTreeSet<EntryId>,
    bodies: BTreeMap<EntryId, (Kind, Vec<u8>)>,
    /// Every entry ever acked: delivered, never to be seen again.
    acked: BTreeSet<EntryId>,
    /// Acks per session: held until the session closes, so what its death leaves on disk.
    acked_by: BTreeMap<String, u64>,
}

impl Model {
    fn ready_entry(&mut self, id: EntryId) {
        let kind = self.bodies[&id].0;
        self.ready.insert((kind.priority(), id));
    }
}

/// The spool under test and the claims it has handed out.
struct Real {
    spool: Option<Spool>,
    /// Claims held, with the session that made them.
    held: Vec<(Claim, String)>,
}

impl Real {
    fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("the spool is open between operations")
    }
}

fn open(dir: &Path) -> Spool {
    let spool = Spool::open(dir, SpoolOptions { deletes: Deletes::Background, ..SpoolOptions::default() })
        .expect("open the spool");
    spool.hold_deletes();
    spool
}

/// The ids of the acked files in every session's `claimed/<sid>/`.
fn acked_on_disk(dir: &Path) -> Vec<EntryId> {
    let mut ids = Vec::new();
    let Ok(sessions) = fs::read_dir(dir.join("claimed")) else { return ids };
    for session in sessions.flatten() {
        let Ok(files) = fs::read_dir(session.path()) else { continue };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some(entry) = name.strip_prefix(".acked.") {
                ids.push(EntryName::parse(entry).unwrap_or_else(|| panic!("an acked file {name}")).id());
            }
        }
    }
    ids
}

fn body_for(n: usize, size: usize) -> Vec<u8> {
    (0..size).map(|i| (n.wrapping_mul(31).wrapping_add(i) % 251) as u8).collect()
}

/// Checks that the spool's files agree with the model; with `bodies`, reads every entry back too.
fn check(real: &Real, model: &Model, bodies: bool) -> Result<(), TestCaseError> {
    let view = real.spool().view();
    let mut live = BTreeSet::new();
    let mut ready = BTreeSet::new();
    let mut quarantined = BTreeSet::new();
    for item in view.list().map_err(|e| TestCaseError::fail(format!("list: {e}")))? {
        let id = item.id.ok_or_else(|| TestCaseError::fail(format!("foreign file {item:?}")))?;
        match item.state {
            EntryState::Ready | EntryState::Claimed => {
                prop_assert!(live.insert(id), "{id} is in the spool twice");
                if item.state == EntryState::Ready {
                    ready.insert(id);
                }
            }
            EntryState::Quarantined => {
                quarantined.insert(id);
            }
            EntryState::Writing => prop_assert!(false, "a write was left behind: {item:?}"),
        }
    }
    let expected: BTreeSet<EntryId> =
        model.ready.iter().map(|(_, id)| *id).chain(model.claimed.iter().copied()).collect();
    prop_assert_eq!(&live, &expected, "ready+claimed differ from the model");
    let expected_ready: BTreeSet<EntryId> = model.ready.iter().map(|(_, id)| *id).collect();
    prop_assert_eq!(&ready, &expected_ready, "ready/ differs from the model");
    prop_assert_eq!(&quarantined, &model.quarantined, "quarantine differs from the model");
    for id in acked_on_disk(real.spool().path()) {
        prop_assert!(model.acked.contains(&id), "{id} has an acked name but was never acked");
    }
    if bodies {
        for id in &expected {
            let data = view.read(*id).map_err(|e| TestCaseError::fail(format!("read {id}: {e}")))?;
            let (kind, body) = &model.bodies[id];
            prop_assert_eq!(data.header.kind, *kind);
            prop_assert_eq!(&data.body, body, "body of {} differs", id);
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut model = Model::default();
    let mut real = Real { spool: Some(open(dir.path())), held: Vec::new() };
    for (n, op) in ops.into_iter().enumerate() {
        let mut read_all = false;
        match op {
            Op::Write { kind, size } => {
                let body = body_for(n, size);
                let id = real.spool().write(kind, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let data = real.spool().view().read(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&data.body, &body);
                model.bodies.insert(id, (kind, body));
                model.ready_entry(id);
            }
            Op::Claim => {
                let claim = real.spool().claim().map_err(|e| TestCaseError::fail(e.to_string()))?;
                match (claim, model.ready.pop_first()) {
                    (None, None) => {}
                    (Some(claim), Some((_, id))) => {
                        prop_assert_eq!(claim.id(), id, "claim did not return the model's first entry");
                        prop_assert_eq!(claim.body(), &model.bodies[&id].1[..]);
                        prop_assert_eq!(claim.kind(), model.bodies[&id].0);
                        model.claimed.insert(id);
                        let sid = real.spool().session_id().to_owned();
                        real.held.push((claim, sid));
                    }
                    (got, want) => {
                        prop_assert!(false, "claim returned {got:?}, the model has {want:?}")
                    }
                }
            }
            Op::Ack(i) | Op::Release(i) | Op::DropClaim(i) | Op::Quarantine(i) if !real.held.is_empty() => {
                let (claim, sid) = real.held.remove(i % real.held.len());
                let id = claim.id();
                // A handle sees what other sessions put back into ready/ at its next rescan
                // (SpoolOptions::rescan_interval); the test asks for that rescan at once.
                let foreign = sid != real.spool().session_id();
                model.claimed.remove(&id);
                match op {
                    Op::Ack(_) => {
                        claim.ack().map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.bodies.remove(&id);
                        model.acked.insert(id);
                        *model.acked_by.entry(sid.clone()).or_default() += 1;
                    }
                    Op::Release(_) => {
                        claim.release().map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.ready_entry(id);
                    }
                    Op::DropClaim(_) => {
                        drop(claim);
                        model.ready_entry(id);
                    }
                    _ => {
                        claim
                            .quarantine("rejected by the test")
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.quarantined.insert(id);
                        model.bodies.remove(&id);
                    }
                }
                if foreign {
                    real.spool().rescan().map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            Op::Rewrite(i, x) | Op::FailedRewrite(i, x) if !real.held.is_empty() => {
                let i = i % real.held.len();
                let claim = &mut real.held[i].0;
                let id = claim.id();
                let body = body_for(n + 1000, x);
                if matches!(op, Op::FailedRewrite(..)) {
                    // Create, the second write (the body), the file's fsync, the directory's fsync,
                    // the unlink of the old entry: EIO.
                    let steps = [
                        (Disk::Create, 0),
                        (Disk::Write, 1),
                        (Disk::Sync, 0),
                        (Disk::SyncDir, 0),
                        (Disk::Unlink, 0),
                    ];
                    let (disk, skip) = steps[x % steps.len()];
                    faults::fail(disk, skip, 5);
                    let result = claim.rewrite(0, &body);
                    faults::clear();
                    prop_assert!(result.is_err(), "the injected fault fails the rewrite");
                    prop_assert_eq!(
                        claim.body(),
                        &model.bodies[&id].1[..],
                        "a failed rewrite changes nothing"
                    );
                } else {
                    claim.rewrite(0, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(claim.body(), &body[..]);
                    model.bodies.get_mut(&id).expect("a held claim is in the model").1 = body;
                }
                read_all = true;
            }
            Op::Ack(_)
            | Op::Release(_)
            | Op::DropClaim(_)
            | Op::Quarantine(_)
            | Op::Rewrite(..)
            | Op::FailedRewrite(..) => {}
            Op::Reopen => {
                real.spool = None;
                real.spool = Some(open(dir.path()));
                read_all = true;
            }
            Op::Crash => {
                real.spool().abandon();
                let dead_session = real.spool().session_id().to_owned();
                real.held.clear();
                real.spool = None;
                real.spool = Some(open(dir.path()));
                // Every claim of the dead process is back in ready/.
                for id in std::mem::take(&mut model.claimed) {
                    model.ready_entry(id);
                }
                prop_assert!(
                    !dir.path().join("claimed").join(&dead_session).exists(),
                    "the dead session's claimed/ directory was not recovered"
                );
                // Its acks were held, so they were all on disk at its death; the open deleted them.
                let held = model.acked_by.get(&dead_session).copied().unwrap_or(0);
                prop_assert_eq!(
                    real.spool().recovered_at_open().acked,
                    held,
                    "acked files of the dead session"
                );
                read_all = true;
            }
        }
        check(&real, &model, read_all)?;
    }
    // Drain: everything comes out in model order, and a clean close leaves nothing claimed.
    real.held.clear();
    for id in std::mem::take(&mut model.claimed) {
        model.ready_entry(id);
    }
    real.spool().rescan().map_err(|e| TestCaseError::fail(e.to_string()))?;
    check(&real, &model, true)?;
    while let Some((_, id)) = model.ready.pop_first() {
        let claim = real.spool().claim().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let claim = claim.ok_or_else(|| TestCaseError::fail(format!("spool empty, model has {id}")))?;
        prop_assert_eq!(claim.id(), id);
        claim.ack().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    prop_assert!(real.spool().claim().map_err(|e| TestCaseError::fail(e.to_string()))?.is_none());
    // A clean close deletes what its session acked.
    real.spool = None;
    prop_assert_eq!(acked_on_disk(dir.path()), Vec::<EntryId>::new(), "acked files left after the close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn spool_follows_the_queue_model_through_claims_reopens_and_crashes(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(ops)?;
    }
}
