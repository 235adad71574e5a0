//! `lastword debug-files check` and `lastword debug-files upload`, and the flags of `lastword collect`
//! about debug files ([`CollectDebugFilesArgs`]).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use lastword_collector::debug_files::http::{self, HttpClient};
use lastword_collector::debug_files::{self, Contents, DebugFiles, Settings};
use lastword_collector::store::AnyStore;
use lastword_collector::ui::DebugFilesApi;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::exit;

/// `lastword debug-files ...`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Exit codes of check: 0 an ELF file with a build id (it can be uploaded); 1 \
not an ELF file, no build id, or unreadable; 2 usage.\n\nExit codes of upload: 0 every file was \
uploaded or was there already; 1 nothing could be tried (no token, a bad URL, a refused token) or an \
error before any file; 2 usage; 3 some files failed (not ELF, no build id, too large, refused by the \
collector, a broken connection): each is named on stderr, the others were uploaded.")]
pub struct DebugFilesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DebugFilesCommand,
}

/// The subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum DebugFilesCommand {
    /// Say what an ELF file holds: build id, ELF type, symbol table, DWARF, CFI, whether it is a
    /// separate debug file, and the kind it uploads as.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Upload ELF executables, shared objects and separate debug files to a collector (`lastword
    /// collect --ui ADDR --upload-token-file F`), keyed by build id; files it has already are skipped.
    Upload {
        /// The collector's web UI address, e.g. http://127.0.0.1:8701 (or https://).
        #[arg(long, value_name = "URL")]
        url: String,
        /// File whose first line (not empty, not a # comment) is the collector's upload token.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs `lastword debug-files`.
pub fn debug_files(args: DebugFilesArgs) -> anyhow::Result<u8> {
    match args.command {
        DebugFilesCommand::Check { file } => Ok(check(&file)),
        DebugFilesCommand::Upload { url, token_file, files } => upload(&url, &token_file, &files),
    }
}

fn check(file: &Path) -> u8 {
    match debug_files::elf::inspect(file) {
        Ok(contents) if contents.build_id.is_some() => {
            println!("{}: ELF", file.display());
            println!("{contents}");
            exit::OK
        }
        Ok(_) => {
            eprintln!(
                "lastword: {} has no GNU build id: it cannot be uploaded (link with --build-id)",
                file.display()
            );
            exit::ERROR
        }
        Err(e) => {
            eprintln!("lastword: {e}");
            exit::ERROR
        }
    }
}

/// Reads the first line of `path` that is neither empty nor a `#` comment.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .with_context(|| format!("no token in {}", path.display()))
}

/// Why one file was not uploaded.
enum Failed {
    /// This file's fault or the collector's answer for it: go on with the others.
    File(String),
    /// Nothing else can work either (a refused token): stop.
    All(String),
}

fn upload(url: &str, token_file: &Path, files: &[PathBuf]) -> anyhow::Result<u8> {
    let base = url.trim().trim_end_matches('/').to_owned();
    let uri: hyper::Uri = base.parse().with_context(|| format!("{url:?} is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        anyhow::bail!("{url:?} is not an http:// or https:// URL of the collector's web UI");
    }
    let token = read_token(token_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = HttpClient::new().map_err(|e| anyhow::anyhow!("cannot make an HTTP client: {e}"))?;
        let (mut done, mut failed) = (0usize, 0usize);
        for file in files {
            match upload_one(&client, &base, &token, file).await {
                Ok(line) => {
                    done += 1;
                    eprintln!("{}: {line}", file.display());
                }
                Err(Failed::File(why)) => {
                    failed += 1;
                    eprintln!("lastword: {}: {why}", file.display());
                }
                Err(Failed::All(why)) => {
                    eprintln!("lastword: {}: {why}", file.display());
                    return Ok(exit::ERROR);
                }
            }
        }
        if failed == 0 {
            Ok(exit::OK)
        } else {
            eprintln!("lastword: {failed} of {} files failed; {done} uploaded or there already", files.len());
            Ok(exit::PUT_BACK)
        }
    })
}

/// The SHA-256 of a file, read 1 MiB at a time.
async fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf).await? {
            0 => break,
            n => sha.update(&buf[..n]),
        }
    }
    Ok(hex::encode(sha.finalize()))
}

fn refused(status: u16, body: &str) -> Failed {
    match status {
        401 | 403 | 429 => Failed::All(format!("the collector refused the upload token ({status}): {body}")),
        _ => Failed::File(format!("the collector answered {status}: {body}")),
    }
}

