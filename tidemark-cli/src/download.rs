//! One file: download to `<name>.part` (resuming it with `Range` where the server allows),
//! check its sha256, rename it into place. Bounded retries; a `.part` whose bytes turn out
//! wrong is deleted and never renamed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use sync_core::resolve::BundleFile;
use tokio::fs::OpenOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::record::Record;

/// The suffix of a file being downloaded.
pub const PART_SUFFIX: &str = ".part";
/// The first pause between attempts; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Why one attempt failed.
enum Failure {
    /// The network or the server: try again, keeping what the `.part` holds.
    Transient(String),
    /// The bytes are wrong (too many, or the wrong hash): try again from nothing.
    Corrupt(String),
}

/// What one file's download needs.
pub struct Job<'a> {
    /// The HTTP client.
    pub client: &'a reqwest::Client,
    /// The file as the bundle lists it.
    pub file: &'a BundleFile,
    /// Where it ends up.
    pub target: PathBuf,
    /// Attempts after the first.
    pub retries: u32,
    /// Where completion is recorded.
    pub record: &'a Record,
    /// The overall progress bar (bytes).
    pub progress: &'a ProgressBar,
}

impl Job<'_> {
    /// Downloads, verifies and renames the file into place, trying up to `retries + 1` times.
    pub async fn run(&self) -> Result<(), String> {
        let part = part_path(&self.target);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let outcome = self.attempt(&part).await;
            let why = match outcome {
                Ok(()) => return Ok(()),
                // What arrived stays in the `.part` (and on the progress bar) for the next try.
                Err(Failure::Transient(why)) => why,
                Err(Failure::Corrupt(why)) => {
                    let discarded = file_len(&part).await;
                    let _ = tokio::fs::remove_file(&part).await;
                    self.progress
                        .set_position(self.progress.position().saturating_sub(discarded));
                    why
                }
            };
            if attempt == self.retries {
                return Err(format!("{}: {why}", self.file.url));
            }
            // Around the bar, not through it: `println` is silent when the bar is hidden.
            self.progress
                .suspend(|| eprintln!("retrying {} after: {why}", self.target.display()));
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    async fn attempt(&self, part: &Path) -> Result<(), Failure> {
        let size = self.file.size;
        let mut have = file_len(part).await;
        if have > size {
            // Longer than the file can be: start over.
            tokio::fs::remove_file(part).await.map_err(io)?;
            have = 0;
        }
        if have < size {
            self.download_rest(part, have).await?;
        }
        let (length, sha256) = hash_file(part).await.map_err(io)?;
        if length != size {
            return Err(Failure::Corrupt(format!(
                "{length} bytes, but the bundle says {size}"
            )));
        }
        if sha256 != self.file.sha256 {
            return Err(Failure::Corrupt(format!(
                "sha256 mismatch: the bundle says {}, the bytes are {sha256}",
                self.file.sha256
            )));
        }
        tokio::fs::rename(part, &self.target).await.map_err(io)?;
        let name = self
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.record.add(&sha256, size, &name).map_err(io)
    }

    /// Appends the bytes after `have` to the `.part` file (or rewrites it if the server
    /// ignores the `Range`).
    async fn download_rest(&self, part: &Path, have: u64) -> Result<(), Failure> {
        let mut request = self.client.get(&self.file.url);
        if have > 0 {
            request = request.header(RANGE, format!("bytes={have}-"));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let resumed = match response.status() {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let starts_at_have = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|start| start.parse::<u64>().ok())
                    == Some(have);
                if !starts_at_have {
                    return Err(Failure::Corrupt(
                        "a Range answer from the wrong offset".into(),
                    ));
                }
                true
            }
            StatusCode::OK => false,
            status => return Err(Failure::Transient(format!("the server answered {status}"))),
        };
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .await
            .map_err(io)?;
        let mut written = if resumed {
            have
        } else {
            self.progress
                .set_position(self.progress.position().saturating_sub(have));
            0
        };
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Keep what arrived: the next attempt resumes after it.
                    out.flush().await.map_err(io)?;
                    return Err(Failure::Transient(format!("the download broke off: {e}")));
                }
            };
            written += chunk.len() as u64;
            if written > self.file.size {
                return Err(Failure::Corrupt(format!(
                    "more than the {} bytes the bundle says",
                    self.file.size
                )));
            }
            out.write_all(&chunk).await.map_err(io)?;
            self.progress.inc(chunk.len() as u64);
        }
        out.sync_all().await.map_err(io)
    }
}

/// `<target>.part`.
pub fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(PART_SUFFIX);
    target.with_file_name(name)
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// The length and lower-case hex sha256 of a file.
pub async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        length += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((length, hex))
}

fn io(e: std::io::Error) -> Failure {
    Failure::Transient(format!("disk: {e}"))
}
