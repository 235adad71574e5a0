//! The real `lastword` binary as a child process: tokens from file and environment, the queries for
//! people, SIGKILL and restart, SIGTERM, and wss:// with a self-signed certificate.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use lastword::protocol::{ServerMessage, close};
use lastword_spool::{EntryId, Kind};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn query(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(binary()).arg("store").args(args).arg("--store").arg(dir).output().unwrap();
    assert!(out.status.success(), "lastword store {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_at_the_handshake_and_a_resent_report_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "# one per app\nfile-token\n").unwrap();
    let store = dir.path().join("store");
    let collector = Collector::start(&store, &["--token-file", token_file.to_str().unwrap()]);
    assert!(collector.url.starts_with("ws://127.0.0.1:"), "{}", collector.url);
    let addr = collector.addr;
    assert_eq!(refused_status(connect(addr, None).await).0, 401);
    assert_eq!(refused_status(connect(addr, Some("file-token-but-wrong")).await).0, 401);
    // A token from the file and one from LASTWORD_TOKENS both work.
    let mut from_env = connect(addr, Some(TOKEN_2)).await.unwrap();
    hello(&mut from_env, "env-app").await;
    bye(from_env).await;
    let mut ws = connect(addr, Some("file-token")).await.unwrap();
    hello(&mut ws, "my-app").await;
    let id = EntryId::generate();
    let text = report_text(id, Kind::Crash, &crash_body(7, 0));
    send(&mut ws, text.clone()).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    send(&mut ws, text).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Duplicate { id });
    let event = EntryId::generate();
    send(&mut ws, report_text(event, Kind::Event, r#"{"message":"user signed up"}"#)).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id: event });
    bye(ws).await;
    assert_eq!(scalar(&store, "SELECT count(*) FROM reports"), 2);

    // The queries, while the collector runs.
    let table = query(&store, &["reports"]);
    assert!(table.starts_with("RECEIVED (UTC)"), "{table}");
    assert!(table.contains(&id.to_string()) && table.contains("crash 7"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&query(&store, &["reports", "--kind", "crash", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["id"], id.to_string());
    let groups: serde_json::Value = serde_json::from_str(&query(&store, &["groups", "--json"])).unwrap();
    assert_eq!((groups[0]["count"].as_u64(), groups[0]["title"].as_str()), (Some(1), Some("crash 7")));
    assert!(query(&store, &["groups"]).contains("crash 7"));
    let shown: serde_json::Value =
        serde_json::from_str(&query(&store, &["show", &id.to_string(), "--json"])).unwrap();
    assert_eq!(shown["body"]["frames"][0]["function"], "f7");
    assert!(query(&store, &["show", &event.to_string()]).contains("user signed up"));
    assert!(query(&store, &["losses"]).contains("my-app"));
    let missing = Command::new(binary())
        .args(["store", "show", &EntryId::generate().to_string(), "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no report"));
}

/// The answers clients got, by id: what the store must hold afterwards.
type Answers = Arc<Mutex<HashMap<EntryId, &'static str>>>;

/// Delivers `reports` like an uploader: connect (to wherever `addr` says now), hello, send with a window,
/// and on any loss of the connection send again whatever was not answered. Returns how many connections
/// it took.
async fn deliver(
    addr: watch::Receiver<SocketAddr>,
    reports: Vec<(EntryId, String)>,
    answers: Answers,
) -> usize {
    const WINDOW: usize = 8;
    let deadline = Instant::now() + STEP * 3;
    let mut todo: VecDeque<(EntryId, String)> = reports.into();
    let mut connections = 0;
    while !todo.is_empty() {
        assert!(Instant::now() < deadline, "could not deliver everything in time");
        let target = *addr.borrow();
        let Ok(mut ws) = connect(target, Some(TOKEN)).await else {
            // The collector is down: wait for the address to change, or try again shortly.
            let mut addr = addr.clone();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), addr.changed()).await;
            continue;
        };
        connections += 1;
        if ws.send(Message::text(hello_text("resilient"))).await.is_err() {
            continue;
        }
        let mut in_flight: HashMap<EntryId, String> = HashMap::new();
        let mut welcomed = false;
        loop {
            if welcomed {
                while in_flight.len() < WINDOW {
                    let Some((id, text)) = todo.pop_front() else { break };
                    if ws.feed(Message::text(text.clone())).await.is_err() {
                        todo.push_front((id, text));
                        break;
                    }
                    in_flight.insert(id, text);
                }
                let _ = ws.flush().await;
            }
            if in_flight.is_empty() && welcomed && todo.is_empty() {
                let _ = ws.close(None).await;
                break;
            }
            let next = tokio::time::timeout(STEP, ws.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                // Closed, broken or silent: everything unanswered goes back to the queue.
                todo.extend(in_flight.drain());
                break;
            };
            match serde_json::from_str::<ServerMessage>(&text).unwrap() {
                ServerMessage::Welcome(_) => welcomed = true,
                ServerMessage::Accepted { id } => {
                    in_flight.remove(&id);
                    answers.lock().unwrap().insert(id, "accepted");
                }
                ServerMessage::Duplicate { id } => {
                    in_flight.remove(&id);
                    answers.lock().unwrap().entry(id).or_insert("duplicate");
                }
                ServerMessage::RetryLater { id, .. } => {
                    let text = in_flight.remove(&id).unwrap();
                    todo.push_back((id, text));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_and_restarted_loses_no_accepted_report_and_stores_each_once() {
    const CLIENTS: usize = 8;
    const REPORTS: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path(), &[]);
    let (addr_tx, addr_rx) = watch::channel(collector.addr);
    let answers: Answers = Arc::default();
    let mut all = HashSet::new();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let reports: Vec<(EntryId, String)> = (0..REPORTS)
            .map(|n| {
                let id = EntryId::generate();
                (id, report_text(id, Kind::Crash, &crash_body((c + n) % 4, n)))
            })
            .collect();
        all.extend(reports.iter().map(|(id, _)| *id));
        clients.push(tokio::spawn(deliver(addr_rx.clone(), reports, Arc::clone(&answers))));
    }
    // Kill it once a third of the reports are answered: mid-stream, with batches in flight.
    let deadline = Instant::now() + STEP;
    while answers.lock().unwrap().len() < CLIENTS * REPORTS / 3 {
        assert!(Instant::now() < deadline, "too slow before the kill");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    collector.child.kill().unwrap(); // SIGKILL
    collector.child.wait().unwrap();
    let accepted_before_kill: Vec<EntryId> =
        answers.lock().unwrap().iter().filter(|(_, a)| **a == "accepted").map(|(id, _)| *id).collect();
    let stored_after_kill = stored_ids(dir.path());
    for id in &accepted_before_kill {
        assert!(
            stored_after_kill.contains(id),
            "{id} was answered accepted but is not in the store after SIGKILL"
        );
    }
    let restarted = Collector::start(dir.path(), &[]);
    addr_tx.send(restarted.addr).unwrap();
    let mut connections = 0;
    for c in clients {
        connections += tokio::time::timeout(STEP * 4, c).await.unwrap().unwrap();
    }
    assert!(connections > CLIENTS, "the kill cut connections that had to be made again");
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), CLIENTS * REPORTS, "every report was answered in the end");
    let stored = stored_ids(dir.path());
    assert_eq!(stored, all, "every report is stored");
    assert_store_consistent(dir.path());
    assert_eq!(scalar(dir.path(), "SELECT sum(count) FROM groups"), (CLIENTS * REPORTS) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_was_read_closes_1001_and_exits_0() {
    const CLIENTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path(), &[]);
    let accepted: Arc<Mutex<Vec<EntryId>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (addr, accepted) = (collector.addr, Arc::clone(&accepted));
        clients.push(tokio::spawn(async move {
            // Send new reports with a window of 8 until the server closes.
            let mut ws = connect(addr, Some(TOKEN)).await.unwrap();
            hello(&mut ws, "busy").await;
            let mut in_flight = 0;
            let mut n = 0;
            loop {
                while in_flight < 8 {
                    let id = EntryId::generate();
                    if ws.feed(Message::text(report_text(id, Kind::Crash, &crash_body(c, n)))).await.is_err()
                    {
                        break;
                    }
                    in_flight += 1;
                    n += 1;
                }
                let _ = ws.flush().await;
                match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(&t).unwrap() {
                        ServerMessage::Accepted { id } => {
                            accepted.lock().unwrap().push(id);
                            in_flight -= 1;
                        }
                        other => panic!("unexpected {other:?}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
                        return frame.map(|f| u16::from(f.code));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + STEP;
    while accepted.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "too slow before SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = rustix::process::Pid::from_child(&collector.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    for c in clients {
        let code = tokio::time::timeout(STEP, c).await.unwrap().unwrap();
        assert_eq!(code, Some(close::GOING_AWAY));
    }
    let status = collector.wait();
    assert!(status.success(), "exit status {status:?}");
    let stored = stored_ids(dir.path());
    let accepted = accepted.lock().unwrap();
    assert!(accepted.iter().all(|id| stored.contains(id)), "every report answered accepted is stored");
    assert_store_consistent(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_self_signed_certificate_serves_reports() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let store = dir.path().join("store");
    let collector = Collector::start(
        &store,
        &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
    );
    assert!(collector.url.starts_with("wss://"), "{}", collector.url);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(collector.addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let url = format!("wss://localhost:{}/ingest", collector.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(request(&url, Some(TOKEN)), tls).await.unwrap();
    hello(&mut ws, "tls-app").await;
    let id = EntryId::generate();
    send(&mut ws, report_text(id, Kind::Event, "{}")).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    bye(ws).await;
    // A plain ws:// client gets nowhere on the TLS port.
    assert!(connect(collector.addr, Some(TOKEN)).await.is_err());
    assert_eq!(stored_ids(&store).into_iter().collect::<Vec<_>>(), [id]);
}
