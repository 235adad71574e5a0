//! One connection, one task (PROTOCOL.md): TLS and websocket handshakes, hello and welcome, reports and
//! their answers, close codes.
//!
//! The task owns the websocket alone. Its `select!` waits only on cancel-safe things (the stream's next
//! message, the next ready answer, the shutdown token, a timer); every send happens in the loop body,
//! never inside `select!`, so no message is ever half sent (tokio-tungstenite #344). After the server
//! sends a close frame it keeps reading until the stream ends (#117), and it flushes after every ping so
//! the pong leaves (#393).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword_protocol::{
    BodyError, ClientMessage, Encoding, Hello, PROTOCOL_VERSION, RejectReason, Report, ServerMessage,
    Software, Welcome, close,
};
use lastword_spool::{EntryId, Kind};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::committer::Job;
use super::handshake;
use super::{Limits, ServerState};
use crate::fingerprint;
use crate::store::{AgentLosses, NewReport, Origin};
use crate::symbolize::Symbols;

/// How long the server waits for the peer's side of a close before it drops the connection.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// The longest close reason (RFC 6455: 125 bytes of payload, 2 of them the code).
const MAX_REASON: usize = 123;

/// Serves one accepted TCP connection to its end. Never panics on anything the peer sends. `place` is
/// its handshake place (`Limits::max_handshakes`), given back when the handshake ends, whichever way.
pub(crate) async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerState>,
    place: OwnedSemaphorePermit,
) {
    // Answers are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + Duration::from_millis(shared.limits.handshake_timeout_ms);
    match shared.tls.clone() {
        Some(acceptor) => {
            // A failed or slow TLS handshake: nothing to answer.
            let accepted = tokio::select! {
                () = shared.shutdown.cancelled() => return,
                accepted = timeout_at(deadline, acceptor.accept(tcp)) => accepted,
            };
            if let Ok(Ok(tls)) = accepted {
                upgrade(tls, peer, &shared, place, deadline).await;
            }
        }
        None => upgrade(tcp, peer, &shared, place, deadline).await,
    }
}

async fn upgrade<S>(
    stream: S,
    peer: SocketAddr,
    shared: &ServerState,
    place: OwnedSemaphorePermit,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tokens = &shared.tokens;
    // The session slot, taken when the request presents a valid token.
    let mut session = None;
    // The error type is tungstenite's, whose Callback trait fixes it.
    #[allow(clippy::result_large_err)]
    let callback = |request: &_, response| {
        let (response, slot) = handshake::check(request, response, tokens, &shared.sessions)?;
        session = Some(slot);
        Ok(response)
    };
    let config = ws_config(&shared.limits);
    // A refused handshake has had its HTTP error response written by tungstenite: nothing more to do.
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    // A shutdown does not wait for handshakes in progress: they are simply dropped.
    let upgraded = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        upgraded = timeout_at(deadline, handshake) => upgraded,
    };
    // The unauthenticated part is over: its place goes to the next socket.
    drop(place);
    if let (Ok(Ok(ws)), Some(slot)) = (upgraded, session) {
        Connection::new(ws, peer, shared).serve().await;
        drop(slot);
    }
}

fn ws_config(limits: &Limits) -> WebSocketConfig {
    let readable = limits.max_message_bytes.saturating_mul(2);
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 32 * 1024;
    config.write_buffer_size = 32 * 1024;
    config.max_write_buffer_size = limits.max_write_buffer_bytes;
    config.max_message_size = Some(readable);
    config.max_frame_size = Some(readable);
    config
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a connection ends.
enum End {
    /// Send this close frame, then read until the peer's close or the end of the stream.
    Close(u16, String),
    /// The peer sent its close: tungstenite queued the reply; flush it and read to the end.
    PeerClosed,
    /// Nothing more can be said (the peer is gone or does not read): drop the connection.
    Gone,
}

impl End {
    fn close(code: u16, reason: impl Into<String>) -> Self {
        End::Close(code, reason.into())
    }
}

/// The end a read error calls for.
fn read_error(e: &WsError) -> End {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            End::close(close::TOO_BIG, format!("message of {size} bytes is over the limit of {max_size}"))
        }
        WsError::Capacity(e) => End::close(close::TOO_BIG, e.to_string()),
        WsError::Utf8(_) => End::close(close::INVALID_PAYLOAD, "text frame is not UTF-8"),
        // The peer went away without a close: nobody to tell.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        WsError::Protocol(p) => End::close(u16::from(CloseCode::Protocol), p.to_string()),
        _ => End::Gone,
    }
}

