//! Debug files end to end (issue 20): real ELF files (a tiny C program built here with gcc, its debug
//! file split off with `objcopy --only-keep-debug`, the binary stripped with `strip`), the real
//! `lastword debug-files check` and `upload`, the real `lastword collect --ui` (SQLite, and two of them
//! on one throwaway PostgreSQL), the real debuginfod client (`debuginfod-find`, Debian's `debuginfod`
//! package), and a second collector as an upstream debuginfod server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failure is a test failure")]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lastword_collector::debug_files::{DebugFiles, FileKind, Settings};
use lastword_collector::store::StoreLocation;
use lastword_tests::postgres::TempPostgres;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
const UPLOAD_TOKEN: &str = "upload-secret-1";
const UI_TOKEN: &str = "ui-secret-1";

/// The program: a function worth a symbol, a line table, and CFI.
const PROGRAM: &str = "#include <stdio.h>\n\
    int twice(int x) { return 2 * x; }\n\
    int main(int argc, char **argv) { printf(\"%d\\n\", twice(argc)); return 0; }\n";

/// A build of [`PROGRAM`]: the unstripped binary, its separate debug file, the stripped binary, and
/// the build id they share.
struct Build {
    _dir: tempfile::TempDir,
    full: PathBuf,
    debug: PathBuf,
    large: PathBuf,
    stripped: PathBuf,
    no_build_id: PathBuf,
    build_id: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?} starts: {e} (gcc and binutils are needed)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn build() -> Build {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let full = dir.path().join("app");
    run(Command::new("gcc").args(["-g", "-O0", "-Wl,--build-id=sha1", "-o"]).arg(&full).arg(&src));
    let debug = dir.path().join("app.debug");
    run(Command::new("objcopy").arg("--only-keep-debug").arg(&full).arg(&debug));
    let stripped = dir.path().join("app.stripped");
    std::fs::copy(&full, &stripped).unwrap();
    run(Command::new("strip").arg(&stripped));
    let no_build_id = dir.path().join("app.no-id");
    run(Command::new("gcc").args(["-g", "-Wl,--build-id=none", "-o"]).arg(&no_build_id).arg(&src));
    // The build id as readelf says it, not as our own code reads it.
    let notes = run(Command::new("readelf").arg("-n").arg(&full));
    let notes = String::from_utf8(notes.stdout).unwrap();
    let build_id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("readelf shows a build id")
        .trim()
        .to_owned();
    // A large debug file of the same build (20 MiB of padding in a section of its own): streamed,
    // with progress, and more than one chunk in the PostgreSQL store.
    let pad = dir.path().join("pad");
    let mut bytes = vec![0u8; 20 << 20];
    let mut x: u32 = 1;
    for b in &mut bytes {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8;
    }
    std::fs::write(&pad, bytes).unwrap();
    let large = dir.path().join("app.large.debug");
    run(Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".pad={}", pad.display()))
        .args(["--set-section-flags", ".pad=readonly"])
        .arg(&debug)
        .arg(&large));
    Build { _dir: dir, full, debug, large, stripped, no_build_id, build_id }
}

