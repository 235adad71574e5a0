//! # lastword
//!
//! The client library of lastword. This crate is being built; today it re-exports the spool.

pub use lastword_spool as spool;
