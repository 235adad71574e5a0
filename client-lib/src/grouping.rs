//! Whose code a frame is, which frames of a panic are the panic machinery, and the fingerprint that
//! groups the same crash together (REPORT.md, "Frames" and "Grouping"). Pure functions of a report's
//! frames: the same in the hook, in the uploader, in `lastword show`, and wherever a report is
//! symbolized again later.

use crate::report::{Category, Frame, Location};

/// A source path as it groups (defined in the protocol crate: the collector reads frames the same way).
pub use lastword_protocol::normalize_source_path;

/// How many frames a signal report's fingerprint hashes.
pub const FRAMES_HASHED: usize = 5;
/// How far from the top a panic's entry into the hook is looked for.
const MACHINERY_DEPTH: usize = 48;

/// Whose code a frame is. `main_module` is the executable's path, `main_crate` the name of the
/// executable's crate (see [`crate_of_executable`]).
///
/// - A frame in another module than the executable is [`Category::System`].
/// - With a source file (DWARF line tables): under `/rustc/<hash>/library/` (or a toolchain's
///   `lib/rustlib/src/rust/library/`) it is [`Category::Std`]; under a cargo `registry/src/` or
///   `git/checkouts/` it is [`Category::Dependency`]; anywhere else [`Category::App`].
/// - With a name only (a symbol table): the crate of the name's path decides (`std`, `core`,
///   `alloc` and the runtime's `__rust…`/`rust_…` symbols are std; the executable's crate is the app;
///   any other crate a dependency; a C name without a path, such as `_start`, is system).
/// - With neither: [`Category::Unknown`].
pub fn classify(frame: &Frame, main_module: Option<&str>, main_crate: Option<&str>) -> Category {
    match (frame.module.as_deref(), main_module) {
        (Some(module), Some(main)) if module != main => return Category::System,
        (None, _) if frame.function.is_none() && frame.file.is_none() => return Category::Unknown,
        _ => {}
    }
    if let Some(file) = frame.file.as_deref() {
        return by_path(file);
    }
    match frame.function.as_deref() {
        Some(name) => by_name(name, main_crate),
        None => Category::Unknown,
    }
}

fn by_path(file: &str) -> Category {
    let file = file.replace('\\', "/");
    if (file.starts_with("/rustc/") && file.contains("/library/"))
        || file.contains("/lib/rustlib/src/rust/library/")
    {
        Category::Std
    } else if file.contains("/registry/src/") || file.contains("/git/checkouts/") {
        Category::Dependency
    } else {
        Category::App
    }
}

fn by_name(name: &str, main_crate: Option<&str>) -> Category {
    if name.starts_with("__rust") || name.starts_with("rust_") {
        return Category::Std;
    }
    match crate_of(name) {
        None => Category::System,
        Some("std" | "core" | "alloc" | "panic_unwind" | "panic_abort" | "__rustc") => Category::Std,
        Some(krate) if Some(krate) == main_crate => Category::App,
        Some(_) => Category::Dependency,
    }
}

