//! The end-to-end test harness: the real `sync-server` binary, on loopback, over HTTP.
//!
//! No mocks. Every [`Server`] is its own process with its own storage (a temporary data
//! directory, or a fresh PostgreSQL schema), so tests run in parallel without sharing anything.
//!
//! # Backends
//!
//! `TIDEMARK_TEST_BACKEND=sqlite` (the default) or `postgres` chooses where [`Server::start`]
//! keeps its data, so that the same tests run against both backends. With `postgres`, each
//! server gets a schema of its own in `TIDEMARK_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), kept across restarts and dropped when the last
//! node on it is dropped; an unreachable database fails the test. Nodes get
//! `--database-pool 8` unless the test says otherwise. Tests that need PostgreSQL whatever the
//! variable says use [`Server::start_on`] with [`Backend::Postgres`], and
//! [`Server::start_node_of`] for more nodes on the same schema.
//!
//! # Layout
//!
//! - [`server_binary`]: builds `sync-server` once per test process (a nested `cargo build`, so
//!   that `cargo test -p tidemark-tests` works on its own) and says where it is;
//!   [`cli_binary`] does the same for the `tidemark` command.
//! - [`files`]: a static file server in the test process (tower-http's `ServeDir`, with
//!   `Range`) that counts requests and can trickle or corrupt what it sends.
//! - [`Server`]: start (on either backend; more nodes on one schema), `kill -9`, SIGTERM,
//!   restart on the same storage. Dropping it kills the process; if the test is panicking, the
//!   server's log is printed first.
//! - [`Client`] and [`Reply`]: a blocking HTTP client that sends a bearer token, and the
//!   answer as status, headers and body, with the assertions every test needs.
//! - [`pg`]: the backend switch, per-server schemas, a proxy that cuts one node off from the
//!   database, and control of the machine's PostgreSQL cluster.
//! - [`sse`]: an event-stream client ([`Client::events`]).
//! - [`raw`]: raw HTTP/1.1 on a TCP socket, for requests no client library would send.
//! - [`prometheus`]: a strict parser of `/metrics`.
//! - Small helpers: [`pull_all`], [`snapshot`], [`core_fields`], [`now_ms`], [`free_ports`], [`wait_until`],
//!   [`follow_changes`].

pub mod files;
pub mod pg;
pub mod prometheus;
pub mod raw;
pub mod sse;

pub use files::FileServer;
pub use pg::{Backend, Schema};
pub use prometheus::Metrics;
pub use sse::{EventStream, SseEvent};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::RequestBuilder;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections per node to PostgreSQL. Tests run in parallel against one server whose
/// `max_connections` is typically 100; the default pool of 16 per node (plus a listener)
/// could exhaust it with a few multi-node tests at once.
const POOL_SIZE: &str = "8";

/// The `sync-server` executable, built on first use.
///
/// `TIDEMARK_SERVER_BIN` names a prebuilt binary and skips the build. Otherwise this runs
/// `cargo build -p sync-server --bin sync-server` once per test process and takes the path
/// cargo reports, which respects `CARGO_TARGET_DIR` and any `.cargo/config`. A failed build
/// fails the test loudly: a stale binary would test the wrong code.
pub fn server_binary() -> &'static Path {
    // The outcome is kept either way: after a failed build every test fails at once with the
    // same message instead of building again.
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(&BINARY, "TIDEMARK_SERVER_BIN", "sync-server", "sync-server")
}

/// The `tidemark` command-line tool, built on first use like [`server_binary`]
/// (`TIDEMARK_CLI_BIN` names a prebuilt one).
pub fn cli_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(&BINARY, "TIDEMARK_CLI_BIN", "tidemark-cli", "tidemark")
}

