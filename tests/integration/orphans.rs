//! Kill tests that kill one pid, not only the process group: the OOM killer or an operator's
//! `kill -9 PID` ends the hook alone, and whatever it started (composer's scripts, a command's
//! children, even ones in a session of their own) runs on. The next deploy must stop them
//! before it touches application/, say so, and leave alone what a finished deploy left running
//! on purpose.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{DevClone, Server, wait_until};

/// Every process but this test that works in the deploy root (composer runs in
/// application/, commands in a build) or runs a script of the test: what the hook started.
/// (git's own `maintenance --detach` in the clone is not the hook's.)
fn hooks_processes(server: &Server) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let scripts = server.base().to_string_lossy().into_owned() + "/";
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || !running(pid) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .unwrap_or_default();
        let in_root =
            fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&server.root));
        if in_root || (cmdline.contains(&scripts) && cmdline.contains(".sh")) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Whether `pid` runs (a zombie runs no code; its reaper may be slow).
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn kill(pid: i32) {
    // SAFETY: kill(2) of a process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Kills, when dropped, whatever the hook started that still runs, so that a failing
/// assertion leaves no process behind. Made after the server, so dropped before it.
struct Reaper<'a>(&'a Server);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for (pid, _) in hooks_processes(self.0) {
            kill(pid);
        }
    }
}

/// The scripts of a process that outlives the hook that started it. `hold.sh` is the deploy
/// command: when armed, it starts `orphan.sh` in a session of its own (so that no group kill
/// and no parent's death reaches it), says so on its output and waits for it. `orphan.sh`
/// waits for `go` (bounded), then keeps rewriting `application/public/orphan.txt` (bounded):
/// whatever runs while it does would ship its file.
struct Orphan {
    base: PathBuf,
}

impl Orphan {
    fn new(server: &Server) -> Orphan {
        let base = server.base();
        let app = server.root.join("application");
        fs::write(
            base.join("orphan.sh"),
            format!(
                "exec >/dev/null 2>&1\n\
                 echo $$ > {base}/orphan.pid\n\
                 i=0\n\
                 while [ ! -e {base}/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n\
                 i=0\n\
                 while [ $i -lt 3000 ]; do echo orphan > {app}/public/orphan.txt; sleep 0.01; i=$((i+1)); done\n",
                base = base.display(),
                app = app.display(),
            ),
        )
        .unwrap();
        fs::write(
            base.join("hold.sh"),
            format!(
                "[ -e {base}/armed ] || exit 0\n\
                 rm {base}/armed\n\
                 setsid sh {base}/orphan.sh &\n\
                 echo orphan-started\n\
                 wait\n",
                base = base.display()
            ),
        )
        .unwrap();
        Orphan { base }
    }

    /// The deploy command that starts the orphan once armed.
    fn command(&self) -> String {
        format!("sh {}/hold.sh", self.base.display())
    }

    /// Makes the next run of [`Orphan::command`] start an orphan.
    fn arm(&self) {
        fs::write(self.base.join("armed"), "").unwrap();
    }

    /// Waits until the orphan runs; its pid.
    #[track_caller]
    fn pid(&self) -> i32 {
        let file = self.base.join("orphan.pid");
        let mut pid = 0;
        wait_until(
            Duration::from_secs(30),
            || {
                pid = fs::read_to_string(&file)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                pid != 0
            },
            || "the orphan never started".to_string(),
        );
        assert!(running(pid), "the orphan {pid} is not running");
        pid
    }

    /// Lets the orphan write, and waits until it has.
    #[track_caller]
    fn go(&self, server: &Server) {
        fs::write(self.base.join("go"), "").unwrap();
        let file = server.root.join("application/public/orphan.txt");
        wait_until(
            Duration::from_secs(30),
            || file.exists(),
            || "the orphan never wrote".to_string(),
        );
    }
}

/// A commit that touches no PHP and no composer file, so that composer stays quiet and the
/// first output of the deploy is the command's.
fn commit_content(clone: &DevClone, label: &str) -> String {
    clone.write("content/label.txt", label);
    clone.commit(label)
}

