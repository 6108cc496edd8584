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

/// A primary and its hosts over ssh: each host an install behind its own sshd on 127.0.0.2,
/// 127.0.0.3, …, the primary (pushed to over a local path, as the other tests do) listing
/// them in `hosts:`, its ssh given the client's key and `known_hosts`, which each host
/// restricts to `serve --group-primary` (the one way in for group operations).
struct Group {
    primary: Server,
    hosts: Vec<Host>,
    _client: SshClient,
    _tmp: tempfile::TempDir,
}

impl Group {
    /// `n` hosts, every server with `config` (the app's keys must agree), each host's
    /// sessions with `env(i)` added.
    fn start(n: u8, config: &[(&str, &str)], env: impl Fn(u8) -> Vec<(String, String)>) -> Group {
        Group::start_at(n, None, config, env)
    }

    /// [`Group::start`] with the primary's deploy root at `root` (under the group's temp dir).
    fn start_at(
        n: u8,
        root: Option<&str>,
        config: &[(&str, &str)],
        env: impl Fn(u8) -> Vec<(String, String)>,
    ) -> Group {
        let tmp = tempfile::tempdir().unwrap();
        let client = SshClient::new(&tmp.path().join("client"));
        let hosts: Vec<Host> = (0..n)
            .map(|i| {
                let mut builder = Server::builder();
                for (key, value) in config {
                    builder = builder.config(key, value);
                }
                let server = builder.install();
                let env = env(i);
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let sshd = Sshd::group_host_with(&server, host_addr(i), &client, &env);
                Host { server, sshd }
            })
            .collect();
        let bin = client.ssh_on_path(&tmp.path().join("bin"));
        let urls: Vec<String> = hosts.iter().map(|h| format!("'{}'", h.url())).collect();
        let mut builder = Server::builder()
            .path(&format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap()
            ))
            .config("hosts", &format!("[{}]", urls.join(", ")));
        if let Some(root) = root {
            builder = builder.root(&tmp.path().join(root));
        }
        for (key, value) in config {
            builder = builder.config(key, value);
        }
        Group {
            primary: builder.install(),
            hosts,
            _client: client,
            _tmp: tmp,
        }
    }

    /// The primary first, then the hosts.
    fn servers(&self) -> Vec<&Server> {
        std::iter::once(&self.primary)
            .chain(self.hosts.iter().map(|h| &h.server))
            .collect()
    }

    /// Sets a key of every server's deploy.yml.
    fn set_config(&self, key: &str, yaml: &str) {
        for server in self.servers() {
            server.set_config(key, yaml);
        }
    }

    /// A clone of the example app pushing to the primary through the receive-pack wrapper,
    /// so that a failed group deploy fails the push.
    fn clone(&self) -> crate::harness::DevClone {
        let clone = self.primary.clone_fixture("example-app");
        clone.git(&[
            "config",
            "remote.production.receivepack",
            &format!("{} receive-pack", crate::harness::BIN),
        ]);
        clone
    }

    /// Every server serves `commit`, complete, with nothing of a group operation left.
    #[track_caller]
    fn assert_all_on(&self, commit: &str) {
        for (i, server) in self.servers().into_iter().enumerate() {
            assert_eq!(server.live_revision(), commit, "server {i}");
            server.assert_only_complete_builds(&[]);
            server.assert_nothing_left_behind_in(&format!("server {i}"));
            let refs = server.repo_git(&["for-each-ref", "refs/atomdeploy/group/"]);
            assert!(
                refs.is_empty(),
                "server {i}: {}",
                String::from_utf8_lossy(&refs)
            );
        }
    }

    /// max − min of the ctimes of every server's `latest`, which its rename(2) set.
    fn ctime_spread(&self) -> std::time::Duration {
        use std::os::unix::fs::MetadataExt;
        let ns: Vec<i128> = self
            .servers()
            .into_iter()
            .map(|s| {
                let meta = fs::symlink_metadata(s.latest()).unwrap();
                i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
            })
            .collect();
        let spread = ns.iter().max().unwrap() - ns.iter().min().unwrap();
        std::time::Duration::from_nanos(spread as u64)
    }

    /// Nothing the deploys started still runs: no hook, no ssh (a ControlMaster included),
    /// no sshd session.
    #[track_caller]
    fn assert_nothing_running(&self) {
        for (i, server) in self.servers().into_iter().enumerate() {
            assert_eq!(server.processes(), Vec::<String>::new(), "server {i}");
        }
        // A connection's sshd process ends a moment after its client did.
        for host in &self.hosts {
            crate::harness::wait_until_quietly(std::time::Duration::from_secs(10), || {
                host.sshd.sessions().is_empty()
            });
            assert_eq!(host.sshd.sessions(), Vec::<String>::new());
        }
    }
}

