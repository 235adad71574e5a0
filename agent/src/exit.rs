//! The exit codes of the `lastword` binary. README.md lists them; keep both in step.

/// Everything this agent claimed was delivered (or deliberately skipped: a crash loop's repeat, a
/// report `before_send` dropped; or quarantined after a permanent rejection).
pub const OK: u8 = 0;
/// An error: a missing or unreadable spool, a bad configuration value, an I/O failure, or a
/// configuration the collector refuses (a refused token, a wrong path, an empty token file, an
/// unreadable CA file), told at once rather than retried until a deadline or a signal.
pub const ERROR: u8 = 1;
/// A usage error (unknown flag, missing argument): clap's own code.
pub const USAGE: u8 = 2;
/// Some claims were put back into the spool for later (the shutdown deadline passed before their
/// answers came, or the collector answered `retry_later`). Nothing is lost: they are in `ready/` for
/// the next agent.
pub const PUT_BACK: u8 = 3;
/// `drain` only: the deadline passed with entries still in the spool; none that it took was lost.
pub const NOT_DRAINED: u8 = 4;
