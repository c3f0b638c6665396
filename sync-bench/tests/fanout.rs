//! The fan-out benchmark's smoke mode (issue #7) against the real `sync-server` binary on
//! `127.0.0.1:0`: 20 live-event subscribers, 2 writes, every delivery checked, nothing timed.

use tidemark_tests::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_smoke_delivers_every_write_to_every_subscriber() {
    let server = Server::start(&[]);
    let checked = sync_bench::workload::fanout::smoke(server.url(), "bench")
        .await
        .expect("the fan-out smoke run passes");
    assert_eq!(checked.len(), 2, "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_smoke_fails_when_the_streams_are_refused() {
    // An invalid app name: every push and every stream is refused, so the run must fail.
    let server = Server::start(&[]);
    let outcome = sync_bench::workload::fanout::smoke(server.url(), "Not.Valid").await;
    assert!(
        outcome.is_err(),
        "the fan-out smoke run passed against 400s"
    );
}
