//! `Claim::rewrite`: an uploader replaces a claimed entry's body with the one it prepared, keeping
//! its id and creation time, and a crash at any step leaves exactly one of the two versions.

use std::path::Path;

use lastword_spool::{
    EntryName, EntryState, FLAG_RAW_SIGNAL, HEADER_LEN, Header, Kind, Spool, SpoolOptions, SpoolView,
};

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).expect("open the spool")
}

#[test]
fn a_rewritten_entry_keeps_its_id_kind_and_time_and_has_the_new_flags_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id = spool.write_flagged(Kind::Crash, FLAG_RAW_SIGNAL, &[7u8; 5000]).unwrap();
    let created = spool.view().read(id).unwrap().header.created_millis;
    let mut claim = spool.claim().unwrap().unwrap();
    claim.rewrite(0, b"{\"prepared\":true}").unwrap();
    assert_eq!(claim.body(), b"{\"prepared\":true}");
    assert_eq!(claim.flags(), 0);
    assert_eq!(claim.created_millis(), created);
    assert_eq!(spool.queued(), (1, (HEADER_LEN + 17) as u64), "the index follows the new size");
    claim.release().unwrap();
    let listed = spool.view().list().unwrap();
    assert_eq!(listed.len(), 1, "one entry, not the old and the new: {listed:?}");
    assert_eq!(listed[0].state, EntryState::Ready);
    let again = spool.claim().unwrap().unwrap();
    assert_eq!((again.id(), again.kind(), again.flags()), (id, Kind::Crash, 0));
    assert_eq!(again.created_millis(), created);
    assert_eq!(again.body(), b"{\"prepared\":true}");
    again.ack().unwrap();
    assert!(spool.view().list().unwrap().is_empty());
}

#[test]
fn a_rewrite_to_the_same_size_replaces_the_entry_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.write(Kind::Crash, b"aaaa").unwrap();
    let mut claim = spool.claim().unwrap().unwrap();
    claim.rewrite(0, b"bbbb").unwrap();
    drop(claim);
    let again = spool.claim().unwrap().unwrap();
    assert_eq!(again.body(), b"bbbb");
}

/// The states a crash can leave a rewrite in, made by hand in a dead session's directories: the old
/// entry claimed, the new one (complete or partial) in `writing/`.
#[test]
fn recovery_keeps_exactly_one_version_of_a_rewrite_cut_short_at_any_step() {
    let old_body = [1u8; 300];
    let new_body = b"{\"new\":1}";
    // (old still claimed, new in writing/: none, partial or complete, new already claimed) → new?
    let cases = [
        ("before the new file has its header", true, Some(10), false, false),
        ("with the new file half written", true, Some(HEADER_LEN + 4), false, false),
        ("with the new file complete", true, Some(usize::MAX), false, true),
        ("after the old one was removed", false, Some(usize::MAX), false, true),
        ("after the new one took its place", false, None, true, true),
    ];
    for (step, old_claimed, new_written, new_claimed, new_wins) in cases {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        let id = spool.write_flagged(Kind::Crash, FLAG_RAW_SIGNAL, &old_body).unwrap();
        let claim = spool.claim().unwrap().unwrap();
        let sid = spool.session_id().to_owned();
        let claimed = dir.path().join("claimed").join(&sid);
        // The new entry's bytes and name, as `rewrite` makes them.
        let header = Header {
            kind: Kind::Crash,
            flags: 0,
            id,
            created_millis: claim.created_millis(),
            body_len: new_body.len() as u64,
        };
        let mut bytes = header.encode(&[new_body]).to_vec();
        bytes.extend_from_slice(new_body);
        let new_name = EntryName::new(Kind::Crash, id, bytes.len() as u64);
        if let Some(len) = new_written {
            let path = dir.path().join("writing").join(&sid).join(new_name.to_string());
            std::fs::write(path, &bytes[..len.min(bytes.len())]).unwrap();
        }
        if !old_claimed {
            std::fs::remove_file(claimed.join(claim.name().to_string())).unwrap();
        }
        if new_claimed {
            std::fs::write(claimed.join(new_name.to_string()), &bytes).unwrap();
        }
        // The process dies here.
        spool.abandon();
        drop(claim);
        drop(spool);
        let spool = open(dir.path());
        let listed = spool.view().list().unwrap();
        assert_eq!(listed.len(), 1, "{step}: one version, nothing quarantined: {listed:?}");
        assert_eq!(listed[0].state, EntryState::Ready, "{step}");
        let entry = spool.view().read(id).unwrap();
        if new_wins {
            assert_eq!((entry.header.flags, &entry.body[..]), (0, &new_body[..]), "{step}: the new version");
        } else {
            assert_eq!(
                (entry.header.flags, &entry.body[..]),
                (FLAG_RAW_SIGNAL, &old_body[..]),
                "{step}: the old one"
            );
        }
    }
}

#[test]
fn persistent_counters_add_up_across_handles_and_start_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    assert_eq!(spool.view().counter("crash_loop_suppressed").unwrap(), 0);
    assert_eq!(spool.add_to_counter("crash_loop_suppressed", 2).unwrap(), 2);
    drop(spool);
    let spool = open(dir.path());
    assert_eq!(spool.add_to_counter("crash_loop_suppressed", 1).unwrap(), 3);
    assert_eq!(SpoolView::open(dir.path()).unwrap().counter("crash_loop_suppressed").unwrap(), 3);
    assert_eq!(spool.view().evicted().unwrap(), 0, "counters are separate");
    assert!(spool.add_to_counter("lock", 1).is_err(), "the lock is not a counter");
    assert!(spool.add_to_counter("../evicted", 1).is_err());
}
