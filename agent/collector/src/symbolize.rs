//! Symbolization on the collector: a crash or event whose frames left their machine without names (a
//! stripped build, a binary replaced before its report was read) is named here with the debug file
//! of each frame's build id ([`crate::debug_files`]), by the client library's own symbolizer, so that
//! names, files, lines, inlined frames, categories and fingerprints follow REPORT.md's rules exactly
//! as on the crashing machine. Frames named here carry `symbolized_by: "collector"`.
//!
//! - At ingest ([`Symbols::at_ingest`]): before a report is queued for the store. The build ids whose
//!   file is missing are stored with it (store/waits.rs).
//! - When a file arrives ([`resymbolize`]): the reports that wait for it are read, symbolized and
//!   moved to the group their names give, in pages, each page one transaction.
//!
//! The body is rewritten by replacing only the fields symbolization changes (`frames`,
//! `fingerprint`, `symbolized`, `symbolization_error`): fields this collector does not know, from a
//! newer client, stay.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use lastword::report::{CrashReport, EventReport, Module};
use lastword::symbolize::{Symbolizer, unnamed_build_ids};
use lastword_spool::Kind;
use serde_json::Value;

use crate::debug_files::{DebugFiles, is_build_id};
use crate::fingerprint;
use crate::store::waits::{Changed, Resymbolized, Waiting};
use crate::store::{StoreError, Waits};

/// How many waiting reports one transaction of [`resymbolize`] moves.
pub const PAGE: u32 = 500;

/// A body read for symbolization.
enum Parsed {
    Crash(Box<CrashReport>),
    Event(Box<EventReport>),
}

impl Parsed {
    /// The crash or event `body` holds, if it reads as one and has a frame without a name in a module
    /// with a build id.
    fn read(kind: Kind, body: &str) -> Option<(Parsed, Vec<String>)> {
        // Most bodies (every frame named) are not parsed into the typed report.
        if !body.contains("\"build_id\"") {
            return None;
        }
        let parsed = match kind {
            Kind::Crash => Parsed::Crash(serde_json::from_str(body).ok()?),
            Kind::Event => Parsed::Event(serde_json::from_str(body).ok()?),
            Kind::Log => return None,
        };
        let frames = match &parsed {
            Parsed::Crash(r) => &r.frames,
            Parsed::Event(e) => &e.frames,
        };
        let wanted: Vec<String> =
            unnamed_build_ids(frames).into_iter().filter(|id| is_build_id(id)).collect();
        (!wanted.is_empty()).then_some((parsed, wanted))
    }

    /// Names what `files` can name; the fields that changed, if any frame was named.
    fn resolve(&mut self, symbolizer: &mut Symbolizer, files: &HashMap<String, PathBuf>) -> Option<Value> {
        let file = |m: &Module| m.build_id.as_ref().and_then(|id| files.get(id)).cloned();
        let fields = match self {
            Parsed::Crash(r) => {
                if symbolizer.resolve_report_with(r, &file) == 0 {
                    return None;
                }
                serde_json::json!({
                    "frames": r.frames, "fingerprint": r.fingerprint, "symbolized": r.symbolized,
                    "symbolization_error": r.symbolization_error,
                })
            }
            Parsed::Event(e) => {
                if symbolizer.resolve_event_with(e, &file) == 0 {
                    return None;
                }
                serde_json::json!({
                    "frames": e.frames, "fingerprint": e.fingerprint, "symbolized": e.symbolized,
                    "symbolization_error": e.symbolization_error,
                })
            }
        };
        Some(fields)
    }
}

/// `body` with `fields` in place of its own (a field set to `null` is removed). `None` when `body` is
/// not a JSON object.
fn merged(body: &str, fields: Value) -> Option<String> {
    let mut whole: serde_json::Map<String, Value> = serde_json::from_str(body).ok()?;
    let Value::Object(fields) = fields else { return None };
    for (key, value) in fields {
        if value.is_null() {
            whole.remove(&key);
        } else {
            whole.insert(key, value);
        }
    }
    serde_json::to_string(&whole).ok()
}

