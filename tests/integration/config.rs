//! deploy.yml at its limits, command_timeout, refused shared paths, and the hook's input and
//! log when they hold what they should not: end to end, through real pushes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use crate::harness::{Server, assert_success, wait_until};

/// The running processes of this test whose command line contains `marker`.
fn processes_with(server: &Server, marker: &str) -> Vec<String> {
    server
        .processes()
        .into_iter()
        .filter(|p| p.contains(marker))
        .collect()
}

/// Waits (a few seconds at most) until no process of this test runs with `marker` in its
/// command line: SIGKILL is delivered asynchronously, so a killed process may need a moment
/// to be gone.
#[track_caller]
fn assert_none_left(server: &Server, marker: &str) {
    wait_until(
        Duration::from_secs(5),
        || processes_with(server, marker).is_empty(),
        || format!("still running: {:?}", processes_with(server, marker)),
    );
}

/// `file:line:column` of `needle` in the line of deploy.yml that sets `key`.
fn position_in_config(server: &Server, key: &str, needle: &str) -> String {
    let text = fs::read_to_string(server.config_path()).unwrap();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} not set in deploy.yml:\n{text}"));
    let column = line
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"));
    format!(
        "{}:{}:{}",
        server.config_path().display(),
        n + 1,
        column + 1
    )
}

#[test]
fn a_before_switch_command_past_command_timeout_is_killed_with_its_children_and_live_stays() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    server.set_config("command_timeout", "1");
    // A background child, a child and a grandchild, each with a command line no other test uses.
    server.set_config(
        "before_switch",
        r#"["sleep 600.123 & sh -c 'sleep 600.124; true'; wait"]"#,
    );

    clone.set_version("v2");
    clone.commit("v2");
    let started = Instant::now();
    let push = clone.push_main().deploy_failed();
    let took = started.elapsed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("before_switch failed: `sleep 600.123 & sh -c 'sleep 600.124; true'; wait` did not finish within 1s and was killed"),
        "{error}"
    );
    eprintln!("the push with a 1 s command_timeout took {took:.2?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_none_left(&server, "sleep 600.12");
    server.assert_unchanged_since(&before);
    assert!(server.page().contains("v1"));

    server.set_config("before_switch", "[]");
    clone.deploy_version("v3");
    assert!(server.page().contains("v3"));
}

#[test]
fn an_after_switch_command_past_command_timeout_is_reported_and_the_new_build_stays_live() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config("command_timeout", "1");
    server.set_config(
        "after_switch",
        r#"["sleep 600.133 & sh -c 'sleep 600.134; true'; wait"]"#,
    );

    clone.set_version("v2");
    let commit = clone.commit("v2");
    let push = clone.push_main();

    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains("after_switch failed; builds/")
            && error.contains("did not finish within 1s and was killed"),
        "{error}"
    );
    assert_eq!(server.live_revision(), commit);
    assert!(server.page().contains("v2"));
    assert_none_left(&server, "sleep 600.13");
}

#[test]
fn numbers_past_their_range_are_refused_at_load_and_change_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    clone.set_version("v2");
    clone.commit("v2");

    // Once, each of these panicked: on Instant + Duration in composer, and after the switch in
    // the health check, leaving the unchecked build live.
    for (key, yaml, value, says) in [
        (
            "composer",
            "{timeout: 18446744073709551615}",
            "18446744073709551615",
            "composer.timeout: must be a whole number of seconds from 1 to 86400 (24 hours); got 18446744073709551615",
        ),
        (
            "healthcheck",
            "{command: 'true', timeout: 1e19}",
            "1e19",
            "healthcheck.timeout: must be a number of seconds from 0.001 to 86400 (24 hours); got 1e19",
        ),
        (
            "keep_builds",
            "-1",
            "-1",
            "keep_builds: must be a whole number from 1 (the live build only) to 1000; got -1",
        ),
        (
            "lock_timeout",
            ".inf",
            ".inf",
            "lock_timeout: must be a whole number of seconds from 0 (do not wait) to 86400 (24 hours); got .inf",
        ),
        (
            "command_timeout",
            "2.5",
            "2.5",
            "command_timeout: must be a whole number of seconds from 1 to 86400 (24 hours); got 2.5",
        ),
    ] {
        let original = fs::read_to_string(server.config_path()).unwrap();
        server.set_config(key, yaml);
        clone.commit(&format!("{key}: {yaml}"));
        let at = position_in_config(&server, key, value);
        let push = clone.push_main().deploy_failed();
        let error = push.remote_line("error: ").unwrap();
        assert_eq!(error, format!("error: {at}: {says}"));
        assert!(!push.stderr.contains("panicked"), "{}", push.stderr);
        server.assert_unchanged_since_in(&before, &format!("{key}: {yaml}"));
        fs::write(server.config_path(), original).unwrap();
    }
    clone.commit("with a sound deploy.yml");
    clone.push_main().success();
    assert!(server.page().contains("v2"));
}