fn built<'a>(
    slot: &'a OnceLock<Result<PathBuf, String>>,
    variable: &str,
    package: &str,
    bin: &str,
) -> &'a Path {
    let binary = slot.get_or_init(|| match std::env::var_os(variable) {
        Some(path) => Ok(PathBuf::from(path)),
        None => build_binary(package, bin),
    });
    match binary {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

fn build_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let mut command = Command::new(cargo);
    // `cargo test` gives the test process its package's variables (`CARGO_MANIFEST_DIR`,
    // `CARGO_PKG_*`...). Build scripts that watch them (ring's does) would see a change from
    // a plain `cargo build` and rebuild half the tree; the nested build must not inherit them.
    const SET_BY_CARGO_TEST: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_CFG_",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if SET_BY_CARGO_TEST.iter().any(|p| name.starts_with(p)) {
            command.env_remove(name);
        }
    }
    let output = command
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo to build {bin}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p {package}` failed ({}); see the compiler output above",
            output.status
        ));
    }
    // The last line of JSON naming the executable is the one just built.
    let reported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    let binary = reported.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| {
                if dir.is_relative() {
                    root.join(dir)
                } else {
                    dir
                }
            })
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join(bin)
    });
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{bin} was built but {} does not exist",
            binary.display()
        ))
    }
}

/// A running `sync-server` with its own temporary directory (its logs, and its SQLite data on
/// that backend) and its storage.
pub struct Server {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
    /// The SQLite data directory, when the test chose it (else `<dir>/data`).
    data: Option<PathBuf>,
    storage: Storage,
    args: Vec<String>,
    starts: u32,
    /// Set by [`Server::restart_on_same_port`]: the port to listen on instead of a free one.
    port: Option<u16>,
}

/// Where a server keeps its data.
#[derive(Clone)]
enum Storage {
    /// SQLite in `<dir>/data`.
    Sqlite,
    /// A PostgreSQL schema, shared by every node started on it, reached at this URL.
    Postgres { schema: Arc<Schema>, url: String },
}

impl Server {
    /// Starts a server on `127.0.0.1:0` with fresh storage on the backend chosen by
    /// `TIDEMARK_TEST_BACKEND`, and `args` besides.
    ///
    /// Panics (with the server's log) if it does not print its address in time.
    pub fn start(args: &[&str]) -> Server {
        Server::start_on(Backend::from_env(), args)
    }

    /// Like [`Server::start`], on the given backend whatever the environment says.
    pub fn start_on(backend: Backend, args: &[&str]) -> Server {
        let storage = match backend {
            Backend::Sqlite => Storage::Sqlite,
            Backend::Postgres => Storage::Postgres {
                schema: Schema::new(),
                url: pg::database_url(),
            },
        };
        Server::launch(storage, args)
    }

    /// Starts a server on SQLite, whatever the environment says, with its data in `data` (for
    /// example on a file system the test mounted).
    pub fn start_sqlite_in(data: &Path, args: &[&str]) -> Server {
        Server::try_launch_in(Storage::Sqlite, Some(data.to_path_buf()), args)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts a server on PostgreSQL in `schema` (for example [`Schema::named`]).
    pub fn start_in_schema(schema: Arc<Schema>, args: &[&str]) -> Server {
        let url = pg::database_url();
        Server::launch(Storage::Postgres { schema, url }, args)
    }

    /// Like [`Server::start_in_schema`], but a server that exits at start-up (or never prints
    /// its address) is an `Err` with the reason and its log, for tests of what it refuses.
    pub fn try_start_in_schema(schema: Arc<Schema>, args: &[&str]) -> Result<Server, String> {
        let url = pg::database_url();
        Server::try_launch(Storage::Postgres { schema, url }, args)
    }

    /// Starts another node on the same PostgreSQL schema as `other`, with its own `args`.
    /// Panics if `other` uses SQLite (one node only).
    pub fn start_node_of(other: &Server, args: &[&str]) -> Server {
        match &other.storage {
            Storage::Postgres { url, .. } => Server::start_node_via(other, &url.clone(), args),
            Storage::Sqlite => panic!("a second node needs the PostgreSQL backend"),
        }
    }

    /// Like [`Server::start_node_of`], reaching the database at `database_url` (for example
    /// through a [`pg::DbProxy`]).
    pub fn start_node_via(other: &Server, database_url: &str, args: &[&str]) -> Server {
        let Storage::Postgres { schema, .. } = &other.storage else {
            panic!("a second node needs the PostgreSQL backend");
        };
        let storage = Storage::Postgres {
            schema: schema.clone(),
            url: database_url.to_string(),
        };
        Server::launch(storage, args)
    }

    fn launch(storage: Storage, args: &[&str]) -> Server {
        Server::try_launch(storage, args).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_launch(storage: Storage, args: &[&str]) -> Result<Server, String> {
        Server::try_launch_in(storage, None, args)
    }

    fn try_launch_in(
        storage: Storage,
        data: Option<PathBuf>,
        args: &[&str],
    ) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-e2e-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut server = Server {
            child: None,
            url: String::new(),
            dir,
            data,
            storage,
            args: args.iter().map(|a| a.to_string()).collect(),
            starts: 0,
            port: None,
        };
        server.try_spawn()?;
        Ok(server)
    }

    /// The backend this server keeps its data in.
    pub fn backend(&self) -> Backend {
        match self.storage {
            Storage::Sqlite => Backend::Sqlite,
            Storage::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The PostgreSQL schema, on that backend.
    pub fn schema(&self) -> Option<&str> {
        match &self.storage {
            Storage::Sqlite => None,
            Storage::Postgres { schema, .. } => Some(schema.name()),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:43121` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's SQLite data directory (it survives restarts; unused on PostgreSQL).
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// A client that authenticates as `user` (dev auth: the token is the user id).
    pub fn client(&self, user: &str) -> Client {
        Client::new(&self.url, Some(user))
    }

    /// A client that sends no `Authorization` header.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None)
    }

    /// Everything the server has written to stderr so far, across restarts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// `kill -9`: the process dies at once, mid-write if it was writing.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std's Child::kill is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit. Panics if the server does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "sending SIGTERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same storage (on a new port) after a
    /// [`kill9`](Server::kill9) or [`terminate`](Server::terminate); kills it first if it is
    /// still running.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Like [`Server::restart`], on the port it had, so that whoever knows its URL (a
    /// mirror following it) finds it again.
    pub fn restart_on_same_port(&mut self) {
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the URL ends with the port");
        self.port = Some(port);
        self.restart();
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("server-{start}.log"))
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// Starts the process; if it does not print its address, says why (with its log).
    fn try_spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("creating the log file");
        let mut command = server_command();
        // A test that needs to know the address before the server starts (peers that name
        // each other) passes its own `--listen`.
        if !self
            .args
            .iter()
            .any(|a| a == "--listen" || a.starts_with("--listen="))
        {
            let listen = format!("127.0.0.1:{}", self.port.unwrap_or(0));
            command.args(["--listen", &listen]);
        }
        match &self.storage {
            Storage::Sqlite => {
                command.arg("--data").arg(self.data_dir());
            }
            Storage::Postgres { schema, url } => {
                command.args(["--database", url, "--database-schema", schema.name()]);
                if !self.args.iter().any(|a| a.starts_with("--database-pool")) {
                    command.args(["--database-pool", POOL_SIZE]);
                }
            }
        }
        command
            .args(&self.args)
            // Nothing may land in the caller's directory (`--data` defaults to a relative path).
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().expect("spawning sync-server");
        let stdout = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);
        match first_line(stdout, START_TIMEOUT) {
            Some(line) => {
                let url = line
                    .strip_prefix("tidemark listening on ")
                    .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
                self.url = url.trim_end_matches('/').to_string();
                Ok(())
            }
            None => {
                // A server that failed at start-up closed its stdout as it exited; give the
                // exit a moment to be reaped so that the message says which it was.
                let exited = self.child.as_mut().and_then(|c| {
                    let deadline = Instant::now() + Duration::from_secs(1);
                    loop {
                        match c.try_wait() {
                            Ok(Some(status)) => return Some(status),
                            Ok(None) if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            _ => return None,
                        }
                    }
                });
                self.kill9();
                Err(match exited {
                    Some(status) => format!(
                        "the server exited ({status}) before printing its address\n{}",
                        self.log()
                    ),
                    None => format!(
                        "the server did not print its address within {START_TIMEOUT:?}\n{}",
                        self.log()
                    ),
                })
            }
        }
    }
}