fn lastword(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `lastword collect --ui` child, killed on drop.
struct Collector {
    child: Child,
    ui: String,
    _tokens: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lastword collect --ui 127.0.0.1:0 --store STORE` with the upload token (and, when
/// `ui_token`, the UI token) and `extra` flags.
fn collector(store: &str, ui_token: bool, extra: &[&str]) -> Collector {
    let tokens = tempfile::tempdir().unwrap();
    let upload = tokens.path().join("upload.token");
    std::fs::write(&upload, format!("# the upload token\n{UPLOAD_TOKEN}\n")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["collect", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--store", store])
        .arg("--upload-token-file")
        .arg(&upload)
        .args(extra)
        .env("LASTWORD_TOKENS", "ingest-token")
        .env_remove("LASTWORD_UI_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if ui_token {
        let file = tokens.path().join("ui.token");
        std::fs::write(&file, UI_TOKEN).unwrap();
        cmd.arg("--ui-token-file").arg(file);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let _ingest = lines.next().expect("the listening line").unwrap();
    let ui = lines.next().expect("the UI line").unwrap();
    let ui = ui.trim().strip_prefix("web UI on ").expect("the UI line").trim_end_matches('/').to_owned();
    Collector { child, ui, _tokens: tokens }
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join(format!("token-{token}"));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

fn upload(url: &str, token: &Path, files: &[&Path]) -> (i32, String) {
    let mut cmd = lastword(&["debug-files", "upload", "--url", url, "--token-file"]);
    cmd.arg(token).args(files);
    let (code, _, stderr) = output(&mut cmd);
    (code, stderr)
}

/// `debuginfod-find KIND ID` against `url`: its exit code and the path it printed.
fn debuginfod_find(url: &str, kind: &str, id: &str, cache: &Path, headers: Option<&Path>) -> (bool, PathBuf) {
    let mut cmd = Command::new("debuginfod-find");
    cmd.args([kind, id])
        .env("DEBUGINFOD_URLS", url)
        .env("DEBUGINFOD_CACHE_PATH", cache)
        .env("DEBUGINFOD_TIMEOUT", "20")
        .env_remove("DEBUGINFOD_HEADERS_FILE");
    if let Some(h) = headers {
        cmd.env("DEBUGINFOD_HEADERS_FILE", h);
    }
    let out = cmd.output().expect("debuginfod-find runs (apt-get install -y debuginfod)");
    (out.status.success(), PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn check_tells_an_unstripped_a_stripped_and_a_debug_only_file_apart() {
    let b = build();
    let (code, full, _) = output(lastword(&["debug-files", "check"]).arg(&b.full));
    assert_eq!(code, 0, "{full}");
    assert!(full.contains(&format!("build id:         {}", b.build_id)), "{full}");
    assert!(full.contains("ELF type:         executable"), "{full}");
    assert!(full.contains("symbol table:     yes"), "{full}");
    assert!(full.contains("DWARF lines:      yes"), "{full}");
    assert!(full.contains("CFI .eh_frame:    yes"), "{full}");
    assert!(full.contains("separate debug:   no"), "{full}");
    assert!(full.contains("uploads as:       debuginfo"), "{full}");

    let (code, stripped, _) = output(lastword(&["debug-files", "check"]).arg(&b.stripped));
    assert_eq!(code, 0, "{stripped}");
    assert!(stripped.contains(&b.build_id), "{stripped}");
    assert!(stripped.contains("symbol table:     no"), "{stripped}");
    assert!(stripped.contains("DWARF info:       no"), "{stripped}");
    assert!(stripped.contains("CFI .eh_frame:    yes"), "strip keeps the CFI: {stripped}");
    assert!(stripped.contains("uploads as:       executable"), "{stripped}");

    let (code, debug, _) = output(lastword(&["debug-files", "check"]).arg(&b.debug));
    assert_eq!(code, 0, "{debug}");
    assert!(debug.contains(&b.build_id), "{debug}");
    assert!(debug.contains("separate debug:   yes"), "{debug}");
    assert!(debug.contains("DWARF lines:      yes"), "{debug}");
    assert!(debug.contains("uploads as:       debuginfo"), "{debug}");

    let (code, out, err) = output(lastword(&["debug-files", "check"]).arg(&b.no_build_id));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("no GNU build id"), "{err}");

    let text = b.full.with_extension("txt");
    std::fs::write(&text, "not a program").unwrap();
    let (code, _, err) = output(lastword(&["debug-files", "check"]).arg(&text));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("is not an ELF file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_found_by_symbols_skipped_the_second_time_and_fetched_by_debuginfod_find() {
    let b = build();
    let store = tempfile::tempdir().unwrap();
    let c = collector(store.path().to_str().unwrap(), false, &[]);
    let tokens = tempfile::tempdir().unwrap();
    let token = token_file(tokens.path(), UPLOAD_TOKEN);

    let (code, err) = upload(&c.ui, &token, &[&b.debug, &b.stripped]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("{} debuginfo: uploaded", b.build_id)), "{err}");
    assert!(err.contains(&format!("{} executable: uploaded", b.build_id)), "{err}");
    assert!(err.contains("it has no symbols: upload its debug file too"), "the stripped one is told: {err}");
    // Again: the collector has both, byte for byte, and nothing is sent.
    let (code, err) = upload(&c.ui, &token, &[&b.debug, &b.stripped]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("already there, skipped").count(), 2, "{err}");

    // The real debuginfod client fetches exactly the files uploaded.
    let cache = tempfile::tempdir().unwrap();
    let (ok, got) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), None);
    assert!(ok, "debuginfod-find debuginfo");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.debug).unwrap());
    let (ok, got) = debuginfod_find(&c.ui, "executable", &b.build_id, cache.path(), None);
    assert!(ok, "debuginfod-find executable");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.stripped).unwrap());
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (ok, _) = debuginfod_find(&c.ui, "debuginfo", unknown, cache.path(), None);
    assert!(!ok, "an unknown build id is not found");

    // The page lists them.
    let page = get(&format!("{}/debug-files", c.ui), None).await;
    assert_eq!(page.0, 200);
    assert!(page.1.contains(&b.build_id) && page.1.contains("app.debug") && page.1.contains("app.stripped"));

    // The collector's handle on the same store finds the debug file first.
    drop(c);
    let opened = StoreLocation::Dir(store.path().to_owned()).open().await.unwrap();
    let files = DebugFiles::for_store(&opened, None, Settings::default()).unwrap();
    let path = files.symbols(&b.build_id).await.expect("symbols() finds the upload");
    assert_eq!(path, store.path().join("debug-files").join(&b.build_id).join("debuginfo"));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&b.debug).unwrap());
    assert_eq!(files.symbols(unknown).await, None);
}

/// A plain HTTP/1.0 request to `url` with `headers`; (status, body). The test's own client, so that
/// what is tested is the collector's answer, not our upload command's reading of it.
async fn request(method: &str, url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    // A refusal may come before the body is read and close the connection: a failed write is fine.
    let _ = tcp.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// A PUT of `body` in chunked transfer encoding (no Content-Length), 1000 bytes a chunk.
async fn chunked_put(url: &str, token: &str, body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if tcp.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

async fn get(url: &str, auth: Option<String>) -> (u16, String) {
    let headers: Vec<(&str, String)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    request("GET", url, &headers, b"").await
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_without_the_token_of_another_build_too_large_or_not_elf_are_refused() {
    let b = build();
    let store = tempfile::tempdir().unwrap();
    let c = collector(store.path().to_str().unwrap(), false, &["--max-debug-file-bytes", "10000"]);
    let debug = std::fs::read(&b.debug).unwrap();
    let stripped = std::fs::read(&b.stripped).unwrap();
    assert!(debug.len() < 10_000 && stripped.len() > 10_000, "the files' sizes frame the limit");
    let at = |id: &str, kind: &str| format!("{}/api/debug-files/{id}/{kind}?name=app.debug", c.ui);
    let right = at(&b.build_id, "debuginfo");

    // No token, a wrong token, the ingest token: 401, nothing stored.
    assert_eq!(request("PUT", &right, &[], &debug).await.0, 401);
    assert_eq!(request("PUT", &right, &bearer("wrong"), &debug).await.0, 401);
    assert_eq!(request("PUT", &right, &bearer("ingest-token"), &debug).await.0, 401);
    assert_eq!(request("GET", &right, &bearer("wrong"), b"").await.0, 401);
    assert_eq!(request("GET", &right, &bearer(UPLOAD_TOKEN), b"").await.0, 404, "nothing stored");

    // Another build id than the file's: 422.
    let other = "00".repeat(20);
    let (status, body) = request("PUT", &at(&other, "debuginfo"), &bearer(UPLOAD_TOKEN), &debug).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&format!("build id is {}", b.build_id)), "{body}");
    // Not ELF: 422. A stripped file as debuginfo, a debug file as executable: 422.
    assert_eq!(request("PUT", &right, &bearer(UPLOAD_TOKEN), b"hello, not ELF").await.0, 422);
    let debug_as_exe = at(&b.build_id, "executable");
    assert_eq!(request("PUT", &debug_as_exe, &bearer(UPLOAD_TOKEN), &debug).await.0, 422);
    // Past the limit: 413 (its Content-Length says so before any byte is read).
    let exe = at(&b.build_id, "executable");
    assert_eq!(request("PUT", &exe, &bearer(UPLOAD_TOKEN), &stripped).await.0, 413);
    // Past the limit without a Content-Length (chunked): 413 once the limit is crossed.
    let (status, body) = chunked_put(&exe, UPLOAD_TOKEN, &stripped).await;
    assert_eq!(status, 413, "{body}");
    // Not a build id: 400.
    assert_eq!(request("PUT", &at("XYZ", "debuginfo"), &bearer(UPLOAD_TOKEN), &debug).await.0, 400);
    // Nothing of these is stored, and no temporary file is left behind.
    assert_eq!(request("GET", &right, &bearer(UPLOAD_TOKEN), b"").await.0, 404);
    assert_eq!(request("GET", &exe, &bearer(UPLOAD_TOKEN), b"").await.0, 404);
    let incoming = store.path().join("debug-files/.incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0, "no staged file is left");

    // The right one is stored (201), the same again is fine (200), and the upload command's exit
    // code says which of several failed.
    assert_eq!(request("PUT", &right, &bearer(UPLOAD_TOKEN), &debug).await.0, 201);
    assert_eq!(request("PUT", &right, &bearer(UPLOAD_TOKEN), &debug).await.0, 200);
    let tokens = tempfile::tempdir().unwrap();
    let (code, err) = upload(&c.ui, &token_file(tokens.path(), UPLOAD_TOKEN), &[&b.debug, &b.stripped]);
    assert_eq!(code, 3, "one of two failed: {err}");
    assert!(err.contains("413"), "{err}");
    let (code, err) = upload(&c.ui, &token_file(tokens.path(), "wrong"), &[&b.debug]);
    assert_eq!(code, 1, "a refused token stops everything: {err}");
    assert!(err.contains("refused the upload token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debuginfod_asks_for_the_ui_token_as_basic_auth_or_bearer() {
    let b = build();
    let store = tempfile::tempdir().unwrap();
    let c = collector(store.path().to_str().unwrap(), true, &[]);
    let tokens = tempfile::tempdir().unwrap();
    let (code, err) = upload(&c.ui, &token_file(tokens.path(), UPLOAD_TOKEN), &[&b.debug]);
    assert_eq!(code, 0, "{err}");
    // The upload token is not the UI's: it does not read.
    let url = format!("{}/buildid/{}/debuginfo", c.ui, b.build_id);
    assert_eq!(get(&url, Some(format!("Bearer {UPLOAD_TOKEN}"))).await.0, 401);

    // A fresh cache for each attempt: debuginfod-find remembers a failure in its cache.
    let cache = tempfile::tempdir().unwrap();
    let (ok, _) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), None);
    assert!(!ok, "without the token, debuginfod-find gets nothing");
    let wrong = tokens.path().join("wrong.headers");
    std::fs::write(&wrong, "Authorization: Bearer not-the-token\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (ok, _) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), Some(&wrong));
    assert!(!ok, "with a wrong token, debuginfod-find gets nothing");
    let right = tokens.path().join("right.headers");
    std::fs::write(&right, format!("Authorization: Bearer {UI_TOKEN}\n")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (ok, got) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), Some(&right));
    assert!(ok, "with the UI token in DEBUGINFOD_HEADERS_FILE");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.debug).unwrap());
    // Basic auth in the URL, as curl sends it.
    let basic = c.ui.replacen("http://", &format!("http://lastword:{UI_TOKEN}@"), 1);
    let cache = tempfile::tempdir().unwrap();
    let (ok, got) = debuginfod_find(&basic, "debuginfo", &b.build_id, cache.path(), None);
    assert!(ok, "with the UI token as basic auth");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.debug).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_to_one_collector_on_postgres_is_found_by_the_other() {
    let b = build();
    let pg = TempPostgres::start();
    let url = pg.create_database("debugfiles");
    let (cache_a, cache_b, cache_c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = collector(&url, false, &["--debug-files-cache", cache_a.path().to_str().unwrap()]);
    let other = collector(&url, false, &["--debug-files-cache", cache_b.path().to_str().unwrap()]);
    let tokens = tempfile::tempdir().unwrap();
    let token = token_file(tokens.path(), UPLOAD_TOKEN);
    let (code, err) = upload(&a.ui, &token, &[&b.large]);
    assert_eq!(code, 0, "{err}");
    // Not a terminal: progress as lines.
    let size = std::fs::metadata(&b.large).unwrap().len();
    assert!(err.contains(&format!("{size} of {size} bytes sent")), "{err}");
    // The other collector knows it has it (no upload)...
    let (code, err) = upload(&other.ui, &token, &[&b.large]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already there, skipped"), "{err}");
    // ...and serves it from the database, into its own cache.
    let dl = tempfile::tempdir().unwrap();
    let (ok, got) = debuginfod_find(&other.ui, "debuginfo", &b.build_id, dl.path(), None);
    assert!(ok, "debuginfod-find through the other collector");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.large).unwrap());
    assert!(cache_b.path().join(&b.build_id).join("debuginfo").is_file(), "kept in its cache");

    // symbols() of a third handle, with an empty cache of its own, fills it from the database.
    let store = StoreLocation::Postgres(url.clone()).open().await.unwrap();
    let files = DebugFiles::for_store(&store, Some(cache_c.path().to_owned()), Settings::default()).unwrap();
    let path = files.symbols(&b.build_id).await.expect("symbols() finds it in the database");
    assert!(path.starts_with(cache_c.path()));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&b.large).unwrap());
    // The chunks are what the database holds, and the row is one.
    let rows = pg.psql("debugfiles", "SELECT count(*) FROM debug_files");
    assert_eq!(rows.trim(), "1");
    let chunks = pg.psql("debugfiles", "SELECT count(*), max(length(bytes)) FROM debug_file_chunks");
    assert_eq!(chunks.trim(), format!("{}|{}", size.div_ceil(1 << 20), 1 << 20), "1 MiB chunks");
    let size = pg.psql("debugfiles", "SELECT sum(length(bytes)) FROM debug_file_chunks");
    assert_eq!(size.trim(), std::fs::metadata(&b.large).unwrap().len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_fetched_from_an_upstream_debuginfod_server_and_kept() {
    let b = build();
    let up_store = tempfile::tempdir().unwrap();
    let upstream = collector(up_store.path().to_str().unwrap(), false, &[]);
    let tokens = tempfile::tempdir().unwrap();
    let (code, err) = upload(&upstream.ui, &token_file(tokens.path(), UPLOAD_TOKEN), &[&b.debug]);
    assert_eq!(code, 0, "{err}");

    let store = tempfile::tempdir().unwrap();
    let c = collector(store.path().to_str().unwrap(), false, &["--debuginfod-upstream", &upstream.ui]);
    let cache = tempfile::tempdir().unwrap();
    let (ok, got) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), None);
    assert!(ok, "fetched through the collector from its upstream");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&b.debug).unwrap());
    let kept = store.path().join("debug-files").join(&b.build_id).join("debuginfo");
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&b.debug).unwrap(), "kept like an upload");
    // Kept: with the upstream gone, it is still served.
    drop(upstream);
    let cache = tempfile::tempdir().unwrap();
    let (ok, _) = debuginfod_find(&c.ui, "debuginfo", &b.build_id, cache.path(), None);
    assert!(ok, "served from what was kept");
}

/// A debuginfod server that has nothing and counts what it is asked.
async fn empty_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_id_no_upstream_has_is_not_asked_for_again() {
    let (url, asked) = empty_upstream().await;
    let store = tempfile::tempdir().unwrap();
    let opened = StoreLocation::Dir(store.path().to_owned()).open().await.unwrap();
    let settings = Settings { upstreams: vec![url], ..Settings::default() };
    let files = DebugFiles::for_store(&opened, None, settings).unwrap();
    let libc = "ab".repeat(20);
    assert_eq!(files.symbols(&libc).await, None);
    let first = asked.load(Ordering::SeqCst);
    assert_eq!(first, 2, "asked once for each kind");
    for _ in 0..5 {
        assert_eq!(files.symbols(&libc).await, None);
        assert_eq!(files.file(&libc, FileKind::Debuginfo).await.unwrap(), None);
    }
    assert_eq!(asked.load(Ordering::SeqCst), first, "the negative cache answers");
    // Another build id is asked for.
    assert_eq!(files.symbols(&"cd".repeat(20)).await, None);
    assert_eq!(asked.load(Ordering::SeqCst), first + 2);
}

/// Stages `path` as an upload would.
async fn stage(files: &DebugFiles, path: &Path) -> lastword_collector::debug_files::Staged {
    let mut staging = files.stage().await.unwrap();
    staging.write(&std::fs::read(path).unwrap()).await.unwrap();
    staging.finish().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_file_is_announced_once_and_the_same_bytes_again_change_nothing() {
    use lastword_collector::debug_files::Accepted;
    let b = build();
    let store = tempfile::tempdir().unwrap();
    let opened = StoreLocation::Dir(store.path().to_owned()).open().await.unwrap();
    let files = DebugFiles::for_store(&opened, None, Settings::default()).unwrap();
    let mut arrivals = files.subscribe();
    let first =
        files.accept(stage(&files, &b.debug).await, &b.build_id, FileKind::Debuginfo, "app.debug").await;
    assert_eq!(first.unwrap(), Accepted::Stored);
    assert_eq!(arrivals.try_recv().unwrap(), b.build_id, "announced after it is in place");
    assert!(files.symbols(&b.build_id).await.is_some());
    let again =
        files.accept(stage(&files, &b.debug).await, &b.build_id, FileKind::Debuginfo, "app.debug").await;
    assert_eq!(again.unwrap(), Accepted::AlreadyThere);
    assert!(arrivals.try_recv().is_err(), "nothing new, nothing announced");
    // A refused file is not announced and leaves nothing behind.
    let wrong = files.accept(stage(&files, &b.stripped).await, &b.build_id, FileKind::Debuginfo, "app").await;
    assert!(wrong.unwrap_err().is_the_files(), "a stripped file is no debuginfo");
    assert!(arrivals.try_recv().is_err());
    let incoming = store.path().join("debug-files/.incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0, "no staged file is left");
}