async fn upload_one(client: &HttpClient, base: &str, token: &str, file: &Path) -> Result<String, Failed> {
    let path = file.to_owned();
    let contents: Contents = tokio::task::spawn_blocking(move || debug_files::elf::inspect(&path))
        .await
        .map_err(|e| Failed::File(e.to_string()))?
        .map_err(|e| Failed::File(e.to_string()))?;
    let Some(build_id) = contents.build_id.clone() else {
        return Err(Failed::File(
            "no GNU build id: the collector could not key it (link with --build-id)".into(),
        ));
    };
    let kind = contents.kind();
    let target = format!("{base}/api/debug-files/{build_id}/{}", kind.name());
    let sha = sha256_of(file).await.map_err(|e| Failed::File(format!("cannot read it: {e}")))?;
    // Has the collector this very file?
    let ask = hyper::Request::get(&target)
        .header("authorization", format!("Bearer {token}"))
        .body(http::empty())
        .map_err(|e| Failed::All(e.to_string()))?;
    let answer = client.send(ask).await.map_err(|e| Failed::All(format!("cannot reach {base}: {e}")))?;
    let status = answer.status().as_u16();
    let body = http::small_text(answer.into_body(), 4096).await;
    match status {
        200 if body.split_whitespace().nth(1) == Some(sha.as_str()) => {
            return Ok(format!("{build_id} {}: already there, skipped", kind.name()));
        }
        200 | 404 => {}
        other => return Err(refused(other, &body)),
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).to_string();
    let opened =
        tokio::fs::File::open(file).await.map_err(|e| Failed::File(format!("cannot open it: {e}")))?;
    let size = contents.size;
    let progress = Progress::start(file, size);
    let sent = Arc::clone(&progress.sent);
    let body = http::file_body(opened, move |n| {
        sent.fetch_add(n as u64, Ordering::Relaxed);
    });
    let put = hyper::Request::put(format!("{target}?name={name}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", size)
        .header("content-type", "application/octet-stream")
        .body(body)
        .map_err(|e| Failed::All(e.to_string()))?;
    let result = client.send(put).await;
    progress.stop().await;
    let answer = result.map_err(|e| Failed::File(format!("the upload failed: {e}")))?;
    let status = answer.status().as_u16();
    let body = http::small_text(answer.into_body(), 4096).await;
    // A stripped file is still worth keeping (its CFI, the code for a debugger), but names no
    // function: say so, so that nobody takes it for the debug file.
    let note = if contents.has_symbols() { "" } else { "; it has no symbols: upload its debug file too" };
    match status {
        201 => Ok(format!("{build_id} {}: uploaded ({size} bytes){note}", kind.name())),
        200 => Ok(format!("{build_id} {}: already there", kind.name())),
        other => Err(refused(other, &body)),
    }
}

/// Files smaller than this get no progress display.
const PROGRESS_FROM: u64 = 8 << 20;

/// The progress of one upload: a bar on a terminal, else a line on stderr every few seconds.
struct Progress {
    sent: Arc<AtomicU64>,
    task: Option<(tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl Progress {
    fn start(file: &Path, size: u64) -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        if size < PROGRESS_FROM {
            return Self { sent, task: None };
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let name = file.display().to_string();
        let counter = Arc::clone(&sent);
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = terminal.then(|| {
                let bar = indicatif::ProgressBar::new(size);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(name.clone());
                bar
            });
            let every = if terminal { Duration::from_millis(100) } else { Duration::from_secs(2) };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(every) => {}
                }
                let n = counter.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => bar.set_position(n),
                    None => {
                        let mut err = std::io::stderr().lock();
                        let _ =
                            writeln!(err, "{name}: {n} of {size} bytes sent ({}%)", n * 100 / size.max(1));
                    }
                }
            }
            match bar {
                Some(bar) => bar.finish_and_clear(),
                None => {
                    let n = counter.load(Ordering::Relaxed);
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{name}: {n} of {size} bytes sent");
                }
            }
        });
        Self { sent, task: Some((task, stop)) }
    }

    async fn stop(self) {
        if let Some((task, stop)) = self.task {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// The flags of `lastword collect` about debug files.
#[derive(Clone, Debug, clap::Args)]
pub struct CollectDebugFilesArgs {
    /// File whose first line (not empty, not a # comment) is the token of `lastword debug-files
    /// upload` (a token of its own: neither the agents' nor the UI's). Without it, the UI's server
    /// refuses uploads and serves only the debuginfod API and the "Debug files" page.
    #[arg(long, value_name = "FILE")]
    pub upload_token_file: Option<PathBuf>,
    /// The largest debug file taken (an upload, or a file from an upstream server), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = debug_files::DEFAULT_MAX_FILE_BYTES)]
    pub max_debug_file_bytes: u64,
    /// With a PostgreSQL store: the directory of this collector's local copies of the debug files
    /// kept in the database (default: the user's cache directory, lastword/debug-files). Unused with
    /// a SQLite store, whose debug files are in DIR/debug-files.
    #[arg(long, value_name = "DIR")]
    pub debug_files_cache: Option<PathBuf>,
    /// A debuginfod server asked for the debug files the collector lacks (e.g.
    /// https://debuginfod.debian.net); what it gives is kept like an upload. Repeatable: asked in
    /// order.
    #[arg(long, value_name = "URL")]
    pub debuginfod_upstream: Vec<String>,
}

impl CollectDebugFilesArgs {
    /// The collector's debug files for `store`, as these flags say.
    pub fn open(&self, store: &AnyStore) -> anyhow::Result<DebugFiles> {
        for url in &self.debuginfod_upstream {
            let uri: hyper::Uri =
                url.parse().with_context(|| format!("--debuginfod-upstream {url:?} is not a URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                anyhow::bail!("--debuginfod-upstream {url:?} is not an http:// or https:// URL");
            }
        }
        let cache = self.debug_files_cache.clone().or_else(|| {
            directories::ProjectDirs::from("", "", "lastword").map(|d| d.cache_dir().join("debug-files"))
        });
        let settings = Settings {
            max_file_bytes: self.max_debug_file_bytes,
            upstreams: self.debuginfod_upstream.clone(),
            ..Settings::default()
        };
        Ok(DebugFiles::for_store(store, cache, settings)?)
    }

    /// What the UI's server serves of `files`, with the upload token of `--upload-token-file`.
    pub fn api(&self, files: DebugFiles) -> anyhow::Result<DebugFilesApi> {
        let upload_token = match &self.upload_token_file {
            Some(path) => Some(read_token(path)?.into()),
            None => None,
        };
        Ok(DebugFilesApi { files, upload_token })
    }
}
