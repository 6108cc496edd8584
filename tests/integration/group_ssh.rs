//! Several web servers over real ssh: each host an ordinary install behind an `sshd` of its own
//! on 127.0.0.2, 127.0.0.3, …, reached with a key that may run nothing but `git-shell`, and
//! checked against a `known_hosts` that holds its real host key.

use std::fs;

use crate::harness::Server;
use crate::harness::sshd::{SshClient, Sshd, host_addr};

/// A host of the group: an installed server, its sshd on `127.0.0.(2+n)`, and a client key
/// the sshd lets run `git-shell` only.
struct Host {
    server: Server,
    sshd: Sshd,
}

impl Host {
    fn start(n: u8, client: &SshClient) -> Host {
        let server = Server::install();
        let sshd = Sshd::git_shell_host(&server, host_addr(n), client);
        Host { server, sshd }
    }

    fn url(&self) -> String {
        self.sshd.url(&self.server.repo)
    }
}

/// `ssh <destination> <command>` with `client`'s key and `known_hosts`.
fn ssh(host: &Host, client: &SshClient, command: &[&str]) -> std::process::Output {
    let (destination, port) = host.sshd.destination();
    host.server
        .command("ssh")
        .args(client.args())
        .args(["-p", &port, &destination])
        .args(command)
        .output()
        .unwrap()
}

/// The building block of a group deploy: a plain `git push` over ssh into a host whose key
/// may only run `git-shell` deploys it, its post-receive hook run by git-shell's receive-pack.
#[test]
fn a_push_over_ssh_to_a_git_shell_only_account_deploys() {
    let tmp = tempfile::tempdir().unwrap();
    let client = SshClient::new(tmp.path());
    let host = Host::start(0, &client);
    let clone = host.server.clone_fixture("example-app");
    clone.git(&["remote", "set-url", "production", &host.url()]);
    clone.git(&["config", "core.sshCommand", &client.command()]);

    let push = clone.push_main().success();
    push.stderr_has("remote: deployed ");
    assert_eq!(host.server.live_revision(), clone.head());
    host.server.assert_only_complete_builds(&[]);

    let v2 = clone.deploy_version("v2");
    assert_eq!(host.server.live_revision(), v2);
    assert!(host.server.page().contains("v2"), "{}", host.server.page());
    // The hook ran in the session's environment and is gone with it.
    drop(host.sshd);
    assert_eq!(host.server.processes(), Vec::<String>::new());
}

/// What makes a git-shell-only key enough and no more: the same key that pushes gets no
/// shell, runs no command and forwards nothing.
#[test]
fn git_shell_refuses_commands_and_shells() {
    let tmp = tempfile::tempdir().unwrap();
    let client = SshClient::new(tmp.path());
    let host = Host::start(1, &client);
    let witness = host.server.base().join("witness");
    let touch = format!("touch {}", witness.display());

    for command in [
        vec!["id"],
        vec!["sh", "-c", &touch],
        vec![&touch],
        vec!["git-receive-pack '/tmp'; ", &touch],
    ] {
        let out = ssh(&host, &client, &command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{command:?} ran: {stderr}");
        assert!(!witness.exists(), "{command:?} ran");
    }
    let out = ssh(&host, &client, &["id"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unrecognized command 'id'"), "{stderr}");
    assert!(out.stdout.is_empty());

    // No command at all asks for a login shell: git-shell is run with nothing to do.
    let out = ssh(&host, &client, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("unrecognized command ''"), "{stderr}");

    // A forwarded port is refused by `restrict`, so the key opens no tunnel either.
    let out = ssh(
        &host,
        &client,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "127.0.0.1:0:127.0.0.1:9",
            "git-upload-pack",
            &host.server.repo.display().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("remote port forwarding failed"), "{stderr}");
    assert!(!witness.exists());
}

/// Host keys are checked: a host missing from `known_hosts`, and one whose key changed (a
/// machine in the middle), are refused before anything is sent, never asked about.
#[test]
fn an_unknown_or_changed_host_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let client = SshClient::new(&tmp.path().join("trusted"));
    let host = Host::start(2, &client);
    let before = host.server.state();

    // The same key, a known_hosts without the host.
    let stranger = SshClient::new(&tmp.path().join("stranger"));
    fs::copy(&client.key, &stranger.key).unwrap();
    fs::copy(client.public_key(), stranger.public_key()).unwrap();
    // The same key, a known_hosts with another key for the host.
    let fooled = SshClient::new(&tmp.path().join("fooled"));
    fs::copy(&client.key, &fooled.key).unwrap();
    fs::copy(client.public_key(), fooled.public_key()).unwrap();
    let other = tmp.path().join("other_host_key");
    crate::harness::sshd::keygen(&other);
    let other = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(
        &fooled.known_hosts,
        format!("[{}]:{} {other}\n", host.sshd.addr, host.sshd.port),
    )
    .unwrap();

    let clone = host.server.clone_fixture("example-app");
    clone.git(&["remote", "set-url", "production", &host.url()]);
    for refused in [&stranger, &fooled] {
        clone.git(&["config", "core.sshCommand", &refused.command()]);
        let push = clone.push_main();
        assert_ne!(push.code, Some(0), "{}", push.stderr);
        push.stderr_has("Host key verification failed.")
            .stderr_lacks("remote: ");
        host.server.assert_unchanged_since(&before);
        // Nothing was added to known_hosts behind the user's back.
        let known = fs::read_to_string(&refused.known_hosts).unwrap();
        assert!(known.lines().count() <= 1, "{known}");
    }
    clone.git(&["config", "core.sshCommand", &client.command()]);
    clone.push_main().success();
    assert_eq!(host.server.live_revision(), clone.head());
}

/// The harness's dead host: killed mid-deploy with its sshd, it cuts the push off and leaves
/// nothing running; started again, with the same host key, it takes the next push, which
/// deploys.
#[test]
fn a_crashed_host_cuts_the_push_off_and_comes_back_with_its_host_key() {
    let tmp = tempfile::tempdir().unwrap();
    let client = SshClient::new(tmp.path());
    let mut host = Host::start(3, &client);
    let clone = host.server.clone_fixture("example-app");
    clone.git(&["remote", "set-url", "production", &host.url()]);
    clone.git(&["config", "core.sshCommand", &client.command()]);
    clone.push_main().success();
    let live = host.server.live();

    let gate = host.server.gate_deploys();
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.spawn_push(&["main"]);
    gate.wait_held(&push);
    host.sshd.crash();
    let push = push.finish();
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    assert_eq!(host.server.live(), live, "switched after the crash");
    assert_eq!(host.server.processes(), Vec::<String>::new());

    host.sshd.restart();
    gate.open();
    host.server.set_config("before_switch", "[]");
    clone.git(&["commit", "-q", "--allow-empty", "-m", "v2 again"]);
    clone.push_main().success();
    assert_eq!(host.server.live_revision(), clone.head());
    host.server.assert_only_complete_builds(&[]);
    host.server.assert_nothing_left_behind();
}
