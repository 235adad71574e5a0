//! The JSON body of a crash report and of a log batch (REPORT.md beside this crate).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A crash report: a panic, or a fatal signal after symbolization. A panic's report is first stored
/// as its raw capture (frames with addresses and modules only, `symbolized: false`, the spool entry
/// flagged `FLAG_UNSYMBOLIZED`) and symbolized when it is prepared for upload
/// ([`crate::symbolize::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// `panic` or `signal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The panic message, or a description of the signal.
    pub message: String,
    /// Where the panic happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The signal, for signal crashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalInfo>,
    /// The crashing thread.
    pub thread: ThreadInfo,
    /// The crashing thread's frames, innermost first.
    pub frames: Vec<Frame>,
    /// Whether `frames` carry function names.
    pub symbolized: bool,
    /// Why symbolization was not possible (or only partly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbolization_error: Option<String>,
    /// Groups the same crash together ([`crate::grouping`]; REPORT.md, "Grouping").
    pub fingerprint: String,
    /// Where it happened.
    pub context: Context,
    /// The last log records before the crash, oldest first.
    #[serde(default)]
    pub breadcrumbs: Vec<Breadcrumb>,
    /// Crashes with this fingerprint counted but not stored since the last stored one (crash loop).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crash_loop_suppressed: u64,
    /// Registers of the crashing thread (signal crashes), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<(String, String)>,
    /// The modules the frames are in: what symbolizing the addresses anywhere needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<Module>,
    /// The scope when it crashed: a panic's thread's (or task's); a fatal signal's, the
    /// process-wide scope.
    #[serde(default, skip_serializing_if = "Scope::is_empty")]
    pub scope: Scope,
}

/// What the application says about where reports come from: tags, a user, extra context and the
/// environment ([`crate::configure_scope`], [`crate::with_scope`]). Every report carries the scope of
/// the time it was made (REPORT.md, "Scope").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Tags, key to value: what reports are filtered by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The user, as the application chooses to name them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Extra context, key to any JSON value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The environment (production, staging, ...), over [`crate::Config::environment`]'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl Scope {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.user.is_none() && self.extra.is_empty() && self.environment.is_none()
    }

    /// Sets a tag.
    pub fn set_tag(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Removes a tag.
    pub fn remove_tag(&mut self, key: &str) -> &mut Self {
        self.tags.remove(key);
        self
    }

    /// Sets (or, with `None`, clears) the user.
    pub fn set_user(&mut self, user: Option<User>) -> &mut Self {
        self.user = user;
        self
    }

    /// Sets an extra value.
    pub fn set_extra(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> &mut Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Sets (or, with `None`, clears) the environment.
    pub fn set_environment(&mut self, environment: Option<String>) -> &mut Self {
        self.environment = environment;
        self
    }
}

/// A user of the application, each field as the application chooses (none is required).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// An id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A source location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// File.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    #[serde(default)]
    pub column: u32,
}

/// A fatal signal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalInfo {
    /// The signal number.
    pub number: i32,
    /// Its name (`SIGSEGV`).
    pub name: String,
    /// `si_code`.
    pub code: i32,
    /// The fault address, hex: only for a fault (a signal the kernel raised for an instruction, with
    /// an address), never for a signal that was sent (`kill`, `raise`, `abort`), whose siginfo holds
    /// the sender's pid and uid instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The crashing thread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Its name, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// The OS thread id, when known.
    #[serde(default)]
    pub id: Option<u64>,
}

/// One stack frame (one function: an address gives several frames, innermost first, when functions
/// were inlined at it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function, demangled, without the hash suffix. (Absent and `null` read the same; absent
    /// fields are left out, which keeps a panic's raw capture small and quick to write.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Source file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The instruction address, hex.
    pub address: String,
    /// The module (executable or library) path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The module's GNU build id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The address in the module's own address space (the address less the module's load bias),
    /// hex: what `addr2line -e <module>` takes. A return address unless it is a signal report's
    /// first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Whose code this is; absent until the frame is symbolized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// The application's own code (`category` is `app`). Written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_app: bool,
    /// Who named this frame when it was not its own machine: `"collector"` for a frame a collector
    /// symbolized with an uploaded debug file. Absent: named where it crashed (or not named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbolized_by: Option<String>,
}

/// Whose code a frame is (REPORT.md, "Frames"). An unknown value reads as [`Category::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// The application's own code.
    App,
    /// A crate the application depends on (from a cargo registry or git checkout).
    Dependency,
    /// Rust's standard library (std, core, alloc and their runtime).
    Std,
    /// Code outside the executable (libc, the dynamic loader, other shared libraries) or the C runtime
    /// glue inside it.
    System,
    /// Not known: no name and no source file (a stripped build), or an address in no module.
    #[serde(other)]
    Unknown,
}

