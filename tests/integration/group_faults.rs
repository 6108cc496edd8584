//! A group deploy under faults: a host's hook killed (with its session, or alone), its
//! connection dropped, or a step failing, at each point of its operations; and the primary's
//! own steps failing. One invariant after every case: every server on one build (all the old,
//! or all the new), the push's exit status and the primary's deploy log saying which, no
//! process left running, and the next push deploying everywhere.
//!
//! Hosts are local paths (tests/integration/group.rs's `Group`), each hook run in a session of
//! its own as over ssh (`setsid`), so that a kill of its process group takes the host's hook
//! and what it started, not the primary.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::group::{Group, errors};
use crate::harness::{self, DevClone, Server};

/// The smallest app: two PHP files, no composer.
fn tiny_app(primary: &Server) -> DevClone {
    let clone = primary.empty_clone("tiny");
    clone.write(
        "public/index.php",
        "<?php\nrequire __DIR__ . '/../src/Version.php';\necho App\\Version::NAME, \"\\n\";\n",
    );
    clone.set_version("1.0.0");
    clone.commit("a tiny app");
    clone.wrap();
    clone
}

/// Steps that wait while `$ATOMDEPLOY_ROOT/hold-<step>` exists (saying so with `held-<step>`),
/// until `go` appears; after_switch fails where `after-switch-fails` is, the health check
/// where `unhealthy` is. The same on every server: they are app keys.
const HOLD: &str = "h() { if [ -e \"$ATOMDEPLOY_ROOT/hold-$1\" ]; then touch \"$ATOMDEPLOY_ROOT/held-$1\"; \
                    while [ ! -e \"$ATOMDEPLOY_ROOT/go\" ]; do sleep 0.01; done; fi; }";

fn faulty_group(hosts: usize) -> Group {
    let g = Group::with_app(hosts, tiny_app);
    for server in g.servers() {
        server.set_config("composer", "false");
        server.set_config("before_switch", &format!("['{HOLD}; h before_switch']"));
        server.set_config(
            "after_switch",
            &format!(
                "['{HOLD}; h after_switch; test ! -e \"$ATOMDEPLOY_ROOT/after-switch-fails\"']"
            ),
        );
        server.set_config(
            "healthcheck",
            &format!(
                "{{command: '{HOLD}; h healthcheck; test ! -e \"$ATOMDEPLOY_ROOT/unhealthy\"', \
                 retries: 0}}"
            ),
        );
    }
    for host in &g.hosts {
        arm(host, None);
    }
    g
}

/// Runs `host`'s hook in a session of its own, with `fault` armed for the one group operation
/// whose ref ends as `op` says (`*/switch`, `*/prepare/*`): its restore must not be killed too.
fn arm(host: &Server, fault: Option<(&str, &str)>) {
    let (op, fault) = fault.unwrap_or(("-", "-"));
    host.wrap_hook(&format!(
        "read -r pushed\n\
         case \"$pushed\" in\n  *{op}) ATOMDEPLOY_FAULT='{fault}'; export ATOMDEPLOY_FAULT ;;\n  \
         *) unset ATOMDEPLOY_FAULT ;;\nesac\n\
         printf '%s\\n' \"$pushed\" | setsid {{hook}}"
    ));
}

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Point {
    /// Mid-build, the build snapshotted but not published.
    Prepare,
    /// The switch, its symlink made, before the rename.
    BeforeRename,
    /// Right after the rename, before `switched` is printed.
    AfterRename,
    AfterSwitch,
    Healthcheck,
}

impl Point {
    const ALL: [Point; 5] = [
        Point::Prepare,
        Point::BeforeRename,
        Point::AfterRename,
        Point::AfterSwitch,
        Point::Healthcheck,
    ];

    /// The fault point's name (src/infra/fault.rs), and the operation it is armed for.
    fn fault(self) -> (&'static str, &'static str) {
        match self {
            Point::Prepare => ("snapshot-done", "/prepare/*"),
            Point::BeforeRename => ("switch-linked", "/switch"),
            Point::AfterRename => ("switched", "/switch"),
            Point::AfterSwitch => ("after_switch", "/switch"),
            Point::Healthcheck => ("healthcheck", "/switch"),
        }
    }

