//! # lastword-agent
//!
//! The library behind the `lastword` binary; `main.rs` is a thin shell over it, over the collector
//! (`lastword-collector`, agent/collector/) and over the client library (`lastword`).
//!
//! - [`cli`]: the command line's values that clap checks (windows, addresses, URLs).
//!
//! (`demo_app`, hidden, is the example application `lastword demo` runs as a child of itself.)

pub mod cli;
#[doc(hidden)]
pub mod demo_app;
