//! Real `sshd`s for the tests, each on a loopback address and port of its own (Linux routes all
//! of 127.0.0.0/8 to `lo`), with host keys generated into the test's temp dir, and the client
//! side a deploy user has: a key pair and a `known_hosts` that holds each server's real host
//! key. Host key checking stays on: a host missing from `known_hosts` is refused.
//!
//! The tests run as root and must not touch root's `~/.ssh` (ssh reads it from the passwd
//! entry, not from `$HOME`), so the client's key and `known_hosts` are named on the command line
//! that [`SshClient::command`] gives, for `core.sshCommand` or `GIT_SSH_COMMAND`.

use std::fs;
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{Server, assert_success, wait_until_quietly};

/// The `authorized_keys` options of a deploy key that may do nothing but git: every session
/// runs `git-shell`, which allows receive-pack, upload-pack and upload-archive only, and
/// `restrict` takes away the pty and every forwarding.
pub const GIT_SHELL_ONLY: &str = r#"restrict,command="git-shell -c \"$SSH_ORIGINAL_COMMAND\"" "#;

/// The `authorized_keys` options of a group primary's key on one of its hosts (`server`): the
/// only way in for group operations, as the README tells operators to write it.
pub fn group_primary_only(server: &Server) -> String {
    format!(
        r#"restrict,command="{} serve --repo {} --group-primary" "#,
        super::BIN,
        server.repo.display()
    )
}

/// The `authorized_keys` options of a developer's key on `server`: pushes and fetches of its
/// repository through `serve`, and the read-only `builds` and `log`; nothing else.
pub fn serve_only(server: &Server) -> String {
    format!(
        r#"restrict,command="{} serve --repo {}" "#,
        super::BIN,
        server.repo.display()
    )
}

/// Generates an ed25519 key pair without a passphrase at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "atomdeploy-test",
            "-f",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert_success(&out, "ssh-keygen");
}

/// The n-th loopback address handed to hosts: 127.0.0.2, 127.0.0.3, … (127.0.0.1 stays the
/// primary's). Tests running at once may share one; each sshd has a port of its own.
pub fn host_addr(n: u8) -> Ipv4Addr {
    assert!(n < 250, "host {n}: out of loopback addresses");
    Ipv4Addr::new(127, 0, 0, 2 + n)
}

/// What a deploy user's `~/.ssh` holds: a private key and a `known_hosts`.
pub struct SshClient {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl SshClient {
    /// A new key pair and an empty `known_hosts` in `dir`.
    pub fn new(dir: &Path) -> SshClient {
        fs::create_dir_all(dir).unwrap();
        let client = SshClient {
            key: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
        };
        keygen(&client.key);
        fs::write(&client.known_hosts, "").unwrap();
        client
    }

    pub fn public_key(&self) -> PathBuf {
        self.key.with_extension("pub")
    }

