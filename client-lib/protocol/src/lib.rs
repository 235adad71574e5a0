//! # lastword-protocol
//!
//! The wire protocol between uploaders and collectors, subprotocol `lastword.v1` (PROTOCOL.md beside
//! this crate says what each message means and what each side does with it).
//!
//! Both ends use these types: the uploader of the client library (`lastword`, which re-exports this
//! crate as `lastword::protocol`) and the collector of `lastword-agent`. The crate holds the messages
//! only: no runtime, no websocket, no I/O.

mod source_path;

pub use source_path::normalize_source_path;

use std::fmt::Write as _;
use std::io::{Read, Write};

use base64::Engine as _;
use lastword_spool::{EntryId, Kind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The WebSocket subprotocol name of this version.
pub const SUBPROTOCOL: &str = "lastword.v1";
/// The protocol version carried in `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The HTTP path of the ingest endpoint.
pub const INGEST_PATH: &str = "/ingest";
/// Bodies longer than this are sent with the `deflate` encoding.
pub const COMPRESS_ABOVE: usize = 8 * 1024;
/// Decompressed bodies may not be longer than this unless the server's welcome says otherwise
/// ([`Welcome::max_inflated_bytes`]; a defence against compression bombs).
pub const MAX_DECOMPRESSED: usize = 64 << 20;
/// The buffer a `deflate` body is inflated through, beside the body itself.
const INFLATE_CHUNK: usize = 16 * 1024;

/// WebSocket close codes used by the protocol (PROTOCOL.md, "Close codes").
pub mod close {
    /// Normal end.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message that is not valid JSON of a known type.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Too many reports unanswered.
    pub const POLICY: u16 = 1008;
    /// A frame far over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// An internal server error.
    pub const INTERNAL: u16 = 1011;
    /// Bad or missing hello.
    pub const BAD_HELLO: u16 = 4400;
    /// No hello in time, or idle too long.
    pub const TIMEOUT: u16 = 4408;
}

/// A program's name and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What a spool could not deliver, as totals since the spool was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Losses {
    /// Log records dropped because the writer's queue was full.
    pub logs_dropped: u64,
    /// Entries evicted from a full spool.
    pub evicted: u64,
    /// Entries quarantined (damaged, or rejected by a collector).
    pub quarantined: u64,
    /// Crash reports not stored because the same crash repeated too often (crash loop).
    pub crash_loop_suppressed: u64,
    /// Events (`capture_error`, `capture_message`) dropped because the writer's queue was full.
    /// Optional on the wire (0 when absent: senders before it did not count them).
    pub events_dropped: u64,
}

/// The client's first message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The sending agent.
    pub agent: Software,
    /// The application whose reports these are.
    pub app: String,
    /// The application's release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The spool's loss counters.
    #[serde(default)]
    pub losses: Losses,
}

/// How a report's body is carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The body is embedded as a JSON value.
    #[default]
    Json,
    /// The body is a base64 string of the raw DEFLATE of the JSON.
    Deflate,
}

/// One spool entry on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The entry's id: the idempotency key.
    pub id: EntryId,
    /// The entry's kind.
    pub kind: Kind,
    /// When the entry was written (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// How `body` is carried.
    #[serde(default)]
    pub encoding: Encoding,
    /// The body as the encoding says.
    pub body: Box<RawValue>,
}

impl PartialEq for Report {
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.kind, self.created_ms, self.encoding, self.body.get())
            == (other.id, other.kind, other.created_ms, other.encoding, other.body.get())
    }
}

/// Why a report's body could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not valid JSON.
    #[error("body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The deflate body is not a base64 string.
    #[error("deflate body is not a base64 string")]
    NotBase64,
    /// The deflate stream is broken.
    #[error("deflate body cannot be inflated: {0}")]
    Inflate(std::io::Error),
    /// The inflated body is larger than the limit it was read with ([`MAX_DECOMPRESSED`] for
    /// [`Report::body_json`]).
    #[error("inflated body is larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The caller did not grant the memory for the body ([`Report::body_json_within`]).
    #[error("no room for a body of {len} bytes")]
    NoRoom {
        /// The body's length.
        len: usize,
    },
}

