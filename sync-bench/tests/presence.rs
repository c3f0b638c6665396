//! The presence benchmark's smoke mode (issue #10) against the real `sync-server` binary on
//! `127.0.0.1:0`: 2 channels × 3 participants × 1 s, every answer checked, nothing timed.

use tidemark_tests::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_smoke_passes_against_the_real_server() {
    let server = Server::start(&[]);
    let checked = sync_bench::workload::presence::smoke(server.url(), "bench")
        .await
        .expect("the presence smoke run passes");
    assert_eq!(checked.len(), 3, "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_smoke_fails_when_the_answers_are_wrong() {
    // An invalid app name: every write is refused with a 400, so the check must fail.
    let server = Server::start(&[]);
    let outcome = sync_bench::workload::presence::smoke(server.url(), "Not.Valid").await;
    assert!(
        outcome.is_err(),
        "the presence smoke run passed against 400s"
    );
}
