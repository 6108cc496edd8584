//! The user and group databases (passwd, group, and whatever NSS adds: LDAP, sssd), looked
//! up through the `nix` crate's safe wrappers of the reentrant `get*_r` calls. A lookup that
//! fails for any reason reads as "no such entry": every caller then says the id instead.
//! And where the hook's own user keeps its configuration and caches (XDG).

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// uid and primary gid of the user `name`.
pub(crate) fn by_name(name: &str) -> Option<(u32, u32)> {
    let user = User::from_name(name).ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The name of the user with `uid`.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    Some(User::from_uid(Uid::from_raw(uid)).ok().flatten()?.name)
}

/// The name of the group with `gid`.
pub(crate) fn group_name(gid: u32) -> Option<String> {
    Some(Group::from_gid(Gid::from_raw(gid)).ok().flatten()?.name)
}

/// The group's name, or its number when it has none: for a message.
pub(crate) fn group_or_gid(gid: u32) -> String {
    group_name(gid).unwrap_or_else(|| gid.to_string())
}

/// The user's name, or `uid N` when it has none: for a message.
pub(crate) fn user_or_uid(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// The gid of the group `name`.
pub(crate) fn group_id(name: &str) -> Option<u32> {
    Some(Group::from_name(name).ok().flatten()?.gid.as_raw())
}

/// Every group the database gives `user`, `primary` included; `None` when it cannot say
/// (more groups than the system allows, a name with a NUL byte).
pub(crate) fn groups_of(user: &str, primary: u32) -> Option<Vec<u32>> {
    let name = CString::new(user).ok()?;
    let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(primary)).ok()?;
    Some(groups.into_iter().map(Gid::as_raw).collect())
}

/// The uid this process runs as.
pub(crate) fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// One of the hook user's XDG base directories: `$var` when it is an absolute path, else
/// `~/<default>` (`XDG_CONFIG_HOME` → `~/.config`, `XDG_CACHE_HOME` → `~/.cache`).
pub(crate) fn xdg_dir(var: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))
        .filter(|p| p.is_absolute())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_both_ways() {
        assert_eq!(by_name("root"), Some((0, 0)));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root"), Some(0));
        assert!(groups_of("root", 0).unwrap().contains(&0));
    }

    #[test]
    fn unknown_names_and_ids_are_none() {
        assert_eq!(by_name("no-such-user-here"), None);
        assert_eq!(by_name("nul\0byte"), None);
        assert_eq!(group_id("no-such-group-here"), None);
        assert_eq!(user_name(4_000_000_000), None);
        assert_eq!(group_name(4_000_000_000), None);
    }
}
