//! Which spool a command works on, and opening it: `--spool DIR`, else the default spool of
//! `--app NAME` (where `lastword::init` of an app of that name writes: [`lastword::default_spool`]),
//! else `LASTWORD_SPOOL`, else `LASTWORD_APP`'s default spool. Flags win over the environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use lastword::spool::{Spool, SpoolError, SpoolOptions, SpoolView};

/// `--spool` and `--app`, shared by every command that works on a spool.
#[derive(Args, Debug, Clone)]
pub struct SpoolArg {
    /// The spool directory [env: LASTWORD_SPOOL].
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The application. Without --spool, its default spool: the one `lastword::init` of an app of
    /// this name writes to (~/.local/share/lastword/spools/NAME). `run` and `drain` also send it to
    /// the collector in hello [env: LASTWORD_APP].
    #[arg(long, value_name = "NAME")]
    app: Option<String>,
}

/// Where a spool was looked for, and why there.
#[derive(Debug, Clone)]
pub struct Located {
    /// The spool directory.
    pub path: PathBuf,
    /// The app whose default spool this is, when it was found by the app's name.
    pub app: Option<String>,
}

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

impl SpoolArg {
    /// The application's name: `--app`, else `LASTWORD_APP`.
    pub fn app(&self) -> Option<String> {
        self.app.clone().or_else(|| env("LASTWORD_APP").map(|v| v.to_string_lossy().into_owned()))
    }

    /// The spool directory: `--spool`, `--app`'s default spool, `LASTWORD_SPOOL`, `LASTWORD_APP`'s.
    pub fn locate(&self) -> Result<Located> {
        if let Some(path) = &self.spool {
            return Ok(Located { path: path.clone(), app: None });
        }
        if let Some(app) = &self.app {
            return by_app(app);
        }
        if let Some(path) = env("LASTWORD_SPOOL") {
            return Ok(Located { path: PathBuf::from(path), app: None });
        }
        if let Some(app) = self.app() {
            return by_app(&app);
        }
        let known = match lastword::default_spools_dir() {
            Some(dir) => format!("; default spools in {}: {}", dir.display(), known_apps(&dir)),
            None => String::new(),
        };
        bail!("no spool given: pass --spool DIR or --app NAME (or set LASTWORD_SPOOL or LASTWORD_APP){known}")
    }

    /// A read-only view of the spool, which must exist.
    pub fn view(&self) -> Result<SpoolView> {
        let located = self.locate()?;
        SpoolView::open(&located.path).map_err(|e| explain(&located, e, false))
    }

    /// Opens the spool for work (a session of its own), which must exist.
    pub fn open_existing(&self) -> Result<(Spool, Located)> {
        let located = self.locate()?;
        let spool = Spool::open(&located.path, SpoolOptions { create: false, ..SpoolOptions::default() })
            .map_err(|e| explain(&located, e, false))?;
        Ok((spool, located))
    }
}

/// The spool options of `run` and `drain`: which spool, and whether to create it.
#[derive(Args, Debug, Clone)]
pub struct UploadSpoolArgs {
    #[command(flatten)]
    pub spool: SpoolArg,
    /// Create the spool if it does not exist. Without it, a missing spool is an error (exit 1): a
    /// mistyped path or app name would otherwise be a new, empty spool that nothing writes to.
    #[arg(long)]
    create: bool,
}

impl UploadSpoolArgs {
    /// The application's name, for hello.
    pub fn app(&self) -> Option<String> {
        self.spool.app()
    }

    /// Opens the spool to drain it, and says on stderr what opening had to set aside: files that dead
    /// sessions left damaged (quarantined) and files it could neither recover nor quarantine (skipped:
    /// they stay where they are for the next start). Neither stops the delivery of the rest.
    pub fn open(&self, verbose: u8) -> Result<(Spool, PathBuf)> {
        let located = self.spool.locate()?;
        let options = SpoolOptions { create: self.create, ..SpoolOptions::default() };
        let spool = Spool::open(&located.path, options).map_err(|e| explain(&located, e, true))?;
        let found = spool.recovered_at_open();
        if found.damaged() || (verbose > 0 && found.sessions > 0) {
            eprintln!(
                "lastword: spool {}: recovered {} dead sessions ({} entries put back, {} rescued), \
                 quarantined {} damaged files, skipped {} it could not move (left in place: lastword ls \
                 --state writing)",
                located.path.display(),
                found.sessions,
                found.released,
                found.rescued,
                found.quarantined,
                found.skipped,
            );
        }
        Ok((spool, located.path))
    }
}

fn by_app(app: &str) -> Result<Located> {
    let path = lastword::default_spool(app).ok_or_else(|| {
        anyhow!("no home directory to find the default spool of app {app:?} in: pass --spool DIR")
    })?;
    Ok(Located { path, app: Some(app.to_owned()) })
}

/// One line that says which spool was not there, where it was looked for, and what is there instead.
fn explain(located: &Located, error: SpoolError, can_create: bool) -> anyhow::Error {
    let path = located.path.display();
    match error {
        SpoolError::NotFound { .. } => {
            let create = if can_create { " (pass --create to make it)" } else { "" };
            match (&located.app, located.path.parent()) {
                (Some(app), Some(dir)) => anyhow!(
                    "no spool for app {app:?} at {path}, where its default spool would be{create}; the \
                     apps with a default spool there: {}",
                    known_apps(dir)
                ),
                _ => anyhow!("no spool at {path}{create}"),
            }
        }
        other => anyhow!("cannot open the spool at {path}: {other}"),
    }
}

/// The apps that have a default spool in `dir`, for messages.
fn known_apps(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .filter(|i| i.path().join("VERSION").is_file())
                .map(|i| i.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}
