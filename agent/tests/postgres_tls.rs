//! `lastword collect --store postgres://...?sslmode=...` against a real PostgreSQL that accepts TLS
//! connections only (tests/src/postgres.rs, `TempPostgres::start_tls`: `hostssl` in pg_hba.conf, a
//! self-signed certificate made here with rcgen, a password asked over SCRAM). With the right root a
//! real agent's reports reach the database over TLS; a wrong root, a name the certificate does not
//! hold, no TLS, or a server without TLS under `require` fail at start: one line, exit 1, and the
//! password nowhere in it (issue 17).

#![allow(clippy::unwrap_used, reason = "test code: a failure is a test failure")]

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, TOKEN, binary};
use lastword::spool::{Kind, Spool, SpoolOptions};
use lastword_tests::postgres::{TLS_PASSWORD, TempPostgres};

/// A self-signed certificate for `names` (PEM certificate, PEM key).
fn certificate(names: &[&str]) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// A server whose certificate names `localhost` only, and the file of that certificate as a root.
fn server(dir: &Path) -> (TempPostgres, String) {
    let (cert, key) = certificate(&["localhost"]);
    let pg = TempPostgres::start_tls(&cert, &key);
    pg.create_database("tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    (pg, ca.to_string_lossy().into_owned())
}

/// Writes `n` crash reports into a new spool `dir/name` and delivers them with `lastword drain` to
/// `url`.
fn deliver(dir: &Path, name: &str, url: &str, n: usize) {
    let spool_dir = dir.join(name);
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    for i in 0..n {
        spool.write(Kind::Crash, common::crash_body(i % 3, i).as_bytes()).unwrap();
    }
    drop(spool);
    let out = Command::new(binary())
        .args(["drain", "--deadline", "30s", "--url", url, "--spool"])
        .arg(&spool_dir)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "drain: {}", String::from_utf8_lossy(&out.stderr));
}

/// The connections to the database of `application` (`lastword collect`, or its web UI's `lastword
/// collect (reader)`), and how many of them are over TLS.
fn sessions(pg: &TempPostgres, application: &str) -> (usize, usize) {
    let row = pg.psql(
        "postgres",
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = '{application}'"
        ),
    );
    let (all, tls) = row.split_once('|').unwrap();
    (all.parse().unwrap(), tls.parse().unwrap())
}