/// What symbolizing a body at ingest gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AtIngest {
    /// The body with frames named; `None`: unchanged.
    pub body: Option<String>,
    /// The build ids of the files it still waits for.
    pub waits: Vec<String>,
}

/// The collector's symbolizer: its debug files and one [`Symbolizer`] (the files it has open) for
/// every report. Cheap to clone.
#[derive(Clone)]
pub struct Symbols {
    files: DebugFiles,
    symbolizer: Arc<Mutex<Symbolizer>>,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Symbols {
    /// Symbolizes with `files`.
    pub fn new(files: DebugFiles) -> Self {
        Symbols { files, symbolizer: Arc::new(Mutex::new(Symbolizer::new())) }
    }

    /// The debug files.
    pub fn files(&self) -> &DebugFiles {
        &self.files
    }

    /// Names the unnamed frames of a crash or event `body` that the collector's debug files can
    /// name, and says which build ids it still waits for. Logs and bodies that are not such reports
    /// are left as they are. The work runs on a blocking thread.
    pub async fn at_ingest(&self, kind: Kind, body: &str) -> AtIngest {
        let Some((parsed, wanted)) = Parsed::read(kind, body) else { return AtIngest::default() };
        let (body, waits) = self.resolve(parsed, &wanted, body.to_owned()).await;
        AtIngest { body, waits }
    }

    /// Resolves `parsed` (read from `body`, wanting `wanted`) with the files there are; the new body
    /// if any frame was named, and the build ids still missing.
    async fn resolve(
        &self,
        mut parsed: Parsed,
        wanted: &[String],
        body: String,
    ) -> (Option<String>, Vec<String>) {
        let mut files = HashMap::new();
        let mut missing = Vec::new();
        for id in wanted {
            match self.files.symbols(id).await {
                Some(path) => {
                    files.insert(id.clone(), path);
                }
                None => missing.push(id.clone()),
            }
        }
        if files.is_empty() {
            return (None, missing);
        }
        let symbolizer = Arc::clone(&self.symbolizer);
        let named = tokio::task::spawn_blocking(move || {
            let mut symbolizer = symbolizer.lock().unwrap_or_else(PoisonError::into_inner);
            let fields = parsed.resolve(&mut symbolizer, &files)?;
            merged(&body, fields)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("symbolizing a report failed: {e}");
            None
        });
        (named, missing)
    }

    /// A waiting report symbolized again now that the file of `build_id` is here.
    async fn again(&self, build_id: &str, waiting: Waiting) -> Resymbolized {
        let Some((parsed, wanted)) = Parsed::read(waiting.kind, &waiting.body) else {
            // Nothing left to name (or not a report any more): it waits for nothing.
            return Resymbolized { waiting, changed: None, waits: Vec::new() };
        };
        let (body, mut waits) = self.resolve(parsed, &wanted, waiting.body.clone()).await;
        waits.retain(|id| id != build_id);
        let changed = body.map(|body| {
            let derived = fingerprint::digest(waiting.kind, &body);
            Changed { fingerprint: derived.fingerprint, summary: derived.summary, body }
        });
        Resymbolized { waiting, changed, waits }
    }
}

/// What [`resymbolize`] did for one build id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resymbolization {
    /// Reports that waited for the file and were looked at.
    pub looked_at: u64,
    /// Reports whose frames it named.
    pub rewritten: u64,
    /// Of those, reports that moved to another group.
    pub moved: u64,
}

