//! Deploying as a user that is not root, as on a server a deploy user set up: the server
//! handed over to that user, and pushes it makes from a clone root owns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use super::{Clone, Push, Server};

/// Hands the server (repository, deploy root, home, composer's home) to `uid:gid`, and lets
/// that user reach the root-owned clone. Once: changing an owner changes a file's ctime,
/// which link mode reads.
pub fn hand_over(server: &Server, clone: &Clone, uid: u32, gid: u32) {
    let base = server.base();
    for dir in [
        server.repo.clone(),
        server.root.clone(),
        base.join("home"),
        base.join("composer-home"),
    ] {
        fs::create_dir_all(&dir).unwrap();
        for entry in walkdir::WalkDir::new(dir) {
            let entry = entry.unwrap();
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).unwrap();
        }
    }
    for dir in [&base, &clone.path] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `git push <repository> HEAD:main` from `clone`, run by `run` (which makes it another
/// user's). By path, so that git has no remote-tracking ref to write into the root-owned
/// clone.
pub fn push_as(server: &Server, clone: &Clone, run: impl FnOnce(&mut Command) -> Output) -> Push {
    let out = run(server
        .command("git")
        .arg("push")
        .arg(&server.repo)
        .arg("HEAD:main")
        // The clone is root's: git reads another user's repository only when told to.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .current_dir(&clone.path));
    Push {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
