//! The log says who and what: every deploy log entry and every `builds` row names the commit's
//! subject and author, and who pushed (`serve --pusher`, else the hook's user); `log` shows any
//! attempt, failed ones included.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::sshd::{SshClient, Sshd};
use crate::harness::{self, BIN, DevClone, Server};

const AUTHOR: &str = "Test Author <author@example.com>";

fn last_entry(server: &Server) -> serde_json::Value {
    server.deploy_log().pop().expect("the deploy log is empty")
}

fn builds_text(server: &Server) -> String {
    let out = server.run(&["builds"]);
    harness::assert_success(&out, "builds");
    String::from_utf8(out.stdout).unwrap()
}

/// Commits a version with `subject` as its message's first line (and a body that must not
/// show).
fn commit_version(clone: &DevClone, version: &str, subject: &str) -> String {
    clone.set_version(version);
    clone.commit(&format!("{subject}\n\nA body the log leaves out."))
}

/// Makes `git push production` in `clone` go through `serve`, as sshd runs the forced command
/// `atomdeploy-hook serve --repo R <args>` with what the client asked for in
/// SSH_ORIGINAL_COMMAND.
fn through_serve(server: &Server, clone: &DevClone, args: &str) {
    let script = server.base().join(format!("forced-command-{}", args.len()));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nSSH_ORIGINAL_COMMAND=\"git-receive-pack '$1'\" exec {BIN} serve --repo '{}' {args}\n",
            server.repo.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    clone.git(&[
        "config",
        "remote.production.receivepack",
        script.to_str().unwrap(),
    ]);
}

#[test]
fn a_push_logs_the_subject_the_author_and_the_user_who_pushed() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let commit = commit_version(&clone, "v1", "Fix the checkout total");
    clone.push_with_env(&["main"], &[("USER", "bob")]).success();

    let entry = last_entry(&server);
    assert_eq!(entry["outcome"], "deployed");
    assert_eq!(entry["commit"], commit.as_str());
    assert_eq!(entry["subject"], "Fix the checkout total");
    assert_eq!(entry["author"], AUTHOR);
    assert_eq!(entry["pusher"], "bob");

    let live = server.live().unwrap();
    let rows = server.builds_json();
    let row = rows.iter().find(|r| r["name"] == live.as_str()).unwrap();
    assert_eq!(row["subject"], "Fix the checkout total");
    assert_eq!(row["author"], AUTHOR);
    assert_eq!(row["pusher"], "bob");
    let text = builds_text(&server);
    assert!(
        text.contains(&format!(
            "\"Fix the checkout total\" by {AUTHOR}, pushed by bob"
        )),
        "{text}"
    );
    assert!(!text.contains("A body"), "{text}");
}

/// A hook started without $USER (the harness clears the environment, as cron or systemd
/// would) still names the account it runs as.
#[test]
fn without_user_the_pusher_is_the_hooks_account() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    commit_version(&clone, "v1", "Deploy without USER");
    clone.push_main().success();
    let account =
        String::from_utf8(server.command("id").arg("-un").output().unwrap().stdout).unwrap();
    assert_eq!(last_entry(&server)["pusher"], account.trim());
}

#[test]
fn a_failed_deploy_names_its_commit_too() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config("before_switch", "['exit 3']");
    commit_version(&clone, "v2", "Break the migrations");
    let push = clone.push_with_env(&["main"], &[("USER", "carol")]);
    assert_ne!(push.code, None);

    let entry = last_entry(&server);
    assert_eq!(entry["outcome"], "failed");
    assert_eq!(entry["subject"], "Break the migrations");
    assert_eq!(entry["pusher"], "carol");
    let rows = server.builds_json();
    let failed = rows.iter().find(|r| r["state"] == "failed").unwrap();
    assert_eq!(failed["subject"], "Break the migrations");
    assert_eq!(failed["author"], AUTHOR);
    let text = builds_text(&server);
    assert!(text.contains("\"Break the migrations\""), "{text}");
}