impl Group {
    /// The primary's ssh ControlMaster processes (`ssh: <pid>/<hash> [mux]`, running in
    /// `.atomdeploy/ssh`).
    fn masters(&self) -> Vec<String> {
        self.primary.ssh_masters()
    }

    /// `ssh -O exit` on every ControlMaster socket of the primary (`<pid>/<hash>`, relative to
    /// `.atomdeploy/ssh`: the path whole may be too long for a socket).
    fn close_masters(&self) {
        let dir = self.primary.root.join(".atomdeploy/ssh");
        let Ok(processes) = fs::read_dir(&dir) else {
            return;
        };
        for process in processes.flatten() {
            let Ok(sockets) = fs::read_dir(process.path()) else {
                continue;
            };
            for socket in sockets.flatten() {
                let relative = socket.path().strip_prefix(&dir).unwrap().to_path_buf();
                let _ = self
                    .primary
                    .command("ssh")
                    .current_dir(&dir)
                    .arg("-o")
                    .arg(format!("ControlPath={}", relative.display()))
                    .args(["-O", "exit", "the-host"])
                    .output();
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // What the primary left open would keep a session on each host's sshd, whose drop
        // then fails the test: the one test that looks for it is
        // `the_primary_leaves_no_ssh_connection_open`.
        self.close_masters();
    }
}

/// The primary's ssh connections end with its deploy: a ControlMaster kept for
/// `ControlPersist` would run on, unseen by the hook's run marker (ssh's process title
/// overwrites its environment), holding a session on every host.
#[test]
fn the_primary_leaves_no_ssh_connection_open() {
    let group = Group::start(2, &[], |_| Vec::new());
    let clone = group.clone();
    clone.push_main().success();
    group.assert_all_on(&clone.head());
    let gone = crate::harness::wait_until_quietly(std::time::Duration::from_secs(5), || {
        group.masters().is_empty()
    });
    assert!(gone, "left running after the push: {:?}", group.masters());
    group.assert_nothing_running();
}

/// A deploy root of a realistic length: the primary's ssh ControlMaster sockets live under it,
/// and a Unix socket's path may not be longer than 107 bytes (`sun_path`); ssh makes each as
/// `<ControlPath>.<16 random characters>` first, and `%C` is 40 hex digits.
#[test]
fn a_primary_with_a_long_deploy_root_reaches_its_hosts() {
    let group = Group::start_at(
        1,
        Some("var/www/customer-portal.example.com/production"),
        &[],
        |_| Vec::new(),
    );
    let clone = group.clone();
    let push = clone.push(&["main"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    group.assert_all_on(&clone.head());
    group.close_masters();
    group.assert_nothing_running();
}

/// `snapshot: link` holds on the hosts as on the primary: a file the next commit leaves as it
/// was is one inode in both builds, not a copy on every host at every deploy.
#[test]
fn hosts_hard_link_unchanged_files_like_the_primary() {
    use std::os::unix::fs::MetadataExt;
    let group = Group::start(1, &[], |_| Vec::new());
    let clone = group.clone();
    clone.push_main().success();
    let first: Vec<_> = group.servers().iter().map(|s| s.live().unwrap()).collect();
    clone.deploy_version("v2");
    for (i, server) in group.servers().into_iter().enumerate() {
        let live = server.live().unwrap();
        assert_ne!(live, first[i]);
        let ino = |build: &str| {
            fs::metadata(server.build_path(build).join("composer.json"))
                .unwrap()
                .ino()
        };
        assert_eq!(
            ino(&live),
            ino(&first[i]),
            "server {i}: composer.json copied into builds/{live}"
        );
    }
    group.close_masters();
    group.assert_nothing_running();
}

/// A group's promise over real ssh: one push to the primary deploys it and three hosts,
/// each reached as a git-shell-only account with its host key checked; every server is on the
/// commit, the hosts' progress is shown prefixed, and the switches land together.
#[test]
fn three_hosts_over_ssh_deploy_and_switch_together() {
    let group = Group::start(3, &[], |_| Vec::new());
    let clone = group.clone();
    let push = clone.push_main().success();
    group.assert_all_on(&clone.head());
    for host in &group.hosts {
        let label = host.sshd.addr.to_string();
        push.stderr
            .lines()
            .find(|l| l.starts_with(&format!("remote: {label}: ")) && l.contains("composer"))
            .unwrap_or_else(|| panic!("no composer line from {label}:\n{}", push.stderr));
    }
    push.remote_line("atomdeploy: switched 4 servers within ")
        .unwrap_or_else(|| panic!("no spread in the summary:\n{}", push.stderr));
    let entry = group.primary.deploy_log().pop().unwrap();
    let hosts = entry["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{entry}");
    assert!(hosts.iter().all(|h| h["outcome"] == "switched"), "{entry}");

    // The spread, as the primary reports it and as the ctimes of `latest` (set by each
    // rename(2), to a timer tick: 4 ms at HZ=250) show it, over three deploys.
    let mut spreads = Vec::new();
    for version in ["v1", "v2", "v3"] {
        if version != "v1" {
            let commit = clone.deploy_version(version);
            group.assert_all_on(&commit);
            for server in group.servers() {
                assert!(server.page().contains(version), "{}", server.page());
            }
        }
        let reported = group.primary.deploy_log().pop().unwrap()["switch_spread_ms"]
            .as_f64()
            .unwrap();
        let measured = group.ctime_spread().as_secs_f64() * 1000.0;
        eprintln!(
            "4 servers over ssh, {version}: reported {reported:.1} ms, ctimes {measured:.1} ms"
        );
        // Printed, not asserted: timings are for benches/hosts (the suite runs tests side by
        // side on few CPUs). That every server reported its rename is asserted above.
        assert!(reported.is_finite() && reported >= 0.0, "{reported}");
        spreads.push(measured);
    }
    spreads.sort_by(f64::total_cmp);
    eprintln!(
        "4 servers over ssh: median ctime spread {:.1} ms",
        spreads[1]
    );
    drop(push);
    group.close_masters();
    group.assert_nothing_running();
}

/// All or nothing over ssh: a host that dies mid-prepare (its sshd, connection and hook
/// killed) means no server switches, the push fails naming it, the hosts that prepared drop
/// their builds; back up, the next push brings every server to one commit.
#[test]
fn a_host_whose_sshd_dies_mid_prepare_switches_no_server() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let gate_var = gate.display().to_string();
    // Only the second host's sessions have the variable, so only its prepare waits.
    let mut group = Group::start(3, &[], |i| {
        if i == 1 {
            vec![("ATOMDEPLOY_TEST_GATE".into(), gate_var.clone())]
        } else {
            Vec::new()
        }
    });
    let clone = group.clone();
    clone.push_main().success();
    let v1 = clone.head();
    group.assert_all_on(&v1);
    // The same before_switch everywhere (it is an app key); it waits where the variable is set.
    group.set_config(
        "before_switch",
        "['[ -z \"$ATOMDEPLOY_TEST_GATE\" ] || { touch \"$ATOMDEPLOY_TEST_GATE.entered\"; \
         while :; do sleep 0.01; done; }']",
    );
    let before: Vec<_> = group
        .servers()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, s)| s.state())
        .collect();
    let dead_live = group.hosts[1].server.live();

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.spawn_push(&["main"]);
    crate::harness::wait_until(
        std::time::Duration::from_secs(120),
        || gate.with_extension("entered").exists(),
        || format!("the host never reached before_switch:\n{}", push.seen()),
    );
    group.hosts[1].sshd.crash();
    let push = push.finish();

    assert_eq!(push.code, Some(1), "{}", push.stderr);
    let dead = group.hosts[1].sshd.addr.to_string();
    push.stderr_has(&format!("remote: error: no server switched: {dead}: "))
        .stderr_has("error: the push was received, but its deploy failed: ")
        .stderr_lacks("remote: deployed ");
    for (i, server) in group
        .servers()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .enumerate()
    {
        server
            .1
            .assert_unchanged_since_in(&before[i], &format!("server {}", server.0));
    }
    assert_eq!(
        group.hosts[1].server.live(),
        dead_live,
        "the dead host switched"
    );
    assert_eq!(group.hosts[1].server.processes(), Vec::<String>::new());

    // Back up: the next push deploys everywhere, the dead host's half-prepared build
    // recovered or removed by its own hook.
    group.hosts[1].sshd.restart();
    group.set_config("before_switch", "[]");
    let v3 = clone.deploy_version("v3");
    group.assert_all_on(&v3);
    group.close_masters();
    group.assert_nothing_running();
}
