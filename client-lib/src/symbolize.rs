//! Post-mortem: turning a raw signal report (written by the signal handler) into a full crash report
//! with function names, files and lines, out of the handler: at the next start of the application,
//! or in the sidecar, just before upload. The raw format is in REPORT.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use lastword_spool::{Claim, FLAG_JSON, FLAG_RAW_SIGNAL, FLAG_UNSYMBOLIZED, Kind};

use crate::config::{BeforeSend, BeforeSendEvent};
use crate::crashloop::{Admit, CrashLoop, EVENTS_SUPPRESSED_COUNTER, SUPPRESSED_COUNTER};
use crate::grouping::{self, FRAMES_HASHED, SignalKey, classify_all, signal_fingerprint};
use crate::report::{
    Breadcrumb, Context, CrashReport, EventReport, Frame, Module, SignalInfo, ThreadInfo, strip_hash,
};
use crate::upload::{LossCounters, Prepare, Prepared};

/// How many return-address candidates the stack scan keeps.
const MAX_SCANNED: usize = 48;

/// A module of the crashed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawModule {
    /// Start of an executable segment in the crashed process.
    pub start: u64,
    /// End of that segment.
    pub end: u64,
    /// Load bias.
    pub bias: u64,
    /// Build id, hex, or `-`.
    pub build_id: String,
    /// Path.
    pub path: String,
}

/// A raw signal report, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawReport {
    /// Signal number.
    pub signal: i32,
    /// `si_code`.
    pub code: i32,
    /// Fault address (`addr` line): only for faults, not for signals that were sent.
    pub addr: Option<u64>,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u64,
    /// Thread name.
    pub thread: Option<String>,
    /// Registers, by name.
    pub registers: Vec<(String, u64)>,
    /// Program counter.
    pub pc: u64,
    /// Stack pointer.
    pub sp: u64,
    /// The context JSON written at init.
    pub context: Option<Context>,
    /// The process-wide scope when the signal came (`scope` line).
    pub scope: Option<crate::report::Scope>,
    /// Loaded modules.
    pub modules: Vec<RawModule>,
    /// The last log records before the signal, oldest first (`crumb` lines).
    pub breadcrumbs: Vec<Breadcrumb>,
    /// Milliseconds from init to the signal (`uptime_ms` line).
    pub uptime_ms: Option<u64>,
    /// What the handler found the fault to be (`fault` line): `stack-overflow`.
    pub fault: Option<String>,
    /// What the handler could not capture, and why (`missing` lines): what, then the reason.
    pub missing: Vec<(String, String)>,
    /// Address of the first byte of `stack`.
    pub stack_addr: u64,
    /// Copy of the top of the stack.
    pub stack: Vec<u8>,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parses a raw signal report. Never panics on bad input.
pub fn parse_raw(body: &[u8]) -> Result<RawReport, String> {
    let mut raw = RawReport::default();
    let mut rest = body;
    let mut first = true;
    loop {
        let nl = rest.iter().position(|&b| b == b'\n').ok_or("raw report ends before its stack line")?;
        let bytes = &rest[..nl];
        rest = &rest[nl + 1..];
        // A breadcrumb that does not read (it cannot happen short of damage) costs only itself.
        if let Some(json) = bytes.strip_prefix(b"crumb ").filter(|_| !first) {
            if let Ok(crumb) = serde_json::from_slice::<Breadcrumb>(json) {
                raw.breadcrumbs.push(crumb);
            }
            continue;
        }
        let line = std::str::from_utf8(bytes).map_err(|_| "raw report line is not UTF-8")?;
        if first {
            if line != "lastword-raw-signal 1" {
                return Err(format!("not a raw signal report of version 1: {line:?}"));
            }
            first = false;
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || format!("bad raw report line {line:?}");
        match key {
            "signal" => raw.signal = value.parse().map_err(|_| bad())?,
            "code" => raw.code = value.parse().map_err(|_| bad())?,
            "addr" => raw.addr = Some(hex(value).ok_or_else(bad)?),
            "pid" => raw.pid = value.parse().map_err(|_| bad())?,
            "tid" => raw.tid = value.parse().map_err(|_| bad())?,
            "thread" => raw.thread = Some(value.to_owned()),
            "uptime_ms" => raw.uptime_ms = Some(value.parse().map_err(|_| bad())?),
            "fault" => raw.fault = Some(value.to_owned()),
            "missing" => {
                let (what, why) = value.split_once(' ').unwrap_or((value, ""));
                raw.missing.push((what.to_owned(), why.to_owned()));
            }
            "reg" => {
                let (name, v) = value.split_once(' ').ok_or_else(bad)?;
                raw.registers.push((name.to_owned(), hex(v).ok_or_else(bad)?));
            }
            "pc" => raw.pc = hex(value).ok_or_else(bad)?,
            "sp" => raw.sp = hex(value).ok_or_else(bad)?,
            "context" => raw.context = serde_json::from_str(value).ok(),
            // A scope that does not read costs only itself.
            "scope" => raw.scope = serde_json::from_str(value).ok(),
            "module" => {
                let mut f = value.splitn(5, ' ');
                let mut next = || f.next().ok_or_else(bad);
                raw.modules.push(RawModule {
                    start: hex(next()?).ok_or_else(bad)?,
                    end: hex(next()?).ok_or_else(bad)?,
                    bias: hex(next()?).ok_or_else(bad)?,
                    build_id: next()?.to_owned(),
                    path: next()?.to_owned(),
                });
            }
            "stack" => {
                let (addr, len) = value.split_once(' ').ok_or_else(bad)?;
                raw.stack_addr = hex(addr).ok_or_else(bad)?;
                let len: usize = len.parse().map_err(|_| bad())?;
                if len != rest.len() {
                    return Err(format!("stack says {len} bytes, {} follow", rest.len()));
                }
                raw.stack = rest.to_vec();
                return Ok(raw);
            }
            _ => {} // unknown lines are skipped: later versions may add some
        }
    }
}

/// The name of a signal.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

fn signal_meaning(signal: i32) -> &'static str {
    match signal {
        libc::SIGTRAP => "trace or breakpoint trap",
        libc::SIGSEGV => "invalid memory reference",
        libc::SIGBUS => "bus error",
        libc::SIGILL => "illegal instruction",
        libc::SIGFPE => "arithmetic exception",
        libc::SIGABRT => "abort",
        _ => "fatal signal",
    }
}