/// The forced command names the key's owner; the deploy's own commands never see the name.
#[test]
fn serve_pusher_names_the_key_and_stays_out_of_the_commands() {
    let server = Server::install();
    let seen = server.base().join("seen-env");
    server.set_config(
        "before_switch",
        &format!("['env > {}']", seen.to_str().unwrap()),
    );
    let clone = server.clone_fixture("example-app");
    through_serve(&server, &clone, "--pusher alice@laptop");
    commit_version(&clone, "v1", "Ship through ssh");
    clone
        .push_with_env(&["main"], &[("USER", "deploy")])
        .success();

    let entry = last_entry(&server);
    assert_eq!(entry["outcome"], "deployed");
    assert_eq!(entry["pusher"], "alice@laptop");
    assert_eq!(entry["subject"], "Ship through ssh");
    let env = fs::read_to_string(&seen).unwrap();
    assert!(!env.contains("alice@laptop"), "{env}");
    assert!(!env.contains("ATOMDEPLOY_PUSHER"), "{env}");
}

/// Hostile: a client whose environment reaches the forced command (`SendEnv`/`AcceptEnv`)
/// cannot name someone else when the operator gave no `--pusher`.
#[test]
fn serve_without_pusher_ignores_a_name_the_client_sent() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    through_serve(&server, &clone, "");
    commit_version(&clone, "v1", "Forge a pusher");
    clone
        .push_with_env(
            &["main"],
            &[("USER", "deploy"), ("ATOMDEPLOY_PUSHER", "mallory")],
        )
        .success();
    assert_eq!(last_entry(&server)["pusher"], "deploy");
}

#[test]
fn a_rollback_names_the_target_builds_commit_and_who_asked() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    commit_version(&clone, "v1", "The good one");
    clone.push_main().success();
    let good = server.live().unwrap();
    commit_version(&clone, "v2", "The bad one");
    clone.push_main().success();

    clone
        .push_with_env(&[":rollback"], &[("USER", "dave")])
        .success();
    let entry = last_entry(&server);
    assert_eq!(entry["outcome"], "rolled back");
    assert_eq!(entry["build"], good.as_str());
    assert_eq!(entry["subject"], "The good one");
    assert_eq!(entry["author"], AUTHOR);
    assert_eq!(entry["pusher"], "dave");

    // `builds` names who made each build, not who rolled back to it.
    let rows = server.builds_json();
    let row = rows.iter().find(|r| r["name"] == good.as_str()).unwrap();
    assert_eq!(row["subject"], "The good one");
    assert_ne!(row["pusher"], "dave");

    let out = server
        .command(BIN)
        .args(["rollback", "--to"])
        .arg(
            rows.iter().find(|r| r["subject"] == "The bad one").unwrap()["name"]
                .as_str()
                .unwrap(),
        )
        .arg("--root")
        .arg(&server.root)
        .env("USER", "erin")
        .output()
        .unwrap();
    harness::assert_success(&out, "rollback --to");
    let entry = last_entry(&server);
    assert_eq!(entry["subject"], "The bad one");
    assert_eq!(entry["pusher"], "erin");
}

/// Lines an older hook wrote (without subject, author, pusher) still read, in the log and in
/// `builds`.
#[test]
fn an_older_log_line_still_reads() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    commit_version(&clone, "v1", "Before the upgrade");
    clone.push_main().success();
    let live = server.live().unwrap();
    let log = server.root.join(".atomdeploy/deploys.jsonl");
    let mut text = fs::read_to_string(&log).unwrap();
    text.push_str(
        r#"{"started_at":"2999-01-01T00:00:00.000Z","locked_at":"","finished_at":"2999-01-01T00:00:01.000Z","pid":7,"ref":"refs/heads/main","commit":"0123456789abcdef0123456789abcdef01234567","build":null,"outcome":"failed","error":"an old failure","steps":[],"seconds":1.0,"output":null}"#,
    );
    text.push('\n');
    fs::write(&log, text).unwrap();

    let rows = server.builds_json();
    let old = rows
        .iter()
        .find(|r| r["error"] == "an old failure")
        .unwrap();
    assert_eq!(old["subject"], serde_json::Value::Null);
    let row = rows.iter().find(|r| r["name"] == live.as_str()).unwrap();
    assert_eq!(row["subject"], "Before the upgrade");
    let text = builds_text(&server);
    assert!(text.contains("an old failure"), "{text}");
}