#[test]
fn lock_timeout_0_gives_up_at_once_when_another_deploy_holds_the_lock() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let gate = server.gate_deploys();
    clone.set_version("v2");
    clone.commit("v2");
    let holder = clone.spawn_push(&["main"]);
    gate.wait_held(&holder);
    server.set_config("lock_timeout", "0");

    let other = server.clone_repo("other");
    other.git(&["commit", "-q", "--allow-empty", "-m", "v3"]);
    let started = Instant::now();
    let push = other.push(&["HEAD:main"]);
    let took = started.elapsed();
    gate.open();
    holder.finish().success();

    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains("gave up waiting for the deploy lock after 0s; it is held by pid"),
        "{error}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn shared_paths_that_make_a_build_its_commit_are_refused_with_their_position() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    clone.set_version("v2");
    clone.commit("v2");

    for (entry, why) in [
        (
            "REVISION",
            "REVISION is written into each build with its commit id",
        ),
        ("vendor/", "vendor/ is installed by composer"),
        ("vendor/atomdeploy/", "vendor/ is installed by composer"),
        ("composer.lock", "must be the commit's own"),
        (".Git/", "`.git` belongs to git"),
    ] {
        server.set_config("shared", &format!("[.env-dir/, {entry}]"));
        clone.commit(&format!("shared {entry}"));
        let at = position_in_config(&server, "shared", entry);
        let push = clone.push_main().deploy_failed();
        let error = push.remote_line("error: ").unwrap();
        assert!(
            error.starts_with(&format!(
                "error: {at}: shared[1]: shared entry `{entry}` is refused: "
            )) && error.contains(why),
            "{entry}: {error}"
        );
        server.assert_unchanged_since_in(&before, entry);
    }
}

#[test]
fn main_deploys_when_pushed_with_a_branch_whose_name_is_not_utf8() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let commit = clone.head();
    let cafe = OsStr::from_bytes(b"refs/heads/caf\xe9");
    let out = server
        .command("git")
        .arg("update-ref")
        .arg(cafe)
        .arg("HEAD")
        .current_dir(&clone.path)
        .output()
        .unwrap();
    assert_success(&out, "git update-ref");

    let out = server
        .command("git")
        .args(["push", "production", "main"])
        .arg(cafe)
        .current_dir(&clone.path)
        .output()
        .unwrap();
    assert_success(&out, "git push");
    let seen = String::from_utf8_lossy(&out.stderr);

    assert!(!seen.contains("remote: error:"), "{seen}");
    assert!(
        seen.contains("refs/heads/caf\u{fffd} is not the deploy branch"),
        "{seen}"
    );
    assert_eq!(server.live_revision(), commit);
    // The branch did reach the server: it was only not deployed.
    assert!(
        !server
            .repo_git(&["for-each-ref", "refs/heads/caf*"])
            .is_empty()
    );
}

#[test]
fn a_deploy_after_a_torn_log_line_is_listed_and_its_output_shown() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    clone.deploy_version("v2");
    // A crash in the middle of appending the last entry.
    let log = server.root.join(".atomdeploy/deploys.jsonl");
    let text = fs::read(&log).unwrap();
    fs::write(&log, &text[..text.len() - 40]).unwrap();

    server.set_config("before_switch", "['echo torn-log-test >&2; exit 7']");
    clone.set_version("v3");
    let failed = clone.commit("v3");
    clone.push_main().deploy_failed();

    let rows = server.builds_json();
    assert!(
        rows.iter()
            .any(|r| r["state"] == "failed" && r["commit"] == failed.as_str()),
        "the failed deploy of {failed} is not listed: {rows:#?}"
    );
    let out = server.run(&["log"]);
    assert_success(&out, "log");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("deploying {}", &failed[..7])) && shown.contains("torn-log-test"),
        "log shows another deploy:\n{shown}"
    );

    server.set_config("before_switch", "[]");
    clone.set_version("v4");
    let deployed = clone.commit("v4");
    clone.push_main().success();
    let out = server.run(&["log"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("deployed {}", &deployed[..7])),
        "log shows another deploy:\n{shown}"
    );
}

/// A health check that never answers is killed at its `timeout`, with what it started, and
/// counts as unhealthy: the build before goes back in.
#[test]
fn a_health_check_past_its_timeout_is_killed_and_the_build_rolled_back() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.live();
    server.set_config(
        "healthcheck",
        r#"{command: "sleep 600.211 & sleep 600.212; wait", timeout: 1, retries: 0}"#,
    );

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("health check failed")
            && error.contains("did not finish within 1s and was killed"),
        "{error}"
    );
    assert_eq!(server.live(), before, "the build before is live again");
    assert_none_left(&server, "sleep 600.21");
}