/// The push after the kill: it deploys `commit`, says it stopped the orphan before it began,
/// the orphan is gone, and its file is neither in the new build nor in application/.
#[track_caller]
fn next_deploy_stops_the_orphan(server: &Server, clone: &DevClone, orphan: i32, commit: &str) {
    let push = clone.push_main().success();
    assert_eq!(server.live_revision(), commit, "{}", push.stderr);
    assert!(
        !server.latest().join("public/orphan.txt").exists(),
        "the new build ships the orphan's file:\n{}",
        push.stderr
    );
    assert!(
        !running(orphan),
        "the orphan {orphan} still runs:\n{}",
        push.stderr
    );
    assert!(
        !server.root.join("application/public/orphan.txt").exists(),
        "the orphan wrote on:\n{}",
        push.stderr
    );
    let stopped = push.remote_line("warning: stopped ").unwrap_or_else(|| {
        panic!(
            "no word of the orphan {orphan} being stopped:\n{}",
            push.stderr
        )
    });
    assert!(
        stopped.contains(&format!("{orphan} `sh ")) && stopped.contains("orphan.sh`"),
        "the orphan {orphan} is not named: {stopped}"
    );
    let lines: Vec<&str> = push.stderr.lines().collect();
    let at = |text: &str| lines.iter().position(|l| l.contains(text)).unwrap();
    assert!(
        at("warning: stopped ") < at("atomdeploy: deploying"),
        "stopped only after the deploy began:\n{}",
        push.stderr
    );
    server.assert_nothing_left_behind();
    server.assert_only_complete_builds(&[]);
}

/// (a), (b): a deploy command (`key` of deploy.yml) starts a process in a session of its own;
/// the hook alone is killed while the command runs.
fn hook_killed_alone_in(key: &str, yaml: impl Fn(&str) -> String) {
    let server = Server::install();
    let _reaper = Reaper(&server);
    let orphan = Orphan::new(&server);
    server.set_config(key, &yaml(&orphan.command()));
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();

    orphan.arm();
    commit_content(&clone, "killed");
    let push = clone.push_with_fault(&["main"], "child-output@1!pid");
    assert!(
        push.stderr.contains("orphan-started") && !push.stderr.contains("remote: deployed "),
        "{key}: the hook was not killed in the command:\n{}",
        push.stderr
    );
    let pid = orphan.pid();
    orphan.go(&server);

    let commit = commit_content(&clone, "next");
    next_deploy_stops_the_orphan(&server, &clone, pid, &commit);
    let left = hooks_processes(&server);
    assert!(left.is_empty(), "{key}: still running: {left:?}");
}

#[test]
fn a_before_switch_command_whose_hook_was_killed_alone_is_stopped_by_the_next_deploy() {
    hook_killed_alone_in("before_switch", |cmd| format!("['{cmd}']"));
}

#[test]
fn after_switch_and_health_check_commands_whose_hook_was_killed_alone_are_stopped() {
    hook_killed_alone_in("after_switch", |cmd| format!("['{cmd}']"));
    hook_killed_alone_in("healthcheck", |cmd| {
        format!("{{command: '{cmd}', retries: 0}}")
    });
}

/// An operator's `kill -9` of the hook while a composer script runs: composer and the script
/// live on (the script in composer's group, not the hook's).
#[test]
fn a_composer_script_whose_hook_was_killed_alone_is_stopped_by_the_next_deploy() {
    let server = Server::install();
    let _reaper = Reaper(&server);
    let orphan = Orphan::new(&server);
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();

    let json = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    let script = "\"@php bin/post-install.php\"";
    clone.write(
        "composer.json",
        &json.replace(
            script,
            &format!("{script}, \"sh {}/orphan.sh\"", orphan.base.display()),
        ),
    );
    clone.commit("a composer script that outlives its hook");
    let push = clone.spawn_push(&["main"]);
    let pid = orphan.pid();
    kill(server.lock_holder());
    let push = push.finish();
    assert!(
        !push.stderr.contains("remote: deployed "),
        "{}",
        push.stderr
    );
    orphan.go(&server);

    clone.write("composer.json", &json);
    let commit = commit_content(&clone, "next");
    next_deploy_stops_the_orphan(&server, &clone, pid, &commit);
    assert!(server.latest().join("vendor/autoload.php").exists());
    let left = hooks_processes(&server);
    assert!(left.is_empty(), "still running: {left:?}");
}