/// Symbol lookups in the modules' files, checked against the build ids the crash recorded. Kept
/// across reports by the uploader's prepare step (a backlog of crashes of one program reads its
/// debug information once), keyed by path and build id.
///
/// Public for a collector, which symbolizes reports with the debug files it was given
/// ([`Symbolizer::resolve_report_with`]) and keeps one `Symbolizer` for all of them.
pub struct Symbolizer {
    loaders: HashMap<(String, String), Result<addr2line::Loader, String>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// How many module files a [`Symbolizer`] keeps open; beyond that it starts again.
const KEEP_LOADERS: usize = 8;

impl Symbolizer {
    /// A symbolizer with no file open yet.
    pub fn new() -> Self {
        Self { loaders: HashMap::new() }
    }

    fn loader(&mut self, module: &RawModule) -> Result<&addr2line::Loader, String> {
        let key = (module.path.clone(), module.build_id.clone());
        if !self.loaders.contains_key(&key) && self.loaders.len() >= KEEP_LOADERS {
            self.loaders.clear();
        }
        self.loaders
            .entry(key)
            .or_insert_with(|| {
                let on_disk = file_build_id(Path::new(&module.path))?;
                if module.build_id != "-" && on_disk.as_deref() != Some(module.build_id.as_str()) {
                    return Err(format!(
                        "{} changed since the crash (build id {} then, {} now)",
                        module.path,
                        module.build_id,
                        on_disk.as_deref().unwrap_or("none")
                    ));
                }
                addr2line::Loader::new(&module.path).map_err(|e| format!("{}: {e}", module.path))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The frames at `address` (inlined functions first) and the symbol table's name of the function
    /// it is in; `None` when no symbol covers it. Each frame carries the module, its build id and the
    /// address's offset in it.
    fn frames(
        &mut self,
        module: &RawModule,
        address: u64,
        is_return: bool,
    ) -> Result<Option<Resolved>, String> {
        let loader = self.loader(module)?;
        // A return address points after the call; look inside the call instruction.
        let probe = address.wrapping_sub(module.bias).wrapping_sub(u64::from(is_return));
        let symbol =
            loader.find_symbol(probe).map(|name| strip_hash(&addr2line::demangle_auto(name.into(), None)));
        let mut out = Vec::new();
        if let Ok(mut iter) = loader.find_frames(probe) {
            while let Ok(Some(frame)) = iter.next() {
                let function =
                    frame.function.as_ref().and_then(|f| f.demangle().ok()).map(|n| strip_hash(&n));
                let (file, line) =
                    frame.location.map_or((None, None), |l| (l.file.map(str::to_owned), l.line));
                out.push(Frame { function, file, line, ..raw_frame(module, address) });
            }
        }
        // Line tables alone (`debug = "line-tables-only"`) may leave the outermost function without
        // a name: the symbol table has it, in full, and the file and line stay.
        match out.last_mut() {
            Some(outer) if outer.function.is_none() => outer.function.clone_from(&symbol),
            Some(_) => {}
            None => {
                if let Some(name) = &symbol {
                    out.push(Frame { function: Some(name.clone()), ..raw_frame(module, address) });
                }
            }
        }
        if out.iter().all(|f| f.function.is_none() && f.file.is_none()) {
            return Ok(None);
        }
        Ok(Some(Resolved { frames: out, symbol }))
    }
}

/// One address, resolved.
struct Resolved {
    /// Its frames, inlined functions first.
    frames: Vec<Frame>,
    /// The symbol table's name of the function the address is in (the outermost of `frames`).
    symbol: Option<String>,
}

/// A frame of `address` in `module` without a name: the address, the module's path and build id, and
/// the offset in it.
fn raw_frame(module: &RawModule, address: u64) -> Frame {
    Frame {
        address: format!("{address:#x}"),
        module: Some(module.path.clone()),
        build_id: (module.build_id != "-").then(|| module.build_id.clone()),
        offset: Some(format!("{:#x}", address.wrapping_sub(module.bias))),
        ..Frame::default()
    }
}

/// The return addresses of the crashing thread, found by unwinding the stack copy with the modules'
/// DWARF call frame information (`framehop`). `None` when it cannot start (no register state, an
/// architecture it does not know, or no module file to read).
#[cfg(target_arch = "x86_64")]
fn unwind(raw: &RawReport) -> Option<Vec<u64>> {
    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{FrameAddress, Unwinder};
    let bp = raw.registers.iter().find(|(n, _)| n == "rbp").map(|(_, v)| *v)?;
    if raw.sp == 0 {
        return None;
    }
    let mut unwinder = UnwinderX86_64::new();
    let mut by_path: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    for m in &raw.modules {
        let e = by_path.entry(m.path.as_str()).or_insert((m.start, m.end, m.bias));
        e.0 = e.0.min(m.start);
        e.1 = e.1.max(m.end);
    }
    let mut added = 0;
    for (path, (start, end, bias)) in by_path {
        if let Some(info) = section_info(Path::new(path)) {
            unwinder.add_module(framehop::Module::new(path.to_owned(), start..end, bias, info));
            added += 1;
        }
    }
    if added == 0 {
        return None;
    }
    let stack = &raw.stack;
    let base = raw.stack_addr;
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let offset = usize::try_from(addr.checked_sub(base).ok_or(())?).map_err(|_| ())?;
        let bytes: [u8; 8] = stack.get(offset..offset + 8).ok_or(())?.try_into().map_err(|_| ())?;
        Ok(u64::from_ne_bytes(bytes))
    };
    let mut cache = CacheX86_64::<_>::new();
    let mut iter =
        unwinder.iter_frames(raw.pc, UnwindRegsX86_64::new(raw.pc, raw.sp, bp), &mut cache, &mut read_stack);
    let mut returns = Vec::new();
    while let Ok(Some(frame)) = iter.next() {
        if let FrameAddress::ReturnAddress(ra) = frame {
            returns.push(ra.get());
        }
        if returns.len() >= 128 {
            break;
        }
    }
    Some(returns)
}

#[cfg(not(target_arch = "x86_64"))]
fn unwind(_raw: &RawReport) -> Option<Vec<u64>> {
    None
}

/// The sections framehop needs from an ELF file on disk.
#[cfg(target_arch = "x86_64")]
fn section_info(path: &Path) -> Option<framehop::ExplicitModuleSectionInfo<Vec<u8>>> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        Some((s.address()..s.address() + s.size(), s.data().ok()?.to_vec()))
    };
    let text = section(".text");
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr");
    let got = section(".got");
    Some(framehop::ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text.as_ref().map(|t| t.0.clone()),
        text: text.map(|t| t.1),
        got_svma: got.map(|g| g.0),
        eh_frame_svma: eh_frame.as_ref().map(|e| e.0.clone()),
        eh_frame: eh_frame.map(|e| e.1),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|e| e.0.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|e| e.1),
        debug_frame: section(".debug_frame").map(|d| d.1),
        ..Default::default()
    })
}

