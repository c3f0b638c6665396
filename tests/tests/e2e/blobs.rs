//! Blobs: `PUT`/`GET …/{collection}/blobs/{sha256}`: the hash check, Range, caching headers,
//! the size limit, access rules, the owner's `blob_bytes` (in `/v1/info`), and collection of unreferenced
//! blobs after the retention window.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sync_core::hash::sha256_hex;
use tidemark_tests::{Client, Reply, Server};

const APP: &str = "files";

/// Bytes that differ at every offset, so a wrong range cannot pass by accident.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn blob_path(collection: &str, name: &str) -> String {
    format!("/v1/data/{APP}/~/{collection}/blobs/{name}")
}

fn put(client: &Client, collection: &str, name: &str, body: Vec<u8>) -> Reply {
    client.send(
        client
            .request(Method::PUT, &blob_path(collection, name))
            .header("content-type", "application/octet-stream")
            .body(body),
    )
}

fn get(client: &Client, collection: &str, name: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client.request(Method::GET, &blob_path(collection, name));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    client.send(request)
}

fn blob_bytes(client: &Client) -> u64 {
    client.get("/v1/info").expect(200)["blob_bytes"]
        .as_u64()
        .expect("/v1/info carries the caller's blob_bytes")
}

#[test]
fn an_upload_is_served_with_immutable_caching_ranges_and_304() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let bytes = payload(5000, 7);
    let name = sha256_hex(&bytes);
    let created = put(&alice, "scans", &name, bytes.clone()).expect(201);
    assert_eq!(created, json!({"sha256": name, "size": 5000}));
    // The same upload again changes nothing.
    put(&alice, "scans", &name, bytes.clone()).expect(200);
    assert_eq!(blob_bytes(&alice), 5000, "a blob is counted once");

    let whole = get(&alice, "scans", &name, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    assert_eq!(
        whole.header("etag").as_deref(),
        Some(&*format!("\"{name}\""))
    );
    assert_eq!(
        whole.header("cache-control").as_deref(),
        Some("private, max-age=31536000, immutable")
    );
    assert_eq!(whole.header("accept-ranges").as_deref(), Some("bytes"));

    let tag = format!("\"{name}\"");
    let cached = get(&alice, "scans", &name, &[("if-none-match", &tag)]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let part = get(&alice, "scans", &name, &[("range", "bytes=1000-1999")]);
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, bytes[1000..2000]);
    assert_eq!(
        part.header("content-range").as_deref(),
        Some("bytes 1000-1999/5000")
    );
    let tail = get(&alice, "scans", &name, &[("range", "bytes=-10")]);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, bytes[4990..]);

    let outside = get(&alice, "scans", &name, &[("range", "bytes=5000-")]);
    outside.expect_error(416, "invalid_request");
    assert_eq!(
        outside.header("content-range").as_deref(),
        Some("bytes */5000")
    );

    // Another collection does not hold it.
    get(&alice, "other", &name, &[]).expect_error(404, "not_found");
}

#[test]
fn an_upload_with_the_wrong_hash_is_refused_and_nothing_is_stored() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let bytes = payload(300, 1);
    let claimed = sha256_hex(b"something else");
    let reply = put(&alice, "scans", &claimed, bytes.clone());
    reply.expect_error(400, "invalid_request");
    assert_eq!(reply.detail_fields(), [(None, "sha256".to_string())]);
    get(&alice, "scans", &claimed, &[]).expect_error(404, "not_found");
    get(&alice, "scans", &sha256_hex(&bytes), &[]).expect_error(404, "not_found");
    assert_eq!(blob_bytes(&alice), 0);

    // A name that is not a SHA-256 at all.
    put(&alice, "scans", "ABC", bytes).expect_error(400, "invalid_request");
}