/// (c) The deploy after a kill stops the killed deploy's processes and only those: a worker
/// that an after_switch command of a finished deploy left in the background keeps running,
/// and does not hold the lock (its descriptors do not include the lock file).
#[test]
fn a_worker_left_running_by_a_finished_deploy_survives_the_cleanup_after_a_kill() {
    let server = Server::install();
    let _reaper = Reaper(&server);
    let orphan = Orphan::new(&server);
    let pids = server.base().join("worker.pids");
    fs::write(
        server.base().join("worker.sh"),
        format!("echo $$ >> {}\nexec sleep 120\n", pids.display()),
    )
    .unwrap();
    server.set_config("before_switch", &format!("['{}']", orphan.command()));
    server.set_config(
        "after_switch",
        &format!("['sh {}/worker.sh &']", server.base().display()),
    );
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let worker: i32 = fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(running(worker));

    orphan.arm();
    commit_content(&clone, "killed");
    let push = clone.push_with_fault(&["main"], "child-output@1!pid");
    assert!(push.stderr.contains("orphan-started"), "{}", push.stderr);
    let pid = orphan.pid();
    orphan.go(&server);

    let commit = commit_content(&clone, "next");
    next_deploy_stops_the_orphan(&server, &clone, pid, &commit);
    assert!(
        running(worker),
        "the finished deploy's worker {worker} was killed"
    );
    let lock = server.root.join(".atomdeploy/lock");
    for fd in fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
    {
        assert_ne!(
            fs::read_link(fd.path()).ok(),
            Some(lock.clone()),
            "the worker holds the lock"
        );
    }
    // The worker does not hold the next deploy either.
    commit_content(&clone, "after");
    clone
        .push_main()
        .success()
        .stderr_lacks("waiting for the deploy lock")
        .stderr_lacks("warning: stopped");
    assert!(running(worker));

    for line in fs::read_to_string(&pids).unwrap().lines() {
        kill(line.parse().unwrap());
    }
    wait_until(
        Duration::from_secs(10),
        || hooks_processes(&server).is_empty(),
        || format!("still running: {:?}", hooks_processes(&server)),
    );
}

/// A health check that times out is killed with all it started, even a process that left its
/// tree by a double fork and its session by setsid: the deploy that follows must not find it.
#[test]
fn a_timed_out_command_is_killed_with_what_escaped_its_process_tree() {
    let server = Server::install();
    let _reaper = Reaper(&server);
    let base = server.base();
    fs::write(
        base.join("escapee.sh"),
        format!(
            "exec >/dev/null 2>&1\n\
             echo $$ > {base}/escapee.pid\n\
             i=0\n\
             while [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n",
            base = base.display()
        ),
    )
    .unwrap();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config(
        "healthcheck",
        &format!(
            "{{command: '(setsid sh {}/escapee.sh &); sleep 60', timeout: 2, retries: 0}}",
            base.display()
        ),
    );
    commit_content(&clone, "unhealthy");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("did not finish within 2s and was killed");

    let pid: i32 = fs::read_to_string(base.join("escapee.pid"))
        .expect("the escapee started")
        .trim()
        .parse()
        .unwrap();
    assert!(!running(pid), "the escapee {pid} outlived the deploy");
    let left = hooks_processes(&server);
    assert!(left.is_empty(), "still running: {left:?}");
}

/// `atomdeploy-hook rollback` after a hook killed alone stops its leftovers too, before it
/// switches.
#[test]
fn a_rollback_after_a_hook_killed_alone_stops_its_leftovers_first() {
    let server = Server::install();
    let _reaper = Reaper(&server);
    let orphan = Orphan::new(&server);
    server.set_config("before_switch", &format!("['{}']", orphan.command()));
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let first = server.live().unwrap();
    commit_content(&clone, "second");
    clone.push_main().success();

    orphan.arm();
    commit_content(&clone, "killed");
    let push = clone.push_with_fault(&["main"], "child-output@1!pid");
    assert!(push.stderr.contains("orphan-started"), "{}", push.stderr);
    let pid = orphan.pid();
    orphan.go(&server);

    let out = server.run(&["rollback"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!running(pid), "the orphan {pid} still runs:\n{stderr}");
    assert_eq!(server.live().unwrap(), first);
    let stopped = stderr
        .find("warning: stopped ")
        .unwrap_or_else(|| panic!("no word of the orphan being stopped:\n{stderr}"));
    assert!(
        stderr[stopped..].contains(&format!("{pid} `sh ")),
        "{stderr}"
    );
    assert!(stopped < stderr.find("rolling back").unwrap(), "{stderr}");
    let left = hooks_processes(&server);
    assert!(left.is_empty(), "still running: {left:?}");
}