/// The GNU build id of an ELF file on disk.
fn file_build_id(path: &Path) -> Result<Option<String>, String> {
    use object::{Object, ObjectSection};
    // Only the headers and the note are read, not the whole file (a debug build's is 100 MB).
    let data = std::fs::File::open(path)
        .map(object::ReadCache::new)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let file = object::File::parse(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(Some(id)) = file.build_id() {
        return Ok(Some(::hex::encode(id)));
    }
    // Some linkers put the note in a section only.
    let id = file
        .section_by_name(".note.gnu.build-id")
        .and_then(|s| s.data().ok())
        .and_then(crate::signal::gnu_build_id);
    Ok(id)
}

/// Turns a raw signal report into a crash report: the program counter's frames, then the return
/// addresses found by unwinding the stack copy with the modules' call frame information (all kept,
/// named or not: they are exact), or, without it, found by scanning the stack copy (kept when they
/// fall in a module's code and resolve to a function). When a module's file is gone, changed (build
/// id), or has no symbols, the frames keep their raw addresses, modules and offsets, and the report
/// says why. Every frame is classified (`category`, `in_app`); the fingerprint follows REPORT.md's
/// rule for signals.
pub fn symbolize(raw: &RawReport) -> CrashReport {
    symbolize_with(raw, &mut Symbolizer::new())
}

/// [`symbolize`] with the module files `symbolizer` has open.
pub(crate) fn symbolize_with(raw: &RawReport, symbolizer: &mut Symbolizer) -> CrashReport {
    let mut physical: Vec<Resolved> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let module_of = |addr: u64| raw.modules.iter().find(|m| m.start <= addr && addr < m.end);
    let unnamed = |addr: u64| Resolved {
        frames: vec![Frame { address: format!("{addr:#x}"), ..Frame::default() }],
        symbol: None,
    };
    // `keep_raw`: an address that does not resolve is kept as a frame without a name.
    let mut push = |addr: u64,
                    is_return: bool,
                    keep_raw: bool,
                    physical: &mut Vec<Resolved>,
                    errors: &mut Vec<String>|
     -> bool {
        // A return address is one past its call: the call belongs to the module.
        let Some(module) = module_of(addr.wrapping_sub(u64::from(is_return))) else {
            if keep_raw {
                physical.push(unnamed(addr));
                errors.push(format!("{addr:#x} is in no known module"));
            }
            return false;
        };
        let error = match symbolizer.frames(module, addr, is_return) {
            Ok(Some(found)) => {
                physical.push(found);
                return true;
            }
            Ok(None) => format!("no symbol for some addresses in {}", module.path),
            // Without symbols a scanned stack word cannot be told from a stale value: it is dropped.
            Err(e) => e,
        };
        if keep_raw {
            physical.push(Resolved { frames: vec![raw_frame(module, addr)], symbol: None });
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        false
    };
    push(raw.pc, false, true, &mut physical, &mut errors);
    match unwind(raw) {
        // CFI unwinding found the callers: exact return addresses.
        Some(returns) if !returns.is_empty() => {
            for ra in returns {
                push(ra, true, true, &mut physical, &mut errors);
            }
        }
        // Without unwind information, scan the stack copy for words that are return addresses into
        // a module's code and resolve to a function (the fallback breakpad also uses).
        _ => {
            let mut scanned = 0;
            for word in raw.stack.chunks_exact(8) {
                if scanned >= MAX_SCANNED {
                    break;
                }
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                let value = u64::from_ne_bytes(bytes);
                if module_of(value).is_some() && push(value, true, false, &mut physical, &mut errors) {
                    scanned += 1;
                }
            }
        }
    }
    // A scanned word that repeats the one before it is the same frame.
    physical.dedup_by(|a, b| a.frames[0].address == b.frames[0].address);
    let app = raw.context.as_ref().map_or("", |c| c.app.as_str());
    let main = main_module(
        raw.context.as_ref().and_then(|c| c.executable.as_deref()),
        raw.modules.first().map(|m| m.path.as_str()),
    );
    for p in &mut physical {
        classify_all(&mut p.frames, main);
    }
    let fingerprint = signal_fingerprint(app, signal_name(raw.signal), &signal_key(&physical, main));
    let frames: Vec<Frame> = physical.into_iter().flat_map(|p| p.frames).collect();
    let modules = modules_of(&frames, &raw.modules);
    let name = signal_name(raw.signal);
    let (message, thread, mut context) = signal_fields(raw, &mut errors);
    let scope = raw.scope.clone().unwrap_or_default();
    crate::scope::apply_environment(&scope, &mut context);
    CrashReport {
        scope,
        kind: "signal".into(),
        fingerprint,
        symbolized: frames.iter().any(|f| f.function.is_some()),
        symbolization_error: (!errors.is_empty()).then(|| errors.join("; ")),
        message,
        location: None,
        signal: Some(SignalInfo {
            number: raw.signal,
            name: name.into(),
            code: raw.code,
            address: raw.addr.map(|a| format!("{a:#x}")),
        }),
        thread,
        frames,
        context,
        breadcrumbs: {
            let mut crumbs = raw.breadcrumbs.clone();
            // The handler writes the ring oldest first; a record that overwrote a slot while it was
            // read lands out of order.
            crumbs.sort_by_key(|c| c.ts_ms);
            crumbs
        },
        crash_loop_suppressed: 0,
        registers: raw.registers.iter().map(|(n, v)| (n.clone(), format!("{v:#x}"))).collect(),
        modules,
    }
}

/// The executable's path: the context's, when it is among the modules; else the first module (the
/// loader lists the executable first).
fn main_module<'a>(executable: Option<&'a str>, first: Option<&'a str>) -> Option<&'a str> {
    executable.or(first)
}

/// What a signal report groups by (REPORT.md, "Grouping"): the names of the first application
/// frames, one per address (the symbol table's name of the function the address is in: the same in
/// every build with symbols, whatever its debug information); without application frames, the first
/// named ones; without names, the executable's build id and the frames' offsets in it.
fn signal_key<'a>(physical: &'a [Resolved], main: Option<&str>) -> SignalKey<'a> {
    let name = |p: &'a Resolved| p.symbol.as_deref().or_else(|| p.frames.last()?.function.as_deref());
    let outer_in_app = |p: &Resolved| p.frames.last().is_some_and(|f| f.in_app);
    let in_app: Vec<&str> =
        physical.iter().filter(|p| outer_in_app(p)).filter_map(name).take(FRAMES_HASHED).collect();
    if !in_app.is_empty() {
        return SignalKey::Functions(in_app);
    }
    let named: Vec<&str> = physical.iter().filter_map(name).take(FRAMES_HASHED).collect();
    if !named.is_empty() {
        return SignalKey::Functions(named);
    }
    let in_main: Vec<&Frame> = physical
        .iter()
        .filter_map(|p| p.frames.last())
        .filter(|f| f.module.is_some() && f.module.as_deref() == main)
        .collect();
    match in_main.first().and_then(|f| f.build_id.as_deref()) {
        Some(build_id) => SignalKey::Code {
            build_id,
            offsets: in_main.iter().filter_map(|f| f.offset.as_deref()).take(FRAMES_HASHED).collect(),
        },
        None => SignalKey::Nothing,
    }
}

