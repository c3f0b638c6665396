//! `tidemark fetch`, the real binary, against real Tidemark servers (the catalog) and a file
//! server in the test process that counts requests: an interrupted download resumes with
//! `Range` and does not fetch completed files again; completion is by hash, not URL; a
//! corrupt transfer is fetched again, and a file whose bytes never match is never put in
//! place; resolving falls back to the next repository.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tidemark_tests::{cli_binary, free_ports, wait_until, FileServer, Server};

/// How long a download that should progress may take to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// `n` bytes of a pattern that differs by `seed`.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes the catalog entry `{identifier}/1/1` listing `files` on `server`.
fn catalog(server: &Server, identifier: &str, files: &[&Value]) {
    let data = json!({"identifier": identifier, "file_version": 1, "application_version": 1,
                      "files": files});
    server
        .client("catalog")
        .push(
            "tidemark",
            "bundles",
            &json!({"objects": [{"id": format!("{identifier}/1/1"), "data": data}]}),
        )
        .expect(200);
}

/// `tidemark fetch` for `{identifier}/1/1` into `dest`, through `repos`, with a clean
/// environment.
fn fetch_command(repos: &[&str], identifier: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(cli_binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIDEMARK_") {
            command.env_remove(name);
        }
    }
    command.arg("fetch");
    for repo in repos {
        command.args(["--repo", repo]);
    }
    command
        .args([
            "--identifier",
            identifier,
            "--file-version",
            "1",
            "--timeout",
            "10s",
        ])
        .arg("--dest")
        .arg(dest)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn fetch(repos: &[&str], identifier: &str, dest: &Path, extra: &[&str]) -> (bool, String) {
    let Output { status, stderr, .. } = fetch_command(repos, identifier, dest, extra)
        .output()
        .expect("running tidemark fetch");
    (
        status.success(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[test]
fn an_interrupted_download_resumes_and_completed_files_are_not_fetched_again() {
    let files = FileServer::start();
    let contents = [
        ("a.bin", bytes(64 * 1024, 1)),
        ("b.bin", bytes(64 * 1024, 2)),
        ("slow.bin", bytes(256 * 1024, 3)),
    ];
    let entries: Vec<Value> = contents.iter().map(|(n, b)| files.put(n, b)).collect();
    files.trickle("slow.bin", true);
    let server = Server::start(&[]);
    catalog(&server, "bundle", &entries.iter().collect::<Vec<_>>());
    let dest = tempfile::tempdir().unwrap();
    let part = dest.path().join("slow.bin.part");

    // Interrupted: killed once the small files are in place and the slow one is underway.
    let mut child = fetch_command(&[server.url()], "bundle", dest.path(), &[])
        .spawn()
        .expect("starting tidemark fetch");
    wait_until(WAIT, "a.bin and b.bin in place, slow.bin underway", || {
        let done = dest.path().join("a.bin").exists() && dest.path().join("b.bin").exists();
        (done && len(&part).is_some_and(|n| n >= 16 * 1024)).then_some(())
    });
    child.kill().expect("killing tidemark fetch");
    child.wait().unwrap();
    let cut = len(&part).expect("the .part file survives the kill");
    assert!(cut < 256 * 1024, "the download was not interrupted");
    assert!(!dest.path().join("slow.bin").exists());

    // Resumed: only the rest of slow.bin is asked for.
    files.trickle("slow.bin", false);
    let (ok, log) = fetch(&[server.url()], "bundle", dest.path(), &[]);
    assert!(ok, "{log}");
    for (name, content) in &contents {
        assert_eq!(
            &std::fs::read(dest.path().join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    assert!(!part.exists());
    assert_eq!(files.requests("a.bin").len(), 1, "a.bin was fetched again");
    assert_eq!(files.requests("b.bin").len(), 1, "b.bin was fetched again");
    let slow = files.requests("slow.bin");
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert_eq!(slow[1].range, Some(format!("bytes={cut}-")));

    // Done is by hash: the same bytes resolved through another catalog, at other URLs, are
    // not downloaded again.
    let mirror = FileServer::start();
    let moved: Vec<Value> = contents.iter().map(|(n, b)| mirror.put(n, b)).collect();
    let other = Server::start(&[]);
    catalog(&other, "bundle", &moved.iter().collect::<Vec<_>>());
    let (ok, log) = fetch(&[other.url()], "bundle", dest.path(), &[]);
    assert!(ok, "{log}");
    for (name, _) in &contents {
        assert!(
            mirror.requests(name).is_empty(),
            "{name} was downloaded again"
        );
    }
}

#[test]
fn a_corrupt_transfer_is_fetched_again_and_wrong_bytes_never_land_in_place() {
    let files = FileServer::start();
    let flaky = files.put("flaky.bin", &bytes(10_000, 4));
    let good = files.put("good.bin", &bytes(10_000, 5));
    let mut bad = files.put("bad.bin", &bytes(10_000, 6));
    // The catalog promises other bytes of the same length.
    bad["sha256"] = json!(sync_core::hash::sha256_hex(&bytes(10_000, 7)));
    let server = Server::start(&[]);
    catalog(&server, "flaky", &[&flaky]);
    catalog(&server, "broken", &[&good, &bad]);

    // One corrupt answer: the second attempt gets it right.
    files.corrupt_next("flaky.bin");
    let dest = tempfile::tempdir().unwrap();
    let (ok, log) = fetch(&[server.url()], "flaky", dest.path(), &[]);
    assert!(ok, "{log}");
    assert!(log.contains("sha256 mismatch"), "{log}");
    assert_eq!(files.requests("flaky.bin").len(), 2);
    assert_eq!(
        std::fs::read(dest.path().join("flaky.bin")).unwrap(),
        bytes(10_000, 4)
    );

    // Always wrong: the fetch fails, says why, and leaves neither the file nor its .part.
    let dest = tempfile::tempdir().unwrap();
    let (ok, log) = fetch(&[server.url()], "broken", dest.path(), &["--retries", "1"]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("bad.bin") && log.contains("sha256 mismatch"),
        "{log}"
    );
    assert_eq!(files.requests("bad.bin").len(), 2, "one try and one retry");
    assert!(!dest.path().join("bad.bin").exists());
    assert!(!dest.path().join("bad.bin.part").exists());
    assert_eq!(
        std::fs::read(dest.path().join("good.bin")).unwrap(),
        bytes(10_000, 5)
    );
}

#[test]
fn resolving_falls_back_to_the_next_repository() {
    let files = FileServer::start();
    let file = files.put("f.bin", &bytes(1000, 8));
    let down = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let empty = Server::start(&[]);
    let knows = Server::start(&[]);
    catalog(&knows, "bundle", &[&file]);

    let dest = tempfile::tempdir().unwrap();
    let (ok, log) = fetch(
        &[&down, empty.url(), knows.url()],
        "bundle",
        dest.path(),
        &[],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("resolved by {}", knows.url())),
        "{log}"
    );
    assert_eq!(
        std::fs::read(dest.path().join("f.bin")).unwrap(),
        bytes(1000, 8)
    );

    // Nobody knows it: a clear error naming what each repository said.
    let (ok, log) = fetch(&[&down, empty.url()], "bundle", dest.path(), &[]);
    assert!(!ok);
    assert!(
        log.contains("unreachable") && log.contains("does not know it"),
        "{log}"
    );
}