impl Report {
    /// A report for an entry whose body is JSON. Bodies over [`COMPRESS_ABOVE`] are compressed.
    pub fn new(id: EntryId, kind: Kind, created_ms: u64, body: &[u8]) -> Result<Self, BodyError> {
        let text = std::str::from_utf8(body).map_err(|e| {
            BodyError::NotJson(serde::de::Error::custom(format_args!("body is not UTF-8: {e}")))
        })?;
        // Checks that the body is JSON and keeps its bytes as they are.
        let raw = RawValue::from_string(text.trim().to_owned())?;
        if body.len() <= COMPRESS_ABOVE {
            return Ok(Self { id, kind, created_ms, encoding: Encoding::Json, body: raw });
        }
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(raw.get().as_bytes()).map_err(BodyError::Inflate)?;
        let compressed = encoder.finish().map_err(BodyError::Inflate)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(compressed);
        let body = RawValue::from_string(serde_json::to_string(&b64)?)?;
        Ok(Self { id, kind, created_ms, encoding: Encoding::Deflate, body })
    }

    /// The body as JSON text, inflated if it was compressed, at most [`MAX_DECOMPRESSED`] bytes.
    pub fn body_json(&self) -> Result<String, BodyError> {
        self.body_json_within(MAX_DECOMPRESSED, |_| true)
    }

    /// The body as JSON text, inflated if it was compressed, at most `max` bytes long. `grant` is
    /// called once, with the body's length, before the body is allocated; `false` stops with
    /// [`BodyError::NoRoom`] (a server charges its memory budget there).
    ///
    /// A `deflate` body is inflated twice: once to count its length, with nothing allocated but a
    /// buffer of 16 KiB, stopping with [`BodyError::TooLarge`] as soon as it passes `max`; then into a
    /// string of exactly that length. So a compression bomb costs CPU for `max` bytes at most, and no
    /// memory beyond the buffer; a body within the limit costs its own length.
    pub fn body_json_within(
        &self,
        max: usize,
        grant: impl FnOnce(usize) -> bool,
    ) -> Result<String, BodyError> {
        match self.encoding {
            Encoding::Json => {
                let len = self.body.get().len();
                if len > max {
                    return Err(BodyError::TooLarge { max });
                }
                if !grant(len) {
                    return Err(BodyError::NoRoom { len });
                }
                Ok(self.body.get().to_owned())
            }
            Encoding::Deflate => {
                let b64: String = serde_json::from_str(self.body.get()).map_err(|_| BodyError::NotBase64)?;
                let compressed = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| BodyError::NotBase64)?;
                let mut chunk = vec![0u8; INFLATE_CHUNK];
                let mut len = 0usize;
                inflate(&compressed, &mut chunk, |bytes| {
                    len += bytes.len();
                    if len > max { Err(BodyError::TooLarge { max }) } else { Ok(()) }
                })?;
                if !grant(len) {
                    return Err(BodyError::NoRoom { len });
                }
                let mut out = Vec::new();
                out.try_reserve_exact(len).map_err(|_| BodyError::NoRoom { len })?;
                inflate(&compressed, &mut chunk, |bytes| {
                    // The same stream inflates to the same bytes: this never passes `len`, and so
                    // never reallocates.
                    if out.len() + bytes.len() > len {
                        return Err(BodyError::TooLarge { max });
                    }
                    out.extend_from_slice(bytes);
                    Ok(())
                })?;
                let text = String::from_utf8(out).map_err(|e| {
                    BodyError::NotJson(serde::de::Error::custom(format_args!("body is not UTF-8: {e}")))
                })?;
                serde_json::from_str::<&RawValue>(&text)?;
                Ok(text)
            }
        }
    }
}

/// Inflates the raw DEFLATE `compressed` through `chunk`, handing each piece to `sink`; stops at the
/// first error of either.
fn inflate(
    compressed: &[u8],
    chunk: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), BodyError>,
) -> Result<(), BodyError> {
    let mut decoder = flate2::read::DeflateDecoder::new(compressed);
    loop {
        match decoder.read(chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => sink(&chunk[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BodyError::Inflate(e)),
        }
    }
}

/// A message from client to server.
///
/// Encode with [`ClientMessage::to_json`] and decode with [`ClientMessage::from_json`]: a report's body
/// is kept as raw JSON text, which serde's internally tagged enums cannot carry, so the `type` tag is
/// read first and the message parsed by it.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// The first message.
    Hello(Hello),
    /// One entry.
    Report(Report),
}

