//! Who may drive a host: only the group's primary, through `serve --group-primary` in the
//! host's authorized_keys. Every other way in (a local path, the receive-pack wrapper, `serve`
//! without the flag, locally or over a real sshd, a `git-shell` key, a client sending the
//! variables along with `SendEnv`) is refused on every kind of server, for every operation,
//! and changes nothing; a primary refuses even its own kind. And what a host owes its group:
//! a freeze and `receive.denyNonFastForwards` hold, and it deploys nothing by itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use atomdeploy_hook::commands::serve::{PRIMARY_ENV, STATUS_ENV};
use atomdeploy_hook::receive::group::{GroupRef, Line, Op};

use crate::harness::sshd::{GIT_SHELL_ONLY, SshClient, Sshd, group_primary_only, host_addr};
use crate::harness::{self, BIN, DevClone, Push, Server, ServerState};

/// In deploy.yml's commands: no refusal may show them.
const BEFORE_SWITCH_MARKER: &str = "trust-marker-before-switch-5d1e";
const HEALTHCHECK_MARKER: &str = "trust-marker-healthcheck-a07c";

/// The refusal of a group operation from anyone but the primary.
const NOT_THE_PRIMARY: &str = "accepted only from the group's primary";
/// A primary's refusal of any group operation.
const A_PRIMARY: &str = "takes group operations from nobody";

/// A server whose deploy.yml carries the markers, with v1 live; and its clone.
fn marked_server() -> (Server, DevClone) {
    let server = Server::builder()
        .config("before_switch", &format!("['true {BEFORE_SWITCH_MARKER}']"))
        .config(
            "healthcheck",
            &format!("{{command: 'true {HEALTHCHECK_MARKER}'}}"),
        )
        .install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    (server, clone)
}

/// Every operation of the protocol, each with `fp` where it takes one.
fn every_op(fp: &str) -> Vec<Op> {
    let all = vec![
        Op::Prepare(fp.to_string()),
        Op::Replay(fp.to_string()),
        Op::Reuse(fp.to_string()),
        Op::Switch,
        Op::Restore,
        Op::Abort,
        Op::Status,
    ];
    for op in &all {
        // An operation added to the protocol stops this from compiling until it is listed.
        match op {
            Op::Prepare(_)
            | Op::Replay(_)
            | Op::Reuse(_)
            | Op::Switch
            | Op::Restore
            | Op::Abort
            | Op::Status => {}
        }
    }
    all
}

fn refspec(commit: &str, gid: &str, op: &Op) -> String {
    let group = GroupRef {
        gid: gid.to_string(),
        op: op.clone(),
    };
    format!("{commit}:{}", group.refname())
}

/// The host's config fingerprint, as an accepted `status` says.
fn fingerprint(clone: &DevClone) -> String {
    let push = clone
        .group_push(&[&refspec("HEAD", "fp", &Op::Status)])
        .success();
    match push.stderr.lines().find_map(Line::parse) {
        Some(Line::Status(status)) => status.fingerprint,
        other => panic!("no status: {other:?}\n{}", push.stderr),
    }
}

/// Every way in that someone other than the group's primary has.
#[derive(Debug, Clone, Copy)]
enum Door {
    /// `git push /srv/app.git`: git's own receive-pack.
    LocalPath,
    /// `--receive-pack "atomdeploy-hook receive-pack"`.
    Wrapper,
    /// `--receive-pack "atomdeploy-hook serve --repo R"`, as ssh would run it.
    ServeLocal,
    /// A key whose forced command is `serve --repo R`, over a real sshd.
    ServeSsh,
    /// A key restricted to `git-shell`, over a real sshd.
    GitShellSsh,
    /// A `git-shell` key sending the primary's variables (`SendEnv`, allowed by `AcceptEnv`)
    /// with a status file of known content.
    SendEnvGitShell,
    /// The same through a `serve --repo R` key.
    SendEnvServe,
}

impl Door {
    const ALL: [Door; 7] = [
        Door::LocalPath,
        Door::Wrapper,
        Door::ServeLocal,
        Door::ServeSsh,
        Door::GitShellSsh,
        Door::SendEnvGitShell,
        Door::SendEnvServe,
    ];

