//! # lastword
//!
//! The client library of lastword: what an application links to report its crashes and logs.
//!
//! ```no_run
//! let _guard = lastword::init(
//!     lastword::Config::new("my-app").release("1.2.3").url("ws://127.0.0.1:8700").token("secret"),
//! )?;
//! // From here on, panics and fatal signals are reported; the guard's drop delivers before exit.
//! # Ok::<(), lastword::InitError>(())
//! ```
//!
//! - [`init`], [`Config`], [`Guard`]: set up once, keep the guard for the life of the program.
//! - Panics (a chained panic hook) and fatal signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP,
//!   stack overflow on any thread) become crash reports, durable in the spool before the hook returns.
//! - Handled errors and messages ([`capture_error`], [`capture_message`]) become events, written
//!   by a background writer (never blocking the caller on the disk; [`flush`] for the careful).
//! - The scope ([`configure_scope`], [`with_scope`], [`push_scope`], [`scoped`]): tags, a user,
//!   extra context and the environment, process-wide or for a block, a thread or a task; every
//!   crash, event and log batch carries the scope of the time it was made.
//! - Log records ([`log()`](crate::log()), the `log` and `tracing` features) become breadcrumbs and log batches.
//! - [`upload`]: the shielded uploader that drains a spool to a collector.
//! - [`protocol`]: the wire protocol shared with the collector (re-exported `lastword-protocol`,
//!   client-lib/protocol/PROTOCOL.md).
//! - [`report`]: the report bodies (REPORT.md); [`symbolize`]: raw reports made readable;
//!   [`grouping`]: whose code a frame is, and the fingerprints that group crashes.
//! - [`spool`]: the on-disk spool (re-exported `lastword-spool`).

mod config;
mod crashloop;
mod diagnostics;
mod event;
pub mod grouping;
mod host;
mod init;
#[cfg(feature = "log")]
mod log_bridge;
pub mod logs;
mod panic;
pub mod report;
mod scope;
mod signal;
pub mod symbolize;
#[cfg(feature = "tracing")]
mod tracing_layer;
pub mod upload;

pub use config::{BeforeSend, BeforeSendEvent, Config, check_url};
pub use diagnostics::TARGET as DIAGNOSTICS_TARGET;
#[cfg(feature = "anyhow")]
pub use event::capture_anyhow;
pub use event::{capture_error, capture_message, flush};
pub use host::host_name;
pub(crate) use host::now_millis;
pub use init::default_spools_dir;
#[doc(hidden)]
pub use init::store_crash_for_bench;
pub use init::{Guard, InitError, default_spool, default_spool_app, init, log};
pub use lastword_protocol as protocol;
pub use lastword_spool as spool;
#[cfg(feature = "log")]
pub use log_bridge::LogBridge;
pub use logs::Level;
pub use scope::{ScopeGuard, Scoped, configure_scope, current_scope, push_scope, scoped, with_scope};
pub use symbolize::prepare_for_upload;
#[cfg(feature = "tracing")]
pub use tracing_layer::Layer;

/// The README's Rust snippets, compiled as doc tests so that they keep working.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
