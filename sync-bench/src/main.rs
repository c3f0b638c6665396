//! `sync-bench`: parse the command line, run one subcommand.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sync_bench::params::{Params, Target};
use sync_bench::report::{render, Meta};
use sync_bench::results::SystemResults;

/// Benchmarks Tidemark against Kinto with the same workloads (see BENCHMARKS.md).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Worker threads of the client's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run workloads against one system and write its results as JSON.
    ///
    /// A flag given twice takes its last value, so scripts can append overrides.
    #[command(args_override_self = true)]
    Run {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        params: Params,
        /// The system's name in the report.
        #[arg(long)]
        label: String,
        /// Where to write the JSON results.
        #[arg(long)]
        out: PathBuf,
        /// Prefix of the collection names (default: from the clock).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Push and pull a tiny workload and check every answer; times nothing.
    Smoke {
        #[command(flatten)]
        target: Target,
        /// The collection to use (default: a new name from the clock).
        #[arg(long)]
        collection: Option<String>,
    },
    /// Write the records the loader would push, one `id<TAB>data` line each, so that a
    /// system can be preloaded outside its HTTP API (scripts/bench_kinto.py).
    Records {
        /// How many (ids `r-000000000` on).
        #[arg(long)]
        count: u64,
        /// Bytes of JSON per record's data.
        #[arg(long, default_value_t = sync_bench::payload::RECORD_BYTES)]
        record_bytes: usize,
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
    },
    /// The presence-channels benchmark of issue #10 (Tidemark only): channels of
    /// participants updating at a fixed rate; prints a Markdown table.
    ///
    /// A flag given twice takes its last value, so scripts can append overrides.
    #[command(args_override_self = true)]
    Presence {
        #[command(flatten)]
        params: sync_bench::workload::presence::PresenceParams,
    },
    /// The fan-out benchmark of issue #7 (Tidemark only): one write reaching 1,000 and
    /// 10,000 live-event subscribers; delivery latency and server memory per idle
    /// subscriber; prints a Markdown table.
    ///
    /// A flag given twice takes its last value, so scripts can append overrides.
    #[command(args_override_self = true)]
    Fanout {
        #[command(flatten)]
        params: sync_bench::workload::fanout::FanoutParams,
    },
    /// Wait until the server answers.
    Wait {
        #[command(flatten)]
        target: Target,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Write BENCHMARKS.md from the JSON results of `run`.
    Report {
        /// Results files, in the order of the table's columns.
        #[arg(long, num_args = 1.., required = true)]
        results: Vec<PathBuf>,
        /// The date to state.
        #[arg(long)]
        date: String,
        /// A file holding the exact commands run.
        #[arg(long)]
        commands: PathBuf,
        /// A line to add under the date (versions, settings), repeatable.
        #[arg(long)]
        note: Vec<String>,
        /// Where to write the Markdown.
        #[arg(long)]
        out: PathBuf,
    },
}

fn clock_tag() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("t{ms}")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run {
                target,
                params,
                label,
                out,
                tag,
            } => {
                let results =
                    sync_bench::run(&target, params, &label, tag.unwrap_or_else(clock_tag)).await?;
                std::fs::write(&out, serde_json::to_string_pretty(&results)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("{label}: results in {}", out.display());
            }
            Command::Smoke { target, collection } => {
                let collection = collection.unwrap_or_else(|| format!("smoke-{}", clock_tag()));
                let checked =
                    sync_bench::smoke::run(&target.dialect(), &target.http(), &collection).await?;
                for line in checked {
                    println!("ok: {line}");
                }
            }
            Command::Records {
                count,
                record_bytes,
                out,
            } => {
                let file = std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let mut file = std::io::BufWriter::new(file);
                for n in 0..count {
                    let id = sync_bench::payload::record_id("r", n);
                    writeln!(
                        file,
                        "{id}\t{}",
                        sync_bench::payload::record_data(n, 0, record_bytes)
                    )?;
                }
                file.flush()?;
            }
            Command::Presence { params } => {
                let smoke = params.smoke;
                let result = sync_bench::workload::presence::main(params.clone()).await?;
                if smoke {
                    for line in sync_bench::workload::presence::check(&result)? {
                        println!("ok: {line}");
                    }
                } else {
                    print!(
                        "{}",
                        sync_bench::workload::presence::render(&result, &params)
                    );
                }
            }
            Command::Fanout { params } => {
                let smoke = params.smoke;
                let result = sync_bench::workload::fanout::main(params.clone()).await?;
                if smoke {
                    for line in sync_bench::workload::fanout::check(&result)? {
                        println!("ok: {line}");
                    }
                } else {
                    print!("{}", sync_bench::workload::fanout::render(&result, &params));
                }
            }
            Command::Wait { target, wait_secs } => {
                sync_bench::wait_ready(&target, wait_secs).await?
            }
            Command::Report {
                results,
                date,
                commands,
                note,
                out,
            } => {
                let mut systems = Vec::new();
                for path in &results {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    systems.push(
                        serde_json::from_str::<SystemResults>(&text)
                            .with_context(|| format!("parsing {}", path.display()))?,
                    );
                }
                let commands = std::fs::read_to_string(&commands)
                    .with_context(|| format!("reading {}", commands.display()))?;
                let markdown = render(
                    &systems,
                    &Meta {
                        date,
                        commands,
                        notes: note,
                    },
                );
                std::fs::write(&out, markdown)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
        }
        Ok(())
    })
}