    /// The ssh command line that uses this key and `known_hosts` only: no ssh_config, no
    /// agent, never a prompt, and a host not in `known_hosts` refused.
    pub fn command(&self) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR",
            self.key.display(),
            self.known_hosts.display()
        )
    }

    /// A directory holding an `ssh` that is [`SshClient::command`] with the arguments it is
    /// given after: first in a server's PATH, it makes the ssh that server runs (the
    /// primary's `GIT_SSH_COMMAND` says `ssh -o …`) use this key and `known_hosts`, as the
    /// deploy user's `~/.ssh` would, without touching root's.
    pub fn ssh_on_path(&self, dir: &Path) -> PathBuf {
        let real = which::which("ssh").unwrap();
        fs::create_dir_all(dir).unwrap();
        let script = dir.join("ssh");
        let args = self.args().join(" ");
        fs::write(
            &script,
            format!("#!/bin/sh\nexec {} {args} \"$@\"\n", real.display()),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        dir.to_path_buf()
    }

    /// [`SshClient::command`] split into the program's arguments.
    pub fn args(&self) -> Vec<String> {
        self.command()
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    /// `ssh … <command>` with this key to `sshd`, as a developer types it: its output.
    pub fn run(&self, sshd: &Sshd, command: &str) -> std::process::Output {
        let (destination, port) = sshd.destination();
        Command::new("ssh")
            .args(self.args())
            .args(["-p", &port, &destination, command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Adds `sshd`'s real host key to `known_hosts`, as `ssh-keyscan` checked out of band would.
    pub fn trust(&self, sshd: &Sshd) {
        let public = fs::read_to_string(sshd.host_key().with_extension("pub")).unwrap();
        let key = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("[{}]:{} {key}\n", sshd.addr, sshd.port);
        let mut known = fs::read_to_string(&self.known_hosts).unwrap();
        known.push_str(&line);
        fs::write(&self.known_hosts, known).unwrap();
    }
}

#[must_use]
pub struct SshdBuilder {
    dir: PathBuf,
    addr: Ipv4Addr,
    keys: Vec<(String, PathBuf)>,
    env: Vec<(String, String)>,
    accept_env: Vec<String>,
    users_own_keys: bool,
}

impl SshdBuilder {
    /// Keys from each user's own `~/.ssh/authorized_keys`, their modes checked (`StrictModes
    /// yes`), as a stock sshd reads them: for a test of a server set up by hand for a real
    /// user. Without PAM, as here, sshd also refuses a locked account (`!` in /etc/shadow).
    pub fn users_own_keys(mut self) -> Self {
        self.users_own_keys = true;
        self
    }

    pub fn addr(mut self, addr: Ipv4Addr) -> Self {
        self.addr = addr;
        self
    }

    /// Adds the public key at `key` to `authorized_keys` with `options` (ending in a space, or
    /// empty).
    pub fn authorize(mut self, options: &str, key: &Path) -> Self {
        self.keys.push((options.to_string(), key.to_path_buf()));
        self
    }

    /// Sets a variable in every session's environment (sshd's `SetEnv`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Lets clients send the variable `name` (sshd's `AcceptEnv`, a client's `SendEnv`).
    pub fn accept_env(mut self, name: &str) -> Self {
        self.accept_env.push(name.to_string());
        self
    }

    /// The environment `server`'s own commands run in, for every session: the host's hook
    /// then runs as it would in a push from the test, and `server.processes()` finds it.
    pub fn env_of(mut self, server: &Server) -> Self {
        let probe = server.command("true");
        for (name, value) in probe.get_envs() {
            if let Some(value) = value {
                self.env.push((
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                ));
            }
        }
        self
    }

    #[track_caller]
    pub fn start(self) -> Sshd {
        fs::create_dir_all(&self.dir).unwrap();
        let host_key = self.dir.join("host_key");
        keygen(&host_key);
        let mut authorized = String::new();
        for (options, key) in &self.keys {
            let public = fs::read_to_string(key).unwrap();
            authorized.push_str(&format!("{options}{}\n", public.trim()));
        }
        fs::write(self.dir.join("authorized_keys"), authorized).unwrap();
        // Privilege separation needs it; a fresh container lacks it.
        fs::create_dir_all("/run/sshd").unwrap();
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        let marker = format!("ATOMDEPLOY_SSHD_TEST={}", self.dir.display());
        let mut env = vec![marker.clone()];
        if !self.env.iter().any(|(name, _)| name == "PATH") {
            env.push(format!("PATH={}", std::env::var("PATH").unwrap()));
        }
        for (name, value) in &self.env {
            assert!(
                !value.contains(['"', '\n']),
                "SetEnv {name}: no quotes, please: {value:?}"
            );
            env.push(format!("\"{name}={value}\""));
        }
        let mut sshd = Sshd {
            child: None,
            addr: self.addr,
            port: 0,
            dir: self.dir,
            marker,
            set_env: env.join(" "),
            accept_env: self.accept_env.join(" "),
            users_own_keys: self.users_own_keys,
        };
        // The port is found free and then given to sshd: another process may take it in
        // between, so a failed bind tries another one.
        let mut log = String::new();
        for _ in 0..5 {
            sshd.port = std::net::TcpListener::bind((sshd.addr, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            match sshd.launch() {
                Ok(()) => return sshd,
                Err(why) => log.push_str(&why),
            }
        }
        panic!("sshd did not start on {}:\n{log}", sshd.addr);
    }
}

/// A running `sshd -D` on one loopback address; stopped on drop, after every session it
/// served has ended.
pub struct Sshd {
    child: Option<Child>,
    pub addr: Ipv4Addr,
    pub port: u16,
    dir: PathBuf,
    /// In the environment of sshd and every session: finds what they left running.
    marker: String,
    set_env: String,
    /// sshd's `AcceptEnv`, if any.
    accept_env: String,
    /// See [`SshdBuilder::users_own_keys`].
    users_own_keys: bool,
}

impl Sshd {
    /// An sshd with its files in `dir`, on 127.0.0.2 unless told otherwise.
    pub fn builder(dir: &Path) -> SshdBuilder {
        SshdBuilder {
            dir: dir.to_path_buf(),
            addr: host_addr(0),
            keys: Vec::new(),
            env: Vec::new(),
            accept_env: Vec::new(),
            users_own_keys: false,
        }
    }

    /// The usual host of a group: `server`'s sshd on `addr`, with `client`'s key restricted
    /// to `git-shell`, sessions in `server`'s test environment, and `client` trusting its
    /// host key.
    #[track_caller]
    pub fn git_shell_host(server: &Server, addr: Ipv4Addr, client: &SshClient) -> Sshd {
        Sshd::git_shell_host_with(server, addr, client, &[])
    }

    /// [`Sshd::git_shell_host`] with `env` added to every session's environment.
    #[track_caller]
    pub fn git_shell_host_with(
        server: &Server,
        addr: Ipv4Addr,
        client: &SshClient,
        env: &[(&str, &str)],
    ) -> Sshd {
        Sshd::host_with(GIT_SHELL_ONLY, server, addr, client, env)
    }

    /// A host of a group: [`Sshd::git_shell_host_with`], but `client` is the group's primary,
    /// its key restricted to `serve --group-primary` ([`group_primary_only`]).
    #[track_caller]
    pub fn group_host_with(
        server: &Server,
        addr: Ipv4Addr,
        client: &SshClient,
        env: &[(&str, &str)],
    ) -> Sshd {
        Sshd::host_with(&group_primary_only(server), server, addr, client, env)
    }

    #[track_caller]
    fn host_with(
        options: &str,
        server: &Server,
        addr: Ipv4Addr,
        client: &SshClient,
        env: &[(&str, &str)],
    ) -> Sshd {
        let mut builder = Sshd::builder(&server.base().join("sshd"))
            .addr(addr)
            .authorize(options, &client.public_key())
            .env_of(server);
        for (name, value) in env {
            builder = builder.env(name, value);
        }
        let sshd = builder.start();
        client.trust(&sshd);
        sshd
    }

    pub fn host_key(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    /// The ssh URL of `repo` (an absolute path) on this sshd, as root.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@{}:{}{}", self.addr, self.port, repo.display())
    }

    /// `[user@]host` and port for an ssh command line.
    pub fn destination(&self) -> (String, String) {
        (format!("root@{}", self.addr), self.port.to_string())
    }

    fn launch(&mut self) -> Result<(), String> {
        let config = self.dir.join("sshd_config");
        let keys = if self.users_own_keys {
            "AuthorizedKeysFile .ssh/authorized_keys\nStrictModes yes".to_string()
        } else {
            format!(
                "AuthorizedKeysFile {}\nStrictModes no",
                self.dir.join("authorized_keys").display()
            )
        };
        fs::write(
            &config,
            format!(
                "Port {}\nListenAddress {}\nHostKey {}\n{keys}\n\
                 UsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 PidFile none\nMaxStartups 100\nMaxSessions 100\nSetEnv {}\n{}",
                self.port,
                self.addr,
                self.host_key().display(),
                self.set_env,
                if self.accept_env.is_empty() {
                    String::new()
                } else {
                    format!("AcceptEnv {}\n", self.accept_env)
                },
            ),
        )
        .unwrap();
        let (name, value) = self.marker.split_once('=').unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .env(name, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once it says it listens; its log is drained on a thread so it never blocks.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut log = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("Server listening on") => {
                    self.child = Some(child);
                    return Ok(());
                }
                Ok(line) => log.push_str(&format!("{line}\n")),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(log);
                }
            }
        }
    }

    /// The host goes away mid-whatever: the listener, every connection and every session
    /// (the hook and what it runs) killed at once, as a power cut would. What the sessions
    /// wrote to disk stays.
    pub fn crash(&mut self) {
        let listener = self.child.as_ref().map(Child::id);
        // Stopped first, all of them, so that none forks or accepts a connection while the
        // others are killed, and the tree under the listener stays whole to be walked.
        let everything = listener
            .map(|pid| pid as i32)
            .into_iter()
            .chain(self.processes(listener));
        for pid in everything {
            // SAFETY: kill(2) on a pid read from /proc just now; at worst it is gone.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        let all = self.processes(listener);
        for pid in &all {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Sessions may have forked before they were stopped; each carries the marker.
        let gone = wait_until_quietly(Duration::from_secs(10), || {
            let left = self.processes(None);
            for pid in &left {
                // SAFETY: as above.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            left.is_empty()
        });
        assert!(gone, "could not kill: {:?}", self.processes(None));
    }

    /// Starts sshd again after [`Sshd::crash`]: same address, port and host key.
    #[track_caller]
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "sshd still runs");
        if let Err(log) = self.launch() {
            panic!(
                "sshd did not start again on {}:{}:\n{log}",
                self.addr, self.port
            );
        }
    }

    /// Processes of this sshd, the listener included when given: everything under the
    /// listener (one process per connection and its helpers; sshd's process titles overwrite
    /// their environment) and every process with the marker that sshd puts in each session's
    /// environment (the hook and what it started), with all they started.
    fn processes(&self, listener: Option<u32>) -> Vec<i32> {
        let mut parent = std::collections::HashMap::new();
        let mut found = std::collections::BTreeSet::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let (Ok(environ), Ok(stat)) = (
                fs::read(entry.path().join("environ")),
                fs::read_to_string(entry.path().join("stat")),
            ) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let (state, ppid) = (fields.next(), fields.next());
            if state == Some("Z") {
                continue;
            }
            parent.insert(pid, ppid.and_then(|p| p.parse::<i32>().ok()).unwrap_or(0));
            let marked = environ
                .split(|b| *b == 0)
                .any(|var| var == self.marker.as_bytes());
            if marked || Some(pid as u32) == listener {
                found.insert(pid);
            }
        }
        // Descendants, to a fixed point.
        loop {
            let more: Vec<i32> = parent
                .iter()
                .filter(|(pid, ppid)| found.contains(ppid) && !found.contains(pid))
                .map(|(pid, _)| *pid)
                .collect();
            if more.is_empty() {
                break;
            }
            found.extend(more);
        }
        if let Some(listener) = listener {
            found.remove(&(listener as i32));
        }
        found.into_iter().collect()
    }

    /// What still runs of this sshd's sessions, as "pid cmdline".
    pub fn sessions(&self) -> Vec<String> {
        self.processes(self.child.as_ref().map(Child::id))
            .into_iter()
            .map(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid} {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Sessions end after their client did: wait for them while the listener still
        // stands, so that its children can be told apart.
        let listener = self.child.as_ref().map(Child::id);
        let gone = wait_until_quietly(Duration::from_secs(10), || {
            self.processes(listener).is_empty()
        });
        let left = self.sessions();
        // Whatever happens, nothing of it outlives the test.
        self.crash();
        if !std::thread::panicking() {
            assert!(gone, "sshd {}: left running: {left:?}", self.addr);
        }
    }
}

/// A primary and hosts over ssh, each host an install behind its own sshd on
/// `host_addr(first + i)` with `client`'s key restricted to `serve --group-primary` (the one
/// way in a host takes group operations through), the primary's ssh given
/// the client's key and `known_hosts` (an `ssh` first in its PATH).
pub struct SshGroup {
    pub primary: Server,
    pub hosts: Vec<(Server, Sshd)>,
    pub client: SshClient,
    _tmp: tempfile::TempDir,
}

impl SshGroup {
    #[track_caller]
    pub fn start(first: u8, n: u8) -> SshGroup {
        let tmp = tempfile::tempdir().unwrap();
        let client = SshClient::new(&tmp.path().join("client"));
        let hosts: Vec<(Server, Sshd)> = (0..n)
            .map(|i| {
                let server = Server::install();
                let sshd = Sshd::group_host_with(&server, host_addr(first + i), &client, &[]);
                (server, sshd)
            })
            .collect();
        let bin = client.ssh_on_path(&tmp.path().join("bin"));
        let urls: Vec<String> = hosts
            .iter()
            .map(|(server, sshd)| format!("'{}'", sshd.url(&server.repo)))
            .collect();
        let primary = Server::builder()
            .path(&format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap()
            ))
            .config("hosts", &format!("[{}]", urls.join(", ")))
            .install();
        SshGroup {
            primary,
            hosts,
            client,
            _tmp: tmp,
        }
    }

    /// A clone of the example app pushing to the primary through the receive-pack wrapper, so
    /// that a failed group deploy fails the push.
    pub fn clone(&self) -> super::DevClone {
        let clone = self.primary.clone_fixture("example-app");
        clone.wrap();
        clone
    }

    /// The `authorized_keys` of host `i`'s sshd, read at every login.
    pub fn authorized_keys(&self, i: usize) -> PathBuf {
        self.hosts[i].0.base().join("sshd/authorized_keys")
    }

    /// Every process this group's servers started that still runs (the primary's ssh
    /// ControlMasters among them), and every session still open on a host's sshd.
    pub fn running(&self) -> Vec<String> {
        let mut found = self.primary.processes();
        found.extend(self.primary.ssh_masters());
        for (server, sshd) in &self.hosts {
            found.extend(server.processes());
            found.extend(sshd.sessions());
        }
        found
    }
}
