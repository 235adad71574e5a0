//! The JSON body of a crash report and of a log batch (REPORT.md beside this crate).

use serde::{Deserialize, Serialize};

/// A crash report: a panic, or a fatal signal after symbolization.
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
    /// Groups the same crash together: a hash of the top frames of our code.
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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// One stack frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function, demangled, without the hash suffix.
    #[serde(default)]
    pub function: Option<String>,
    /// Source file.
    #[serde(default)]
    pub file: Option<String>,
    /// Source line.
    #[serde(default)]
    pub line: Option<u32>,
    /// The instruction address, hex.
    pub address: String,
    /// The module (executable or library) path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Whether a frame belongs to the panic and report machinery rather than to the program.
pub fn is_machinery(function: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "std::panicking",
        "core::panicking",
        "std::panic",
        "core::panic",
        "std::rt::",
        "std::sys::",
        "backtrace::",
        "lastword::",
        "__rust",
        "rust_begin_unwind",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
        || function.starts_with("<alloc::boxed::Box<F,A> as core::ops::function::Fn")
        // The boxed hook closure: `<Box<dyn Fn(&PanicHookInfo)> as Fn<…>>::call`.
        || function.contains("PanicHookInfo")
}

/// The fingerprint of a crash: a hash of the first five function names of the program's own frames
/// (machinery skipped), or, without names, of the message with digits removed.
///
/// The hash is FNV-1a (64 bits), fixed here so that fingerprints stay the same across builds and Rust
/// versions.
pub fn fingerprint(frames: &[Frame], message: &str) -> String {
    let names: Vec<&str> =
        frames.iter().filter_map(|f| f.function.as_deref()).filter(|f| !is_machinery(f)).take(5).collect();
    let mut hash = Fnv::default();
    if names.is_empty() {
        for c in message.chars().filter(|c| !c.is_ascii_digit()) {
            hash.write(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    } else {
        for name in names {
            hash.write(name.as_bytes());
            hash.write(&[0]);
        }
    }
    format!("{:016x}", hash.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
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

    fn frame(f: &str) -> Frame {
        Frame { function: Some(f.into()), address: "0x1".into(), ..Frame::default() }
    }

    #[test]
    fn fingerprint_ignores_machinery_and_depends_on_our_frames() {
        let a = [frame("std::panicking::begin_panic"), frame("app::parse"), frame("app::main")];
        let b = [frame("core::panicking::panic_fmt"), frame("app::parse"), frame("app::main")];
        let c = [frame("app::other"), frame("app::main")];
        assert_eq!(fingerprint(&a, "x"), fingerprint(&b, "y"));
        assert_ne!(fingerprint(&a, "x"), fingerprint(&c, "x"));
        assert_eq!(fingerprint(&[], "index 3 out of 5"), fingerprint(&[], "index 7 out of 9"));
        // Stable across builds: a fixed value for fixed input.
        assert_eq!(fingerprint(&[frame("app::main")], ""), "b90426913e5f8f3f");
    }

    #[test]
    fn hash_suffix_is_stripped() {
        assert_eq!(strip_hash("app::main::h0123456789abcdef"), "app::main");
        assert_eq!(strip_hash("app::hello"), "app::hello");
    }
}
