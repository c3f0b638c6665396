//! The completion record: `<dest>/.tidemark-fetch`, one line per file in place,
//! `<sha256> <size> <name>`.
//!
//! Completion is recorded by content hash, not by URL: the same bundle resolved through
//! another repository (other URLs, same bytes) is already complete, and a file whose content
//! is already here under another name is copied, not downloaded. A line is appended (and
//! flushed to disk) only after its file was verified and renamed into place, so a crash
//! leaves at worst a complete file without its line, which is verified again next time.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record file's name inside the destination directory.
pub const RECORD_NAME: &str = ".tidemark-fetch";

/// What is in place, by sha256, and the open file new lines go to.
pub struct Record {
    dir: PathBuf,
    /// sha256 → (size, name), as recorded.
    done: HashMap<String, (u64, String)>,
    /// Appended to by parallel downloads; a std Mutex, since nothing awaits while holding it.
    file: Mutex<File>,
}

impl Record {
    /// Reads the record in `dir` (a missing one is empty); ignores malformed lines.
    pub fn open(dir: &Path) -> std::io::Result<Record> {
        let path = dir.join(RECORD_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let done = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let (hash, size, name) = (parts.next()?, parts.next()?, parts.next()?);
                Some((hash.to_string(), (size.parse().ok()?, name.to_string())))
            })
            .collect();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Record {
            dir: dir.to_path_buf(),
            done,
            file: Mutex::new(file),
        })
    }

    /// A file in place whose content is `sha256` (`size` bytes), if the record has one and
    /// it is still there with that size.
    pub fn existing(&self, sha256: &str, size: u64) -> Option<PathBuf> {
        let (recorded_size, name) = self.done.get(sha256)?;
        let path = self.dir.join(name);
        let on_disk = std::fs::metadata(&path).ok()?.len();
        (*recorded_size == size && on_disk == size).then_some(path)
    }

    /// Records that `name` is in place with content `sha256`.
    pub fn add(&self, sha256: &str, size: u64, name: &str) -> std::io::Result<()> {
        let mut file = self.file.lock().expect("the record lock");
        writeln!(file, "{sha256} {size} {name}")?;
        file.sync_data()
    }
}
