//! ARCHITECTURE.md is the map a newcomer reads first: every path it cites must exist, so that the map
//! cannot drift from the code. A path is there as written from the top of the repository
//! (`client-lib/src/panic.rs`, `agent/collector/src/ui/`), or, cited beside its folder, as the end of a path of
//! the repository (`ui/tests/browser.rs`, `worker.rs`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// Every `code span` of the text that names a path: one with a `/` that is not a URL or a file
/// system path outside the repository, or a file name with an extension the repository uses.
fn cited(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty() && !s.contains(' ') && !s.contains("://") && !s.contains('<'))
        .filter(|s| {
            let dotted =
                [".rs", ".md", ".toml", ".css", ".sql"].iter().any(|e| s.trim_end_matches('/').ends_with(e));
            let tree = s.contains('/') && !s.starts_with('/') && s.split('/').all(|part| !part.contains(':'));
            tree && (dotted || s.ends_with('/')) || !s.contains('/') && dotted
        })
        // A spool's own folders (`ready/`, `claimed/<sid>/`) are paths of a spool, not of the code.
        .filter(|s| !SPOOL_FOLDERS.contains(&s.split('/').next().unwrap_or_default()))
        .map(str::to_string)
        .collect()
}

/// The folders of a spool (spool/FORMAT.md).
const SPOOL_FOLDERS: [&str; 6] = ["ready", "claimed", "writing", "sessions", "quarantine", "counters"];

/// Every file and folder of the repository, relative to its top, folders ending in `/`.
fn repository_paths(root: &Path, dir: &Path, into: &mut Vec<String>) {
    let Ok(items) = std::fs::read_dir(dir) else { return };
    for item in items.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                into.push(format!("{relative}/"));
                repository_paths(root, &path, into);
            }
        } else {
            into.push(relative);
        }
    }
}

fn exists(cited: &str, paths: &[String]) -> bool {
    paths.iter().any(|p| p == cited || p.ends_with(&format!("/{cited}")))
}

#[test]
fn every_path_architecture_md_cites_exists() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    let paths = cited(&text);
    assert!(paths.len() > 30, "the map cites the code it describes: {paths:?}");
    let mut all = Vec::new();
    repository_paths(&root, &root, &mut all);
    let missing: Vec<&String> = paths.iter().filter(|p| !exists(p, &all)).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md cites paths that do not exist: {missing:?}");
}

#[test]
fn a_path_that_is_not_there_is_found_missing() {
    // The check itself: made-up paths are cited, and none is in the repository; real ones are.
    let paths = cited(
        "see `client-lib/src/no_such_module.rs`, `ui/tests/gone.rs` and `no_such_file.rs`, not `a b/c`",
    );
    assert_eq!(paths, ["client-lib/src/no_such_module.rs", "ui/tests/gone.rs", "no_such_file.rs"]);
    let mut all = Vec::new();
    repository_paths(&root(), &root(), &mut all);
    assert!(paths.iter().all(|p| !exists(p, &all)), "{paths:?}");
    assert!(
        exists("ui/tests/browser.rs", &all)
            && exists("worker.rs", &all)
            && exists("agent/collector/src/ui/", &all)
    );
}
