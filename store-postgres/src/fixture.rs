//! A throwaway PostgreSQL server for tests and benches (the `fixture` feature).
//!
//! [`PostgresServer::start`] finds Debian's server binaries (`/usr/lib/postgresql/<ver>/bin`,
//! the highest version; `VERSE_POSTGRES_BIN_DIR` overrides), makes a temporary directory, runs
//! `initdb` into it and starts `postgres` on `127.0.0.1` at a free port (bound at port 0,
//! released, and tried again with a new port if the server then finds it taken), with its Unix
//! socket in the same directory. It waits until `pg_isready` says the server accepts
//! connections and creates the database [`TEST_DATABASE`]. Dropping the server (or
//! [`PostgresServer::stop`]) asks for a fast shutdown (SIGINT), waits, kills if it must, and
//! removes the directory.
//!
//! `/usr/local/bin/postgres` and other binaries on `PATH` are ignored on purpose: the fixture
//! wants the Debian server and its matching `initdb`. A missing server is an error naming the
//! package to install, never a skipped test.
//!
//! **Root.** `initdb` and `postgres` refuse to run as root, and CI runs as root. Then the
//! directory is handed to the Debian `postgres` user (chown) and both programs run as that
//! user. The switch is made by the spawn itself (`setgid`/`setuid` before `exec`, what
//! `runuser -u postgres --` does) rather than through `runuser`, because `runuser` stays as the
//! server's parent, answers SIGTERM by waiting two seconds and then SIGKILLing the server, and
//! would be the process a parent-death signal reaches instead of the server.
//!
//! **Never outliving the tests.** The server is spawned from a keeper thread that waits for it
//! and ends only when it exits, with `PR_SET_PDEATHSIG` set to SIGINT in the child: if the test
//! process dies in any way (SIGKILL included), the kernel sends the server SIGINT, a fast
//! shutdown. [`PostgresServer::shared`] gives the tests of one binary a single server (each
//! test then uses its own schema or database) and stops it from an `atexit` hook when the
//! process exits normally; only after an abnormal exit is its directory (`/tmp/verse-pg-*`)
//! left behind.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::SchemaName;

/// The database [`PostgresServer::start`] creates for tests.
pub const TEST_DATABASE: &str = "verse_test";

/// The superuser `initdb` creates, which tests connect as (trust authentication, loopback only).
pub const SUPERUSER: &str = "postgres";

/// Where Debian installs server binaries, one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Environment variable naming a directory holding `initdb`, `postgres` and `pg_isready`.
pub const BIN_DIR_VARIABLE: &str = "VERSE_POSTGRES_BIN_DIR";

/// How many fresh ports to try when the server finds its port taken.
const PORT_ATTEMPTS: usize = 5;

/// How long to wait for the server to accept connections, or to stop.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the fixture could not run a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PostgreSQL test server: {0}")]
pub struct FixtureError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, FixtureError> {
    Err(FixtureError(message.into()))
}

/// A running PostgreSQL server in a temporary directory (see the module docs).
pub struct PostgresServer {
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    dir: Mutex<Option<TempDir>>,
    postmaster: Mutex<Option<Postmaster>>,
    next_name: AtomicU64,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("bin_dir", &self.bin_dir)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The running server process, owned by its keeper thread.
struct Postmaster {
    pid: libc::pid_t,
    keeper: JoinHandle<()>,
    exit: Arc<ExitSlot>,
}

/// Where the keeper thread puts the server's exit status.
#[derive(Default)]
struct ExitSlot {
    status: Mutex<Option<Result<ExitStatus, String>>>,
    changed: Condvar,
}

impl ExitSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Result<ExitStatus, String>>> {
        // Short critical sections between two threads; a poisoned slot still holds a whole value.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, status: Result<ExitStatus, String>) {
        *self.lock() = Some(status);
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for the exit; returns whether the server has exited.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |status| status.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.is_some()
    }

    fn exited(&self) -> Option<String> {
        self.lock().as_ref().map(|status| match status {
            Ok(status) => status.to_string(),
            Err(error) => error.clone(),
        })
    }
}

