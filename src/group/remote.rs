//! One `git push` from the primary to one host of the group: the only way the primary talks to
//! a host, so that an account restricted to `git-shell` is enough on the host.
//!
//! The host's output comes back as `remote: ` lines on git's stderr: each is shown to the
//! pusher prefixed with the host's label (`web2: ==> composer`), except the protocol lines
//! (`atomdeploy-group: …`), which are kept for the primary to read.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use crate::infra::child;
use crate::infra::report::Reporter;
use crate::state::plan::{Layout, Plan};

use crate::group::LINE_PREFIX;
pub use crate::group::Line as GroupLine;

/// Lines of a host's errors kept for the primary's report.
const ERRORS_KEPT: usize = 3;

/// A host of the group as the primary reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// As deploy.yml lists it (local paths made absolute); what `git push` is given.
    pub url: String,
    /// Short, for prefixing its lines: `web2` for `deploy@web2.internal:/srv/app.git`.
    pub label: String,
}

impl Host {
    /// The hosts of `urls`, each with a label of its own.
    pub fn all(urls: &[String]) -> Vec<Host> {
        let labels: Vec<String> = urls.iter().map(|url| label(url)).collect();
        urls.iter()
            .zip(&labels)
            .enumerate()
            .map(|(i, (url, candidate))| {
                // Two hosts with one name (`web2:/a.git`, `web2:/b.git`): their place in the list
                // tells them apart.
                let unique = labels.iter().filter(|l| *l == candidate).count() == 1;
                Host {
                    url: url.clone(),
                    label: if unique && !candidate.is_empty() {
                        candidate.clone()
                    } else {
                        format!("host{}", i + 1)
                    },
                }
            })
            .collect()
    }
}

/// The first DNS label of an ssh host (`web2` of `web2.internal`, an address whole), or for a
/// local path its last component without `.git`.
fn label(url: &str) -> String {
    match gix_url::parse(url.as_bytes()) {
        Ok(parsed) if parsed.scheme == gix_url::Scheme::Ssh => {
            let host = parsed.host().unwrap_or_default();
            if host.parse::<std::net::IpAddr>().is_ok() {
                host.to_string()
            } else {
                host.split('.').next().unwrap_or_default().to_string()
            }
        }
        _ => {
            let last = Path::new(url.trim_end_matches('/'))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = last.strip_suffix(".git").unwrap_or(&last);
            // `/srv/web2/repo.git`: the directory names the host better than `repo`.
            if matches!(stem, "repo" | "app" | "repository") {
                Path::new(url.trim_end_matches('/'))
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| stem.to_string())
            } else {
                stem.to_string()
            }
        }
    }
}

/// What one push to a host brought back.
#[derive(Debug)]
pub struct Pushed {
    /// The protocol lines, in order.
    pub lines: Vec<GroupLine>,
    /// The host's last `error:` lines (and git's own, for a host never reached).
    pub errors: Vec<String>,
    /// Whether `git push` itself succeeded.
    pub result: Result<()>,
}

impl Pushed {
    /// Why the host did not answer as asked: its own error, else git's, else `missing`.
    pub fn why(&self, missing: &str) -> String {
        if !self.errors.is_empty() {
            return self.errors.join("; ");
        }
        match &self.result {
            Err(err) => format!("{err:#}"),
            Ok(()) => missing.to_string(),
        }
    }
}

/// The directory of the ssh ControlMaster sockets, one per host: the prepare's connection is
/// still open at the switch, so that the switches start together instead of each waiting for
/// an ssh handshake.
pub fn ssh_dir(layout: &Layout) -> PathBuf {
    layout.state.join("ssh")
}