/// A message after the hello, read in one pass with the body left as borrowed raw JSON, without
/// parsing the message twice and copying the body twice. An unknown type, a bad id or kind are errors
/// of the message (PROTOCOL.md, "report": without them there is no report to answer); the other fields
/// are kept raw, so that what is wrong with them is answered for the report alone ([`ReportFields`]).
/// Unknown fields are ignored.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    tag: Cow<'a, str>,
    #[serde(default)]
    id: Option<EntryId>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default, borrow)]
    created_ms: Option<&'a RawValue>,
    #[serde(default, borrow)]
    encoding: Option<&'a RawValue>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

/// The fields of a report besides its id and kind, checked.
struct ReportFields<'a> {
    created_ms: u64,
    encoding: Encoding,
    body: &'a RawValue,
}

impl<'a> Incoming<'a> {
    /// The report's other fields, or why it is rejected: a missing `created_ms` or `body` is
    /// malformed, an encoding other than `json` and `deflate` unsupported.
    fn fields(&self) -> Result<ReportFields<'a>, (RejectReason, String)> {
        let created_ms = self.created_ms.and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok());
        let (Some(created_ms), Some(body)) = (created_ms, self.body) else {
            let detail = "a report needs created_ms (an integer of at least 0) and body";
            return Err((RejectReason::Malformed, detail.into()));
        };
        let encoding = match self.encoding {
            None => Encoding::default(),
            Some(raw) => serde_json::from_str::<Encoding>(raw.get()).map_err(|_| {
                let shown: String = raw.get().chars().take(40).collect();
                (
                    RejectReason::Unsupported,
                    format!("unknown encoding {shown}; this server reads json and deflate"),
                )
            })?,
        };
        Ok(ReportFields { created_ms, encoding, body })
    }
}

type Answer = Pin<Box<dyn Future<Output = ServerMessage> + Send>>;

struct Connection<'a, S> {
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    shared: &'a ServerState,
    /// Answers not yet sent, ready or waiting for the committer.
    pending: FuturesUnordered<Answer>,
    /// Reports read and not yet answered on the wire (`pending` plus those being prepared).
    in_flight: usize,
}

enum Event {
    Shutdown,
    Answer(ServerMessage),
    Read(Option<Result<Message, WsError>>),
    Idle,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    fn new(ws: WebSocketStream<S>, peer: SocketAddr, shared: &'a ServerState) -> Self {
        Self { ws, peer, shared, pending: FuturesUnordered::new(), in_flight: 0 }
    }

    fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    async fn serve(mut self) {
        let end = match self.hello().await {
            Ok(origin) => self.reports(origin).await,
            Err(end) => end,
        };
        self.finish(end).await;
    }

