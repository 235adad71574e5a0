//! # lastword-collector
//!
//! The reference collector of lastword: the server end of the wire protocol
//! (client-lib/protocol/PROTOCOL.md), the stores it writes (agent/collector/STORE.md), the queries
//! people run on them, and the read-only web UI. The `lastword` binary (lastword-agent) wires these to
//! its command line; nothing here parses a command line or prints.
//!
//! - [`server`]: `lastword collect`'s ingest server ([`server::run`], its [`server::Config`] and
//!   [`server::Limits`]): handshake checks, connections, the group commit.
//! - [`store`]: the one store interface ([`store::Store`]), [`store::AnyStore`] over the two backends,
//!   [`store::sqlite`] and [`store::postgres`]; [`store::location`]: where `--store` points.
//! - [`symbolize`]: reports from stripped builds named with the debug files, at ingest and when a file
//!   arrives.
//! - [`fingerprint`]: the groups crashes and events fall into, and the scope tags a report is indexed by.
//! - [`query`]: `lastword store ...`, readable tables or JSON.
//! - [`ui`]: the web UI (`lastword collect --ui`).
//! - [`debug_files`]: the debug files of builds, by build id, that symbolize reports on the collector.
//! - [`crash_view`]: how a crash report reads for a person (title, folded frames, breadcrumbs), the
//!   one renderer of `lastword show`, `lastword store show`, the demo and the web UI.

pub mod crash_view;
pub mod debug_files;
pub mod fingerprint;
pub mod query;
pub mod server;
pub mod store;
pub mod symbolize;
pub mod ui;