/// The signal-specific fields of a report: the message (a stack overflow is titled so; a fault
/// names its address, a sent signal has none), the thread, the context with the crashed process's
/// pid and the uptime at the signal. What the handler could not capture goes first in `errors`.
fn signal_fields(raw: &RawReport, errors: &mut Vec<String>) -> (String, ThreadInfo, Context) {
    let name = signal_name(raw.signal);
    let message = if raw.fault.as_deref() == Some("stack-overflow") {
        format!("stack overflow ({name} in the guard region below the thread's stack)")
    } else {
        match raw.addr {
            Some(addr) => format!("{name} ({}) at {addr:#x}", signal_meaning(raw.signal)),
            None => format!("{name} ({})", signal_meaning(raw.signal)),
        }
    };
    let notes = raw.missing.iter().map(|(what, why)| match what.as_str() {
        "stack" => format!("stack not captured ({why}): frames past the program counter's are missing"),
        "build-ids" => format!("build ids of libraries loaded after init not read ({why})"),
        "modules-loaded-after-init" => {
            format!("module list of init used, libraries loaded later are missing ({why})")
        }
        other => format!("{other} not captured ({why})"),
    });
    let notes: Vec<String> = notes.collect();
    errors.splice(0..0, notes);
    let thread = ThreadInfo { name: raw.thread.clone(), id: Some(raw.tid) };
    let mut context = raw.context.clone().unwrap_or_default();
    if raw.pid != 0 {
        context.pid = raw.pid;
    }
    if let Some(uptime) = raw.uptime_ms {
        context.uptime_ms = uptime;
    }
    (message, thread, context)
}

/// The modules `frames` are in (see [`module_entries`]).
fn modules_of(frames: &[Frame], all: &[RawModule]) -> Vec<Module> {
    let used: Vec<&RawModule> =
        all.iter().filter(|m| frames.iter().any(|f| f.module.as_deref() == Some(&m.path))).collect();
    module_entries(&used)
}

/// One entry per path of `segments` (a module's executable segments), spanning them, in their order.
pub(crate) fn module_entries(segments: &[&RawModule]) -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    for m in segments {
        if out.iter().any(|o| o.path == m.path) {
            continue;
        }
        let (start, end) = segments
            .iter()
            .filter(|s| s.path == m.path)
            .fold((u64::MAX, 0), |(start, end), s| (start.min(s.start), end.max(s.end)));
        out.push(Module {
            path: m.path.clone(),
            build_id: (m.build_id != "-").then(|| m.build_id.clone()),
            start: format!("{start:#x}"),
            end: format!("{end:#x}"),
            bias: format!("{:#x}", m.bias),
        });
    }
    out
}

/// Symbolizes a crash report whose frames are addresses (a panic's raw capture, or a report
/// symbolized before without its module's symbols), with each module's own file, as the crashed
/// process saw it. See [`resolve_with`].
pub fn resolve(report: &mut CrashReport) {
    resolve_in(report, &|module| Some(PathBuf::from(&module.path)), &mut Symbolizer::new(), None);
}

