//! The presence benchmark's smoke mode (issue #10) against the real `sync-server` binary on
//! `127.0.0.1:0`: 2 channels × 3 participants × 1 s, every answer checked, nothing timed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// `<target dir>/debug/sync-server`, built once if it is missing (`SYNC_SERVER_BIN` names
/// another one).
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(binary) = std::env::var_os("SYNC_SERVER_BIN") {
            return PathBuf::from(binary);
        }
        // This test runs as <target dir>/debug/deps/presence-<hash>.
        let exe = std::env::current_exe().expect("the test's own path");
        let debug = exe
            .parent()
            .and_then(Path::parent)
            .expect("<target dir>/debug");
        let binary = debug.join(format!("sync-server{}", std::env::consts::EXE_SUFFIX));
        if !binary.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "sync-server", "--bin", "sync-server"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building sync-server failed");
        }
        assert!(binary.exists(), "no server binary at {}", binary.display());
        binary
    })
}

/// A running server with its own data directory; killed when dropped.
struct Server {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sync-server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the server's first line");
        let url = line
            .trim()
            .strip_prefix("tidemark listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        Server {
            child,
            url,
            _data: data,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_smoke_passes_against_the_real_server() {
    let server = Server::start();
    let checked = sync_bench::workload::presence::smoke(&server.url, "bench")
        .await
        .expect("the presence smoke run passes");
    assert_eq!(checked.len(), 3, "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_smoke_fails_when_the_answers_are_wrong() {
    // An invalid app name: every write is refused with a 400, so the check must fail.
    let server = Server::start();
    let outcome = sync_bench::workload::presence::smoke(&server.url, "Not.Valid").await;
    assert!(
        outcome.is_err(),
        "the presence smoke run passed against 400s"
    );
}
