//! `git push` tells the truth: through `atomdeploy-hook receive-pack` (set as the remote's
//! receivepack, or run by `serve` as an ssh forced command) a push whose deploy failed exits
//! non-zero, after a summary of what failed, what is live and how to retry.

use std::fs;

use crate::harness::sshd::{GIT_SHELL_ONLY, SshClient, Sshd, group_primary_only, serve_only};
use crate::harness::{BIN, Push, Server, assert_success};

/// A failed push as the wrapper ends it: exit 1, the summary from the hook, and the wrapper's
/// own `error:` line.
#[track_caller]
fn assert_failed_with_summary(push: &Push, step: &str) {
    assert_eq!(
        push.code,
        Some(1),
        "the push did not fail:\n{}",
        push.stderr
    );
    let failed = push
        .remote_line("atomdeploy:   failed in: ")
        .unwrap_or_else(|| panic!("no summary:\n{}", push.stderr));
    assert!(failed.contains(step), "{failed}");
    assert!(push.remote_line("atomdeploy:   live now:  ").is_some());
    assert!(
        push.stderr
            .contains("or deploy a commit again: `git push production "),
        "{}",
        push.stderr
    );
    // The wrapper writes it after receive-pack ended, but the client prints the `remote:`
    // lines on a thread of its own (and over ssh they come on another stream): where it
    // shows among them is the client's doing, so only its presence is asserted.
    let wrapper = format!("error: the push was received, but its deploy failed: {step}");
    assert!(
        push.stderr.lines().any(|l| l.starts_with(&wrapper)),
        "{}",
        push.stderr
    );
}

#[test]
fn a_good_deploy_exits_0_and_a_failing_composer_exits_1_with_the_summary() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    let live = server.live().unwrap();
    let before = server.state();

    clone.write("composer.json", "{ this is not json");
    clone.commit("broken composer.json");
    let push = clone.push_main().deploy_failed();
    assert_failed_with_summary(&push, "composer");
    let shown = push.remote_line("atomdeploy:   live now:  ").unwrap();
    assert!(shown.contains(&format!("builds/{live}")), "{shown}");
    server.assert_unchanged_since(&before);
}

#[test]
fn a_failing_before_switch_exits_1_and_a_plain_push_still_exits_0() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config("before_switch", "['echo no migrations today; exit 3']");
    clone.set_version("v2");
    clone.commit("v2");

    // Without the wrapper: as before, git ignores the hook's status.
    let plain = clone.push_main().deploy_failed();
    assert_eq!(plain.code, Some(0), "{}", plain.stderr);

    clone.wrap();
    clone.set_version("v3");
    clone.commit("v3");
    let push = clone.push_main().deploy_failed();
    assert_failed_with_summary(&push, "before_switch");
}

#[test]
fn a_failing_health_check_exits_1_after_the_rollback() {
    let server = Server::builder()
        .config(
            "healthcheck",
            "{command: 'grep -q healthy latest/public/status.txt', retries: 1, interval: 0.05}",
        )
        .install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.write("public/status.txt", "healthy\n");
    clone.commit("healthy");
    clone.push_main().success();
    let good = server.live().unwrap();

    clone.write("public/status.txt", "sick\n");
    clone.commit("sick");
    let push = clone.push_main().deploy_failed();
    assert_failed_with_summary(&push, "healthcheck");
    assert_eq!(server.live().unwrap(), good);
    let shown = push.remote_line("atomdeploy:   live now:  ").unwrap();
    assert!(shown.contains(&format!("builds/{good}")), "{shown}");
}

#[test]
fn pushes_that_deploy_nothing_exit_0() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    clone.git(&["checkout", "-q", "-b", "feature"]);
    clone.commit("feature work");
    let push = clone.push(&["feature"]).success();
    push.stderr_has("is not the deploy branch");
    clone.git(&["tag", "v1"]);
    clone.push(&["v1"]).success();
    // Already up to date: no hook runs at all.
    clone.push_main().success();
}