/// `n` ports that were free a moment ago on 127.0.0.1, for servers that must know each
/// other's addresses before they start. (Another process could take one in between; the
/// server would then fail to start, loudly.)
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// The server binary as a command with a clean environment: the server reads every flag from
/// a `TIDEMARK_*` variable too, and one left in the caller's environment must not change what a
/// test runs against.
pub fn server_command() -> Command {
    let mut command = Command::new(server_binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIDEMARK_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// Reads the first line of `stdout` within `timeout`; keeps draining the rest in the
/// background so that the server can never block on a full pipe.
fn first_line(stdout: impl Read + Send + 'static, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx.recv_timeout(timeout).ok()
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let schema = self
                .schema()
                .map(|s| format!(", schema {s}"))
                .unwrap_or_default();
            eprintln!(
                "----- sync-server log ({}{schema}) -----\n{}\n-----",
                self.dir.path().display(),
                self.log()
            );
        }
        // The process first; the schema (if this was its last node) goes with `storage`.
        self.kill9();
    }
}

/// Runs the server binary with exactly `args` plus a temporary `--data` directory (no
/// `--listen`; on SQLite whatever the backend, unless `args` say `--database`) and returns its
/// exit status and log, or `None` if it was still running after `timeout` (it is then killed).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Option<(ExitStatus, String)> {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("creating the log file");
    let mut child = server_command()
        .args(args)
        .arg("--data")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning sync-server");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the server") {
            return Some((
                status,
                std::fs::read_to_string(&log_path).unwrap_or_default(),
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP client for one user.
#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base`, sending `Bearer <token>` if a token is given.
    pub fn new(base: &str, token: Option<&str>) -> Client {
        Client::with_timeout(base, token, Duration::from_secs(30))
    }

    /// Like [`Client::new`], with a per-request timeout.
    pub fn with_timeout(base: &str, token: Option<&str>, timeout: Duration) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building an HTTP client");
        Client {
            http,
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    /// Like [`Client::new`], with connections made from `local` (any of `127.0.0.0/8` is this
    /// machine on Linux), so that a test can be several client addresses.
    pub fn from_address(base: &str, token: Option<&str>, local: std::net::IpAddr) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(local)
            .build()
            .expect("building an HTTP client");
        Client {
            http,
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    /// A request to `path` (which starts with `/`), with the bearer token if any.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request and reads the whole answer. Panics on a transport error.
    pub fn send(&self, request: RequestBuilder) -> Reply {
        self.try_send(request)
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Sends a request and reads the whole answer, or returns the transport error.
    pub fn try_send(&self, request: RequestBuilder) -> reqwest::Result<Reply> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes()?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path))
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, body.to_string().into_bytes())
    }

    /// `POST path` with these exact bytes as the body.
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path))
    }

    /// Pulls `/v1/data/{app}/~/{collection}?since={since}` plus `extra` query text.
    pub fn pull(&self, app: &str, collection: &str, since: u64, extra: &str) -> Reply {
        self.get(&format!(
            "/v1/data/{app}/~/{collection}?since={since}{extra}"
        ))
    }

    /// Pushes a batch to `/v1/data/{app}/~/{collection}`.
    pub fn push(&self, app: &str, collection: &str, body: &Value) -> Reply {
        self.post_json(&format!("/v1/data/{app}/~/{collection}"), body)
    }

    /// Opens the event stream at `path` (e.g. `/v1/data/notes/~/todos/events?since=0`), with
    /// `Last-Event-ID` if given. Panics (with the answer) if the status is not 200.
    pub fn events(&self, path: &str, last_event_id: Option<u64>) -> EventStream {
        let last = last_event_id.map(|id| id.to_string());
        let extra: Vec<(&str, &str)> = last
            .as_deref()
            .map(|id| ("Last-Event-ID", id))
            .into_iter()
            .collect();
        self.try_events(path, &extra).unwrap_or_else(|reply| {
            panic!(
                "opening {path}: status {} instead of 200: {}",
                reply.status,
                reply.text()
            )
        })
    }

    /// Opens the event stream at `path` with `extra` headers; the answer if it is not 200.
    pub fn try_events(
        &self,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<EventStream, Box<Reply>> {
        EventStream::open(&self.base, path, self.token.as_deref(), extra)
    }

    /// `GET /metrics`, parsed and checked (see [`Metrics::parse`]). Panics if it is not 200 or
    /// not well-formed Prometheus text.
    pub fn metrics(&self) -> Metrics {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics: {}", reply.text());
        Metrics::parse(&reply.text()).unwrap_or_else(|e| {
            panic!(
                "/metrics is not valid Prometheus text: {e}\n{}",
                reply.text()
            )
        })
    }
}

