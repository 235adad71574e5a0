//! How a crash report reads for a person, in one place for every command and page that shows one
//! (`lastword show`, `lastword store show`, the demo's summary, the web UI's report and group pages):
//! a title that carries the crash location and the culprit (the top frame of the application's own
//! code) and never an address that changes every run; the application's frames first, with
//! file:line; the other frames (std, dependencies, libc) folded; the breadcrumbs with their times; the
//! context and tags.
//!
//! It reads the report's JSON (client-lib/REPORT.md) leniently: a body from any client, with fields
//! missing or of other types, still reads; what it lacks is left out.

use std::fmt::Write as _;

use lastword_protocol::normalize_source_path;
use serde_json::Value;

use crate::query::utc;

/// Whose code a frame is (REPORT.md, "Frames"); an absent or unknown category reads as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whose {
    /// The application's own code.
    App,
    /// Rust's standard library.
    Std,
    /// A dependency of the application.
    Dependency,
    /// libc, the loader, another shared library.
    System,
    /// Not known (a stripped build, an unsymbolized capture).
    Unknown,
}

impl Whose {
    fn of(frame: &Value) -> Whose {
        match frame.get("category").and_then(Value::as_str) {
            Some("app") => Whose::App,
            Some("std") => Whose::Std,
            Some("dependency") => Whose::Dependency,
            Some("system") => Whose::System,
            _ if frame.get("in_app").and_then(Value::as_bool) == Some(true) => Whose::App,
            _ => Whose::Unknown,
        }
    }

    /// The words of the folded line ("std", "dependencies", "libc", "unknown code").
    pub fn plural(self) -> &'static str {
        match self {
            Whose::App => "the app",
            Whose::Std => "std",
            Whose::Dependency => "dependencies",
            Whose::System => "libc",
            Whose::Unknown => "unknown code",
        }
    }

    /// The CSS class of a frame of this kind.
    pub fn class(self) -> &'static str {
        match self {
            Whose::App => "app",
            Whose::Std => "std",
            Whose::Dependency => "dependency",
            Whose::System => "system",
            Whose::Unknown => "unknown",
        }
    }
}

/// One frame as shown.
#[derive(Clone, Debug)]
pub struct FrameView {
    /// Its place in the stack, innermost first, from 0.
    pub index: usize,
    /// The function, if the frame has a name.
    pub function: Option<String>,
    /// `file:line` with the file shortened ([`display_path`]), if known.
    pub place: Option<String>,
    /// The address (for frames without a name).
    pub address: Option<String>,
    /// The module path (for frames without a name).
    pub module: Option<String>,
    /// The module's build id (for frames without a name: the debug file that would name it).
    pub build_id: Option<String>,
    /// Named on the collector with an uploaded debug file, not where it crashed.
    pub by_collector: bool,
    /// Whose code it is.
    pub whose: Whose,
}

/// The debug file that would name some frames of a report: the frames without a name in one build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSymbols {
    /// The build id of the module.
    pub build_id: String,
    /// The module's path on the crashed machine.
    pub module: String,
    /// How many frames it would name.
    pub frames: usize,
}

impl FrameView {
    /// The function, or the address in its module for a frame without a name.
    pub fn name(&self) -> String {
        match (&self.function, &self.address, &self.module) {
            (Some(f), _, _) => f.clone(),
            (None, Some(a), Some(m)) => format!("{a} in {m}"),
            (None, Some(a), None) => a.clone(),
            (None, None, _) => "?".into(),
        }
    }
}

/// One breadcrumb as shown.
#[derive(Clone, Debug)]
pub struct CrumbView {
    /// `YYYY-MM-DD HH:MM:SS.mmm` UTC, if the record has a time.
    pub time: Option<String>,
    /// Its level.
    pub level: String,
    /// Its target.
    pub target: String,
    /// Its message.
    pub message: String,
}

