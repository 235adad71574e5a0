//! `lastword::init` refuses a collector URL that can never work, naming it, before it sets anything up;
//! a good URL is taken.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lastword::{Config, InitError};

#[test]
fn init_refuses_a_url_of_another_scheme_or_without_a_host_or_port_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for (url, why) in [
        ("http://127.0.0.1:8700/ingest", "the scheme must be ws:// or wss://, not http://"),
        ("127.0.0.1:8700/ingest", "no scheme"),
        ("collector.internal", "no scheme"),
        ("ws://collector.internal/ingest", "no port"),
        ("wss://collector.internal", "no port"),
        ("ws://:8700/ingest", "no host"),
        ("ws://a b:8700/", "not a URL"),
    ] {
        let config = Config::new("url-test").spool(&spool).url("ws://127.0.0.1:8700/ingest").url(url);
        match lastword::init(config) {
            Err(error @ InitError::BadUrl { .. }) => {
                let InitError::BadUrl { url: named, reason } = &error else { unreachable!() };
                assert_eq!(named, url);
                assert!(reason.starts_with(why), "{url}: {reason}");
                let message = error.to_string();
                assert!(message.contains(&format!("{url:?}")), "the message names the URL: {message}");
                assert!(!message.contains("thread"), "{message}");
            }
            Err(other) => panic!("{url}: not a URL error: {other}"),
            Ok(_) => panic!("{url}: init took a URL that can never work"),
        }
        assert!(!spool.exists(), "{url}: nothing was set up (the spool was not even created)");
    }
    // A good URL is taken (no collector listens there: delivery waits for a later start).
    let config = Config::new("url-test")
        .spool(&spool)
        .url("ws://127.0.0.1:1/ingest")
        .signals(false)
        .exit_deadline(Duration::from_millis(100));
    let guard = lastword::init(config).expect("a ws:// URL with a host and a port");
    assert!(spool.join("VERSION").is_file());
    drop(guard);
}