    /// The step a hold waits in, where one can.
    fn hold(self) -> Option<&'static str> {
        match self {
            Point::Prepare => Some("before_switch"),
            Point::AfterSwitch => Some("after_switch"),
            Point::Healthcheck => Some("healthcheck"),
            Point::BeforeRename | Point::AfterRename => None,
        }
    }

    /// The marker that makes the step fail, where one can.
    fn fails(self) -> Option<&'static str> {
        match self {
            Point::AfterSwitch => Some("after-switch-fails"),
            Point::Healthcheck => Some("unhealthy"),
            _ => None,
        }
    }
}

/// How it strikes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    /// The hook killed with its process group (`ATOMDEPLOY_FAULT=NAME`).
    Killed,
    /// The hook killed alone (`NAME!pid`), what it started left to its death signal.
    KilledAlone,
    /// The primary's `git push` to the host killed while the host's hook waits in a step.
    Dropped,
    /// The step fails.
    Fails,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Where {
    /// The last host.
    Host,
    /// The primary itself (a kill there ends the push itself, so only failing steps).
    Primary,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    point: Point,
    at: Where,
    how: How,
}

/// Every case that applies: each point on a host by each way it can strike there, and the
/// primary's own failing steps.
fn every_case() -> Vec<Case> {
    let mut cases = Vec::new();
    for point in Point::ALL {
        for how in [How::Killed, How::KilledAlone, How::Dropped, How::Fails] {
            let applies = match how {
                How::Killed | How::KilledAlone => true,
                How::Dropped => point.hold().is_some(),
                How::Fails => point.fails().is_some(),
            };
            if applies {
                cases.push(Case {
                    point,
                    at: Where::Host,
                    how,
                });
            }
        }
        if point.fails().is_some() {
            cases.push(Case {
                point,
                at: Where::Primary,
                how: How::Fails,
            });
        }
    }
    cases
}