/// Symbolizes a crash report's frames that have an address and a module but no name yet, reading
/// each module's symbols from `file(module)` (its own path, or a debug file of the same build id:
/// a build's unstripped twin), checked against the build id the report recorded. Then classifies
/// every frame and, for a panic, cuts the panic machinery from the top ([`grouping`]); sets
/// `symbolized` and `symbolization_error`. Frames that stay unnamed keep their address, module,
/// build id and offset.
pub fn resolve_with(report: &mut CrashReport, file: &dyn Fn(&Module) -> PathBuf) {
    resolve_in(report, &|module| Some(file(module)), &mut Symbolizer::new(), None);
}

fn resolve_in(
    report: &mut CrashReport,
    file: &dyn Fn(&Module) -> Option<PathBuf>,
    symbolizer: &mut Symbolizer,
    mark: Option<&str>,
) -> Vec<Resolved> {
    let frames = std::mem::take(&mut report.frames);
    let (physical, errors) = resolve_frames(
        frames,
        &report.modules,
        report.context.executable.as_deref(),
        report.kind == "panic",
        file,
        symbolizer,
        mark,
    );
    let mut frames: Vec<Frame> = physical.iter().flat_map(|p| p.frames.iter().cloned()).collect();
    if report.kind == "panic" {
        grouping::cut_panic_machinery(&mut frames);
    }
    report.symbolized = frames.iter().any(|f| f.function.is_some());
    report.symbolization_error = (!errors.is_empty()).then(|| errors.join("; "));
    report.frames = frames;
    physical
}

/// The build ids of the modules whose frames have no name: the debug files that would name them.
/// In the frames' order, each once.
pub fn unnamed_build_ids(frames: &[Frame]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for frame in frames.iter().filter(|f| f.function.is_none()) {
        if let Some(id) = frame.build_id.as_deref().filter(|id| !ids.iter().any(|i| i == id)) {
            ids.push(id.to_owned());
        }
    }
    ids
}

fn named(frames: &[Frame]) -> usize {
    frames.iter().filter(|f| f.function.is_some()).count()
}

impl Symbolizer {
    /// Symbolizes a crash report that left its machine with frames unnamed (a stripped build, a
    /// binary replaced before the report was read), with the files `file` gives: the debug file of a
    /// module's build id, or `None` to leave that module's frames as they are. As [`resolve_with`]
    /// (classified, panic machinery cut, `symbolized` and `symbolization_error` set); each frame this
    /// names is marked `symbolized_by: "collector"` ([`COLLECTOR`]); and when it names any, a signal report's
    /// fingerprint is computed again by REPORT.md's rule (a stripped build's `code` key becomes its
    /// functions, the group an unstripped build of the same code has). Returns how many frames it
    /// named.
    pub fn resolve_report_with(
        &mut self,
        report: &mut CrashReport,
        file: &dyn Fn(&Module) -> Option<PathBuf>,
    ) -> usize {
        let before = named(&report.frames);
        let physical = resolve_in(report, file, self, Some(COLLECTOR));
        let gained = named(&report.frames).saturating_sub(before);
        if gained == 0 {
            return 0;
        }
        if report.kind == "signal" {
            let main = main_module(
                report.context.executable.as_deref(),
                report.modules.first().map(|m| m.path.as_str()),
            );
            let signal = report.signal.as_ref().map_or("", |s| s.name.as_str());
            report.fingerprint =
                signal_fingerprint(&report.context.app, signal, &signal_key(&physical, main));
        }
        gained
    }

    /// [`Symbolizer::resolve_report_with`] for an event: its frames named with the files `file`
    /// gives, classified, and its fingerprint computed again when any was named. Returns how many
    /// frames it named.
    pub fn resolve_event_with(
        &mut self,
        event: &mut EventReport,
        file: &dyn Fn(&Module) -> Option<PathBuf>,
    ) -> usize {
        let before = named(&event.frames);
        let frames = std::mem::take(&mut event.frames);
        let (physical, errors) = resolve_frames(
            frames,
            &event.modules,
            event.context.executable.as_deref(),
            true,
            file,
            self,
            Some(COLLECTOR),
        );
        event.frames = physical.into_iter().flat_map(|p| p.frames).collect();
        let gained = named(&event.frames).saturating_sub(before);
        if gained == 0 {
            return 0;
        }
        cut_capture_error(&mut event.frames);
        event.symbolized = true;
        event.symbolization_error = (!errors.is_empty()).then(|| errors.join("; "));
        let error_type = event.error.as_ref().map(|e| e.type_name.as_deref().unwrap_or(""));
        event.fingerprint =
            grouping::event_fingerprint(&event.context.app, error_type, &event.message, &event.frames);
        gained
    }
}

/// The `symbolized_by` of frames a collector named (REPORT.md, "Frames").
pub const COLLECTOR: &str = "collector";

/// Symbolizes an event's raw capture with each module's own file, classifies its frames, and
/// gives it its fingerprint ([`grouping::event_fingerprint`]).
pub fn resolve_event(event: &mut EventReport) {
    resolve_event_in(event, &mut Symbolizer::new());
}

fn resolve_event_in(event: &mut EventReport, symbolizer: &mut Symbolizer) {
    let frames = std::mem::take(&mut event.frames);
    let (physical, errors) = resolve_frames(
        frames,
        &event.modules,
        event.context.executable.as_deref(),
        true,
        &|module| Some(PathBuf::from(&module.path)),
        symbolizer,
        None,
    );
    let mut frames: Vec<Frame> = physical.into_iter().flat_map(|p| p.frames).collect();
    cut_capture_error(&mut frames);
    event.symbolized = frames.iter().any(|f| f.function.is_some());
    event.symbolization_error = (!errors.is_empty()).then(|| errors.join("; "));
    let error_type = event.error.as_ref().map(|e| e.type_name.as_deref().unwrap_or(""));
    event.fingerprint = grouping::event_fingerprint(&event.context.app, error_type, &event.message, &frames);
    event.frames = frames;
}

