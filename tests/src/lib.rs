//! Support for lastword's end-to-end tests, and the tests themselves (in `tests/`).
//!
//! - [`scripted`]: a collector that can be told to stall, answer late, ask for a retry, reject or
//!   drop the connection, for testing the uploader's behaviour under faults.
//! - [`postgres`]: a throwaway PostgreSQL server for the PostgreSQL store's tests.
//! - [`builds`]: the crash app in other build profiles (release, stripped, `panic = "abort"`).
//! - [`chromium`]: headless Chromium for the web UI's browser tests (rendered DOM, screenshots).
//! - [`crash_runs`]: the crash app as a child process, and the crash reports it left in its spool.

pub mod builds;
pub mod chromium;
pub mod crash_runs;
pub mod postgres;
pub mod scripted;
