//! Several web servers, one push, the primary's side: every host prepares, then
//! all switch together, or none does. Hosts are reached by local path here (each its own
//! `install`, bare repository and deploy root); ssh is group_ssh.rs's.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{self, DevClone, Server};

/// A primary and its hosts, the primary's deploy.yml listing them as `web2`, `web3`, ….
/// (Shared with group_faults.rs.)
pub(crate) struct Group {
    pub(crate) primary: Server,
    pub(crate) hosts: Vec<Server>,
    /// The hosts as the primary's deploy.yml lists them.
    pub(crate) urls: Vec<PathBuf>,
    pub(crate) clone: DevClone,
}

impl Group {
    fn new(hosts: usize) -> Group {
        Group::with_app(hosts, |primary| primary.clone_fixture("example-app"))
    }

    /// A group whose clone holds what `app` commits: a smaller app than the example's, for
    /// tests that deploy many times.
    pub(crate) fn with_app(hosts: usize, app: impl FnOnce(&Server) -> DevClone) -> Group {
        let primary = Server::install();
        let hosts: Vec<Server> = (0..hosts).map(|_| Server::install()).collect();
        // Named links, so that each host's lines carry a short name of its own.
        let urls: Vec<PathBuf> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let link = primary.base().join(format!("web{}.git", i + 2));
                std::os::unix::fs::symlink(&host.repo, &link).unwrap();
                link
            })
            .collect();
        let list: Vec<String> = urls.iter().map(|u| u.display().to_string()).collect();
        primary.set_config("hosts", &format!("[{}]", list.join(", ")));
        let clone = app(&primary);
        Group {
            primary,
            hosts,
            urls,
            clone,
        }
    }

    /// A group whose first deploy went live everywhere, and that deploy's commit.
    fn deployed(hosts: usize) -> (Group, String) {
        let g = Group::new(hosts);
        g.clone.push_main().success();
        let live = g.clone.head();
        (g, live)
    }

    pub(crate) fn servers(&self) -> impl Iterator<Item = &Server> {
        std::iter::once(&self.primary).chain(&self.hosts)
    }

    /// Every server's live commit.
    pub(crate) fn live_commits(&self) -> Vec<String> {
        self.servers().map(Server::live_revision).collect()
    }

    #[track_caller]
    pub(crate) fn assert_all_live_on(&self, commit: &str) {
        assert_eq!(
            self.live_commits(),
            vec![commit.to_string(); self.hosts.len() + 1],
            "primary first, then web2, web3, …"
        );
        for server in self.servers() {
            server.assert_only_complete_builds(&[]);
            server.assert_nothing_left_behind();
        }
    }

    pub(crate) fn state(&self) -> Vec<harness::ServerState> {
        self.servers().map(Server::state).collect()
    }

    #[track_caller]
    pub(crate) fn assert_unchanged_since(&self, before: &[harness::ServerState]) {
        for (i, (server, state)) in self.servers().zip(before).enumerate() {
            server.assert_unchanged_since_in(state, &format!("server {i} (0 is the primary)"));
        }
    }

    /// Waits until no process this test started runs (hosts' hooks a killed primary left).
    pub(crate) fn wait_for_quiet(&self) {
        harness::wait_until(
            Duration::from_secs(120),
            || self.primary.processes().is_empty(),
            || format!("still running: {:?}", self.primary.processes()),
        );
    }

    fn hosts_json(&self) -> serde_json::Value {
        let out = self.primary.run(&["hosts", "--json"]);
        harness::assert_success(&out, "hosts --json");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The spread the summary line reports: `switched 4 servers within 12 ms`.
fn spread_ms(push: &harness::Push) -> f64 {
    let line = push
        .remote_line("atomdeploy: switched ")
        .unwrap_or_else(|| panic!("no spread line:\n{}", push.stderr));
    let ms = line
        .split(" within ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("{line}"));
    ms.parse().unwrap()
}

/// The push's `error:` lines, which name each failing host. (Through the receive-pack wrapper,
/// its own `error: ` may land at the start of a `remote:` line: the two are written by two
/// processes to one terminal.)
pub(crate) fn errors(push: &harness::Push) -> String {
    push.stderr
        .lines()
        .filter_map(|l| l.find("remote: error: ").map(|at| &l[at..]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_hosts_prepare_then_switch_together() {
    let g = Group::new(3);
    let push = g.clone.push_main().success();
    for label in ["web2", "web3", "web4"] {
        // Each host's own output, prefixed with its name.
        push.remote_line(&format!("{label}: ==> composer"))
            .unwrap_or_else(|| panic!("no prefixed lines of {label}:\n{}", push.stderr));
    }
    assert!(spread_ms(&push) >= 0.0);
    assert!(push.stderr.contains("switched 4 servers within"));
    g.assert_all_live_on(&g.clone.head());

    let v2 = g.clone.deploy_version("2.0.0");
    g.assert_all_live_on(&v2);
    let entry = g.primary.deploy_log().pop().unwrap();
    assert_eq!(entry["outcome"], "deployed");
    assert!(entry["switch_spread_ms"].as_f64().is_some(), "{entry}");
    let hosts = entry["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    assert!(hosts.iter().all(|h| h["outcome"] == "switched"), "{entry}");
    // Each host built the commit itself, and its own log says so.
    for host in &g.hosts {
        assert!(host.read_live("src/Version.php").contains("2.0.0"));
    }
}

#[test]
fn a_host_whose_composer_fails_stops_every_switch() {
    let (g, v1) = Group::deployed(2);
    // Composer's post-install script fails on web3 alone (a marker in its deploy root); the
    // changed composer.json makes composer run everywhere.
    g.clone.write(
        "bin/check.php",
        "<?php\nif (file_exists(__DIR__ . '/../../composer-fails')) {\n    \
         fwrite(STDERR, \"post-install says no\\n\");\n    exit(1);\n}\n",
    );
    let composer_json = std::fs::read_to_string(g.clone.path.join("composer.json")).unwrap();
    g.clone.write(
        "composer.json",
        &composer_json.replace(
            "\"post-install-cmd\": [\"@php bin/post-install.php\"]",
            "\"post-install-cmd\": [\"@php bin/post-install.php\", \"@php bin/check.php\"]",
        ),
    );
    g.clone.commit("a post-install check that fails on web3");
    std::fs::write(g.hosts[1].root.join("composer-fails"), "").unwrap();
    let before = g.state();
    // Through the receive-pack wrapper, as a team sets it up: `git push` itself fails.
    g.clone.git(&[
        "config",
        "remote.production.receivepack",
        &format!("{} receive-pack", harness::BIN),
    ]);
    let push = g.clone.push_main().deploy_failed();
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    let wrapper = push
        .stderr
        .lines()
        .find(|l| l.starts_with("error: the push was received, but its deploy failed: "))
        .unwrap_or_else(|| panic!("{}", push.stderr));
    assert!(
        wrapper.contains("failed: group deploy: no server switched: web3: composer failed"),
        "{wrapper}"
    );
    let push = push
        .stderr_has("web3: ")
        .stderr_has("post-install says no")
        .stderr_has("remote: error: no server switched: web3: composer failed")
        .stderr_lacks("switched 3 servers");
    let error = errors(&push);
    assert!(error.contains("web3: "), "{error}");
    assert!(!error.contains("web2: "), "web2 prepared fine: {error}");
    g.assert_unchanged_since(&before);
    g.assert_all_live_on(&v1);
}

#[test]
fn a_host_whose_config_differs_is_refused_naming_the_keys() {
    let (g, v1) = Group::deployed(2);
    g.hosts[0].set_config("keep_builds", "3");
    g.hosts[0].set_config("shared", "[storage/]");
    g.clone.set_version("2.0.0");
    g.clone.commit("v2");
    let before = g.state();
    let push = g.clone.push_main().deploy_failed();
    let error = errors(&push);
    assert!(
        error.contains("web2") && error.contains("keep_builds") && error.contains("shared"),
        "{error}"
    );
    g.assert_unchanged_since(&before);
    g.assert_all_live_on(&v1);
}

#[test]
fn a_primary_killed_while_hosts_prepare_switches_nobody_and_the_next_deploy_brings_all() {
    let g = Group::new(2);
    // A release command, so that a kill can land while it runs: every host prepared, none
    // switched.
    g.primary.set_config("release", "['true']");
    g.clone.push_main().success();
    let mut live = g.clone.head();
    for (i, fault) in ["group-prepare!pid", "release!pid"].iter().enumerate() {
        g.clone.set_version(&format!("{}.0.0", 2 + 2 * i));
        g.clone.commit("killed");
        g.clone
            .push_with_fault(&["main"], fault)
            .stderr_lacks("switched 3 servers");
        g.wait_for_quiet();
        // Nobody switched: every server still serves the commit before, only complete builds.
        assert_eq!(g.live_commits(), vec![live.clone(); 3], "after {fault}");
        for server in g.servers() {
            server.assert_only_complete_builds(&[]);
        }
        live = g.clone.deploy_version(&format!("{}.0.0", 3 + 2 * i));
        g.assert_all_live_on(&live);
    }
}

#[test]
fn a_primary_killed_mid_switch_leaves_complete_builds_and_the_next_deploy_brings_all() {
    let (g, v1) = Group::deployed(2);
    g.clone.set_version("2.0.0");
    let v2 = g.clone.commit("v2");
    g.clone
        .push_with_fault(&["main"], "group-switch!pid")
        .stderr_lacks("switched 3 servers");
    g.wait_for_quiet();
    // Some servers may have switched, some not; each serves a whole build of v1 or v2.
    for (server, commit) in g.servers().zip(g.live_commits()) {
        assert!(commit == v1 || commit == v2, "{commit}");
        server.assert_only_complete_builds(&[]);
    }
    let v3 = g.clone.deploy_version("3.0.0");
    g.assert_all_live_on(&v3);
}

/// `atomdeploy-hook hosts | head -1`: a reader that has gone ends the listing quietly, with
/// the exit status the hosts' state gives (0: every server on the group's commit).
#[test]
fn hosts_whose_reader_has_gone_ends_quietly() {
    let (g, _) = Group::deployed(1);
    for args in [["hosts"].as_slice(), &["hosts", "--json"]] {
        let out = g.primary.run_into_closed_pipe(args);
        assert_eq!(
            (out.status.code(), String::from_utf8_lossy(&out.stderr)),
            (Some(0), "".into()),
            "{args:?}"
        );
    }
}

#[test]
fn rollback_takes_every_server_back_to_one_commit() {
    let (g, v1) = Group::deployed(2);
    let v2 = g.clone.deploy_version("2.0.0");
    g.assert_all_live_on(&v2);
    let push = g.clone.push(&[":rollback"]).success();
    assert!(
        push.stderr.contains("switched 3 servers within"),
        "{}",
        push.stderr
    );
    g.assert_all_live_on(&v1);
    // `replay` rebuilds v2 everywhere; the command rolls the group back again.
    let push = g
        .clone
        .push(&[&format!("{v2}:refs/heads/replay")])
        .success();
    assert!(
        push.stderr.contains("switched 3 servers within"),
        "{}",
        push.stderr
    );
    g.assert_all_live_on(&v2);
    // A replay is a build equal to a fresh checkout on every server: nothing linked from the
    // build before it (whose composer.json is the same file).
    for server in g.servers() {
        let builds = server.builds();
        let inode = |build: &str| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(server.build_path(build).join("composer.json"))
                .unwrap()
                .ino()
        };
        let [.., before, replayed] = builds.as_slice() else {
            panic!("{builds:?}");
        };
        assert_ne!(inode(before), inode(replayed), "builds/{replayed} linked");
    }
    let out = g.primary.run(&["rollback"]);
    harness::assert_success(&out, "rollback");
    g.assert_all_live_on(&v1);
}

#[test]
fn an_excluded_host_is_left_out_with_a_warning_and_include_brings_it_back() {
    let (g, v1) = Group::deployed(2);
    let web3 = g.urls[1].display().to_string();
    let out = g
        .primary
        .run(&["hosts", "exclude", &web3, "--reason", "disk died"]);
    harness::assert_success(&out, "hosts exclude");
    let v2 = {
        g.clone.set_version("2.0.0");
        g.clone.commit("v2")
    };
    let push = g
        .clone
        .push_main()
        .success()
        .stderr_has(&format!("warning: deploying without {web3}"))
        .stderr_has("disk died");
    assert!(
        push.stderr.contains("switched 2 servers within"),
        "{}",
        push.stderr
    );
    assert_eq!(g.live_commits(), [v2.clone(), v2.clone(), v1.clone()]);

    let json = g.hosts_json();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["on_group_commit"], true);
    assert_eq!(hosts[1]["on_group_commit"], false);
    assert_eq!(hosts[1]["excluded"]["why"], "disk died");
    let out = g.primary.run(&["hosts"]);
    harness::assert_success(&out, "hosts");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("web3")).unwrap();
    assert!(
        line.contains("NOT ON") && line.contains("EXCLUDED"),
        "{text}"
    );

    // With every host left out, the primary deploys alone (and says so).
    let web2 = g.urls[0].display().to_string();
    harness::assert_success(
        &g.primary
            .run(&["hosts", "exclude", "web2", "--reason", "maintenance"]),
        "hosts exclude web2",
    );
    g.clone.set_version("2.5.0");
    let v25 = g.clone.commit("v2.5");
    g.clone
        .push_main()
        .success()
        .stderr_has(&format!("warning: deploying without {web2}"))
        .stderr_has("switched 1 servers within");
    assert_eq!(g.primary.live_revision(), v25);
    harness::assert_success(
        &g.primary.run(&["hosts", "include", "web2"]),
        "include web2",
    );
    harness::assert_success(
        &g.primary.run(&["hosts", "include", "web3"]),
        "include web3",
    );
    g.assert_all_live_on(&v25);
    let json = g.hosts_json();
    assert!(
        json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["on_group_commit"] == true && h.get("excluded").is_none()),
        "{json}"
    );
    // No warning any more.
    g.clone.set_version("3.0.0");
    let v3 = g.clone.commit("v3");
    g.clone
        .push_main()
        .success()
        .stderr_lacks("deploying without");
    g.assert_all_live_on(&v3);
    let log = g.primary.deploy_log();
    assert!(log.iter().any(|e| e["ref"] == "hosts exclude"));
    assert!(log.iter().any(|e| e["ref"] == "hosts include"));
}

#[test]
fn hosts_refuse_options_and_duplicates_before_anything_runs() {
    let server = Server::install();
    server.set_config(
        "hosts",
        "['-oProxyCommand=touch /tmp/pwned', 'web2:/srv/app.git']",
    );
    let clone = server.clone_fixture("example-app");
    let push = clone.push_main().deploy_failed();
    assert!(push.stderr.contains("deploy.yml:"), "{}", push.stderr);
    assert!(push.stderr.contains("like an option"), "{}", push.stderr);
    assert_eq!(server.live(), None);
}

#[test]
fn a_host_unhealthy_after_the_switch_sends_every_server_back() {
    let g = Group::new(2);
    // The same check everywhere (an app key); it fails where the marker is.
    for server in g.servers() {
        server.set_config(
            "healthcheck",
            "{command: 'test ! -e \"$ATOMDEPLOY_ROOT/unhealthy\"', retries: 0}",
        );
    }
    g.clone.push_main().success();
    let v1 = g.clone.head();
    let builds_v1: Vec<Option<String>> = g.servers().map(Server::live).collect();
    std::fs::write(g.hosts[1].root.join("unhealthy"), "").unwrap();
    g.clone.set_version("2.0.0");
    g.clone.commit("v2");
    let push = g.clone.push_main().deploy_failed();
    let error = errors(&push);
    assert!(
        error.contains("the group's switch failed (web3: unhealthy")
            && error.contains("); switched back: web2, web3, this server"),
        "{error}"
    );
    // Every server is back on the very build it served, and the group's build is marked bad.
    assert_eq!(g.servers().map(Server::live).collect::<Vec<_>>(), builds_v1);
    g.assert_all_live_on(&v1);
    let entry = g.primary.deploy_log().pop().unwrap();
    assert_eq!(entry["outcome"], "unhealthy", "{entry}");
    let hosts = entry["hosts"].as_array().unwrap();
    assert!(hosts.iter().all(|h| h["outcome"] == "restored"), "{entry}");
}

#[test]
fn a_host_that_cannot_be_reached_or_hangs_fails_the_deploy_and_nothing_changes() {
    let (g, v1) = Group::deployed(1);
    // A before_switch that hangs on web2 alone, past host_timeout (a per-host key).
    for server in g.servers() {
        server.set_config(
            "before_switch",
            "['if [ -e \"$ATOMDEPLOY_ROOT/hang\" ]; then sleep 600; fi']",
        );
    }
    g.primary.set_config("host_timeout", "3");
    std::fs::write(g.hosts[0].root.join("hang"), "").unwrap();
    g.clone.set_version("2.0.0");
    g.clone.commit("v2");
    let before = g.state();
    let push = g.clone.push_main().deploy_failed();
    let error = errors(&push);
    assert!(
        error.contains("no server switched: web2: ") && error.contains("did not finish within 3s"),
        "{error}"
    );
    g.wait_for_quiet();
    // The killed host's half-made build is removed by the abort (or its next deploy).
    std::fs::remove_file(g.hosts[0].root.join("hang")).unwrap();
    g.assert_unchanged_since(&before);
    assert_eq!(g.live_commits(), [v1.clone(), v1.clone()]);

    // A host that is not there: named, and nothing changes anywhere.
    let missing = g.primary.base().join("gone.git");
    let list = format!("[{}, {}]", g.urls[0].display(), missing.display());
    g.primary.set_config("hosts", &list);
    g.clone.set_version("3.0.0");
    g.clone.commit("v3");
    let push = g.clone.push_main().deploy_failed();
    let error = errors(&push);
    assert!(error.contains("gone: "), "{error}");
    assert!(!error.contains("web2: "), "{error}");
    assert_eq!(g.live_commits(), [v1.clone(), v1.clone()]);
    let out = g.primary.run(&["hosts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(line.contains("UNREACHABLE"), "{text}");
}

#[test]
fn release_runs_once_on_the_primary_after_every_host_prepared_and_before_any_switch() {
    let g = Group::new(2);
    g.clone.push_main().success();
    let old: Vec<Option<String>> = g.hosts.iter().map(Server::live).collect();
    // What the hosts look like while release: runs: their live build and their builds/.
    let seen = g.primary.base().join("release-saw");
    let look: Vec<String> = g
        .hosts
        .iter()
        .map(|h| {
            format!(
                "readlink {root}/latest >> {seen}; ls {root}/builds | wc -l >> {seen}",
                root = h.root.display(),
                seen = seen.display()
            )
        })
        .collect();
    g.primary
        .set_config("release", &format!("['{}']", look.join("; ")));
    let v2 = g.clone.deploy_version("2.0.0");
    g.assert_all_live_on(&v2);
    let lines: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let expected: Vec<String> = old
        .iter()
        .flat_map(|live| {
            [
                format!("builds/{}", live.as_ref().unwrap()),
                "2".to_string(),
            ]
        })
        .collect();
    // Once (two lines per host), each host still on its old build with the new one prepared.
    assert_eq!(lines, expected);
}

#[test]
fn a_rollback_a_host_cannot_follow_switches_nobody() {
    let g = Group::new(2);
    g.clone.push_main().success();
    let v2 = g.clone.deploy_version("2.0.0");
    // web3 lost its build of v1: it has nothing to reuse.
    let builds = g.hosts[1].builds();
    std::fs::remove_dir_all(g.hosts[1].build_path(&builds[0])).unwrap();
    let before = g.state();
    let push = g.clone.push(&[":rollback"]).deploy_failed();
    let error = errors(&push);
    assert!(
        error.contains("no server switched: web3: ") && !error.contains("web2: "),
        "{error}"
    );
    g.assert_unchanged_since(&before);
    g.assert_all_live_on(&v2);
    // The rollback branch is back, for the next try, and the log has the attempt.
    let rollback = g.clone.git(&["ls-remote", "production", "rollback"]);
    assert!(!rollback.trim().is_empty());
    let entry = g.primary.deploy_log().pop().unwrap();
    assert_eq!(entry["outcome"], "failed", "{entry}");
    assert_eq!(entry["hosts"][1]["outcome"], "failed", "{entry}");
}

/// The figure a group deploy is judged by: the spread of the switches of a primary and 3 local
/// hosts, median of several deploys.
/// `cargo test --test integration group::switch_spread -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn switch_spread_of_three_local_hosts() {
    let g = Group::new(3);
    g.clone.push_main().success();
    let mut spreads = Vec::new();
    for i in 0..7 {
        g.clone.set_version(&format!("2.0.{i}"));
        g.clone.commit("next");
        let push = g.clone.push_main().success();
        spreads.push(spread_ms(&push));
    }
    spreads.sort_by(f64::total_cmp);
    eprintln!(
        "switch spread of 4 servers (ms), sorted: {spreads:?}; median {}",
        spreads[spreads.len() / 2]
    );
}
