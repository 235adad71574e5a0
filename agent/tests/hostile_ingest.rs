//! The collector against hostile networks (issue 17, ingest): sockets that never authenticate do not
//! keep an agent with a token out, a compression bomb costs its sender one report and the collector
//! no more than the inflated limit, and a nonsensical limit stops the binary before it serves.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::time::Duration;

use common::*;
use lastword::upload::{Uploader, UploaderConfig};
use lastword_collector::server::Limits;
use lastword_spool::{Kind, Spool, SpoolOptions};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Idle sockets (TCP connected, nothing sent) and slow ones (half an upgrade request, then silence).
const IDLE: usize = 200;
const SLOW: usize = 100;
/// Reports the real uploader delivers while they are held.
const REPORTS: usize = 50;

/// Opens `IDLE` silent sockets and `SLOW` sockets that send half an upgrade request; each is held
/// open by the returned vector.
async fn attackers(addr: std::net::SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..IDLE + SLOW {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if i >= IDLE {
            tcp.write_all(b"GET /ingest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
        }
        held.push(tcp);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_sockets_do_not_keep_an_agent_with_a_token_out() {
    let dir = tempfile::tempdir().unwrap();
    // The attackers' deadline is longer than the test: they are held all along.
    let limits = Limits { max_connections: 4, handshake_timeout_ms: 60_000, ..Limits::default() };
    let server = Server::start_sqlite(limits, dir.path()).await;
    let held = attackers(server.addr).await;

    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(spool_dir.path(), SpoolOptions::default()).unwrap();
    for n in 0..REPORTS {
        spool.write(Kind::Crash, crash_body(n % 3, n).as_bytes()).unwrap();
    }
    let mut config = UploaderConfig::new([format!("ws://{}/ingest", server.addr)], "agent").token(TOKEN);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(2);
    let uploader = Uploader::start(spool.clone(), config).unwrap();
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = uploader.flush(STEP);
        (flushed, uploader.shutdown(Duration::from_secs(1)))
    })
    .await
    .unwrap();
    assert!(flushed.0.is_ok(), "the agent delivers while {} sockets are held: {flushed:?}", held.len());
    assert_eq!(flushed.1.delivered, REPORTS as u64);
    assert!(spool.view().list().unwrap().is_empty());
    drop(held);
    server.stop().await.unwrap();
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM reports"), REPORTS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_session_limit_a_token_gets_503_and_no_token_401_while_attackers_wait() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_connections: 1, handshake_timeout_ms: 60_000, ..Limits::default() };
    let server = Server::start_sqlite(limits, dir.path()).await;
    let held = attackers(server.addr).await;
    let mut first = connect(server.addr, Some(TOKEN)).await.expect("the attackers take no session slot");
    hello(&mut first, "first").await;
    let (status, retry_after) = refused_status(connect(server.addr, Some(TOKEN_2)).await);
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "the session limit holds");
    assert_eq!(refused_status(connect(server.addr, None).await).0, 401, "nor is it told the server is full");
    bye(first).await;
    drop(held);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_handshake_limit_a_socket_is_closed_at_once_until_the_deadline_frees_places() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_handshakes: 8, handshake_timeout_ms: 3_000, ..Limits::default() };
    let server = Server::start_sqlite(limits, dir.path()).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The listener accepts in the order of the connections: the ninth comes after the eight places
    // are taken.
    let mut ninth = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    // Closed long before the held ones' deadline.
    let read = tokio::time::timeout(Duration::from_millis(2_000), ninth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the ninth socket is closed at once: {read:?}");
    // The held ones are dropped at their deadline; then a real client gets in.
    for tcp in &mut held {
        let read = tokio::time::timeout(STEP, tcp.read(&mut buf)).await.expect("dropped at the deadline");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

/// Runs `lastword collect` with `flag value` and returns its exit code, stdout and stderr, or `None`
/// if it was still running (serving) after a while.
fn collect_with(flag: &str, value: &str) -> Option<(Option<i32>, String, String)> {
    use std::process::{Command, Stdio};
    let store = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["collect", "--listen", "127.0.0.1:0", "--store"])
        .arg(store.path())
        .args([flag, value])
        .env("LASTWORD_TOKENS", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn every_nonsensical_limit_stops_the_binary_before_it_serves() {
    let bad = [
        ("--retry-delay-ms", "0"),
        ("--retry-delay-ms", "86400000"),
        ("--max-connections", "0"),
        ("--max-handshakes", "0"),
        ("--max-in-flight", "0"),
        ("--batch-max", "0"),
        ("--queue-bytes", "100"),
        ("--max-message-bytes", "10"),
        ("--max-write-buffer-bytes", "1"),
        ("--max-inflated-bytes", "1000"),
        ("--max-in-flight", "1000000"),
        ("--handshake-timeout-ms", "0"),
        ("--handshake-timeout-ms", "3600000"),
        ("--hello-timeout-ms", "0"),
        ("--idle-timeout-ms", "0"),
        ("--write-timeout-ms", "0"),
    ];
    for (flag, value) in bad {
        let Some((code, stdout, stderr)) = collect_with(flag, value) else {
            panic!("lastword collect {flag} {value} served instead of refusing to start");
        };
        assert_eq!(code, Some(1), "{flag} {value}: {stderr}");
        assert!(!stdout.contains("listening"), "{flag} {value} served: {stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{flag} {value}: one clear line, got {stderr:?}");
        assert!(lines[0].contains(flag), "{flag} {value}: the line names the flag: {stderr:?}");
    }
}

/// A JSON string of `len` bytes, all `a` inside the quotes: compresses a thousandfold.
fn compressible_json(len: usize) -> Vec<u8> {
    let mut body = vec![b'a'; len];
    body[0] = b'"';
    body[len - 1] = b'"';
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_is_rejected_too_large_and_the_connection_goes_on() {
    use lastword::protocol::{ClientMessage, RejectReason, Report, ServerMessage};
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_message_bytes: 512 * 1024, max_inflated_bytes: 4 << 20, ..Limits::default() };
    let server = Server::start_sqlite(limits, dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    let welcome = hello(&mut ws, "bomber").await;
    assert_eq!(welcome.max_inflated_bytes, Some(4 << 20), "the welcome states the inflated limit");
    let report = |len: usize| {
        let id = lastword_spool::EntryId::generate();
        let report = Report::new(id, Kind::Log, 1, &compressible_json(len)).unwrap();
        let text = ClientMessage::Report(report).to_json();
        assert!(text.len() < 512 * 1024, "the message itself is within max_message_bytes");
        (id, text)
    };
    // 32 MiB once inflated: under the old fixed 64 MiB, over this server's 4 MiB.
    let (bomb, text) = report(32 << 20);
    send(&mut ws, text).await;
    match recv(&mut ws).await {
        ServerMessage::Rejected { id, reason: RejectReason::TooLarge, detail } => {
            assert_eq!(id, bomb);
            assert!(detail.contains("4194304"), "{detail}");
        }
        other => panic!("expected rejected/too_large, got {other:?}"),
    }
    // The connection goes on: a body just within the limit is stored.
    let (fits, text) = report(4 << 20);
    send(&mut ws, text).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id: fits });
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM reports"), 1);
    assert_eq!(scalar(dir.path(), "SELECT length(body) FROM reports"), 4 << 20);
}
