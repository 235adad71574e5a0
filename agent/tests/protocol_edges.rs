//! The edges of PROTOCOL.md 1.1 where the collector once departed from the document: what is answered
//! for one report (and so costs the client that report only) and what closes the connection, and the
//! case of ids.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use common::*;
use futures_util::StreamExt as _;
use lastword::protocol::{RejectReason, ServerMessage, close};
use lastword_collector::server::Limits;
use lastword_spool::{EntryId, Kind};
use tokio_tungstenite::tungstenite::Message;

/// A report message with the given fields after `type` (its JSON text, written by hand).
fn report_with(fields: &str) -> String {
    format!(r#"{{"type":"report",{fields}}}"#)
}

/// The next text message as it came on the wire.
async fn recv_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Sends a good report on `ws` and checks it is accepted: the connection was not closed.
async fn still_open(ws: &mut Ws) -> EntryId {
    let id = EntryId::generate();
    send(ws, report_text(id, Kind::Crash, &crash_body(1, 1))).await;
    assert_eq!(recv(ws).await, ServerMessage::Accepted { id }, "the connection goes on");
    id
}

fn rejected(answer: ServerMessage) -> (EntryId, RejectReason, String) {
    match answer {
        ServerMessage::Rejected { id, reason, detail } => (id, reason, detail),
        other => panic!("expected rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_encoding_is_rejected_unsupported_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits::default(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    for encoding in [r#""zstd""#, "7", r#""JSON""#] {
        let id = EntryId::generate();
        let text = report_with(&format!(
            r#""id":"{id}","kind":"log","created_ms":1,"encoding":{encoding},"body":{{"message":"m"}}"#
        ));
        send(&mut ws, text).await;
        let (answered, reason, detail) = rejected(recv(&mut ws).await);
        assert_eq!((answered, reason), (id, RejectReason::Unsupported), "{encoding}: {detail}");
        assert!(detail.contains("encoding"), "{detail}");
    }
    let good = still_open(&mut ws).await;
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(stored_ids(dir.path()), [good].into_iter().collect(), "only the good report is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_created_ms_or_body_is_rejected_malformed_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits::default(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    let faulty = [
        r#""kind":"crash","body":{"message":"m"}"#,
        r#""kind":"crash","created_ms":1"#,
        r#""kind":"crash","created_ms":"yesterday","body":{"message":"m"}"#,
        r#""kind":"crash","created_ms":-1,"body":{"message":"m"}"#,
        r#""kind":"crash","created_ms":1,"body":null"#,
    ];
    for fields in faulty {
        let id = EntryId::generate();
        send(&mut ws, report_with(&format!(r#""id":"{id}",{fields}"#))).await;
        let (answered, reason, detail) = rejected(recv(&mut ws).await);
        assert_eq!((answered, reason), (id, RejectReason::Malformed), "{fields}: {detail}");
    }
    let good = still_open(&mut ws).await;
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(stored_ids(dir.path()), [good].into_iter().collect(), "only the good report is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_an_id_still_closes_1007_there_is_nothing_to_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits::default(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    send(&mut ws, report_with(r#""kind":"crash","created_ms":1,"encoding":"zstd","body":{}"#)).await;
    let (code, reason) = recv_close(&mut ws).await;
    assert_eq!(code, close::INVALID_PAYLOAD, "{reason}");
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowercase_id_is_the_same_report_and_is_answered_in_upper_case() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits::default(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    let id = EntryId::generate();
    let upper = id.to_string();
    let lower = upper.to_ascii_lowercase();
    assert_ne!(upper, lower, "an id with letters in it");
    let body = r#"{"message":"boom"}"#;
    send(&mut ws, report_with(&format!(r#""id":"{lower}","kind":"crash","created_ms":1,"body":{body}"#)))
        .await;
    let answer = recv_text(&mut ws).await;
    assert_eq!(answer, format!(r#"{{"type":"accepted","id":"{upper}"}}"#), "the canonical form");
    // The same id in upper case is the same report: stored once.
    send(&mut ws, report_with(&format!(r#""id":"{upper}","kind":"crash","created_ms":1,"body":{body}"#)))
        .await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Duplicate { id });
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM reports"), 1);
}