    /// Sends messages and flushes once, within the write timeout.
    async fn send_all(&mut self, messages: impl IntoIterator<Item = Message>) -> Result<(), End> {
        let write = Duration::from_millis(self.limits().write_timeout_ms);
        let ws = &mut self.ws;
        let sent = timeout(write, async move {
            for m in messages {
                ws.feed(m).await?;
            }
            ws.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(End::Gone),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.send_all(None).await
    }

    /// Waits for a valid hello and answers it with the welcome.
    async fn hello(&mut self) -> Result<Arc<Origin>, End> {
        let deadline = Instant::now() + Duration::from_millis(self.limits().hello_timeout_ms);
        let hello = loop {
            let read = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return Err(End::close(close::GOING_AWAY, "server shutting down")),
                read = timeout_at(deadline, self.ws.next()) => read,
            };
            let message = match read {
                Err(_) => {
                    let ms = self.limits().hello_timeout_ms;
                    return Err(End::close(close::TIMEOUT, format!("no hello within {ms} ms")));
                }
                Ok(None) => return Err(End::Gone),
                Ok(Some(Err(e))) => return Err(read_error(&e)),
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => match ClientMessage::from_json(&text) {
                    Ok(ClientMessage::Hello(h)) => break h,
                    Ok(ClientMessage::Report(_)) => {
                        return Err(End::close(close::BAD_HELLO, "the first message must be hello"));
                    }
                    Err(e) => return Err(End::close(close::BAD_HELLO, format!("not a valid hello: {e}"))),
                },
                Message::Binary(_) => return Err(binary()),
                Message::Ping(_) => self.flush().await?,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(_) => return Err(End::PeerClosed),
            }
        };
        let Hello { protocol, agent, app, release, host, losses } = hello;
        if protocol != PROTOCOL_VERSION {
            return Err(End::close(
                close::BAD_HELLO,
                format!("unsupported protocol {protocol}; this server speaks 1"),
            ));
        }
        let origin = Arc::new(Origin { agent, app, release, host });
        let received_ms = now_ms();
        // Nobody waits for the counters; if the writer is gone the next hello brings them again.
        let _ = self.shared.jobs.send(Job::Losses(AgentLosses {
            origin: Arc::clone(&origin),
            losses,
            received_ms,
        }));
        let limits = self.limits();
        let welcome = ServerMessage::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            server: Software { name: "lastword-collect".into(), version: env!("CARGO_PKG_VERSION").into() },
            max_message_bytes: limits.max_message_bytes as u64,
            max_in_flight: limits.max_in_flight,
            idle_timeout_ms: limits.idle_timeout_ms,
            max_inflated_bytes: Some(limits.max_inflated_bytes as u64),
        });
        self.send_all([to_message(&welcome)]).await?;
        Ok(origin)
    }

    /// Reads reports and sends answers until the connection must end.
    async fn reports(&mut self, origin: Arc<Origin>) -> End {
        let idle = Duration::from_millis(self.limits().idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle;
        loop {
            let event = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => Event::Shutdown,
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => Event::Answer(answer),
                read = timeout_at(idle_deadline, self.ws.next()) => match read {
                    Ok(read) => Event::Read(read),
                    Err(_) => Event::Idle,
                },
            };
            let result = match event {
                Event::Shutdown => return self.drain().await,
                Event::Answer(first) => self.send_answers(first).await,
                Event::Idle => {
                    let ms = self.limits().idle_timeout_ms;
                    return End::close(close::TIMEOUT, format!("idle for {ms} ms"));
                }
                Event::Read(None) => return End::Gone,
                Event::Read(Some(Err(e))) => return read_error(&e),
                Event::Read(Some(Ok(message))) => {
                    idle_deadline = Instant::now() + idle;
                    match message {
                        Message::Text(text) => self.on_text(text, &origin).await,
                        Message::Binary(_) => Err(binary()),
                        Message::Ping(_) => self.flush().await,
                        Message::Pong(_) | Message::Frame(_) => Ok(()),
                        Message::Close(_) => Err(End::PeerClosed),
                    }
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Sends `first` and every other answer already ready, with one flush.
    async fn send_answers(&mut self, first: ServerMessage) -> Result<(), End> {
        let mut messages = vec![to_message(&first)];
        while let Some(Some(answer)) = self.pending.next().now_or_never() {
            messages.push(to_message(&answer));
        }
        let count = messages.len();
        self.send_all(messages).await?;
        self.in_flight -= count;
        Ok(())
    }

    /// Shutdown: reads nothing more, sends every answer still owed (the committer goes on until every
    /// connection is done), then closes with 1001.
    async fn drain(&mut self) -> End {
        let deadline = Instant::now() + Duration::from_millis(self.limits().write_timeout_ms);
        while let Ok(Some(answer)) = timeout_at(deadline, self.pending.next()).await {
            if let Err(end) = self.send_answers(answer).await {
                return end;
            }
        }
        End::close(close::GOING_AWAY, "server shutting down")
    }

    async fn on_text(&mut self, text: Utf8Bytes, origin: &Arc<Origin>) -> Result<(), End> {
        let incoming = match serde_json::from_str::<Incoming<'_>>(&text) {
            Ok(incoming) => incoming,
            Err(e) => return Err(End::close(close::INVALID_PAYLOAD, format!("invalid message: {e}"))),
        };
        let (id, kind) = match &incoming {
            Incoming { tag, id: Some(id), kind: Some(kind), .. } if tag == "report" => (*id, *kind),
            Incoming { tag, .. } if tag == "report" => {
                return Err(End::close(
                    close::INVALID_PAYLOAD,
                    "invalid message: a report needs id and kind",
                ));
            }
            Incoming { tag, .. } if tag == "hello" => {
                return Err(End::close(close::BAD_HELLO, "hello sent twice"));
            }
            Incoming { tag, .. } => {
                return Err(End::close(
                    close::INVALID_PAYLOAD,
                    format!("invalid message: unknown type {tag:?}"),
                ));
            }
        };
        // From here on the report has an id to answer: whatever else is wrong with it costs the client
        // this report only, never the connection (and the answers of every report in flight on it).
        self.take_slot()?;
        let max = self.limits().max_message_bytes;
        if text.len() > max {
            // Readable (up to twice the limit) but too long to store.
            let detail = format!("message of {} bytes is over the limit of {max}", text.len());
            self.answer_now(reject(id, RejectReason::TooLarge, detail));
            return Ok(());
        }
        let checked = incoming.fields();
        drop(incoming);
        let ReportFields { created_ms, encoding, body } = match checked {
            Ok(fields) => fields,
            Err((reason, detail)) => {
                self.answer_now(reject(id, reason, detail));
                return Ok(());
            }
        };
        let received_ms = now_ms();
        let retry = ServerMessage::RetryLater { id, delay_ms: self.limits().retry_delay_ms };
        let budget = Arc::clone(&self.shared.queue_bytes);
        let max_inflated = self.limits().max_inflated_bytes;
        let queue_bytes = self.limits().queue_bytes;
        // The byte budget is charged for the body's real length before the body is allocated: a
        // compressed one is measured by a first pass of the inflater (lastword_protocol).
        let prepared = if encoding == Encoding::Deflate {
            let report = Report { id, kind, created_ms, encoding, body: body.to_owned() };
            drop(text);
            let origin = Arc::clone(origin);
            // Inflating may take a while (up to max_inflated_bytes, twice): not on a runtime thread.
            let prepare = move || prepare(&report, origin, received_ms, max_inflated, &budget, queue_bytes);
            tokio::task::spawn_blocking(prepare).await.unwrap_or_else(|e| {
                Err(Unprepared::Answer(reject(id, RejectReason::Malformed, format!("cannot inflate: {e}"))))
            })
        } else {
            // Within max_message_bytes, so within max_inflated_bytes.
            let prepared = match budget.try_acquire_many_owned(cost(body.get().len(), queue_bytes)) {
                Ok(permit) => {
                    let body = body.get().to_owned();
                    Ok((new_report(id, kind, created_ms, body, Arc::clone(origin), received_ms), permit))
                }
                Err(_) => Err(Unprepared::NoRoom),
            };
            drop(text);
            prepared
        };
        let (report, budget) = match prepared {
            Ok(prepared) => prepared,
            // The store is behind: postpone, never drop.
            Err(Unprepared::NoRoom) => {
                self.answer_now(retry);
                return Ok(());
            }
            Err(Unprepared::Answer(answer)) => {
                self.answer_now(answer);
                return Ok(());
            }
        };
        let report = match &self.shared.symbols {
            Some(symbols) => symbolized(symbols, report).await,
            None => report,
        };
        let (answer, answered) = oneshot::channel();
        if self.shared.jobs.send(Job::Report { report, answer, budget }).is_err() {
            self.answer_now(retry);
            return Ok(());
        }
        // If the writer drops the sender without answering (it never does), the report is not known to
        // be stored: ask for it again.
        self.pending.push(Box::pin(answered.map(move |a| a.unwrap_or(retry))));
        Ok(())
    }

    /// Counts one more unanswered report, or ends the connection if that is one too many.
    fn take_slot(&mut self) -> Result<(), End> {
        let max = self.limits().max_in_flight as usize;
        if self.in_flight >= max {
            return Err(End::close(close::POLICY, format!("more than {max} reports unanswered")));
        }
        self.in_flight += 1;
        Ok(())
    }

    fn answer_now(&mut self, answer: ServerMessage) {
        self.pending.push(Box::pin(std::future::ready(answer)));
    }

    /// Says goodbye: sends the close frame if there is one to send, then reads until the stream ends so
    /// that the close handshake completes. A stream that failed mid-frame cannot be read as websocket
    /// any more: its remaining bytes are read raw and dropped, so the peer still gets the close frame
    /// instead of a reset.
    async fn finish(self, end: End) {
        let Self { mut ws, peer, .. } = self;
        match end {
            End::Gone => return,
            End::PeerClosed => {
                let _ = timeout(CLOSE_LINGER, ws.flush()).await;
            }
            End::Close(code, reason) => {
                let reason = truncate(reason);
                if code != close::GOING_AWAY {
                    tracing::info!("closing {peer}: {code} {reason}");
                }
                let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason) };
                if !matches!(timeout(CLOSE_LINGER, ws.send(Message::Close(Some(frame)))).await, Ok(Ok(()))) {
                    return;
                }
            }
        }
        let deadline = Instant::now() + CLOSE_LINGER;
        use futures_util::stream::FusedStream as _;
        while !ws.is_terminated() {
            match timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(None) => return,
                Ok(Some(Err(_))) => break,
                Err(_) => return,
            }
        }
        // The websocket layer failed (mid-frame): drain raw bytes, bounded in time and amount.
        let mut inner = ws.into_inner();
        let _ = timeout_at(deadline, inner.shutdown()).await;
        let mut budget = 64usize << 20;
        let mut buf = vec![0u8; 64 * 1024];
        while budget > 0 {
            match timeout_at(deadline, inner.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
                _ => return,
            }
        }
    }
}

