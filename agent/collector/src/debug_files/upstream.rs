//! Upstream debuginfod servers (`--debuginfod-upstream`): on a miss, `GET URL/buildid/ID/KIND` of each
//! in turn, with a timeout and the size limit of uploads; what one gives is checked and kept like an
//! upload; a build id that none has is not asked for again for a while (the negative cache), so a
//! library nobody has files for (a distribution's libc) costs one round of requests, not one per
//! report.

use std::time::Duration;

use super::http::{self, HttpClient};
use super::{DebugFiles, FileKind, Misses, Settings};

#[derive(Debug)]
pub(super) struct Upstream {
    urls: Vec<String>,
    client: HttpClient,
    timeout: Duration,
    ttl: Duration,
    misses: Misses,
}

impl Upstream {
    pub(super) fn new(settings: &Settings, client: HttpClient) -> Self {
        Self {
            urls: settings.upstreams.iter().map(|u| u.trim_end_matches('/').to_owned()).collect(),
            client,
            timeout: settings.upstream_timeout,
            ttl: settings.negative_ttl,
            misses: Misses::default(),
        }
    }

    /// `build_id`'s `kind` from the first server that has it, kept in `files`; `None` when none has
    /// it (remembered for the negative cache's time) or it is in the negative cache.
    pub(super) async fn fetch(
        &self,
        files: &DebugFiles,
        build_id: &str,
        kind: FileKind,
    ) -> Option<std::path::PathBuf> {
        let key = (build_id.to_owned(), kind);
        if self.misses.fresh(&key, self.ttl) {
            return None;
        }
        for url in &self.urls {
            let from = format!("{url}/buildid/{build_id}/{}", kind.name());
            match tokio::time::timeout(self.timeout, self.one(files, &from, build_id, kind)).await {
                Ok(Ok(Some(path))) => return Some(path),
                Ok(Ok(None)) => {}
                Ok(Err(why)) => tracing::warn!("debug files: {from}: {why}"),
                Err(_) => tracing::warn!("debug files: {from}: no answer within {:?}", self.timeout),
            }
        }
        self.misses.note(key, self.ttl);
        None
    }

    async fn one(
        &self,
        files: &DebugFiles,
        from: &str,
        build_id: &str,
        kind: FileKind,
    ) -> Result<Option<std::path::PathBuf>, String> {
        let request = hyper::Request::get(from).body(http::empty()).map_err(|e| e.to_string())?;
        let response = self.client.send(request).await.map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            other => return Err(format!("answered {other}")),
        }
        let mut staging = files.stage().await.map_err(|e| e.to_string())?;
        let mut body = response.into_body();
        use http_body_util::BodyExt as _;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
            if let Ok(data) = frame.into_data() {
                staging.write(&data).await.map_err(|e| e.to_string())?;
            }
        }
        let staged = staging.finish().await.map_err(|e| e.to_string())?;
        files.accept(staged, build_id, kind, from).await.map_err(|e| e.to_string())?;
        Ok(Some(files.local_path(build_id, kind)))
    }
}
