//! `lastword run` and `drain` take the collector URLs that `lastword::init` takes, checked the same
//! way (`lastword::check_url`): a URL that can never work is a usage error, exit 2 with one error line
//! that names it and says how to write it, before anything is opened; a list may have spaces after
//! its commas, on the command line as in `LASTWORD_URL`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{Kind, Spool, SpoolOptions};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
/// Where nothing listens.
const DEAD_URL: &str = "ws://127.0.0.1:1/ingest";

fn lastword(args: &[&str], spool: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .env_remove("LASTWORD_URL")
        .env_remove("LASTWORD_SPOOL")
        .env_remove("LASTWORD_APP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `command`, at most `limit`.
fn output(mut command: Command, limit: Duration) -> Output {
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("lastword did not exit within {limit:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_url_that_can_never_work_is_a_usage_error_in_one_line_that_says_how_to_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    drop(Spool::open(&spool, SpoolOptions::default()).unwrap());
    let missing = dir.path().join("not-made");
    for (url, said) in [
        ("ws://localhost/ingest", "no port: write it out, e.g. ws://localhost:80/ingest"),
        ("http://127.0.0.1:8700/ingest", "the scheme must be ws:// or wss://, not http://"),
        ("ws://a b:8700/ingest", "not a URL"),
    ] {
        for command in [&["drain", "--deadline", "5s"][..], &["run"][..]] {
            let mut c = lastword(command, &spool);
            c.args(["--url", DEAD_URL, "--url", url]);
            let out = output(c, Duration::from_secs(20));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command:?} {url}: {err}");
            let errors: Vec<_> = err.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "one error line: {err}");
            assert!(
                errors[0].contains(&format!("invalid value '{url}' for '--url <URLS>': {said}")),
                "{err}"
            );
        }
        // Before anything is opened: --create makes nothing.
        let mut c = lastword(&["drain", "--create"], &missing);
        c.args(["--url", url]);
        let out = output(c, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!missing.exists(), "{url}: no spool made for a configuration that cannot work");
    }
}

#[test]
fn a_list_of_urls_may_have_spaces_after_its_commas_on_the_command_line_and_in_lastword_url() {
    let collector = TestCollector::start(Behaviour::Accept);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let s = Spool::open(&spool, SpoolOptions::default()).unwrap();
    s.write(Kind::Crash, b"{\"i\":1}").unwrap();
    // The collector second: the first URL is refused and the agent fails over to it.
    let list = format!("{DEAD_URL}, {} ", collector.url());
    let mut c = lastword(&["drain", "--deadline", "20s"], &spool);
    c.args(["--url", &list]);
    let out = output(c, Duration::from_secs(40));
    assert_eq!(out.status.code(), Some(0), "--url {list:?}: {}", stderr(&out));
    assert_eq!(collector.stored_ids().len(), 1);

    s.write(Kind::Crash, b"{\"i\":2}").unwrap();
    let mut c = lastword(&["drain", "--deadline", "20s"], &spool);
    c.env("LASTWORD_URL", format!(" {DEAD_URL} ,{}", collector.url()));
    let out = output(c, Duration::from_secs(40));
    assert_eq!(out.status.code(), Some(0), "LASTWORD_URL: {}", stderr(&out));
    assert_eq!(collector.stored_ids().len(), 2);
}