/// `lastword collect --store url`, which must refuse to start: its output, once it has exited (at most
/// 20 s: a configuration error is told at once, not retried).
fn refused(url: &str) -> Output {
    let mut child = Command::new(binary())
        .args(["collect", "--listen", "127.0.0.1:0", "--store", url])
        .env("LASTWORD_TOKENS", TOKEN)
        .env_remove("LASTWORD_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the collector started on {url}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// One line on stderr, exit 1, nothing on stdout, no password anywhere; the line.
fn one_line_exit_1(out: &Output, case: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{case}: one line: {stderr}");
    assert!(stdout.is_empty(), "{case}: it never said it was listening: {stdout}");
    assert!(!stderr.contains(TLS_PASSWORD), "{case}: the password is never printed: {stderr}");
    assert!(stderr.contains("***"), "{case}: the URL is shown without its password: {stderr}");
    println!("{case}: {}", stderr.trim_end());
    stderr
}

#[test]
fn verify_full_with_the_servers_root_delivers_a_real_agents_reports_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, ca) = server(dir.path());
    let url = pg.tcp_url("localhost", "tls", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let collector = Collector::start(Path::new(&url), &["--ui", "127.0.0.1:0"]);
    deliver(dir.path(), "full", &collector.url, 6);
    assert_eq!(pg.psql("tls", "SELECT count(*) FROM reports"), "6");
    assert_eq!(pg.psql("tls", "SELECT sum(count) FROM groups"), "6");
    let (all, tls) = sessions(&pg, "lastword collect");
    assert!(all > 0 && tls == all, "every session of the collector is over TLS: {tls} of {all}");

    // The web UI reads on a pool of its own: over TLS too.
    let line = collector.stdout.recv_timeout(common::STEP).unwrap();
    let ui = line.trim().strip_prefix("web UI on http://").and_then(|r| r.strip_suffix('/')).unwrap();
    let mut page = std::net::TcpStream::connect(ui).unwrap();
    page.set_read_timeout(Some(common::STEP)).unwrap();
    page.write_all(format!("GET / HTTP/1.0\r\nHost: {ui}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = page.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "the overview loads: {answer}");
    let (all, tls) = sessions(&pg, "lastword collect (reader)");
    assert!(all > 0 && tls == all, "every session of the web UI is over TLS: {tls} of {all}");

    // `lastword store` queries the same URL.
    let out = Command::new(binary()).args(["store", "reports", "--json", "--store", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("\"id\"").count(), 6);

    // verify-ca checks the chain, not the name: 127.0.0.1 is not in the certificate, and it connects.
    drop(collector);
    let url = pg.tcp_url("127.0.0.1", "tls", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let collector = Collector::start(Path::new(&url), &[]);
    deliver(dir.path(), "ca", &collector.url, 2);
    assert_eq!(pg.psql("tls", "SELECT count(*) FROM reports"), "8");
}

#[test]
fn require_encrypts_without_a_root_and_checks_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _) = server(dir.path());
    // 127.0.0.1 is not the certificate's name, and no root is given: require checks neither.
    let url = pg.tcp_url("127.0.0.1", "tls", "sslmode=require");
    let collector = Collector::start(Path::new(&url), &[]);
    deliver(dir.path(), "require", &collector.url, 3);
    assert_eq!(pg.psql("tls", "SELECT count(*) FROM reports"), "3");
    let (all, tls) = sessions(&pg, "lastword collect");
    assert!(all > 0 && tls == all, "every session of the collector is over TLS: {tls} of {all}");
}

#[test]
fn a_wrong_root_a_wrong_name_or_no_tls_fails_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, ca) = server(dir.path());
    // Another root, of another name (a real wrong CA): the server's certificate has no issuer in it.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "another CA");
    let other = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, other).unwrap();
    let wrong = wrong.to_string_lossy();

    let url = pg.tcp_url("localhost", "tls", &format!("sslmode=verify-full&sslrootcert={wrong}"));
    let line = one_line_exit_1(&refused(&url), "a wrong root");
    assert!(line.contains("invalid peer certificate: UnknownIssuer"), "{line}");

    let url = pg.tcp_url("127.0.0.1", "tls", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let line = one_line_exit_1(&refused(&url), "a name the certificate does not hold");
    assert!(line.contains("certificate") && line.contains("127.0.0.1"), "{line}");

    let url = pg.tcp_url("localhost", "tls", "sslmode=disable");
    let line = one_line_exit_1(&refused(&url), "no TLS to a hostssl-only server");
    assert!(line.contains("no encryption"), "the server's refusal is told: {line}");

    let url = pg.tcp_url("localhost", "tls", "sslmode=verify_full");
    let line = one_line_exit_1(&refused(&url), "an unknown sslmode");
    assert!(line.contains("sslmode=verify_full is not one of"), "{line}");

    let missing = dir.path().join("missing.pem");
    let url =
        pg.tcp_url("localhost", "tls", &format!("sslmode=verify-full&sslrootcert={}", missing.display()));
    let line = one_line_exit_1(&refused(&url), "a root file that is not there");
    assert!(line.contains("missing.pem"), "{line}");
}

#[test]
fn require_against_a_server_without_tls_fails_at_start() {
    let pg = TempPostgres::start();
    pg.create_database("plain");
    // The socket has no TLS (PostgreSQL offers none there): require refuses it; prefer connects.
    let url = format!("{}?sslmode=require", pg.url("plain"));
    let out = refused(&url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("does not support TLS"), "{stderr}");
    let url = format!("{}?sslmode=prefer", pg.url("plain"));
    let _collector = Collector::start(Path::new(&url), &[]);
}
