//! Frames and grouping in every build profile: the crash app built as this test's dev build (full
//! debug information), in release (`debug = "line-tables-only"`, this workspace's release profile),
//! with symbols only (`strip --strip-debug`: cargo's default release) and stripped
//! (`strip --strip-all`); see `lastword_tests::builds`. Reports are read as the uploader prepares
//! them; the stripped build's are then symbolized with its unstripped twin, as a collector would with
//! the build's debug file.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lastword::report::{Category, CrashReport};
use lastword::spool::{Kind, SpoolView};
use lastword::symbolize::{readable, resolve_with};
use lastword_tests::builds::{Variant, app, release};

const DEV: &str = env!("CARGO_BIN_EXE_lastword-crash-app");

/// Runs `case` of `variant` on a fresh spool; returns its one crash report, prepared as for upload
/// (and, for the stripped build, symbolized with the unstripped twin).
fn report(variant: Variant, case: &str) -> CrashReport {
    let binary = app(variant, DEV);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(&binary)
        .arg(case)
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{case} crashes");
    let view = SpoolView::open(&spool).unwrap();
    let crashes: Vec<_> = view.list().unwrap().into_iter().filter(|e| e.kind == Some(Kind::Crash)).collect();
    assert_eq!(crashes.len(), 1, "{variant:?} {case}: {crashes:#?}");
    let entry = view.read(crashes[0].id.unwrap()).unwrap();
    let mut report = readable(entry.header.flags, &entry.body).unwrap();
    if variant == Variant::Stripped {
        let own = |f: &&lastword::report::Frame| f.module.as_deref() == Some(binary.to_str().unwrap());
        assert!(
            report.frames.iter().filter(own).all(|f| f.function.is_none()),
            "no names in a stripped build"
        );
        with_twin(&mut report, &binary);
    }
    report
}

/// Symbolizes a stripped build's report with the build it was stripped from: the same code, with
/// its symbols and line tables (what a collector does with the build's debug file).
fn with_twin(report: &mut CrashReport, stripped: &Path) {
    resolve_with(report, &|m| {
        if Path::new(&m.path) == stripped { release().clone() } else { PathBuf::from(&m.path) }
    });
}

fn names(report: &CrashReport) -> Vec<&str> {
    report.frames.iter().map(|f| f.function.as_deref().unwrap_or("?")).collect()
}

/// The first frame of the application's own code.
fn first_in_app(report: &CrashReport) -> &str {
    report.frames.iter().find(|f| f.in_app).and_then(|f| f.function.as_deref()).unwrap_or("")
}

#[test]
fn two_different_panics_are_two_groups_and_the_same_panic_one_group_in_every_profile() {
    let mut first_fingerprints = Vec::new();
    for variant in Variant::ALL {
        let first = report(variant, "panic-none-first");
        let again = report(variant, "panic-none-first");
        let second = report(variant, "panic-none-second");
        assert_ne!(first.fingerprint, second.fingerprint, "{variant:?}: two panic sites, two groups");
        assert_eq!(first.fingerprint, again.fingerprint, "{variant:?}: the same panic, run twice");
        first_fingerprints.push((variant, first.fingerprint));
    }
    let (_, dev) = &first_fingerprints[0];
    for (variant, fingerprint) in &first_fingerprints {
        assert_eq!(fingerprint, dev, "{variant:?}: the same panic groups across builds and debug info");
    }
}

#[test]
fn the_top_frame_of_a_panic_is_the_applications_own_in_every_profile() {
    for variant in Variant::ALL {
        for (case, function) in [("panic-none-first", "first_lookup"), ("panic-none-second", "second_lookup")]
        {
            let report = report(variant, case);
            let top = &report.frames[0];
            assert!(
                top.function.as_deref().is_some_and(|f| f.ends_with(function)),
                "{variant:?} {case}: the top frame is {function}: {:#?}",
                names(&report)
            );
            assert_eq!((top.category, top.in_app), (Some(Category::App), true), "{variant:?} {case}");
            // Neither the reporter nor the unwinder appears anywhere: they are above the hook.
            for frame in &report.frames {
                let name = frame.function.as_deref().unwrap_or("");
                let file = frame.file.as_deref().unwrap_or("");
                assert!(
                    !name.starts_with("lastword::")
                        && !name.starts_with("backtrace::")
                        && !file.contains("client-lib/src"),
                    "{variant:?} {case}: lastword's own frame in the report: {:#?}",
                    names(&report)
                );
            }
        }
    }
}