/// Cuts `capture_error` itself from the top of an event's frames: it is inlined into its caller
/// (the capture cut the stack at the function it calls, by address), so it shows as an inlined
/// frame at the caller's first address. Only frames at that first address are looked at, by name
/// (`capture_error`, `capture_error<…>` with line tables only, or its path; `capture_anyhow`).
fn cut_capture_error(frames: &mut Vec<Frame>) {
    let Some(first) = frames.first().map(|f| f.address.clone()) else { return };
    let ours = frames
        .iter()
        .take_while(|f| f.address == first)
        .take_while(|f| {
            f.function.as_deref().is_some_and(|name| {
                let path = name.split('<').next().unwrap_or(name);
                matches!(
                    path.rsplit("::").next(),
                    Some("capture_error" | "capture_error_named" | "capture_error_with" | "capture_anyhow")
                )
            })
        })
        .count();
    // Never every frame: the caller stays.
    if ours < frames.len() {
        frames.drain(..ours);
    }
}

/// Resolves and classifies `frames` (see [`resolve_with`]); `all_return` when every frame is a
/// return address (a panic's or an event's capture), else all but the first (a signal report's).
/// Returns the frames and what could not be resolved.
fn resolve_frames(
    frames: Vec<Frame>,
    report_modules: &[Module],
    executable: Option<&str>,
    all_return: bool,
    file: &dyn Fn(&Module) -> Option<PathBuf>,
    symbolizer: &mut Symbolizer,
    mark: Option<&str>,
) -> (Vec<Resolved>, Vec<String>) {
    let mut errors: Vec<String> = Vec::new();
    // A module `file` gives no file for keeps its frames as they are.
    let modules: Vec<(Option<RawModule>, &Module)> = report_modules
        .iter()
        .filter_map(|m| {
            let raw = file(m).map(|path| RawModule {
                start: hex(&m.start).unwrap_or(0),
                end: hex(&m.end).unwrap_or(0),
                bias: hex(&m.bias).unwrap_or(0),
                build_id: m.build_id.clone().unwrap_or_else(|| "-".into()),
                path: path.display().to_string(),
            });
            (hex(&m.start).is_some() && hex(&m.end).is_some() && hex(&m.bias).is_some()).then_some((raw, m))
        })
        .collect();
    let mut out: Vec<Resolved> = Vec::with_capacity(frames.len());
    // A frame passed on as it is joins the one before it when both are at one address (the inlined
    // functions of one address, named before): one address, one physical frame.
    let pass = |out: &mut Vec<Resolved>, frame: Frame, last_passed: &mut bool| {
        match out.last_mut() {
            Some(last) if *last_passed && last.frames.first().is_some_and(|f| f.address == frame.address) => {
                last.frames.push(frame);
            }
            _ => out.push(Resolved { frames: vec![frame], symbol: None }),
        }
        *last_passed = true;
    };
    let mut last_passed = false;
    for (n, frame) in frames.into_iter().enumerate() {
        let Some(address) = hex(&frame.address).filter(|_| frame.function.is_none()) else {
            pass(&mut out, frame, &mut last_passed);
            continue;
        };
        // Every frame of a panic is a return address; so is every frame of a signal report but its
        // first (the instruction that faulted). A return address is one past its call.
        let is_return = all_return || n > 0;
        let lookup = address.wrapping_sub(u64::from(is_return));
        // The frame's module: named in the frame, or (a panic's raw capture) the one whose range
        // holds the address.
        let in_range = |m: &Module| {
            hex(&m.start).is_some_and(|start| start <= lookup) && hex(&m.end).is_some_and(|end| lookup < end)
        };
        let module = modules.iter().find(|(_, m)| match frame.module.as_deref() {
            Some(path) => m.path == path,
            None => in_range(m),
        });
        let Some((Some(raw), original)) = module else {
            pass(&mut out, frame, &mut last_passed);
            continue;
        };
        last_passed = false;
        let placed = Frame {
            module: Some(original.path.clone()),
            build_id: original.build_id.clone(),
            offset: Some(format!("{:#x}", address.wrapping_sub(raw.bias))),
            ..frame
        };
        let error = match symbolizer.frames(raw, address, is_return) {
            Ok(Some(found)) => {
                let frames = found
                    .frames
                    .into_iter()
                    .map(|f| Frame {
                        module: Some(original.path.clone()),
                        symbolized_by: mark.map(str::to_owned).or(f.symbolized_by),
                        ..f
                    })
                    .collect();
                out.push(Resolved { frames, symbol: found.symbol });
                continue;
            }
            Ok(None) => format!("no symbol for some addresses in {}", raw.path),
            Err(e) => e,
        };
        if !errors.contains(&error) {
            errors.push(error);
        }
        out.push(Resolved { frames: vec![placed], symbol: None });
    }
    let main = main_module(executable, report_modules.first().map(|m| m.path.as_str()));
    for p in &mut out {
        classify_all(&mut p.frames, main);
    }
    (out, errors)
}

