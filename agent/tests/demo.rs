//! `lastword demo`, the README's first command: it exits 0 only when every report the example
//! application wrote reached the collector's store once, and says so. With `--serve` it keeps the
//! collector and the web UI running on the demo's store until SIGTERM: the pages show the demo's
//! reports over plain HTTP and in a real browser (headless Chromium, `lastword_tests::chromium`).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lastword_tests::chromium::{Chromium, screenshots_dir};

#[test]
fn demo_delivers_every_report_of_the_crashing_app_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out =
        Command::new(env!("CARGO_BIN_EXE_lastword")).arg("demo").arg("--dir").arg(&work).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("killed by SIGSEGV"), "{stdout}");
    assert!(stdout.contains("every report arrived, once."), "{stdout}");
    assert!(
        stdout.contains("demo_app::write_through_a_null_pointer"),
        "the signal crash is symbolized: {stdout}"
    );
    assert!(stdout.contains("an order has three words"), "the panic in the thread: {stdout}");
    assert!(stdout.contains("app demo-app"), "the store names the application from the report: {stdout}");
    assert!(stdout.contains("stored 1 time(s)") && !stdout.contains("stored 0 time(s)"), "{stdout}");
    // The web UI ran beside the collector, and the last step says how to keep it running.
    assert!(stdout.contains("web UI on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("rerun with --serve") && !stdout.contains("8701"), "{stdout}");
    // The spool and the store are left for the user to look at.
    assert!(work.join("spool").is_dir() && work.join("store").is_dir());
}

/// `lastword` with `args`; its stdout, and the exit code asserted 0.
fn lastword_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lastword")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "lastword {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_on_the_same_dir_again_accumulates_keeps_its_token_and_names_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let demo = [std::ffi::OsStr::new("demo"), "--dir".as_ref(), work.as_os_str()];
    let first = lastword_ok(&demo);
    let token = std::fs::read_to_string(work.join("token")).unwrap().trim().to_owned();
    assert!(!token.is_empty());
    // The collector's URL and token are printed, for pointing an application of one's own at it.
    assert!(first.contains("collector listening on ws://127.0.0.1:"), "{first}");
    assert!(first.contains(&format!("its token: {token}")), "{first}");

    let second = lastword_ok(&demo);
    assert!(second.contains("again (its spool and store are kept)"), "{second}");
    assert!(second.contains(&format!("its token: {token}")), "the token is kept: {second}");
    assert!(second.contains("every report arrived, once."), "{second}");

    let store_dir = work.join("store");
    let store = [std::ffi::OsStr::new("--store"), store_dir.as_os_str(), "--json".as_ref()];
    let reports: serde_json::Value = serde_json::from_str(&lastword_ok(
        &[&["store".as_ref(), "reports".as_ref()][..], &store[..]].concat(),
    ))
    .unwrap();
    let crashes = reports.as_array().unwrap().iter().filter(|r| r["kind"] == "crash").count();
    assert_eq!(crashes, 4, "two runs, a panic and a SIGSEGV each, all kept: {reports}");
    // The demo's sidecar says who it is in its hello.
    let losses: serde_json::Value = serde_json::from_str(&lastword_ok(
        &[&["store".as_ref(), "losses".as_ref()][..], &store[..]].concat(),
    ))
    .unwrap();
    let apps: Vec<&str> = losses.as_array().unwrap().iter().filter_map(|l| l["app"].as_str()).collect();
    assert_eq!(apps, ["lastword-demo"], "{losses}");
}

/// How long the demo may take to reach its summary (a debug build, a machine shared with other work).
const DEMO_BOUND: Duration = Duration::from_secs(180);
/// How long it may take to stop after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// `lastword demo --serve` as a child, killed on drop: a failing test leaves no demo behind.
struct ServedDemo {
    child: Child,
    /// Its stdout, line by line, from a thread that reads it as it comes.
    lines: Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: String,
}

impl ServedDemo {
    fn start(work: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lastword"))
            .arg("demo")
            .arg("--dir")
            .arg(work)
            .arg("--serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the lastword binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: String::new() }
    }

    /// Reads lines until one contains `needle`, by `deadline`; that line.
    fn line_with(&mut self, needle: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no line with {needle:?} in time:\n{}", self.seen),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the demo ended before a line with {needle:?}:\n{}", self.seen)
                }
            }
        }
    }

    /// Waits for the child to exit, at most `bound`.
    fn wait(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop within {bound:?}:\n{}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServedDemo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET (no chunked answer; the connection closes at the end): the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("the web UI accepts");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("the web UI answers in time, in UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, body.to_owned())
}

/// The targets of the links in `html` whose target starts with `prefix`, unescaped (`&amp;` → `&`),
/// each with the text that follows it up to the end of the link.
fn links<'a>(html: &'a str, prefix: &str) -> Vec<(String, &'a str)> {
    let start = format!("href=\"{prefix}");
    html.match_indices(&start)
        .filter_map(|(at, _)| {
            let rest = &html[at + "href=\"".len()..];
            let end = rest.find('"')?;
            let text = &rest[end..rest.find("</a>").unwrap_or(rest.len())];
            Some((rest[..end].replace("&amp;", "&"), text))
        })
        .collect()
}

