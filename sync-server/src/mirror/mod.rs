//! Mirrors: collections this server copies from an upstream server and serves read-only.
//!
//! - [`MirrorSpec`]: one `--mirror` setting (upstream URL, app, owner, collection, token).
//! - [`Mirrors`]: which local collections are copies, for the handlers that must refuse
//!   writes to them (`403` with the upstream's URL).
//! - [`follow`]: the task that keeps one copy up to date: it pulls with the normal protocol,
//!   follows the upstream's live events (or polls), fetches missing blobs, resyncs when the
//!   upstream resets and reconciles periodically.
//!
//! The copy is stored under the same `(app, owner, collection)` as upstream, with the
//! upstream's seqs, `collection_id` and horizon (`Store::apply_mirrored`), so a client can move
//! between the primary and any mirror of a chain with the same cursor. The local head is
//! the mirror's cursor, so it persists with the data.

pub mod follow;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sync_core::names;

use crate::config::Config;
use crate::store::{CollectionKey, Store};

/// One collection to follow, from `upstream=<url>;app=<app>;owner=<owner>;collection=<name>[;token=<t>]`.
#[derive(Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    /// The upstream server's base URL (`http://primary:8080`), without a trailing slash.
    pub upstream: String,
    /// The collection, named as on the upstream (and here).
    pub key: CollectionKey,
    /// The bearer token sent upstream, if any.
    pub token: Option<String>,
}

impl MirrorSpec {
    /// The upstream's URL of the collection (`…/v1/data/{app}/{owner}/{collection}`).
    pub fn collection_url(&self) -> String {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "{}/v1/data/{}/{}/{}",
            self.upstream,
            self.key.app,
            encode(&self.key.owner),
            self.key.name
        )
    }
}

/// The token stays out of logs and `--help` output.
impl fmt::Debug for MirrorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorSpec")
            .field("upstream", &self.upstream)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl FromStr for MirrorSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<MirrorSpec, String> {
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=value"))?;
            if fields.insert(name.trim(), value.trim()).is_some() {
                return Err(format!("{name} is given twice"));
            }
        }
        let mut take = |name: &str| fields.remove(name);
        let upstream = take("upstream").ok_or("upstream=<URL> is missing")?;
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(format!("upstream {upstream:?} must be an http(s) URL"));
        }
        let app = take("app").ok_or("app= is missing")?;
        let owner = take("owner").ok_or("owner= is missing")?;
        let name = take("collection").ok_or("collection= is missing")?;
        let token = take("token").filter(|t| !t.is_empty()).map(str::to_string);
        if let Some(unknown) = fields.keys().next() {
            return Err(format!(
                "unknown field {unknown:?} (expected upstream, app, owner, collection, token)"
            ));
        }
        if !names::is_valid_app(app) {
            return Err(format!("app {app:?} is not a valid app name"));
        }
        names::check_id(owner).map_err(|e| format!("owner {owner:?}: {}", e.message()))?;
        if !names::is_valid_collection(name) {
            return Err(format!(
                "collection {name:?} is not a valid collection name"
            ));
        }
        Ok(MirrorSpec {
            upstream: upstream.trim_end_matches('/').to_string(),
            key: CollectionKey {
                app: app.to_string(),
                owner: owner.to_string(),
                name: name.to_string(),
            },
            token,
        })
    }
}

/// The collections this server mirrors, by local key.
#[derive(Debug, Default)]
pub struct Mirrors {
    upstream_of: HashMap<CollectionKey, String>,
}

impl Mirrors {
    /// The mirrors in a configuration. Two settings for one collection are refused.
    pub fn from_config(config: &Config) -> anyhow::Result<Mirrors> {
        let mut upstream_of = HashMap::new();
        for spec in &config.mirrors {
            if upstream_of
                .insert(spec.key.clone(), spec.collection_url())
                .is_some()
            {
                anyhow::bail!("--mirror: {:?} is mirrored twice", spec.key);
            }
        }
        Ok(Mirrors { upstream_of })
    }

    /// The upstream URL of a mirrored collection; `None` for the server's own collections.
    pub fn upstream_of(&self, key: &CollectionKey) -> Option<&str> {
        self.upstream_of.get(key).map(String::as_str)
    }
}

/// Starts one [`follow::Follower`] task per mirrored collection.
pub fn start(
    config: &Config,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    Ok(config
        .mirrors
        .iter()
        .map(|spec| {
            let follower = follow::Follower {
                spec: spec.clone(),
                store: store.clone(),
                http: http.clone(),
                poll_interval: config.mirror_poll_interval,
                reconcile_interval: config.mirror_reconcile_interval,
            };
            tokio::spawn(follower.run())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_everything_and_hides_its_token() {
        let spec: MirrorSpec =
            "upstream=http://p:8080/; app=notes; owner=alice; collection=files; token=s3cret"
                .parse()
                .unwrap();
        assert_eq!(spec.upstream, "http://p:8080");
        assert_eq!(
            spec.collection_url(),
            "http://p:8080/v1/data/notes/alice/files"
        );
        assert_eq!(spec.token.as_deref(), Some("s3cret"));
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (text, why) in [
            ("app=a;owner=o;collection=c", "upstream"),
            ("upstream=ftp://x;app=a;owner=o;collection=c", "http"),
            ("upstream=http://x;app=A!;owner=o;collection=c", "app"),
            (
                "upstream=http://x;app=a;owner=o;collection=..",
                "collection",
            ),
            (
                "upstream=http://x;app=a;owner=o;collection=c;colour=red",
                "colour",
            ),
            (
                "upstream=http://x;app=a;app=b;owner=o;collection=c",
                "twice",
            ),
        ] {
            let error = text.parse::<MirrorSpec>().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