/// The user to run the server as, when this process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl PostgresServer {
    /// Starts a server (see the module docs). Takes a second or two; blocks the calling thread.
    pub fn start() -> Result<PostgresServer, FixtureError> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("verse-pg-")
            .tempdir()
            .or_else(|e| fail(format!("cannot make a temporary directory: {e}")))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).or_else(|e| {
                fail(format!("cannot chown {} to postgres: {e}", dir.path().display()))
            })?;
        }
        let data_dir = dir.path().join("data");
        init_data_dir(&bin_dir, &data_dir, dir.path(), run_as)?;

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let log_path = dir.path().join(format!("postgres-{port}.log"));
            let postmaster =
                spawn_postmaster(&bin_dir, &data_dir, dir.path(), port, &log_path, run_as)?;
            let server = PostgresServer {
                port,
                bin_dir: bin_dir.clone(),
                data_dir: data_dir.clone(),
                dir: Mutex::new(None),
                postmaster: Mutex::new(Some(postmaster)),
                next_name: AtomicU64::new(0),
            };
            match server.wait_ready(&log_path) {
                Ok(()) => {
                    *server.lock_dir() = Some(dir);
                    server.create_database(TEST_DATABASE)?;
                    return Ok(server);
                }
                Err(error) => {
                    server.stop();
                    let port_taken = error.0.contains("could not bind")
                        || error.0.contains("already in use")
                        || error.0.contains("could not create any TCP/IP sockets");
                    if !port_taken {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| FixtureError("no port attempt ran".to_owned())))
    }

    /// One server for the whole test binary, started on first use and stopped when the process
    /// exits (an `atexit` hook; the parent-death signal covers abnormal exits).
    ///
    /// # Panics
    /// If the server cannot start (the message says what to install or what went wrong).
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        extern "C" fn stop_at_exit() {
            if let Some(server) = SHARED.get() {
                server.stop();
            }
        }
        SHARED.get_or_init(|| {
            let server = PostgresServer::start().unwrap_or_else(|error| panic!("{error}"));
            // SAFETY: registers a plain function without captured state; it only reads a static.
            if unsafe { libc::atexit(stop_at_exit) } != 0 {
                tracing::warn!("cannot register the PostgreSQL fixture's exit hook");
            }
            server
        })
    }

    /// The TCP port the server listens on (at `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection settings for [`TEST_DATABASE`] as [`SUPERUSER`].
    pub fn config(&self) -> tokio_postgres::Config {
        self.config_for(TEST_DATABASE)
    }

    /// Connection settings for `database` as [`SUPERUSER`].
    pub fn config_for(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(database)
            .application_name("verse-test")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A schema name not handed out before by this server: `<prefix>_<n>`.
    ///
    /// # Panics
    /// If `prefix` makes an invalid name (see [`SchemaName`]).
    pub fn unique_schema(&self, prefix: &str) -> SchemaName {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        SchemaName::new(format!("{prefix}_{n}"))
            .unwrap_or_else(|error| panic!("schema prefix {prefix:?}: {error}"))
    }

    /// Creates a database (with `createdb`).
    pub fn create_database(&self, name: &str) -> Result<(), FixtureError> {
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, name])
            .stdin(Stdio::null())
            .output()
            .or_else(|e| fail(format!("cannot run createdb: {e}")))?;
        if !output.status.success() {
            return fail(format!(
                "createdb {name} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Stops the server (fast shutdown, then SIGKILL after 30 s) and removes its directory.
    /// Idempotent; also run on drop.
    pub fn stop(&self) {
        let postmaster = self.postmaster.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(postmaster) = postmaster {
            // SAFETY: kill(2) on the pid of our own child, which its keeper has not reaped yet
            // unless the exit slot says so (then the signal is skipped).
            if postmaster.exit.exited().is_none() {
                unsafe { libc::kill(postmaster.pid, libc::SIGINT) };
            }
            if !postmaster.exit.wait(SHUTDOWN_TIMEOUT) {
                tracing::warn!(pid = postmaster.pid, "PostgreSQL did not stop in time: killing it");
                // SAFETY: as above; the keeper has not reaped the child (it has not exited).
                unsafe { libc::kill(postmaster.pid, libc::SIGKILL) };
                postmaster.exit.wait(SHUTDOWN_TIMEOUT);
            }
            if postmaster.keeper.join().is_err() {
                tracing::warn!("the PostgreSQL keeper thread panicked");
            }
        }
        drop(self.lock_dir().take());
    }

    fn lock_dir(&self) -> MutexGuard<'_, Option<TempDir>> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls `pg_isready` until the server accepts connections, fails if it exits first.
    fn wait_ready(&self, log_path: &Path) -> Result<(), FixtureError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let exit = {
            let postmaster = self.postmaster.lock().unwrap_or_else(|e| e.into_inner());
            match postmaster.as_ref() {
                Some(postmaster) => postmaster.exit.clone(),
                None => return fail("the server was stopped before it started"),
            }
        };
        loop {
            if let Some(status) = exit.exited() {
                return fail(format!(
                    "postgres exited at startup ({status}); its log:\n{}",
                    log_tail(log_path)
                ));
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER])
                .args(["-d", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .status()
                .or_else(|e| fail(format!("cannot run pg_isready: {e}")))?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return fail(format!(
                    "postgres did not accept connections within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    log_tail(log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of the Debian server binaries: [`BIN_DIR_VARIABLE`] if set, else the highest
/// version under `/usr/lib/postgresql`.
pub fn find_bin_dir() -> Result<PathBuf, FixtureError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_VARIABLE) {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            fail(format!("{BIN_DIR_VARIABLE}={} holds no postgres and initdb", dir.display()))
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => fail(format!(
            "no server binaries under {DEBIAN_ROOT}/<version>/bin: install them with \
             `apt-get install postgresql` (scripts/install-test-deps does), or set \
             {BIN_DIR_VARIABLE}"
        )),
    }
}

/// `Some(postgres user)` when this process is root (the server refuses to run as root).
fn run_as() -> Result<Option<RunAs>, FixtureError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, FixtureError> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .or_else(|e| fail(format!("cannot run id: {e}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match text.trim().parse() {
            Ok(id) if output.status.success() => Ok(id),
            _ => fail(
                "running as root, and there is no `postgres` user to run the server as: \
                 `apt-get install postgresql` creates it",
            ),
        }
    };
    Ok(Some(RunAs { uid: id("-u")?, gid: id("-g")? }))
}

/// A command that runs as `run_as` (if any), in `cwd`, with no input.
fn command(program: PathBuf, cwd: &Path, run_as: Option<RunAs>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(cwd).stdin(Stdio::null());
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

fn init_data_dir(
    bin_dir: &Path,
    data_dir: &Path,
    cwd: &Path,
    run_as: Option<RunAs>,
) -> Result<(), FixtureError> {
    let output = command(bin_dir.join("initdb"), cwd, run_as)
        .arg("-D")
        .arg(data_dir)
        .args(["--auth=trust", "--username", SUPERUSER, "--encoding=UTF8", "--locale=C"])
        .arg("--no-sync")
        .output()
        .or_else(|e| fail(format!("cannot run initdb: {e}")))?;
    if !output.status.success() {
        return fail(format!(
            "initdb failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// A port that was free a moment ago (bound at port 0 and released).
fn free_port() -> Result<u16, FixtureError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .or_else(|e| fail(format!("cannot bind 127.0.0.1:0: {e}")))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .or_else(|e| fail(format!("no local address: {e}")))
}

/// Starts `postgres` from a keeper thread that owns it (see the module docs for why a thread).
fn spawn_postmaster(
    bin_dir: &Path,
    data_dir: &Path,
    dir: &Path,
    port: u16,
    log_path: &Path,
    run_as: Option<RunAs>,
) -> Result<Postmaster, FixtureError> {
    let log = File::create(log_path).or_else(|e| fail(format!("cannot create the log: {e}")))?;
    let log_err = log.try_clone().or_else(|e| fail(format!("cannot share the log: {e}")))?;
    let mut command = command(bin_dir.join("postgres"), dir, run_as);
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(dir)
        // Throwaway data: no fsync, so tests run at memory speed.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200"])
        .stdout(log)
        .stderr(log_err);
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec and calls only prctl and getppid,
    // both async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then no signal would ever come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("the test process exited during spawn"));
            }
            Ok(())
        });
    }

    let exit = Arc::new(ExitSlot::default());
    let (spawned_tx, spawned_rx) = mpsc::channel();
    let keeper_exit = exit.clone();
    let keeper = std::thread::Builder::new()
        .name(format!("postgres-{port}"))
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
                let _ = spawned_tx.send(Ok(pid));
                keeper_exit.set(child.wait().map_err(|e| e.to_string()));
            }
            Err(error) => {
                let _ = spawned_tx.send(Err(format!("cannot start postgres: {error}")));
            }
        })
        .or_else(|e| fail(format!("cannot start the keeper thread: {e}")))?;
    match spawned_rx.recv() {
        Ok(Ok(pid)) => Ok(Postmaster { pid, keeper, exit }),
        Ok(Err(error)) => {
            let _ = keeper.join();
            fail(error)
        }
        Err(_) => {
            let _ = keeper.join();
            fail("the keeper thread ended without starting postgres")
        }
    }
}

/// The last few KiB of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 4096;
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}
