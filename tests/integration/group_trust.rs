//! Who may drive a host: only the group's primary, through `serve --group-primary` in the
//! host's authorized_keys. Every other way in (a local path, the receive-pack wrapper, `serve`
//! without the flag, locally or over a real sshd, a `git-shell` key, a client sending the
//! variables along with `SendEnv`) is refused on every kind of server, for every operation,
//! and changes nothing; a primary refuses even its own kind. And what a host owes its group:
//! a freeze and `receive.denyNonFastForwards` hold, and it deploys nothing by itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use atomdeploy_hook::group::{GroupRef, Line, Op};
use atomdeploy_hook::push_status::{PRIMARY_ENV, STATUS_ENV};

use crate::harness::sshd::{GIT_SHELL_ONLY, SshClient, Sshd, group_primary_only, host_addr};
use crate::harness::{self, BIN, Clone, Push, Server, ServerState};

/// In deploy.yml's commands: no refusal may show them.
const BEFORE_SWITCH_MARKER: &str = "trust-marker-before-switch-5d1e";
const HEALTHCHECK_MARKER: &str = "trust-marker-healthcheck-a07c";

/// The refusal of a group operation from anyone but the primary.
const NOT_THE_PRIMARY: &str = "accepted only from the group's primary";
/// A primary's refusal of any group operation.
const A_PRIMARY: &str = "takes group operations from nobody";

/// A server whose deploy.yml carries the markers, with v1 live; and its clone.
fn marked_server() -> (Server, Clone) {
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
fn fingerprint(clone: &Clone) -> String {
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
    fn push(&self, server: &Server, clone: &Clone, door: Door, spec: &str) -> Push {
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

#[track_caller]
fn assert_refused(server: &Server, before: &Everything, push: &Push, says: &str, case: &str) {
    assert_refused_saying(server, before, push, says, case, |_| false);
}

/// A refusal to the host's own primary, of an operation it may ask for but the host will not
/// do now (frozen, a branch that may not move back): the primary hears only what it needs to
/// tell how it went, `live <gid> …` and `ended <gid> failed <why>`, and nothing is built.
#[track_caller]
fn assert_refused_to_its_primary(
    server: &Server,
    before: &Everything,
    push: &Push,
    (says, gid): (&str, &str),
    case: &str,
) {
    let ended = format!("remote: atomdeploy-group: ended {gid} failed ");
    assert!(
        push.stderr
            .lines()
            .any(|l| l.starts_with(&ended) && l.contains(says)),
        "{case}: no `ended {gid} failed` saying {says:?}:\n{}",
        push.stderr
    );
    let live = format!("remote: atomdeploy-group: live {gid} ");
    assert_refused_saying(server, before, push, says, case, |line| {
        line.starts_with(&ended) || line.starts_with(&live)
    });
}

#[track_caller]
fn assert_refused_saying(
    server: &Server,
    before: &Everything,
    push: &Push,
    says: &str,
    case: &str,
    allowed: impl Fn(&str) -> bool,
) {
    assert!(
        push.stderr
            .lines()
            .any(|l| l.starts_with("remote: error: ") && l.contains(says)),
        "{case}: no `error:` line saying {says:?}:\n{}",
        push.stderr
    );
    for secret in [
        BEFORE_SWITCH_MARKER,
        HEALTHCHECK_MARKER,
        "atomdeploy-group:",
    ] {
        assert!(
            !push
                .stderr
                .lines()
                .any(|line| line.contains(secret) && !allowed(line)),
            "{case}: the refusal showed {secret:?}:\n{}",
            push.stderr
        );
    }
    assert_eq!(&everything(server), before, "{case}: the server changed");
    server.assert_nothing_left_behind_in(case);
}

/// Each way in × each operation, on `server`: all refused, nothing changed.
fn assert_every_door_refused(server: &Server, clone: &Clone, commit: &str, fp: &str, says: &str) {
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

#[test]
fn a_member_host_refuses_every_group_operation_from_anyone_but_its_primary() {
    let (server, clone) = marked_server();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let fp = fingerprint(&clone);
    // A member with group g's v2 live: an accepted restore or abort would act on it.
    clone
        .group_push(&[&refspec(&v2, "g", &Op::Prepare(fp.clone()))])
        .success();
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
        assert_refused_to_its_primary(
            &server,
            &before,
            &push,
            ("deploys are frozen: \"release week\"", "g"),
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
        assert_refused_to_its_primary(
            &server,
            &before,
            &push,
            ("receive.denyNonFastForwards", "back"),
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