#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    tag: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(rename = "type", borrow)]
    tag: std::borrow::Cow<'a, str>,
}

impl ClientMessage {
    /// The message as one JSON text.
    pub fn to_json(&self) -> String {
        let result = match self {
            ClientMessage::Hello(h) => serde_json::to_string(&Tagged { tag: "hello", inner: h }),
            ClientMessage::Report(r) => serde_json::to_string(&Tagged { tag: "report", inner: r }),
        };
        // Serializing these types cannot fail: every field is a string, a number or valid raw JSON.
        result.unwrap_or_default()
    }

    /// The text of the report message for an entry, the same text as
    /// `ClientMessage::Report(Report::new(id, kind, created_ms, body)?).to_json()`, with the same
    /// errors, made with one check of the body and one copy of it (the uploader's path, once per
    /// entry sent): the body is checked where it lies instead of copied first, and written into a
    /// string of the final length instead of through serde's flattening serializer.
    pub fn report_json(id: EntryId, kind: Kind, created_ms: u64, body: &[u8]) -> Result<String, BodyError> {
        Self::report_text(id, kind, created_ms, body, true)
    }

    /// [`ClientMessage::report_json`] for a body known to be one JSON value: one its writer made with
    /// a JSON serializer and that comes back unchanged (a spool entry flagged `FLAG_JSON`, whose
    /// checksum the spool verified). Only that it is UTF-8 is checked. Parsing a body again to check
    /// it cost the uploader a tenth of its time per entry. A body that is not JSON after all makes a
    /// message that is not JSON, which a collector refuses by closing the connection (code 1007).
    /// Bodies over [`COMPRESS_ABOVE`] are checked as they are deflated.
    pub fn report_json_of_json(
        id: EntryId,
        kind: Kind,
        created_ms: u64,
        body: &[u8],
    ) -> Result<String, BodyError> {
        Self::report_text(id, kind, created_ms, body, false)
    }

    fn report_text(
        id: EntryId,
        kind: Kind,
        created_ms: u64,
        body: &[u8],
        check: bool,
    ) -> Result<String, BodyError> {
        if body.len() > COMPRESS_ABOVE {
            return Ok(ClientMessage::Report(Report::new(id, kind, created_ms, body)?).to_json());
        }
        let text = std::str::from_utf8(body).map_err(|e| {
            BodyError::NotJson(serde::de::Error::custom(format_args!("body is not UTF-8: {e}")))
        })?;
        let text = text.trim();
        if check {
            // Checks that the body is one JSON value, as RawValue::from_string does, without a copy.
            let _: &RawValue = serde_json::from_str(text)?;
        } else if text.is_empty() {
            // The one body the message's own syntax cannot survive unchecked (`"body":}`).
            return Err(BodyError::NotJson(serde::de::Error::custom("the body is empty")));
        }
        let kind = kind.as_str();
        let mut json = String::with_capacity(text.len() + 112);
        // The id is hex digits and a dash, the kind a lowercase word: neither needs escaping.
        let _ = write!(
            json,
            r#"{{"type":"report","id":"{id}","kind":"{kind}","created_ms":{created_ms},"encoding":"json","body":"#
        );
        json.push_str(text);
        json.push('}');
        Ok(json)
    }

    /// Parses one message. Unknown fields are ignored; an unknown `type` is an error.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let Tag { tag } = serde_json::from_str(text)?;
        match tag.as_ref() {
            "hello" => Ok(ClientMessage::Hello(serde_json::from_str(text)?)),
            "report" => Ok(ClientMessage::Report(serde_json::from_str(text)?)),
            other => Err(serde::de::Error::custom(format_args!("unknown message type {other:?}"))),
        }
    }
}

/// The server's answer to `hello`: the limits it enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Must be [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The collector.
    pub server: Software,
    /// The longest report message the server reads.
    pub max_message_bytes: u64,
    /// How many reports may be unanswered at once on a connection.
    pub max_in_flight: u32,
    /// After how long without a message the server closes the connection.
    pub idle_timeout_ms: u64,
    /// The longest a `deflate` body may be once inflated; [`MAX_DECOMPRESSED`] when absent (servers
    /// before protocol 1.2 do not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflated_bytes: Option<u64>,
}

