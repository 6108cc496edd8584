//! The cleanup after the push: old builds leave builds/ before the push ends, and their files
//! are deleted by a process of their own that holds the deploy lock after the hook has exited
//! (src/steps/cleanup.rs). The push does not wait for the disk; the next deploy does.

use std::fs;
use std::path::PathBuf;

use crate::harness::{self, DevClone, Server};

/// A server that keeps `keep` builds of a tiny app (no composer: each deploy takes a blink),
/// with `n` builds deployed.
fn server_with_builds(keep: usize, n: usize) -> (Server, DevClone) {
    let server = Server::builder()
        .config("composer", "false")
        .config("keep_builds", &keep.to_string())
        .install();
    let clone = server.empty_clone("tiny");
    clone.write(
        "public/index.php",
        "<?php echo file_get_contents(__DIR__.'/../v.txt');\n",
    );
    for i in 0..n {
        commit_version(&clone, &format!("v{i}"));
        clone.push_main().success();
    }
    (server, clone)
}

fn commit_version(clone: &DevClone, version: &str) -> String {
    clone.write("v.txt", version);
    clone.commit(version)
}

/// The commits of the builds whose files wait in the trash.
fn trashed_revisions(server: &Server) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(server.root.join(".atomdeploy/trash"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| fs::read_to_string(e.path().join("tree/REVISION")).ok())
                .map(|r| r.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn revision_of(server: &Server, build: &str) -> String {
    fs::read_to_string(server.build_path(build).join("REVISION"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_push_returns_before_the_old_builds_are_deleted_and_the_lock_is_held_until_they_are() {
    let (server, clone) = server_with_builds(1, 1);
    let old = server.live().unwrap();
    let old_commit = revision_of(&server, &old);
    let hold = server.hold_at("cleanup");
    let (var, value) = hold.var();
    commit_version(&clone, "v1");
    let push = clone
        .push_leaving_cleanup(&["main"], &[(var, &value)])
        .success()
        .stderr_has(
            "1 old builds removed (keep_builds: 1); their files are deleted in the background",
        );
    assert!(push.remote_line("deployed ").is_some(), "{}", push.stderr);

    // The push has its answer; the cleanup is held before it deletes anything.
    let pid = hold.wait_held();
    let live = server.live().unwrap();
    assert_eq!(server.builds(), [live], "the old build left builds/");
    assert_eq!(
        trashed_revisions(&server),
        [old_commit],
        "its files wait in the trash"
    );
    assert_eq!(
        server.lock_holder(),
        pid,
        "the cleanup holds the deploy lock"
    );
    assert!(!server.lock_is_free());
    assert_eq!(server.env.cleanups(), [pid]);

    hold.release();
    server.env.wait_for_cleanups();
    assert!(server.lock_is_free());
    server.assert_nothing_left_behind();
    assert!(server.page().contains("v1"));
    // What it did is in the deploy's output.
    let log = server.run(&["log"]);
    harness::assert_success(&log, "log");
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("cleanup in the background: 1 old build deleted from the trash in "),
        "{log}"
    );
}

#[test]
fn the_cleanup_process_holds_none_of_the_pushs_pipes_and_has_a_session_of_its_own() {
    let (server, clone) = server_with_builds(1, 1);
    let hold = server.hold_at("cleanup");
    let (var, value) = hold.var();
    commit_version(&clone, "v1");
    // git waits for every copy of the hook's stdout and stderr to close: that the push
    // returned with the cleanup held says it holds none.
    clone
        .push_leaving_cleanup(&["main"], &[(var, &value)])
        .success();
    let pid = hold.wait_held();
    let live = server.live().unwrap();
    let output = server.root.join(format!(".atomdeploy/output/{live}.log"));
    let mut fds: Vec<(String, PathBuf)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = fs::read_link(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    let expected: Vec<(String, PathBuf)> = vec![
        ("0".into(), "/dev/null".into()),
        ("1".into(), output.clone()),
        ("2".into(), output),
        ("3".into(), server.root.join(".atomdeploy/lock")),
    ];
    assert_eq!(fds, expected, "its open files");
    // A session of its own: the end of the pusher's ssh session, or a Ctrl-C, is not its.
    // SAFETY: getsid(2) and getpgid(2) read a pid's ids.
    let (sid, pgid) = unsafe { (libc::getsid(pid), libc::getpgid(pid)) };
    assert_eq!((sid, pgid), (pid, pid), "its session and process group");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let tty = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(4);
    assert_eq!(tty, Some("0"), "it has no controlling terminal");
    hold.release();
    server.env.wait_for_cleanups();
    server.assert_nothing_left_behind();
}

#[test]
fn a_push_made_while_the_cleanup_runs_waits_for_it_and_then_deploys() {
    let (server, clone) = server_with_builds(1, 1);
    let hold = server.hold_at("cleanup");
    let (var, value) = hold.var();
    let first = commit_version(&clone, "v1");
    clone
        .push_leaving_cleanup(&["main"], &[(var, &value)])
        .success();
    let pid = hold.wait_held();

    let second = commit_version(&clone, "v2");
    let mut running = clone.spawn_push(&["main"]);
    running.wait_for_output(&format!(
        "waiting for the deploy lock, held by pid {pid} deleting old builds"
    ));
    assert!(running.is_running());
    hold.release();
    running.finish().success();

    assert_eq!(server.live_revision(), second);
    assert!(server.page().contains("v2"));
    assert_eq!(server.builds(), [server.live().unwrap()]);
    server.assert_nothing_left_behind();
    let log = server.deploy_log();
    let deployed: Vec<&str> = log
        .iter()
        .filter(|e| e["outcome"] == "deployed")
        .map(|e| e["commit"].as_str().unwrap())
        .collect();
    assert_eq!(
        deployed[deployed.len() - 2..],
        [first.as_str(), second.as_str()]
    );
}

#[test]
fn a_cleanup_killed_midway_is_finished_by_the_next_deploy_and_the_live_build_is_untouched() {
    let (server, clone) = server_with_builds(3, 3);
    let old: Vec<String> = server
        .builds()
        .iter()
        .map(|b| revision_of(&server, b))
        .collect();
    server.set_config("keep_builds", "1");
    let hold = server.hold_at("cleanup");
    let (var, value) = hold.var();
    commit_version(&clone, "v3");
    clone
        .push_leaving_cleanup(&["main"], &[(var, &value)])
        .success();
    let pid = hold.wait_held();
    let live = server.live().unwrap();

    // SIGKILL to its whole process group, as the OOM killer or a `kill -9 -PGID` would.
    // SAFETY: kill(2) of the test's own child process group.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGKILL) }, 0);
    harness::wait_until(
        std::time::Duration::from_secs(30),
        || server.env.cleanups().is_empty(),
        || "the killed cleanup still runs".to_string(),
    );
    assert!(server.lock_is_free(), "the kill let go of the lock");
    assert_eq!(trashed_revisions(&server), {
        let mut old = old;
        old.sort();
        old
    });
    assert_eq!(server.live(), Some(live.clone()));
    assert_eq!(server.builds(), [live]);
    assert!(server.page().contains("v3"));
    server.assert_only_complete_builds(&[]);

    let next = commit_version(&clone, "v4");
    clone.push_main().success();
    assert_eq!(server.live_revision(), next);
    assert_eq!(server.builds(), [server.live().unwrap()]);
    server.assert_nothing_left_behind();
}
