//! Deploying as a user that is not root, as on a server a deploy user set up: a real
//! throwaway user ([`DeployUser`]), the server handed over to that user, and pushes it makes
//! from a clone root owns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{DevClone, Push, Server};

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) reads the process's own user id; it cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Hands the server (repository, deploy root, home, composer's home) to `uid:gid`, and lets
/// that user reach the root-owned clone. Once: changing an owner changes a file's ctime,
/// which link mode reads.
pub fn hand_over(server: &Server, clone: &DevClone, uid: u32, gid: u32) {
    give(&[server.repo.clone(), server.root.clone()], uid, gid);
    let_in(server, clone, uid, gid);
}

/// Gives the test's home and composer's home to `uid:gid`, and lets that user reach the
/// root-owned clone: what a push as that user needs besides the repository and the root.
pub fn let_in(server: &Server, clone: &DevClone, uid: u32, gid: u32) {
    let base = server.base();
    give(&[base.join("home"), base.join("composer-home")], uid, gid);
    for dir in [&base, &clone.path] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `chown -R uid:gid` of each of `dirs`, made first when missing.
fn give(dirs: &[PathBuf], uid: u32, gid: u32) {
    for dir in dirs {
        fs::create_dir_all(dir).unwrap();
        for entry in walkdir::WalkDir::new(dir) {
            let entry = entry.unwrap();
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).unwrap();
        }
    }
}

/// `git push <repository> HEAD:main` from `clone`, run by `run` (which makes it another
/// user's). By path, so that git has no remote-tracking ref to write into the root-owned
/// clone.
pub fn push_as(
    server: &Server,
    clone: &DevClone,
    run: impl FnOnce(&mut Command) -> Output,
) -> Push {
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
    server.env.wait_for_cleanups();
    Push {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A user made for one test with useradd (its own group, no home), deleted when dropped.
pub struct DeployUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl DeployUser {
    /// A new deploy user, or `None` (said as SKIPPED) where the tests do not run as root.
    #[track_caller]
    pub fn create_as_root() -> Option<DeployUser> {
        if !is_root() {
            eprintln!("SKIPPED: making a deploy user needs root");
            return None;
        }
        Some(DeployUser::create())
    }

    #[track_caller]
    pub fn create() -> DeployUser {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "adperm{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&["useradd", "--no-create-home", "--shell", "/bin/sh", &name]);
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        DeployUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
        }
    }

    /// Every group the user database gives the user now, as a login would.
    pub fn groups(&self) -> Vec<libc::gid_t> {
        let out = Command::new("id")
            .args(["-G", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect()
    }

    /// `cmd` run as this user with the groups a fresh login gives it (std's `uid()` would drop
    /// the supplementary ones), and a hardened server's umask, 077.
    pub fn run(&self, cmd: &mut Command) -> Output {
        self.run_with_umask(cmd, 0o077)
    }

    /// [`DeployUser::run`] with the umask `umask`.
    pub fn run_with_umask(&self, cmd: &mut Command, umask: libc::mode_t) -> Output {
        let (uid, gid, groups) = (self.uid, self.gid, self.groups());
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    }

    /// `sh -c script` as this user, with a umask of 022 (what a login shell has): must succeed.
    #[track_caller]
    pub fn sh(&self, dir: &Path, script: &str) {
        let out = self.run(
            Command::new("sh")
                .arg("-c")
                .arg(format!("umask 022; {script}"))
                .current_dir(dir),
        );
        assert!(
            out.status.success(),
            "as {}: {script}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl DeployUser {
    /// `atomdeploy-hook install --repo <repository> --root <root> ARGS` as this user.
    pub fn install(&self, server: &Server, args: &[&str]) -> Output {
        self.run(
            server
                .command(super::BIN)
                .arg("install")
                .arg("--repo")
                .arg(&server.repo)
                .arg("--root")
                .arg(&server.root)
                .args(args),
        )
    }

    /// The set-up the shipped php-fpm pool expects: this user put in www-data's group, the
    /// server (and `clone`) handed over to it, and `install --web-user www-data` run by it.
    #[track_caller]
    pub fn set_up_with_www_data(&self, server: &Server, clone: &DevClone) {
        admin(&["usermod", "-aG", "www-data", &self.name]);
        hand_over(server, clone, self.uid, self.gid);
        let out = self.install(server, &["--web-user", "www-data"]);
        assert!(
            out.status.success(),
            "install --web-user www-data: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `git push <repository> HEAD:main` from `clone` as this user.
    pub fn push(&self, server: &Server, clone: &DevClone) -> Push {
        self.push_with_umask(server, clone, 0o077)
    }

    /// [`DeployUser::push`] with the umask `umask`.
    pub fn push_with_umask(&self, server: &Server, clone: &DevClone, umask: libc::mode_t) -> Push {
        push_as(server, clone, |cmd| self.run_with_umask(cmd, umask))
    }
}

impl Drop for DeployUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// useradd, usermod: they take /etc/passwd's lock, which another test may hold a moment.
#[track_caller]
pub fn admin(args: &[&str]) {
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if !last.contains("lock") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{} failed: {last}", args.join(" "));
}