/// Two pushes at once through the wrapper, the second waiting for the first's lock: each exits
/// with its own deploy's result, once with the first failing and once with the second.
#[test]
fn concurrent_pushes_each_get_their_own_result() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    let gate = server.gate_deploys();
    // The gate, then a check that fails for a commit that carries `fail-me`.
    let gated = fs::read_to_string(server.config_path()).unwrap();
    let gate_cmd = gated
        .lines()
        .find_map(|l| l.strip_prefix("before_switch: ['"))
        .unwrap()
        .trim_end_matches("']")
        .to_string();
    server.set_config(
        "before_switch",
        &format!("['{gate_cmd}', 'test ! -e fail-me']"),
    );

    clone.write("fail-me", "");
    clone.commit("fails in before_switch");
    let first = clone.spawn_push(&["main"]);
    gate.wait_held(&first);

    let other = server.clone_repo("other");
    other.wrap();
    other.remove("fail-me");
    other.commit("good again");
    let second = other.spawn_push(&["HEAD:main"]);
    second.wait_for_output("waiting for the deploy lock");
    gate.open();

    let first = first.finish();
    let second = second.finish();
    assert_failed_with_summary(&first, "before_switch");
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("remote: deployed "),
        "{}",
        second.stderr
    );
    assert_eq!(server.live_revision(), other.head());
}

#[test]
fn a_lock_timeout_exits_1_while_the_holder_exits_0() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    let gate = server.gate_deploys();
    clone.set_version("v2");
    clone.commit("v2");
    let holder = clone.spawn_push(&["main"]);
    gate.wait_held(&holder);
    server.set_config("lock_timeout", "0");

    let other = server.clone_repo("other");
    other.wrap();
    other.git(&["commit", "-q", "--allow-empty", "-m", "v3"]);
    let push = other.push(&["HEAD:main"]);
    gate.open();
    let holder = holder.finish();

    assert_eq!(holder.code, Some(0), "{}", holder.stderr);
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    push.stderr_has("gave up waiting for the deploy lock after 0s")
        .stderr_has("remote: atomdeploy:   live now:  ")
        .stderr_has("error: the push was received, but its deploy failed: ");
}

#[test]
fn pushing_to_replay_deploys_again_after_a_rollback_twice_in_a_row() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    let v1 = server.live().unwrap();
    clone.set_version("v2");
    let v2_commit = clone.commit("v2");
    clone.push_main().success();

    clone.push(&[":rollback"]).success();
    assert_eq!(server.live().unwrap(), v1);
    // Nothing new to push: git says so and nothing happens.
    clone
        .push_main()
        .success()
        .stderr_has("Everything up-to-date");
    assert_eq!(server.live().unwrap(), v1);

    let mut seen = vec![v1];
    for round in 0..2 {
        clone.push(&["main:replay"]).success();
        let live = server.live().unwrap();
        assert!(!seen.contains(&live), "round {round}: no new build");
        assert_eq!(server.live_revision(), v2_commit);
        assert_eq!(server.branch_head("replay"), None, "round {round}");
        seen.push(live);
    }
}

#[test]
fn a_failing_replay_and_a_failing_rollback_exit_1() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    clone.deploy_version("v2");

    server.set_config("before_switch", "['exit 9']");
    let push = clone.push(&["main:replay"]);
    assert_failed_with_summary(&push, "before_switch");
    assert_eq!(server.branch_head("replay"), None);
    server.set_config("before_switch", "[]");

    // A `latest` that is no symlink: the rollback refuses to switch anything.
    let latest = server.latest();
    let target = fs::read_link(&latest).unwrap();
    fs::remove_file(&latest).unwrap();
    fs::create_dir(&latest).unwrap();
    let push = clone.push(&[":rollback"]);
    fs::remove_dir(&latest).unwrap();
    std::os::unix::fs::symlink(target, &latest).unwrap();
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    push.stderr_has("remote: atomdeploy: ---- the rollback FAILED ----");
}