/// Over a real sshd: the key whose authorized_keys line says `serve --pusher alice@laptop` is
/// logged as alice@laptop; a key without a forced command as the account it logged in to.
#[test]
fn over_ssh_the_forced_command_names_the_key() {
    let server = Server::install();
    let dir = server.base().join("ssh");
    let (alice, plain) = (
        SshClient::new(&dir.join("alice")),
        SshClient::new(&dir.join("plain")),
    );
    let forced = format!(
        "command=\"{BIN} serve --repo {} --pusher alice@laptop\",no-pty,no-port-forwarding,no-X11-forwarding,no-agent-forwarding ",
        server.repo.display()
    );
    let sshd = Sshd::builder(&dir.join("sshd"))
        .addr(std::net::Ipv4Addr::LOCALHOST)
        .authorize(&forced, &alice.public_key())
        .authorize("", &plain.public_key())
        .env_of(&server)
        .start();
    alice.trust(&sshd);
    plain.trust(&sshd);
    let url = sshd.url(&server.repo);

    let clone = server.clone_fixture("example-app");
    clone.git(&["remote", "set-url", "production", &url]);
    clone.git(&["config", "core.sshCommand", &alice.command()]);
    commit_version(&clone, "v1", "Over ssh as alice");
    clone.push_main().success();
    let entry = last_entry(&server);
    assert_eq!(entry["outcome"], "deployed");
    assert_eq!(entry["subject"], "Over ssh as alice");
    assert_eq!(entry["pusher"], "alice@laptop");

    clone.git(&["config", "core.sshCommand", &plain.command()]);
    commit_version(&clone, "v2", "Over ssh with a plain key");
    clone.push_main().success();
    let entry = last_entry(&server);
    assert_eq!(entry["subject"], "Over ssh with a plain key");
    // The URL logs in as root: sshd's $USER for the session.
    assert_eq!(entry["pusher"], "root");
    drop(sshd);
}

#[test]
fn log_shows_any_attempt_builds_lists_failed_ones_included() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let v1 = server.live().unwrap();

    server.set_config("before_switch", "['echo first failure; exit 4']");
    clone.set_version("v2");
    clone.commit("v2");
    clone.push_main().deploy_failed();
    server.set_config("before_switch", "['echo second failure; exit 5']");
    clone.set_version("v3");
    clone.commit("v3");
    clone.push_main().deploy_failed();

    let out = server.run(&["builds"]);
    harness::assert_success(&out, "builds");
    let table = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("    log: atomdeploy-hook log "))
        .collect();
    assert_eq!(ids.len(), 2, "one id per failed attempt:\n{table}");

    // Newest first: the second failure, then the first.
    for (id, said) in ids.iter().zip(["second failure", "first failure"]) {
        let out = server.run(&["log", id]);
        harness::assert_success(&out, &format!("log {id}"));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("    {said}")), "{text}");
        assert!(text.contains("error: before_switch failed"), "{text}");
    }
    // No argument: the latest attempt, failed or not.
    let out = server.run(&["log"]);
    harness::assert_success(&out, "log");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("    second failure")
    );
    // A build's name still shows its deploy.
    let out = server.run(&["log", &v1]);
    harness::assert_success(&out, "log BUILD");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(&format!("as builds/{v1}"))
    );

    // An id that names no attempt: a clear error.
    let out = server.run(&["log", "failed-2020-01-01T000000000000Z"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a failed attempt that `atomdeploy-hook builds` lists"),
        "{stderr}"
    );
}