/// The uploader's body transformation for a spool at `spool_dir`. JSON bodies go as they are. The
/// first time an entry that needs it is prepared, it is made into the JSON it is sent as, and the
/// claimed entry is rewritten with that JSON ([`lastword_spool::Claim::rewrite`]), so that this
/// happens once per report and never on a resend:
///
/// - a raw signal report is symbolized, passes the crash-loop limit (counted in the hour of the
///   crash, the entry's creation time) and the `before_send` hook, and is then sent, or skipped
///   (deleted, counted);
/// - a panic's raw capture (`FLAG_UNSYMBOLIZED`; the hook decided the limit and `before_send`) is
///   symbolized.
///
/// If the rewrite fails, the prepared body is still sent; the entry is prepared again if it comes
/// back, and the crash-loop limit gives it the answer it gave before (it remembers the entries it
/// admitted).
pub(crate) fn prepare_with(
    spool_dir: PathBuf,
    crash_loop_per_hour: u32,
    losses: Arc<LossCounters>,
    before_send: Option<BeforeSend>,
    events: EventPolicy,
) -> Prepare {
    let crash_loop = CrashLoop::new(&spool_dir, crash_loop_per_hour);
    let event_loop = CrashLoop::for_events(&spool_dir, events.per_hour);
    let symbolizer = Mutex::new(Symbolizer::new());
    Arc::new(move |claim: &mut Claim| {
        let flags = claim.flags();
        // Most entries (log batches, events and crash reports prepared before): nothing to do, and
        // nothing to copy or lock.
        if flags & (FLAG_RAW_SIGNAL | FLAG_UNSYMBOLIZED) == 0 {
            return Ok(Prepared::AsIs);
        }
        let mut symbolizer = symbolizer.lock().unwrap_or_else(PoisonError::into_inner);
        let report = if flags & FLAG_RAW_SIGNAL != 0 {
            let raw = parse_raw(claim.body())?;
            let mut report = symbolize_with(&raw, &mut symbolizer);
            let entry = claim.id().to_string();
            match crash_loop.admit(&report.fingerprint, claim.created_millis(), Some(&entry)) {
                Admit::Store { suppressed_before } => report.crash_loop_suppressed = suppressed_before,
                Admit::Suppress => {
                    losses.crash_loop_suppressed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Counted before the entry goes: a crash between the two counts it twice at worst.
                    let _ = claim.spool().add_to_counter(SUPPRESSED_COUNTER, 1);
                    return Ok(Prepared::Skip("the same crash repeated too often (crash loop)".into()));
                }
            }
            if let Some(hook) = &before_send
                && !hook(&mut report)
            {
                return Ok(Prepared::Skip("dropped by before_send".into()));
            }
            report
        } else if claim.kind() == Kind::Event && flags & FLAG_UNSYMBOLIZED != 0 {
            let mut event: EventReport =
                serde_json::from_slice(claim.body()).map_err(|e| format!("event is not JSON: {e}"))?;
            resolve_event_in(&mut event, &mut symbolizer);
            drop(symbolizer);
            let entry = claim.id().to_string();
            match event_loop.admit(&event.fingerprint, event.ts_ms, Some(&entry)) {
                Admit::Store { suppressed_before } => event.loop_suppressed = suppressed_before,
                Admit::Suppress => {
                    // Counted before the entry goes: a crash between the two counts it twice at worst.
                    let _ = claim.spool().add_to_counter(EVENTS_SUPPRESSED_COUNTER, 1);
                    return Ok(Prepared::Skip("the same event repeated too often (event loop)".into()));
                }
            }
            if let Some(hook) = &events.before_send
                && !hook(&mut event)
            {
                return Ok(Prepared::Skip("dropped by before_send_event".into()));
            }
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            let _ = claim.rewrite(FLAG_JSON, &body);
            return Ok(Prepared::Send(body));
        } else if flags & FLAG_UNSYMBOLIZED != 0 {
            let mut report: CrashReport =
                serde_json::from_slice(claim.body()).map_err(|e| format!("crash report is not JSON: {e}"))?;
            resolve_in(&mut report, &|module| Some(PathBuf::from(&module.path)), &mut symbolizer, None);
            report
        } else {
            return Ok(Prepared::AsIs);
        };
        drop(symbolizer);
        let body = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        // Recorded: a resend sends this body as it is. On failure, see above.
        let _ = claim.rewrite(FLAG_JSON, &body);
        Ok(Prepared::Send(body))
    })
}

/// A crash entry's body as a readable crash report, as it will be uploaded: a raw signal report or
/// a panic's raw capture symbolized here, any other crash report as it is. `None` when the body does
/// not read.
pub fn readable(flags: u16, body: &[u8]) -> Option<CrashReport> {
    if flags & FLAG_RAW_SIGNAL != 0 {
        return parse_raw(body).ok().map(|raw| symbolize(&raw));
    }
    let mut report: CrashReport = serde_json::from_slice(body).ok()?;
    if flags & FLAG_UNSYMBOLIZED != 0 {
        resolve(&mut report);
    }
    Some(report)
}

/// The body transformation for the sidecar on the spool at `spool_dir` (default crash-loop limit of
/// 10 an hour, no `before_send`).
pub fn prepare_for_upload(spool_dir: &Path) -> Prepare {
    prepare_with(spool_dir.to_path_buf(), 10, Arc::default(), None, EventPolicy::default())
}

/// How events are decided where they are first prepared.
#[derive(Clone)]
pub(crate) struct EventPolicy {
    /// The event-loop limit: the same fingerprint sent at most this often per clock hour.
    pub per_hour: u32,
    /// The application's hook, if any.
    pub before_send: Option<BeforeSendEvent>,
}

impl Default for EventPolicy {
    /// The defaults of [`crate::Config`]: 100 an hour, no hook (a sidecar's).
    fn default() -> Self {
        Self { per_hour: 100, before_send: None }
    }
}

