//! # lastword-agent
//!
//! The library behind the `lastword` binary; `main.rs` is a thin shell over it.
//!
//! - [`collect`]: the reference collector (`lastword collect`): the server end of the wire protocol
//!   (client-lib/protocol/PROTOCOL.md), its store (agent/STORE.md) and the queries people run on that store
//!   (`lastword store ...`).
//! - [`ui`]: the collector's read-only web UI (`lastword collect --ui`).
//! - [`cli`]: the command line's values that clap checks (windows, addresses, URLs).
//! - [`crash_view`]: how a crash report reads for a person (title, folded frames, breadcrumbs), the
//!   one renderer of `lastword show`, `lastword store show`, the demo and the web UI.
//!
//! (`demo_app`, hidden, is the example application `lastword demo` runs as a child of itself.)

pub mod cli;
pub mod collect;
pub mod crash_view;
#[doc(hidden)]
pub mod demo_app;
pub mod ui;
