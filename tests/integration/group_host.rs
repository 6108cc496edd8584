//! The host side of a group deploy: an ordinary install driven, as a group's primary drives
//! it, by raw `git push <host> <commit>:refs/atomdeploy/group/<gid>/<op>[/<fp>]`, reading the
//! `atomdeploy-group: …` lines it prints. And `release:` on a single server.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use atomdeploy_hook::receive::group::{Line, Status};

use crate::harness::{self, DevClone, Push, Server};

/// `git push production <commit>:refs/atomdeploy/group/<gid>/<op>`, as the group's primary.
fn group_push(clone: &DevClone, commit: &str, gid: &str, op: &str) -> Push {
    clone.group_push(&[&format!("{commit}:refs/atomdeploy/group/{gid}/{op}")])
}

/// [`group_push`] with a fault armed in the host's hook (see `DevClone::push_with_fault`).
fn group_push_with_fault(clone: &DevClone, refspec: &str, fault: &str) -> Push {
    clone.drive_as_primary();
    let push = clone.push_with_fault(&[refspec], fault);
    clone.push_directly();
    push
}

/// Every protocol line the host printed, in order, but the `live` line of a prepare and the
/// `ended` line that closes every operation (see [`only_line`]).
fn lines(push: &Push) -> Vec<Line> {
    push.stderr
        .lines()
        .filter_map(Line::parse)
        .filter(|l| !matches!(l, Line::Ended { .. } | Line::Live { .. }))
        .collect()
}

/// A group push the host refused: no protocol line, an error saying each of `says`, and the
/// root as it was `before`.
#[track_caller]
fn assert_refused(server: &Server, before: &harness::ServerState, push: Push, says: &[&str]) {
    assert!(lines(&push).is_empty(), "{}", push.stderr);
    says.iter().fold(push, |push, text| push.stderr_has(text));
    server.assert_unchanged_since(before);
}

/// The one protocol line of `push`, which must have printed exactly one.
#[track_caller]
fn only_line(push: &Push) -> Line {
    // Whatever it said, the host's last word is how the operation ended.
    let last = push.stderr.lines().rev().find_map(Line::parse);
    let failed = push.stderr.contains("remote: error:");
    assert!(
        matches!(&last, Some(Line::Ended { failed: f, .. }) if f.is_some() == failed),
        "the last protocol line is not `ended` saying how it went: {last:?}\n{}",
        push.stderr
    );
    match &lines(push)[..] {
        [line] => line.clone(),
        other => panic!(
            "expected one protocol line, got {other:?}:\n{}",
            push.stderr
        ),
    }
}

#[track_caller]
fn status(clone: &DevClone, gid: &str) -> Status {
    let push = group_push(clone, "HEAD", gid, "status").success();
    match only_line(&push) {
        Line::Status(status) => *status,
        other => panic!("not a status: {other:?}"),
    }
}

/// The host's own config fingerprint, as its `status` says.
fn fingerprint(clone: &DevClone) -> String {
    status(clone, "fp").fingerprint
}

/// What the pushed ref asks must never stay in the host's repository.
#[track_caller]
fn assert_no_group_refs(server: &Server) {
    let refs = server.repo_git(&["for-each-ref", "refs/atomdeploy/group"]);
    assert!(
        refs.is_empty(),
        "group refs left: {}",
        String::from_utf8_lossy(&refs)
    );
}

#[track_caller]
fn prepared(push: &Push) -> (String, String) {
    match only_line(push) {
        Line::Prepared { build, commit, .. } => (build, commit),
        other => panic!("not prepared: {other:?}\n{}", push.stderr),
    }
}

