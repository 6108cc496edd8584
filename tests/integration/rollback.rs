//! Ways back: `git push production :rollback`, `rollback --to`, `replay`, the health check's
//! automatic rollback, and the views `builds` and `log`.

use crate::harness;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use crate::harness::{DevClone, Server, assert_success};

/// Deploys one version per name; returns each version's build and commit.
fn deploy_versions(server: &Server, clone: &DevClone, versions: &[&str]) -> Vec<(String, String)> {
    versions
        .iter()
        .map(|v| {
            clone.set_version(v);
            clone.write("public/status.txt", "healthy\n");
            let commit = clone.commit(v);
            clone.push_main().success();
            (server.live().unwrap(), commit)
        })
        .collect()
}

/// Where `git push production :rollback` would land, as the developer sees it.
fn rollback_ref(clone: &DevClone) -> Option<String> {
    let out = clone.git(&["ls-remote", "production", "rollback"]);
    out.split_whitespace().next().map(str::to_string)
}

#[test]
fn push_rollback_goes_back_one_build_at_a_time_until_git_refuses() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2", "v3"]);
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[1].1.as_str()));

    let push = clone.push(&[":rollback"]).success();
    let line = push.remote_line("rolled back to ").expect("a summary");
    assert_eq!(
        line,
        format!("rolled back to builds/{} ({})", v[1].0, &v[1].1[..7])
    );
    assert_eq!(server.live(), Some(v[1].0.clone()));
    assert!(server.page().contains("v2"));
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[0].1.as_str()));

    clone.push(&[":rollback"]).success();
    assert_eq!(server.live(), Some(v[0].0.clone()));
    assert!(server.page().contains("v1"));
    assert_eq!(rollback_ref(&clone), None, "nothing left to go back to");

    // git itself refuses now, and nothing changes.
    let before = server.state();
    let refused = clone.push(&[":rollback"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("remote ref does not exist"),
        "{}",
        refused.stderr
    );
    server.assert_unchanged_since(&before);

    // Rolled-back builds are bad, still on disk for inspection.
    let rows = server.builds_json();
    assert_eq!(harness::build_state(&rows, &v[2].0), "bad");
    assert_eq!(harness::build_state(&rows, &v[1].0), "bad");
    assert_eq!(harness::build_state(&rows, &v[0].0), "live");
    let log = server.deploy_log();
    let last = log.last().unwrap();
    assert_eq!(last["outcome"], "rolled back");
    assert_eq!(last["from"], v[1].0.as_str());
    assert_eq!(last["build"], v[0].0.as_str());

    // Pushing the rolled-back-from commit again changes no ref: git says so and nothing
    // deploys (the README tells the user to run `replay` for that).
    let before = server.state();
    let again = clone.push_main().success();
    assert!(
        again.stderr.contains("Everything up-to-date"),
        "{}",
        again.stderr
    );
    server.assert_unchanged_since(&before);

    // A push of a new commit deploys as usual afterwards, and its cleanup removes the bad builds.
    let v4 = deploy_versions(&server, &clone, &["v4"]);
    assert!(server.page().contains("v4"));
    assert_eq!(server.builds(), [v[0].0.clone(), v4[0].0.clone()]);
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[0].1.as_str()));
}

#[test]
fn bad_builds_are_never_rollback_targets() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2", "v3", "v4"]);
    clone.push(&[":rollback"]).success(); // v4 bad, v3 live
    clone.push(&[":rollback"]).success(); // v3 bad, v2 live

    // Forward to a bad build on purpose: allowed, with a warning; v2 is not marked bad.
    let out = server.run(&["rollback", "--to", &v[3].0]);
    harness::assert_success(&out, "rollback --to");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("warning: builds/{} is marked bad", v[3].0))
    );
    assert!(server.page().contains("v4"));

    // From v4 the next rollback skips bad v3 and lands on v2.
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[1].1.as_str()));
    clone.push(&[":rollback"]).success();
    assert_eq!(server.live(), Some(v[1].0.clone()));
}

