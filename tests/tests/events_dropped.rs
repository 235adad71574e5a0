//! Events dropped because the event writer's queue was full are counted in the hello's losses
//! (`events_dropped`, PROTOCOL.md), end to end: a real application drops them, its spool counts
//! them, and the next uploader on that spool reports the count to the collector.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use lastword::protocol::{ClientMessage, Losses};
use lastword::spool::{Spool, SpoolOptions};
use lastword::upload::{Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const APP: &str = env!("CARGO_BIN_EXE_lastword-event-app");

#[test]
fn events_dropped_on_a_full_queue_are_reported_in_the_hellos_losses() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // 10,000 errors then exit, through a queue of 2: most are dropped, and counted by the writer.
    let out = Command::new(APP)
        .arg("burst-then-exit")
        .env("EVENT_APP_QUEUE", "2")
        .env("LASTWORD_SPOOL", &spool_dir)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    let dropped = spool.add_to_counter("events_dropped", 0).unwrap();
    assert!(dropped > 0, "a queue of 2 dropped none of 10,000");

    // A sidecar's uploader on that spool: its hello carries the count.
    let collector = TestCollector::start(Behaviour::Accept);
    let mut config = UploaderConfig::new([collector.url()], "event-app").token(TOKEN);
    config.prepare = Some(lastword::prepare_for_upload(&spool_dir));
    let uploader = Uploader::start(spool, config).unwrap();
    uploader.flush(Duration::from_secs(300)).unwrap();
    let _ = uploader.shutdown(Duration::from_secs(5));
    let record = collector.record.lock().unwrap();
    assert!(!record.hellos.is_empty(), "the uploader said hello");
    for hello in &record.hellos {
        assert_eq!(hello.losses.events_dropped, dropped, "{:?}", hello.losses);
        assert_eq!(hello.losses.logs_dropped, 0, "events are not counted as logs");
    }
}

#[test]
fn a_hello_without_events_dropped_reads_as_none_dropped() {
    // As a sender before the field wrote it.
    let old = r#"{"type":"hello","protocol":1,"agent":{"name":"lastword","version":"0.1.0"},"app":"a",
        "losses":{"logs_dropped":4,"evicted":0,"quarantined":0,"crash_loop_suppressed":0}}"#;
    let Ok(ClientMessage::Hello(hello)) = ClientMessage::from_json(old) else {
        panic!("an older hello is read")
    };
    assert_eq!(hello.losses, Losses { logs_dropped: 4, ..Losses::default() });
    assert_eq!(hello.losses.events_dropped, 0);
}