/// A crash report as a person reads it.
#[derive(Clone, Debug)]
pub struct CrashView {
    /// `panic` or `signal` (or whatever the body says).
    pub kind: String,
    /// The message, whole.
    pub message: String,
    /// The first line of the message without a fault address that changes every run.
    pub headline: String,
    /// The crash location: a panic's own location, else the culprit's file:line.
    pub location: Option<String>,
    /// The index in `frames` of the culprit: the top frame of the application's own code with a name.
    pub culprit: Option<usize>,
    /// `SIGSEGV (11), code 1, fault address 0x0` for a signal.
    pub signal: Option<String>,
    /// `worker (12345)`.
    pub thread: Option<String>,
    /// Every frame, innermost first.
    pub frames: Vec<FrameView>,
    /// Why some frames have no names.
    pub symbolization_error: Option<String>,
    /// Same crashes counted and not stored before this one.
    pub crash_loop_suppressed: u64,
    /// The last log records before the crash, oldest first.
    pub breadcrumbs: Vec<CrumbView>,
    /// The context, field by field, as the body orders it.
    pub context: Vec<(String, String)>,
    /// The report's tags, if it has any.
    pub tags: Vec<(String, String)>,
}

impl CrashView {
    /// The debug files that would name the frames without a name, by build id, in stack order.
    pub fn missing_symbols(&self) -> Vec<MissingSymbols> {
        let mut out: Vec<MissingSymbols> = Vec::new();
        for f in self.frames.iter().filter(|f| f.function.is_none()) {
            let Some(build_id) = &f.build_id else { continue };
            match out.iter_mut().find(|m| &m.build_id == build_id) {
                Some(m) => m.frames += 1,
                None => out.push(MissingSymbols {
                    build_id: build_id.clone(),
                    module: f.module.clone().unwrap_or_default(),
                    frames: 1,
                }),
            }
        }
        out
    }

    /// How many frames the collector named with an uploaded debug file.
    pub fn named_by_collector(&self) -> usize {
        self.frames.iter().filter(|f| f.by_collector).count()
    }
}

/// How many frames a report without any frame of the application's shows before the folded line.
pub const SHOWN_WITHOUT_APP_FRAMES: usize = 8;

