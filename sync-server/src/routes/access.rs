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
