//! Resolve: which files make up one version of a bundle (OpenSpace's resource triples).
//!
//! A bundle is named by a [`Triple`]: `(identifier, file_version, application_version)`.
//! Versions are immutable, so an answer, once found, never changes. The catalog that maps
//! triples to files is an ordinary collection: each entry is an object whose id is
//! [`Triple::catalog_id`] and whose data is a [`CatalogEntry`]. The server answers
//! `GET /v1/resolve` from it (and from its peers); `tidemark fetch` reads the JSON answer,
//! [`ResolveAnswer`].
//!
//! Only the shapes and the rules live here; asking peers and caching is the server's business.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::Detail;

/// The longest identifier, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 200;
/// The most files one bundle may list (bounds the answers peers send each other).
pub const MAX_FILES: usize = 10_000;
/// The longest file URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// What names one version of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Triple {
    /// `[A-Za-z0-9._-]`, 1 to [`MAX_IDENTIFIER_BYTES`] bytes.
    pub identifier: String,
    /// The bundle's version: a non-negative integer.
    pub file_version: u32,
    /// The version of the application the bundle is for: a non-negative integer.
    pub application_version: u32,
}

impl Triple {
    /// The triple from query parameters (`identifier`, `file_version`,
    /// `application_version`); every problem is reported, by field. Other parameters are
    /// ignored; a parameter given twice is an error.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Triple, Vec<Detail>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: &str| {
            problems.push(Detail {
                index: None,
                field: field.to_string(),
                message: message.to_string(),
            })
        };
        let (mut identifier, mut file_version, mut application_version) = (None, None, None);
        for (key, value) in pairs {
            let slot = match key {
                "identifier" => &mut identifier,
                "file_version" => &mut file_version,
                "application_version" => &mut application_version,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                bad(key, "is given more than once");
            }
        }
        let identifier = match identifier {
            None => {
                bad("identifier", "is required");
                None
            }
            Some(id) if !is_identifier(id) => {
                bad(
                    "identifier",
                    "must be 1 to 200 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
                );
                None
            }
            Some(id) => Some(id.to_string()),
        };
        let mut version = |field: &str, value: Option<&str>| match value.map(str::parse::<u32>) {
            None => {
                bad(field, "is required");
                None
            }
            Some(Err(_)) => {
                bad(field, "must be a non-negative integer below 2^32");
                None
            }
            Some(Ok(v)) => Some(v),
        };
        let file_version = version("file_version", file_version);
        let application_version = version("application_version", application_version);
        match (identifier, file_version, application_version) {
            (Some(identifier), Some(file_version), Some(application_version))
                if problems.is_empty() =>
            {
                Ok(Triple {
                    identifier,
                    file_version,
                    application_version,
                })
            }
            _ => Err(problems),
        }
    }

    /// The id of this triple's object in the catalog collection:
    /// `{identifier}/{file_version}/{application_version}`. Unambiguous, because identifiers
    /// cannot contain `/`.
    pub fn catalog_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.identifier, self.file_version, self.application_version
        )
    }

    /// The query string that asks for this triple (no leading `?`).
    pub fn query(&self) -> String {
        // Identifiers need no percent-encoding: their characters are all unreserved.
        format!(
            "identifier={}&file_version={}&application_version={}",
            self.identifier, self.file_version, self.application_version
        )
    }
}

fn is_identifier(text: &str) -> bool {
    (1..=MAX_IDENTIFIER_BYTES).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Where to download it: an absolute `http` or `https` URL.
    pub url: String,
    /// Its length in bytes.
    pub size: u64,
    /// The lower-case hex SHA-256 of its bytes.
    pub sha256: String,
}

impl BundleFile {
    /// What is wrong with this entry, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > MAX_URL_BYTES {
            return Some("url must be an http(s) URL of at most 2048 bytes");
        }
        // A URL on a line of its own: no white space or control characters (text/uri-list).
        if self
            .url
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Some("url must not contain white space or control characters");
        }
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if self.sha256.len() != 64 || !self.sha256.bytes().all(hex) {
            return Some("sha256 must be 64 lower-case hex digits");
        }
        None
    }
}

