//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, started with `pg_ctl`
//! listening only on a Unix socket in that directory, stopped (and the directory removed) on drop.
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

/// A PostgreSQL server of this test's own. The superuser is `postgres`, trusted on the socket.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TempPostgres {
    /// Creates and starts a server; panics (with the install command) when PostgreSQL is not installed.
    pub fn start() -> TempPostgres {
        let Some(bin) = server_bin_dir() else {
            panic!(
                "\n\nPostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin.\n\
                 The PostgreSQL store's tests need a real server. Install it with:\n\n    {INSTALL}\n\n"
            );
        };
        let dir = tempfile::Builder::new().prefix("lw-pg").tempdir().expect("a temporary directory");
        let as_postgres = is_root();
        let server = TempPostgres { dir, bin, as_postgres, running: false };
        if as_postgres {
            server
                .run_checked(Command::new("chown").args(["-R", "postgres:postgres"]).arg(server.dir.path()));
        }
        let data = server.data();
        let mut initdb = server.command("initdb");
        initdb.args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"]).arg(&data);
        server.run_checked(&mut initdb);
        let mut server = server;
        server.restart_after_stop();
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
        format!("postgres://postgres@{host}/{db}")
    }

    /// Creates database `db` and returns its URL.
    pub fn create_database(&self, db: &str) -> String {
        let mut createdb = self.command("createdb");
        createdb.args(["-U", "postgres", "-h"]).arg(self.socket_dir()).arg(db);
        self.run_checked(&mut createdb);
        self.url(db)
    }

    /// Runs one SQL command with `psql` on `db` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = self.command("psql");
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
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
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c shared_buffers=16MB \
             -c max_connections=60",
            self.socket_dir().display()
        );
        let mut start = self.command("pg_ctl");
        start
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options]);
        self.run_checked(&mut start);
        self.running = true;
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
