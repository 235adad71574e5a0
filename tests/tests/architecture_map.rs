//! ARCHITECTURE.md is the map a newcomer reads first: every path it cites must exist, so that the map
//! cannot drift from the code. A path from the top of the repository (`client-lib/src/panic.rs`,
//! `agent/src/ui/`) must be there as written; a bare file name (`worker.rs`, cited beside its folder)
//! must be the name of some file of the repository.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// Every `code span` of the text that names a path: one with a `/` under a top-level folder, or a
/// file name with an extension the repository uses.
fn cited(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.contains(' ') && !s.is_empty())
        .filter(|s| {
            let top = s.split('/').next().unwrap_or_default();
            let tree = s.contains('/') && root().join(top).is_dir() && !top.is_empty();
            let file = !s.contains('/') && [".rs", ".md", ".toml", ".css"].iter().any(|e| s.ends_with(e));
            tree || file
        })
        .map(str::to_string)
        .collect()
}

fn file_names(dir: &Path, into: &mut Vec<String>) {
    let Ok(items) = std::fs::read_dir(dir) else { return };
    for item in items.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                file_names(&path, into);
            }
        } else {
            into.push(name);
        }
    }
}

#[test]
fn every_path_architecture_md_cites_exists() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    let paths = cited(&text);
    assert!(paths.len() > 30, "the map cites the code it describes: {paths:?}");
    let mut names = Vec::new();
    file_names(&root, &mut names);
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| if p.contains('/') { !root.join(p).exists() } else { !names.contains(p) })
        .collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md cites paths that do not exist: {missing:?}");
}

#[test]
fn a_path_that_is_not_there_is_found_missing() {
    // The check itself: a made-up path is cited, and it is not in the repository.
    let paths = cited("see `client-lib/src/no_such_module.rs` and `no_such_file.rs`, not `a b/c`");
    assert_eq!(paths, ["client-lib/src/no_such_module.rs", "no_such_file.rs"]);
    assert!(!root().join(&paths[0]).exists());
}
