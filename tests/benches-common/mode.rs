//! How a benchmark (`harness = false`) was started, read from its command line by criterion's rules,
//! for the benches of every crate. Included with `#[path = "…/tests/benches-common/mode.rs"] mod
//! mode;`, like `stats.rs`.

#![allow(dead_code, reason = "each bench uses the part it needs")]

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunMode {
    /// Test or list mode: without `--bench` (`cargo test --benches`), or with `--test` or `--list`.
    /// Nothing is timed; a bench runs each part once, small, to show that it works.
    pub dry: bool,
    /// `--list`: criterion lists its benchmarks; a bench with none of its own has nothing to do.
    pub list: bool,
    /// Criterion measures (not test, list or profile mode): the bench also prints its table.
    pub measure: bool,
    /// `--quick`: fewer rounds for the table.
    pub quick: bool,
}

impl RunMode {
    /// The mode of this process's command line.
    pub fn from_args() -> Self {
        Self::parse(std::env::args().skip(1))
    }

    /// The mode of the arguments `args` (the program name left out). A flag counts as itself or
    /// with a value (`--bench`, `--bench=x`).
    pub fn parse<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Self {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        let list = has("--list");
        let dry = !has("--bench") || has("--test") || list;
        Self { dry, list, measure: !dry && !has("--profile-time"), quick: has("--quick") }
    }

    /// Rounds of an interleaved table of `full` rounds: a third under `--quick`; odd, so that the
    /// median is one of them.
    pub fn rounds(&self, full: usize) -> usize {
        if self.quick { (full / 3) | 1 } else { full | 1 }
    }
}
