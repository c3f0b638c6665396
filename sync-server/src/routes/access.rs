//! Who may do what with a collection: names are checked, then the caller's role.
//!
//! A caller with no role at all gets `404`, exactly as for a collection that does not exist,
//! so that private collections cannot be discovered by probing. A caller who may read but
//! asks for more gets `403`.

use sync_core::acl::Role;
use sync_core::names;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::CollectionKey;
use crate::AppState;

/// What a request needs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// List, pull, subscribe.
    Read,
    /// Push.
    Push,
    /// Read or change the ACL, reset.
    Own,
}

/// Checks the app name and resolves the owner (`~` is the caller).
pub fn owner_in_path(caller: &Caller, app: &str, owner: &str) -> Result<String, ApiError> {
    if !names::is_valid_app(app) {
        return Err(ApiError::invalid_field(
            "app",
            "must match [a-z0-9][a-z0-9._-]{0,63}",
        ));
    }
    let owner = if owner == "~" {
        caller.0.clone()
    } else {
        owner.to_string()
    };
    if let Err(e) = names::check_id(&owner) {
        return Err(ApiError::invalid_field("owner", e.message()));
    }
    Ok(owner)
}

/// Checks the names in a collection path and that the caller may do `need`; returns the key
/// and the caller's role.
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    (app, owner, name): (String, String, String),
    need: Need,
) -> Result<(CollectionKey, Role), ApiError> {
    let owner = owner_in_path(caller, &app, &owner)?;
    if !names::is_valid_collection(&name) {
        return Err(ApiError::invalid_field(
            "collection",
            "must match [A-Za-z0-9_.-]{1,64} and not be . or ..",
        ));
    }
    let key = CollectionKey { app, owner, name };
    let role = role_of(state, &caller.0, &key).await?;
    check(role, need)?;
    Ok((key, role))
}

/// The caller's role on a collection (reads the ACL only for callers other than the owner).
pub async fn role_of(
    state: &AppState,
    caller: &str,
    key: &CollectionKey,
) -> Result<Role, ApiError> {
    if caller == key.owner {
        return Ok(Role::Owner);
    }
    let acl = state.store.acl(key).await?;
    Ok(Role::of(caller, &key.owner, acl.as_ref()))
}

/// Refuses writes to a collection this server mirrors (`403` naming the upstream).
pub fn refuse_if_mirrored(state: &AppState, key: &CollectionKey) -> Result<(), ApiError> {
    match state.mirrors.upstream_of(key) {
        Some(upstream) => Err(ApiError::Mirrored(upstream.to_string())),
        None => Ok(()),
    }
}

/// On a mirrored collection, a cursor ahead of the copy most likely comes from a server
/// further up the chain that this mirror has not caught up with yet: `503` (retry later),
/// not `410` (which would make the client drop everything).
pub async fn refuse_if_mirror_behind(
    state: &AppState,
    key: &CollectionKey,
    since: u64,
) -> Result<(), ApiError> {
    if state.mirrors.upstream_of(key).is_none() {
        return Ok(());
    }
    let head = state.store.head(key).await?;
    if since > head.last_seq && head.collection_id.is_some() {
        return Err(ApiError::Unavailable(format!(
            "the mirror is at seq {}; a client asked for since={since}",
            head.last_seq
        )));
    }
    Ok(())
}

/// Whether `role` suffices for `need`.
pub fn check(role: Role, need: Need) -> Result<(), ApiError> {
    if !role.can_read() {
        return Err(ApiError::NotFound);
    }
    match need {
        Need::Read => Ok(()),
        Need::Push if role.can_push() => Ok(()),
        Need::Push => Err(ApiError::Forbidden(
            "you may read this collection but not write to it",
        )),
        Need::Own if role.is_owner() => Ok(()),
        Need::Own => Err(ApiError::Forbidden(
            "only the collection's owner may do this",
        )),
    }
}