/// A whole HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. Panics if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}); status {}: {}",
                self.status,
                self.text()
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is text").to_string())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self.json()
    }

    /// Asserts an error answer of the contract's shape: this status, a JSON content type,
    /// `error` equal to `code` and a non-empty `message`. Returns the body.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error answers are JSON, got content-type {content_type:?}: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["error"], code, "unexpected error code: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error carries a message for people: {body}"
        );
        body
    }

    /// The `(index, field)` pairs of a 400's `details`, in order.
    pub fn detail_fields(&self) -> Vec<(Option<u64>, String)> {
        self.json()["details"]
            .as_array()
            .unwrap_or_else(|| panic!("no details in {}", self.text()))
            .iter()
            .map(|d| {
                (
                    d["index"].as_u64(),
                    d["field"].as_str().expect("field is text").to_string(),
                )
            })
            .collect()
    }
}

/// Follows the change events of `stream` until the one with seq `last`, as a client does:
/// when the server ends the stream (or it cannot be opened again yet), it reconnects to
/// `path` with `Last-Event-ID` set to the last seq it saw. Returns the events in the order
/// they came and how many reconnects it took. Panics on any event other than `change` and
/// `error` (the server's notice before it ends a stream), or if `last` has not come within
/// `timeout`.
pub fn follow_changes(
    client: &Client,
    path: &str,
    mut stream: EventStream,
    last: u64,
    timeout: Duration,
) -> (Vec<SseEvent>, usize) {
    let deadline = Instant::now() + timeout;
    let mut events: Vec<SseEvent> = Vec::new();
    let mut reconnects = 0;
    while events.last().map(SseEvent::seq) != Some(last) {
        assert!(
            Instant::now() < deadline,
            "seq {last} did not arrive within {timeout:?}; got {} events up to {:?}",
            events.len(),
            events.last().map(SseEvent::seq)
        );
        match stream.next_within(Duration::from_millis(500)) {
            Some(event) if event.event == "change" => events.push(event),
            // The server says why it is about to end the stream; the reconnect follows.
            Some(event) if event.event == "error" => {
                eprintln!("the server ends the stream: {}", event.data)
            }
            Some(event) => panic!("unexpected event {event:?}"),
            None if stream.closed().is_some() => {
                let resume = events.last().map_or(0, SseEvent::seq).to_string();
                match client.try_events(path, &[("Last-Event-ID", &resume)]) {
                    Ok(again) => {
                        stream = again;
                        reconnects += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            None => {}
        }
    }
    (events, reconnects)
}

/// Every object of a collection, following `more` from `since=0`. Returns the objects and
/// the last page (for its `collection_id`, `until` and `horizon`).
pub fn pull_all(client: &Client, app: &str, collection: &str) -> (Vec<Value>, Value) {
    let mut objects = Vec::new();
    let mut since = 0;
    loop {
        let page = client.pull(app, collection, since, "").expect(200);
        objects.extend(
            page["objects"]
                .as_array()
                .expect("objects is an array")
                .iter()
                .cloned(),
        );
        let until = page["until"].as_u64().expect("until is a number");
        if page["more"] != true {
            return (objects, page);
        }
        assert!(
            until > since,
            "a page with more: true must move the cursor: {page}"
        );
        since = until;
    }
}

/// Everything a client can see of one collection: the full pull from 0 and the listing of the
/// app. Two equal snapshots mean nothing was written in between.
pub fn snapshot(client: &Client, app: &str, collection: &str) -> (Value, Value) {
    let pull = client.pull(app, collection, 0, "").expect(200);
    let list = client.get(&format!("/v1/data/{app}/~")).expect(200);
    (pull, list)
}

/// The fields of an object that the core contract defines: `id`, `type`, `seq`, `deleted`,
/// `data`, `expires` and `hash`. Extensions may add others (sharing adds `author`); tests of
/// the core compare only these, exactly.
pub fn core_fields(object: &Value) -> Value {
    const CORE: [&str; 7] = ["id", "type", "seq", "deleted", "data", "expires", "hash"];
    match object {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| CORE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// [`core_fields`] of every object in a list.
pub fn core_objects(objects: &Value) -> Value {
    match objects {
        Value::Array(list) => Value::Array(list.iter().map(core_fields).collect()),
        other => other.clone(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// Polls `probe` every 25 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}
