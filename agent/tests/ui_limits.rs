//! The web UI's limits as `lastword collect` flags (issue 17): each changes what the real binary does
//! (`--ui-max-connections-per-address`, `--ui-header-timeout-ms`), and a value that cannot work is
//! refused at start with one line and exit 1, before the store is made or anything is served.

#![allow(clippy::unwrap_used, reason = "test code: a failure is a test failure")]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, STEP, TOKEN, binary};

/// `lastword collect --ui 127.0.0.1:0` on a SQLite store in `dir` with `extra`: the process and the
/// UI's address.
fn collector_with_ui(dir: &Path, extra: &[&str]) -> (Collector, SocketAddr) {
    let mut args = vec!["--ui", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let collector = Collector::start(&dir.join("store"), &args);
    let line = collector.stdout.recv_timeout(STEP).expect("the UI line");
    let ui = line
        .trim()
        .strip_prefix("web UI on http://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("odd UI line {line:?}"))
        .parse()
        .unwrap();
    (collector, ui)
}

/// A TCP connection to `ui` from the local address `from` (127.0.0.x), blocking, with short reads.
/// std cannot bind a socket before connecting it: tokio's `TcpSocket` does, on a runtime of its own.
fn connect_from(from: [u8; 4], ui: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let socket = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(ui).await.unwrap().into_std().unwrap()
    });
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket
}

/// Whether the server closed `socket` (EOF or reset) within `limit`; false if it is still open then.
fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The status of `GET /` sent on `socket`.
fn get_status(mut socket: TcpStream, ui: SocketAddr) -> u16 {
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket.write_all(format!("GET / HTTP/1.0\r\nHost: {ui}\r\n\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = socket.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn ui_max_connections_per_address_closes_the_third_socket_of_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let (_collector, ui) = collector_with_ui(dir.path(), &["--ui-max-connections-per-address", "2"]);
    let mut first = connect_from([127, 0, 0, 1], ui);
    let mut second = connect_from([127, 0, 0, 1], ui);
    let mut third = connect_from([127, 0, 0, 1], ui);
    assert!(closed_within(&mut third, Duration::from_secs(10)), "the third socket of 127.0.0.1 is closed");
    // The first two are held (the header timeout is 10 s), and another address is served.
    assert!(!closed_within(&mut first, Duration::from_millis(300)), "the first socket is still open");
    assert!(!closed_within(&mut second, Duration::from_millis(300)), "the second socket is still open");
    assert_eq!(get_status(connect_from([127, 0, 0, 2], ui), ui), 200, "another address is served");
    // Once one of the two is closed, the address may connect again.
    drop(first);
    let deadline = Instant::now() + STEP;
    loop {
        let socket = connect_from([127, 0, 0, 1], ui);
        let mut probe = socket.try_clone().unwrap();
        if !closed_within(&mut probe, Duration::from_millis(300)) {
            assert_eq!(get_status(socket, ui), 200);
            break;
        }
        assert!(Instant::now() < deadline, "a place of 127.0.0.1 came free");
    }
}

#[test]
fn ui_header_timeout_ms_closes_a_silent_socket_sooner_than_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let (_collector, ui) = collector_with_ui(dir.path(), &["--ui-header-timeout-ms", "500"]);
    let started = Instant::now();
    let mut silent = connect_from([127, 0, 0, 1], ui);
    // The default is 10 s: closed well before it means the flag was taken.
    assert!(closed_within(&mut silent, Duration::from_secs(6)), "closed after about 500 ms");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "not before its timeout: {took:?}");
}

#[test]
fn a_ui_limit_that_cannot_work_is_refused_at_start_with_one_line() {
    let cases: [(&[&str], &str); 9] = [
        (&["--ui-max-connections", "0"], "--ui-max-connections "),
        (&["--ui-max-connections", "100000000"], "--ui-max-connections "),
        (
            &["--ui-max-connections", "10", "--ui-max-connections-per-address", "11"],
            "--ui-max-connections-per-address",
        ),
        (&["--ui-max-connections-per-address", "0"], "--ui-max-connections-per-address"),
        (&["--ui-header-timeout-ms", "0"], "--ui-header-timeout-ms"),
        (&["--ui-max-head-bytes", "100"], "--ui-max-head-bytes"),
        (&["--ui-max-body-bytes", "0"], "--ui-max-body-bytes"),
        (&["--ui-session-ttl-ms", "0"], "--ui-session-ttl-ms"),
        (&["--ui-login-failures", "0"], "--ui-login-failures"),
    ];
    let window: (&[&str], &str) = (&["--ui-login-window-ms", "0"], "--ui-login-window-ms");
    for (flags, named) in cases.into_iter().chain([window]) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let out = Command::new(binary())
            .args(["collect", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--store"])
            .arg(&store)
            .args(flags)
            .env("LASTWORD_TOKENS", TOKEN)
            .env_remove("LASTWORD_STORE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: one line: {stderr}");
        assert!(stderr.contains(named) && stderr.contains("must be"), "{flags:?}: names the flag: {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing served");
        assert!(!store.exists(), "{flags:?}: refused before the store is made");
    }
}

#[test]
fn ui_max_head_bytes_answers_431_to_a_longer_head() {
    let dir = tempfile::tempdir().unwrap();
    let (_collector, ui) = collector_with_ui(dir.path(), &["--ui-max-head-bytes", "8192"]);
    // 12 KiB of headers: within the default 16 KiB, past the 8 KiB given.
    let head =
        |ui: SocketAddr| format!("GET / HTTP/1.0\r\nHost: {ui}\r\nX-Long: {}\r\n\r\n", "a".repeat(12 * 1024));
    let mut socket = connect_from([127, 0, 0, 1], ui);
    socket.set_read_timeout(Some(STEP)).unwrap();
    let _ = socket.write_all(head(ui).as_bytes());
    let mut raw = Vec::new();
    let _ = socket.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 431"), "a head past the limit: {text:?}");
}
