//! A command that writes into a deploy root runs as the root's owner (the deploy user) or not
//! at all: root becomes the owner, anyone else is refused before anything changes; commands
//! that only read run as whoever asks. And doctor names what the owner cannot write.
//!
//! The deploy user is a real throwaway user (useradd, removed on drop): these tests need root
//! and say SKIPPED without it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use crate::harness::users::{DeployUser, hand_over, let_in, push_as};
use crate::harness::{BIN, DevClone, Server, tree_listing};

/// A server whose repository and root belong to a fresh deploy user, which pushed v1.
fn deployed_by(user: &DeployUser) -> (Server, DevClone) {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    hand_over(&server, &clone, user.uid, user.gid);
    push_as(&server, &clone, |cmd| user.run(cmd)).success();
    (server, clone)
}

/// `atomdeploy-hook ARGS --root <root>`, run by `run` (as root: `Command::output`).
fn command(server: &Server, args: &[&str], run: impl FnOnce(&mut Command) -> Output) -> Output {
    run(server
        .command(BIN)
        .args(args)
        .arg("--root")
        .arg(&server.root))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Every path under `dir` (itself included) that `uid` owns.
fn owned_by(dir: &Path, uid: u32) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.path_is_symlink() || e.metadata().is_ok())
        .filter(|e| std::fs::symlink_metadata(e.path()).unwrap().uid() == uid)
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn replay_run_as_root_runs_as_the_owner_and_the_next_push_works() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let (server, clone) = deployed_by(&user);

    let out = command(&server, &["replay"], |cmd| cmd.output().unwrap());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.builds().len(), 2, "replay made no build");
    for dir in [&server.root, &server.repo] {
        let roots = owned_by(dir, 0);
        assert!(roots.is_empty(), "left owned by root: {roots:#?}");
    }
    assert!(
        text(&out).contains(&format!(
            "atomdeploy: running as {}, the owner of {}",
            user.name,
            server.root.display()
        )),
        "{}",
        text(&out)
    );

    clone.write("VERSION", "v2\n").commit("v2");
    push_as(&server, &clone, |cmd| user.run(cmd)).success();
    assert_eq!(server.live_revision(), clone.head());
}

#[test]
fn another_users_replay_is_refused_naming_the_owner_and_changes_nothing() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let other = DeployUser::create();
    let (server, _clone) = deployed_by(&user);
    let before = server.state();
    let files = tree_listing(&server.root);

    for args in [
        &["replay"][..],
        &["rollback"],
        &["freeze", "--message", "x"],
        &["unfreeze"],
        &["leave-group"],
        &["hosts", "exclude", "web2", "--reason", "x"],
        &["hosts", "include", "web2"],
        &["post-receive"],
    ] {
        let out = command(&server, args, |cmd| other.run(cmd));
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.starts_with("error: ")
                && said.contains(&format!("belongs to `{}`: only", user.name))
                && said.contains(&format!("sudo -u {} {BIN} {}", user.name, args.join(" "))),
            "{args:?}: {said}"
        );
    }
    server.assert_unchanged_since(&before);
    assert_eq!(tree_listing(&server.root), files, "the root changed");
}

#[test]
fn builds_answer_whoever_asks() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let other = DeployUser::create();
    let (server, _clone) = deployed_by(&user);
    let live = server.live().unwrap();

    let answers = [
        command(&server, &["builds"], |cmd| cmd.output().unwrap()),
        command(&server, &["builds"], |cmd| user.run(cmd)),
        command(&server, &["builds"], |cmd| other.run(cmd)),
    ];
    for out in answers {
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&live));
        assert!(!text(&out).contains("running as"), "{}", text(&out));
    }
    assert!(owned_by(&server.root, 0).is_empty());
}

/// An administrator's `sudo atomdeploy-hook install` into a root the deploy user made: what
/// install makes is the deploy user's, whose pushes then deploy.
#[test]
fn install_run_as_root_for_the_deploy_users_root_leaves_it_theirs() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let place = tempfile::tempdir().unwrap();
    std::fs::set_permissions(place.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = place.path().join("app");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(user.uid), Some(user.gid)).unwrap();

    let server = Server::builder().root(&root).install();
    // The harness's own `git config receive.autogc false`, run as root after install,
    // rewrote the repository's config: that one is the test's doing.
    let config = server.repo.join("config");
    std::os::unix::fs::chown(&config, Some(user.uid), Some(user.gid)).unwrap();
    for dir in [&server.root, &server.repo] {
        let roots = owned_by(dir, 0);
        assert!(roots.is_empty(), "left owned by root: {roots:#?}");
    }
    let clone = server.clone_fixture("example-app");
    let_in(&server, &clone, user.uid, user.gid);
    push_as(&server, &clone, |cmd| user.run(cmd)).success();
    assert_eq!(server.live_revision(), clone.head());
}

/// doctor's `owner` line, and its fix.
fn owner_finding(server: &Server) -> (String, String) {
    let out = command(server, &["doctor"], |cmd| cmd.output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        if let Some((level, rest)) = line.split_once(' ')
            && rest.trim_start().starts_with("owner: ")
        {
            let fix = lines
                .next()
                .and_then(|l| l.trim_start().strip_prefix("fix:"))
                .map(|f| f.trim().to_string())
                .unwrap_or_default();
            return (format!("{level} {}", rest.trim_start()), fix);
        }
    }
    panic!("no owner line:\n{stdout}");
}

#[test]
fn doctor_fails_on_a_root_owned_vendor_and_passes_after_its_fix() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let (server, _clone) = deployed_by(&user);
    let (line, _) = owner_finding(&server);
    assert!(line.starts_with("ok "), "{line}");

    // What `sudo composer install` in application/ leaves.
    let vendor = server.root.join("application/vendor");
    for entry in walkdir::WalkDir::new(&vendor) {
        std::os::unix::fs::lchown(entry.unwrap().path(), Some(0), Some(0)).unwrap();
    }
    let count = walkdir::WalkDir::new(&vendor)
        .into_iter()
        .filter(|e| !e.as_ref().unwrap().path_is_symlink())
        .count();
    let (line, fix) = owner_finding(&server);
    assert!(
        line.starts_with(&format!("FAIL owner: {}, the owner of", user.name))
            && line.contains(&format!("cannot change {count} path(s)"))
            && line.contains("application/vendor (root)"),
        "{line}"
    );
    assert_eq!(
        fix,
        format!("chown -R {}: {}", user.name, vendor.display()),
        "{line}"
    );

    let out = Command::new("sh").arg("-c").arg(&fix).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (line, _) = owner_finding(&server);
    assert!(line.starts_with("ok "), "{line}");
}