#[test]
fn a_blob_over_the_limit_gets_413_and_the_limit_is_not_the_json_body_limit() {
    let server = Server::start(&["--max-body-bytes", "4096", "--max-blob-bytes", "65536"]);
    let alice = server.client("alice");
    // Larger than a JSON body may be, within the blob limit.
    let fits = payload(60_000, 3);
    put(&alice, "scans", &sha256_hex(&fits), fits.clone()).expect(201);
    let over = payload(70_000, 4);
    put(&alice, "scans", &sha256_hex(&over), over.clone()).expect_error(413, "too_large");
    get(&alice, "scans", &sha256_hex(&over), &[]).expect_error(404, "not_found");
    assert_eq!(blob_bytes(&alice), 60_000);
    assert_eq!(get(&alice, "scans", &sha256_hex(&fits), &[]).body, fits);
}

#[test]
fn blobs_follow_the_collection_acl() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let bytes = payload(100, 9);
    let name = sha256_hex(&bytes);
    put(&alice, "scans", &name, bytes.clone()).expect(201);
    let path = format!("/v1/data/{APP}/alice/scans/blobs/{name}");
    let bob = server.client("bob");
    bob.get(&path).expect_error(404, "not_found");
    alice
        .send(
            alice
                .request(Method::PUT, &format!("/v1/data/{APP}/~/scans/acl"))
                .json(&json!({"readers": ["bob"]})),
        )
        .expect(200);
    assert_eq!(bob.get(&path).body, bytes);
    let other = payload(10, 2);
    let upload = bob.send(
        bob.request(
            Method::PUT,
            &format!("/v1/data/{APP}/alice/scans/blobs/{}", sha256_hex(&other)),
        )
        .body(other),
    );
    upload.expect_error(403, "forbidden");
    assert_eq!(blob_bytes(&alice), 100, "the refused upload stored nothing");
    server
        .anonymous()
        .get(&path)
        .expect_error(401, "unauthorized");
}

#[test]
fn unreferenced_blobs_are_collected_after_the_retention_window() {
    let server = Server::start(&["--blob-retention", "1s", "--sweep-interval", "100ms"]);
    let alice = server.client("alice");
    let [a, b, c] = [payload(10, 1), payload(20, 2), payload(30, 3)];
    let [ha, hb, hc] = [sha256_hex(&a), sha256_hex(&b), sha256_hex(&c)];
    for (name, bytes) in [(&ha, &a), (&hb, &b), (&hc, &c)] {
        put(&alice, "scans", name, bytes.clone()).expect(201);
    }
    alice
        .push(
            APP,
            "scans",
            &json!({"objects": [
                {"id": "one", "data": {"name": "one.jp2", "blobs": [ha]}},
                {"id": "two", "data": {"name": "two.jp2", "blobs": [hb, "not-a-hash"]}},
            ]}),
        )
        .expect(200);
    assert_eq!(blob_bytes(&alice), 60);
    // c is referenced by nothing: it goes once the window has passed.
    tidemark_tests::wait_until(
        Duration::from_secs(20),
        "the unreferenced blob to go",
        || (get(&alice, "scans", &hc, &[]).status == 404).then_some(()),
    );
    assert_eq!(get(&alice, "scans", &ha, &[]).body, a);
    assert_eq!(get(&alice, "scans", &hb, &[]).body, b);
    assert_eq!(blob_bytes(&alice), 30);

    // Deleting the object that refers to b lets b go too; a stays.
    alice
        .push(
            APP,
            "scans",
            &json!({"objects": [{"id": "two", "deleted": true}]}),
        )
        .expect(200);
    tidemark_tests::wait_until(
        Duration::from_secs(20),
        "the dereferenced blob to go",
        || (get(&alice, "scans", &hb, &[]).status == 404).then_some(()),
    );
    assert_eq!(get(&alice, "scans", &ha, &[]).body, a);
    assert_eq!(blob_bytes(&alice), 10);
}

#[test]
fn an_acknowledged_upload_survives_kill_9() {
    let mut server = Server::start(&[]);
    let bytes = payload(100_000, 5);
    let name = sha256_hex(&bytes);
    put(&server.client("alice"), "scans", &name, bytes.clone()).expect(201);
    server.kill9();
    server.restart();
    let alice = server.client("alice");
    assert_eq!(get(&alice, "scans", &name, &[]).body, bytes);
    assert_eq!(blob_bytes(&alice), 100_000);
}