#[test]
fn every_frame_says_whose_code_it_is_and_where_it_is_in_its_module() {
    for variant in Variant::ALL {
        let report = report(variant, "panic-none-first");
        let category_of = |needle: &str| {
            let frame =
                report.frames.iter().find(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)));
            frame.unwrap_or_else(|| panic!("{variant:?}: no frame {needle}: {:#?}", names(&report))).category
        };
        assert_eq!(category_of("lang_start"), Some(Category::Std), "{variant:?}");
        assert_eq!(category_of("__libc_start_main"), Some(Category::System), "{variant:?}: libc's");
        assert!(report.frames.iter().all(|f| f.category.is_some()), "{variant:?}: every frame classified");
        assert!(report.frames.iter().all(|f| f.in_app == (f.category == Some(Category::App))));
        // What symbolizing anywhere needs: each frame's module, build id and offset, and the modules.
        let exe = report.modules.first().expect("the modules list");
        assert_eq!(
            Some(exe.path.as_str()),
            report.context.executable.as_deref(),
            "{variant:?}: the executable first"
        );
        assert_eq!(exe.build_id.as_ref().map(String::len), Some(40), "{variant:?}: a GNU build id");
        for frame in &report.frames {
            assert_ne!(frame.address, "0x0", "{variant:?}: no null frame");
            let module = frame.module.as_deref().expect("every frame is in a module");
            let listed = report.modules.iter().find(|m| m.path == module).expect("its module is listed");
            assert_eq!(frame.build_id, listed.build_id);
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            let offset = hex(frame.offset.as_deref().expect("an offset"));
            assert_eq!(
                offset + hex(&listed.bias),
                hex(&frame.address),
                "{variant:?}: offset = address - bias"
            );
        }
    }
}

#[test]
fn a_signal_report_groups_by_its_application_frames_across_runs_and_debug_information() {
    let line_tables = report(Variant::LineTables, "segv");
    // The faulting instruction may be in std code inlined there (`read_volatile`): the first frame
    // of the application's own is the function that crashed.
    assert!(first_in_app(&line_tables).ends_with("null_deref"), "{:#?}", names(&line_tables));
    // The same code with less debug information, and the same build run again: one group.
    for (variant, again) in [
        (Variant::LineTables, report(Variant::LineTables, "segv")),
        (Variant::Symbols, report(Variant::Symbols, "segv")),
    ] {
        assert_eq!(again.fingerprint, line_tables.fingerprint, "{variant:?}: {:#?}", names(&again));
    }
    assert_ne!(report(Variant::LineTables, "abort").fingerprint, line_tables.fingerprint, "another crash");
    let dev = report(Variant::Dev, "segv");
    assert_eq!(report(Variant::Dev, "segv").fingerprint, dev.fingerprint, "dev: across runs");
}

#[test]
fn a_stripped_builds_signal_report_keeps_its_frames_and_groups_the_same_across_runs() {
    let binary = app(Variant::Stripped, DEV);
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let out = Command::new(&binary)
            .arg("segv")
            .env("LASTWORD_SPOOL", &spool)
            .env_remove("LASTWORD_URL")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let view = SpoolView::open(&spool).unwrap();
        let item = view.list().unwrap().into_iter().find(|e| e.kind == Some(Kind::Crash)).unwrap();
        let entry = view.read(item.id.unwrap()).unwrap();
        readable(entry.header.flags, &entry.body).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.fingerprint, b.fingerprint, "the same crash of one stripped build: one group");
    assert!(a.frames.len() > 3, "the unwound callers are kept without names: {:#?}", a.frames);
    assert!(
        a.frames
            .iter()
            .all(|f| f.offset.is_some() && f.build_id.is_some() || f.category == Some(Category::System))
    );
    // Symbolized later with the build's debug file, its first own frame is the function that crashed.
    let mut later = a.clone();
    with_twin(&mut later, &binary);
    assert!(first_in_app(&later).ends_with("null_deref"), "{:#?}", names(&later));
}
