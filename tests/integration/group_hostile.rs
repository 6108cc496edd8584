//! A broken or compromised host of a group cannot hurt the primary or the developer: a host
//! that floods output is cut off with the primary's memory bounded, control characters from a
//! host never reach the pusher's terminal, a host that never answers is named within seconds
//! and given up without holding the emergency levers (`hosts`, `hosts exclude`), no ssh
//! connection outlives the command that opened it, and ssh's own reason makes the error.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::fake_host::{SilentListener, scripted_host};
use crate::harness::sshd::{SshClient, SshGroup, host_addr};
use crate::harness::{self, DevClone, Server, wait_until};

/// A primary whose only host is `url`, with its first deploy live (made before the host was
/// listed), and a clone that pushes to it through the receive-pack wrapper.
fn primary_with_host(server: Server, url: &str) -> (Server, DevClone) {
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    server.set_config("hosts", &format!("['{url}']"));
    (server, clone)
}

/// A primary (live, pushed to through the wrapper) whose one host is a TCP listener on
/// `host_addr(n)` that accepts and never answers, the primary's ssh given a client key and
/// `known_hosts` of the test's own.
fn primary_with_silent_host(n: u8) -> (tempfile::TempDir, SilentListener, Server, DevClone) {
    let tmp = tempfile::tempdir().unwrap();
    let client = SshClient::new(&tmp.path().join("client"));
    let bin = client.ssh_on_path(&tmp.path().join("bin"));
    let silent = SilentListener::start(host_addr(n));
    let server = Server::builder()
        .path(&format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap()
        ))
        .install();
    let (server, clone) = primary_with_host(server, &silent.url());
    (tmp, silent, server, clone)
}

