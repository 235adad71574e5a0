//! `lastword show ID` and `lastword store show ID` print a crash as a person reads it (issue 18,
//! "Reading a crash"): the title with the culprit and the location, the application's frames with
//! file:line, the other frames folded to one line (all of them with `--all`); `--json` keeps the
//! raw body. The crashes are real: `lastword demo-app`, a child that panics in a thread and then
//! dies of SIGSEGV, writes them into a spool; a real `lastword collect` stores them.

#![allow(clippy::unwrap_used, reason = "a test: a failure here is a test failure")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Collector, TOKEN, binary};
use lastword_spool::{EntryId, Kind, SpoolView};

fn run(args: &[&str]) -> String {
    let out: Output = Command::new(binary()).args(args).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "lastword {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The crash entries of a spool filled by one run of the demo app: (panic, SIGSEGV).
fn crashes_of_the_demo_app(spool: &Path) -> (EntryId, EntryId) {
    let status = Command::new(binary())
        .arg("demo-app")
        .env("LASTWORD_SPOOL", spool)
        .env_remove("LASTWORD_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_none(), "the demo app dies of a signal: {status:?}");
    let view = SpoolView::open(spool).unwrap();
    let mut panic = None;
    let mut signal = None;
    for listed in view.list().unwrap().into_iter().filter(|l| l.kind == Some(Kind::Crash)) {
        let id = listed.id.unwrap();
        let entry = view.read(id).unwrap();
        let report = lastword::symbolize::readable(entry.header.flags, &entry.body).unwrap();
        match report.kind.as_str() {
            "panic" => panic = Some(id),
            _ => signal = Some(id),
        }
    }
    (panic.expect("a panic report"), signal.expect("a SIGSEGV report"))
}

/// The checks every readable crash passes: `frame` (an in-app function of the demo app) is on a
/// frame line with its file and line, and the other frames are folded to one counted line.
fn assert_readable(text: &str, title: &str, frame: &str) {
    let first =
        text.lines().find(|l| l.starts_with(title)).unwrap_or_else(|| panic!("{title:?}...:\n{text}"));
    assert!(first.contains(frame) && first.contains("demo_app.rs:"), "culprit and location: {first:?}");
    assert!(!first.contains("0x"), "no address in the title: {first:?}");
    let frame_line = text
        .lines()
        .find(|l| l.trim_start().starts_with('#') && l.contains(frame))
        .unwrap_or_else(|| panic!("a frame line of {frame}:\n{text}"));
    assert!(frame_line.contains("demo_app.rs:"), "file:line on the in-app frame: {frame_line:?}");
    let folded = text
        .lines()
        .find(|l| l.trim_start().starts_with("+ ") && l.ends_with("; --all to show"))
        .unwrap_or_else(|| panic!("a folded line:\n{text}"));
    let n: usize = folded.trim_start()[2..].split(' ').next().unwrap().parse().unwrap();
    assert!(n > 0 && folded.contains("std"), "{folded:?}");
    let frame_lines = text.lines().filter(|l| l.trim_start().starts_with('#')).count();
    assert!(frame_lines < 8, "only the app's frames are listed, {frame_lines}:\n{text}");
    assert!(!text.contains("std/src/rt.rs"), "std's frames are folded:\n{text}");
    assert!(text.contains("breadcrumbs") && text.contains("WARN"), "breadcrumbs:\n{text}");
    assert!(text.contains("release:") && text.contains("1.0.0"), "context:\n{text}");
}

/// `--all` lists every frame, std's shown as `std/...`, and nothing folded.
fn assert_all_frames(text: &str) {
    assert!(!text.contains("--all to show"), "{text}");
    assert!(text.contains("[std]") && text.contains("[app]"), "{text}");
    assert!(text.contains(" std/std/src/"), "std paths as std/...:\n{text}");
    assert!(!text.contains("/rustc/"), "{text}");
}

#[test]
fn show_and_store_show_print_a_readable_crash_and_json_keeps_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (panic, signal) = crashes_of_the_demo_app(&spool);
    let spool_s = spool.to_str().unwrap();
    let view = SpoolView::open(&spool).unwrap();

    let cases = [
        (panic, "panic: an order has three words in ", "demo_app::parse_order"),
        (signal, "SIGSEGV (invalid memory reference) in ", "demo_app::write_through_a_null_pointer"),
    ];
    for (id, title, frame) in cases {
        let id_s = id.to_string();
        let text = run(&["show", &id_s, "--spool", spool_s]);
        assert!(text.starts_with(&format!("id:       {id_s}\n")), "{text}");
        assert_readable(&text, title, frame);
        assert_all_frames(&run(&["show", &id_s, "--spool", spool_s, "--all"]));

        // --json: the entry's facts and the body as it will be uploaded, as before.
        let json: serde_json::Value =
            serde_json::from_str(&run(&["show", &id_s, "--spool", spool_s, "--json"])).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["body", "created_ms", "flags", "id", "kind", "size", "state"], "{json}");
        let entry = view.read(id).unwrap();
        let expected =
            serde_json::to_value(lastword::symbolize::readable(entry.header.flags, &entry.body).unwrap())
                .unwrap();
        assert_eq!(json["body"], expected, "the body as today");
    }

    let store = dir.path().join("store");
    let collector = Collector::start(&store, &[]);
    let drained = Command::new(binary())
        .args([
            "drain",
            "--deadline",
            "30s",
            "--app",
            "readable-test",
            "--url",
            &collector.url,
            "--spool",
            spool_s,
        ])
        .env("LASTWORD_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(drained.status.code(), Some(0), "{}", String::from_utf8_lossy(&drained.stderr));
    let store_s = store.to_str().unwrap();
    for (id, title, frame) in cases {
        let id_s = id.to_string();
        let text = run(&["store", "show", &id_s, "--store", store_s]);
        assert!(text.starts_with(&format!("id:          {id_s}\n")), "{text}");
        assert_readable(&text, title, frame);
        assert!(!text.contains("\"frames\""), "no JSON in the readable text:\n{text}");
        assert_all_frames(&run(&["store", "show", &id_s, "--store", store_s, "--all"]));

        let json: serde_json::Value =
            serde_json::from_str(&run(&["store", "show", &id_s, "--store", store_s, "--json"])).unwrap();
        assert_eq!(json["id"], id_s.as_str());
        assert!(json["created_ms"].is_u64() && json["received_ms"].is_u64(), "{json}");
        let frames = json["body"]["frames"].as_array().unwrap();
        assert!(frames.iter().any(|f| f["function"].as_str().is_some_and(|f| f.ends_with(frame))), "{json}");
        assert!(frames.iter().any(|f| f["category"] == "std"), "the raw body keeps every frame: {json}");
    }
    drop(collector);
}
