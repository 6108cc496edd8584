//! `atomdeploy-hook freeze`: pushes are received but not deployed (the pusher reads why, who
//! froze and when), `replay` is refused, rollbacks still work, `unfreeze` ends it.

use std::process::Output;

use crate::harness::{self, BIN, Push, Server, tree_listing};

/// `atomdeploy-hook freeze --message MESSAGE` as the operator `user` (behind sudo).
fn freeze(server: &Server, message: &str, user: &str) -> Output {
    server
        .command(BIN)
        .args(["freeze", "--message", message, "--root"])
        .arg(&server.root)
        .env("SUDO_USER", user)
        .output()
        .unwrap()
}

/// What the pusher must read: the message, who froze and the UTC day of the freeze.
#[track_caller]
fn assert_refused_as_frozen(push: &Push, message: &str, who: &str) {
    let error = push
        .stderr
        .lines()
        // Through the wrapper, its own `error: ` may land at the start of this line: two
        // processes write to one stderr.
        .find(|l| l.contains("remote: error: deploys are frozen"))
        .unwrap_or_else(|| panic!("no freeze error line:\n{}", push.stderr));
    assert!(error.contains(message), "{error}");
    assert!(error.contains(&format!("frozen by {who} at ")), "{error}");
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(error.contains(&today), "no UTC date {today}: {error}");
    assert!(error.contains('Z'), "not UTC: {error}");
}

#[test]
fn a_frozen_push_moves_the_branch_deploys_nothing_and_fails_through_the_wrapper() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.deploy_version("v1");
    let v2 = clone.deploy_version("v2");
    let before = server.state();
    let application = tree_listing(&server.root.join("application"));

    let out = freeze(&server, "release freeze until Monday", "alice");
    harness::assert_success(&out, "freeze");
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let push = clone.push_main().deploy_failed();
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    assert_refused_as_frozen(&push, "release freeze until Monday", "alice");
    assert!(
        push.stderr.lines().any(|l| l.starts_with(
            "error: the push was received, but its deploy failed: freeze: deploys are frozen"
        )),
        "{}",
        push.stderr
    );
    let retry = push.remote_line("atomdeploy:   retry:     ").unwrap();
    assert!(
        retry.contains("after `atomdeploy-hook unfreeze`: `git push production main:replay`"),
        "{retry}"
    );
    server.assert_unchanged_since(&before);
    assert_eq!(tree_listing(&server.root.join("application")), application);
    assert_eq!(server.live_revision(), v2);
    assert_eq!(server.branch_head("main").as_deref(), Some(v3.as_str()));
    let log = server.deploy_log();
    let last = log.last().unwrap();
    assert_eq!(last["outcome"], "failed", "{last}");
    // The commit waiting for the unfreeze is named, with the command that deploys it then.
    assert_eq!(last["commit"], v3.as_str(), "{last}");
    assert_eq!(server.builds_json()[0]["commit"], v3.as_str());
    let error = push.remote_line("error: deploys are frozen").unwrap();
    let replay = format!("git push production {}:refs/heads/replay", &v3[..7]);
    assert!(error.ends_with(&format!(": `{replay}`")), "{error}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("release freeze until Monday"),
        "{last}"
    );

    // A rollback is how a bad live build is left: a freeze does not stand in its way.
    clone.push(&[":rollback"]).success();
    assert_ne!(server.live_revision(), v2, "the rollback did not switch");
    server.assert_only_complete_builds(&[]);

    let out = server.run(&["unfreeze"]);
    harness::assert_success(&out, "unfreeze");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("frozen by alice"), "{said}");
    assert!(!server.root.join(".atomdeploy/freeze.json").exists());
    clone.run_printed(&replay).success();
    assert_eq!(server.live_revision(), v3);
    let v4 = clone.deploy_version("v4");
    assert_eq!(server.live_revision(), v4);
    assert!(server.read_live("src/Version.php").contains("'v4'"));
}