/// Why the server will never store a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Longer than `max_message_bytes`.
    TooLarge,
    /// The body is not what its kind and encoding say.
    Malformed,
    /// Something the server does not support (an encoding, say).
    Unsupported,
}

impl RejectReason {
    /// The reason's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::Malformed => "malformed",
            RejectReason::Unsupported => "unsupported",
        }
    }
}

/// A message from server to client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// Stored durably: the client deletes the entry.
    Accepted {
        /// The report's id.
        id: EntryId,
    },
    /// Stored before: the client deletes the entry.
    Duplicate {
        /// The report's id.
        id: EntryId,
    },
    /// Never to be sent again: the client quarantines the entry.
    Rejected {
        /// The report's id.
        id: EntryId,
        /// Why.
        reason: RejectReason,
        /// Details for a person.
        #[serde(default)]
        detail: String,
    },
    /// Not stored: send it again after the delay.
    RetryLater {
        /// The report's id.
        id: EntryId,
        /// How long to wait.
        delay_ms: u64,
    },
}

impl ServerMessage {
    /// The report id an answer is about (`None` for `welcome`).
    pub fn answer_id(&self) -> Option<EntryId> {
        match self {
            ServerMessage::Welcome(_) => None,
            ServerMessage::Accepted { id }
            | ServerMessage::Duplicate { id }
            | ServerMessage::Rejected { id, .. }
            | ServerMessage::RetryLater { id, .. } => Some(*id),
        }
    }
}