/// `GIT_SSH_COMMAND` for the hosts: the primary repository's `core.sshCommand` (`ssh` when
/// unset: how an operator gives it a key or a known_hosts file of its own), with the group's
/// options. BatchMode: a missing key fails at once instead of waiting on a password prompt
/// nobody sees. Host keys are checked as the deploy user's `known_hosts` says; nothing here
/// relaxes that. The ControlPath is relative (git runs in [`ssh_dir`]): a socket's path may
/// not exceed 107 bytes, and `<root>/.atomdeploy/ssh/<40 hex>.<16 random>` would for any
/// deploy root longer than about 33 characters. The masters are closed by
/// [`close_connections`] when the group operation ends; ControlPersist only bounds one
/// whose hook was killed, and is long enough for a slow `release:` between prepare and switch.
pub fn ssh_command(plan: &Plan) -> String {
    let base = git2::Repository::open_bare(&plan.config.repository)
        .and_then(|repo| repo.config()?.get_string("core.sshCommand"))
        .unwrap_or_else(|_| "ssh".to_string());
    with_group_options(&base)
}

fn with_group_options(base: &str) -> String {
    format!(
        "{base} -o BatchMode=yes -o ControlMaster=auto -o ControlPath=%C -o ControlPersist=1800"
    )
}

