//! # lastword
//!
//! The client library of lastword: what an application links to report its crashes and logs.
//!
//! - [`protocol`]: the wire protocol shared by the uploader and the collector (PROTOCOL.md).
//! - [`upload`]: the shielded uploader that drains a spool to a collector.
//! - [`spool`]: the on-disk spool (re-exported `lastword-spool`).

mod prepare;
pub mod protocol;
pub mod upload;

pub use prepare::{host_name, prepare_for_upload};

pub use lastword_spool as spool;