    /// Whether `git push` exits with the deploy's status: through a wrapper.
    fn has_wrapper(self) -> bool {
        match self {
            Door::Wrapper | Door::ServeLocal | Door::ServeSsh | Door::SendEnvServe => true,
            Door::LocalPath | Door::GitShellSsh | Door::SendEnvGitShell => false,
        }
    }
}

/// A server's sshd with a `git-shell` key and a plain `serve` key, accepting the variables a
/// client could send to pass for the primary.
struct Doors {
    sshd: Sshd,
    git_shell: SshClient,
    serve: SshClient,
    /// A file on the server whose first line the attacker knows: the secret it sends.
    forged_status: PathBuf,
    forged_secret: String,
}

impl Doors {
    fn open(server: &Server, n: u8) -> Doors {
        let dir = server.base().join("doors");
        let git_shell = SshClient::new(&dir.join("git-shell"));
        let serve = SshClient::new(&dir.join("serve"));
        let serve_only = format!(
            r#"restrict,command="{BIN} serve --repo {}" "#,
            server.repo.display()
        );
        let sshd = Sshd::builder(&dir.join("sshd"))
            .addr(host_addr(n))
            .authorize(GIT_SHELL_ONLY, &git_shell.public_key())
            .authorize(&serve_only, &serve.public_key())
            .accept_env(PRIMARY_ENV)
            .accept_env(STATUS_ENV)
            .env_of(server)
            .start();
        git_shell.trust(&sshd);
        serve.trust(&sshd);
        let forged_secret = "0123456789abcdef0123456789abcdef".to_string();
        let forged_status = dir.join("forged-status");
        fs::write(&forged_status, format!("{forged_secret}\n")).unwrap();
        Doors {
            sshd,
            git_shell,
            serve,
            forged_status,
            forged_secret,
        }
    }

    /// `git push` of `spec` to `server` through `door`.
    fn push(&self, server: &Server, clone: &DevClone, door: Door, spec: &str) -> Push {
        let repo = server.repo.display().to_string();
        let url = self.sshd.url(&server.repo);
        let mut git = server.command("git");
        git.current_dir(&clone.path).arg("push");
        let send_env = format!(" -o SendEnv={PRIMARY_ENV} -o SendEnv={STATUS_ENV}");
        match door {
            Door::LocalPath => git.args(["production", spec]),
            Door::Wrapper => git
                .args(["--receive-pack", &format!("{BIN} receive-pack")])
                .args(["production", spec]),
            Door::ServeLocal => git
                .args(["--receive-pack", &format!("{BIN} serve --repo '{repo}'")])
                .env("SSH_ORIGINAL_COMMAND", format!("git-receive-pack '{repo}'"))
                .args(["production", spec]),
            Door::ServeSsh => git
                .env("GIT_SSH_COMMAND", self.serve.command())
                .args([&url, spec]),
            Door::GitShellSsh => git
                .env("GIT_SSH_COMMAND", self.git_shell.command())
                .args([&url, spec]),
            Door::SendEnvGitShell | Door::SendEnvServe => {
                let client = match door {
                    Door::SendEnvServe => &self.serve,
                    _ => &self.git_shell,
                };
                git.env("GIT_SSH_COMMAND", client.command() + &send_env)
                    .env(PRIMARY_ENV, &self.forged_secret)
                    .env(STATUS_ENV, &self.forged_status)
                    .args([&url, spec])
            }
        };
        output(git)
    }
}