impl CrashView {
    /// Reads a crash report's JSON body; `None` when it does not look like one (not an object with a
    /// `message` string or a `frames` array), to be shown as JSON instead.
    pub fn from_json(body: &Value) -> Option<CrashView> {
        let obj = body.as_object()?;
        if !obj.get("message").is_some_and(Value::is_string)
            && !obj.get("frames").is_some_and(Value::is_array)
        {
            return None;
        }
        let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let kind = str_of(body, "type").unwrap_or_else(|| "crash".into());
        let message = str_of(body, "message").unwrap_or_default();
        let frames: Vec<FrameView> = obj
            .get("frames")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let file = str_of(f, "file").map(|file| display_path(&file));
                let line = f.get("line").and_then(Value::as_u64);
                FrameView {
                    index,
                    function: str_of(f, "function"),
                    place: file.map(|file| match line {
                        Some(l) => format!("{file}:{l}"),
                        None => file,
                    }),
                    address: str_of(f, "address"),
                    module: str_of(f, "module"),
                    build_id: str_of(f, "build_id"),
                    by_collector: f.get("symbolized_by").and_then(Value::as_str) == Some("collector"),
                    whose: Whose::of(f),
                }
            })
            .collect();
        let culprit = frames.iter().position(|f| f.whose == Whose::App && f.function.is_some());
        let location = match obj.get("location") {
            Some(loc) if loc.is_object() => str_of(loc, "file").map(|file| {
                let mut at = display_path(&file);
                for key in ["line", "column"] {
                    match loc.get(key).and_then(Value::as_u64) {
                        Some(n) if n > 0 => {
                            let _ = write!(at, ":{n}");
                        }
                        _ => break,
                    }
                }
                at
            }),
            _ => None,
        }
        .or_else(|| culprit.and_then(|i| frames[i].place.clone()));
        let signal = obj.get("signal").filter(|s| s.is_object()).map(|s| {
            let mut text = str_of(s, "name").unwrap_or_else(|| "signal".into());
            if let Some(n) = s.get("number").and_then(Value::as_i64) {
                let _ = write!(text, " ({n})");
            }
            if let Some(c) = s.get("code").and_then(Value::as_i64) {
                let _ = write!(text, ", code {c}");
            }
            if let Some(a) = str_of(s, "address") {
                let _ = write!(text, ", fault address {a}");
            }
            text
        });
        let thread = obj.get("thread").filter(|t| t.is_object()).map(|t| {
            let name = str_of(t, "name").unwrap_or_else(|| "(unnamed)".into());
            match t.get("id").and_then(Value::as_u64) {
                Some(id) => format!("{name} ({id})"),
                None => name,
            }
        });
        let breadcrumbs = obj
            .get("breadcrumbs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|b| CrumbView {
                time: b.get("ts_ms").and_then(Value::as_u64).map(utc_millis),
                level: str_of(b, "level").unwrap_or_default(),
                target: str_of(b, "target").unwrap_or_default(),
                message: str_of(b, "message").unwrap_or_default(),
            })
            .collect();
        let pairs = |key: &str| -> Vec<(String, String)> {
            obj.get(key)
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), display_value(v))).collect())
                .unwrap_or_default()
        };
        Some(CrashView {
            headline: headline(&kind, &message, obj.contains_key("signal")),
            kind,
            message,
            location,
            culprit,
            signal,
            thread,
            frames,
            symbolization_error: str_of(body, "symbolization_error"),
            crash_loop_suppressed: obj.get("crash_loop_suppressed").and_then(Value::as_u64).unwrap_or(0),
            breadcrumbs,
            context: pairs("context"),
            tags: pairs("tags"),
        })
    }

    /// The culprit's frame.
    pub fn culprit_frame(&self) -> Option<&FrameView> {
        self.culprit.map(|i| &self.frames[i])
    }

    /// The title: the headline, the culprit and the location, e.g. `SIGSEGV (invalid memory
    /// reference) in app::write at src/main.rs:12`. No fault address: it changes every run.
    pub fn title(&self) -> String {
        let mut title = self.headline.clone();
        if let Some(f) = self.culprit_frame().and_then(|f| f.function.as_deref()) {
            let _ = write!(title, " in {f}");
        }
        if let Some(at) = &self.location {
            let _ = write!(title, " at {at}");
        }
        title
    }

    /// The frames shown unfolded (the application's, or the top ones when it has none) and the ones
    /// folded, each in stack order.
    pub fn split_frames(&self) -> (Vec<&FrameView>, Vec<&FrameView>) {
        let any_app = self.frames.iter().any(|f| f.whose == Whose::App);
        self.frames
            .iter()
            .partition(|f| if any_app { f.whose == Whose::App } else { f.index < SHOWN_WITHOUT_APP_FRAMES })
    }

    /// What the folded frames are: `23 frames of std, dependencies, libc`.
    pub fn folded_summary(folded: &[&FrameView]) -> String {
        let mut kinds: Vec<Whose> = Vec::new();
        for f in folded {
            if !kinds.contains(&f.whose) {
                kinds.push(f.whose);
            }
        }
        let order = [Whose::Std, Whose::Dependency, Whose::System, Whose::Unknown, Whose::App];
        let names: Vec<&str> = order.iter().filter(|w| kinds.contains(w)).map(|w| w.plural()).collect();
        let n = folded.len();
        format!("{n} {} of {}", if n == 1 { "frame" } else { "frames" }, names.join(", "))
    }

    /// The report as text for a terminal: the title and the facts, the application's frames with
    /// file:line and the others folded to one line (all of them with `all_frames`), the breadcrumbs
    /// with their times, the context and tags.
    pub fn to_text(&self, all_frames: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title());
        if !self.message.trim().is_empty() && !self.headline.contains(self.message.trim()) {
            let _ = writeln!(out, "  message:   {}", indent_rest(&self.message, "             "));
        }
        if let Some(f) = self.culprit_frame() {
            let _ = writeln!(out, "  culprit:   {}", f.name());
        }
        if let Some(at) = &self.location {
            let _ = writeln!(out, "  location:  {at}");
        }
        if let Some(s) = &self.signal {
            let _ = writeln!(out, "  signal:    {s}");
        }
        if let Some(t) = &self.thread {
            let _ = writeln!(out, "  thread:    {t}");
        }
        if self.crash_loop_suppressed > 0 {
            let _ = writeln!(
                out,
                "  note:      {} same crashes before this one were counted, not stored (crash loop)",
                self.crash_loop_suppressed
            );
        }
        if let Some(e) = &self.symbolization_error {
            let _ = writeln!(out, "  note:      partly unsymbolized: {e}");
        }
        for m in self.missing_symbols() {
            let _ = writeln!(
                out,
                "  symbols:   {} {} without a name in {}: upload the debug file of build id {}",
                m.frames,
                if m.frames == 1 { "frame" } else { "frames" },
                m.module,
                m.build_id
            );
        }
        let by_collector = self.named_by_collector();
        if by_collector > 0 {
            let frames = if by_collector == 1 { "frame" } else { "frames" };
            let _ = writeln!(
                out,
                "  symbols:   {by_collector} {frames} named on the collector from uploaded debug files"
            );
        }

        let app_frames = self.frames.iter().filter(|f| f.whose == Whose::App).count();
        let _ = writeln!(
            out,
            "\nframes, innermost first ({app_frames} of {} in the app's own code):",
            self.frames.len()
        );
        let line = |out: &mut String, f: &FrameView, mark: bool| {
            let tag = if mark { format!("{:<12} ", format!("[{}]", f.whose.class())) } else { String::new() };
            let _ = match &f.place {
                Some(p) => writeln!(out, "  #{:<3} {tag}{}  {p}", f.index, f.name()),
                None => writeln!(out, "  #{:<3} {tag}{}", f.index, f.name()),
            };
        };
        if self.frames.is_empty() {
            out.push_str("  (none)\n");
        } else if all_frames {
            for f in &self.frames {
                line(&mut out, f, true);
            }
        } else {
            let (shown, folded) = self.split_frames();
            for f in shown {
                line(&mut out, f, false);
            }
            if !folded.is_empty() {
                let _ = writeln!(out, "  + {}; --all to show", Self::folded_summary(&folded));
            }
        }

        if !self.breadcrumbs.is_empty() {
            let _ = writeln!(out, "\nbreadcrumbs, oldest first (UTC):");
            for b in &self.breadcrumbs {
                let _ = writeln!(
                    out,
                    "  {}  {:<5}  {}  {}",
                    b.time.as_deref().unwrap_or("?"),
                    b.level,
                    b.target,
                    indent_rest(&b.message, "    ")
                );
            }
        }
        for (name, pairs) in [("context", &self.context), ("tags", &self.tags)] {
            if pairs.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{name}:");
            let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
            for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
                let _ = writeln!(out, "  {:<width$} {v}", format!("{k}:"));
            }
        }
        out
    }
}

