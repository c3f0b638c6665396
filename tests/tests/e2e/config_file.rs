//! `--config file.toml`: the server takes its settings from the file (keys are flag names,
//! with `-` or `_`), a flag wins over the file, and a file it cannot use stops it at start-up
//! with a message that names the problem. Both backends, except the PostgreSQL settings test,
//! which always needs PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tidemark_tests::{pg, run_to_exit, server_command, wait_until, Backend, Schema, Server};

/// Writes `text` to a file in a temporary directory that lives as long as the returned guard.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("tidemark.toml");
    std::fs::write(&path, text).expect("writing the config file");
    (dir, path)
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

const FILE: &str = r#"# A deployment's settings.
max-batch = 7
max_pull_limit = 5
poll-time = "7s"
cors-origin = ["http://a.example", "http://b.example"]
log-json = true
"#;

#[test]
fn the_server_uses_the_settings_of_its_config_file() {
    let (_dir, path) = config_file(FILE);
    let server = Server::start(&["--config", path_arg(&path)]);
    let info = server.anonymous().get("/v1/info").expect(200);
    assert_eq!(info["limits"]["max_batch"], 7, "{info}");
    assert_eq!(info["limits"]["max_pull_limit"], 5, "{info}");

    let alice = server.client("alice");
    let eight: Vec<Value> = (0..8)
        .map(|i| json!({"id": format!("o{i}"), "data": i}))
        .collect();
    alice
        .push("notes", "todos", &json!({ "objects": eight }))
        .expect_error(413, "too_large");
    alice
        .push("notes", "todos", &json!({ "objects": eight[..7] }))
        .expect(200);
    let page = alice.pull("notes", "todos", 0, "");
    assert_eq!(
        page.expect(200)["objects"].as_array().map(Vec::len),
        Some(5)
    );
    assert_eq!(page.header("x-sync-poll-time").as_deref(), Some("7"));

    // Both origins of the list are allowed; others are not.
    for (origin, allowed) in [
        ("http://a.example", true),
        ("http://b.example", true),
        ("http://c.example", false),
    ] {
        let reply = alice.send(
            alice
                .request(reqwest::Method::GET, "/v1/data/notes/~/todos?since=0")
                .header("origin", origin),
        );
        assert_eq!(
            reply.header("access-control-allow-origin").as_deref() == Some(origin),
            allowed,
            "{origin}: {:?}",
            reply.headers
        );
    }

    // log-json = true: every log line is a JSON object.
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the server logged nothing");
    for line in lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}

#[test]
fn a_flag_wins_over_the_config_file() {
    let (_dir, path) = config_file(FILE);
    let server = Server::start(&[
        "--config",
        path_arg(&path),
        "--max-batch",
        "9",
        "--poll-time",
        "3s",
    ]);
    let info = server.anonymous().get("/v1/info").expect(200);
    assert_eq!(info["limits"]["max_batch"], 9, "the flag wins: {info}");
    assert_eq!(
        info["limits"]["max_pull_limit"], 5,
        "the file still fills in the rest: {info}"
    );
    let alice = server.client("alice");
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"id": format!("o{i}"), "data": i}))
        .collect();
    alice
        .push("notes", "todos", &json!({ "objects": nine }))
        .expect(200);
    let page = alice.pull("notes", "todos", 0, "");
    assert_eq!(page.header("x-sync-poll-time").as_deref(), Some("3"));
}

#[test]
fn a_config_file_the_server_cannot_use_stops_it_with_a_message_naming_the_problem() {
    let cases = [
        ("no_such_setting = 1\n", "no_such_setting"),
        ("max-batch = \"many\"\n", "max-batch"),
        ("max-batch = 7\nmax-batch = 8\n", "max-batch"),
        ("this is not toml\n", "tidemark.toml"),
    ];
    for (text, named) in cases {
        let (_dir, path) = config_file(text);
        let args = ["--listen", "127.0.0.1:0", "--config", path_arg(&path)];
        let (status, log) = run_to_exit(&args, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("the server started with the config file {text:?}"));
        assert!(!status.success(), "{text:?}: {status}");
        assert!(
            log.contains(named),
            "{text:?}: the error names {named:?}: {log}"
        );
    }
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--config",
        "/nonexistent/tidemark.toml",
    ];
    let (status, log) = run_to_exit(&args, Duration::from_secs(15)).expect("the server stops");
    assert!(!status.success());
    assert!(log.contains("/nonexistent/tidemark.toml"), "{log}");
}

#[test]
fn a_config_file_can_point_nodes_at_postgresql() {
    let schema = Schema::new();
    let (_dir, path) = config_file(&format!(
        "database = \"{}\"\ndatabase-schema = \"{}\"\ndatabase_pool = 3\n",
        pg::database_url(),
        schema.name()
    ));
    // The harness gives this one a SQLite --data directory; the file's database wins over it.
    let from_file = Server::start_on(Backend::Sqlite, &["--config", path_arg(&path)]);
    // The server logs where it keeps its data just after it prints its address.
    let storage = format!("postgresql schema {}", schema.name());
    wait_until(Duration::from_secs(5), "the storage to be logged", || {
        from_file.log().contains(&storage).then_some(())
    });
    from_file
        .client("alice")
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    // A node configured by flags on the same schema sees the write.
    let from_flags = Server::start_in_schema(schema, &[]);
    let page = from_flags
        .client("alice")
        .pull("notes", "todos", 0, "")
        .expect(200);
    assert_eq!(page["objects"][0]["id"], "a");
    let pool = from_file.anonymous().metrics();
    let size = pool.sum("tidemark_db_pool_connections", &[]);
    assert!(
        (1.0..=3.0).contains(&size),
        "database_pool = 3 from the file: {size}"
    );
}

#[test]
fn help_and_version_exit_cleanly_and_a_mistyped_flag_is_a_usage_error() {
    let run = |arg: &str| {
        server_command()
            .arg(arg)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("running sync-server")
    };
    let help = run("--help");
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.status.code(), Some(0), "--help: {help:?}");
    assert!(stdout.contains("Usage: sync-server") && stdout.contains("--listen"));
    assert!(help.stderr.is_empty(), "--help: {help:?}");

    let version = run("--version");
    assert_eq!(version.status.code(), Some(0), "--version: {version:?}");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("sync-server "));

    let typo = run("--lisen");
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "--lisen: {typo:?}");
    assert!(
        stderr.contains("--lisen") && !stderr.contains("Stack backtrace"),
        "{stderr}"
    );
}
