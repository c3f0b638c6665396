//! PostgreSQL for the tests: which backend the servers use, one schema per server, a proxy
//! that can cut a node off from the database, and control of the machine's cluster.
//!
//! A test that needs PostgreSQL fails (it never skips) when the database is unreachable: a
//! suite that passes without testing what it claims would hide exactly the failures it is for.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// The database the tests use unless `TIDEMARK_TEST_DATABASE_URL` names another.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where the storage of a [`Server`](crate::Server) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in the server's own temporary directory (one node).
    Sqlite,
    /// A fresh schema of the PostgreSQL database at [`database_url`] (many nodes possible).
    Postgres,
}

impl Backend {
    /// The backend chosen by `TIDEMARK_TEST_BACKEND` (`sqlite`, the default, or `postgres`).
    /// Any other value panics: a typo must not quietly test SQLite again.
    pub fn from_env() -> Backend {
        match std::env::var("TIDEMARK_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
            Ok("postgres") | Ok("postgresql") => Backend::Postgres,
            Ok(other) => panic!("TIDEMARK_TEST_BACKEND={other:?}: expected sqlite or postgres"),
        }
    }
}

/// The test database: `TIDEMARK_TEST_DATABASE_URL`, or [`DEFAULT_DATABASE_URL`].
pub fn database_url() -> String {
    std::env::var("TIDEMARK_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
}

/// A connection to `url`, giving up after `timeout`.
pub fn try_connect_to(url: &str, timeout: Duration) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(timeout);
    config.connect(postgres::NoTls)
}

/// A connection to the test database. Panics, saying how to start PostgreSQL, if it is
/// unreachable.
pub fn connect() -> postgres::Client {
    let url = database_url();
    try_connect_to(&url, Duration::from_secs(5)).unwrap_or_else(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        panic!(
            "PostgreSQL at {url} is unreachable ({e}{cause}). This test needs it; start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or \
             point TIDEMARK_TEST_DATABASE_URL at another server"
        )
    })
}

/// A schema of its own for one server (and the other nodes started on it), dropped with
/// everything in it when the last of them is dropped.
///
/// The name is `t_<pid>_<counter>_<random>`: unique across parallel tests and test processes,
/// and it says which process made it, so that a later run can drop the schemas of runs that
/// died before they could clean up. The server creates the schema itself at start-up.
#[derive(Debug)]
pub struct Schema {
    name: String,
}

impl Schema {
    /// A new, unused schema name. Checks that PostgreSQL answers (panicking if not), and once
    /// per process drops the schemas left behind by dead test processes.
    pub fn new() -> Arc<Schema> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static CLEANED: Once = Once::new();
        let mut client = connect();
        CLEANED.call_once(|| drop_stale_schemas(&mut client));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = RandomState::new().build_hasher().finish() as u32;
        let name = format!("t_{}_{n}_{random:08x}", std::process::id());
        Arc::new(Schema { name })
    }

    /// A schema with exactly this name (the caller makes it unique), dropped like any other.
    /// For tests of the name itself.
    pub fn named(name: &str) -> Arc<Schema> {
        drop(connect());
        Arc::new(Schema {
            name: name.to_string(),
        })
    }

    /// The schema's name, as given to `--database-schema`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Best effort: the database may be down (a test that stops it restores it first).
        let dropped = try_connect_to(&database_url(), Duration::from_secs(3)).and_then(|mut c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test schema {}: {e}", self.name);
        }
    }
}

/// Drops the `t_<pid>_…` schemas whose process no longer exists.
fn drop_stale_schemas(client: &mut postgres::Client) {
    let Ok(rows) = client.query(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9]+_[0-9]+_[0-9a-f]{8}$'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let Some(pid) = name
            .split('_')
            .nth(1)
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists; nothing is sent.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        }
    }
}

