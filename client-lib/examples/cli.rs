//! A command-line program that reports its crashes and logs with lastword, through the `log` crate.
//!
//! ```sh
//! LASTWORD_SPOOL=/tmp/spool cargo run -p lastword --example cli -- 3
//! ```
//!
//! It logs through `log` (a plain stderr logger wrapped by lastword's `LogBridge`, so the console
//! output stays), and panics when given a number above 2. With `LASTWORD_URL` set, reports go to the
//! collector; without, they wait in the spool for `lastword run` or the next start.

use std::time::Duration;

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{}] {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _guard = lastword::init(
        lastword::Config::new("cli-example")
            .release(env!("CARGO_PKG_VERSION"))
            .exit_deadline(Duration::from_secs(2)),
    )?;
    lastword::LogBridge::new(log::LevelFilter::Info).wrapping(Box::new(Stderr)).install()?;

    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    log::info!("counting to {n}");
    for i in 1..=n {
        if i > 2 {
            log::warn!("{i} is too many");
            panic!("cannot count past 2 (asked for {n})");
        }
        println!("{i}");
    }
    Ok(())
}
