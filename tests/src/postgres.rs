//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, started with `pg_ctl`
//! listening only on a Unix socket in that directory, stopped (and the directory removed) on drop.
//! [`TempPostgres::start_tls`] also listens on 127.0.0.1 with TLS only (`hostssl` in `pg_hba.conf`, a
//! password asked), for the tests of `sslmode`.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI does), the server runs as the
//! `postgres` user that Debian's package creates, through `runuser`, and the directory is made theirs.
//! When the server binaries are missing, [`TempPostgres::start`] panics with the command that installs
//! them: a test that needs PostgreSQL never passes without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What to install when the server binaries are missing.
pub const INSTALL: &str = "apt-get install -y postgresql";

/// The directory holding `initdb` and `pg_ctl`: on PATH, or Debian's /usr/lib/postgresql/N/bin.
pub fn server_bin_dir() -> Option<PathBuf> {
    let on_path =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path.into_iter().chain(debian).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// The password of the role `postgres` on the TCP listener of [`TempPostgres::start_tls`].
pub const TLS_PASSWORD: &str = "pg-tls-secret-pw";

/// A PostgreSQL server of this test's own. The superuser is `postgres`, trusted on the socket.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
    /// The port: of the TCP listener, and in the socket's name.
    port: u16,
    /// The server options besides the socket's (the TLS listener's).
    options: String,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TempPostgres {
    /// Creates and starts a server; panics (with the install command) when PostgreSQL is not installed.
    pub fn start() -> TempPostgres {
        let mut server = Self::init();
        server.restart_after_stop();
        server
    }

    /// A server that also listens on 127.0.0.1 (a port the OS had free) with TLS, on the certificate
    /// chain and key given (PEM), and accepts there only TLS connections (`hostssl`) of a role with
    /// a password ([`TLS_PASSWORD`], SCRAM): a connection without TLS is refused. The socket stays
    /// trusted, for [`psql`](Self::psql) and [`create_database`](Self::create_database).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> TempPostgres {
        let mut server = Self::init();
        let data = server.data();
        let write_private = |name: &str, text: &str| {
            let path = data.join(name);
            std::fs::write(&path, text).expect("a file in the data directory");
            server.run_checked(Command::new("chmod").arg("600").arg(&path));
            if server.as_postgres {
                server.run_checked(Command::new("chown").arg("postgres:postgres").arg(&path));
            }
        };
        write_private("server.crt", cert_pem);
        write_private("server.key", key_pem);
        write_private("pg_hba.conf", "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n");
        server.options = "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.crt \
                          -c ssl_key_file=server.key -c password_encryption=scram-sha-256"
            .to_owned();
        // A port the OS had free a moment ago; another process may take it first: then another one
        // (the last try panics with the server's log).
        for last in [false, false, false, false, true] {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if last {
                server.restart_after_stop();
            } else if server.try_start().status.success() {
                server.running = true;
                break;
            }
        }
        server.psql("postgres", &format!("ALTER ROLE postgres PASSWORD '{TLS_PASSWORD}'"));
        server
    }

    /// The port of the TCP listener of [`start_tls`](Self::start_tls).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on the TLS listener of [`start_tls`](Self::start_tls), with its
    /// password, as `host` (`127.0.0.1` or `localhost`), and the query `query` (e.g.
    /// `sslmode=require`, or empty).
    pub fn tcp_url(&self, host: &str, db: &str, query: &str) -> String {
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("postgres://postgres:{TLS_PASSWORD}@{host}:{}/{db}{query}", self.port)
    }

    fn init() -> TempPostgres {
        let Some(bin) = server_bin_dir() else {
            panic!(
                "\n\nPostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin.\n\
                 The PostgreSQL store's tests need a real server. Install it with:\n\n    {INSTALL}\n\n"
            );
        };
        let dir = tempfile::Builder::new().prefix("lw-pg").tempdir().expect("a temporary directory");
        let as_postgres = is_root();
        let server =
            TempPostgres { dir, bin, as_postgres, running: false, port: 5432, options: String::new() };
        if as_postgres {
            server
                .run_checked(Command::new("chown").args(["-R", "postgres:postgres"]).arg(server.dir.path()));
        }
        let data = server.data();
        let mut initdb = server.command("initdb");
        initdb.args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"]).arg(&data);
        server.run_checked(&mut initdb);
        server
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `db` as user `postgres`, over the socket.
    pub fn url(&self, db: &str) -> String {
        let host: String = self
            .socket_dir()
            .to_string_lossy()
            .chars()
            .map(|c| if c == '/' { "%2F".to_owned() } else { c.to_string() })
            .collect();
        if self.port == 5432 {
            format!("postgres://postgres@{host}/{db}")
        } else {
            format!("postgres://postgres@{host}:{}/{db}", self.port)
        }
    }

    /// Creates database `db` and returns its URL.
    pub fn create_database(&self, db: &str) -> String {
        let mut createdb = self.command("createdb");
        createdb.args(["-U", "postgres", "-p", &self.port.to_string(), "-h"]).arg(self.socket_dir()).arg(db);
        self.run_checked(&mut createdb);
        self.url(db)
    }

    /// Runs one SQL command with `psql` on `db` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = self.command("psql");
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ])
        .arg("-h")
        .arg(self.socket_dir())
        .args(["-d", db, "-c", sql]);
        let out = self.run_checked(&mut psql);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-w", "-m", "immediate", "-D"]).arg(self.data());
        self.run_checked(&mut stop);
        self.running = false;
    }

    /// Starts the server again after [`stop`](Self::stop), on the same socket.
    pub fn restart_after_stop(&mut self) {
        let mut start = self.start_command();
        self.run_checked(&mut start);
        self.running = true;
    }

    fn start_command(&self) -> Command {
        // The TLS listener's options after the socket-only default, so that they win.
        let options = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c shared_buffers=16MB \
             -c max_connections=60 {}",
            self.socket_dir().display(),
            self.port,
            self.options
        );
        let mut start = self.command("pg_ctl");
        start
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options]);
        start
    }

    /// One start, which may fail (a port taken meanwhile).
    fn try_start(&self) -> Output {
        let mut start = self.start_command();
        start.output().unwrap_or_else(|e| panic!("cannot run {start:?}: {e}"))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the server's binaries, as the server's user.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let program = if program.is_file() { program } else { PathBuf::from(name) };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn run_checked(&self, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{cmd:?} failed ({}):\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.running {
            let mut stop = self.command("pg_ctl");
            stop.args(["stop", "-w", "-m", "immediate", "-D"]).arg(self.data());
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

/// Waits until `ready` holds, at most `limit`; panics with `what` otherwise.
pub fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