#[test]
fn cleanup_counts_only_good_builds_and_removes_bad_ones() {
    let server = Server::builder().config("keep_builds", "2").install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2", "v3"]);
    assert_eq!(server.builds(), [v[1].0.clone(), v[2].0.clone()]);
    clone.push(&[":rollback"]).success(); // v3 bad, v2 live
    // Rollbacks do not clean up: the bad build stays for inspection.
    assert_eq!(server.builds(), [v[1].0.clone(), v[2].0.clone()]);

    let v4 = deploy_versions(&server, &clone, &["v4"]);

    assert_eq!(server.builds(), [v[1].0.clone(), v4[0].0.clone()]);
    assert!(
        !server
            .root
            .join(".atomdeploy/output")
            .join(format!("{}.log", v[2].0))
            .exists()
    );
}

#[test]
fn rollback_to_a_missing_build_is_refused_and_changes_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    deploy_versions(&server, &clone, &["v1", "v2"]);
    let before = server.state();

    for name in ["20200101-000000", "../../etc", "latest"] {
        let out = server.run(&["rollback", "--to", name]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: there is no build"), "{stderr}");
        server.assert_unchanged_since(&before);
    }
}

#[test]
fn rollback_with_nothing_older_is_refused() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    deploy_versions(&server, &clone, &["v1"]);
    let before = server.state();

    let out = server.run(&["rollback"]);

    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: there is no build to roll back to")
    );
    server.assert_unchanged_since(&before);
}

#[test]
fn replay_makes_a_new_build_of_the_live_commit_or_of_any_revision() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2"]);

    let out = server.run(&["replay"]);
    harness::assert_success(&out, "replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("==> composer") && stderr.contains("deployed "),
        "{stderr}"
    );
    let replayed = server.live().unwrap();
    assert_ne!(replayed, v[1].0, "a new build");
    assert_eq!(server.live_revision(), v[1].1);
    assert_eq!(server.builds().len(), 3);

    // A server that lost application/ gets it back.
    fs::remove_dir_all(server.root.join("application")).unwrap();
    let out = server.run(&["replay", &v[0].1[..10]]);
    harness::assert_success(&out, "replay REV");
    assert_eq!(server.live_revision(), v[0].1);
    assert!(server.page().contains("v1"));
    assert!(server.latest().join("vendor/autoload.php").is_file());

    let out = server.run(&["replay", "no-such-rev"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: `no-such-rev` is not a revision")
    );
}

#[test]
fn builds_lists_every_build_and_failed_deploys_with_their_error() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2"]);
    server.set_config("before_switch", "['echo no >&2; exit 4']");
    clone.set_version("v3");
    let failed_commit = clone.commit("v3");
    clone.push_main().deploy_failed();

    let rows = server.builds_json();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // Newest first: the failed attempt, then v2 (live), then v1 (rollback target).
    assert_eq!(rows[0]["name"], serde_json::Value::Null);
    assert_eq!(rows[0]["state"], "failed");
    assert_eq!(rows[0]["commit"], failed_commit.as_str());
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("before_switch failed"),
        "{rows:?}"
    );
    assert_eq!(rows[1]["name"], v[1].0.as_str());
    assert_eq!(rows[1]["state"], "live");
    assert_eq!(rows[1]["commit"], v[1].1.as_str());
    assert_eq!(rows[1]["ref"], "refs/heads/main");
    assert!(
        rows[1]["disk_bytes"].as_u64().unwrap() > 10_000,
        "vendor/ and all: {rows:?}"
    );
    assert_eq!(rows[2]["state"], "rollback target");
    assert!(rows[2]["deployed_at"].as_str().unwrap() < rows[1]["deployed_at"].as_str().unwrap());

    let out = server.run(&["builds"]);
    harness::assert_success(&out, "builds");
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("BUILD"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&v[1].0) && l.contains(&v[1].1[..7]) && l.contains("live")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&v[0].0) && l.contains("rollback target")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error: before_switch failed")),
        "{table}"
    );
}

#[test]
fn log_shows_the_full_output_of_a_deploy() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1"]);
    server.set_config("before_switch", "['echo about to fail; exit 4']");
    clone.set_version("v2");
    clone.commit("v2");
    clone.push_main().deploy_failed();

    // Default: the latest attempt, here the failed one, with its error.
    let out = server.run(&["log"]);
    harness::assert_success(&out, "log");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("==> before_switch") && text.contains("    about to fail"),
        "{text}"
    );
    assert!(text.contains("error: before_switch failed"), "{text}");

    // A build's own deploy, as its pusher saw it.
    let out = server.run(&["log", &v[0].0]);
    harness::assert_success(&out, "log BUILD");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("    post-install script ran"), "{text}");
    assert!(
        text.contains(&format!("deployed {} as builds/{}", &v[0].1[..7], v[0].0)),
        "{text}"
    );

    let out = server.run(&["log", "20200101-000000"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no output is kept for builds/20200101-000000")
    );
}

