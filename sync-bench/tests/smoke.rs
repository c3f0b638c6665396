//! The smoke workload against the real (debug) `sync-server` binary on `127.0.0.1:0`.
//!
//! Nothing here asserts on a timing: these tests check that the load generator speaks
//! Tidemark's dialect correctly and that every workload still runs to the end.

use clap::Parser;
use sync_bench::params::{Params, Target};
use tidemark_tests::Server;

/// The load generator's target options, aimed at `server`.
fn target(server: &Server, extra: &[&str]) -> Target {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        target: Target,
    }
    let mut args = vec!["t", "--url", server.url()];
    args.extend_from_slice(extra);
    Args::parse_from(args).target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_passes_against_the_real_server() {
    let server = Server::start(&[]);
    let target = target(&server, &[]);
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
    let server = Server::start(&[]);
    let target = target(&server, &["--dialect", "kinto"]);
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
    let server = Server::start(&[]);
    let target = target(&server, &[]);
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
        "--growth-pause-secs=0.05",
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