#[test]
fn replay_is_refused_while_frozen_and_rollback_still_works() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v1 = clone.deploy_version("v1");
    let v2 = clone.deploy_version("v2");
    harness::assert_success(&freeze(&server, "first", "bob"), "freeze");
    // A second freeze replaces the message.
    harness::assert_success(
        &freeze(&server, "audit until Friday", "bob"),
        "freeze again",
    );
    let before = server.state();

    let out = server.run(&["replay"]);
    assert!(!out.status.success(), "replay ran while frozen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deploys are frozen"), "{stderr}");
    assert!(stderr.contains("audit until Friday"), "{stderr}");
    assert!(!stderr.contains("\"first\""), "{stderr}");
    server.assert_unchanged_since(&before);

    let push = clone.push(&["main:replay"]).deploy_failed();
    assert_refused_as_frozen(&push, "audit until Friday", "bob");
    server.assert_unchanged_since(&before);
    assert_eq!(server.live_revision(), v2);

    let out = server.run(&["rollback"]);
    harness::assert_success(&out, "rollback while frozen");
    assert_eq!(server.live_revision(), v1);
}

#[test]
fn a_plain_push_exits_0_as_git_does_but_shows_the_freeze_and_deploys_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let before = server.state();
    // No SUDO_USER, no USER (the test environment is cleared): the uid's name.
    let out = server
        .command(BIN)
        .args(["freeze", "--message", "moving datacenters", "--root"])
        .arg(&server.root)
        .output()
        .unwrap();
    harness::assert_success(&out, "freeze");
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    assert_refused_as_frozen(&push, "moving datacenters", "root");
    server.assert_unchanged_since(&before);
    assert_eq!(server.branch_head("main").as_deref(), Some(v2.as_str()));
}

#[test]
fn an_empty_freeze_message_is_refused_and_changes_nothing() {
    let server = Server::install();
    let out = server.run(&["freeze", "--message", "  "]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--message is empty"));
    assert!(!server.root.join(".atomdeploy/freeze.json").exists());
    let out = server.run(&["unfreeze"]);
    harness::assert_success(&out, "unfreeze when not frozen");
}

#[test]
fn a_damaged_freeze_file_still_refuses_and_unfreeze_clears_it() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let before = server.state();
    // Half a file, as a full disk leaves a hand edit: deploying through a freeze someone set
    // would be the worse mistake, so it refuses.
    std::fs::write(
        server.root.join(".atomdeploy/freeze.json"),
        "{\"message\": \"do not",
    )
    .unwrap();
    clone.set_version("v2");
    clone.commit("v2");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("freeze.json is not a freeze; remove it to deploy");
    server.assert_unchanged_since(&before);
    let out = server.run(&["unfreeze"]);
    harness::assert_success(&out, "unfreeze of a damaged file");
    let v3 = clone.deploy_version("v3");
    assert_eq!(server.live_revision(), v3);
}

#[test]
fn the_primarys_freeze_holds_the_whole_group() {
    let primary = Server::install();
    let host = Server::install();
    let link = primary.base().join("web2.git");
    std::os::unix::fs::symlink(&host.repo, &link).unwrap();
    primary.set_config("hosts", &format!("[{}]", link.display()));
    let clone = primary.clone_fixture("example-app");
    let v1 = clone.deploy_version("v1");
    assert_eq!(host.live_revision(), v1);
    let before = (primary.state(), host.state());

    harness::assert_success(&freeze(&primary, "black friday", "carol"), "freeze");
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    assert_refused_as_frozen(&push, "black friday", "carol");
    primary.assert_unchanged_since(&before.0);
    host.assert_unchanged_since(&before.1);

    harness::assert_success(&primary.run(&["unfreeze"]), "unfreeze");
    let v3 = clone.deploy_version("v3");
    assert_eq!(
        (primary.live_revision(), host.live_revision()),
        (v3.clone(), v3)
    );
}
