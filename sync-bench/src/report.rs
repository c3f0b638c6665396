//! Writes `BENCHMARKS.md` from the JSON results of several systems.
//!
//! The first Tidemark result is "Tidemark"; every Kinto result competes for "Kinto's best"
//! (the highest throughput, the lowest latency, measurement by measurement).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::results::{GrowthPoint, GrowthResult, SystemResults};

/// What the report says besides the numbers.
pub struct Meta {
    /// When the run was made (as the script gives it).
    pub date: String,
    /// The exact commands, one per line.
    pub commands: String,
    /// Versions and settings worth stating, one line each.
    pub notes: Vec<String>,
}

/// The machine, read from `/proc`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs (nproc), {:.1} GiB of memory, CPU model \"{model}\", Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Which way is better for a measurement.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// A number for context, not compared between systems.
    Neither,
}

struct Row {
    name: String,
    values: Vec<Option<f64>>,
    better: Better,
    decimals: usize,
    target: String,
    met: Option<bool>,
    /// Values from here up are lower bounds (requests abandoned at the latency timeout).
    at_least: f64,
}

/// The report's Markdown.
pub fn render(systems: &[SystemResults], meta: &Meta) -> String {
    let tidemark = systems.iter().position(|s| s.dialect == "tidemark");
    let kintos: Vec<usize> = systems
        .iter()
        .enumerate()
        .filter(|(_, s)| s.dialect == "kinto")
        .map(|(i, _)| i)
        .collect();
    let mut out = String::new();
    let w = &mut out;

    let _ = writeln!(
        w,
        "# Benchmarks: Tidemark and Kinto, same machine, same run\n"
    );
    let _ = writeln!(
        w,
        "Written by `scripts/bench.sh` (issue #7); do not edit by hand, run the script again.\n"
    );
    let _ = writeln!(w, "- **Date:** {}", meta.date);
    let _ = writeln!(w, "- **Machine:** {}", machine());
    let _ = writeln!(
        w,
        "- **Systems, one after another on this machine:** {}",
        systems
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    for note in &meta.notes {
        let _ = writeln!(w, "- {note}");
    }
    if let Some(first) = systems.first() {
        let _ = writeln!(
            w,
            "- **Parameters** (`sync-bench run` flags, for {}): `{}`",
            first.label, first.params
        );
        for s in &systems[1..] {
            let differs: Vec<String> = match (s.params.as_object(), first.params.as_object()) {
                (Some(mine), Some(theirs)) => mine
                    .iter()
                    .filter(|(k, v)| theirs.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect(),
                _ => vec![],
            };
            if !differs.is_empty() {
                let _ = writeln!(w, "- **{} differs in:** `{}`", s.label, differs.join(", "));
            }
        }
    }
    let _ = writeln!(w);

    // The summary table.
    let rows = summary_rows(systems, tidemark, &kintos);
    let _ = writeln!(w, "## Medians\n");
    let _ = writeln!(
        w,
        "Each cell is the median of the repetitions (growth: of the samples at each size). \
         The ratio compares with whichever Kinto backend did best on that row.\n"
    );
    let _ = write!(w, "| measurement |");
    for s in systems {
        let _ = write!(w, " {} |", s.label);
    }
    // With both of Tidemark's backends measured, the ratio and the targets are the first's
    // (SQLite, the default: one file, nothing to install).
    let ratio_of = tidemark.map_or("Tidemark", |t| systems[t].label.as_str());
    let _ = writeln!(w, " {ratio_of} vs Kinto's best | target (issue #7) | met |");
    let _ = writeln!(w, "|---|{}---|---|---|", "---:|".repeat(systems.len()));
    for row in &rows {
        let _ = write!(w, "| {} |", row.name);
        for v in &row.values {
            let _ = write!(
                w,
                " {} |",
                v.map_or("–".to_string(), |v| if v >= row.at_least {
                    format!("≥ {} (timed out)", fmt_num(v, row.decimals))
                } else {
                    fmt_num(v, row.decimals)
                })
            );
        }
        let ratio = match (
            tidemark.and_then(|t| row.values[t]),
            best(&row.values, &kintos, row.better),
        ) {
            (Some(t), Some(k)) if t > 0.0 && k > 0.0 => match row.better {
                Better::Higher => format!("{}× higher", fmt_ratio(t / k)),
                Better::Lower if k >= row.at_least => format!("≥ {}× lower", fmt_ratio(k / t)),
                Better::Lower if k >= t => format!("{}× lower", fmt_ratio(k / t)),
                Better::Lower => format!("{}× higher", fmt_ratio(t / k)),
                Better::Neither => "–".into(),
            },
            _ => "–".into(),
        };
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(w, " {ratio} | {} | {met} |", row.target);
    }
    let _ = writeln!(w);

    growth_section(w, systems);
    raw_section(w, systems);
    let _ = writeln!(w, "{}", METHOD);
    let _ = writeln!(
        w,
        "## Commands\n\nThe script ran exactly these:\n\n```sh\n{}\n```",
        meta.commands.trim_end()
    );
    out
}

fn best(values: &[Option<f64>], among: &[usize], better: Better) -> Option<f64> {
    let candidates = among
        .iter()
        .filter_map(|&i| values[i])
        .filter(|v| v.is_finite());
    match better {
        Better::Higher => candidates.reduce(f64::max),
        Better::Lower => candidates.reduce(f64::min),
        Better::Neither => None,
    }
}

fn summary_rows(systems: &[SystemResults], tidemark: Option<usize>, kintos: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    let t_value = |row: &Row| tidemark.and_then(|t| row.values[t]);

    let mut counts: Vec<usize> = systems
        .iter()
        .flat_map(|s| s.push.iter().map(|p| p.clients))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let batch = systems
        .iter()
        .flat_map(|s| s.push.first().map(|p| p.batch))
        .next()
        .unwrap_or(0);
    for &clients in &counts {
        let values = systems
            .iter()
            .map(|s| {
                s.push
                    .iter()
                    .find(|p| p.clients == clients)
                    .map(|p| p.median_records_per_s)
            })
            .collect();
        rows.push(Row {
            name: format!(
                "push, {clients} client{} (records/s, batches of {batch})",
                if clients == 1 { "" } else { "s" }
            ),
            values,
            better: Better::Higher,
            decimals: 0,
            target: String::new(),
            met: None,
            at_least: f64::INFINITY,
        });
    }
    if !counts.is_empty() {
        let values: Vec<Option<f64>> = systems
            .iter()
            .map(|s| {
                s.push
                    .iter()
                    .map(|p| p.median_records_per_s)
                    .reduce(f64::max)
            })
            .collect();
        let mut row = Row {
            name: "push, best client count (records/s)".into(),
            values,
            better: Better::Higher,
            decimals: 0,
            target: "≥ 100,000 and ≥ 100× Kinto's best".into(),
            met: None,
            at_least: f64::INFINITY,
        };
        row.met = match (t_value(&row), best(&row.values, kintos, Better::Higher)) {
            (Some(t), Some(k)) => Some(t >= 100_000.0 && t >= 100.0 * k),
            (Some(t), None) => Some(t >= 100_000.0),
            _ => None,
        };
        rows.push(row);
    }

    if systems.iter().any(|s| s.pull.is_some()) {
        let records = systems
            .iter()
            .find_map(|s| s.pull.as_ref().map(|p| p.records))
            .unwrap_or(0);
        let mut row = Row {
            name: format!(
                "initial pull of {} records (records/s)",
                fmt_num(records as f64, 0)
            ),
            values: systems
                .iter()
                .map(|s| s.pull.as_ref().map(|p| p.median_records_per_s))
                .collect(),
            better: Better::Higher,
            decimals: 0,
            target: "≥ 300,000".into(),
            met: None,
            at_least: f64::INFINITY,
        };
        row.met = t_value(&row).map(|t| t >= 300_000.0);
        rows.push(row);
        rows.push(Row {
            name: "initial pull, time to last byte (s)".into(),
            values: systems
                .iter()
                .map(|s| s.pull.as_ref().map(|p| p.median_seconds))
                .collect(),
            better: Better::Lower,
            decimals: 3,
            target: String::new(),
            met: None,
            at_least: f64::INFINITY,
        });
    }

    if systems.iter().any(|s| s.latency.is_some()) {
        let rate = systems
            .iter()
            .find_map(|s| s.latency.as_ref().map(|l| l.rate))
            .unwrap_or(0.0);
        let lat = |f: fn(&crate::results::LatencyResult) -> f64| -> Vec<Option<f64>> {
            systems.iter().map(|s| s.latency.as_ref().map(f)).collect()
        };
        // A percentile at the timeout is only a lower bound.
        let timeout_ms = systems
            .iter()
            .filter_map(|s| s.params.get("latency_timeout_secs")?.as_f64())
            .fold(f64::INFINITY, f64::min)
            * 1000.0;
        rows.push(Row {
            name: format!("latency at {} req/s, p50 (ms)", fmt_num(rate, 0)),
            values: lat(|l| l.median_p50_ms),
            better: Better::Lower,
            decimals: 2,
            target: String::new(),
            met: None,
            at_least: timeout_ms,
        });
        let mut p99 = Row {
            name: "latency, p99 (ms)".into(),
            values: lat(|l| l.median_p99_ms),
            better: Better::Lower,
            decimals: 2,
            target: "< 10".into(),
            met: None,
            at_least: timeout_ms,
        };
        p99.met = t_value(&p99).map(|t| t < 10.0);
        rows.push(p99);
        rows.push(Row {
            name: "latency, p99.9 (ms)".into(),
            values: lat(|l| l.median_p999_ms),
            better: Better::Lower,
            decimals: 2,
            target: String::new(),
            met: None,
            at_least: timeout_ms,
        });
        rows.push(Row {
            name: "latency, requests answered per second".into(),
            values: lat(|l| l.median_achieved_rate),
            better: Better::Higher,
            decimals: 0,
            target: format!("{} (the offered rate)", fmt_num(rate, 0)),
            met: None,
            at_least: f64::INFINITY,
        });
        rows.push(Row {
            name: "latency, failed or timed-out requests (all repetitions)".into(),
            values: lat(|l| l.errors as f64),
            better: Better::Neither,
            decimals: 0,
            target: "0".into(),
            met: None,
            at_least: f64::INFINITY,
        });
    }

    if systems.iter().any(|s| s.growth.is_some()) {
        let growth: Vec<Option<&GrowthResult>> =
            systems.iter().map(|s| s.growth.as_ref()).collect();
        let single_points = |g: &GrowthResult, f: fn(&GrowthPoint) -> f64| {
            Some((f(g.points.first()?), f(g.points.last()?)))
        };
        type Metric = fn(&GrowthPoint) -> f64;
        let metrics: [(&str, Metric); 2] = [("push", |p| p.push_ms), ("pull", |p| p.pull_ms)];
        for (what, f) in metrics {
            let ends: Vec<Option<(f64, f64)>> =
                growth.iter().map(|g| g.and_then(|g| g.ends(f))).collect();
            for (end, pick) in [
                ("at the smallest sizes", 0usize),
                ("at the largest sizes reached", 1),
            ] {
                rows.push(Row {
                    name: format!("growth: {what} latency {end} (ms, median of 3 points)"),
                    values: ends
                        .iter()
                        .map(|e| e.map(|(a, b)| if pick == 0 { a } else { b }))
                        .collect(),
                    better: Better::Lower,
                    decimals: 2,
                    target: String::new(),
                    met: None,
                    at_least: f64::INFINITY,
                });
            }
            let mut ratio = Row {
                name: format!("growth: {what} latency, largest sizes ÷ smallest"),
                values: ends.iter().map(|e| e.map(|(a, b)| b / a)).collect(),
                better: Better::Neither,
                decimals: 2,
                target: "flat (≤ 1.5)".into(),
                met: None,
                at_least: f64::INFINITY,
            };
            ratio.met = t_value(&ratio).map(|t| t <= 1.5);
            rows.push(ratio);
            rows.push(Row {
                name: format!("growth: {what} latency, last point ÷ first (single points)"),
                values: growth
                    .iter()
                    .map(|g| g.and_then(|g| single_points(g, f)).map(|(a, b)| b / a))
                    .collect(),
                better: Better::Neither,
                decimals: 2,
                target: String::new(),
                met: None,
                at_least: f64::INFINITY,
            });
        }
        let target = growth.iter().flatten().map(|g| g.target).max().unwrap_or(0);
        let mut reached = Row {
            name: "growth: size reached (records)".into(),
            values: growth.iter().map(|g| g.map(|g| g.reached as f64)).collect(),
            better: Better::Higher,
            decimals: 0,
            target: fmt_num(target as f64, 0),
            met: None,
            at_least: f64::INFINITY,
        };
        reached.met = t_value(&reached).map(|t| t >= target as f64);
        rows.push(reached);
        rows.push(Row {
            name: "growth: seconds taken (budget-bound for Kinto)".into(),
            values: growth.iter().map(|g| g.map(|g| g.seconds)).collect(),
            better: Better::Neither,
            decimals: 0,
            target: String::new(),
            met: None,
            at_least: f64::INFINITY,
        });
    }
    rows
}

fn growth_section(w: &mut String, systems: &[SystemResults]) {
    let grown: Vec<&SystemResults> = systems.iter().filter(|s| s.growth.is_some()).collect();
    if grown.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Growth\n");
    let _ = writeln!(
        w,
        "Median latency (ms) of pushing one batch of new records into the growing collection, and of \
         pulling exactly those changes, at each size; \"load\" is how fast the records since the previous \
         size went in (batches of the load size, a few pushes at a time). A system that ran out of its \
         time budget stops early:\n"
    );
    for s in &grown {
        let g = s.growth.as_ref().expect("filtered");
        let _ = writeln!(
            w,
            "- {}: reached {} of {} records in {:.0} s{}.",
            s.label,
            fmt_num(g.reached as f64, 0),
            fmt_num(g.target as f64, 0),
            g.seconds,
            if g.stopped_by_budget {
                format!(" (stopped by the {:.0} s budget)", g.budget_seconds)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(w);
    let sizes: BTreeSet<u64> = grown
        .iter()
        .flat_map(|s| {
            s.growth
                .as_ref()
                .expect("filtered")
                .points
                .iter()
                .map(|p| p.size)
        })
        .collect();
    let _ = write!(w, "| records |");
    for s in &grown {
        let _ = write!(w, " {0} push | {0} pull | {0} load (records/s) |", s.label);
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "|---:|{}", "---:|---:|---:|".repeat(grown.len()));
    for size in sizes {
        let _ = write!(w, "| {} |", fmt_num(size as f64, 0));
        for s in &grown {
            match s
                .growth
                .as_ref()
                .expect("filtered")
                .points
                .iter()
                .find(|p| p.size == size)
            {
                Some(p) => {
                    let load = if p.load_records_per_s > 0.0 {
                        fmt_num(p.load_records_per_s, 0)
                    } else {
                        "–".into()
                    };
                    let _ = write!(w, " {:.2} | {:.2} | {load} |", p.push_ms, p.pull_ms);
                }
                None => {
                    let _ = write!(w, " – | – | – |");
                }
            }
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w);
}

fn raw_section(w: &mut String, systems: &[SystemResults]) {
    let _ = writeln!(w, "## Every repetition\n");
    for s in systems {
        let _ = writeln!(w, "### {}\n", s.label);
        for p in &s.push {
            let runs: Vec<String> = p
                .runs
                .iter()
                .map(|r| {
                    format!(
                        "{} ({} in {:.2} s{})",
                        fmt_num(r.records_per_s, 0),
                        fmt_num(r.records as f64, 0),
                        r.seconds,
                        if r.capped { ", time cap" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(
                w,
                "- push, {} client{}, records/s: {}",
                p.clients,
                if p.clients == 1 { "" } else { "s" },
                runs.join("; ")
            );
        }
        if let Some(p) = &s.pull {
            let runs: Vec<String> = p
                .runs
                .iter()
                .map(|r| {
                    format!(
                        "{} ({:.3} s, {} pages)",
                        fmt_num(r.records_per_s, 0),
                        r.seconds,
                        r.pages
                    )
                })
                .collect();
            let _ = writeln!(w, "- initial pull, records/s: {}", runs.join("; "));
            let _ = match p.load_records_per_s {
                Some(rate) => writeln!(
                    w,
                    "- loading the pull test's collection through the API (context, not a result): {} records/s",
                    fmt_num(rate, 0)
                ),
                None => writeln!(
                    w,
                    "- the pull test's collection was preloaded through Kinto's storage layer (see Method)"
                ),
            };
        }
        if let Some(l) = &s.latency {
            for r in &l.runs {
                let _ = writeln!(
                    w,
                    "- latency: {} requests at {}/s, p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms; \
                     p99 of pushes {:.2}, of pulls {:.2} ms; {} failed ({} of them timed out)",
                    r.requests,
                    fmt_num(r.achieved_rate, 0),
                    r.p50_ms,
                    r.p99_ms,
                    r.p999_ms,
                    r.max_ms,
                    r.push_p99_ms,
                    r.pull_p99_ms,
                    r.errors,
                    r.timeouts
                );
            }
        }
        let _ = writeln!(w);
    }
}

/// `1234567.8` → `1,234,568` (with `decimals` = 0).
fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        fmt_num(r, 0)
    } else {
        format!("{r:.1}")
    }
}

const METHOD: &str = r#"## How Tidemark's operations map to Kinto's

| Tidemark | Kinto's nearest equivalent | what differs |
|---|---|---|
| push a batch: `POST /v1/data/{app}/~/{c}` `{"objects": [...]}` | `POST /v1/batch` with one `PUT /buckets/{b}/collections/{c}/records/{id}` `{"data": ...}` per object | Tidemark commits the whole batch or nothing, under consecutive seqs. Kinto runs a batch's sub-requests in one transaction, but a failed precondition (`412`) fails only that sub-request and the rest still commit. |
| `"base_seq": 0` (the object must not exist) | `If-None-Match: *` on the `PUT` | the same check, record by record; every push in these benchmarks is made of creates |
| `"base_seq": N` (update the version I have) | `If-Match: "<last_modified>"` on the `PUT` | the same check; exercised by the smoke test |
| push `since` (refuse if the collection changed) | none per batch | not used |
| push `push_id` (idempotent retries) | none | not used |
| pull `GET …/{c}?since=N&limit=L`, again with `since=until` while `more` | `GET /buckets/{b}/collections/{c}/records?_since=T&_sort=last_modified&_limit=L`, following `Next-Page` | Tidemark's cursor is a gap-free seq (`until` of the last page); Kinto's is a millisecond timestamp (the first page's `ETag`) |
| `409` conflict, with the server's objects and the missed changes | `412` per sub-request, with the current record | one round trip to merge in Tidemark, a re-read in Kinto |
| `collection_id` epochs, `410 reset_required` | none | not exercised |
| collection made on its first write | `PUT /buckets/{b}/collections/{c}` | done before the clock starts |
| `DELETE …/{c}` (reset) | `DELETE /buckets/{b}/collections/{c}` | only to clean up between repetitions, untimed |
| dev auth: `Authorization: Bearer <user>` | `basicauth` policy: `Authorization: Basic user:pass` | both a cheap check; Kinto also HMACs the credentials to get the user id |

## Method

- **Client.** `sync-bench`, a Rust load generator on tokio with hyper's keep-alive connection
  pool (plain TCP, `TCP_NODELAY`). Every request body is built before the clock starts; pull
  answers are parsed only to count the records (the smoke test, run against each system before
  its measurements, checks contents and conflicts). It runs on the same 2 cores as the server
  under test (and, for Kinto with PostgreSQL, the database), so every number includes the cost of
  sharing them. The machine is also shared with other builds; the load average when each system
  started and finished is listed above.
- **Records.** 1 KB of JSON each (`{"title", "done", "n", "v", "body"}`, the body pseudo-random
  text), the same data for both systems; ids `r-000000042`.
- **Push throughput.** 1, 8 and 64 concurrent clients, **each pushing into its own collection**,
  batches of 100 new records, each client sending its next batch when the previous answer has
  arrived (closed loop). A repetition pushes the prepared records (100,000, shared among the
  clients) or stops starting pushes at the time cap (10 s; a client still finishes the push it
  waits for, so with 64 clients a slow server needs at least one round of 6,400 records);
  records/s = acknowledged records ÷ time from the first request to the last answer. Collections
  are deleted between repetitions (untimed).
- **Initial pull.** One collection of 100,000 records; an empty client pulls it all, one page after
  the other (10,000 per page, which is also each server's maximum page size: Tidemark's
  `--max-pull-limit` and Kinto's `storage_max_fetch_size`). Time to last byte is from the first
  request to the last byte of the last page. Tidemark's collection is loaded through its API.
  Kinto's is written beforehand through Kinto's own storage layer (`scripts/bench_kinto.py`),
  because its API cannot load 100,000 records in bounded time here: the memory backend's writes
  slow down in proportion to the records already stored, and PostgreSQL writes to one collection
  are serialised at about 100 records/s (concurrent batches are refused with `409`).
- **Latency.** Open loop at a fixed arrival rate: request *i* is due at *start + i / rate* whatever
  the earlier ones are doing, and its latency runs from that due time to the last byte of the
  answer (so a server that falls behind shows queueing, not a lower rate). Half the requests push
  10 new records, half pull a collection's changes since the cursor from that collection's last
  pull, spread over 16 collections; 2 s of warm-up are not counted; at most 64 requests are
  outstanding (later ones wait in the client, and the wait counts). A request unanswered 10 s
  after its due time is abandoned, counted as failed and recorded at that latency, so a server
  that cannot keep up ends each repetition in bounded time; "requests answered per second" is
  then the rate it really served. Before each measurement the client waits until the server
  answers a trivial request within 200 ms again.
- **Growth.** One collection grows to the target; at 10,000 records and every 50,000 the client
  waits 1 s (so that a point measures a push into a collection of that size, not the checkpoint
  or vacuum of the 50,000 records just loaded), then times 20 pushes of 100 new records, each
  followed by a pull of exactly those 100 changes, and takes the medians. Between points the
  collection is loaded the fastest way each system takes (Tidemark: 4 concurrent pushes of
  1,000; Kinto: one push of 100 at a time, as bigger batches and concurrent writers are slower
  there or refused); the load rate is listed for context. Each system gets the same time budget
  and stops where it is when it runs out (the pauses count). The growth is run once per system.
  Flat means the median of the last three points is at most 1.5 times the median of the first
  three (with fewer than six points, half of them at each end): one point is only 20 samples
  taken in a fraction of a second, and one of them can catch the machine busy, which a trend
  across sizes does not. The last point ÷ the first is listed too.
- **Repetitions.** Every other measurement is repeated (5 times in the full run) and the table
  shows the median; every repetition is listed above.

## Durability on each side

- **Tidemark:** SQLite in WAL mode with `synchronous = FULL` and group commit: a push is answered
  only after its transaction's WAL frames are fsynced, so an acknowledged write survives a power
  loss.
- **Kinto, memory backend:** nothing is durable: the records live in the Python process and are
  lost when it stops. Kinto documents it for tests only; it is here as the upper bound of what
  Kinto's code can do.
- **Kinto, PostgreSQL backend:** every HTTP request, a whole `/v1/batch` included, is one
  transaction (`pyramid_tm`). With PostgreSQL's defaults (`fsync = on`,
  `synchronous_commit = on`, as recorded above) the commit's WAL is flushed before the answer, so
  an acknowledged batch is as durable as Tidemark's.
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{PullResult, PullRun, PushResult, PushRun};

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(1234567.8, 0), "1,234,568");
        assert_eq!(fmt_num(999.0, 0), "999");
        assert_eq!(fmt_num(1234.5678, 2), "1,234.57");
        assert_eq!(fmt_num(f64::NAN, 0), "–");
    }

    fn system(label: &str, dialect: &str, push: f64, pull: f64) -> SystemResults {
        SystemResults {
            label: label.into(),
            dialect: dialect.into(),
            push: vec![PushResult {
                clients: 8,
                batch: 100,
                runs: vec![PushRun {
                    records: 1,
                    seconds: 1.0,
                    records_per_s: push,
                    capped: false,
                }],
                median_records_per_s: push,
            }],
            pull: Some(PullResult {
                records: 100_000,
                page: 10_000,
                runs: vec![PullRun {
                    seconds: 1.0,
                    records_per_s: pull,
                    pages: 11,
                }],
                median_records_per_s: pull,
                median_seconds: 100_000.0 / pull,
                load_records_per_s: Some(1.0),
            }),
            ..SystemResults::default()
        }
    }

    #[test]
    fn the_ratio_is_against_the_best_kinto_backend() {
        let systems = [
            system("T", "tidemark", 200_000.0, 400_000.0),
            system("K1", "kinto", 1_000.0, 10_000.0),
            system("K2", "kinto", 2_000.0, 20_000.0),
        ];
        let meta = Meta {
            date: "today".into(),
            commands: "x".into(),
            notes: vec![],
        };
        let md = render(&systems, &meta);
        assert!(md.contains("| push, 8 clients (records/s, batches of 100) | 200,000 | 1,000 | 2,000 | 100× higher |"), "{md}");
        assert!(
            md.contains("| ≥ 100,000 and ≥ 100× Kinto's best | yes |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| initial pull, time to last byte (s) | 0.250 | 10.000 | 5.000 | 20× lower |"
            ),
            "{md}"
        );
    }
}
