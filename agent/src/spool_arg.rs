//! Which spool a command works on, and opening it. The spool's location is one setting and the
//! app's name another: the spool is `--spool DIR`, else `LASTWORD_SPOOL`, else the default spool of
//! the app (`--app NAME`, else `LASTWORD_APP`: where `lastword::init` of an app of that name writes,
//! [`lastword::default_spool`]). A flag wins over its own environment variable.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use lastword::spool::{Recovered, Spool, SpoolError, SpoolOptions, SpoolView};

/// `--spool` and `--app`, shared by every command that works on a spool.
#[derive(Args, Debug, Clone)]
pub struct SpoolArg {
    /// The spool directory [env: LASTWORD_SPOOL].
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The application. Without --spool or LASTWORD_SPOOL, its default spool: the one
    /// `lastword::init` of an app of this name writes to (~/.local/share/lastword/spools/NAME). `run`
    /// and `drain` also send it to the collector in hello [env: LASTWORD_APP].
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
    /// Which setting gave it.
    pub from: Origin,
}

/// The setting a spool's location came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--spool`.
    Flag,
    /// `LASTWORD_SPOOL`.
    Env,
    /// The default spool of `--app`.
    AppFlag,
    /// The default spool of `LASTWORD_APP`.
    AppEnv,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "--spool",
            Origin::Env => "LASTWORD_SPOOL",
            Origin::AppFlag => "the default spool of --app",
            Origin::AppEnv => "the default spool of LASTWORD_APP",
        })
    }
}

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

impl SpoolArg {
    /// The application's name: `--app`, else `LASTWORD_APP`.
    pub fn app(&self) -> Option<String> {
        self.app.clone().or_else(|| env("LASTWORD_APP").map(|v| v.to_string_lossy().into_owned()))
    }

    /// The spool directory: `--spool`, else `LASTWORD_SPOOL`, else the default spool of `--app`,
    /// else of `LASTWORD_APP`. The app never overrides a spool that was given.
    pub fn locate(&self) -> Result<Located> {
        if let Some(path) = &self.spool {
            return Ok(Located { path: path.clone(), app: None, from: Origin::Flag });
        }
        if let Some(path) = env("LASTWORD_SPOOL") {
            return Ok(Located { path: PathBuf::from(path), app: None, from: Origin::Env });
        }
        if let Some(app) = &self.app {
            return by_app(app, Origin::AppFlag);
        }
        if let Some(app) = self.app() {
            return by_app(&app, Origin::AppEnv);
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

    /// Opens the spool to drain it. Says on stderr, in one line, which spool it drains (and that it
    /// made it, with `--create`); then, in one more line, what opening had to set aside: files that
    /// dead sessions left damaged (quarantined) and files it could neither recover nor quarantine
    /// (skipped: they stay where they are for the next start, the first one named). Neither stops the
    /// delivery of the rest.
    pub fn open(&self, verbose: u8) -> Result<(Spool, PathBuf)> {
        let located = self.spool.locate()?;
        let options = SpoolOptions { create: self.create, ..SpoolOptions::default() };
        let spool = Spool::open(&located.path, options).map_err(|e| explain(&located, e, true))?;
        let made = if spool.created_at_open() { ", created" } else { "" };
        eprintln!("lastword: draining spool {} ({}{made})", located.path.display(), located.from);
        let found = spool.recovered_at_open();
        if found.damaged() || (verbose > 0 && found.sessions > 0) {
            eprintln!("lastword: spool {}: {}", located.path.display(), recovered_line(&found));
        }
        Ok((spool, located.path))
    }
}

/// "1 file" / "2 files".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What opening a spool had to do, in words; only the parts that happened.
fn recovered_line(found: &Recovered) -> String {
    let mut parts = Vec::new();
    if found.sessions > 0 {
        parts.push(format!(
            "recovered {} ({} put back, {} rescued)",
            count(found.sessions, "dead session", "dead sessions"),
            count(found.released, "entry", "entries"),
            found.rescued,
        ));
    }
    if found.quarantined > 0 {
        parts.push(format!(
            "quarantined {} (lastword ls --state quarantined)",
            count(found.quarantined, "damaged file", "damaged files")
        ));
    }
    if found.skipped > 0 {
        let mut skipped = format!(
            "skipped {} it could neither recover nor quarantine, left in place and tried again at every \
             start",
            count(found.skipped, "file", "files")
        );
        if let Some(first) = &found.first_skipped {
            let more = if found.skipped > 1 { " (the first)" } else { "" };
            skipped.push_str(&format!(": {}{more}: {}", first.path.display(), first.error));
        }
        parts.push(skipped);
    }
    if parts.is_empty() { "nothing to recover".into() } else { parts.join("; ") }
}

fn by_app(app: &str, from: Origin) -> Result<Located> {
    let path = lastword::default_spool(app).ok_or_else(|| {
        anyhow!("no home directory to find the default spool of app {app:?} in: pass --spool DIR")
    })?;
    Ok(Located { path, app: Some(app.to_owned()), from })
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
        SpoolError::EmptyDirectory { .. } => {
            let create = if can_create { " (pass --create to make one there)" } else { "" };
            anyhow!("{path} is an empty directory, not a spool{create}")
        }
        other => anyhow!("cannot open the spool at {path}: {other}"),
    }
}

/// The apps that have a default spool in `dir`, for messages: their names as `--app` takes them
/// (not as their directories spell them), each quoted.
fn known_apps(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .filter(|i| i.path().join("VERSION").is_file())
                .filter_map(|i| i.file_name().to_str().and_then(lastword::default_spool_app))
                .map(|app| format!("{app:?}"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}