/// Ends every ssh ControlMaster a group operation opened (`ssh -O exit`): they would outlive
/// the hook by ControlPersist, each holding a session on its host, and the run marker cannot
/// find them (ssh's process title overwrites its environment).
pub fn close_connections(layout: &Layout) {
    let dir = ssh_dir(layout);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let socket = entry.file_name();
        let _ = child::command("ssh", &dir)
            .arg("-o")
            .arg(format!("ControlPath={}", socket.to_string_lossy()))
            .args(["-O", "exit", "atomdeploy-host"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `git push --porcelain <host> <commit>:<dst>` from the primary's bare repository, through
/// [`child`] (the run's marker, killed with all it started after `host_timeout`), each line
/// relayed.
pub fn push(
    plan: &Plan,
    host: &Host,
    commit: &str,
    dst: &str,
    reporter: &Reporter,
    on_protocol: &(dyn Fn(&GroupLine) + Sync),
) -> Pushed {
    let layout = &plan.layout;
    if let Err(err) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ssh_dir(layout))
    {
        return Pushed {
            lines: Vec::new(),
            errors: Vec::new(),
            result: Err(anyhow!(err).context("cannot create .atomdeploy/ssh/")),
        };
    }
    // child::command drops the hook's GIT_* variables: GIT_DIR and the push's
    // GIT_QUARANTINE_PATH would otherwise point this git at the wrong repository.
    // In ssh_dir: the ControlPath is relative to it (see ssh_command).
    let mut cmd = child::command("git", &ssh_dir(layout));
    cmd.arg("--git-dir")
        .arg(&plan.config.repository)
        .args(["push", "--porcelain", "--no-verify"]);
    if let Some(local) = local_receive_pack(plan, &host.url) {
        cmd.arg("--receive-pack")
            .arg(local.command)
            .env("SSH_ORIGINAL_COMMAND", local.original)
            // Those of whoever pushed to this primary over ssh: not the primary's.
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT");
    }
    cmd.arg("--")
        .arg(&host.url)
        .arg(format!("{commit}:{dst}"))
        .env("GIT_SSH_COMMAND", ssh_command(plan))
        // Never a prompt for a password or a passphrase: nobody is there to answer it.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let what = format!("git push to {}", host.label);
    let result = child::run_limited_lines(
        cmd,
        &what,
        Some(plan.config.host_timeout),
        reporter,
        &mut |line, shown| {
            if let Some(parsed) = relay(host, line, shown, &mut errors, reporter) {
                on_protocol(&parsed);
                lines.push(parsed);
            }
        },
    );
    Pushed {
        lines,
        errors,
        result,
    }
}

/// How the primary reaches a host that is a local path: through the same door as an ssh
/// host's forced command, `serve --group-primary` (a host takes group operations through it
/// only; see push_status.rs).
struct LocalReceivePack {
    /// For `--receive-pack`; git appends the quoted path and runs it with `sh -c`.
    command: String,
    /// What `serve` reads as the client's request, as sshd would set it.
    original: String,
}

/// None for a host reached over ssh, whose own forced command does the same.
fn local_receive_pack(plan: &Plan, url: &str) -> Option<LocalReceivePack> {
    let parsed = gix_url::parse(url.as_bytes()).ok()?;
    if parsed.scheme != gix_url::Scheme::File {
        return None;
    }
    let path = parsed.path.to_string();
    let primary = format!("the primary at {}", plan.layout.root.display());
    Some(LocalReceivePack {
        command: format!(
            "{} serve --repo {} --group-primary --pusher {}",
            sh_quote(&own_exe().to_string_lossy()),
            sh_quote(&path),
            sh_quote(&primary)
        ),
        original: format!("git-receive-pack {}", sh_quote(&path)),
    })
}

/// This very binary: the host's hook is the same program, in the same place.
fn own_exe() -> PathBuf {
    #[cfg(test)]
    if let Some(exe) = tests::OWN_EXE.with(|e| e.borrow().clone()) {
        return exe;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("atomdeploy-hook"))
}

/// Quoted for sh as git's `sq_quote` does, which `serve` undoes.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Where each line of `git push` goes: protocol lines returned, the host's output shown
/// prefixed, git's porcelain report (`To …`, `=\t…`, `Done`) dropped as noise.
fn relay(
    host: &Host,
    line: &str,
    shown: bool,
    errors: &mut Vec<String>,
    reporter: &Reporter,
) -> Option<GroupLine> {
    // A host's progress bar comes as redraws ended by `\r`, all in one line: only the last
    // one is shown (relayed line by line they would pile up as `remote: remote: …`).
    let line = line
        .rsplit('\r')
        .map(str::trim_end)
        .find(|part| !part.is_empty() && *part != "remote:")
        .unwrap_or_default();
    let keep_error = |errors: &mut Vec<String>, text: &str| {
        if errors.len() == ERRORS_KEPT {
            errors.remove(0);
        }
        errors.push(text.to_string());
    };
    match line.strip_prefix("remote: ") {
        Some(rest) => {
            if rest.starts_with(LINE_PREFIX) {
                return GroupLine::parse(rest);
            }
            if let Some(error) = rest.strip_prefix("error: ") {
                keep_error(errors, error.trim_start());
            }
            if shown {
                reporter.line(&format!("{}: {rest}", host.label));
            }
        }
        None => {
            let porcelain = line.starts_with("To ")
                || line == "Done"
                || line.starts_with(['=', '*', '+', '-', '!', ' ']) && line.contains('\t');
            if porcelain {
                return None;
            }
            if let Some(error) = line
                .strip_prefix("fatal: ")
                .or_else(|| line.strip_prefix("error: "))
                .or_else(|| line.strip_prefix("ssh: "))
            {
                keep_error(errors, error);
            }
            if shown && !line.is_empty() {
                reporter.line(&format!("{}: {line}", host.label));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Stands in for atomdeploy-hook in a unit test, whose own executable is the test
        /// runner.
        pub(super) static OWN_EXE: std::cell::RefCell<Option<PathBuf>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn labels_name_the_host_and_tell_equal_ones_apart() {
        let urls = [
            "deploy@web2.internal:/srv/app.git",
            "ssh://deploy@10.0.0.3:2222/srv/app.git",
            "/tmp/x/web4.git",
            "/tmp/x/web5/repo.git",
            "a@db.one:/x.git",
            "a@db.two:/x.git",
        ]
        .map(String::from);
        let labels: Vec<String> = Host::all(&urls).into_iter().map(|h| h.label).collect();
        assert_eq!(
            labels,
            ["web2", "10.0.0.3", "web4", "web5", "host5", "host6"]
        );
    }

    #[test]
    fn the_ssh_command_reuses_connections_and_checks_host_keys() {
        let ssh = with_group_options("ssh");
        assert_eq!(
            ssh,
            "ssh -o BatchMode=yes -o ControlMaster=auto -o ControlPath=%C -o ControlPersist=1800"
        );
        assert!(!ssh.contains("StrictHostKeyChecking") && !ssh.contains("KnownHosts"));
        // An operator's core.sshCommand (a key, a known_hosts of its own) comes first.
        assert!(
            with_group_options("ssh -i /etc/atomdeploy/key")
                .starts_with("ssh -i /etc/atomdeploy/key -o BatchMode=yes ")
        );
    }

    /// A real `git push` into a real bare repository whose post-receive hook speaks the
    /// protocol and fails, as a host would.
    #[test]
    fn a_push_relays_the_hosts_lines_prefixed_and_keeps_protocol_and_error_lines() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q", "--bare", "primary.git"]);
        git(&["init", "-q", "--bare", "web2.git"]);
        git(&["init", "-q", "work"]);
        git(&[
            "-C",
            "work",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "one",
        ]);
        git(&[
            "-C",
            "work",
            "push",
            "-q",
            "../primary.git",
            "HEAD:refs/heads/main",
        ]);
        let commit = git(&["-C", "work", "rev-parse", "HEAD"]).trim().to_string();
        let hook = dir.path().join("web2.git/hooks/post-receive");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho \"==> composer\"\necho \"ssh=$GIT_SSH_COMMAND\"\n\
             echo \"atomdeploy-group: prepared g1 20261126-101501 $(cut -d' ' -f2)\"\n\
             echo 'error: composer failed' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // A local host is reached through `serve --group-primary`: this stands in for it.
        let serve = dir.path().join("serve");
        std::fs::write(
            &serve,
            "#!/bin/sh\n[ \"$1 $2 $4 $7\" = \"serve --repo --group-primary $3\" ] \
             && [ \"$SSH_ORIGINAL_COMMAND\" = \"git-receive-pack '$3'\" ] \
             || { echo \"error: not through serve --group-primary: $*\" >&2; exit 1; }\n\
             exec git receive-pack \"$3\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&serve, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        OWN_EXE.with(|e| *e.borrow_mut() = Some(serve));
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(".atomdeploy")).unwrap();
        let config = crate::config::parse(
            "repository: ../primary.git\nhosts: [../web2.git]\nhost_timeout: 60\n",
            Path::new("deploy.yml"),
            &root,
        )
        .unwrap();
        let plan = Plan {
            layout: Layout::new(&root),
            config,
        };
        let host = &Host::all(&plan.config.hosts)[0];
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let seen = std::sync::Mutex::new(Vec::new());
        let pushed = push(
            &plan,
            host,
            &commit,
            "refs/atomdeploy/group/g1/prepare/0",
            &reporter,
            &|line| seen.lock().unwrap().push(line.clone()),
        );
        pushed.result.unwrap();
        let prepared = GroupLine::Prepared {
            gid: "g1".into(),
            build: "20261126-101501".into(),
            commit: commit.clone(),
        };
        assert_eq!(pushed.lines, std::slice::from_ref(&prepared));
        assert_eq!(*seen.lock().unwrap(), [prepared]);
        assert_eq!(pushed.errors, ["composer failed"]);
        let shown = reporter.transcript();
        assert!(shown.contains("web2: ==> composer\n"), "{shown}");
        assert!(shown.contains("web2: ssh=ssh -o BatchMode=yes"), "{shown}");
        assert!(!shown.contains("atomdeploy-group"), "{shown}");
        assert!(root.join(".atomdeploy/ssh").is_dir());
    }

    #[test]
    fn a_hosts_progress_bar_is_shown_once_and_a_protocol_line_after_it_is_read() {
        let host = &Host::all(&["../web2.git".to_string()])[0];
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let mut errors = Vec::new();
        let bar = "remote: checking out [#  ] 1/3\rremote: checking out [###] 3/3\rremote: \r";
        assert_eq!(relay(host, bar, true, &mut errors, &reporter), None);
        let shown = reporter.transcript();
        assert_eq!(shown.matches("checking out").count(), 1, "{shown}");
        assert!(shown.contains("web2: checking out [###] 3/3"), "{shown}");
        assert!(!shown.contains("remote:"), "{shown}");
        let line = format!("remote: snapshot [##] 2/2\rremote: {LINE_PREFIX}aborted g1");
        assert_eq!(
            relay(host, &line, true, &mut errors, &reporter),
            Some(GroupLine::Aborted { gid: "g1".into() })
        );
    }
}
