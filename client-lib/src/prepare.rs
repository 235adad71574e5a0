//! What happens to an entry's body between the spool and the wire.

use std::sync::Arc;

use base64::Engine as _;
use lastword_spool::FLAG_RAW_SIGNAL;

use crate::upload::Prepare;

/// The uploader's body transformation: JSON bodies go as they are; a raw signal report (written by
/// the fatal-signal handler, which cannot format JSON) is turned into a JSON report here, out of the
/// handler.
pub fn prepare_for_upload() -> Prepare {
    Arc::new(|flags, body| {
        if flags & FLAG_RAW_SIGNAL == 0 {
            return Ok(body.to_vec());
        }
        let raw = base64::engine::general_purpose::STANDARD.encode(body);
        let report = serde_json::json!({
            "type": "signal",
            "symbolized": false,
            "symbolization_error": "this agent cannot symbolize raw signal reports yet",
            "raw_base64": raw,
        });
        serde_json::to_vec(&report).map_err(|e| e.to_string())
    })
}

/// The machine's host name, if it has one.
pub fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    (!name.is_empty()).then_some(name)
}
