//! `GET /v1/resolve` across OpenSpace's example graph of three real servers on loopback:
//! `data` ↔ `data2`, `data` → `data3`, `data2` → `data3`, `data3` → `data2`. Each server has
//! its own catalog entry; every server resolves every one, in both formats; an unknown triple
//! ends in a 404 after a bounded number of peer requests (counted by the servers' own
//! Prometheus counters), and the negative cache stops the next search.

use std::time::Duration;

use serde_json::{json, Value};
use tidemark_tests::{free_ports, Client, Reply, Server};

/// The peer requests of one search can be at most one per edge of the graph.
const EDGES: f64 = 5.0;
/// A search must end well within this (each level waits at most the peer timeout, 5 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The three servers, by OpenSpace's names.
struct Graph {
    data: Server,
    data2: Server,
    data3: Server,
}

impl Graph {
    /// Starts the graph, each server with `extra` flags, and writes each one's catalog entry.
    fn start(extra: &[&str]) -> Graph {
        let ports = free_ports(3);
        let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let start = |me: usize, peers: &[usize]| {
            let listen = format!("127.0.0.1:{}", ports[me]);
            let mut args = vec!["--listen".to_string(), listen];
            for &peer in peers {
                args.extend(["--resolve-peer".to_string(), url(peer)]);
            }
            args.extend(["--resolve-peer-timeout", "5s"].map(String::from));
            args.extend(extra.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start(&args)
        };
        let graph = Graph {
            data: start(0, &[1, 2]),
            data2: start(1, &[0, 2]),
            data3: start(2, &[1]),
        };
        for (server, (identifier, version)) in graph.all().into_iter().zip(KNOWN) {
            write_entry(server, identifier, version, &files_of(identifier));
        }
        graph
    }

    fn all(&self) -> [&Server; 3] {
        [&self.data, &self.data2, &self.data3]
    }

    /// Peer requests sent so far, by all three servers together.
    fn peer_requests(&self) -> f64 {
        self.all().iter().map(|s| peer_requests(s)).sum()
    }
}

/// What each server's catalog holds: `data` the first, `data2` the second, `data3` the third.
const KNOWN: [(&str, u32); 3] = [("earth_textures", 1), ("mars_dem", 2), ("moon_maps", 7)];

fn files_of(identifier: &str) -> Value {
    json!([
        {"url": format!("http://files.example/{identifier}/a.bin"), "size": 10, "sha256": "a".repeat(64)},
        {"url": format!("http://files.example/{identifier}/b.bin"), "size": 20, "sha256": "b".repeat(64)},
    ])
}

/// Writes a catalog entry as the catalog's owner (dev auth: the token is the user).
fn write_entry(server: &Server, identifier: &str, version: u32, files: &Value) {
    let id = format!("{identifier}/{version}/1");
    let data = json!({"identifier": identifier, "file_version": version,
                      "application_version": 1, "files": files});
    server
        .client("catalog")
        .push(
            "tidemark",
            "bundles",
            &json!({"objects": [{"id": id, "type": "bundle", "data": data}]}),
        )
        .expect(200);
}

fn client(server: &Server) -> Client {
    Client::with_timeout(server.url(), None, CLIENT_TIMEOUT)
}

fn query(identifier: &str, version: u32) -> String {
    format!("/v1/resolve?identifier={identifier}&file_version={version}&application_version=1")
}

fn resolve(server: &Server, identifier: &str, version: u32, headers: &[(&str, &str)]) -> Reply {
    let client = client(server);
    let mut request = client.request(reqwest::Method::GET, &query(identifier, version));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client.send(request)
}

fn peer_requests(server: &Server) -> f64 {
    server
        .anonymous()
        .metrics()
        .sum("tidemark_resolve_peer_requests_total", &[])
}

#[test]
fn every_server_resolves_every_known_triple_in_both_formats() {
    let graph = Graph::start(&[]);
    for server in graph.all() {
        for (identifier, version) in KNOWN {
            let files = files_of(identifier);
            let list = resolve(server, identifier, version, &[]);
            assert_eq!(
                list.status,
                200,
                "{identifier} at {}: {}",
                server.url(),
                list.text()
            );
            assert_eq!(
                list.header("content-type").as_deref(),
                Some("text/uri-list; charset=utf-8")
            );
            let expected: String = files
                .as_array()
                .unwrap()
                .iter()
                .map(|f| format!("{}\r\n", f["url"].as_str().unwrap()))
                .collect();
            assert_eq!(list.text(), expected);
            // OpenSpace reads the list with `>>`, word by word: the same URLs, in order.
            let text = list.text();
            let words: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(
                words,
                expected
                    .split("\r\n")
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
            );

            let answer = resolve(
                server,
                identifier,
                version,
                &[("accept", "application/json")],
            )
            .expect(200);
            assert_eq!(answer, json!({ "files": files }));
        }
    }
    // Eight of the nine lookups needed peers at most once each (then the cache answered):
    // far fewer requests than a flood through the graph's cycles would send.
    assert!(
        graph.peer_requests() <= 6.0 * EDGES,
        "{}",
        graph.peer_requests()
    );
}

#[test]
fn an_unknown_triple_is_404_after_a_bounded_search_and_the_negative_cache_stops_repeats() {
    let graph = Graph::start(&["--resolve-negative-ttl", "1h"]);
    for (n, origin) in graph.all().into_iter().enumerate() {
        let before = graph.peer_requests();
        let missing = format!("nowhere_{n}");
        let reply = resolve(origin, &missing, 1, &[]);
        reply.expect_error(404, "not_found");
        let sent = graph.peer_requests() - before;
        assert!(
            (1.0..=EDGES).contains(&sent),
            "a search from {} sent {sent} peer requests",
            origin.url()
        );

        // Asked again: the origin remembers that nobody knew, and asks no one.
        let before = graph.peer_requests();
        resolve(origin, &missing, 1, &[]).expect_error(404, "not_found");
        assert_eq!(
            graph.peer_requests(),
            before,
            "the negative cache was not used"
        );
        let hits = origin
            .anonymous()
            .metrics()
            .sum("tidemark_resolve_negative_cache_hits_total", &[]);
        assert_eq!(hits, 1.0);
    }
    // The known triples are still found everywhere.
    for server in graph.all() {
        for (identifier, version) in KNOWN {
            resolve(
                server,
                identifier,
                version,
                &[("accept", "application/json")],
            )
            .expect(200);
        }
    }
}

#[test]
fn the_hop_limit_and_the_visited_list_bound_the_search() {
    let graph = Graph::start(&[]);
    let (moon, version) = KNOWN[2]; // only data3 knows it

    // No hops left: data2 answers from its own catalog only.
    let before = graph.peer_requests();
    resolve(
        &graph.data2,
        moon,
        version,
        &[("tidemark-resolve-hops", "0")],
    )
    .expect_error(404, "not_found");
    assert_eq!(graph.peer_requests(), before);

    // data3 already visited: data asks only data2, which has nobody left to ask.
    let before = graph.peer_requests();
    resolve(
        &graph.data,
        moon,
        version,
        &[("tidemark-resolve-visited", graph.data3.url())],
    )
    .expect_error(404, "not_found");
    assert_eq!(graph.peer_requests() - before, 1.0);

    // A search that was cut short is not cached as negative: a full one finds it.
    let found = resolve(&graph.data, moon, version, &[]);
    assert_eq!(found.status, 200, "{}", found.text());

    // A server configured with no hops never asks its peers.
    let lone = Server::start(&["--resolve-hops", "0", "--resolve-peer", graph.data3.url()]);
    resolve(&lone, moon, version, &[]).expect_error(404, "not_found");
    assert_eq!(peer_requests(&lone), 0.0);
}

#[test]
fn an_answer_from_a_peer_is_kept_after_the_peer_goes_away() {
    let mut graph = Graph::start(&[]);
    let (mars, version) = KNOWN[1]; // only data2 knows it
    let first = resolve(&graph.data, mars, version, &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    graph.data2.kill9();
    let again = resolve(&graph.data, mars, version, &[]);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.text(), first.text());
    let served = graph
        .data
        .anonymous()
        .metrics()
        .sum("tidemark_resolve_total", &[("answer", "cache")]);
    assert_eq!(served, 1.0);
}

#[test]
fn bad_queries_and_search_headers_are_400_and_change_nothing() {
    let server = Server::start(&[]);
    write_entry(&server, "stars", 1, &files_of("stars"));
    let anonymous = server.anonymous();
    let fields = |path: &str| {
        let reply = anonymous.get(path);
        reply.expect_error(400, "invalid_request");
        reply
            .detail_fields()
            .into_iter()
            .map(|(_, f)| f)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields("/v1/resolve"),
        ["identifier", "file_version", "application_version"]
    );
    assert_eq!(
        fields("/v1/resolve?identifier=../etc&file_version=x&application_version=1"),
        ["identifier", "file_version"]
    );
    assert_eq!(
        fields("/v1/resolve?identifier=a&identifier=b&file_version=1&application_version=1"),
        ["identifier"]
    );
    let long = "x".repeat(201);
    assert_eq!(
        fields(&format!(
            "/v1/resolve?identifier={long}&file_version=1&application_version=1"
        )),
        ["identifier"]
    );
    for (name, value) in [
        ("tidemark-resolve-hops", "-1".to_string()),
        ("tidemark-resolve-hops", "many".to_string()),
        ("tidemark-resolve-visited", "not a url".to_string()),
        (
            "tidemark-resolve-visited",
            (0..65)
                .map(|i| format!("http://h{i}.example"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        let reply = resolve(&server, "stars", 1, &[(name, &value)]);
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.detail_fields()[0].1, name, "{value}");
    }
    // An entry whose data names another triple is ignored, not served.
    write_entry(&server, "comets", 1, &files_of("comets"));
    let wrong = json!({"identifier": "other", "file_version": 1, "application_version": 1,
                       "files": files_of("comets")});
    server
        .client("catalog")
        .push(
            "tidemark",
            "bundles",
            &json!({"objects": [{"id": "comets/1/1", "data": wrong}]}),
        )
        .expect(200);
    resolve(&server, "comets", 1, &[]).expect_error(404, "not_found");

    // Nothing was lost: the catalog still answers.
    let answer = resolve(&server, "stars", 1, &[("accept", "application/json")]).expect(200);
    assert_eq!(answer, json!({"files": files_of("stars")}));
}