/// The crate a demangled name belongs to: the first segment of its path, or of its self type for
/// `<T as Trait>::f` (`<alloc::boxed::Box<F> as core::ops::Fn>::call` is alloc's).
fn crate_of(name: &str) -> Option<&str> {
    let mut rest = name.trim_start_matches('<');
    for prefix in ["&mut ", "&", "*const ", "*mut ", "dyn ", "mut "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let (krate, _) = rest.split_once("::")?;
    (!krate.is_empty() && krate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(krate)
}

/// The crate name of an executable, from its file name: `my-app` → `my_app` (a cargo test binary's
/// `-<16 hex digits>` suffix dropped).
pub fn crate_of_executable(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
    let name = match name.rsplit_once('-') {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => name,
    };
    Some(name.replace('-', "_"))
}

/// Sets each frame's `category` and `in_app`.
pub fn classify_all(frames: &mut [Frame], main_module: Option<&str>) {
    let main_crate = main_module.and_then(crate_of_executable);
    for frame in frames {
        let category = classify(frame, main_module, main_crate.as_deref());
        frame.category = Some(category);
        frame.in_app = category == Category::App;
    }
}

/// Cuts a panic's machinery from the top of its classified frames: everything above std's entry
/// into the panic hook (the first frame, from the top, that is std's `rust_panic_with_hook`,
/// `begin_panic…`, `rust_begin_unwind` or `panic_fmt`: whatever ran above it is the hook chain,
/// lastword's and any the application chained in front of it), then the std frames that follow
/// until the first that is not std (`core::panicking::panic`, `Option::expect`, …). The top frame is
/// then the code that panicked. Frames that are not named (a stripped build) are not cut here: the
/// hook has already cut its own frames by address.
pub fn cut_panic_machinery(frames: &mut Vec<Frame>) {
    let entry = frames.iter().take(MACHINERY_DEPTH).position(|f| {
        f.category == Some(Category::Std)
            && f.function.as_deref().is_some_and(|name| {
                ["rust_panic_with_hook", "begin_panic", "rust_begin_unwind", "panic_fmt"]
                    .iter()
                    .any(|entry| name.contains(entry))
            })
    });
    if let Some(entry) = entry {
        frames.drain(..entry);
    }
    let std_run = frames.iter().take_while(|f| f.category == Some(Category::Std)).count();
    if std_run < frames.len() {
        frames.drain(..std_run);
    }
}

/// The fingerprint of a panic: the application and where it panicked (normalized file, line and
/// column), or, without a location, the message with its digits removed. Independent of the build
/// profile, of debug information and of addresses.
pub fn panic_fingerprint(app: &str, location: Option<&Location>, message: &str) -> String {
    let mut hash = Fnv::default();
    hash.field(b"panic");
    hash.field(app.as_bytes());
    match location {
        Some(l) => {
            hash.field(normalize_source_path(&l.file).as_bytes());
            hash.field(l.line.to_string().as_bytes());
            hash.field(l.column.to_string().as_bytes());
        }
        None => {
            let text: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
            hash.field(text.as_bytes());
        }
    }
    hash.finish()
}

/// What a signal report is grouped by, from its frames (see [`signal_fingerprint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalKey<'a> {
    /// The names of the first application frames, one per address (the function the address is in,
    /// not the functions inlined there): the same whatever the debug information.
    Functions(Vec<&'a str>),
    /// No frame is named (a stripped build): the build id of the executable and the offsets in it of
    /// the first frames. Stable across runs of one build, not across builds.
    Code {
        /// The executable's build id.
        build_id: &'a str,
        /// The first frames' offsets in it.
        offsets: Vec<&'a str>,
    },
    /// Nothing at all to go by.
    Nothing,
}

/// The fingerprint of a signal report: the application, the signal and the key. Never an address.
pub fn signal_fingerprint(app: &str, signal: &str, key: &SignalKey<'_>) -> String {
    let mut hash = Fnv::default();
    hash.field(b"signal");
    hash.field(app.as_bytes());
    hash.field(signal.as_bytes());
    match key {
        SignalKey::Functions(names) => {
            hash.field(b"functions");
            for name in names {
                hash.field(name.as_bytes());
            }
        }
        SignalKey::Code { build_id, offsets } => {
            hash.field(b"code");
            hash.field(build_id.as_bytes());
            for offset in offsets {
                hash.field(offset.as_bytes());
            }
        }
        SignalKey::Nothing => hash.field(b"nothing"),
    }
    hash.finish()
}

/// The fingerprint of an event ([`crate::report::EventReport`]), from its symbolized frames:
///
/// - an error: the application, the error's type and the names of its first [`FRAMES_HASHED`]
///   in-app frames; without any named in-app frame (a stripped build, or captured from a
///   dependency's code only), the type and its message with the digits removed;
/// - a message: the application and the message with the digits removed.
///
/// Never an address, a line number or a count in a message: the same error met again groups with
/// the first.
pub fn event_fingerprint(app: &str, error_type: Option<&str>, message: &str, frames: &[Frame]) -> String {
    let mut hash = Fnv::default();
    hash.field(b"event");
    hash.field(app.as_bytes());
    let without_digits: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
    match error_type {
        Some(error_type) => {
            hash.field(b"error");
            hash.field(error_type.as_bytes());
            let names: Vec<&str> = frames
                .iter()
                .filter(|f| f.in_app)
                .filter_map(|f| f.function.as_deref())
                .take(FRAMES_HASHED)
                .collect();
            if names.is_empty() {
                hash.field(b"message");
                hash.field(without_digits.as_bytes());
            } else {
                hash.field(b"frames");
                for name in names {
                    hash.field(name.as_bytes());
                }
            }
        }
        None => {
            hash.field(b"message");
            hash.field(without_digits.as_bytes());
        }
    }
    hash.finish()
}

/// FNV-1a, 64 bits: fixed here, so that fingerprints stay the same across builds, Rust versions and
/// lastword versions (std's hasher promises none of that).
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

    /// A field and its terminator, so that `("ab", "c")` and `("a", "bc")` differ.
    fn field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0]);
    }

    fn finish(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>) -> Frame {
        Frame {
            function: Some(function.into()),
            file: file.map(Into::into),
            address: "0x1".into(),
            module: Some("/srv/my-app".into()),
            ..Frame::default()
        }
    }

    fn category(function: &str, file: Option<&str>) -> Category {
        classify(&frame(function, file), Some("/srv/my-app"), Some("my_app"))
    }

    /// The values were computed apart from this code (FNV-1a 64 over the fields, each followed by a
    /// zero byte, in a few lines of Python): a change of algorithm or of fields fails here.
    #[test]
    fn fingerprints_are_fixed_values_for_fixed_input() {
        let here = Location { file: "src/main.rs".into(), line: 7, column: 13 };
        assert_eq!(panic_fingerprint("app", Some(&here), "boom"), "0891e6c91d8f7c9d");
        let key = SignalKey::Functions(vec!["app::parse", "app::main"]);
        assert_eq!(signal_fingerprint("app", "SIGSEGV", &key), "21110aa48b8176a3");
    }

    #[test]
    fn a_panic_groups_by_app_and_place_not_by_message_or_machine() {
        let at = |file: &str, line| Location { file: file.into(), line, column: 5 };
        let a = panic_fingerprint("shop", Some(&at("src/cart.rs", 10)), "index 3 out of 5");
        assert_eq!(a, panic_fingerprint("shop", Some(&at("src/cart.rs", 10)), "index 7 out of 9"));
        assert_ne!(a, panic_fingerprint("shop", Some(&at("src/cart.rs", 11)), "index 3 out of 5"));
        assert_ne!(a, panic_fingerprint("blog", Some(&at("src/cart.rs", 10)), "index 3 out of 5"));
        let mine = "/home/ann/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde-1.0.200/src/de.rs";
        let ci = "/usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/serde-1.0.200/src/de.rs";
        assert_eq!(
            panic_fingerprint("shop", Some(&at(mine, 3)), ""),
            panic_fingerprint("shop", Some(&at(ci, 3)), "")
        );
        assert_eq!(panic_fingerprint("a", None, "no 1 here"), panic_fingerprint("a", None, "no 2 here"));
    }

    #[test]
    fn source_paths_normalize_to_what_every_machine_agrees_on() {
        assert_eq!(normalize_source_path("src/main.rs"), "src/main.rs");
        assert_eq!(
            normalize_source_path(
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/option.rs"
            ),
            "library/core/src/option.rs"
        );
        assert_eq!(
            normalize_source_path("/root/.cargo/git/checkouts/tokio-0123abcd/9f8e7d6/tokio/src/rt.rs"),
            "tokio-0123abcd/9f8e7d6/tokio/src/rt.rs"
        );
    }

    #[test]
    fn frames_are_told_apart_by_source_path_where_there_is_one_and_by_crate_name_otherwise() {
        let std_file = Some("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs");
        assert_eq!(category("rust_panic_with_hook", std_file), Category::Std);
        let registry =
            Some("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.0.0/src/a.rs");
        assert_eq!(category("{closure#0}", registry), Category::Dependency);
        assert_eq!(category("capture", Some("/work/app/src/main.rs")), Category::App);
        assert_eq!(category("my_app::main", None), Category::App);
        assert_eq!(category("serde_json::de::from_str", None), Category::Dependency);
        assert_eq!(
            category("<alloc::boxed::Box<F,A> as core::ops::function::Fn<Args>>::call", None),
            Category::Std
        );
        assert_eq!(
            category(
                "<&dyn core::ops::function::Fn<()> as core::ops::function::FnOnce<()>>::call_once",
                None
            ),
            Category::Std
        );
        assert_eq!(category("<my_app::Cart as core::fmt::Display>::fmt", None), Category::App);
        assert_eq!(category("__rust_start_panic", None), Category::Std);
        assert_eq!(category("_start", None), Category::System);
        let libc = Frame { module: Some("/lib/x86_64-linux-gnu/libc.so.6".into()), ..frame("abort", None) };
        assert_eq!(classify(&libc, Some("/srv/my-app"), Some("my_app")), Category::System);
        let stripped = Frame { function: None, ..frame("", None) };
        assert_eq!(classify(&stripped, Some("/srv/my-app"), Some("my_app")), Category::Unknown);
    }

    #[test]
    fn an_error_event_groups_by_type_and_in_app_frames_and_a_message_by_its_text_without_digits() {
        let mut at =
            vec![frame("my_app::load", Some("src/load.rs")), frame("my_app::main", Some("src/main.rs"))];
        classify_all(&mut at, Some("/srv/my-app"));
        let a = event_fingerprint("shop", Some("std::io::error::Error"), "file 3 missing", &at);
        assert_eq!(a, event_fingerprint("shop", Some("std::io::error::Error"), "other text", &at));
        assert_ne!(a, event_fingerprint("shop", Some("serde_json::Error"), "file 3 missing", &at));
        let mut elsewhere = vec![frame("my_app::save", Some("src/save.rs"))];
        classify_all(&mut elsewhere, Some("/srv/my-app"));
        assert_ne!(a, event_fingerprint("shop", Some("std::io::error::Error"), "file 3 missing", &elsewhere));
        // Without in-app frames the message decides, digits left out.
        let none: Vec<Frame> = Vec::new();
        let b = event_fingerprint("shop", Some("E"), "timeout after 30 s", &none);
        assert_eq!(b, event_fingerprint("shop", Some("E"), "timeout after 45 s", &none));
        assert_ne!(b, event_fingerprint("shop", Some("E"), "refused", &none));
        let m = event_fingerprint("shop", None, "cache 12 of 40 full", &none);
        assert_eq!(m, event_fingerprint("shop", None, "cache 3 of 7 full", &none));
        assert_ne!(m, event_fingerprint("blog", None, "cache 3 of 7 full", &none));
        assert_ne!(m, b);
    }

    #[test]
    fn executables_name_their_crate() {
        assert_eq!(crate_of_executable("/srv/bin/lastword-crash-app").as_deref(), Some("lastword_crash_app"));
        assert_eq!(
            crate_of_executable("target/debug/deps/decided_once-a0cea31b14a0f53b").as_deref(),
            Some("decided_once")
        );
    }

    #[test]
    fn the_machinery_above_std_entry_into_the_hook_and_the_std_frames_below_it_are_cut() {
        let std_file = |f: &str| format!("/rustc/0000/library/{f}");
        let mut frames = vec![
            frame("my_app::install_hook::{{closure}}", Some("/work/app/src/hook.rs")),
            frame(
                "<alloc::boxed::Box<F,A> as core::ops::function::Fn<Args>>::call",
                Some(&std_file("alloc/src/boxed.rs")),
            ),
            frame("std::panicking::rust_panic_with_hook", Some(&std_file("std/src/panicking.rs"))),
            frame("core::panicking::panic_fmt", Some(&std_file("core/src/panicking.rs"))),
            frame("expect<u32>", Some(&std_file("core/src/option.rs"))),
            frame("my_app::lookup", Some("/work/app/src/main.rs")),
            frame("std::rt::lang_start", Some(&std_file("std/src/rt.rs"))),
        ];
        classify_all(&mut frames, Some("/srv/my-app"));
        cut_panic_machinery(&mut frames);
        let names: Vec<_> = frames.iter().filter_map(|f| f.function.as_deref()).collect();
        assert_eq!(names, ["my_app::lookup", "std::rt::lang_start"]);
        assert!(frames[0].in_app);
        // Unnamed frames (stripped) are left alone.
        let mut raw = vec![Frame { address: "0x1".into(), ..Frame::default() }; 3];
        classify_all(&mut raw, Some("/srv/my-app"));
        cut_panic_machinery(&mut raw);
        assert_eq!(raw.len(), 3);
    }
}