fn record(server: &Server, gid: &str) -> Option<serde_json::Value> {
    let text =
        fs::read_to_string(server.root.join(format!(".atomdeploy/group/{gid}.json"))).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A host with v1 live (deployed the ordinary way) and v2 committed in the clone, not pushed.
fn host_with_v1_live() -> (Server, DevClone, String, String) {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.set_version("v1");
    clone.commit("v1");
    clone.push_main().success();
    let v1 = server.live().unwrap();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    (server, clone, v1, v2)
}

/// The builds in builds/ made of `commit`.
fn builds_of(server: &Server, commit: &str) -> Vec<String> {
    server
        .builds()
        .into_iter()
        .filter(|b| {
            fs::read_to_string(server.build_path(b).join("REVISION"))
                .is_ok_and(|r| r.trim() == commit)
        })
        .collect()
}

#[track_caller]
fn state_of(server: &Server, build: &str) -> String {
    harness::build_state(&server.builds_json(), build)
}

#[test]
fn prepare_builds_completely_without_going_live_and_switch_flips_at_the_reported_instant() {
    let (server, clone, v1, v2) = host_with_v1_live();
    let fp = fingerprint(&clone);

    let push = group_push(&clone, &v2, "g1", &format!("prepare/{fp}")).success();
    let (build, commit) = prepared(&push);
    assert_eq!(commit, v2);
    assert_ne!(build, v1);
    assert_eq!(server.live(), Some(v1.clone()), "prepare does not switch");
    assert!(server.page().contains("v1"), "{}", server.page());
    server.assert_complete(&build, &[]);
    assert!(
        server
            .build_path(&build)
            .join("vendor/autoload.php")
            .is_file()
    );
    let rec = record(&server, "g1").expect("a record of the group");
    assert_eq!(rec["build"], build.as_str());
    assert_eq!(rec["previous"], v1.as_str());
    assert_eq!(rec["commit"], v2.as_str());
    assert_no_group_refs(&server);
    // The branch moves as a push to it would: checkout compares application/ with HEAD's tree,
    // and an unborn or stale HEAD makes it rewrite every file, so `snapshot: link` would copy.
    let v2_commit = clone.git(&["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(server.branch_head("main"), Some(v2_commit));
    // Fetches see nothing of it.
    let listed = clone.git(&["ls-remote", "production"]);
    assert!(!listed.contains("refs/atomdeploy"), "{listed}");

    let before = now_ns();
    let push = group_push(&clone, &v2, "g1", "switch").success();
    let after = now_ns();
    let Line::Switched {
        gid,
        build: live,
        ns,
    } = only_line(&push)
    else {
        panic!("no switched line:\n{}", push.stderr)
    };
    assert_eq!((gid.as_str(), live.as_str()), ("g1", build.as_str()));
    assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
    assert_eq!(server.live(), Some(build.clone()));
    assert!(server.page().contains("v2"), "{}", server.page());
    server.assert_only_complete_builds(&[]);
    server.assert_nothing_left_behind();
    assert_no_group_refs(&server);

    let log = server.deploy_log();
    let ops: Vec<_> = log
        .iter()
        .filter(|e| e["group"]["gid"] == "g1")
        .map(|e| {
            (
                e["group"]["op"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ops, [("prepare", "prepared"), ("switch", "deployed")]);
    assert_eq!(log.last().unwrap()["build"], build.as_str());
    assert_eq!(log.last().unwrap()["from"], v1.as_str());
    let output = server.run(&["log", &build]);
    harness::assert_success(&output, "log");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("atomdeploy-group: prepared")
            && shown.contains("atomdeploy-group: switched"),
        "{shown}"
    );
}

#[test]
fn restore_goes_back_to_the_build_before_and_marks_the_groups_build_bad() {
    let (server, clone, v1, v2) = host_with_v1_live();
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
    group_push(&clone, &v2, "g", "switch").success();
    assert_eq!(server.live(), Some(build.clone()));

    let push = group_push(&clone, &v2, "g", "restore").success();
    assert_eq!(
        only_line(&push),
        Line::Restored {
            gid: "g".into(),
            build: v1.clone()
        }
    );
    assert_eq!(server.live(), Some(v1.clone()));
    assert!(server.page().contains("v1"));
    assert_eq!(state_of(&server, &build), "bad");
    assert!(record(&server, "g").is_none());
    assert_eq!(
        server.deploy_log().last().unwrap()["outcome"],
        "rolled back"
    );
    assert_no_group_refs(&server);

    // Done with: a second restore has nothing to go on, and changes nothing.
    let before = server.state();
    let push = group_push(&clone, &v2, "g", "restore");
    assert_refused(
        &server,
        &before,
        push,
        &["error: group g has nothing prepared on this host"],
    );
}

#[test]
fn abort_removes_the_prepared_build_and_a_second_abort_is_harmless() {
    let (server, clone, v1, v2) = host_with_v1_live();
    let before = server.state();
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
    assert!(server.build_path(&build).is_dir());

    for _ in 0..2 {
        let push = group_push(&clone, &v2, "g", "abort").success();
        assert_eq!(only_line(&push), Line::Aborted { gid: "g".into() });
        server.assert_unchanged_since(&before);
        assert!(record(&server, "g").is_none());
        assert_no_group_refs(&server);
    }
    assert_eq!(server.live(), Some(v1));
    assert!(
        !server
            .root
            .join(format!(".atomdeploy/builds/{build}.json"))
            .exists()
    );
    // A switch after the abort has nothing to switch to.
    let push = group_push(&clone, &v2, "g", "switch");
    assert_refused(&server, &before, push, &["has nothing prepared"]);
}

#[test]
fn status_says_what_is_live_and_how_the_host_builds_even_while_a_deploy_holds_the_lock() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let nothing = status(&clone, "s1");
    assert_eq!(
        (nothing.build, nothing.commit, nothing.bad),
        (None, None, false)
    );
    assert_eq!(nothing.fingerprint.len(), 16);
    assert_eq!(nothing.config["keep_builds"], 5);
    assert_eq!(nothing.version, env!("CARGO_PKG_VERSION"));
    assert!(
        nothing.config.get("repository").is_none(),
        "{}",
        nothing.config
    );

    clone.push_main().success();
    let live = status(&clone, "s2");
    assert_eq!(live.build, server.live());
    assert_eq!(live.commit.as_deref(), Some(clone.head().as_str()));
    assert_eq!(live.fingerprint, nothing.fingerprint);

    // A deploy held in before_switch holds the lock: status does not wait for it.
    let gate = server.gate_deploys();
    clone.set_version("v2");
    clone.commit("v2");
    let running = clone.spawn_push(&["main"]);
    gate.wait_held(&running);
    let during = status(&clone, "s3");
    assert_eq!(during.build, live.build);
    assert_ne!(
        during.fingerprint, live.fingerprint,
        "before_switch is an app key"
    );
    gate.open();
    running.finish().success();
    assert_no_group_refs(&server);
}

#[test]
fn a_host_whose_config_differs_refuses_before_building_and_shows_its_own() {
    let (server, clone, _v1, v2) = host_with_v1_live();
    let primary_fp = fingerprint(&clone);
    // The host's deploy.yml drifted from the primary's.
    server.set_config("shared", "[storage/logs/]");
    let before = server.state();
    let application = harness::tree_listing(&server.root.join("application"));

    let push = group_push(&clone, &v2, "g", &format!("prepare/{primary_fp}"));
    let Line::Config(config) = only_line(&push) else {
        panic!("no config line:\n{}", push.stderr)
    };
    assert_eq!(config["shared"], serde_json::json!(["storage/logs/"]));
    push.stderr_has("remote: error: ")
        .stderr_has("differs from the primary's deploy.yml")
        .stderr_has(&primary_fp)
        .stderr_lacks("==> ");
    server.assert_unchanged_since(&before);
    assert_eq!(
        harness::tree_listing(&server.root.join("application")),
        application,
        "nothing was checked out"
    );
    assert!(record(&server, "g").is_none());
    assert_no_group_refs(&server);
    let last = server.deploy_log().last().unwrap().clone();
    assert_eq!(
        (last["outcome"].as_str(), last["group"]["op"].as_str()),
        (Some("failed"), Some("prepare"))
    );

    // Per-host keys may differ: the same config with another lock_timeout prepares.
    server.set_config("shared", "[]");
    server.set_config("lock_timeout", "7");
    prepared(&group_push(&clone, &v2, "g2", &format!("prepare/{primary_fp}")).success());
}

#[test]
fn reuse_takes_a_good_build_already_there_and_fails_clearly_without_one() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.set_version("v1");
    let v1 = clone.commit("v1");
    clone.push_main().success();
    let b1 = server.live().unwrap();
    let v2 = clone.deploy_version("v2");
    let b2 = server.live().unwrap();
    let fp = fingerprint(&clone);
    let builds = server.builds();

    // A group rollback to v1: its build is reused, nothing is built.
    let push = group_push(&clone, &v1, "back", &format!("reuse/{fp}")).success();
    assert_eq!(prepared(&push), (b1.clone(), v1.clone()));
    push.stderr_lacks("==> ");
    assert_eq!(server.builds(), builds);
    assert_eq!(server.live(), Some(b2.clone()));
    group_push(&clone, &v1, "back", "switch").success();
    assert_eq!(server.live(), Some(b1.clone()));
    assert!(server.page().contains("v1"));
    // Going back on it keeps the reused build good: it was good before the group.
    group_push(&clone, &v1, "back", "restore").success();
    assert_eq!(server.live(), Some(b2.clone()));
    assert_eq!(state_of(&server, &b1), "rollback target");

    // A commit never built here, and one whose build is bad, cannot be reused.
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    // A host of a group rolls back only through its primary, until it leaves the group.
    server.leave_group();
    clone.push(&[":rollback"]).success();
    assert_eq!(state_of(&server, &b2), "bad");
    for (commit, gid) in [(&v3, "none"), (&v2, "bad")] {
        let before = server.state();
        let push = group_push(&clone, commit, gid, &format!("reuse/{fp}"));
        assert_refused(&server, &before, push, &["nothing to reuse", &commit[..7]]);
        assert_no_group_refs(&server);
    }
}

#[test]
fn a_host_whose_composer_fails_says_so_and_prepares_nothing() {
    let (server, clone, v1, _v2) = host_with_v1_live();
    let fp = fingerprint(&clone);
    clone.require_a_missing_package();
    let broken = clone.commit("broken composer.json");
    let before = server.state();

    let push =
        group_push(&clone, &broken, "g", &format!("prepare/{fp}")).stderr_lacks("FAILED ----");
    assert_refused(&server, &before, push, &["remote: error: composer failed"]);
    assert_eq!(server.live(), Some(v1));
    assert!(record(&server, "g").is_none());
    assert_no_group_refs(&server);
    let last = server.deploy_log().last().unwrap().clone();
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["group"]["op"], "prepare");
}

#[test]
fn a_prepared_build_never_switched_is_gone_by_the_next_group_and_never_goes_live() {
    let (server, clone, v1, v2) = host_with_v1_live();
    let fp = fingerprint(&clone);
    // The host's hook killed right after it prepared (as a kill -9 of the primary between
    // prepare and switch leaves it, plus the ref the hook did not get to delete).
    let _ = group_push_with_fault(
        &clone,
        &format!("{v2}:refs/atomdeploy/group/dead/prepare/{fp}"),
        "group-prepared",
    );
    let stale = match &server.builds()[..] {
        [a, b] if *a == v1 => b.clone(),
        other => panic!("expected v1's build and the prepared one: {other:?}"),
    };
    server.assert_complete(&stale, &[]);
    assert!(record(&server, "dead").is_some());
    let refs = server.repo_git(&["for-each-ref", "refs/atomdeploy/group"]);
    assert!(!refs.is_empty(), "the killed hook left its ref");
    assert_eq!(server.live(), Some(v1.clone()));
    assert!(server.page().contains("v1"));

    // The next group's prepare and switch work, and take the leftovers with them.
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let push = group_push(&clone, &v3, "next", &format!("prepare/{fp}")).success();
    let (fresh, _) = prepared(&push);
    // (The new build may take the stale one's name, free again within the same second.)
    assert_eq!(
        builds_of(&server, &v2),
        Vec::<String>::new(),
        "the stale prepared build is gone"
    );
    push.stderr_has(&format!(
        "removed builds/{stale}, left by an interrupted deploy"
    ));
    assert!(record(&server, "dead").is_none());
    assert_no_group_refs(&server);
    // The dead group's switch, should it arrive late, finds nothing to switch to.
    let push = group_push(&clone, &v2, "dead", "switch");
    assert!(lines(&push).is_empty(), "{}", push.stderr);
    assert_eq!(server.live(), Some(v1.clone()));
    group_push(&clone, &v3, "next", "switch").success();
    assert_eq!(server.live(), Some(fresh.clone()));
    assert!(server.page().contains("v3"));
    server.assert_only_complete_builds(&[]);
    server.assert_nothing_left_behind();
    assert_eq!(server.builds(), [v1.clone(), fresh.clone()]);

    // An ordinary deploy removes a group's prepared build too.
    clone.set_version("v4");
    let v4 = clone.commit("v4");
    let (orphan, _) =
        prepared(&group_push(&clone, &v4, "left", &format!("prepare/{fp}")).success());
    clone.set_version("v5");
    let v5 = clone.commit("v5");
    server.leave_group();
    clone.push(&["HEAD:main"]).success().stderr_has(&format!(
        "removed builds/{orphan}, left by an interrupted deploy"
    ));
    assert!(builds_of(&server, &v4).is_empty());
    assert_eq!(builds_of(&server, &v5), [server.live().unwrap()]);
    assert!(server.page().contains("v5"));
}

#[test]
fn an_unhealthy_group_build_stays_live_for_the_primary_to_decide() {
    let (server, clone, v1, v2) = host_with_v1_live();
    server.set_config(
        "healthcheck",
        "{command: 'grep -q v1 latest/src/Version.php', retries: 0}",
    );
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());

    let push = group_push(&clone, &v2, "g", "switch");
    match &lines(&push)[..] {
        [
            Line::Switched { build: b, .. },
            Line::Unhealthy { gid, why },
        ] => {
            assert_eq!((b, gid.as_str()), (&build, "g"));
            assert!(why.contains("health check failed"), "{why}");
        }
        other => panic!("{other:?}\n{}", push.stderr),
    }
    push.stderr_has("remote: error: ")
        .stderr_lacks("rolled back");
    assert_eq!(
        server.live(),
        Some(build.clone()),
        "not rolled back by the host"
    );
    assert_eq!(server.deploy_log().last().unwrap()["outcome"], "unhealthy");

    group_push(&clone, &v2, "g", "restore").success();
    assert_eq!(server.live(), Some(v1));
    assert_eq!(state_of(&server, &build), "bad");
}

#[test]
fn a_group_ref_deploys_nothing_else_and_a_malformed_one_is_refused_and_deleted() {
    let (server, clone, v1, v2) = host_with_v1_live();
    // What an operator may set against deleting refs by push does not keep the hook's own
    // deletions from happening.
    server.repo_git(&["config", "receive.denyDeletes", "true"]);
    server.repo_git(&["config", "receive.denyDeleteCurrent", "refuse"]);
    let before = server.state();
    let push = clone
        .group_push(&[
            &format!("{v2}:main"),
            &format!("{v2}:refs/atomdeploy/group/g/status"),
        ])
        .success();
    assert!(matches!(only_line(&push), Line::Status(_)));
    push.stderr_has("refs/heads/main not deployed: this push carries a group operation");
    server.assert_unchanged_since(&before);
    assert_eq!(server.live(), Some(v1));

    for op in ["launch", "prepare/NOTHEX", "switch/extra"] {
        let push = group_push(&clone, &v2, "g", op);
        assert_refused(&server, &before, push, &["remote: error: "]);
        assert_no_group_refs(&server);
    }
    // Two operations in one push: neither is done.
    let fp = fingerprint(&clone);
    let push = clone.group_push(&[
        &format!("{v2}:refs/atomdeploy/group/g/prepare/{fp}"),
        &format!("{v2}:refs/atomdeploy/group/g/status"),
    ]);
    assert_refused(&server, &before, push, &["one group operation"]);
    assert_no_group_refs(&server);
}

#[test]
fn a_host_never_runs_release() {
    let (server, clone, _v1, v2) = host_with_v1_live();
    let marker = server.base().join("released");
    server.set_config("release", &format!("['touch {}']", marker.display()));
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
    group_push(&clone, &v2, "g", "switch").success();
    assert_eq!(server.live(), Some(build));
    assert!(!marker.exists(), "release ran on a host");
}

#[test]
fn release_runs_once_after_before_switch_and_right_before_the_switch() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let v1 = server.live().unwrap();
    let order = server.base().join("order");
    let note = |what: &str| {
        format!(
            "['echo {what} $(readlink $ATOMDEPLOY_ROOT/latest) $(basename $ATOMDEPLOY_BUILD) >> {}']",
            order.display()
        )
    };
    server.set_config("before_switch", &note("before_switch"));
    server.set_config("release", &note("release"));
    server.set_config("after_switch", &note("after_switch"));

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();
    push.step_line("release");
    let v2 = server.live().unwrap();
    let text = fs::read_to_string(&order).unwrap();
    assert_eq!(
        text,
        format!(
            "before_switch builds/{v1} {v2}\nrelease builds/{v1} {v2}\nafter_switch builds/{v2} {v2}\n"
        ),
        "release runs once, in the new build, after before_switch, while the old one is live"
    );

    // A failing release stops the deploy: nothing went live, the new build is gone.
    server.set_config("release", "['echo migrating; exit 3']");
    let before = server.state();
    clone.set_version("v3");
    clone.commit("v3");
    let push = clone.push_main().deploy_failed();
    push.stderr_has("remote: error: release failed")
        .stderr_has("failed in: release");
    server.assert_unchanged_since(&before);
    assert!(server.page().contains("v2"));
    assert_eq!(server.deploy_log().last().unwrap()["outcome"], "failed");
}