/// A signal report's message (or a group title made of one) without its fault address at the end:
/// `SIGSEGV (invalid memory reference) at 0x7f3a…` reads `SIGSEGV (invalid memory reference)`. Any
/// other text is returned as it is.
pub fn without_fault_address(text: &str) -> &str {
    match text.rsplit_once(" at 0x") {
        Some((head, hex))
            if head.starts_with("SIG") && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            head
        }
        _ => text,
    }
}

/// The first line of a crash's message, without the fault address of a signal report (`SIGSEGV
/// (invalid memory reference) at 0x7f3a…` changes every run; REPORT.md, "Signal reports").
fn headline(kind: &str, message: &str, is_signal: bool) -> String {
    let first = message.lines().next().unwrap_or("").trim();
    let first = if is_signal || kind == "signal" { without_fault_address(first) } else { first };
    let mut text: String = first.chars().take(160).collect();
    if first.chars().count() > 160 {
        text.push('…');
    }
    if text.is_empty() {
        text = kind.to_owned();
    } else if kind == "panic" {
        text = format!("panic: {text}");
    }
    text
}

/// A source path as shown: machine-independent ([`normalize_source_path`]), with Rust's standard
/// library (`/rustc/<hash>/library/core/src/option.rs`) as `std/core/src/option.rs`.
pub fn display_path(file: &str) -> String {
    let normalized = normalize_source_path(file);
    if normalized != file.replace('\\', "/")
        && let Some(rest) = normalized.strip_prefix("library/")
    {
        return format!("std/{rest}");
    }
    normalized
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn utc_millis(ms: u64) -> String {
    format!("{}.{:03}", utc(ms), ms % 1000)
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text whose lines after the first are indented by `indent`, so it stays under its label.
fn indent_rest(text: &str, indent: &str) -> String {
    text.trim_end().replace('\n', &format!("\n{indent}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_names_say_which_debug_file_would_name_them() {
        let body = serde_json::json!({
            "type": "signal", "message": "SIGSEGV",
            "frames": [
                {"address": "0x10", "module": "/srv/app", "build_id": "ab12", "offset": "0x10"},
                {"address": "0x20", "module": "/srv/app", "build_id": "ab12", "offset": "0x20"},
                {"function": "write", "address": "0x30", "module": "/lib/libc.so.6", "build_id": "cd34"},
                {"function": "app::main", "address": "0x40", "module": "/srv/app", "build_id": "ab12",
                 "symbolized_by": "collector", "category": "app"},
            ],
        });
        let view = CrashView::from_json(&body).expect("a crash");
        assert_eq!(
            view.missing_symbols(),
            [MissingSymbols { build_id: "ab12".into(), module: "/srv/app".into(), frames: 2 }]
        );
        assert_eq!(view.named_by_collector(), 1);
        let text = view.to_text(true);
        assert!(
            text.contains("2 frames without a name in /srv/app: upload the debug file of build id ab12"),
            "{text}"
        );
        assert!(text.contains("1 frame named on the collector"), "{text}");
    }

    fn frame(function: &str, file: &str, category: &str) -> Value {
        serde_json::json!({"function": function, "file": file, "line": 7, "address": "0x1", "category": category})
    }

    fn signal_report() -> Value {
        serde_json::json!({
            "type": "signal",
            "message": "SIGSEGV (invalid memory reference) at 0x7f3a12bc",
            "signal": {"number": 11, "name": "SIGSEGV", "code": 1, "address": "0x7f3a12bc"},
            "thread": {"name": "main", "id": 42},
            "frames": [
                frame("libc_write", "", "system"),
                frame("app::store", "src/store.rs", "app"),
                frame("std::rt::lang_start", "/rustc/0123abcd/library/std/src/rt.rs", "std"),
                frame("serde::de::x", "/home/u/.cargo/registry/src/index.crates.io-6f17d22bba15001f/serde-1.0.200/src/de.rs", "dependency"),
                frame("app::main", "src/main.rs", "app"),
            ],
            "context": {"app": "app", "release": "1.0"},
            "breadcrumbs": [{"ts_ms": 1_764_165_000_123_u64, "level": "WARN", "target": "app::db", "message": "slow"}],
        })
    }

    #[test]
    fn a_signal_title_has_the_culprit_and_location_and_no_fault_address() {
        let v = CrashView::from_json(&signal_report()).unwrap();
        assert_eq!(v.title(), "SIGSEGV (invalid memory reference) in app::store at src/store.rs:7");
    }

    #[test]
    fn a_panic_title_has_its_own_location() {
        let body = serde_json::json!({
            "type": "panic", "message": "boom\nsecond line",
            "location": {"file": "src/lib.rs", "line": 3, "column": 9},
            "frames": [frame("app::f", "src/lib.rs", "app")],
        });
        let v = CrashView::from_json(&body).unwrap();
        assert_eq!(v.title(), "panic: boom in app::f at src/lib.rs:3:9");
    }

    #[test]
    fn text_shows_app_frames_and_folds_the_rest_to_one_line() {
        let text = CrashView::from_json(&signal_report()).unwrap().to_text(false);
        assert!(text.contains("  #1   app::store  src/store.rs:7\n"), "{text}");
        assert!(text.contains("  #4   app::main  src/main.rs:7\n"), "{text}");
        assert!(text.contains("  + 3 frames of std, dependencies, libc; --all to show\n"), "{text}");
        assert!(!text.contains("lang_start"), "{text}");
        assert!(text.contains("2025-11-26 13:50:00.123  WARN   app::db  slow"), "{text}");
        let all = CrashView::from_json(&signal_report()).unwrap().to_text(true);
        assert!(all.contains("std/std/src/rt.rs:7"), "{all}");
        assert!(all.contains("serde-1.0.200/src/de.rs:7"), "{all}");
        assert!(!all.contains("--all to show"), "{all}");
    }

    #[test]
    fn only_a_signals_fault_address_is_left_out() {
        assert_eq!(
            without_fault_address("SIGSEGV (invalid memory reference) at 0x7f3a12bc"),
            "SIGSEGV (invalid memory reference)"
        );
        assert_eq!(without_fault_address("SIGBUS (bus error) at 0xzz"), "SIGBUS (bus error) at 0xzz");
        assert_eq!(without_fault_address("panicked at 0x10"), "panicked at 0x10");
    }

    #[test]
    fn std_paths_read_as_std() {
        assert_eq!(display_path("/rustc/59807616e1fa/library/core/src/option.rs"), "std/core/src/option.rs");
        assert_eq!(display_path("src/library/x.rs"), "src/library/x.rs");
        assert_eq!(display_path("library/x.rs"), "library/x.rs");
    }

    #[test]
    fn a_body_of_another_shape_still_reads() {
        let v = CrashView::from_json(&serde_json::json!({"frames": [], "message": 3, "thread": 1})).unwrap();
        assert_eq!(v.title(), "crash");
        assert!(v.thread.is_none());
        assert!(CrashView::from_json(&serde_json::json!({"frames": "no", "message": 3})).is_none());
        assert!(CrashView::from_json(&serde_json::json!([1])).is_none());
    }
}