/// A TCP proxy in front of PostgreSQL that a test can cut, to take the database away from one
/// node without disturbing anything else on the machine.
///
/// While cut, every connection through it is closed and new ones are accepted and closed at
/// once, as a database that went away would look to the node.
pub struct DbProxy {
    port: u16,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    up: AtomicBool,
    closing: AtomicBool,
    /// Both ends of every open connection, to shut them down on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl DbProxy {
    /// A proxy to the host and port of [`database_url`], listening on `127.0.0.1:0`.
    pub fn start() -> DbProxy {
        let config: postgres::Config = database_url().parse().expect("the database URL parses");
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("the test database must be reached over TCP, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let shared = Arc::new(ProxyShared {
            up: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let proxy = DbProxy {
            port: listener.local_addr().unwrap().port(),
            shared: shared.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if !shared.up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut open = shared.open.lock().unwrap();
                open.retain(|s| s.peer_addr().is_ok());
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                drop(open);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        proxy
    }

    /// The database URL through the proxy, for `--database`.
    pub fn url(&self) -> String {
        let mut url = database_url();
        let config: postgres::Config = url.parse().expect("the database URL parses");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host_port = format!(":{port}/");
        match url.find(&host_port) {
            Some(at) => url.replace_range(at..at + host_port.len(), &format!(":{}/", self.port)),
            None => panic!("cannot find :{port}/ in the database URL {url}"),
        }
        url
    }

    /// Closes every connection and refuses new ones until [`restore`](DbProxy::restore).
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `closing`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// The machine's PostgreSQL cluster, stopped and started with `pg_ctlcluster`.
///
/// `TIDEMARK_TEST_PG_CLUSTER` (`<version>/<name>`, e.g. `15/main`) names it; by default it is
/// the `main` cluster of the only version under `/etc/postgresql`. Stopping it disturbs every
/// other user of the database: only a test binary that runs alone may do it.
#[derive(Debug, Clone)]
pub struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    /// The local cluster (see the type's doc).
    pub fn local() -> Cluster {
        if let Ok(spec) = std::env::var("TIDEMARK_TEST_PG_CLUSTER") {
            let (version, name) = spec
                .split_once('/')
                .unwrap_or_else(|| panic!("TIDEMARK_TEST_PG_CLUSTER={spec:?}: expected 15/main"));
            return Cluster {
                version: version.into(),
                name: name.into(),
            };
        }
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .expect("PostgreSQL is installed (/etc/postgresql)")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("main").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        assert_eq!(
            versions.len(),
            1,
            "expected one PostgreSQL version with a main cluster under /etc/postgresql, found \
             {versions:?}; set TIDEMARK_TEST_PG_CLUSTER=<version>/<name>"
        );
        Cluster {
            version: versions.remove(0),
            name: "main".into(),
        }
    }

    /// `pg_ctlcluster … stop` (its default "fast" mode: open sessions are ended at once).
    pub fn stop(&self) {
        self.ctl(&["stop"]);
    }

    /// `pg_ctlcluster … start`, then waits until the test database accepts connections.
    pub fn start(&self) {
        self.ctl(&["start"]);
        self.wait_up(Duration::from_secs(60));
    }

    /// Whether the test database accepts connections now.
    pub fn is_up(&self) -> bool {
        try_connect_to(&database_url(), Duration::from_secs(2)).is_ok()
    }

    /// Starts the cluster if it is not up (for clean-up paths; never panics).
    pub fn ensure_up(&self) {
        if self.is_up() {
            return;
        }
        let _ = self.command(&["start"]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.is_up() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if !self.is_up() {
            eprintln!(
                "PostgreSQL {}/{} could not be started again",
                self.version, self.name
            );
        }
    }

    fn wait_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.is_up() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within {timeout:?} of starting"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, action: &[&str]) -> Command {
        let mut command = Command::new("pg_ctlcluster");
        command
            .arg("--skip-systemctl-redirect")
            .arg(&self.version)
            .arg(&self.name)
            .args(action);
        command
    }

    fn ctl(&self, action: &[&str]) {
        let output = self
            .command(action)
            .output()
            .unwrap_or_else(|e| panic!("running pg_ctlcluster: {e}"));
        assert!(
            output.status.success(),
            "pg_ctlcluster {} {} {action:?} failed ({}): {}{}",
            self.version,
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
