//! Sharing: who may do what with a collection (reTHINK's reporter and observers).
//!
//! The owner may do everything. The ACL grants three roles to lists of user ids (`"*"` means
//! any authenticated user):
//!
//! - **readers** (observers) list, pull and subscribe to live events;
//! - **writers** (reporters) may also push any change;
//! - **creators** may also push, but only new objects and objects they created themselves
//!   (reTHINK's child objects, each with its own writer).
//!
//! Everyone else is told the collection does not exist, so that ids of private collections
//! cannot be probed.

use crate::push::PushRequest;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The most user ids one ACL may list in all.
pub const MAX_ACL_ENTRIES: usize = 1000;

/// A collection's grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// May read.
    #[serde(default)]
    pub readers: Vec<String>,
    /// May read and write anything.
    #[serde(default)]
    pub writers: Vec<String>,
    /// May read, add objects, and change or delete the objects they created.
    #[serde(default)]
    pub creators: Vec<String>,
}

/// What a caller may do with a collection, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Nothing; the collection looks like it does not exist.
    Stranger,
    /// Read.
    Reader,
    /// Read, add objects, change their own.
    Creator,
    /// Read and write.
    Writer,
    /// Everything, including the ACL and reset.
    Owner,
}

impl Role {
    /// Of `caller`, on a collection of `owner` with `acl`.
    pub fn of(caller: &str, owner: &str, acl: Option<&Acl>) -> Role {
        if caller == owner {
            return Role::Owner;
        }
        let Some(acl) = acl else {
            return Role::Stranger;
        };
        let listed = |list: &[String]| list.iter().any(|u| u == caller || u == "*");
        if listed(&acl.writers) {
            Role::Writer
        } else if listed(&acl.creators) {
            Role::Creator
        } else if listed(&acl.readers) {
            Role::Reader
        } else {
            Role::Stranger
        }
    }

    /// May list, pull and subscribe.
    pub fn can_read(self) -> bool {
        self >= Role::Reader
    }

    /// May push (a creator only within [`check_authorship`]'s rules).
    pub fn can_push(self) -> bool {
        self >= Role::Creator
    }

    /// May read and change the ACL, and reset the collection.
    pub fn is_owner(self) -> bool {
        self == Role::Owner
    }
}

impl Acl {
    /// Checks the ACL's own shape: valid user ids, and not too many of them.
    pub fn validate(&self) -> Result<(), String> {
        let all = self
            .readers
            .iter()
            .chain(&self.writers)
            .chain(&self.creators);
        if all.clone().count() > MAX_ACL_ENTRIES {
            return Err(alloc::format!("at most {MAX_ACL_ENTRIES} user ids in all"));
        }
        for user in all {
            if let Err(e) = crate::names::check_id(user) {
                return Err(alloc::format!("user id {user:?} {}", e.message()));
            }
        }
        Ok(())
    }
}

/// The stored state of one object of a batch, as far as authorship goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authored<'a> {
    /// Who created the object (`None` for objects written before authors were recorded).
    pub author: Option<&'a str>,
    /// Whether the current version is a tombstone.
    pub deleted: bool,
}

/// For a creator: the indexes of the batch's objects they may not write. An object that does
/// not exist (or is a tombstone) may be created; an existing one only by its author.
pub fn check_authorship(
    caller: &str,
    request: &PushRequest,
    current: &[Option<Authored<'_>>],
) -> Vec<usize> {
    request
        .objects
        .iter()
        .zip(current)
        .enumerate()
        .filter(|(_, (_, current))| match current {
            None => false,
            Some(c) if c.deleted => false,
            Some(c) => c.author != Some(caller),
        })
        .map(|(index, _)| index)
        .collect()
}

/// The author an object has after `caller` writes it: whoever (re)created it keeps it.
pub fn author_after_write(caller: &str, current: Option<Authored<'_>>) -> String {
    match current {
        Some(Authored {
            author: Some(author),
            deleted: false,
        }) => String::from(author),
        _ => String::from(caller),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonData;
    use crate::push::{Change, PushObject};
    use alloc::string::ToString;
    use alloc::vec;

    fn acl() -> Acl {
        Acl {
            readers: vec!["r".into()],
            writers: vec!["w".into()],
            creators: vec!["c".into()],
        }
    }

    #[test]
    fn roles() {
        assert_eq!(Role::of("o", "o", None), Role::Owner);
        assert_eq!(Role::of("x", "o", None), Role::Stranger);
        assert_eq!(Role::of("r", "o", Some(&acl())), Role::Reader);
        assert_eq!(Role::of("w", "o", Some(&acl())), Role::Writer);
        assert_eq!(Role::of("c", "o", Some(&acl())), Role::Creator);
        assert_eq!(Role::of("x", "o", Some(&acl())), Role::Stranger);
        let public = Acl {
            readers: vec!["*".into()],
            ..Acl::default()
        };
        assert_eq!(Role::of("anyone", "o", Some(&public)), Role::Reader);
        let both = Acl {
            readers: vec!["u".into()],
            writers: vec!["u".into()],
            ..Acl::default()
        };
        assert_eq!(
            Role::of("u", "o", Some(&both)),
            Role::Writer,
            "the highest grant wins"
        );
        assert!(Role::Reader.can_read() && !Role::Reader.can_push());
        assert!(Role::Creator.can_push() && !Role::Creator.is_owner());
        assert!(!Role::Stranger.can_read());
    }

    #[test]
    fn creators_write_only_their_own_objects() {
        let put = |id: &str| PushObject {
            id: id.to_string(),
            kind: String::new(),
            base_seq: None,
            change: Change::Put {
                data: JsonData::parse("1").unwrap(),
                expires: None,
            },
        };
        let request = PushRequest {
            objects: vec![put("new"), put("mine"), put("theirs"), put("gone")],
            ..Default::default()
        };
        let current = [
            None,
            Some(Authored {
                author: Some("c"),
                deleted: false,
            }),
            Some(Authored {
                author: Some("o"),
                deleted: false,
            }),
            Some(Authored {
                author: Some("o"),
                deleted: true,
            }),
        ];
        assert_eq!(check_authorship("c", &request, &current), vec![2]);
        assert_eq!(author_after_write("c", current[0]), "c");
        assert_eq!(
            author_after_write("o", current[1]),
            "c",
            "an update keeps the author"
        );
        assert_eq!(
            author_after_write("c", current[3]),
            "c",
            "re-creating takes authorship"
        );
    }

    #[test]
    fn acl_validation() {
        assert!(acl().validate().is_ok());
        assert!(Acl {
            readers: vec!["".into()],
            ..Acl::default()
        }
        .validate()
        .is_err());
        let many = Acl {
            readers: (0..1001).map(|i| i.to_string()).collect(),
            ..Acl::default()
        };
        assert!(many.validate().is_err());
    }
}