fn binary() -> End {
    End::close(close::UNSUPPORTED_DATA, "binary frames are not part of lastword.v1")
}

fn reject(id: EntryId, reason: RejectReason, detail: String) -> ServerMessage {
    ServerMessage::Rejected { id, reason, detail }
}

/// Why a report was not made ready for the store.
enum Unprepared {
    /// The byte budget has no room for its body: answer retry_later.
    NoRoom,
    /// Answer this instead (rejected).
    Answer(ServerMessage),
}

/// What a body of `len` bytes costs the byte budget (its bookkeeping beside it), never more than the
/// whole budget, so that a body within the limits can always be taken once the queue is empty.
fn cost(len: usize, queue_bytes: usize) -> u32 {
    u32::try_from(len.saturating_add(512).min(queue_bytes)).unwrap_or(u32::MAX)
}

/// Inflates (at most `max_inflated` bytes) and reads a report's body, with its share of the byte
/// budget taken before the body is allocated.
fn prepare(
    report: &Report,
    origin: Arc<Origin>,
    received_ms: u64,
    max_inflated: usize,
    budget: &Arc<Semaphore>,
    queue_bytes: usize,
) -> Result<(NewReport, OwnedSemaphorePermit), Unprepared> {
    let id = report.id;
    let mut permit = None;
    let granted = |len| {
        permit = Arc::clone(budget).try_acquire_many_owned(cost(len, queue_bytes)).ok();
        permit.is_some()
    };
    let body = match report.body_json_within(max_inflated, granted) {
        Ok(body) => body,
        Err(BodyError::NoRoom { .. }) => return Err(Unprepared::NoRoom),
        Err(e @ BodyError::TooLarge { .. }) => {
            return Err(Unprepared::Answer(reject(id, RejectReason::TooLarge, e.to_string())));
        }
        Err(e) => return Err(Unprepared::Answer(reject(id, RejectReason::Malformed, e.to_string()))),
    };
    let permit = permit.ok_or(Unprepared::NoRoom)?;
    Ok((new_report(id, report.kind, report.created_ms, body, origin, received_ms), permit))
}