#[test]
fn serve_refuses_other_commands_and_other_repositories() {
    let server = Server::install();
    let other = server.base().join("other.git");
    server
        .command("git")
        .args(["init", "-q", "--bare"])
        .arg(&other)
        .status()
        .unwrap();
    for (asked, says) in [
        ("sh -c id", "refused `sh -c id`"),
        ("git-upload-archive 'app.git'", "refused"),
        ("git-receive-pack 'app.git'; id", "refused"),
        (
            &format!("git-receive-pack '{}'", other.display()) as &str,
            "may only push to and fetch from",
        ),
    ] {
        let out = server
            .command(BIN)
            .args(["serve", "--repo"])
            .arg(&server.repo)
            .env("SSH_ORIGINAL_COMMAND", asked)
            .current_dir(server.base())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{asked}: {stderr}");
        assert!(stderr.contains(says), "{asked}: {stderr}");
        assert!(out.stdout.is_empty(), "{asked}");
    }
    let out = server
        .command(BIN)
        .args(["serve", "--repo"])
        .arg(&server.repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shell"));
}

/// The hook killed mid-deploy never says how it went: the push fails as "unknown", and the
/// next push, with its own status file, gets its own answer.
#[test]
fn a_killed_hook_makes_the_result_unknown_and_misleads_no_later_push() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_with_fault(&["main"], "locked!pid");
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    push.stderr_has("the deploy's result is unknown");

    clone.deploy_version("v3");
    assert_eq!(server.live_revision(), clone.head());
}

/// Over a real ssh: a deploy key whose authorized_keys line runs `serve`, and a key without one
/// whose clone sets `remote.production.receivepack`. Each sees a failed deploy as exit 1 and a
/// good one as exit 0.
#[test]
fn over_ssh_both_set_ups_tell_the_truth() {
    let server = Server::install();
    let dir = server.base().join("ssh");
    let (forced_key, plain_key) = (
        SshClient::new(&dir.join("forced")),
        SshClient::new(&dir.join("plain")),
    );
    let forced = format!(
        "command=\"{BIN} serve --repo {}\",no-pty,no-port-forwarding,no-X11-forwarding,no-agent-forwarding ",
        server.repo.display()
    );
    let sshd = Sshd::builder(&dir.join("sshd"))
        .addr(std::net::Ipv4Addr::LOCALHOST)
        .authorize(&forced, &forced_key.public_key())
        .authorize("", &plain_key.public_key())
        .env_of(&server)
        .start();
    forced_key.trust(&sshd);
    plain_key.trust(&sshd);
    let url = sshd.url(&server.repo);
    let ssh_with = |client: &SshClient| client.command();

    let clone = server.clone_fixture("example-app");
    clone.git(&["remote", "set-url", "production", &url]);
    clone.git(&["config", "core.sshCommand", &ssh_with(&forced_key)]);
    clone.push_main().success();
    assert_eq!(server.live_revision(), clone.head());
    server.set_config("before_switch", "['echo migrations failed; exit 3']");
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    assert_failed_with_summary(&push, "before_switch");
    // What the pusher saw, for `--nocapture` (the README and closing notes quote it).
    eprintln!(
        "$ git push production main  # over ssh, forced command\n{}exit {:?}",
        push.stderr, push.code
    );
    // The forced command fetches too, and refuses a shell.
    clone.git(&["fetch", "-q", "production"]);
    let out = server
        .command("ssh")
        .args(forced_key.args())
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "id"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused `id`"));
    server.set_config("before_switch", "[]");

    // The other set-up: an ordinary key, the wrapper named in the clone's config.
    let other = server.clone_repo("other");
    other.git(&["remote", "set-url", "production", &url]);
    other.git(&["config", "core.sshCommand", &ssh_with(&plain_key)]);
    other.git(&[
        "config",
        "remote.production.receivepack",
        &format!("{BIN} receive-pack"),
    ]);
    server.set_config("before_switch", "['exit 4']");
    other.set_version("v3");
    other.commit("v3");
    let push = other.push(&["HEAD:main"]).deploy_failed();
    assert_failed_with_summary(&push, "before_switch");
    server.set_config("before_switch", "[]");
    other.set_version("v4");
    other.commit("v4");
    let push = other.push(&["HEAD:main"]).success();
    eprintln!(
        "$ git push production HEAD:main  # over ssh, receivepack set in the clone\n{}exit {:?}",
        push.stderr, push.code
    );
    assert_eq!(server.live_revision(), other.head());
    drop(sshd);
}

