//! The mistakes a newcomer makes in the first hour, each answered with a message that says what is
//! wrong (issue 18): a window of 0, a port that does not exist, purging an id that is not there, a web
//! UI address without its parameters; and the things that must look the same everywhere (the
//! one-line description, the JSON field names).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{Kind, Spool, SpoolOptions};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
/// How long a command that is refused (or the collector's start) may take on a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

/// `lastword args`, with no LASTWORD_* setting from the environment of the test, ended by `BOUND`.
fn lastword(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LASTWORD_") {
            command.env_remove(name);
        }
    }
    finish(command.spawn().unwrap())
}

fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lastword did not end within {BOUND:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` is a usage error (exit 2) whose message has each of `needles`.
fn assert_usage_error(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}{}", text(&out.stdout));
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

fn spool_with_one_crash(dir: &Path) -> (String, lastword::spool::EntryId) {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    let id = spool.write(Kind::Crash, br#"{"message":"boom"}"#).unwrap();
    (dir.to_str().unwrap().to_owned(), id)
}

#[test]
fn a_window_of_zero_is_refused_not_turned_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with_one_crash(dir.path());
    for command in ["drain", "run"] {
        let out =
            lastword(&[command, "--spool", &spool, "--url", "ws://127.0.0.1:1/ingest", "--window", "0"]);
        assert_usage_error(&out, &["--window", "at least 1"]);
    }
    let out = lastword(&["drain", "--spool", &spool, "--url", "ws://127.0.0.1:1/ingest", "--window", "lots"]);
    assert_usage_error(&out, &["--window", "not a number"]);
}

#[test]
fn a_port_that_does_not_exist_is_refused_in_listen_ui_and_collector_urls() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with_one_crash(&dir.path().join("spool"));
    let store = dir.path().join("store");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "a-token\n").unwrap();
    let collect = |extra: &[&str]| {
        let mut args = vec!["collect", "--store", store.to_str().unwrap(), "--token-file"];
        args.push(tokens.to_str().unwrap());
        args.extend_from_slice(extra);
        lastword(&args)
    };
    assert_usage_error(&collect(&["--listen", "127.0.0.1:99999"]), &["--listen", "99999", "0 to 65535"]);
    assert_usage_error(
        &collect(&["--listen", "127.0.0.1:0", "--ui", "127.0.0.1:99999"]),
        &["--ui", "99999", "0 to 65535"],
    );
    assert_usage_error(&collect(&["--listen", "127.0.0.1"]), &["--listen", "no port"]);
    assert!(!store.exists(), "nothing was opened before the arguments were checked");

    let out = lastword(&["drain", "--spool", &spool, "--url", "ws://127.0.0.1:99999/ingest"]);
    assert_usage_error(&out, &["--url", "99999", "1 to 65535"]);
    // The same URL from the environment.
    let mut from_env = Command::new(BIN);
    from_env
        .args(["drain", "--spool", &spool])
        .env("LASTWORD_URL", "ws://127.0.0.1:1/ingest,ws://127.0.0.1:99999/ingest")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    assert_usage_error(&finish(from_env.spawn().unwrap()), &["99999", "1 to 65535"]);
    assert_eq!(
        lastword::spool::SpoolView::open(Path::new(&spool)).unwrap().list().unwrap().len(),
        1,
        "the report is still there"
    );
}

#[test]
fn purging_an_id_that_is_not_there_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, present) = spool_with_one_crash(dir.path());
    let absent = lastword::spool::EntryId::generate().to_string();
    for yes in [false, true] {
        let mut args = vec!["purge", "--spool", &spool, "--id", &absent];
        if yes {
            args.push("--yes");
        }
        let out = lastword(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--yes {yes}: {stderr}{}", text(&out.stdout));
        assert!(stderr.contains(&format!("no entry {absent} in the spool")), "{stderr}");
    }
    // A present one is still purged, with exit 0.
    let out = lastword(&["purge", "--spool", &spool, "--id", &present.to_string(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deleted 1 entries"), "{}", text(&out.stdout));
}

#[test]
fn bare_lastword_and_help_begin_with_the_same_description() {
    let first_line =
        |bytes: &[u8]| text(bytes).lines().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
    let bare = lastword(&[]);
    assert_eq!(bare.status.code(), Some(2), "no command is a usage error");
    let help = lastword(&["--help"]);
    let short = lastword(&["-h"]);
    assert_eq!(help.status.code(), Some(0));
    let described = first_line(&help.stdout);
    assert!(described.starts_with("lastword: crash and log reporting"), "{described}");
    assert_eq!(first_line(&bare.stderr), described, "lastword alone");
    assert_eq!(first_line(&short.stdout), described, "lastword -h");
}

/// Every key of `value`, at any depth.
fn keys(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                into.push(k.clone());
                keys(v, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
        _ => {}
    }
}

#[test]
fn json_of_ls_show_and_stats_names_times_in_ms_as_the_protocol_does() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, id) = spool_with_one_crash(dir.path());
    let json = |args: &[&str]| -> serde_json::Value {
        let out = lastword(&[args, &["--spool", &spool, "--json"]].concat());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ls = json(&["ls"]);
    let show = json(&["show", &id.to_string()]);
    let stats = json(&["stats"]);
    let created = ls[0]["created_ms"].as_u64().expect("ls --json: created_ms");
    assert_eq!(created, id.millis(), "{ls}");
    assert!(show["created_ms"].as_u64().is_some(), "show --json: created_ms: {show}");
    assert!(stats.get("oldest_ready_age_ms").is_some(), "{stats}");
    let mut all = Vec::new();
    for value in [&ls, &show, &stats] {
        keys(value, &mut all);
    }
    let other: Vec<&String> = all.iter().filter(|k| k.ends_with("_millis")).collect();
    assert!(other.is_empty(), "milliseconds are _ms in every command's JSON: {other:?}");
}

/// `lastword collect --ui` on an empty store, killed on drop.
struct Collector {
    child: Child,
    ui: SocketAddr,
}

impl Collector {
    fn start(dir: &Path) -> Self {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, "a-token\n").unwrap();
        let mut child = Command::new(BIN)
            .args(["collect", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--store"])
            .arg(dir.join("store"))
            .arg("--token-file")
            .arg(&tokens)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(addr) = line.trim().strip_prefix("web UI on http://") {
                    let _ = tx.send(addr.trim_end_matches('/').to_owned());
                }
                line.clear();
            }
        });
        let addr = rx.recv_timeout(BOUND).expect("the collector prints its web UI's address");
        Self { child, ui: addr.parse().unwrap() }
    }

    /// One HTTP/1.0 GET: the status, the head (lower case) and the body.
    fn get(&self, path: &str) -> (u16, String, String) {
        let mut tcp = TcpStream::connect_timeout(&self.ui, Duration::from_secs(10)).unwrap();
        tcp.set_read_timeout(Some(BOUND)).unwrap();
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.ui).unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        (status, head.to_ascii_lowercase(), body.to_owned())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_web_ui_address_it_cannot_read_is_a_page_that_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    for (path, why) in [
        ("/group", "missing field `app`"),
        ("/group?app=shop", "missing field `fp`"),
        ("/group?app=shop&fp=f&before=yesterday", "before"),
        ("/groups?offset=-3", "offset"),
        ("/logs?before=soon", "before"),
    ] {
        let (status, head, body) = collector.get(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(head.contains("content-type: text/html"), "{path}: an HTML page: {head}");
        assert!(head.contains("content-security-policy"), "{path}: with the UI's headers: {head}");
        assert!(body.contains("<h1>Bad address</h1>"), "{path}: {body}");
        assert!(body.contains(why), "{path}: {why:?} not in {body}");
    }
    let (_, _, body) = collector.get("/group");
    assert!(body.contains("/group?app=APP&amp;fp=FINGERPRINT"), "how the address looks: {body}");
    let (status, _, _) = collector.get("/groups?offset=50");
    assert_eq!(status, 200, "a query it can read is still a page");
}
