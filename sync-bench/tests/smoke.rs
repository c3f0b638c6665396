//! The smoke workload against the real (debug) `sync-server` binary on `127.0.0.1:0`.
//!
//! Nothing here asserts on a timing: these tests check that the load generator speaks
//! Tidemark's dialect correctly and that every workload still runs to the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use clap::Parser;
use sync_bench::params::{Params, Target};

/// `<target dir>/debug/sync-server`, built once if it is missing.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test runs as <target dir>/debug/deps/smoke-<hash>.
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

    fn target(&self, extra: &[&str]) -> Target {
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            target: Target,
        }
        let mut args = vec!["t", "--url", &self.url];
        args.extend_from_slice(extra);
        Args::parse_from(args).target
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_passes_against_the_real_server() {
    let server = Server::start();
    let target = server.target(&[]);
    sync_bench::wait_ready(&target, 30)
        .await
        .expect("the server answers");
    let checked = sync_bench::smoke::run(&target.dialect(), &target.http(), "smoke")
        .await
        .expect("the smoke workload passes");
    assert_eq!(checked.len(), 6, "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_fails_when_the_answers_are_wrong() {
    // Kinto's dialect against Tidemark: every answer is wrong, so the smoke run must fail.
    let server = Server::start();
    let target = server.target(&["--dialect", "kinto"]);
    let outcome = sync_bench::smoke::run(&target.dialect(), &target.http(), "smoke").await;
    assert!(
        outcome.is_err(),
        "the smoke workload passed against the wrong dialect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_to_the_end_on_tiny_sizes() {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        params: Params,
    }
    let server = Server::start();
    let target = server.target(&[]);
    let params = Args::parse_from([
        "t",
        "--reps=1",
        "--record-bytes=200",
        "--batch=10",
        "--push-clients=1,3",
        "--push-records=60",
        "--pull-records=250",
        "--pull-page=100",
        "--rate=200",
        "--latency-secs=0.3",
        "--latency-warmup-secs=0.1",
        "--latency-collections=3",
        "--latency-push=2",
        "--latency-pull-limit=5",
        "--growth-start=100",
        "--growth-step=150",
        "--growth-max=400",
        "--growth-samples=2",
        "--load-batch=50",
        "--load-clients=2",
    ])
    .params;
    let results = sync_bench::run(&target, params, "tiny", "tiny".into())
        .await
        .expect("the run completes");

    assert_eq!(
        results.push.iter().map(|p| p.clients).collect::<Vec<_>>(),
        [1, 3]
    );
    for push in &results.push {
        assert!(push.runs.iter().all(|r| r.records > 0));
    }
    let pull = results.pull.expect("pull results");
    assert_eq!(pull.runs[0].pages, 3, "250 records in pages of 100");
    let latency = results.latency.expect("latency results");
    assert_eq!(latency.errors, 0);
    assert_eq!(latency.runs[0].requests, 60, "0.3 s at 200 requests/s");
    let growth = results.growth.expect("growth results");
    assert_eq!(
        growth.points.iter().map(|p| p.size).collect::<Vec<_>>(),
        [100, 150, 300, 400]
    );
    assert!(!growth.stopped_by_budget);
}