#[test]
fn demo_serves_its_reports_in_the_web_ui_until_sigterm() {
    // Before anything is started: without a browser the test fails, with the command that installs it.
    let dir = tempfile::tempdir().unwrap();
    let browser = Chromium::new(dir.path().join("chromium-profile"));
    let mut demo = ServedDemo::start(&dir.path().join("demo"));
    let deadline = Instant::now() + DEMO_BOUND;

    let line = demo.line_with("web UI on http://", deadline);
    let base = line.split("web UI on ").nth(1).unwrap().trim().to_owned();
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix('/'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("odd web UI line {line:?}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    demo.line_with("every report arrived, once.", deadline);
    demo.line_with("until Ctrl-C (SIGINT) or SIGTERM", deadline);

    // Over HTTP: the overview lists the demo's two crash groups.
    let (status, overview) = get(addr, "/");
    assert_eq!(status, 200, "{overview}");
    assert!(overview.contains("an order has three words"), "the panic's group:\n{overview}");
    assert!(overview.contains("SIGSEGV"), "the signal crash's group:\n{overview}");
    // From the groups page to the SIGSEGV group, from there to its report.
    let (status, groups) = get(addr, "/groups");
    assert_eq!(status, 200, "{groups}");
    let group_links = links(&groups, "/group?");
    assert_eq!(group_links.len(), 2, "two crash groups:\n{groups}");
    let (group, _) = group_links
        .iter()
        .find(|(_, text)| text.contains("SIGSEGV"))
        .unwrap_or_else(|| panic!("no SIGSEGV group on the groups page:\n{groups}"));
    let (status, group_page) = get(addr, group);
    assert_eq!(status, 200, "{group_page}");
    assert!(group_page.contains("demo_app::write_through_a_null_pointer"), "{group_page}");
    let report = links(&group_page, "/reports/")
        .into_iter()
        .map(|(href, _)| href)
        .find(|href| !href.ends_with("/raw.json"))
        .unwrap_or_else(|| panic!("no report linked from the group:\n{group_page}"));
    let (status, report_page) = get(addr, &report);
    assert_eq!(status, 200, "{report_page}");
    assert!(
        report_page.contains("demo_app::write_through_a_null_pointer")
            && report_page.contains("demo_app.rs:"),
        "the report shows the symbolized frame with its file and line:\n{report_page}"
    );

    // In a real browser: the same three pages, rendered, and their screenshots.
    let shots = screenshots_dir();
    let pages = [
        ("overview", "/".to_owned(), ["Overview", "an order has three words", "SIGSEGV"]),
        ("group", group.clone(), ["Occurrences", "SIGSEGV", "demo_app::write_through_a_null_pointer"]),
        ("report", report, ["SIGSEGV", "demo_app::write_through_a_null_pointer", "demo_app.rs:"]),
    ];
    for (name, path, expected) in &pages {
        let url = format!("http://{addr}{path}");
        let dom = browser.dump_dom(&url);
        for e in expected {
            assert!(dom.contains(e), "{e:?} not in the DOM Chromium rendered for {url}:\n{dom}");
        }
        browser.screenshot(&url, &shots.join(format!("demo-{name}.png")), (1280, 900));
    }

    // SIGTERM: the demo stops gracefully, and its exit code is its verdict.
    let pid = rustix::process::Pid::from_child(&demo.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = demo.wait(STOP_BOUND);
    while let Ok(line) = demo.lines.recv_timeout(Duration::from_secs(5)) {
        demo.seen.push_str(&line);
        demo.seen.push('\n');
    }
    assert_eq!(status.code(), Some(0), "exit status {status:?}:\n{}", demo.seen);
    assert!(demo.seen.contains("stopped:"), "{}", demo.seen);
}
