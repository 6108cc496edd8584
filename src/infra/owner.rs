//! Who may write into a deploy root: its owner. A command that writes there run by anyone
//! else leaves files the owner cannot change (`sudo atomdeploy-hook replay` made `latest`,
//! the build, the checkout's index and 0600 records root's), and every later push by the
//! deploy user then fails. So root becomes the owner before anything is touched, and any
//! other user is refused with the command that works.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nix::unistd::{Uid, User};

use super::quote::quote_if_needed;
use super::users::{user_name, user_or_uid};

/// The uid that owns `root`: the directory's owner, or, when root owns the directory (a
/// mount point, a directory an administrator made), the owner of its `.atomdeploy/`, where
/// every deploy writes. `None` when neither can be read: the command then fails on its own
/// with its usual message.
pub(crate) fn owner_of(root: &Path) -> Option<u32> {
    let dir = std::fs::metadata(root).ok()?.uid();
    if dir != 0 {
        return Some(dir);
    }
    let state = std::fs::metadata(root.join(".atomdeploy")).map(|m| m.uid());
    Some(state.unwrap_or(0))
}

/// Makes this process the owner of `roots` before a command writes into them: nothing when
/// it runs as the owner already; as root, switches to the owner (groups, then uid) and says
/// so; as anyone else, refuses, naming the owner and the command to run instead.
///
/// Must be called while the process has one thread: it sets environment variables.
pub(crate) fn become_owner(roots: &[PathBuf]) -> Result<()> {
    let mut owners: Vec<(u32, &Path)> = roots
        .iter()
        .filter_map(|root| owner_of(root).map(|uid| (uid, root.as_path())))
        .collect();
    owners.dedup_by_key(|(uid, _)| *uid);
    let me = nix::unistd::geteuid().as_raw();
    let Some(&(owner, root)) = owners.iter().find(|(uid, _)| *uid != me) else {
        return Ok(());
    };
    if me != 0 {
        let uid_of_owner = owner;
        let owner = user_or_uid(owner);
        bail!(
            "{} belongs to `{owner}`: only `{owner}` may run a command that writes into it \
             (what `{}` made there would fail `{owner}`'s later deploys). Run it as the owner:\n\
             sudo -u {} {}",
            root.display(),
            user_or_uid(me),
            // sudo's way to name a uid without a user.
            quote_if_needed(&user_name(uid_of_owner).unwrap_or(format!("#{uid_of_owner}"))),
            same_command(root)
        );
    }
    if let Some((other, _)) = owners.iter().find(|(uid, _)| *uid != owner) {
        bail!(
            "these deploy roots belong to different users (`{}` and `{}`): run the command \
             as each one's owner, with that root alone",
            user_or_uid(owner),
            user_or_uid(*other)
        );
    }
    switch_to(owner, root)
}

/// setgid, initgroups, setuid, in that order (each later one needs the privilege the one
/// before keeps), then the owner's HOME, USER and LOGNAME: composer and git find their
/// caches and configuration in the owner's home, as on a push.
fn switch_to(uid: u32, root: &Path) -> Result<()> {
    let Some(user) = User::from_uid(Uid::from_raw(uid)).ok().flatten() else {
        bail!(
            "{} belongs to uid {uid}, which has no user on this server: give it to the deploy \
             user (`chown -R deploy: {}`)",
            root.display(),
            quote_if_needed(&root.to_string_lossy())
        );
    };
    let name = CString::new(user.name.as_str())?;
    let failed = |what: &str, err: nix::Error| {
        anyhow::anyhow!("cannot become `{}` ({what}): {err}", user.name)
    };
    nix::unistd::setgid(user.gid).map_err(|e| failed("setgid", e))?;
    nix::unistd::initgroups(&name, user.gid).map_err(|e| failed("initgroups", e))?;
    nix::unistd::setuid(user.uid).map_err(|e| failed("setuid", e))?;
    // Root could not come back now: a failed setuid above would have stopped here instead.
    debug_assert!(nix::unistd::geteuid() == user.uid && nix::unistd::getegid() == user.gid);
    // SAFETY: called from `run` before any thread is started (the caller's contract), so no
    // other thread reads the environment meanwhile.
    unsafe {
        std::env::set_var("HOME", &user.dir);
        std::env::set_var("USER", &user.name);
        std::env::set_var("LOGNAME", &user.name);
    }
    eprintln!(
        "atomdeploy: running as {}, the owner of {}",
        user.name,
        root.display()
    );
    Ok(())
}

/// What `install`, run as root for a root another user owns, made or rewrote (the
/// repository, the root's directories, deploy.yml, the records in `.atomdeploy/`) is given to
/// that owner: every push runs as the owner, and would fail on a root-owned repository
/// config, `builds/` or `.atomdeploy/`. Only entries root owns are changed; what is in
/// `application/`, `builds/` and `shared/` install never makes. Returns the owner's name and
/// how many entries changed, or `None` when nothing was to be done.
pub(crate) fn give_installed(root: &Path, repo: &Path) -> Result<Option<(String, usize)>> {
    let Some(uid) = owner_of(root).filter(|uid| *uid != 0) else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let gid = user
        .as_ref()
        .map_or(std::fs::metadata(root)?.gid(), |u| u.gid.as_raw());
    let mut paths: Vec<PathBuf> = ["application", "builds", "shared", "deploy.yml"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    for tree in [root.join(".atomdeploy"), repo.to_path_buf()] {
        for entry in walkdir::WalkDir::new(tree) {
            paths.push(entry?.into_path());
        }
    }
    let mut changed = 0;
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == 0 {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|err| {
                anyhow::anyhow!(
                    "cannot give {} to {}: {err}",
                    path.display(),
                    user_or_uid(uid)
                )
            })?;
            changed += 1;
        }
    }
    Ok((changed > 0).then(|| (user_or_uid(uid), changed)))
}

/// This very command line, for the owner to run: `--root` added when it came from
/// `$ATOMDEPLOY_ROOT`, which sudo does not pass on.
fn same_command(root: &Path) -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut words: Vec<String> = args.iter().map(|a| quote_if_needed(a)).collect();
    if !args
        .iter()
        .any(|a| a == "--root" || a.starts_with("--root="))
    {
        words.push("--root".into());
        words.push(quote_if_needed(&root.to_string_lossy()));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_owned_by_me_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(owner_of(dir.path()), Some(nix::unistd::geteuid().as_raw()));
        become_owner(&[dir.path().to_path_buf()]).unwrap();
    }

    #[test]
    fn a_root_owned_by_root_belongs_to_the_owner_of_its_state() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: giving a directory away needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(owner_of(dir.path()), Some(0));
        let state = dir.path().join(".atomdeploy");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        assert_eq!(owner_of(dir.path()), Some(65534));
        std::os::unix::fs::chown(dir.path(), Some(1), None).unwrap();
        assert_eq!(owner_of(dir.path()), Some(1));
    }

    #[test]
    fn a_missing_root_is_left_to_the_command() {
        assert_eq!(owner_of(Path::new("/no/such/root/here")), None);
        become_owner(&[PathBuf::from("/no/such/root/here")]).unwrap();
    }
}