#[test]
fn a_failing_health_command_rolls_back_automatically() {
    let server = Server::builder()
        .config("healthcheck", "{command: 'grep -q healthy latest/public/status.txt && test -d \"$ATOMDEPLOY_BUILD\"', retries: 2, interval: 0.05}")
        .install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1"]);

    clone.set_version("v2");
    clone.write("public/status.txt", "sick\n");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();

    // Word for word what the README shows.
    let error = push.remote_line("error: ").unwrap();
    let sick = server
        .builds()
        .into_iter()
        .find(|b| *b != v[0].0)
        .expect("the unhealthy build stays on disk");
    assert_eq!(
        error,
        format!(
            "error: rolled back to builds/{}; builds/{sick} is marked bad: health check failed: \
             unhealthy after 3 attempts; the last: `grep -q healthy latest/public/status.txt && \
             test -d \"$ATOMDEPLOY_BUILD\"` failed with exit status 1",
            v[0].0
        )
    );
    assert_eq!(
        push.stderr.matches("failed: `grep -q healthy").count(),
        3,
        "3 attempts:\n{}",
        push.stderr
    );
    assert_eq!(server.live(), Some(v[0].0.clone()));
    assert!(server.page().contains("v1"));
    let rows = server.builds_json();
    let sick = rows
        .iter()
        .find(|r| r["name"] != v[0].0.as_str() && r["name"].is_string())
        .unwrap();
    assert_eq!(sick["state"], "bad");
    assert_eq!(server.deploy_log().last().unwrap()["outcome"], "unhealthy");
    assert_eq!(rollback_ref(&clone), None);
}

/// A deploy its health check rolled back is a failed deploy: once the next good deploy's
/// cleanup removed its bad build, `builds` still lists it (with its error) and `log` still
/// shows its output, as for every other failed attempt.
#[test]
fn a_deploy_rolled_back_by_its_health_check_stays_listed_after_the_next_deploy() {
    let server = Server::builder()
        .config(
            "healthcheck",
            "{command: 'grep -q healthy latest/public/status.txt', retries: 0, interval: 0.05}",
        )
        .install();
    let clone = server.clone_fixture("example-app");
    deploy_versions(&server, &clone, &["v1"]);
    clone.set_version("v2");
    clone.write("public/status.txt", "sick\n");
    let sick_commit = clone.commit("v2");
    clone.push_main().deploy_failed();
    let sick = server.builds_json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(server.builds_json()[0]["state"], "bad");

    let v3 = deploy_versions(&server, &clone, &["v3"]);
    assert!(
        !server.builds().contains(&sick),
        "cleanup removes bad builds"
    );
    let rows = server.builds_json();
    let row = rows
        .iter()
        .find(|r| r["commit"] == sick_commit.as_str())
        .unwrap_or_else(|| panic!("the rolled-back deploy vanished: {rows:?}"));
    assert_eq!(row["state"], "failed", "{row}");
    assert_eq!(row["name"], sick.as_str(), "{row}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("health check failed"),
        "{row}"
    );
    assert_eq!(rows[0]["name"], v3[0].0.as_str());

    let out = server.run(&["builds"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains(&format!("log: atomdeploy-hook log {sick}")),
        "{table}"
    );
    let out = server.run(&["log", &sick]);
    harness::assert_success(&out, "log of the removed bad build");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("health check failed"), "{text}");
}

/// A tiny web server that answers 200 while the live build's status.txt says healthy, 503
/// otherwise. Stands in for the site's own web server; the live build decides the answer.
fn status_server(latest: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let healthy = fs::read_to_string(latest.join("public/status.txt"))
                .is_ok_and(|s| s.trim() == "healthy");
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

#[test]
fn a_failing_health_url_rolls_back_and_a_passing_one_keeps_the_build() {
    let server = Server::install();
    let url = status_server(server.latest());
    server.set_config(
        "healthcheck",
        &format!("{{url: '{url}', retries: 1, interval: 0.05, timeout: 5}}"),
    );
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2"]);
    assert!(
        server.page().contains("v2"),
        "a passing check keeps the new build"
    );

    clone.set_version("v3");
    clone.write("public/status.txt", "sick\n");
    clone.commit("v3");
    let push = clone.push_main().deploy_failed();

    push.stderr_has("answered 503");
    assert_eq!(server.live(), Some(v[1].0.clone()));
    assert!(server.page().contains("v2"));
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[0].1.as_str()));
}