/// What is on the server, from a developer's machine without a shell: the key whose forced
/// command is `serve` reads `builds`, `builds --json`, `log` and `log <build>` over a real
/// sshd, with no webhook's URL nor auth.json's secret in them; anything else it asks is
/// refused with an `error:` line and changes nothing.
#[test]
fn over_ssh_serve_shows_builds_and_logs_and_refuses_everything_else() {
    let server = Server::builder()
        .config(
            "notify",
            "[{url: 'http://127.0.0.1:9/hooks/WEBHOOK-SECRET-7f3a?token=WEBHOOK-SECRET-7f3a'}]",
        )
        .install();
    let auth = server.root.join("auth.json");
    fs::write(
        &auth,
        r#"{"http-basic": {"repo.example.org": {"username": "ci", "password": "AUTH-SECRET-91c2"}}}"#,
    )
    .unwrap();
    fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    clone.deploy_version("v2");
    server.set_config("before_switch", "['echo migrations failed; exit 3']");
    clone.set_version("v3");
    clone.commit("v3");
    clone.push_main().deploy_failed();
    server.set_config("before_switch", "[]");
    let built = server.builds();
    assert_eq!(built.len(), 2, "{built:?}");

    let dir = server.base().join("ssh");
    let developer = SshClient::new(&dir.join("developer"));
    let primary = SshClient::new(&dir.join("primary"));
    let git_only = SshClient::new(&dir.join("git-only"));
    let sshd = Sshd::builder(&dir.join("sshd"))
        .authorize(&serve_only(&server), &developer.public_key())
        .authorize(&group_primary_only(&server), &primary.public_key())
        .authorize(GIT_SHELL_ONLY, &git_only.public_key())
        .env_of(&server)
        .start();
    for client in [&developer, &primary, &git_only] {
        client.trust(&sshd);
    }
    let ssh = |command: &str| {
        let out = developer.run(&sshd, command);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        for secret in ["WEBHOOK-SECRET", "AUTH-SECRET"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "`{command}` shows {secret}:\n{stdout}{stderr}"
            );
        }
        (out.status.code(), stdout, stderr)
    };

    let (code, listed, stderr) = ssh("builds");
    assert_eq!(code, Some(0), "{stderr}");
    for build in &built {
        assert!(
            listed.contains(build.as_str()),
            "{build} not listed:\n{listed}"
        );
    }
    let failed_id = listed
        .lines()
        .find_map(|l| l.trim().strip_prefix("log: atomdeploy-hook log "))
        .unwrap_or_else(|| panic!("no failed attempt listed:\n{listed}"))
        .to_string();

    let (code, json, stderr) = ssh("builds --json");
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, built.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rows.iter().any(|r| r["state"] == "failed"), "{json}");
    assert!(rows.iter().any(|r| r["state"] == "live"), "{json}");

    let (code, latest, stderr) = ssh("log");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(latest.contains("migrations failed"), "{latest}");
    let (code, first, stderr) = ssh(&format!("log {}", built[0]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        first.contains(&format!("builds/{}", built[0])),
        "not the log of {}:\n{first}",
        built[0]
    );
    let (code, failed, stderr) = ssh(&format!("log {failed_id}"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(failed.contains("migrations failed"), "{failed}");

    let refs = || {
        let out = server
            .command("git")
            .arg("--git-dir")
            .arg(&server.repo)
            .arg("for-each-ref")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let history = || fs::read_to_string(server.root.join(".atomdeploy/deploys.jsonl")).unwrap();
    let (before, refs_before, history_before) = (server.state(), refs(), history());
    // Every other command the binary has, the hidden ones included (`empty-trash`,
    // `post-receive`, …), read from its own definitions so that a command added later is
    // asked too.
    let commands: Vec<String> = {
        use clap::CommandFactory;
        atomdeploy_hook::commands::cli::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|name| name != "builds" && name != "log")
            .collect()
    };
    assert!(commands.iter().any(|c| c == "empty-trash"), "{commands:?}");
    let hand_picked = [
        "log ../../etc/passwd",
        "log /etc/passwd",
        "log 20261126-101500/../../../etc/passwd",
        &format!("log {} extra", built[0]),
        "builds; id",
        "builds --json; id",
        "builds $(id)",
        "builds --all",
        "rollback",
        "rollback --to 20261126-101500",
        "freeze --message no",
        "unfreeze",
        "replay",
        "sh",
        "sh -c id",
    ];
    for asked in hand_picked
        .iter()
        .copied()
        .chain(commands.iter().map(String::as_str))
    {
        let (code, stdout, stderr) = ssh(asked);
        assert_eq!(
            code,
            Some(1),
            "`{asked}` was not refused:\n{stdout}{stderr}"
        );
        assert!(
            stderr.starts_with(&format!("error: refused `{asked}`")),
            "`{asked}`: {stderr}"
        );
        assert!(stdout.is_empty(), "`{asked}` printed:\n{stdout}");
        server.assert_unchanged_since_in(&before, asked);
        assert_eq!(refs(), refs_before, "`{asked}` moved a ref");
        assert_eq!(history(), history_before, "`{asked}` wrote the deploy log");
    }

    // The group primary's key goes through `serve` too; a key restricted to git-shell does not.
    let out = primary.run(&sshd, "builds --json");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), json);
    let out = git_only.run(&sshd, "builds");
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    drop(sshd);
}

