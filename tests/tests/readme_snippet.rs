//! The README's "Link lastword into an application" builds as it is shown, in a project of its own:
//! the test takes the dependency lines and the Rust snippet out of README.md (so the README cannot
//! drift from what is tested), completes the project `cargo new my-app` makes with them, beside a
//! `lastword/` folder that is this checkout (where the README's `path = "../lastword/client-lib"`
//! line points), builds it with cargo and runs it: with its token variable unset it must name the
//! variable, with it set it must run and exit 0.
//!
//! The nested build reuses what is already compiled. It builds into this workspace's target directory
//! with the same profile, starts from the workspace's Cargo.lock (the same versions, no network), and
//! runs without the `CARGO_*` variables that `cargo test` sets for this process: those would reach
//! the build scripts that watch them (ring's watches `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`), which
//! would rebuild, here and again in the next `cargo test`. The project lives in a directory of its own
//! per checkout under the system's temporary directory, whose files are rewritten only when the
//! README changes, so that a second run compiles nothing. The first run compiles lastword, lastword-
//! spool and the dependencies whose features differ from the workspace's build (tokio, serde, syn,
//! ...: about 30 crates).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The token variable the snippet reads.
const TOKEN_VAR: &str = "MY_APP_LASTWORD_TOKEN";
/// How long the built program may take to run (its exit deadline is 2 s; a loaded machine).
const RUN_BOUND: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().canonicalize().unwrap()
}

/// The fenced blocks of the README's "Link lastword into an application" section: (info string,
/// text).
fn readme_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let start = readme.find("\n## Link lastword into an application\n").expect("the README's section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            blocks.push((info.to_owned(), text.join("\n") + "\n"));
        }
    }
    blocks
}

/// This test binary's target directory and the name of its profile's directory (`target`, `debug`):
/// the nested build goes into the same ones (the dev profile, or `--release` for `release`), where the
/// workspace's dependencies are already compiled.
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let profile = profile_dir.file_name().unwrap().to_string_lossy().into_owned();
    (profile_dir.parent().unwrap().to_owned(), profile)
}

/// FNV-1a of a path: the name of this checkout's project directory.
fn fnv(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Writes `text` to `path` unless it holds it already (a rewrite would make cargo compile it again).
fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap();
    }
}

fn run_bounded(command: &mut Command) -> (Output, Duration) {
    let start = Instant::now();
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > RUN_BOUND {
            let _ = child.kill();
            panic!("the README's program did not end within {RUN_BOUND:?}: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

#[test]
fn readme_snippet_builds_as_a_new_project_and_names_an_unset_token_variable() {
    let blocks = readme_blocks();
    let toml = blocks.iter().find(|(info, _)| info == "toml").map(|(_, t)| t).expect("a toml block");
    let rust =
        blocks.iter().find(|(info, _)| info.starts_with("rust")).map(|(_, t)| t).expect("a rust block");
    // What a reader copies is what is shown: no rustdoc-hidden line (`# ...`) may complete it.
    for line in rust.lines() {
        let t = line.trim_start();
        assert!(
            !(t == "#" || t.starts_with("# ")),
            "a line rustdoc hides from the README's reader: {line:?}"
        );
    }
    let dependencies =
        toml.strip_prefix("[dependencies]\n").expect("the toml block is a [dependencies] table");

    // The project `cargo new` makes, completed with the README's lines.
    let scratch = tempfile::tempdir().unwrap();
    let new = lastword_tests::builds::cargo()
        .args(["new", "--quiet", "--vcs", "none", "--bin", "my-app"])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert!(new.status.success(), "cargo new: {}", String::from_utf8_lossy(&new.stderr));
    let manifest = std::fs::read_to_string(scratch.path().join("my-app/Cargo.toml")).unwrap();
    assert!(
        manifest.ends_with("[dependencies]\n"),
        "cargo new's manifest ends with its dependencies: {manifest}"
    );
    // Built where `lastword/` (this checkout) is beside `my-app/`, as the README's path line expects,
    // in a directory of this checkout's own that the next run finds again: unchanged files are not
    // written again, so a second run has nothing to compile.
    let (target, profile) = target_and_profile();
    let project = std::env::temp_dir().join(format!("lastword-readme-snippet-{:016x}", fnv(&target)));
    std::fs::create_dir_all(project.join("my-app/src")).unwrap();
    let link = project.join("lastword");
    if std::fs::read_link(&link).ok().as_deref() != Some(workspace().as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(workspace(), &link).unwrap();
    }
    let app = project.join("my-app");
    write_if_changed(&app.join("Cargo.toml"), &(manifest + dependencies));
    write_if_changed(&app.join("src/main.rs"), rust);
    // The workspace's versions of every crate; cargo drops what the new project does not use.
    std::fs::copy(workspace().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();

    let release = profile == "release";
    let mut build = lastword_tests::builds::cargo();
    build.args(["build", "--quiet", "--offline"]).current_dir(&app).env("CARGO_TARGET_DIR", &target);
    if release {
        build.arg("--release");
    }
    let started = Instant::now();
    let built = build.output().unwrap();
    eprintln!("the README's project built in {:.1?} ({} profile)", started.elapsed(), profile);
    assert!(
        built.status.success(),
        "the README's snippet does not build:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let program = target.join(if release { "release" } else { "debug" }).join("my-app");

    // Its default spool under a home of its own; no lastword setting from the test's environment.
    let home = scratch.path().join("home");
    let run = |token: Option<&str>| {
        let mut command = Command::new(&program);
        command.env("HOME", &home).env("XDG_DATA_HOME", home.join("data")).env_remove(TOKEN_VAR);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LASTWORD_") {
                command.env_remove(name);
            }
        }
        if let Some(token) = token {
            command.env(TOKEN_VAR, token);
        }
        run_bounded(&mut command)
    };
    let (unset, _) = run(None);
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert_eq!(unset.status.code(), Some(1), "main's error: {stderr}");
    assert!(stderr.contains(TOKEN_VAR), "the unset variable is named: {stderr}");

    let (set, took) = run(Some("a-token"));
    assert!(set.status.success(), "with its token it runs: {}", String::from_utf8_lossy(&set.stderr));
    eprintln!("the README's program ran in {took:.1?} (its collector does not exist)");
    assert!(home.join("data/lastword/spools/my-app").is_dir(), "it made its default spool");
}
