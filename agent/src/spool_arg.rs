//! Which spool a command works on: `--spool`, then `LASTWORD_SPOOL`, then the default location.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;

/// The `--spool` option shared by every command that works on a spool.
#[derive(Args, Debug, Clone)]
pub struct SpoolArg {
    /// The spool directory [default: the user's data directory, e.g. ~/.local/share/lastword/spool].
    #[arg(long, env = "LASTWORD_SPOOL")]
    spool: Option<PathBuf>,
}

impl SpoolArg {
    /// The spool directory: the flag, the environment variable, or the default location.
    pub fn path(&self) -> Result<PathBuf> {
        match &self.spool {
            Some(p) => Ok(p.clone()),
            None => {
                default_spool().ok_or_else(|| anyhow!("no --spool given and no home directory to default to"))
            }
        }
    }
}

/// The default spool of the sidecar: `<data dir>/lastword/spool` (from the `directories` crate).
pub fn default_spool() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "lastword").map(|d| d.data_local_dir().join("spool"))
}
