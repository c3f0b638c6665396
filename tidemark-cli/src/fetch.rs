//! `tidemark fetch`: resolve, then download every file in parallel, with a progress bar.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sync_core::resolve::{BundleFile, Triple};

use crate::download::{Job, PART_SUFFIX};
use crate::record::{Record, RECORD_NAME};

/// What to fetch, from where, and how.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// A Tidemark server to resolve through, by base URL (repeatable; tried in order, the next
    /// one when a server is down or does not know the bundle).
    #[arg(
        long = "repo",
        env = "TIDEMARK_REPOS",
        value_delimiter = ',',
        required = true
    )]
    repos: Vec<String>,

    /// The bundle's identifier.
    #[arg(long)]
    identifier: String,

    /// The bundle's version.
    #[arg(long)]
    file_version: u32,

    /// The application version the bundle is for.
    #[arg(long, default_value_t = 1)]
    application_version: u32,

    /// Where the files go (created if missing). Default: `<identifier>/<file-version>`.
    #[arg(long)]
    dest: Option<PathBuf>,

    /// Files downloaded at once.
    #[arg(long, env = "TIDEMARK_FETCH_JOBS", default_value_t = 4)]
    jobs: usize,

    /// Attempts per file after the first (a failed transfer resumes; a wrong hash restarts).
    #[arg(long, env = "TIDEMARK_FETCH_RETRIES", default_value_t = 3)]
    retries: u32,

    /// How long a request may wait for a server (connecting, or between two reads of a
    /// download).
    #[arg(long, env = "TIDEMARK_FETCH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

/// Runs `tidemark fetch`.
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    let triple = Triple::from_pairs([
        ("identifier", args.identifier.as_str()),
        ("file_version", &args.file_version.to_string()),
        ("application_version", &args.application_version.to_string()),
    ])
    .map_err(|problems| {
        let text: Vec<String> = problems
            .iter()
            .map(|d| format!("--{} {}", d.field.replace('_', "-"), d.message))
            .collect();
        anyhow::anyhow!(text.join("; "))
    })?;
    let client = reqwest::Client::builder()
        .connect_timeout(args.timeout)
        .read_timeout(args.timeout)
        .build()
        .context("starting the HTTP client")?;
    let (files, repo) =
        crate::resolve::resolve(&client, &args.repos, &triple, args.timeout).await?;
    eprintln!(
        "{}: {} file(s), resolved by {repo}",
        triple.catalog_id(),
        files.len()
    );

    let dest = args
        .dest
        .unwrap_or_else(|| PathBuf::from(&triple.identifier).join(triple.file_version.to_string()));
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let names = file_names(&files)?;
    let record = Record::open(&dest).with_context(|| format!("reading {RECORD_NAME}"))?;

    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = ProgressBar::with_draw_target(
        Some(total),
        if args.quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .expect("a valid template"),
    );

    let mut jobs = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let target = dest.join(name);
        match record.existing(&file.sha256, file.size) {
            Some(existing) if existing == target => {
                progress.inc(file.size);
                continue;
            }
            // The same content under another name: copy it rather than download it.
            Some(existing) => {
                std::fs::copy(&existing, &target)
                    .with_context(|| format!("copying {}", existing.display()))?;
                record.add(&file.sha256, file.size, name)?;
                progress.inc(file.size);
                continue;
            }
            None => {}
        }
        // A `.part` left by an interrupted run counts as progress already made.
        let part = crate::download::part_path(&target);
        progress.inc(std::fs::metadata(&part).map_or(0, |m| m.len().min(file.size)));
        jobs.push(Job {
            client: &client,
            file,
            target,
            retries: args.retries,
            record: &record,
            progress: &progress,
        });
    }
    let to_download = jobs.len();
    let failures: Vec<String> = stream::iter(jobs.iter().map(Job::run))
        .buffer_unordered(args.jobs.max(1))
        .filter_map(|outcome| async move { outcome.err() })
        .collect()
        .await;
    progress.finish_and_clear();
    if !failures.is_empty() {
        bail!(
            "{} of {} file(s) could not be fetched:\n  {}",
            failures.len(),
            files.len(),
            failures.join("\n  ")
        );
    }
    eprintln!(
        "{} file(s) in {} ({} downloaded, {} already there)",
        files.len(),
        dest.display(),
        to_download,
        files.len() - to_download
    );
    Ok(())
}

/// Each file's name in the destination: the last segment of its URL path, percent-decoded,
/// as OpenSpace names them. Refuses names that could leave the directory or clash.
fn file_names(files: &[BundleFile]) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::with_capacity(files.len());
    for file in files {
        let url = reqwest::Url::parse(&file.url).with_context(|| format!("URL {}", file.url))?;
        let segment = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default();
        let name = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map(|n| n.into_owned())
            .unwrap_or_default();
        let unsafe_name = name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\\', '\0'])
            || name == RECORD_NAME
            || name.ends_with(PART_SUFFIX);
        if unsafe_name {
            bail!("{}: no usable file name in the URL", file.url);
        }
        if names.contains(&name) {
            bail!("two files of the bundle are both named {name}");
        }
        names.push(name);
    }
    Ok(names)
}