/// The data of one catalog object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Must equal the triple's.
    pub identifier: String,
    /// Must equal the triple's.
    pub file_version: u32,
    /// Must equal the triple's.
    pub application_version: u32,
    /// The files, in the order they are listed.
    pub files: Vec<BundleFile>,
}

impl CatalogEntry {
    /// The files, if this entry is a valid one for `triple`: the right triple, at least one
    /// file, at most [`MAX_FILES`], and every file valid. Otherwise what is wrong.
    pub fn files_for(self, triple: &Triple) -> Result<Vec<BundleFile>, String> {
        if self.identifier != triple.identifier
            || self.file_version != triple.file_version
            || self.application_version != triple.application_version
        {
            return Err("the entry names another triple than its id".to_string());
        }
        ResolveAnswer { files: self.files }.validated()
    }
}

/// The JSON answer of `GET /v1/resolve` (`Accept: application/json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveAnswer {
    /// The bundle's files.
    pub files: Vec<BundleFile>,
}

impl ResolveAnswer {
    /// The files, if there is at least one, at most [`MAX_FILES`], and each is valid.
    pub fn validated(self) -> Result<Vec<BundleFile>, String> {
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(format!("a bundle lists 1 to {MAX_FILES} files"));
        }
        if let Some((index, why)) = self
            .files
            .iter()
            .enumerate()
            .find_map(|(i, f)| f.problem().map(|why| (i, why)))
        {
            return Err(format!("file {index}: {why}"));
        }
        Ok(self.files)
    }

    /// The `text/uri-list` form (RFC 2483): one URL per line, CRLF line ends.
    pub fn uri_list(files: &[BundleFile]) -> String {
        let mut out = String::new();
        for file in files {
            out.push_str(&file.url);
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_triple_comes_from_its_three_parameters() {
        let t = Triple::from_pairs([
            ("identifier", "stars"),
            ("file_version", "2"),
            ("application_version", "1"),
            ("other", "ignored"),
        ])
        .unwrap();
        assert_eq!(t.catalog_id(), "stars/2/1");
        assert_eq!(
            t.query(),
            "identifier=stars&file_version=2&application_version=1"
        );
    }

    #[test]
    fn every_bad_parameter_is_reported_by_field() {
        let problems =
            Triple::from_pairs([("identifier", "a/b"), ("file_version", "-1")]).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            ["identifier", "file_version", "application_version"]
        );
        let twice = Triple::from_pairs([
            ("identifier", "a"),
            ("identifier", "b"),
            ("file_version", "1"),
            ("application_version", "1"),
        ])
        .unwrap_err();
        assert_eq!(twice[0].field, "identifier");
        let long = "x".repeat(MAX_IDENTIFIER_BYTES + 1);
        assert!(Triple::from_pairs([
            ("identifier", long.as_str()),
            ("file_version", "1"),
            ("application_version", "1")
        ])
        .is_err());
    }

    #[test]
    fn catalog_entries_must_match_their_triple_and_list_valid_files() {
        let triple = Triple {
            identifier: "stars".into(),
            file_version: 1,
            application_version: 1,
        };
        let file = BundleFile {
            url: "http://example.org/a.bin".into(),
            size: 3,
            sha256: "a".repeat(64),
        };
        let entry = |id: &str, files: Vec<BundleFile>| CatalogEntry {
            identifier: id.into(),
            file_version: 1,
            application_version: 1,
            files,
        };
        assert!(entry("stars", vec![file.clone()])
            .files_for(&triple)
            .is_ok());
        assert!(entry("other", vec![file.clone()])
            .files_for(&triple)
            .is_err());
        assert!(entry("stars", vec![]).files_for(&triple).is_err());
        for bad in [
            BundleFile {
                url: "ftp://x/a".into(),
                ..file.clone()
            },
            BundleFile {
                url: "http://x/a b".into(),
                ..file.clone()
            },
            BundleFile {
                sha256: "A".repeat(64),
                ..file.clone()
            },
        ] {
            assert!(entry("stars", vec![bad]).files_for(&triple).is_err());
        }
        assert_eq!(
            ResolveAnswer::uri_list(&[file.clone(), file]),
            "http://example.org/a.bin\r\nhttp://example.org/a.bin\r\n"
        );
    }
}