#[test]
fn the_build_before_survives_the_cleanup_after_a_group_switch_for_a_restore() {
    let (server, clone, v1, v2) = host_with_v1_live();
    server.set_config("keep_builds", "1");
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
    group_push(&clone, &v2, "g", "switch").success();
    assert_eq!(
        server.builds(),
        [v1.clone(), build.clone()],
        "keep_builds: 1 spares it"
    );
    group_push(&clone, &v2, "g", "restore").success();
    assert_eq!(server.live(), Some(v1.clone()));
    assert!(server.page().contains("v1"));
    // The next deploy's cleanup goes back to keep_builds: 1.
    clone.set_version("v3");
    clone.commit("v3");
    server.leave_group();
    clone.push_main().success();
    assert_eq!(server.builds(), [server.live().unwrap()]);
}

#[test]
fn a_hosts_switch_returns_before_its_old_builds_are_deleted_and_restore_still_finds_the_build_before()
 {
    let (server, clone, oldest, _) = host_with_v1_live();
    clone.set_version("v1.1");
    clone.commit("v1.1");
    clone.push_main().success();
    let v1 = server.live().unwrap();
    server.set_config("keep_builds", "1");
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());

    let hold = server.hold_at("cleanup");
    let (var, value) = hold.var();
    clone.drive_as_primary();
    let push = clone.push_leaving_cleanup(
        &[&format!("{v2}:refs/atomdeploy/group/g/switch")],
        &[(var, &value)],
    );
    clone.push_directly();
    // The primary has the host's answer before the host deletes the oldest build's files.
    assert!(
        lines(&push)
            .iter()
            .any(|l| matches!(l, Line::Switched { .. })),
        "{}",
        push.stderr
    );
    let pid = hold.wait_held();
    assert_eq!(server.lock_holder(), pid);
    assert!(!server.lock_is_free());
    assert_eq!(
        server.builds(),
        [v1.clone(), build.clone()],
        "{oldest} went, the build before the switch is spared"
    );
    hold.release();
    server.env.wait_for_cleanups();
    server.assert_nothing_left_behind();

    group_push(&clone, &v2, "g", "restore").success();
    assert_eq!(server.live(), Some(v1));
    assert!(server.page().contains("v1.1"));
}

