//! Where the library's own diagnostics go (a crash report or a log batch the spool refused, the
//! uploader's connections and failures). The library never prints: a message goes to the
//! application's callback ([`crate::Config::diagnostics`]) when it gave one, else to `tracing` (with
//! the `tracing` feature) or `log` (with the `log` feature only) under the target [`TARGET`], else
//! nowhere.

use crate::upload::{DiagnosticLevel, Diagnostics};

/// The `tracing` or `log` target of the library's diagnostics. lastword's own [`crate::Layer`] and
/// [`crate::LogBridge`] leave these records out: a diagnostic about a failed log write must not
/// become a log record to write.
pub const TARGET: &str = "lastword";

/// Tells `message` to the callback, else to `tracing` or `log`.
pub(crate) fn tell(callback: Option<&Diagnostics>, level: DiagnosticLevel, message: &str) {
    if let Some(callback) = callback {
        callback(level, message);
        return;
    }
    #[cfg(feature = "tracing")]
    match level {
        DiagnosticLevel::Error => tracing::error!(target: TARGET, "{message}"),
        DiagnosticLevel::Warn => tracing::warn!(target: TARGET, "{message}"),
        DiagnosticLevel::Info => tracing::info!(target: TARGET, "{message}"),
        DiagnosticLevel::Debug => tracing::debug!(target: TARGET, "{message}"),
    }
    #[cfg(all(feature = "log", not(feature = "tracing")))]
    {
        let level = match level {
            DiagnosticLevel::Error => log::DiagnosticLevel::Error,
            DiagnosticLevel::Warn => log::DiagnosticLevel::Warn,
            DiagnosticLevel::Info => log::DiagnosticLevel::Info,
            DiagnosticLevel::Debug => log::DiagnosticLevel::Debug,
        };
        log::log!(target: TARGET, level, "{message}");
    }
    #[cfg(not(any(feature = "log", feature = "tracing")))]
    let _ = (level, message);
}