fn output(mut cmd: Command) -> Push {
    let out = cmd.output().unwrap();
    Push {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// All a refused push must leave as it was: live build, builds, shared/, every ref (the
/// branches and the builds' own; no group ref), the group records and the membership.
#[derive(Debug, PartialEq)]
struct Everything {
    server: ServerState,
    refs: String,
    records: Vec<(String, String)>,
}

fn everything(server: &Server) -> Everything {
    let state = server.root.join(".atomdeploy");
    let group = state.join("group");
    let mut records = if group.is_dir() {
        harness::tree_listing(&group)
    } else {
        Vec::new()
    };
    records.push((
        "group-primary.json".into(),
        fs::read_to_string(state.join("group-primary.json")).unwrap_or_default(),
    ));
    Everything {
        server: server.state(),
        refs: String::from_utf8(server.repo_git(&["for-each-ref"])).unwrap(),
        records,
    }
}

/// Someone other than the primary refused: not a line of the protocol, nor of the config.
#[track_caller]
fn assert_refused(server: &Server, before: &Everything, push: &Push, says: &str, case: &str) {
    assert!(
        !push.stderr.contains("atomdeploy-group:"),
        "{case}: the refusal spoke the group's protocol:\n{}",
        push.stderr
    );
    assert_unchanged_but_for_the_error(server, before, push, says, case);
}

/// The primary's operation refused by the host's own checks (a freeze, a non-fast-forward):
/// the primary is told how it ended, in the protocol's `ended` line (after, at most, what the
/// host has live), and nothing was prepared.
#[track_caller]
fn assert_refused_to_the_primary(
    gid: &str,
    server: &Server,
    before: &Everything,
    push: &Push,
    says: &str,
    case: &str,
) {
    let protocol: Vec<&str> = push
        .stderr
        .lines()
        .filter(|l| l.contains("atomdeploy-group:"))
        .collect();
    let ended = protocol.last().is_some_and(|l| {
        l.contains(&format!("atomdeploy-group: ended {gid} failed ")) && l.contains(says)
    });
    let only_live_before = protocol[..protocol.len().saturating_sub(1)]
        .iter()
        .all(|l| l.contains(&format!("atomdeploy-group: live {gid} ")));
    assert!(
        ended && only_live_before,
        "{case}: not an `ended {gid} failed` line saying {says:?} last:\n{}",
        push.stderr
    );
    assert_unchanged_but_for_the_error(server, before, push, says, case);
}

#[track_caller]
fn assert_unchanged_but_for_the_error(
    server: &Server,
    before: &Everything,
    push: &Push,
    says: &str,
    case: &str,
) {
    assert!(
        push.stderr
            .lines()
            .any(|l| l.starts_with("remote: error: ") && l.contains(says)),
        "{case}: no `error:` line saying {says:?}:\n{}",
        push.stderr
    );
    for secret in [BEFORE_SWITCH_MARKER, HEALTHCHECK_MARKER] {
        assert!(
            !push.stderr.contains(secret),
            "{case}: the refusal showed {secret:?}:\n{}",
            push.stderr
        );
    }
    assert_eq!(&everything(server), before, "{case}: the server changed");
    server.assert_nothing_left_behind_in(case);
}

/// Each way in × each operation, on `server`: all refused, nothing changed.
fn assert_every_door_refused(
    server: &Server,
    clone: &DevClone,
    commit: &str,
    fp: &str,
    says: &str,
) {
    let doors = Doors::open(server, 10);
    let gid = "g";
    for door in Door::ALL {
        for op in every_op(fp) {
            let case = format!("{door:?} {}", op.name());
            let before = everything(server);
            let push = doors.push(server, clone, door, &refspec(commit, gid, &op));
            if door.has_wrapper() {
                assert_ne!(push.code, Some(0), "{case}:\n{}", push.stderr);
            }
            assert_refused(server, &before, &push, says, &case);
        }
    }
}

#[test]
fn a_single_server_refuses_every_group_operation_through_every_door() {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    // A status does not make a server a host.
    let fp = fingerprint(&clone);
    assert!(!server.root.join(".atomdeploy/group-primary.json").exists());
    assert_every_door_refused(&server, &clone, &v2, &fp, NOT_THE_PRIMARY);
    // The deploy branch pushed along with a refused operation is put back too.
    let before = everything(&server);
    let push = clone.push(&[&format!("{v2}:main"), &refspec(&v2, "g", &Op::Status)]);
    assert_refused(&server, &before, &push, NOT_THE_PRIMARY, "with main");
}

/// A server that joined its group: v2 prepared for group `g` through the primary's door.
/// Returns it, its clone, v2 and the config fingerprint.
fn member_with_v2_prepared() -> (Server, DevClone, String, String) {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    clone
        .group_push(&[&refspec(&v2, "g", &Op::Prepare(fp.clone()))])
        .success();
    (server, clone, v2, fp)
}

#[test]
fn a_member_host_refuses_every_group_operation_from_anyone_but_its_primary() {
    // A member with group g's v2 live: an accepted restore or abort would act on it.
    let (server, clone, v2, fp) = member_with_v2_prepared();
    clone
        .group_push(&[&refspec(&v2, "g", &Op::Switch)])
        .success();
    assert_eq!(server.live_revision(), v2);
    assert!(server.root.join(".atomdeploy/group-primary.json").exists());
    assert_every_door_refused(&server, &clone, &v2, &fp, NOT_THE_PRIMARY);
}

#[test]
fn a_primary_refuses_every_group_operation_even_through_the_primarys_door() {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    server.set_config("hosts", "['../web2.git']");
    assert_every_door_refused(&server, &clone, &v2, &fp, A_PRIMARY);
    for op in every_op(&fp) {
        let before = everything(&server);
        let push = clone.group_push(&[&refspec(&v2, "g", &op)]);
        assert_ne!(push.code, Some(0), "{}", push.stderr);
        assert_refused(&server, &before, &push, A_PRIMARY, op.name());
    }
}

/// A host of a group over real ssh, its primary's key restricted to `serve --group-primary`,
/// and the primary itself listing it in `hosts:`.
struct SshGroup {
    primary: Server,
    host: Server,
    sshd: Sshd,
    client: SshClient,
    _tmp: tempfile::TempDir,
}

impl SshGroup {
    fn start(n: u8) -> SshGroup {
        let tmp = tempfile::tempdir().unwrap();
        let client = SshClient::new(&tmp.path().join("client"));
        let host = Server::install();
        // The primary's line as `install` advises it, which must be the one that works.
        let advice = host.run_install(&host.repo, &[]);
        harness::assert_success(&advice, "install again");
        let advice = String::from_utf8_lossy(&advice.stdout).into_owned();
        let line = advice
            .lines()
            .find(|l| l.contains("--group-primary"))
            .unwrap_or_else(|| panic!("install names no --group-primary line:\n{advice}"));
        let options = format!("{} ", line.trim().split(" ssh-ed25519").next().unwrap());
        assert_eq!(options, group_primary_only(&host));
        let sshd = Sshd::builder(&host.base().join("sshd"))
            .addr(host_addr(n))
            .authorize(&options, &client.public_key())
            .env_of(&host)
            .start();
        client.trust(&sshd);
        let bin = client.ssh_on_path(&tmp.path().join("bin"));
        let primary = Server::builder()
            .path(&format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap()
            ))
            .config("hosts", &format!("['{}']", sshd.url(&host.repo)))
            .install();
        SshGroup {
            primary,
            host,
            sshd,
            client,
            _tmp: tmp,
        }
    }
}

#[test]
fn the_primarys_key_drives_a_host_over_ssh_and_the_host_then_deploys_nothing_by_itself() {
    let group = SshGroup::start(12);
    let (primary, host) = (&group.primary, &group.host);
    // By hand through the primary's key: the host answers a status.
    let probe = host.clone_fixture("example-app");
    let mut git = host.command("git");
    git.current_dir(&probe.path)
        .env("GIT_SSH_COMMAND", group.client.command())
        .args(["push", &group.sshd.url(&host.repo)])
        .arg(refspec("HEAD", "probe", &Op::Status));
    let push = output(git).success();
    assert!(
        matches!(
            push.stderr.lines().find_map(Line::parse),
            Some(Line::Status(_))
        ),
        "{}",
        push.stderr
    );

    // A group deploy through the primary reaches the host over ssh.
    let clone = primary.clone_fixture("example-app");
    clone.wrap();
    clone.deploy_version("v1");
    let v2 = clone.deploy_version("v2");
    assert_eq!(host.live_revision(), v2);
    assert!(host.page().contains("v2"), "{}", host.page());
    let record = fs::read_to_string(host.root.join(".atomdeploy/group-primary.json")).unwrap();
    // The primary as the host's sshd saw it: its address.
    assert!(record.contains("127.0.0.1"), "{record}");

    // A developer pushing to the host itself is refused, and moves nothing.
    let dev = host.clone_repo("dev");
    dev.wrap();
    dev.set_version("by hand");
    let by_hand = dev.commit("by hand");
    let before = everything(host);
    let attempts: [&[&str]; 3] = [&["HEAD:main"], &["HEAD:replay"], &[":rollback"]];
    for args in attempts {
        let push = dev.push(args);
        assert_ne!(push.code, Some(0), "{args:?}: {}", push.stderr);
        let push = push.stderr_has("127.0.0.1 deploys it").stderr_has(&format!(
            "atomdeploy-hook leave-group --root {}",
            host.root.display()
        ));
        push.stderr_lacks("FAILED");
        assert_eq!(host.branch_head("main"), Some(v2.clone()), "{args:?}");
        assert_eq!(host.branch_head("replay"), None, "{args:?}");
        assert_eq!(&everything(host), &before, "{args:?}: the host changed");
    }
    for command in [["replay"], ["rollback"]] {
        let out = host.run(&command);
        assert!(!out.status.success(), "{command:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("leave-group"), "{command:?}: {stderr}");
        assert_eq!(&everything(host), &before, "{command:?}: the host changed");
    }

    // Once it has left the group, a push to it deploys.
    let out = host.run(&["leave-group"]);
    harness::assert_success(&out, "leave-group");
    assert!(String::from_utf8_lossy(&out.stdout).contains("left the group"));
    dev.push(&["HEAD:main"]).success();
    assert_eq!(host.live_revision(), by_hand);
    let out = host.run(&["leave-group"]);
    harness::assert_success(&out, "leave-group again");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to leave"));
    assert_eq!(primary.processes(), Vec::<String>::new());
}

#[test]
fn a_frozen_host_refuses_to_build_for_its_group() {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    let out = server.run(&["freeze", "--message", "release week"]);
    harness::assert_success(&out, "freeze");
    let v1 = server.live_revision();
    for op in [
        Op::Prepare(fp.clone()),
        Op::Replay(fp.clone()),
        Op::Reuse(fp.clone()),
    ] {
        // A reuse of the live commit would find its build; none goes through a freeze.
        let commit = if matches!(op, Op::Reuse(_)) { &v1 } else { &v2 };
        let before = everything(&server);
        let push = clone.group_push(&[&refspec(commit, "g", &op)]);
        assert_ne!(push.code, Some(0), "{}", push.stderr);
        assert_refused_to_the_primary(
            "g",
            &server,
            &before,
            &push,
            "deploys are frozen: \"release week\"",
            op.name(),
        );
        assert_eq!(server.branch_head("main"), Some(v1.clone()));
    }
}

#[test]
fn a_host_that_denies_non_fast_forwards_never_moves_its_branch_back_for_its_group() {
    let (server, clone) = marked_server();
    let v1 = server.live_revision();
    let v2 = clone.deploy_version("v2");
    server.repo_git(&["config", "receive.denyNonFastForwards", "true"]);
    let fp = fingerprint(&clone);
    for op in [Op::Prepare(fp.clone()), Op::Replay(fp.clone())] {
        let before = everything(&server);
        let push = clone.group_push(&[&refspec(&v1, "back", &op)]);
        assert_ne!(push.code, Some(0), "{}", push.stderr);
        assert_refused_to_the_primary(
            "back",
            &server,
            &before,
            &push,
            "receive.denyNonFastForwards",
            op.name(),
        );
        assert_eq!(
            server.branch_head("main"),
            Some(v2.clone()),
            "{}",
            op.name()
        );
    }
    // A group rollback reuses the older build and moves no branch.
    clone
        .group_push(&[&refspec(&v1, "back", &Op::Reuse(fp.clone()))])
        .success();
    clone
        .group_push(&[&refspec(&v1, "back", &Op::Switch)])
        .success();
    assert_eq!(server.live_revision(), v1);
    assert_eq!(server.branch_head("main"), Some(v2));
}

/// The receive-pack wrapper killed with SIGKILL mid-deploy: nothing of the push stays in the
/// temp dir it used.
#[test]
fn a_killed_wrapper_leaves_no_status_file() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let tmp = server.base().join("push-tmp");
    fs::create_dir(&tmp).unwrap();
    let gate = server.gate_deploys();
    clone.set_version("v2");
    clone.commit("v2");
    clone.wrap();
    let running = clone.spawn_push_with_env(&["main"], &[("TMPDIR", tmp.to_str().unwrap())]);
    gate.wait_held(&running);
    let wrapper: Vec<i32> = server
        .processes()
        .iter()
        .filter(|p| p.contains(&format!("{BIN} receive-pack")) && !p.contains("sh -c"))
        .map(|p| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(wrapper.len(), 1, "{:?}", server.processes());
    // SAFETY: kill(2) of the wrapper this test's push started, found by its environment.
    unsafe { libc::kill(wrapper[0], libc::SIGKILL) };
    harness::wait_until(
        std::time::Duration::from_secs(30),
        || !Path::new(&format!("/proc/{}", wrapper[0])).exists(),
        || "the wrapper did not die".to_string(),
    );
    gate.open();
    let _ = running.finish();
    harness::wait_until(
        std::time::Duration::from_secs(60),
        || server.processes().is_empty(),
        || format!("still running: {:?}", server.processes()),
    );
    let left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("atomdeploy-push-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "left in the wrapper's TMPDIR");
}

/// What a host's before_switch finds when its group's primary deploys it: its environment, the
/// status file it would be handed, and (as any process of the deploy user can, by reading its
/// ancestors' /proc/<pid>/environ) the secret of this push, so that the test knows what to look
/// for in everything else.
const DUMP_SECRETS: &str = "['env > env-dump.txt', \
    'cat \"$ATOMDEPLOY_PUSH_STATUS\" > status-dump.txt 2>/dev/null || true', \
    'p=$PPID; while [ \"$p\" -gt 1 ]; do tr \"\\0\" \"\\n\" < /proc/$p/environ 2>/dev/null \
       | sed -n \"s/^ATOMDEPLOY_GROUP_PRIMARY=//p\"; p=$(cut -d\" \" -f4 /proc/$p/stat); done \
       | head -n 1 > secret.txt']";

#[test]
fn the_primarys_secret_reaches_no_command_no_log_and_no_pusher_of_a_host() {
    let g = crate::group::Group::with_app(1, |primary| primary.clone_fixture("example-app"));
    for server in g.servers() {
        server.set_config("before_switch", DUMP_SECRETS);
    }
    let push = g.clone.push_main().success();
    let host = &g.hosts[0];
    assert_eq!(host.live_revision(), g.clone.head());
    let secret = host.read_live("secret.txt").trim().to_string();
    assert_eq!(
        secret.len(),
        32,
        "the hook ran without the primary's secret"
    );

    let env = host.read_live("env-dump.txt");
    for name in [PRIMARY_ENV, STATUS_ENV] {
        assert!(
            !env.contains(name),
            "before_switch was given {name}:\n{env}"
        );
    }
    assert!(
        !env.contains(&secret),
        "before_switch saw the secret:\n{env}"
    );
    assert_eq!(host.read_live("status-dump.txt"), "", "the status file");

    let log = fs::read_to_string(host.root.join(".atomdeploy/deploys.jsonl")).unwrap();
    let shown = host.run(&["log"]);
    harness::assert_success(&shown, "log");
    for (what, text) in [
        ("the pusher's output", push.stderr.clone()),
        ("deploys.jsonl", log),
        ("`log`", String::from_utf8_lossy(&shown.stdout).into_owned()),
    ] {
        assert!(!text.contains(&secret), "{what} shows the secret:\n{text}");
    }
    let mut logs = Vec::new();
    harness::tree_listing(&host.root.join(".atomdeploy"))
        .into_iter()
        .filter(|(_, content)| content.contains(&secret))
        .for_each(|(name, _)| logs.push(name));
    assert_eq!(logs, Vec::<String>::new(), "files holding the secret");
}

/// `leave-group` while the primary's prepare runs on the host waits for it, under the deploy
/// lock as every deploy does: it cannot remove the membership that prepare has just recorded
/// and leave a host building for its group while it believes itself on its own.
#[test]
fn leave_group_waits_for_the_group_operation_running_on_the_host() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let gate = server.gate_deploys();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    clone.drive_as_primary();
    let running = clone.spawn_push(&[&refspec(&v2, "g", &Op::Prepare(fp))]);
    gate.wait_held(&running);
    let membership = server.root.join(".atomdeploy/group-primary.json");
    assert!(membership.exists(), "the prepare joined no group");

    let said = server.base().join("leave-group.out");
    let mut leave = server
        .command(BIN)
        .args(["leave-group", "--root"])
        .arg(&server.root)
        .stdout(fs::File::create(&said).unwrap())
        .stderr(fs::File::create(server.base().join("leave-group.err")).unwrap())
        .spawn()
        .unwrap();
    let err = || fs::read_to_string(server.base().join("leave-group.err")).unwrap();
    harness::wait_until(
        std::time::Duration::from_secs(60),
        || err().contains("waiting for the deploy lock") || !matches!(leave.try_wait(), Ok(None)),
        || "leave-group neither waited nor ended".to_string(),
    );
    let waited = err().contains("waiting for the deploy lock");
    let still_member = membership.exists();
    gate.open();
    running.finish().success();
    let status = leave.wait().unwrap();
    assert!(
        waited,
        "leave-group did not wait for the prepare: {}",
        err()
    );
    assert!(still_member, "leave-group left while the prepare ran");
    assert!(status.success(), "{}", err());
    assert!(
        fs::read_to_string(&said)
            .unwrap()
            .contains("left the group")
    );
    assert!(!membership.exists());
    server.assert_nothing_left_behind();
}

/// Every refused push is in the deploy log, as a frozen push is: a group operation from
/// someone other than the primary, and a developer's push to a host of a group, each as a
/// failed attempt naming the ref, who pushed and why, so that an operator who wonders why a
/// push deployed nothing, or who tried to drive the host, finds it in `atomdeploy-hook builds`.
#[test]
fn a_refused_push_is_in_the_hosts_log_with_who_pushed_and_why() {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    let logged = server.deploy_log().len();
    let group = refspec(&v2, "g", &Op::Prepare(fp.clone()));
    clone.push(&[&group]).stderr_has(NOT_THE_PRIMARY);
    let log = server.deploy_log();
    assert_eq!(log.len(), logged + 1, "{log:?}");
    let entry = &log[logged];
    assert_eq!(entry["outcome"], "failed", "{entry}");
    assert_eq!(
        entry["ref"],
        format!("refs/atomdeploy/group/g/prepare/{fp}").as_str(),
        "{entry}"
    );
    assert!(
        entry["error"].as_str().unwrap().contains(NOT_THE_PRIMARY),
        "{entry}"
    );
    assert!(entry["pusher"].is_string(), "{entry}");

    // The primary's prepare makes the server a host (then its abort drops the build).
    clone.group_push(&[&group]).success();
    clone
        .group_push(&[&refspec(&v2, "g", &Op::Abort)])
        .success();
    // The prepare moved the host's branch to v2: the developer pushes what comes after.
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let logged = server.deploy_log().len();
    clone
        .push(&[&format!("{v3}:main")])
        .stderr_has("leave-group");
    let log = server.deploy_log();
    assert_eq!(log.len(), logged + 1, "{log:?}");
    let entry = &log[logged];
    assert_eq!(entry["outcome"], "failed", "{entry}");
    assert_eq!(entry["ref"], "refs/heads/main", "{entry}");
    assert_eq!(entry["commit"], v3.as_str(), "{entry}");
    assert!(
        entry["error"].as_str().unwrap().contains("leave-group"),
        "{entry}"
    );
    // As a frozen push: `builds` lists the refused attempt with its reason.
    let shown = server.run(&["builds"]);
    harness::assert_success(&shown, "builds");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("host of a group"), "{shown}");
    for secret in [BEFORE_SWITCH_MARKER, HEALTHCHECK_MARKER] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

/// A client allowed to send ATOMDEPLOY_PUSH_STATUS along (`AcceptEnv`, as for the doors above)
/// cannot make the hook write into a file of its choosing: here the server's deploy.yml, which
/// a `pending` line appended would break for every push after. The hook writes only to an
/// unlinked file a wrapper among its own ancestors holds.
#[test]
fn a_status_file_a_client_names_is_never_written() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let doors = Doors::open(&server, 14);
    let config = fs::read_to_string(server.config_path()).unwrap();
    let url = doors.sshd.url(&server.repo);
    for (client, version) in [(&doors.git_shell, "v2"), (&doors.serve, "v3")] {
        clone.set_version(version);
        let commit = clone.commit(version);
        let mut git = server.command("git");
        git.current_dir(&clone.path)
            .env(
                "GIT_SSH_COMMAND",
                client.command() + &format!(" -o SendEnv={STATUS_ENV}"),
            )
            .env(STATUS_ENV, server.config_path())
            .args(["push", &url, &format!("{commit}:main")]);
        let push = output(git);
        assert_eq!(push.code, Some(0), "{version}: {}", push.stderr);
        assert_eq!(server.live_revision(), commit, "{}", push.stderr);
        let now = fs::read_to_string(server.config_path()).unwrap();
        assert!(
            now == config,
            "{version}: the hook wrote into deploy.yml: {:?}",
            now.strip_prefix(&config).unwrap_or(&now)
        );
    }
    clone.deploy_version("v4");
    server.assert_nothing_left_behind();
}

/// A push to a host of a group that carries a group operation and the deploy branch at once:
/// from a developer it is refused as a whole, the group ref deleted and the branch put back;
/// from the primary the operation runs and the branch, which it does not deploy, is put back
/// too. Either way no ref is left that nothing deployed.
#[test]
fn a_group_operation_pushed_with_the_deploy_branch_to_a_host_leaves_neither_ref() {
    let (server, clone, v2, _) = member_with_v2_prepared();
    clone
        .group_push(&[&refspec(&v2, "g", &Op::Abort)])
        .success();
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let main = format!("{v3}:main");
    let status = refspec(&v3, "s", &Op::Status);

    let before = everything(&server);
    let push = clone.push(&[&main, &status]);
    assert_refused(&server, &before, &push, NOT_THE_PRIMARY, "a developer");

    let push = clone.group_push(&[&main, &status]).success();
    assert!(
        matches!(
            push.stderr.lines().find_map(Line::parse),
            Some(Line::Status(_))
        ),
        "{}",
        push.stderr
    );
    push.stderr_has("refs/heads/main not deployed");
    assert_eq!(&everything(&server), &before, "the primary's push");
}

/// The primary's variables as a process of this server holds them: (secret, status file).
fn primarys_live_variables(server: &Server) -> Option<(String, String)> {
    server.processes().iter().find_map(|p| {
        let pid = p.split_whitespace().next()?;
        let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
        let var = |name: &str| {
            environ.split(|b| *b == 0).find_map(|v| {
                let v = String::from_utf8_lossy(v);
                v.strip_prefix(&format!("{name}=")).map(str::to_string)
            })
        };
        Some((var(PRIMARY_ENV)?, var(STATUS_ENV)?))
    })
}

/// A developer pushing while the primary's own push runs on the host, sending along (as a
/// client allowed `SendEnv` could) the very secret and status file of the primary's live push,
/// as if it had learnt them: refused all the same, through git-shell and `serve` alike, since
/// that file is held by no ancestor of the developer's hook. The primary's prepare goes on.
#[test]
fn a_second_push_with_the_live_primary_pushs_secret_and_file_is_refused() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let doors = Doors::open(&server, 16);
    let gate = server.gate_deploys();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    clone.drive_as_primary();
    let running = clone.spawn_push(&[&refspec(&v2, "g", &Op::Prepare(fp))]);
    gate.wait_held(&running);
    let (secret, status) = primarys_live_variables(&server).expect("the primary's push runs");
    assert_eq!(secret.len(), 32);

    let dev = server.clone_repo("dev");
    let url = doors.sshd.url(&server.repo);
    let send_env = format!(" -o SendEnv={PRIMARY_ENV} -o SendEnv={STATUS_ENV}");
    for client in [&doors.git_shell, &doors.serve] {
        let refs = || String::from_utf8(server.repo_git(&["for-each-ref"])).unwrap();
        let before = refs();
        let mut git = server.command("git");
        git.current_dir(&dev.path)
            .env("GIT_SSH_COMMAND", client.command() + &send_env)
            .env(PRIMARY_ENV, &secret)
            .env(STATUS_ENV, &status)
            .args(["push", &url, &refspec(&v2, "s", &Op::Status)]);
        let push = output(git);
        assert!(
            push.stderr
                .lines()
                .any(|l| l.starts_with("remote: error: ") && l.contains(NOT_THE_PRIMARY)),
            "{}",
            push.stderr
        );
        assert!(
            !push.stderr.contains("atomdeploy-group:"),
            "{}",
            push.stderr
        );
        assert_eq!(refs(), before);
    }
    gate.open();
    running.finish().success();
    assert_eq!(server.branch_head("main"), Some(v2));
    server.assert_nothing_left_behind();
}