/// `atomdeploy-hook builds | head -1`: a reader that stopped reading wanted no more, so the
/// listing ends quietly and successfully, as `ls` would (`hosts`: see group.rs).
#[test]
fn a_listing_whose_reader_has_gone_ends_quietly() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1"]);
    for args in [
        vec!["builds"],
        vec!["builds", "--json"],
        vec!["log"],
        vec!["log", v[0].0.as_str()],
    ] {
        let out = server.run_into_closed_pipe(&args);
        assert_eq!(
            (out.status.code(), String::from_utf8_lossy(&out.stderr)),
            (Some(0), "".into()),
            "{args:?}"
        );
    }
}

/// `git push production v1.0:replay` (or `:rollback`) with a tag as the source makes git
/// create a tag on the server, which would deploy nothing and from then on make git refuse
/// `main:replay` ("tag already exists"). The hook deletes it, fails the push with why and
/// what to push instead, and that command works as printed.
#[test]
fn a_tag_pushed_as_replay_or_rollback_is_deleted_and_refused_with_what_works() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    let mut v = deploy_versions(&server, &clone, &["v1"]);
    clone.git(&["tag", "-a", "v1.0", "-m", "release 1.0", &v[0].1]);
    clone.git(&["tag", "light", &v[0].1]);
    for (pushed, tag) in [
        // While there is nothing to roll back to, the server has no `rollback` branch.
        ("v1.0:rollback", "refs/tags/rollback"),
        ("v1.0:replay", "refs/tags/replay"),
        ("light:replay", "refs/tags/replay"),
    ] {
        if v.len() == 1 && tag.ends_with("replay") {
            v.extend(deploy_versions(&server, &clone, &["v2"]));
        }
        let before = server.state();
        let push = clone.push(&[pushed]);
        assert_eq!(push.code, Some(1), "{pushed}: {}", push.stderr);
        let error = push
            .remote_line(&format!("error: this push made a tag, {tag}"))
            .unwrap_or_else(|| panic!("{pushed}: {}", push.stderr));
        assert!(error.contains("the tag was deleted"), "{error}");
        assert!(
            push.stderr.contains(
                "error: the push was received, but its deploy failed: push: this push made a tag"
            ),
            "{}",
            push.stderr
        );
        let tags = String::from_utf8(server.repo_git(&["tag", "--list"])).unwrap();
        assert_eq!(tags, "", "{pushed} left a tag behind");
        server.assert_unchanged_since(&before);
        assert_eq!(server.live_revision(), v.last().unwrap().1);
        assert!(
            error.contains(&format!(
                "`git push production {}:refs/heads/replay`",
                &v[0].1[..7]
            )),
            "{error}"
        );
    }
    // What the error says works, and git no longer stands in the way of `main:replay`.
    let push = clone.push(&["v1.0:replay"]);
    let printed = push.printed_commands("error: this push made a tag");
    clone.run_printed(&printed[0]).success();
    assert_eq!(server.live_revision(), v[0].1);
    clone.push(&["main:replay"]).success();
    assert_eq!(server.live_revision(), v[1].1);
    clone
        .run_printed("git push production v1.0~0:refs/heads/replay")
        .success();
    assert_eq!(server.live_revision(), v[0].1);
    // The deploy branch pushed along with such a tag is put back, so that pushing it again
    // deploys instead of being "Everything up-to-date".
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let main_before = server.branch_head("main");
    let push = clone.push(&["main", "v1.0:replay"]);
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    assert_eq!(server.branch_head("main"), main_before);
    clone.push_main().success();
    assert_eq!(server.live_revision(), v3);
}