/// A repository with several roots: `builds` and `log` through `serve` name the root by its
/// branch, each answering for its own root alone; without the branch they say which to name.
#[test]
fn serve_reads_the_root_of_the_branch_named_when_there_are_several() {
    let main = Server::install();
    let staging = main.other_root(&main.base().join("staging"));
    assert_success(
        &staging.run_install(&main.repo, &["--branch", "staging"]),
        "install of the second root",
    );
    let clone = main.clone_fixture("example-app");
    clone.push_main().success();
    clone.push(&["main:staging"]).success();
    let (main_build, staging_build) = (main.live().unwrap(), staging.live().unwrap());
    let serve = |asked: &str| {
        let out = main
            .command(BIN)
            .args(["serve", "--repo"])
            .arg(&main.repo)
            .env("SSH_ORIGINAL_COMMAND", asked)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (asked, build) in [
        ("builds --json main", &main_build),
        ("builds --json staging", &staging_build),
    ] {
        let (code, stdout, stderr) = serve(asked);
        assert_eq!(code, Some(0), "{asked}: {stderr}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(names, [build.as_str()], "{asked}");
    }
    let (code, stdout, stderr) = serve(&format!("log staging {staging_build}"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("refs/heads/staging"), "{stdout}");
    for asked in [
        "builds",
        "log",
        "builds --json",
        "log production",
        "builds main staging",
    ] {
        let (code, stdout, stderr) = serve(asked);
        assert_eq!(code, Some(1), "{asked}: {stdout}");
        assert!(
            stderr.starts_with(&format!("error: refused `{asked}`")),
            "{stderr}"
        );
    }
    let (_, _, stderr) = serve("builds");
    assert!(
        stderr.contains("name one by its branch (`main`, `staging`)"),
        "{stderr}"
    );
}
