//! A `sync-server` that a benchmark starts itself (on `127.0.0.1:0`, with a new data
//! directory), and what `/proc` says about a process's memory and CPU time.
//!
//! Used by the benchmarks that measure the server process as well as its answers
//! ([`crate::workload::presence`], [`crate::workload::fanout`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
}

/// The memory of process `pid`, if it is readable.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// utime + stime of a process, in seconds (`pid` none: this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A server this benchmark started; killed (and its data directory removed) when dropped.
pub struct Started {
    child: Child,
    url: String,
    data: PathBuf,
}

impl Started {
    /// Starts `binary` with `extra` flags; `name` goes into the data directory's name.
    pub fn start(binary: &Path, name: &str, extra: &[String]) -> anyhow::Result<Started> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let data =
            std::env::temp_dir().join(format!("tidemark-{name}-{}-{ms}", std::process::id()));
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("reading the server's first line")?;
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let url = line
            .trim()
            .strip_prefix("tidemark listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?
            .to_string();
        Ok(Started { child, url, data })
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// `sync-server` next to this executable.
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("this program's path")?;
    let dir = exe.parent().context("this program's directory")?;
    Ok(dir.join(format!("sync-server{}", std::env::consts::EXE_SUFFIX)))
}

/// Writes a benchmark's results as JSON to `out` and its Markdown table (`render`, called
/// only when asked for) to `markdown`, each if given.
pub fn write_results(
    out: Option<&Path>,
    markdown: Option<&Path>,
    results: &impl Serialize,
    render: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(results)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(path) = markdown {
        std::fs::write(path, render()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