/// Symbolizes again every stored report that waits for `build_id`, whose file has arrived, and moves
/// each to the group its names give (counted once: store/waits.rs), [`PAGE`] reports per transaction.
pub async fn resymbolize<S: Waits>(
    store: &S,
    symbols: &Symbols,
    build_id: &str,
) -> Result<Resymbolization, StoreError> {
    let mut total = Resymbolization::default();
    loop {
        let page = store.waiting_for(build_id.to_owned(), PAGE).await?;
        if page.is_empty() {
            return Ok(total);
        }
        let mut done = Vec::with_capacity(page.len());
        for waiting in page {
            done.push(symbols.again(build_id, waiting).await);
        }
        total.looked_at += done.len() as u64;
        let applied = store.resymbolized(build_id.to_owned(), done).await?;
        total.rewritten += applied.rewritten;
        total.moved += applied.moved;
    }
}

/// Runs until `shutdown`: symbolizes again the reports waiting for each debug file that arrives, and
/// at start those waiting for a file that is already here (it came while the collector was down, or
/// through another collector of the same database). A store error is reported and tried again at the
/// next arrival.
pub async fn watch<S: Waits>(store: Arc<S>, symbols: Symbols, shutdown: tokio_util::sync::CancellationToken) {
    let mut arrivals = symbols.files().subscribe();
    let mut everything = true;
    loop {
        if everything {
            everything = false;
            match store.waited_build_ids().await {
                Ok(ids) => {
                    for id in ids {
                        if symbols.files().symbols(&id).await.is_some() {
                            run_one(&*store, &symbols, &id).await;
                        }
                    }
                }
                Err(e) => tracing::warn!("could not list the reports waiting for debug files: {e}"),
            }
        }
        let arrived = tokio::select! {
            () = shutdown.cancelled() => return,
            arrived = arrivals.recv() => arrived,
        };
        match arrived {
            Ok(id) => run_one(&*store, &symbols, &id).await,
            // Missed some: look at every waiting report again.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => everything = true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn run_one<S: Waits>(store: &S, symbols: &Symbols, build_id: &str) {
    match resymbolize(store, symbols, build_id).await {
        Ok(r) if r.looked_at > 0 => tracing::info!(
            "debug file {build_id}: {} waiting reports, {} symbolized, {} moved to another group",
            r.looked_at,
            r.rewritten,
            r.moved
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not symbolize the reports waiting for {build_id}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_replaces_only_the_fields_given_and_keeps_the_others() {
        let body = r#"{"type":"signal","frames":[],"from_a_newer_client":{"x":1},"symbolization_error":"e"}"#;
        let fields = serde_json::json!({"frames": [{"address": "0x1"}], "symbolization_error": null});
        let merged: Value = serde_json::from_str(&merged(body, fields).expect("an object")).expect("json");
        assert_eq!(merged["from_a_newer_client"]["x"], 1);
        assert_eq!(merged["frames"][0]["address"], "0x1");
        assert!(merged.get("symbolization_error").is_none());
        assert_eq!(super::merged("[1]", serde_json::json!({})), None);
    }

    #[test]
    fn only_crashes_and_events_with_unnamed_frames_of_a_build_id_are_read() {
        use lastword::report::Frame;
        let body = |function: Option<&str>, build_id: &str| {
            let frame = Frame {
                function: function.map(str::to_owned),
                address: "0x10".into(),
                build_id: Some(build_id.into()),
                offset: Some("0x10".into()),
                ..Frame::default()
            };
            let report = CrashReport { kind: "signal".into(), frames: vec![frame], ..CrashReport::default() };
            serde_json::to_string(&report).expect("json")
        };
        let unnamed = &body(None, "ab12");
        let (_, wanted) = Parsed::read(Kind::Crash, unnamed).expect("a crash to symbolize");
        assert_eq!(wanted, ["ab12"]);
        assert!(Parsed::read(Kind::Crash, &body(Some("f"), "ab12")).is_none());
        assert!(Parsed::read(Kind::Log, unnamed).is_none());
        assert!(Parsed::read(Kind::Crash, &body(None, "../x")).is_none(), "never a path made of a build id");
        assert!(Parsed::read(Kind::Crash, "not json \"build_id\"").is_none());
    }
}
