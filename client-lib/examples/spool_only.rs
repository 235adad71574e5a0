//! An application that only writes to the spool (no collector URL in the application): the sidecar,
//! `lastword run --spool DIR --url ...`, delivers what it writes.
//!
//! ```sh
//! cargo run -p lastword --example spool_only -- /tmp/app-spool
//! lastword run --spool /tmp/app-spool --url ws://127.0.0.1:8700/ingest --token-file token
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spool = std::env::args().nth(1).unwrap_or_else(|| "/tmp/app-spool".into());
    let guard = lastword::init(lastword::Config::new("spool-only-example").spool(&spool).no_url())?;
    lastword::log(lastword::Level::Error, "spool_only", "something the operators should see");
    guard.flush(std::time::Duration::from_secs(2))?;
    println!("wrote to {spool}");
    Ok(())
}