#[test]
fn a_host_killed_during_its_switch_is_brought_back_by_restore_whether_or_not_it_switched() {
    // `switch-linked`: killed before the rename; `switched`: right after it, before the
    // `switched` line. Either way the primary heard nothing, and `restore` is the answer.
    for (fault, went_live) in [("switch-linked", false), ("switched", true)] {
        let (server, clone, v1, v2) = host_with_v1_live();
        let before = server.state();
        let fp = fingerprint(&clone);
        let (build, _) =
            prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
        let push = group_push_with_fault(
            &clone,
            &format!("{v2}:refs/atomdeploy/group/g/switch"),
            fault,
        );
        assert!(
            !lines(&push)
                .iter()
                .any(|l| matches!(l, Line::Switched { .. })),
            "{fault}: {}",
            push.stderr
        );
        let live = if went_live { &build } else { &v1 };
        assert_eq!(server.live().as_ref(), Some(live), "{fault}");
        server.assert_only_complete_builds(&[]);

        let push = group_push(&clone, &v2, "g", "restore").success();
        assert_eq!(
            only_line(&push),
            Line::Restored {
                gid: "g".into(),
                build: v1.clone()
            },
            "{fault}"
        );
        assert_eq!(server.live(), Some(v1.clone()), "{fault}");
        assert!(server.page().contains("v1"), "{fault}");
        if went_live {
            assert_eq!(state_of(&server, &build), "bad", "{fault}");
        } else {
            // Never live: gone, as if the group had never come.
            server.assert_unchanged_since_in(&before, fault);
        }
        server.assert_nothing_left_behind_in(fault);
        assert_no_group_refs(&server);
        // And the same operation can be pushed again (its ref no longer blocks it).
        group_push(&clone, &v2, "g", "restore").stderr_has("has nothing prepared");
    }
}

#[test]
fn an_operation_whose_hook_was_killed_can_be_pushed_again_after_any_group_push() {
    let (server, clone, _v1, v2) = host_with_v1_live();
    let fp = fingerprint(&clone);
    let (build, _) = prepared(&group_push(&clone, &v2, "g", &format!("prepare/{fp}")).success());
    let switch = format!("{v2}:refs/atomdeploy/group/g/switch");
    let _ = group_push_with_fault(&clone, &switch, "switch-linked");
    // The killed hook's ref is still there: git sees nothing to do, no hook runs.
    let again = group_push(&clone, &v2, "g", "switch");
    assert!(lines(&again).is_empty(), "{}", again.stderr);
    again.stderr_has("Everything up-to-date");
    // Any group push (a status, say) clears it; then the switch goes through.
    status(&clone, "probe");
    let push = group_push(&clone, &v2, "g", "switch").success();
    assert!(matches!(only_line(&push), Line::Switched { build: b, .. } if b == build));
    assert_eq!(server.live(), Some(build));
    server.assert_nothing_left_behind();
    assert_no_group_refs(&server);
}