/// A report ready for the store, with its summary and fingerprint.
fn new_report(
    id: EntryId,
    kind: Kind,
    created_ms: u64,
    body: String,
    origin: Arc<Origin>,
    received_ms: u64,
) -> NewReport {
    let digest = fingerprint::digest(kind, &body);
    // The report's own context names its application; the hello is the fallback.
    let origin = match digest.app {
        Some(app) if app != origin.app || (digest.release.is_some() && digest.release != origin.release) => {
            Arc::new(Origin {
                app,
                release: digest.release.or_else(|| origin.release.clone()),
                ..(*origin).clone()
            })
        }
        _ => origin,
    };
    NewReport {
        id,
        kind,
        origin,
        created_ms,
        received_ms,
        fingerprint: digest.fingerprint,
        summary: digest.summary,
        body,
        waits: Vec::new(),
    }
}

/// `report` with the frames the collector's debug files name, its fingerprint and summary read again
/// from the new body, and the build ids it still waits for (crate::symbolize).
async fn symbolized(symbols: &Symbols, report: NewReport) -> NewReport {
    let found = symbols.at_ingest(report.kind, &report.body).await;
    let mut report = match found.body {
        Some(body) => {
            new_report(report.id, report.kind, report.created_ms, body, report.origin, report.received_ms)
        }
        None => report,
    };
    report.waits = found.waits;
    report
}

fn to_message(answer: &ServerMessage) -> Message {
    // These messages hold only strings and numbers: serializing them cannot fail.
    Message::text(serde_json::to_string(answer).unwrap_or_default())
}

/// Cuts a close reason to what a close frame can carry, at a character boundary.
fn truncate(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_REASON);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into()), "short");
    }
}
