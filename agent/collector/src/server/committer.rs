//! The group commit: the one writer of the store. Connections queue reports, each with a one-shot
//! sender for its answer; the writer takes everything queued (up to `batch_max`), writes it in one
//! transaction, and only after the commit answers `accepted` or `duplicate` for each. If the store fails,
//! each report of the batch is answered `retry_later`. A batch is being committed while the next one
//! fills, so one fsync serves every report that arrived during the previous one.

use std::sync::Arc;

use lastword_protocol::ServerMessage;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::store::{AgentLosses, Batch, NewReport, Outcome, Store};

/// Work for the writer.
pub(crate) enum Job {
    /// Store a report and answer it.
    Report {
        /// The report.
        report: NewReport,
        /// Where its answer goes (the connection may be gone: then the answer is dropped).
        answer: oneshot::Sender<ServerMessage>,
        /// The report's share of the queue's byte budget, given back once it is answered.
        budget: OwnedSemaphorePermit,
    },
    /// Record an agent's loss counters (from its hello); nobody waits for it.
    Losses(AgentLosses),
}

/// Runs until every sender of `jobs` is gone and the queue is empty.
pub(crate) async fn run<S: Store>(
    store: Arc<S>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    batch_max: usize,
    retry_delay_ms: u64,
) {
    let mut taken = Vec::with_capacity(batch_max);
    loop {
        if jobs.recv_many(&mut taken, batch_max).await == 0 {
            return;
        }
        let mut batch = Batch::default();
        let mut waiting = Vec::with_capacity(taken.len());
        for job in taken.drain(..) {
            match job {
                Job::Report { report, answer, budget } => {
                    waiting.push((report.id, answer, budget));
                    batch.reports.push(report);
                }
                Job::Losses(losses) => batch.losses.push(losses),
            }
        }
        let count = waiting.len();
        let outcomes = match store.write(batch).await {
            Ok(outcomes) if outcomes.len() == count => Some(outcomes),
            Ok(outcomes) => {
                tracing::error!(
                    "the store answered {} outcomes for {count} reports; asking for a retry",
                    outcomes.len()
                );
                None
            }
            Err(e) => {
                tracing::error!("{e}; {count} reports answered retry_later");
                None
            }
        };
        for (i, (id, answer, _budget)) in waiting.into_iter().enumerate() {
            let message = match outcomes.as_ref().and_then(|o| o.get(i).copied()) {
                Some(Outcome::Inserted) => ServerMessage::Accepted { id },
                Some(Outcome::Duplicate) => ServerMessage::Duplicate { id },
                None => ServerMessage::RetryLater { id, delay_ms: retry_delay_ms },
            };
            // The connection may have ended meanwhile; the report is stored all the same and the client
            // will get `duplicate` when it sends it again.
            let _ = answer.send(message);
        }
    }
}
