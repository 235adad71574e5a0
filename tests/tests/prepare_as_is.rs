//! A prepare hook that answers [`Prepared::AsIs`]: the claimed entry's body goes on the wire as it
//! is, with no copy made by the hook, and the uploader still checks that it is JSON (an entry that
//! is not is quarantined, not sent).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions};
use lastword::upload::{Prepared, Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

fn config(url: String) -> UploaderConfig {
    let mut c = UploaderConfig::new([url], "test-app").token(TOKEN);
    c.backoff_initial = Duration::from_millis(20);
    c.connect_timeout = Duration::from_secs(5);
    c.prepare = Some(Arc::new(|_claim: &mut lastword::spool::Claim| Ok(Prepared::AsIs)));
    c
}

#[test]
fn entries_prepared_as_is_are_sent_with_their_own_bodies_and_one_that_is_not_json_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    // A small body, and one over the 8 KiB that travel compressed.
    let small = r#"{"message":"small","n":1}"#.to_owned();
    let large = format!(r#"{{"message":"large","pad":"{}"}}"#, "x".repeat(20_000));
    let small_id = spool.write(Kind::Event, small.as_bytes()).unwrap();
    let large_id = spool.write(Kind::Log, large.as_bytes()).unwrap();
    spool.write(Kind::Log, b"not json").unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    uploader.flush(Duration::from_secs(20)).unwrap();
    let summary = uploader.shutdown(Duration::from_millis(500));
    assert_eq!((summary.delivered, summary.quarantined), (2, 1), "{summary:?}");
    collector.wait_for(Duration::from_secs(5), "both stored", |r| {
        r.bodies.get(&small_id) == Some(&small) && r.bodies.get(&large_id) == Some(&large)
    });
    let left: Vec<_> = spool.view().list().unwrap().into_iter().map(|e| e.state).collect();
    assert!(left.contains(&EntryState::Quarantined), "the entry that is not JSON is kept, aside: {left:?}");
    assert!(!left.iter().any(|s| matches!(s, EntryState::Ready | EntryState::Claimed)), "{left:?}");
}
