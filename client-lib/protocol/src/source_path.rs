//! What both ends read the same way in a report's frames.

/// A source path as it groups: the same on every machine. A cargo registry's
/// `…/registry/src/<index>/serde-1.0.200/src/de.rs` becomes `serde-1.0.200/src/de.rs`; a git
/// checkout's `…/git/checkouts/<repo>/<rev>/src/x.rs` becomes `<repo>/<rev>/src/x.rs`; the standard
/// library's `/rustc/<hash>/library/core/src/option.rs` becomes `library/core/src/option.rs`. Paths
/// relative to the workspace (what `file!()` gives for the application's own crates) stay as they
/// are.
pub fn normalize_source_path(file: &str) -> String {
    let file = file.replace('\\', "/");
    if let Some((_, rest)) = file.split_once("/registry/src/") {
        return rest.split_once('/').map_or(rest, |(_index, path)| path).to_owned();
    }
    if let Some((_, rest)) = file.split_once("/git/checkouts/") {
        return rest.to_owned();
    }
    if let Some(at) = file.find("/library/")
        && (file.starts_with("/rustc/") || file.contains("/lib/rustlib/src/rust/"))
    {
        return file[at + 1..].to_owned();
    }
    file
}