/// The `Authorization` header value for a token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token of an `Authorization` header value, if it is a bearer token.
pub fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_client(m: &ClientMessage) -> ClientMessage {
        ClientMessage::from_json(&m.to_json()).unwrap()
    }

    fn round_trip_server(m: &ServerMessage) -> ServerMessage {
        serde_json::from_str(&serde_json::to_string(m).unwrap()).unwrap()
    }

    #[test]
    fn hello_round_trips_and_tolerates_missing_optional_fields() {
        let hello = ClientMessage::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            agent: Software { name: "lastword".into(), version: "0.1.0".into() },
            app: "app".into(),
            release: Some("1.0".into()),
            host: None,
            losses: Losses { logs_dropped: 3, ..Losses::default() },
        });
        assert_eq!(round_trip_client(&hello), hello);
        let minimal = ClientMessage::from_json(
            r#"{"type":"hello","protocol":1,"agent":{"name":"x","version":"1"},"app":"a","extra":true}"#,
        )
        .unwrap();
        assert!(matches!(minimal, ClientMessage::Hello(Hello { release: None, .. })));
    }

    #[test]
    fn small_report_embeds_its_json_body_as_is() {
        let id = EntryId::generate();
        let report = Report::new(id, Kind::Crash, 5, br#"{"message":"boom","n":[1,2]}"#).unwrap();
        assert_eq!(report.encoding, Encoding::Json);
        let text = ClientMessage::Report(report.clone()).to_json();
        assert!(text.contains(r#""body":{"message":"boom","n":[1,2]}"#), "{text}");
        assert_eq!(round_trip_client(&ClientMessage::Report(report.clone())), ClientMessage::Report(report));
    }

    #[test]
    fn large_report_is_deflated_and_inflates_to_the_same_body() {
        let body = serde_json::to_string(&vec!["a log line that repeats"; 2000]).unwrap();
        let report = Report::new(EntryId::generate(), Kind::Log, 1, body.as_bytes()).unwrap();
        assert_eq!(report.encoding, Encoding::Deflate);
        assert!(report.body.get().len() < body.len() / 4);
        let back = match round_trip_client(&ClientMessage::Report(report)) {
            ClientMessage::Report(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(back.body_json().unwrap(), body);
    }

    fn deflated(body: &[u8]) -> Report {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(body).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        let body = RawValue::from_string(serde_json::to_string(&b64).unwrap()).unwrap();
        Report { id: EntryId::generate(), kind: Kind::Log, created_ms: 1, encoding: Encoding::Deflate, body }
    }

    #[test]
    fn a_body_over_the_inflated_limit_is_too_large_and_never_granted() {
        // 32 MiB of one character inside a JSON string: a bomb of a few KiB.
        let mut bomb = vec![b'a'; 32 << 20];
        bomb[0] = b'"';
        *bomb.last_mut().unwrap() = b'"';
        let report = deflated(&bomb);
        assert!(report.body.get().len() < 100 * 1024);
        let mut asked = None;
        let result = report.body_json_within(1 << 20, |len| {
            asked = Some(len);
            true
        });
        assert!(matches!(result, Err(BodyError::TooLarge { max: 1_048_576 })), "{result:?}");
        assert_eq!(asked, None, "nothing is granted, so nothing allocated, for a body over the limit");
    }

    #[test]
    fn a_body_within_the_limit_is_granted_its_exact_length_once() {
        let body = serde_json::to_string(&vec!["a log line that repeats"; 2000]).unwrap();
        let report = deflated(body.as_bytes());
        let mut asked = Vec::new();
        let text = report
            .body_json_within(body.len(), |len| {
                asked.push(len);
                true
            })
            .unwrap();
        assert_eq!((text.len(), text == body, asked), (body.len(), true, vec![body.len()]));
        assert!(matches!(report.body_json_within(body.len() - 1, |_| true), Err(BodyError::TooLarge { .. })));
        let refused = report.body_json_within(body.len(), |_| false);
        assert!(matches!(refused, Err(BodyError::NoRoom { len }) if len == body.len()), "{refused:?}");
        let plain = Report::new(EntryId::generate(), Kind::Event, 1, br#"{"a":1}"#).unwrap();
        assert!(matches!(plain.body_json_within(3, |_| true), Err(BodyError::TooLarge { max: 3 })));
        assert_eq!(plain.body_json_within(7, |_| true).unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn a_welcome_without_the_inflated_limit_still_reads() {
        let old = r#"{"type":"welcome","protocol":1,"server":{"name":"s","version":"1"},"max_message_bytes":1048576,"max_in_flight":256,"idle_timeout_ms":60000}"#;
        let ServerMessage::Welcome(w) = serde_json::from_str(old).unwrap() else { panic!() };
        assert_eq!(w.max_inflated_bytes, None);
        let new = ServerMessage::Welcome(Welcome { max_inflated_bytes: Some(5), ..w });
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""max_inflated_bytes":5"#), "{text}");
        assert_eq!(round_trip_server(&new), new);
    }

    #[test]
    fn non_json_body_is_refused() {
        assert!(Report::new(EntryId::generate(), Kind::Event, 1, b"not json").is_err());
        assert!(Report::new(EntryId::generate(), Kind::Event, 1, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn broken_deflate_body_is_an_error_not_a_panic() {
        let msg = format!(
            r#"{{"type":"report","id":"{}","kind":"log","created_ms":1,"encoding":"deflate","body":"!!!"}}"#,
            EntryId::generate()
        );
        let ClientMessage::Report(r) = ClientMessage::from_json(&msg).unwrap() else { panic!() };
        assert!(matches!(r.body_json(), Err(BodyError::NotBase64)));
    }

    #[test]
    fn every_server_answer_round_trips_and_names_its_id() {
        let id = EntryId::generate();
        let answers = [
            ServerMessage::Accepted { id },
            ServerMessage::Duplicate { id },
            ServerMessage::Rejected { id, reason: RejectReason::TooLarge, detail: "big".into() },
            ServerMessage::RetryLater { id, delay_ms: 250 },
        ];
        for a in answers {
            assert_eq!(a.answer_id(), Some(id));
            assert_eq!(round_trip_server(&a), a);
        }
        let text = serde_json::to_string(&ServerMessage::RetryLater { id, delay_ms: 5 }).unwrap();
        assert_eq!(text, format!(r#"{{"type":"retry_later","id":"{id}","delay_ms":5}}"#));
    }

    #[test]
    fn report_with_bad_id_or_unknown_type_does_not_parse() {
        let bad_id = r#"{"type":"report","id":"nope","kind":"log","created_ms":1,"body":{}}"#;
        assert!(ClientMessage::from_json(bad_id).is_err());
        assert!(ClientMessage::from_json(r#"{"type":"bye"}"#).is_err());
    }

    #[test]
    fn bearer_tokens_parse() {
        assert_eq!(parse_bearer(&bearer("s3cret")), Some("s3cret"));
        assert_eq!(parse_bearer("bearer  t "), Some("t"));
        assert_eq!(parse_bearer("Basic abc"), None);
        assert_eq!(parse_bearer("Bearer "), None);
    }

    /// The old way of making a report message, which `report_json` must match byte for byte.
    fn through_serde(id: EntryId, kind: Kind, created_ms: u64, body: &[u8]) -> Result<String, String> {
        Report::new(id, kind, created_ms, body)
            .map(|r| ClientMessage::Report(r).to_json())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn report_json_is_the_text_serde_makes_and_fails_as_it_does() {
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(COMPRESS_ABOVE));
        let bodies: [&[u8]; 14] = [
            b"{}",
            b"  {\"a\": 1}\n",
            br#"{"message":"panicked at src/main.rs:3","frames":[{"function":"f","line":3}]}"#,
            "{\"m\":\"é \\u2028 \\\" \\\\ ☃\"}".as_bytes(),
            b"[1,2,3]",
            b"\"text\"",
            b"17",
            big.as_bytes(),
            // Each of these fails, and must fail the same way.
            b"",
            b"{",
            b"{} x",
            b"\xff\xfe",
            b"{\"a\":}",
            b"nul",
        ];
        for (i, body) in bodies.iter().enumerate() {
            let id = EntryId::generate();
            for kind in [Kind::Log, Kind::Event, Kind::Crash] {
                let fast =
                    ClientMessage::report_json(id, kind, 1_700_000_000_123, body).map_err(|e| e.to_string());
                assert_eq!(fast, through_serde(id, kind, 1_700_000_000_123, body), "body {i}");
                assert_eq!(fast.is_ok(), i < 8, "body {i}: {fast:?}");
                // Unchecked, a JSON body makes the same text; the checks it keeps fail as before.
                let of_json = ClientMessage::report_json_of_json(id, kind, 1_700_000_000_123, body)
                    .map_err(|e| e.to_string());
                if i < 8 || i == 11 {
                    assert_eq!(of_json, fast, "body {i}");
                }
            }
        }
        // The empty body is refused without a parse: `"body":}` would not even be a message.
        let empty = ClientMessage::report_json_of_json(EntryId::generate(), Kind::Log, 1, b" \n");
        assert!(empty.is_err(), "{empty:?}");
        // What it leaves unchecked goes through as it is: that is the caller's promise to keep.
        let broken = ClientMessage::report_json_of_json(EntryId::generate(), Kind::Log, 1, b"{").unwrap();
        assert!(broken.ends_with(r#""body":{}"#), "{broken}");
        assert!(serde_json::from_str::<serde_json::Value>(&broken).is_err());
    }

    proptest::proptest! {
        #[test]
        fn report_json_matches_serde_for_any_string_body(text in ".{0,200}", created_ms: u64) {
            let body = serde_json::to_vec(&serde_json::json!({ "message": text, "n": created_ms })).unwrap();
            let id = EntryId::generate();
            let fast = ClientMessage::report_json(id, Kind::Event, created_ms, &body).map_err(|e| e.to_string());
            let of_json = ClientMessage::report_json_of_json(id, Kind::Event, created_ms, &body).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(&fast, &of_json);
            proptest::prop_assert_eq!(fast, through_serde(id, Kind::Event, created_ms, &body));
        }

        #[test]
        fn client_message_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = ClientMessage::from_json(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn server_message_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<ServerMessage>(&bytes);
        }

        #[test]
        fn report_body_decoder_never_panics(body in "[ -~]{0,200}", deflate: bool) {
            let encoding = if deflate { "deflate" } else { "json" };
            let msg = format!(
                r#"{{"type":"report","id":"{}","kind":"log","created_ms":1,"encoding":"{encoding}","body":{}}}"#,
                EntryId::generate(),
                serde_json::to_string(&body).unwrap_or_default()
            );
            if let Ok(ClientMessage::Report(r)) = ClientMessage::from_json(&msg) {
                let _ = r.body_json();
            }
        }
    }
}