/// A rollback right after a replay goes to the previous commit: the replay's build and the
/// one it replayed hold the same commit, and swapping them would change nothing.
#[test]
fn a_rollback_after_a_replay_goes_to_the_previous_commit() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2"]);
    clone.push(&["main:replay"]).success();
    let replayed = server.live().unwrap();
    assert_ne!(replayed, v[1].0);
    assert_eq!(server.live_revision(), v[1].1);
    assert_eq!(rollback_ref(&clone).as_deref(), Some(v[0].1.as_str()));
    let rows = server.builds_json();
    assert_eq!(harness::build_state(&rows, &v[0].0), "rollback target");

    clone
        .push(&[":rollback"])
        .success()
        .stderr_has(&format!("rolled back to builds/{} (", v[0].0));
    assert_eq!(server.live(), Some(v[0].0.clone()));
    assert!(server.page().contains("v1"));

    // The command, too.
    clone.push(&["main:replay"]).success();
    let out = server.run(&["rollback"]);
    harness::assert_success(&out, "rollback");
    assert_eq!(server.live(), Some(v[0].0.clone()));
}

/// Deploying a tag is a one-liner, and the deploy names the tag: in the pusher's output, the
/// log and `builds` (a tag the push carried along, or one the repository has already).
#[test]
fn a_tag_deployed_through_replay_is_named_by_its_deploy() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v = deploy_versions(&server, &clone, &["v1", "v2"]);
    clone.git(&["tag", "-a", "v1.0", "-m", "release 1.0", &v[0].1]);

    let push = clone
        .push(&["v1.0", "v1.0~0:refs/heads/replay"])
        .success()
        .stderr_has(&format!("deploying v1.0 ({}) from", &v[0].1[..7]));
    assert_eq!(server.live_revision(), v[0].1, "{}", push.stderr);
    let last = server.deploy_log().pop().unwrap();
    assert_eq!(last["tag"], "v1.0", "{last}");
    let rows = server.builds_json();
    assert_eq!(rows[0]["tag"], "v1.0", "{rows:?}");
    let out = server.run(&["builds"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("    tag v1.0: \"v1\""), "{table}");

    // A commit no tag names is named by its id alone, as before.
    clone
        .push(&["main:replay"])
        .success()
        .stderr_has(&format!("deploying {} from", &v[1].1[..7]));
    assert_eq!(server.deploy_log().pop().unwrap().get("tag"), None);
}

/// A replay pushed to a root whose deploy.yml is broken fails; the replay branch must go all
/// the same (as after any replay), or the same `git push production <commit>:replay-staging`
/// once deploy.yml is mended is "Everything up-to-date" and deploys nothing.
#[test]
fn a_replay_refused_for_a_broken_deploy_yml_can_be_pushed_again() {
    let main = Server::install();
    let staging = main.other_root(&main.base().join("srv-staging"));
    assert_success(
        &staging.run_install(&main.repo, &["--branch", "staging"]),
        "install of the second root",
    );
    let commit = replay_refused_then_pushed_again(&main, &staging, "replay-staging", || {
        assert_eq!(staging.live(), None);
    });
    assert_eq!(staging.live_revision(), commit);
    assert_eq!(main.live(), None);
}

/// The same for a repository's only root: its `replay` branch goes even when deploy.yml
/// cannot load, so the push deploys once deploy.yml is mended.
#[test]
fn a_replay_refused_for_a_broken_deploy_yml_of_the_only_root_can_be_pushed_again() {
    let server = Server::install();
    let commit = replay_refused_then_pushed_again(&server, &server, "replay", || {});
    assert_eq!(server.live_revision(), commit);
}

/// Breaks `root`'s deploy.yml, pushes a new commit of the example app to `replay_branch`
/// (refused, naming the bad key; then `refused` checks what it left), mends deploy.yml and
/// pushes the same again, which must deploy. Returns the commit.
fn replay_refused_then_pushed_again(
    repo: &Server,
    root: &Server,
    replay_branch: &str,
    refused: impl FnOnce(),
) -> String {
    let good = fs::read_to_string(root.config_path()).unwrap();
    fs::write(root.config_path(), format!("{good}no_such_key: 1\n")).unwrap();
    let clone = repo.clone_fixture("example-app");
    clone.set_version("replayed");
    let commit = clone.commit("replayed");
    let refspec = format!("HEAD:refs/heads/{replay_branch}");
    clone
        .push(&[&refspec])
        .deploy_failed()
        .stderr_has("no_such_key");
    refused();

    fs::write(root.config_path(), &good).unwrap();
    clone.push(&[&refspec]).success();
    commit
}
