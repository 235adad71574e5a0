//! A tokio service with lastword's `tracing` layer: a task panics (reported, the service goes on),
//! and SIGTERM shuts it down gracefully (the guard's drop delivers what is left).
//!
//! ```sh
//! LASTWORD_SPOOL=/tmp/spool cargo run -p lastword --example tokio_service &
//! kill -TERM $!
//! ```

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The guard lives outside the runtime: the service's runtime may shut down first, and delivery
    // (on lastword's own thread and runtime) still finishes.
    let guard = lastword::init(lastword::Config::new("tokio-service").release("2.0.0"))?;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lastword::Layer::default()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        tracing::info!(port = 8080, "service started");
        let handler = tokio::spawn(async {
            tracing::warn!(request = 17, "malformed request");
            panic!("request handler bug");
        });
        if handler.await.is_err() {
            tracing::error!("a request handler panicked; serving on");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        println!("ready");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            () = tokio::time::sleep(Duration::from_secs(60)) => tracing::info!("done"),
        }
        Ok::<_, std::io::Error>(())
    })?;
    drop(runtime);
    guard.flush(Duration::from_secs(2)).ok();
    Ok(())
}