/// The highest VmHWM (kB) of the primary's own hook (`atomdeploy-hook post-receive`) while
/// `push` runs: VmHWM only grows, so its last reading before the hook exits is its peak.
fn hook_peak_kb(server: &Server, push: &mut harness::RunningPush) -> u64 {
    let home = format!("HOME={}", server.base().join("home").display());
    let mut peak = 0;
    while push.is_running() {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !(cmdline.contains(harness::BIN) && cmdline.contains(" post-receive")) {
                continue;
            }
            let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
            if !environ.split(|b| *b == 0).any(|v| v == home.as_bytes()) {
                continue;
            }
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// A host whose hook answers the prepare with 100,000 lines of 1 KiB, half of them protocol
/// lines: the primary keeps a few, relays a bounded number, stays small (either half kept
/// whole would be past the bound), and the push fails naming the host.
#[test]
fn a_host_that_floods_is_cut_off_and_the_primary_stays_small() {
    let server = Server::install();
    let pad = "x".repeat(1000);
    let hook = format!(
        "read old new ref\ncase \"$ref\" in */prepare/*) ;; *) exit 0 ;; esac\n\
         gid=$(echo \"$ref\" | cut -d/ -f4)\n\
         yes \"atomdeploy-group: unhealthy $gid {pad}\" | head -n 50000\n\
         yes 'filler {pad}' | head -n 50000 >&2\n\
         echo 'error: flooded on purpose' >&2\nexit 1"
    );
    let host = scripted_host(&server.base(), "flood", &hook);
    let (server, clone) = primary_with_host(server, &host.display().to_string());
    let before = server.state();
    clone.set_version("v2");
    clone.commit("v2");
    let mut push = clone.spawn_push(&["main"]);
    let peak = hook_peak_kb(&server, &mut push);
    let push = push.finish();
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    let push = push
        .stderr_has("remote: error: no server switched: flood: flooded on purpose")
        .stderr_has("flood: 49996 protocol lines past the first 4 of each kind were ignored")
        .stderr_has("more lines of output from git push to flood not shown");
    let relayed = push
        .stderr
        .lines()
        .filter(|l| l.contains(" flood: "))
        .count();
    assert!(relayed < 5100, "{relayed} lines of the host relayed");
    eprintln!("the primary's hook peaked at {peak} kB");
    assert!(peak > 0, "the hook was never seen");
    assert!(peak < 40_000, "the primary's hook grew to {peak} kB");
    server.assert_unchanged_since(&before);
}

/// A host whose prepare prints one line of 100 MB without a newline, once as its output and
/// once as a protocol line: neither is kept whole, the primary stays small, and the push fails
/// naming the host.
#[test]
fn a_host_that_prints_one_endless_line_is_cut_off_and_the_primary_stays_small() {
    let server = Server::install();
    let hook = "read old new ref\ncase \"$ref\" in */prepare/*) ;; *) exit 0 ;; esac\n\
                head -c 100000000 /dev/zero | tr '\\0' x\necho\n\
                printf 'atomdeploy-group: ended g1 failed '\n\
                head -c 100000000 /dev/zero | tr '\\0' y\necho\n\
                echo 'error: one endless line' >&2\nexit 1";
    let host = scripted_host(&server.base(), "endless", hook);
    let (server, clone) = primary_with_host(server, &host.display().to_string());
    let before = server.state();
    clone.set_version("v2");
    clone.commit("v2");
    let mut push = clone.spawn_push(&["main"]);
    let peak = hook_peak_kb(&server, &mut push);
    let push = push.finish();
    assert_ne!(
        push.code,
        Some(0),
        "{}",
        &push.stderr[..push.stderr.len().min(4000)]
    );
    assert!(
        push.stderr.len() < 1_000_000,
        "{} bytes reached the pusher",
        push.stderr.len()
    );
    push.stderr_has("remote: error: no server switched: endless: one endless line");
    eprintln!("the primary's hook peaked at {peak} kB");
    assert!(peak > 0, "the hook was never seen");
    // Never the line whole (100 MB): it is read in pieces of a MiB, and at most 16 of them
    // wait to be relayed per stream (the hook peaks near 38 MB here).
    assert!(peak < 64_000, "the primary's hook grew to {peak} kB");
    server.assert_unchanged_since(&before);
}

/// A primary live on its first deploy with two hosts: web2, an install, and `frozen`, which
/// answers as a host would until `freeze` is made, then prepares and goes silent at its switch
/// and restore (a hook frozen while holding its lock).
fn group_with_a_host_that_freezes(
    host_timeout: u64,
    switch_window: u64,
) -> (Server, Server, DevClone, PathBuf) {
    let server = Server::install();
    let web2 = Server::install();
    let link = server.base().join("web2.git");
    std::os::unix::fs::symlink(&web2.repo, &link).unwrap();
    let freeze = server.base().join("freeze");
    let hook = format!(
        "read old new ref\n\
         gid=$(echo \"$ref\" | cut -d/ -f4); op=$(echo \"$ref\" | cut -d/ -f5)\n\
         [ -e '{}' ] && [ \"$op\" != prepare ] && exec sleep 3600\n\
         case \"$op\" in\n\
           prepare) echo \"atomdeploy-group: prepared $gid 20260101-000000 $new\" ;;\n\
           switch) echo \"atomdeploy-group: switched $gid 20260101-000000 $(date +%s%N)\" ;;\n\
         esac\n\
         echo \"atomdeploy-group: ended $gid ok\"",
        freeze.display()
    );
    let frozen = scripted_host(&server.base(), "frozen", &hook);
    server.set_config(
        "hosts",
        &format!("['{}', '{}']", link.display(), frozen.display()),
    );
    for s in [&server, &web2] {
        s.set_config("host_timeout", &host_timeout.to_string());
        s.set_config("switch_window", &switch_window.to_string());
    }
    let clone = server.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    fs::write(&freeze, "").unwrap();
    clone.set_version("v2");
    clone.commit("v2");
    (server, web2, clone, freeze)
}

/// The primary and web2 are back on what they served before the push, which names the frozen
/// host as the one it could not send back, and nothing of the primary's runs.
#[track_caller]
fn assert_went_back_but_frozen(
    push: harness::Push,
    (primary, v1): (&Server, &str),
    (web2, web2_before): (&Server, &Option<String>),
) {
    push.stderr_has("switched back: web2, this server; COULD NOT switch back: frozen (");
    assert_eq!(primary.live_revision(), v1);
    assert_eq!(&web2.live(), web2_before);
    assert_eq!(primary.processes(), Vec::<String>::new());
}

/// The other host and the primary switch, the frozen one does not: the group goes back once
/// `switch_window` passed, the push ends within seconds of `host_timeout`, and the summary
/// names the silent host as the one server that could not be switched back.
#[test]
fn a_host_silent_from_its_switch_on_is_named_and_the_push_ends_near_its_bound() {
    let (server, web2, clone, _freeze) = group_with_a_host_that_freezes(20, 2);
    let (v1, web2_before) = (server.live_revision(), web2.live());
    let start = Instant::now();
    let push = clone.push_main();
    let took = start.elapsed();
    eprintln!("the push ended after {took:?}");
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    let push = push.stderr_has("frozen had not switched ");
    assert!(took < Duration::from_secs(20 + 10), "{took:?}");
    assert_went_back_but_frozen(push, (&server, &v1), (&web2, &web2_before));
}

/// The frozen host left out by `hosts exclude` while the group waits for its switch (the
/// other host and the primary switched): the wait ends at once, and the group goes back
/// rather than end split, naming the host it could not send back.
#[test]
fn a_host_excluded_while_the_group_switches_sends_the_group_back_and_is_named() {
    let (server, web2, clone, _freeze) = group_with_a_host_that_freezes(600, 300);
    let (v1, web2_before) = (server.live_revision(), web2.live());
    let start = Instant::now();
    let push = clone.spawn_push(&["main"]);
    wait_for_warning(&push, "frozen", start);
    let out = server.run(&["hosts", "exclude", "frozen", "--reason", "frozen hook"]);
    harness::assert_success(&out, "hosts exclude");
    let push = push.finish();
    let took = start.elapsed();
    eprintln!("the push ended after {took:?}");
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    let push = push.stderr_has("frozen was left out by `atomdeploy-hook hosts exclude` meanwhile");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_went_back_but_frozen(push, (&server, &v1), (&web2, &web2_before));
}

/// A push of the live commit asks the hosts whether they are on it, but not one excluded:
/// excluded because it is dead, it would hold the push for its bound and warn of a wait.
#[test]
fn a_push_of_the_live_commit_does_not_wait_for_an_excluded_host() {
    let server = Server::install();
    let hook = "exec sleep 3600";
    let host = scripted_host(&server.base(), "dead", hook);
    let (server, clone) = primary_with_host(server, &host.display().to_string());
    let out = server.run(&["hosts", "exclude", "dead", "--reason", "it hangs"]);
    harness::assert_success(&out, "hosts exclude");
    // A deploy that fails moves the branch; pushing it back to the live commit has nothing
    // to deploy.
    server.set_config("before_switch", "['false']");
    clone.set_version("v2");
    clone.commit("v2");
    assert_ne!(clone.push_main().code, Some(0));
    let start = Instant::now();
    let push = clone.push(&["-f", "HEAD~1:main"]);
    let took = start.elapsed();
    let push = push
        .success()
        .stderr_has("is already live")
        .stderr_lacks("no answer");
    assert!(took < Duration::from_secs(8), "{took:?}:\n{}", push.stderr);
    assert_eq!(server.processes(), Vec::<String>::new());
}

/// A host that speaks the protocol right, but prints lines of other group operations first
/// (one it is confused about, many of them): they count for nothing, and hide none of this
/// operation's own, so the deploy switches.
#[test]
fn lines_of_another_group_operation_hide_none_of_this_ones() {
    let server = Server::install();
    let other = "19990101-000000-abcdef";
    let hook = format!(
        "read old new ref\n\
         gid=$(echo \"$ref\" | cut -d/ -f4); op=$(echo \"$ref\" | cut -d/ -f5)\n\
         for i in $(seq 1 10000); do echo \"atomdeploy-group: ended {other} failed not yours\"; done\n\
         for i in 1 2 3 4 5; do echo \"atomdeploy-group: switched {other} 20260101-000000 1\"; \
         echo \"atomdeploy-group: prepared {other} 20260101-000000 $new\"; done\n\
         case \"$op\" in\n\
           prepare) echo \"atomdeploy-group: prepared $gid 20260101-000000 $new\" ;;\n\
           switch) echo \"atomdeploy-group: switched $gid 20260101-000000 $(date +%s%N)\" ;;\n\
         esac\n\
         echo \"atomdeploy-group: ended $gid ok\""
    );
    let host = scripted_host(&server.base(), "confused", &hook);
    let (server, clone) = primary_with_host(server, &host.display().to_string());
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    clone.push_main().success().stderr_has(
        "warning: confused: 10010 protocol lines of another group operation were ignored",
    );
    assert_eq!(server.live_revision(), v2);
    let entry = server.deploy_log().pop().unwrap();
    assert_eq!(entry["hosts"][0]["outcome"], "switched", "{entry}");
    assert_eq!(server.processes(), Vec::<String>::new());
}

/// Every control character a host prints (a window title, a screen clear, the bell,
/// backspaces, a C1 CSI) is taken out of what the pusher sees; the text around them is kept.
#[test]
fn no_control_character_of_a_host_reaches_the_pusher() {
    let server = Server::install();
    let hook = "printf 'title \\033]0;owned\\007 clear \\033[2J bell \\007 back \\b\\b\\b| \
                c1 \\302\\233 31m red \\033[31mRED\\033[0m\\n'\n\
                printf 'error: bad \\033[1;31mthing\\033[0m \\007\\n' >&2\nexit 1";
    let host = scripted_host(&server.base(), "ctrl", hook);
    let (server, clone) = primary_with_host(server, &host.display().to_string());
    clone.set_version("v2");
    clone.commit("v2");
    // What the pusher's terminal would get, byte for byte (git's `remote:` lines are valid
    // UTF-8 here, so the text holds every byte as it came).
    let push = clone.push_main();
    assert_ne!(push.code, Some(0));
    let text = push.stderr;
    assert!(
        text.contains("ctrl: title ]0;owned clear [2J bell  back | c1  31m red [31mRED[0m"),
        "{text}"
    );
    assert!(text.contains("ctrl: bad [1;31mthing[0m"), "{text}");
    for (at, c) in text.char_indices() {
        let git_own = text[at..].starts_with("\x1b[K");
        assert!(
            git_own || !c.is_control() || matches!(c, '\n' | '\r' | '\t'),
            "{c:?} at byte {at} reached the pusher: {:?}",
            &text[at.saturating_sub(40)..]
        );
    }
    assert_eq!(server.processes(), Vec::<String>::new());
}

/// The pusher's wait for a silent host, and the levers meanwhile: waits on the push's output.
fn wait_for_warning(push: &harness::RunningPush, label: &str, start: Instant) -> Duration {
    let warning = format!("warning: {label}: no answer for 10 s; waiting up to ");
    wait_until(
        Duration::from_secs(30),
        || push.seen().contains(&warning),
        || format!("no warning naming {label}:\n{}", push.seen()),
    );
    start.elapsed()
}

/// A host that accepts the TCP connection and never answers (a hung sshd): the push names it
/// within seconds, fails well within `host_timeout`, and meanwhile `hosts` says it is
/// UNREACHABLE and `hosts exclude` leaves it out at once, which ends the push's wait for it;
/// the next deploy goes without it.
#[test]
fn a_host_that_never_answers_is_named_within_seconds_and_the_levers_work_meanwhile() {
    let (_tmp, silent, server, clone) = primary_with_silent_host(40);
    let label = silent.addr.ip().to_string();
    server.set_config("host_timeout", "600");
    let before = server.state();

    // Left alone: named, then given up by ssh's own bound, its abort quickly.
    clone.set_version("v2");
    clone.commit("v2");
    let start = Instant::now();
    let push = clone.spawn_push(&["main"]);
    let named = wait_for_warning(&push, &label, start);
    let push = push.finish();
    let took = start.elapsed();
    eprintln!("named after {named:?}, failed after {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}:\n{}", push.stderr);
    assert_ne!(push.code, Some(0));
    push.stderr_has(&format!(
        "remote: error: no server switched: {label}: Connection timed out during banner exchange"
    ));
    server.assert_unchanged_since(&before);
    assert!(silent.accepted() >= 2, "prepare and abort both tried");

    // While a deploy waits on it: `hosts` and `hosts exclude` answer within seconds.
    clone.git(&["commit", "-q", "--allow-empty", "-m", "v2 again"]);
    let start = Instant::now();
    let push = clone.spawn_push(&["main"]);
    wait_for_warning(&push, &label, start);
    let asked = Instant::now();
    let out = server.run(&["hosts"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with(&label)).unwrap();
    assert!(line.contains("UNREACHABLE"), "{stdout}");
    let asked = Instant::now();
    let out = server.run(&["hosts", "exclude", &label, "--reason", "hung sshd"]);
    harness::assert_success(&out, "hosts exclude");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let push = push.finish();
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    assert_ne!(push.code, Some(0));
    push.stderr_has("was left out by `atomdeploy-hook hosts exclude` meanwhile");
    server.assert_unchanged_since(&before);

    // The next deploy goes without it.
    let v3 = clone.deploy_version("v3");
    assert_eq!(server.live_revision(), v3);
    assert_eq!(server.processes(), Vec::<String>::new());
}

/// Kills `hosts` with `signal` while it waits for a silent host (its ssh connecting): nothing
/// of it may stay.
fn kill_hosts_while_it_waits(server: &Server, signal: i32) {
    let mut child = server
        .command(harness::BIN)
        .args(["hosts", "--root"])
        .arg(&server.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ssh_running = || {
        server
            .processes()
            .iter()
            .any(|p| p.contains("ssh") && p.contains("-M -N"))
    };
    wait_until(Duration::from_secs(20), ssh_running, || {
        format!("no ssh started: {:?}", server.processes())
    });
    // SAFETY: kill(2) of the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap();
    // The kernel kills its ssh (PR_SET_PDEATHSIG) as it dies: well before ssh's own
    // ConnectTimeout would end it.
    let gone =
        harness::wait_until_quietly(Duration::from_secs(3), || server.processes().is_empty());
    assert!(
        gone,
        "signal {signal}: left running: {:?}",
        server.processes()
    );
}

#[test]
fn killing_hosts_leaves_no_ssh_behind() {
    let (_tmp, _silent, server, _clone) = primary_with_silent_host(41);
    for signal in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT] {
        kill_hosts_while_it_waits(&server, signal);
    }
}

/// A local group whose before_switch (an app key, in every host's status) is 5,000 bytes
/// long: `hosts` reads the long status line and says `live`; its exit status says whether
/// every host is live on the primary's commit (0), one is on another (1), one does not
/// answer (2).
#[test]
fn hosts_reads_a_long_status_and_its_exit_status_says_whether_all_are_live() {
    let primary = Server::install();
    let host = Server::install();
    let link = primary.base().join("web2.git");
    std::os::unix::fs::symlink(&host.repo, &link).unwrap();
    let long = format!("['true {}']", "x".repeat(5000));
    for server in [&primary, &host] {
        server.set_config("before_switch", &long);
    }
    primary.set_config("hosts", &format!("['{}']", link.display()));
    let clone = primary.clone_fixture("example-app");
    clone.push_main().success();

    let out = primary.run(&["hosts"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("web2")).unwrap();
    // Scripts find what it means in its help, not only in the README.
    let help = primary.run(&["hosts", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    assert!(
        help.contains("Exit status")
            && help.contains("1 when one is on another commit")
            && help.contains("2 when one did not answer"),
        "{help}"
    );
    assert!(
        line.contains(" live ") && !line.contains("UNREACHABLE"),
        "{stdout}"
    );

    // The host alone on another commit (out of its group first: a host refuses its own
    // pushes).
    host.leave_group();
    let other = host.clone_fixture("example-app");
    other.set_version("elsewhere");
    other.commit("elsewhere");
    other.push(&["-f", "main"]).success();
    let out = primary.run(&["hosts", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A host that does not answer.
    let gone = primary.base().join("gone.git");
    primary.set_config(
        "hosts",
        &format!("['{}', '{}']", link.display(), gone.display()),
    );
    let out = primary.run(&["hosts"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The processes and sessions of `group`, once given a moment to end: none may stay after the
/// command that opened them ended (a ControlMaster kept by ControlPersist would, for half an
/// hour, and keep a removed key working).
#[track_caller]
fn assert_no_connection_left(group: &SshGroup, after: &str) {
    // An sshd session process ends a moment after its client's connection closed.
    harness::wait_until_quietly(Duration::from_secs(5), || group.running().is_empty());
    assert_eq!(group.running(), Vec::<String>::new(), "after {after}");
}

fn hosts_of(group: &SshGroup) -> (Option<i32>, String) {
    let out = group.primary.run(&["hosts"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// After a group deploy, after `hosts`, after a push whose commit is live already: no ssh of
/// the primary's runs and no session stays open on the host, so a key taken off the host's
/// `authorized_keys` stops working at the next command, which says ssh's reason; so does a
/// deploy to a host whose key is not in `known_hosts`.
#[test]
fn no_ssh_connection_outlives_its_command_and_ssh_says_why_it_failed() {
    let group = SshGroup::start(42, 1);
    let label = group.hosts[0].1.addr.to_string();
    let clone = group.clone();
    clone.push_main().success();
    assert_no_connection_left(&group, "a group deploy");
    let (code, said) = hosts_of(&group);
    assert_eq!(code, Some(0), "{said}");
    assert_no_connection_left(&group, "hosts");
    // The key taken off the host: the next command is refused, and says so.
    let keys = group.authorized_keys(0);
    let authorized = fs::read_to_string(&keys).unwrap();
    fs::write(&keys, "").unwrap();
    let (code, said) = hosts_of(&group);
    assert_eq!(code, Some(2), "{said}");
    let line = said.lines().find(|l| l.starts_with(&label)).unwrap();
    assert!(
        line.contains("UNREACHABLE") && line.contains("Permission denied (publickey)"),
        "{said}"
    );
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main();
    assert_ne!(push.code, Some(0));
    push.stderr_has(&format!(
        "remote: error: no server switched: {label}: root@{label}: Permission denied (publickey)."
    ));
    fs::write(&keys, authorized).unwrap();
    // The branch back on the live commit (the failed deploy moved it): nothing to deploy,
    // but the hosts are asked what they serve.
    clone
        .push(&["-f", "HEAD~1:main"])
        .success()
        .stderr_has("is already live");
    assert_no_connection_left(&group, "a push of the live commit");

    // A host key nobody vouched for.
    let known: PathBuf = group.client.known_hosts.clone();
    let trusted = fs::read_to_string(&known).unwrap();
    fs::write(&known, "").unwrap();
    let push = clone.push_main();
    assert_ne!(push.code, Some(0));
    push.stderr_has(&format!(
        "remote: error: no server switched: {label}: Host key verification failed."
    ));
    fs::write(&known, trusted).unwrap();
    let v3 = clone.deploy_version("v3");
    assert_eq!(group.hosts[0].0.live_revision(), v3);
    assert_no_connection_left(&group, "the last deploy");
}