/// Kills the primary's `git push` to `host` (the connection to it drops).
fn kill_push_to(g: &Group, host: &Path) {
    let host = host.display().to_string();
    let pushes: Vec<String> = g
        .primary
        .processes()
        .into_iter()
        .filter(|p| p.contains("push --porcelain") && p.contains(&host))
        .collect();
    assert!(!pushes.is_empty(), "no git push to {host} runs");
    for process in pushes {
        let pid = process.split(' ').next().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
}

/// What one case did: the push, and the commit live before it.
struct Struck {
    push: harness::Push,
    old: String,
}

/// One case, from a group live on one commit: the fault, then the invariant checked.
fn strike(g: &Group, case: Case, n: usize) -> Struck {
    let name = format!("{case:?}");
    let old = g.primary.live_revision();
    let host = g.hosts.last().unwrap();
    let url = g.urls.last().unwrap();
    let server = match case.at {
        Where::Host => host,
        Where::Primary => &g.primary,
    };
    g.clone.set_version(&format!("2.{n}.0"));
    let new = g.clone.commit(&name);
    let push = match case.how {
        How::Killed | How::KilledAlone => {
            let (fault, op) = case.point.fault();
            let fault = match case.how {
                How::Killed => fault.to_string(),
                _ => format!("{fault}!pid"),
            };
            arm(host, Some((op, &fault)));
            g.clone.push_main()
        }
        How::Dropped => {
            let step = case.point.hold().unwrap();
            std::fs::write(server.root.join(format!("hold-{step}")), "").unwrap();
            let running = g.clone.spawn_push(&["main"]);
            let held = server.root.join(format!("held-{step}"));
            harness::wait_until(
                Duration::from_secs(60),
                || held.exists(),
                || format!("{name}: {step} never held; so far:\n{}", running.seen()),
            );
            kill_push_to(g, url);
            std::fs::write(server.root.join("go"), "").unwrap();
            running.finish()
        }
        How::Fails => {
            std::fs::write(server.root.join(case.point.fails().unwrap()), "").unwrap();
            g.clone.push_main()
        }
    };
    g.wait_for_quiet();
    // The case's markers go before anything can fail.
    arm(host, None);
    for marker in ["before_switch", "after_switch", "healthcheck"]
        .iter()
        .flat_map(|step| [format!("hold-{step}"), format!("held-{step}")])
        .chain(["go", "after-switch-fails", "unhealthy"].map(String::from))
    {
        let _ = std::fs::remove_file(server.root.join(marker));
    }
    check_one_build(g, &name, &push, &old, &new);
    Struck { push, old }
}

/// The rest of the invariant: the next push deploys everywhere.
#[track_caller]
fn next_push_deploys_everywhere(g: &Group, n: usize) {
    let next = g.clone.deploy_version(&format!("3.{n}.0"));
    g.assert_all_live_on(&next);
}

/// The invariant: one build everywhere, and the push and the log say which.
#[track_caller]
fn check_one_build(g: &Group, name: &str, push: &harness::Push, old: &str, new: &str) {
    let live = g.live_commits();
    let all_new = live.iter().all(|c| c == new);
    let all_old = live.iter().all(|c| c == old);
    assert!(
        all_new || all_old,
        "{name}: servers on different commits (primary first): {live:?}, old {old}, new {new}\n{}",
        push.stderr
    );
    for server in g.servers() {
        server.assert_only_complete_builds(&[]);
    }
    let entry = g.primary.deploy_log().pop().unwrap();
    if all_new {
        assert_eq!(push.code, Some(0), "{name}: all switched:\n{}", push.stderr);
        assert_eq!(entry["outcome"], "deployed", "{name}: {entry}");
    } else {
        assert_ne!(
            push.code,
            Some(0),
            "{name}: nothing switched, the push said it did:\n{}",
            push.stderr
        );
        assert!(
            push.stderr.contains("remote: error: "),
            "{name}: no error line:\n{}",
            push.stderr
        );
        assert_ne!(entry["outcome"], "deployed", "{name}: {entry}");
    }
}

#[test]
fn every_fault_of_a_host_or_the_primary_leaves_the_group_on_one_build() {
    let g = faulty_group(2);
    g.clone.push_main().success();
    let cases = every_case();
    assert!(cases.len() >= 15, "{cases:?}");
    for (n, case) in cases.into_iter().enumerate() {
        strike(&g, case, n);
        next_push_deploys_everywhere(&g, n);
    }
}

/// A case on a group of its own, which must end with every server back on the old commit,
/// the push's error naming `says`.
#[track_caller]
fn goes_back(case: Case, says: &str) -> Group {
    let g = faulty_group(1);
    g.clone.push_main().success();
    let struck = strike(&g, case, 0);
    g.assert_all_live_on(&struck.old);
    let error = errors(&struck.push);
    assert!(error.contains(says), "{case:?}: want {says:?} in:\n{error}");
    next_push_deploys_everywhere(&g, 1);
    g
}

#[test]
fn a_host_killed_right_after_its_rename_is_sent_back_with_the_group() {
    let case = Case {
        point: Point::AfterRename,
        at: Where::Host,
        how: How::KilledAlone,
    };
    // What web2's own receive-pack said of its hook killed comes first; how it ended is
    // unknown either way.
    goes_back(
        case,
        "; whether it switched is unknown); switched back: web2",
    );
}

#[test]
fn a_host_whose_connection_drops_after_it_switched_fails_the_push_and_the_group_goes_back() {
    let g = faulty_group(1);
    g.clone.push_main().success();
    let host = &g.hosts[0];
    // Its health check fails after the connection dropped: only the host's own log knows.
    std::fs::write(host.root.join("unhealthy"), "").unwrap();
    let case = Case {
        point: Point::Healthcheck,
        at: Where::Host,
        how: How::Dropped,
    };
    let struck = strike(&g, case, 0);
    g.assert_all_live_on(&struck.old);
    let error = errors(&struck.push);
    assert!(
        error
            .contains("web2: it switched, but its switch did not end (git push to web2 was killed"),
        "{error}"
    );
    let switch = host
        .deploy_log()
        .into_iter()
        .rfind(|e| e["group"]["op"] == "switch")
        .unwrap();
    assert_eq!(switch["outcome"], "unhealthy", "{switch}");
    next_push_deploys_everywhere(&g, 1);
}

#[test]
fn a_failing_after_switch_or_opcache_reset_on_a_host_or_the_primary_sends_the_group_back() {
    for at in [Where::Host, Where::Primary] {
        let case = Case {
            point: Point::AfterSwitch,
            at,
            how: How::Fails,
        };
        let who = match at {
            Where::Host => "web2: after_switch failed",
            Where::Primary => "this server: after_switch failed",
        };
        goes_back(case, who);
    }
    // An opcache reset that fails on a host: no php-fpm listens where its deploy.yml says.
    let g = faulty_group(1);
    g.clone.push_main().success();
    let old = g.primary.live_revision();
    let socket = g.hosts[0].base().join("no-fpm.sock");
    g.hosts[0].set_config("reset_opcache", &format!("unix:{}", socket.display()));
    g.clone.set_version("2.0.0");
    g.clone.commit("v2");
    let push = g.clone.push_main().deploy_failed();
    assert_ne!(push.code, Some(0));
    g.assert_all_live_on(&old);
    let error = errors(&push);
    assert!(
        error.contains("the group's switch failed (web2: ")
            && error.contains("switched back: web2, this server"),
        "{error}"
    );
}

#[test]
fn a_host_that_lags_past_switch_window_sends_the_group_back_and_is_named() {
    let g = faulty_group(2);
    g.clone.push_main().success();
    let old = g.primary.live_revision();
    let builds: Vec<Option<String>> = g.servers().map(Server::live).collect();
    // web3's lock is taken between the prepares and the switch (by `release:`, which runs on
    // the primary then), and held until the test says go: its switch waits for it.
    let base = g.primary.base();
    let (held, go) = (base.join("held"), base.join("go"));
    // Should the test fail, the holder (and the push waiting on it) must still end.
    let _go = Go(go.clone());
    let holder = base.join("hold-web3.sh");
    std::fs::write(
        &holder,
        format!(
            "flock {lock} sh -c 'touch {held}; while [ ! -e {go} ]; do sleep 0.01; done' \
             >/dev/null 2>&1 &\nwhile [ ! -e {held} ]; do sleep 0.01; done\n",
            lock = g.hosts[1].root.join(".atomdeploy/lock").display(),
            held = held.display(),
            go = go.display()
        ),
    )
    .unwrap();
    g.primary
        .set_config("release", &format!("['sh {}']", holder.display()));
    g.primary.set_config("switch_window", "1");
    g.clone.set_version("2.0.0");
    g.clone.commit("v2");
    let running = g.clone.spawn_push(&["main"]);
    // The window passes: web2 and the primary go back without waiting for web3, whose
    // switch still waits for its lock.
    harness::wait_until(
        Duration::from_secs(60),
        || {
            let restored = g.hosts[0]
                .deploy_log()
                .last()
                .is_some_and(|e| e["group"]["op"] == "restore");
            restored && g.primary.live() == builds[0] && g.hosts[0].live() == builds[1]
        },
        || format!("the group did not go back; so far:\n{}", running.seen()),
    );
    assert!(!running.seen().contains("switched 3 servers"));
    std::fs::write(&go, "").unwrap();
    let push = running.finish().deploy_failed();
    assert_ne!(push.code, Some(0));
    let error = errors(&push);
    assert!(
        error.contains("web3 had not switched ")
            && error.contains(" after the first server (switch_window 1 s)")
            && error.contains("switched back: web2, web3, this server"),
        "{error}"
    );
    g.wait_for_quiet();
    g.assert_all_live_on(&old);
    g.primary.set_config("release", "[]");
    next_push_deploys_everywhere(&g, 1);
}

/// Writes its file when dropped: a wait on it ends however the test ends.
struct Go(std::path::PathBuf);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// Makes a host's hook say what a broken one would: its protocol lines edited by `sed`.
fn lying(host: &Server, sed: &str) {
    host.wrap_hook(&format!(
        "unset ATOMDEPLOY_FAULT\n{{hook}} 2>&1 | sed -u '{sed}'"
    ));
}

#[test]
fn a_host_that_prepared_another_commit_than_the_pushed_one_switches_nobody() {
    let g = faulty_group(2);
    g.clone.push_main().success();
    let old = g.primary.live_revision();
    let other = "1234567".repeat(6)[..40].to_string();
    lying(
        &g.hosts[1],
        &format!("s/^\\(atomdeploy-group: prepared [^ ]* [^ ]*\\) [0-9a-f]*$/\\1 {other}/"),
    );
    let before = g.state();
    g.clone.set_version("2.0.0");
    let new = g.clone.commit("v2");
    let push = g.clone.push_main().deploy_failed();
    let error = errors(&push);
    let says = format!(
        "no server switched: web3: prepared 1234567, not the pushed {}",
        &new[..7]
    );
    assert!(error.contains(&says), "want {says:?} in:\n{error}");
    g.assert_unchanged_since(&before);
    g.assert_all_live_on(&old);
}

#[test]
fn a_host_reporting_an_impossible_switch_time_is_named_and_left_out_of_the_spread() {
    let g = faulty_group(2);
    g.clone.push_main().success();
    // The year 2286.
    lying(
        &g.hosts[1],
        "s/^\\(atomdeploy-group: switched [^ ]* [^ ]*\\) [0-9]*$/\\1 9999999999000000000/",
    );
    g.clone.set_version("2.0.0");
    let new = g.clone.commit("v2");
    let push = g
        .clone
        .push_main()
        .success()
        .stderr_has("warning: web3 reported a switch time ")
        .stderr_has(" days in the future; its clock or its hook is wrong");
    g.assert_all_live_on(&new);
    let line = push
        .remote_line("atomdeploy: switched 3 servers within ")
        .unwrap();
    let ms: f64 = line
        .trim_start_matches("atomdeploy: switched 3 servers within ")
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    assert!(ms < 60_000.0, "the lie counted: {line}");
}

#[test]
fn a_host_that_drifted_is_named_before_the_deploy_brings_it_back() {
    let g = faulty_group(2);
    g.clone.push_main().success();
    let v1 = g.primary.live_revision();
    // web3 alone gets v2, pushed to it directly once it left the group (a host of a group
    // refuses a deploy of its own); the next group deploy takes it back in.
    g.clone.set_version("2.0.0");
    let v2 = g.clone.commit("v2, to web3 alone");
    g.hosts[1].leave_group();
    let web3 = g.hosts[1].repo.display().to_string();
    g.clone.git(&["push", "-q", &web3, "main"]);
    assert_eq!(g.hosts[1].live_revision(), v2);
    g.clone.set_version("3.0.0");
    let v3 = g.clone.commit("v3");
    let push = g.clone.push_main().success();
    let warning = format!(
        "warning: web3 was live on {}, not on this server's live {}: it drifted; this deploy \
         brings it back in line",
        &v2[..7],
        &v1[..7]
    );
    let said = push.stderr.find(&warning);
    let switched = push.stderr.find("switched 3 servers within");
    assert!(
        said.is_some() && said < switched,
        "want {warning:?} before the switch in:\n{}",
        push.stderr
    );
    assert!(!push.stderr.contains("web2 was live"), "{}", push.stderr);
    g.assert_all_live_on(&v3);
    // Healed: the next deploy has nothing to say.
    g.clone.set_version("3.0.1");
    g.clone.commit("v3.0.1");
    g.clone.push_main().success().stderr_lacks("drifted");
}

/// `hosts include` of a host whose switch fails: the host goes back and stays excluded, and
/// the error speaks of the host alone, as nothing switched or went back on the primary.
#[test]
fn a_failed_include_speaks_of_the_host_alone() {
    let g = faulty_group(1);
    g.clone.push_main().success();
    let v1 = g.primary.live_revision();
    harness::assert_success(
        &g.primary
            .run(&["hosts", "exclude", "web2", "--reason", "disk died"]),
        "hosts exclude",
    );
    g.clone.set_version("2.0.0");
    let v2 = g.clone.commit("v2");
    g.clone.push_main().success();
    fs::write(g.hosts[0].root.join("unhealthy"), "").unwrap();
    let out = g.primary.run(&["hosts", "include", "web2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("web2: unhealthy"), "{stderr}");
    assert!(stderr.contains("switched back: web2"), "{stderr}");
    assert!(stderr.contains("stays excluded"), "{stderr}");
    assert!(!stderr.contains("this server"), "{stderr}");
    assert_eq!(g.primary.live_revision(), v2);
    assert_eq!(g.hosts[0].live_revision(), v1);

    fs::remove_file(g.hosts[0].root.join("unhealthy")).unwrap();
    harness::assert_success(&g.primary.run(&["hosts", "include", "web2"]), "include");
    g.assert_all_live_on(&v2);
    assert_eq!(g.primary.processes(), Vec::<String>::new());
}