/// A module (the executable or a shared library) of the crashed process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Its path when the process ran.
    pub path: String,
    /// Its GNU build id, hex, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// First address of its code in the process, hex.
    pub start: String,
    /// One past the last address of its code, hex.
    pub end: String,
    /// Load bias (memory address less the address in the file), hex.
    pub bias: String,
}

/// Where a report comes from. No environment variables and no command-line arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Application name.
    pub app: String,
    /// Release.
    #[serde(default)]
    pub release: Option<String>,
    /// Environment (production, staging, ...).
    #[serde(default)]
    pub environment: Option<String>,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Host name.
    #[serde(default)]
    pub host: Option<String>,
    /// Process id.
    pub pid: u32,
    /// Path of the executable.
    #[serde(default)]
    pub executable: Option<String>,
    /// Milliseconds since `lastword::init`.
    pub uptime_ms: u64,
    /// The lastword version that wrote the report.
    pub lastword: String,
}

/// One log record remembered for crash reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breadcrumb {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The record's target (module path by default).
    pub target: String,
    /// The message.
    pub message: String,
}

/// A batch of log records: the body of a `log` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// Always `logs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the records come from.
    pub context: Context,
    /// The records, oldest first.
    pub records: Vec<Breadcrumb>,
    /// Records dropped (queue full) before this batch since the previous one.
    #[serde(default)]
    pub dropped_before: u64,
    /// The scope the records were made in (a batch holds records of one scope).
    #[serde(default, skip_serializing_if = "Scope::is_empty")]
    pub scope: Scope,
}

/// The version of the `event` body schema that this lastword writes (REPORT.md, "Event").
pub const EVENT_VERSION: u32 = 1;

/// A handled error or a message the application reports: the body of an `event` entry
/// (REPORT.md, "Event"). First stored as its raw capture (frames with addresses and modules only,
/// no fingerprint, the spool entry flagged `FLAG_UNSYMBOLIZED`); symbolized, fingerprinted and
/// decided (the event-loop limit, `before_send_event`) when it is first prepared for upload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    /// Always `event`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema's version ([`EVENT_VERSION`]); a reader skips fields it does not know.
    pub version: u32,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message: the error's `Display`, or the message given.
    pub message: String,
    /// The error, for `capture_error`: its type and its whole `source()` chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Milliseconds since the Unix epoch, when it was captured.
    pub ts_ms: u64,
    /// The capturing thread.
    pub thread: ThreadInfo,
    /// The caller's frames, innermost first (the caller of `capture_error` is the first).
    #[serde(default)]
    pub frames: Vec<Frame>,
    /// Whether `frames` carry function names.
    #[serde(default)]
    pub symbolized: bool,
    /// Why symbolization was not possible (or only partly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbolization_error: Option<String>,
    /// The modules the frames are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<Module>,
    /// Groups the same event together (REPORT.md, "Grouping"); empty in the raw capture.
    #[serde(default)]
    pub fingerprint: String,
    /// Where it happened.
    pub context: Context,
    /// Events with this fingerprint counted and not sent since the last one sent (event-loop limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loop_suppressed: u64,
    /// Events dropped (the event queue was full) since the previous event this process stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
    /// The scope when it was captured (the thread's or task's, over the process-wide one).
    #[serde(default, skip_serializing_if = "Scope::is_empty")]
    pub scope: Scope,
}

/// An error and its causes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The error's type name: `std::any::type_name` of the type given to `capture_error`; for a
    /// `dyn Error`, the leading name of its `Debug` output (best effort), else absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Its `Display`.
    pub message: String,
    /// Its `source()` chain, the error's own source first, the root cause last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ErrorCause>,
    /// The error's own backtrace as text, where it carries one (`anyhow`, with the `anyhow`
    /// feature): symbolized by whoever made it, not by lastword.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
}

/// One error of a `source()` chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCause {
    /// The leading name of its `Debug` output, when it looks like a type's (best effort).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Its `Display`.
    pub message: String,
}

/// A function name without its `::h0123456789abcdef` hash suffix.
pub fn strip_hash(name: &str) -> String {
    match name.rsplit_once("::h") {
        Some((head, tail)) if tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_suffix_is_stripped() {
        assert_eq!(strip_hash("app::main::h0123456789abcdef"), "app::main");
        assert_eq!(strip_hash("app::hello"), "app::hello");
    }

    #[test]
    fn an_unknown_category_reads_as_unknown_and_old_frames_read_without_the_new_fields() {
        let frame: Frame =
            serde_json::from_str(r#"{"function":"f","address":"0x1","category":"jit"}"#).unwrap();
        assert_eq!(frame.category, Some(Category::Unknown));
        let old: Frame = serde_json::from_str(r#"{"function":null,"address":"0x1"}"#).unwrap();
        assert_eq!((old.category, old.in_app, old.offset.as_deref()), (None, false, None));
        let text =
            serde_json::to_string(&Frame { category: Some(Category::App), in_app: true, ..old }).unwrap();
        assert!(text.contains(r#""category":"app","in_app":true"#), "{text}");
    }
}