/// An event entry's body as it will be uploaded: its raw capture symbolized and fingerprinted here.
/// `None` when the body does not read.
pub fn readable_event(flags: u16, body: &[u8]) -> Option<EventReport> {
    let mut event: EventReport = serde_json::from_slice(body).ok()?;
    if flags & FLAG_UNSYMBOLIZED != 0 {
        resolve_event(&mut event);
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &[&str] = &[
        "lastword-raw-signal 1",
        "signal 11",
        "code 1",
        "addr 0x0",
        "pid 7",
        "tid 8",
        "thread main",
        "reg rbp 0x10",
        "pc 0x1000",
        "sp 0x2000",
        r#"context {"app":"a","os":"linux","arch":"x86_64","pid":7,"uptime_ms":0,"lastword":"0"}"#,
        "module 0x1000 0x2000 0x0 - /nonexistent",
        "future-key x",
        "stack 0x2000 8",
    ];

    fn sample() -> Vec<u8> {
        let mut body = SAMPLE.join("\n").into_bytes();
        body.push(b'\n');
        body.extend_from_slice(&0x1234u64.to_ne_bytes());
        body
    }

    #[test]
    fn crumb_lines_become_breadcrumbs_in_time_order_and_a_bad_one_costs_only_itself() {
        let mut body = Vec::new();
        body.extend_from_slice(b"lastword-raw-signal 1\nsignal 11\n");
        body.extend_from_slice(
            b"crumb {\"ts_ms\":20,\"level\":\"WARN\",\"target\":\"a\",\"message\":\"second\"}\n",
        );
        body.extend_from_slice(
            b"crumb {\"ts_ms\":10,\"level\":\"INFO\",\"target\":\"a\",\"message\":\"first\"}\n",
        );
        body.extend_from_slice(b"crumb {\"ts_ms\":\n");
        body.extend_from_slice(b"crumb \xff\xfe\n");
        body.extend_from_slice(b"stack 0x2000 0\n");
        let raw = parse_raw(&body).unwrap();
        assert_eq!(raw.breadcrumbs.len(), 2);
        let report = symbolize(&raw);
        let messages: Vec<_> = report.breadcrumbs.iter().map(|b| b.message.as_str()).collect();
        assert_eq!(messages, ["first", "second"]);
        assert_eq!(report.breadcrumbs[1].level, "WARN");
    }

    #[test]
    fn entries_without_raw_frames_are_sent_as_they_are_and_raw_ones_are_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let spool = lastword_spool::Spool::open(dir.path(), lastword_spool::SpoolOptions::default()).unwrap();
        for kind in [Kind::Crash, Kind::Event, Kind::Log] {
            spool.write(kind, br#"{"message":"done before"}"#).unwrap();
        }
        let prepare = prepare_for_upload(dir.path());
        let mut claims = Vec::new();
        while let Some(claim) = spool.claim().unwrap() {
            claims.push(claim);
        }
        assert_eq!(claims.len(), 3);
        for claim in &mut claims {
            assert_eq!(prepare(claim), Ok(Prepared::AsIs), "{:?}", claim.kind());
        }
        drop(claims);
        // A panic's raw capture is prepared: its body is made again (here it does not read).
        let dir = tempfile::tempdir().unwrap();
        let spool = lastword_spool::Spool::open(dir.path(), lastword_spool::SpoolOptions::default()).unwrap();
        spool.write_flagged(Kind::Crash, FLAG_UNSYMBOLIZED, b"not json").unwrap();
        let mut claim = spool.claim().unwrap().unwrap();
        let prepare = prepare_for_upload(dir.path());
        assert!(prepare(&mut claim).is_err_and(|e| e.contains("not JSON")));
        claim.release().unwrap();
    }

    #[test]
    fn a_raw_report_parses_and_unknown_keys_are_skipped() {
        let raw = parse_raw(&sample()).unwrap();
        assert_eq!((raw.signal, raw.code, raw.addr, raw.pid, raw.tid), (11, 1, Some(0), 7, 8));
        assert_eq!(raw.thread.as_deref(), Some("main"));
        assert_eq!(raw.modules.len(), 1);
        assert_eq!(raw.context.unwrap().app, "a");
        assert_eq!(raw.stack.len(), 8);
    }

    #[test]
    fn signal_lines_give_the_title_the_uptime_the_pid_and_the_notes_of_what_is_missing() {
        let body = b"lastword-raw-signal 1\nsignal 6\ncode -6\npid 9\ntid 9\nthread main\nuptime_ms 1234\n\
missing stack process_vm_readv EPERM, /proc/self/mem EPERM\n\
context {\"app\":\"a\",\"os\":\"linux\",\"arch\":\"x86_64\",\"pid\":7,\"uptime_ms\":0,\"lastword\":\"0\"}\n\
stack 0x0 0\n";
        let raw = parse_raw(body).unwrap();
        assert_eq!(raw.addr, None);
        let report = symbolize(&raw);
        assert_eq!(report.message, "SIGABRT (abort)");
        assert_eq!(report.signal.as_ref().unwrap().address, None);
        assert_eq!((report.context.pid, report.context.uptime_ms), (9, 1234), "the crashed process's");
        let note = report.symbolization_error.unwrap();
        assert!(
            note.starts_with("stack not captured (process_vm_readv EPERM, /proc/self/mem EPERM)"),
            "{note}"
        );

        let overflow = b"lastword-raw-signal 1\nsignal 11\ncode 2\naddr 0x7ffd0000fff8\nfault stack-overflow\nstack 0x0 0\n";
        let report = symbolize(&parse_raw(overflow).unwrap());
        assert!(report.message.starts_with("stack overflow (SIGSEGV"), "{}", report.message);
        assert!(!report.message.contains("0x"));
        assert_eq!(report.signal.unwrap().address.as_deref(), Some("0x7ffd0000fff8"));
    }

    #[test]
    fn a_missing_module_file_leaves_raw_addresses_and_says_why() {
        let report = symbolize(&parse_raw(&sample()).unwrap());
        assert!(!report.symbolized);
        assert_eq!(report.frames[0].address, "0x1000");
        assert!(report.symbolization_error.unwrap().contains("/nonexistent"));
        assert_eq!(report.signal.unwrap().name, "SIGSEGV");
    }

    #[test]
    fn a_stack_length_that_does_not_match_is_an_error_not_an_allocation() {
        let mut body = sample();
        let text =
            String::from_utf8_lossy(&body).replace("stack 0x2000 8", "stack 0x2000 18446744073709551615");
        body = text.into_bytes();
        assert!(parse_raw(&body).is_err());
    }

    proptest! {
        #[test]
        fn parse_raw_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_raw(&bytes);
        }

        #[test]
        fn parse_raw_never_panics_on_a_damaged_report(cut in 0usize..400, flip in 0usize..400, byte: u8) {
            let mut body = sample();
            if flip < body.len() {
                body[flip] = byte;
            }
            body.truncate(cut.min(body.len()));
            if let Ok(raw) = parse_raw(&body) {
                let _ = symbolize(&raw);
            }
        }
    }
}
