//! One `git push` from the primary to one host of the group: the only way the primary talks to
//! a host, so that an account restricted to `git-shell` is enough on the host.
//!
//! The host's output comes back as `remote: ` lines on git's stderr: each is shown to the
//! pusher prefixed with the host's label (`web2: ==> composer`), its control characters
//! removed, except the protocol lines (`atomdeploy-group: …`), which are kept for the primary
//! to read.
//!
//! A host is not trusted to behave: one that never answers is named to the pusher within
//! seconds and given up after a bound; one that floods is relayed a bounded number of lines
//! and kept a few protocol lines of each kind; every ssh connection is a child of this process
//! and ends with it.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::infra::child;
use crate::infra::quote::sh_quote;
use crate::infra::report::Reporter;
use crate::receive::group::excluded;
use crate::state::plan::{Layout, Plan};

pub(crate) use crate::receive::group::Line as GroupLine;
use crate::receive::group::{GroupRef, LINE_PREFIX, Op};

/// Lines of a host's errors kept for the primary's report.
const ERRORS_KEPT: usize = 3;
/// Characters of one error line kept: a host's line may be up to a MiB long.
const ERROR_CHARS: usize = 400;
/// Protocol lines kept of each kind per push: a host prints one or two; a host that prints
/// thousands must not grow the primary's memory with them.
const LINES_KEPT: usize = 4;

/// How long ssh may take to connect (TCP and the server's banner): a host that accepts the
/// connection and never answers is given up after this, not after `host_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// ssh's keepalives once connected: a host gone silent (power cut, a dropped route) ends
/// the connection after ALIVE_INTERVAL × ALIVE_COUNT seconds.
const ALIVE_INTERVAL: u64 = 5;
const ALIVE_COUNT: u64 = 3;
/// The bound of a quick question (`status`), and of every later push of an operation to a
/// host that already did not answer in it (its abort, its restore).
const QUICK_LIMIT: Duration = Duration::from_secs(15);
const QUICK_CONNECT: Duration = Duration::from_secs(5);
/// Silence after which the pusher is told which host the push waits for; told again after
/// three times as long, and so on.
const QUIET: Duration = Duration::from_secs(10);

/// A host of the group as the primary reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// As deploy.yml lists it (local paths made absolute); what `git push` is given.
    pub(crate) url: String,
    /// Short, for prefixing its lines: `web2` for `deploy@web2.internal:/srv/app.git`.
    pub(crate) label: String,
}

impl Host {
    /// The hosts of `urls`, each with a label of its own.
    pub(crate) fn all(urls: &[String]) -> Vec<Host> {
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
pub(crate) struct Pushed {
    /// The protocol lines, in order (the first few of each kind).
    pub(crate) lines: Vec<GroupLine>,
    /// The host's last `error:` lines.
    pub(crate) errors: Vec<String>,
    /// git's own last `fatal:` and `error:` lines (a host never reached, a connection lost).
    pub(crate) transport: Vec<String>,
    /// What ssh said was wrong (`Permission denied (publickey).`), if it did.
    pub(crate) ssh: Option<String>,
    /// The push was given up (its bound passed, or the host was excluded meanwhile): its
    /// result says so better than what git printed as it was killed.
    pub(crate) gave_up: bool,
    /// Whether `git push` itself succeeded.
    pub(crate) result: Result<()>,
}

impl Pushed {
    /// Why the host did not answer as asked: its own error, else ssh's reason, else git's,
    /// else `missing`.
    pub(crate) fn why(&self, missing: &str) -> String {
        if !self.errors.is_empty() {
            return self.errors.join("; ");
        }
        if let Some(ssh) = &self.ssh {
            return ssh.clone();
        }
        if let (true, Err(err)) = (self.gave_up, &self.result) {
            return format!("{err:#}");
        }
        if !self.transport.is_empty() {
            return self.transport.join("; ");
        }
        match &self.result {
            Err(err) => format!("{err:#}"),
            Ok(()) => missing.to_string(),
        }
    }

    fn failed(err: anyhow::Error, ssh: Option<String>) -> Pushed {
        Pushed {
            lines: Vec::new(),
            errors: Vec::new(),
            transport: Vec::new(),
            ssh,
            gave_up: false,
            result: Err(err),
        }
    }
}

/// The directory of the ssh ControlMaster sockets: `<pid>/<host>`, one per host for each
/// process that talks to hosts. The prepare's connection is still open at the switch, so that
/// the switches start together instead of each waiting for an ssh handshake.
pub(crate) fn ssh_dir(layout: &Layout) -> PathBuf {
    layout.state.join("ssh")
}

/// The primary repository's `core.sshCommand`, `ssh` when unset: how an operator gives it a
/// key or a known_hosts file of its own.
fn base_ssh(plan: &Plan) -> String {
    git2::Repository::open_bare(&plan.config.repository)
        .and_then(|repo| repo.config()?.get_string("core.sshCommand"))
        .unwrap_or_else(|_| "ssh".to_string())
}

/// `GIT_SSH_COMMAND` for one push: [`base_ssh`] with the group's options, going through the
/// ControlMaster at `socket` (relative to [`ssh_dir`], where git runs) that
/// [`connect_master`] started. BatchMode: a missing key fails at once instead of waiting on a
/// password prompt nobody sees. Host keys are checked as the deploy user's `known_hosts`
/// says; nothing here relaxes that. The ControlPath is relative: a socket's path may not
/// exceed 107 bytes, and one under a deploy root of any length could.
pub(crate) fn ssh_command(plan: &Plan, socket: Option<&str>, connect: Duration) -> String {
    with_group_options(&base_ssh(plan), socket, connect)
}

fn with_group_options(base: &str, socket: Option<&str>, connect: Duration) -> String {
    format!(
        "{base} {} -o ControlMaster=no -o ControlPath={}",
        ssh_options(connect).join(" "),
        socket.unwrap_or("none")
    )
}

/// What bounds every ssh connection to a host: never a prompt, a connection given up after
/// `connect`, a silent connection after 15 s.
fn ssh_options(connect: Duration) -> Vec<String> {
    [
        "BatchMode=yes".to_string(),
        format!("ConnectTimeout={}", connect.as_secs().max(1)),
        format!("ServerAliveInterval={ALIVE_INTERVAL}"),
        format!("ServerAliveCountMax={ALIVE_COUNT}"),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// An ssh ControlMaster this process started (`ssh -M -N`, in the foreground): a child of the
/// keeper thread, killed by [`close_connections`] or, should this process die first, by the
/// kernel (PR_SET_PDEATHSIG of [`child::command`]).
struct Master {
    child: Child,
    /// What it printed on stderr (its last lines): why it could not connect.
    said: Arc<Mutex<Vec<String>>>,
}

/// This process's masters, by socket (relative to [`ssh_dir`]).
static MASTERS: Mutex<Option<HashMap<String, Master>>> = Mutex::new(None);

/// Hosts that did not answer in a group operation (its gid, the host's URL): the
/// operation's later pushes to them get [`QUICK_LIMIT`] instead of a second `host_timeout`.
static SILENT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn is_silent(gid: &str, url: &str) -> bool {
    let silent = SILENT.lock().unwrap_or_else(|e| e.into_inner());
    silent.iter().any(|(g, u)| g == gid && u == url)
}

fn mark_silent(gid: &str, url: &str) {
    if !is_silent(gid, url) {
        let mut silent = SILENT.lock().unwrap_or_else(|e| e.into_inner());
        silent.push((gid.to_string(), url.to_string()));
    }
}

/// Spawns `cmd` on a thread that lives as long as this process: PR_SET_PDEATHSIG fires when
/// the *thread* that started a child ends, and the threads that push to hosts end with each
/// push, while a master must outlive them (prepare to switch) and die with the process.
fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    let lost = || std::io::Error::other("the thread that starts ssh is gone");
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| lost())?;
    answer.recv().map_err(|_| lost())?
}

/// `[user@]host` and port of an ssh URL; `None` for a local path.
fn ssh_target(url: &str) -> Option<(String, Option<u16>)> {
    let parsed = gix_url::parse(url.as_bytes()).ok()?;
    if parsed.scheme != gix_url::Scheme::Ssh {
        return None;
    }
    let host = parsed.host()?;
    let dest = match parsed.user() {
        Some(user) => format!("{user}@{host}"),
        None => host.to_string(),
    };
    Some((dest, parsed.port))
}

/// The socket of `url`'s master in this process, relative to [`ssh_dir`].
fn socket_name(url: &str) -> String {
    format!(
        "{}/{:016x}",
        std::process::id(),
        xxhash_rust::xxh3::xxh3_64(url.as_bytes())
    )
}

/// Starts the ControlMaster to `host` unless one of this process already runs, and waits until
/// it is connected. Returns its socket, or ssh's reason why it could not connect.
fn connect_master(
    plan: &Plan,
    host: &Host,
    (dest, port): (String, Option<u16>),
    connect: Duration,
    waiting: &mut Waiting,
) -> Result<String, (String, Option<String>)> {
    let dir = ssh_dir(&plan.layout);
    let name = socket_name(&host.url);
    let socket = dir.join(&name);
    {
        let mut masters = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
        let masters = masters.get_or_insert_with(HashMap::new);
        if let Some(master) = masters.get_mut(&name) {
            if matches!(master.child.try_wait(), Ok(None)) && socket.exists() {
                return Ok(name);
            }
            let _ = master.child.kill();
            let _ = master.child.wait();
            masters.remove(&name);
        }
        let own = socket.parent().unwrap_or(&dir);
        if let Err(err) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(own)
        {
            return Err((format!("cannot create {}: {err}", own.display()), None));
        }
        // A socket a killed process with this pid left: ssh would refuse to listen on it.
        let _ = std::fs::remove_file(&socket);
        let mut cmd = child::command("sh", &dir);
        cmd.arg("-c")
            .arg(format!("exec {} \"$@\"", base_ssh(plan)))
            .arg("ssh")
            .args(ssh_options(connect))
            .args(["-M", "-N", "-o", "ControlPersist=no", "-o"])
            .arg(format!("ControlPath={name}"));
        if let Some(port) = port {
            cmd.arg("-p").arg(port.to_string());
        }
        cmd.arg(&dest)
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match spawn_kept(cmd) {
            Ok(child) => child,
            Err(err) => return Err((format!("cannot start ssh: {err}"), None)),
        };
        let said = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            keep_said(stderr, Arc::clone(&said));
        }
        masters.insert(name.clone(), Master { child, said });
    }
    wait_for_master(&name, &socket, waiting)
}

/// Keeps the last lines a master prints on stderr, each shortened and made printable.
fn keep_said(stderr: impl std::io::Read + Send + 'static, said: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            let text = shorten(child::printable(text.trim()).trim());
            if text.is_empty() {
                continue;
            }
            let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
            if said.len() == 20 {
                said.remove(0);
            }
            said.push(text);
        }
    });
}

/// Polls until the master's socket is there (it is made once ssh has logged in), the master
/// has exited (it could not connect: ssh's reason), or the push's bound has passed.
fn wait_for_master(
    name: &str,
    socket: &Path,
    waiting: &mut Waiting,
) -> Result<String, (String, Option<String>)> {
    let started = Instant::now();
    let mut next_tick = started + child::TICK;
    loop {
        if socket.exists() {
            return Ok(name.to_string());
        }
        let exited = {
            let mut masters = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
            let master = masters.as_mut().and_then(|m| m.get_mut(name));
            match master {
                None => Some((None, Vec::new())),
                Some(master) => match master.child.try_wait() {
                    Ok(None) => None,
                    status => {
                        let said = master.said.lock().unwrap_or_else(|e| e.into_inner());
                        Some((status.ok().flatten(), said.clone()))
                    }
                },
            }
        };
        if let Some((status, said)) = exited {
            // The reader may not have read the last words yet: give it a moment.
            let said = if said.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                master_said(name)
            } else {
                said
            };
            let reason = ssh_reason(&said).or_else(|| said.last().cloned());
            let status = status.map_or_else(String::new, |s| format!(" ({s})"));
            return Err((format!("ssh could not connect{status}"), reason));
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + child::TICK;
            if let Some(why) = waiting.tick(now - started) {
                stop_master(name);
                return Err((why, None));
            }
        }
        if now - waiting.started >= waiting.limit {
            stop_master(name);
            let why = format!("no answer within {}s", waiting.limit.as_secs());
            return Err((why, None));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn master_said(name: &str) -> Vec<String> {
    let masters = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
    masters
        .as_ref()
        .and_then(|m| m.get(name))
        .map(|m| m.said.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

fn stop_master(name: &str) {
    let mut masters = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut master) = masters.as_mut().and_then(|m| m.remove(name)) {
        let _ = master.child.kill();
        let _ = master.child.wait();
    }
}

/// The line of ssh's that says what went wrong, among what it printed: the one a person
/// needs, where git would only say it "could not read from remote repository".
fn ssh_reason(lines: &[String]) -> Option<String> {
    const REASONS: &[&str] = &[
        "Host key verification failed",
        "Permission denied",
        "Connection timed out",
        "Connection refused",
        "Could not resolve hostname",
        "No route to host",
        "Network is unreachable",
        "timed out",
        "not responding",
        "Connection reset",
        "Connection closed",
        "Broken pipe",
    ];
    REASONS.iter().find_map(|reason| {
        lines
            .iter()
            .find(|line| line.contains(reason))
            .map(|line| line.trim_start_matches("ssh: ").to_string())
    })
}

/// Ends every ssh ControlMaster this process opened, and removes their sockets (with those a
/// process killed before it could left). Called when a group operation, or `hosts`, ends: no
/// connection to a host outlives the command that opened it, so a key taken off a host's
/// `authorized_keys` stops working at once.
pub(crate) fn close_connections(layout: &Layout) {
    let masters = MASTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    for (_, mut master) in masters {
        let _ = master.child.kill();
        let _ = master.child.wait();
    }
    let dir = ssh_dir(layout);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            exit_old_master(&dir, &entry);
            continue;
        };
        // kill(2) with no signal only asks whether the process exists.
        let gone = pid != me
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err();
        if pid == me || gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A socket of a master that an earlier version left to ControlPersist (`<ssh_dir>/<%C>`):
/// asked to exit, so that it does not keep its session, and a removed key working, for up to
/// half an hour after an upgrade.
fn exit_old_master(dir: &Path, entry: &std::fs::DirEntry) {
    use std::os::unix::fs::FileTypeExt;
    if !entry.file_type().is_ok_and(|t| t.is_socket()) {
        return;
    }
    let _ = child::command("ssh", dir)
        .arg("-o")
        .arg(format!(
            "ControlPath={}",
            entry.file_name().to_string_lossy()
        ))
        .args(["-O", "exit", "atomdeploy-host"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One push's waiting on its host: tells the pusher which host it waits for, and gives the
/// host up once it has been excluded meanwhile.
struct Waiting<'a> {
    plan: &'a Plan,
    host: &'a Host,
    reporter: &'a Reporter,
    started: Instant,
    limit: Duration,
    next_warning: Duration,
    /// Excluded when the push started (`hosts include` brings such a host back): an
    /// exclusion made later means nobody waits for it any more.
    excluded_before: bool,
    stopped: bool,
}

impl<'a> Waiting<'a> {
    fn new(plan: &'a Plan, host: &'a Host, limit: Duration, reporter: &'a Reporter) -> Self {
        Waiting {
            plan,
            host,
            reporter,
            started: Instant::now(),
            limit,
            next_warning: QUIET,
            excluded_before: is_excluded(plan, host),
            stopped: false,
        }
    }

    /// Every second of the push, with how long the host has said nothing: `Some(why)` to stop
    /// waiting for it.
    fn tick(&mut self, quiet: Duration) -> Option<String> {
        if quiet >= self.next_warning {
            let label = &self.host.label;
            self.reporter.warn(&format!(
                "{label}: no answer for {} s; waiting up to {} s (`atomdeploy-hook hosts exclude \
                 {label} --reason \"…\"` stops waiting for it)",
                quiet.as_secs(),
                self.limit.as_secs()
            ));
            self.next_warning = quiet * 3;
        }
        if !self.excluded_before && is_excluded(self.plan, self.host) {
            self.stopped = true;
            return Some(format!(
                "{} was left out by `atomdeploy-hook hosts exclude` meanwhile",
                self.host.label
            ));
        }
        None
    }
}

fn is_excluded(plan: &Plan, host: &Host) -> bool {
    excluded::read(&plan.layout).is_ok_and(|list| list.iter().any(|e| e.url == host.url))
}

/// `git push --porcelain <host> <commit>:<dst>` from the primary's bare repository, through
/// [`child`] (the run's marker, killed with all it started once its bound has passed), each
/// line relayed. Over ssh, through a ControlMaster of this process (see [`connect_master`]).
///
/// The bound is `host_timeout`; a `status`, and a push to a host that already did not answer
/// in this operation, get [`QUICK_LIMIT`].
pub(crate) fn push(
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
        return Pushed::failed(anyhow!(err).context("cannot create .atomdeploy/ssh/"), None);
    }
    let group_ref = GroupRef::parse(dst.as_bytes()).ok();
    let gid = group_ref.as_ref().map(|r| r.gid.as_str());
    let quick = group_ref.as_ref().is_some_and(|r| r.op == Op::Status)
        || gid.is_some_and(|gid| is_silent(gid, &host.url));
    let (limit, connect) = if quick {
        (plan.config.host_timeout.min(QUICK_LIMIT), QUICK_CONNECT)
    } else {
        (plan.config.host_timeout, CONNECT_TIMEOUT)
    };
    let mut waiting = Waiting::new(plan, host, limit, reporter);
    let socket = match ssh_target(&host.url) {
        None => None,
        Some(target) => match connect_master(plan, host, target, connect, &mut waiting) {
            Ok(socket) => Some(socket),
            Err((why, ssh)) => {
                if let Some(gid) = gid {
                    mark_silent(gid, &host.url);
                }
                let what = format!("cannot reach {}: {why}", host.label);
                let mut pushed = Pushed::failed(anyhow!(what), ssh);
                pushed.gave_up = true;
                return pushed;
            }
        },
    };
    let cmd = push_command(
        plan,
        host,
        &format!("{commit}:{dst}"),
        socket.as_deref(),
        connect,
    );
    let mut kept = Kept {
        gid: gid.map(str::to_string),
        ..Kept::default()
    };
    let what = format!("git push to {}", host.label);
    let watch = child::Watch {
        limit: Some(limit),
        since: waiting.started,
        max_line: child::MAX_LONG_LINE,
        on_tick: &mut |quiet| waiting.tick(quiet),
    };
    let result = child::run_watched(cmd, &what, watch, reporter, &mut |line, shown| {
        if let Some(parsed) = relay(host, line, shown, &mut kept, reporter)
            && kept.keep(&parsed)
        {
            on_protocol(&parsed);
        }
    });
    let gave_up = waiting.stopped || waiting.started.elapsed() >= limit;
    let ssh = ssh_reason(&kept.other);
    if result.is_err()
        && (gave_up || ssh.is_some())
        && let Some(gid) = gid
    {
        mark_silent(gid, &host.url);
    }
    if kept.dropped > 0 {
        reporter.warn(&format!(
            "{}: {} protocol lines past the first {LINES_KEPT} of each kind were ignored \
             (a host prints one or two)",
            host.label, kept.dropped
        ));
    }
    if kept.foreign > 0 {
        reporter.warn(&format!(
            "{}: {} protocol lines of another group operation were ignored",
            host.label, kept.foreign
        ));
    }
    Pushed {
        lines: kept.lines,
        errors: kept.errors,
        transport: kept.transport,
        ssh,
        gave_up,
        result,
    }
}

/// The `git push` of `refspec` to `host`, from the primary's bare repository.
fn push_command(
    plan: &Plan,
    host: &Host,
    refspec: &str,
    socket: Option<&str>,
    connect: Duration,
) -> Command {
    // child::command drops the hook's GIT_* variables: GIT_DIR and the push's
    // GIT_QUARANTINE_PATH would otherwise point this git at the wrong repository.
    // In ssh_dir: the ControlPath is relative to it (see ssh_command).
    let mut cmd = child::command("git", &ssh_dir(&plan.layout));
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
        .arg(refspec)
        .env("GIT_SSH_COMMAND", ssh_command(plan, socket, connect))
        // Never a prompt for a password or a passphrase: nobody is there to answer it.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    cmd
}

/// How the primary reaches a host that is a local path: through the same door as an ssh
/// host's forced command, `serve --group-primary` (a host takes group operations through it
/// only; see commands/serve.rs).
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

/// What the primary keeps of one push's lines, all bounded.
#[derive(Default)]
struct Kept {
    /// The group operation the push is part of: only its protocol lines are kept.
    gid: Option<String>,
    lines: Vec<GroupLine>,
    /// Protocol lines past [`LINES_KEPT`] of their kind.
    dropped: usize,
    /// Protocol lines of another group operation.
    foreign: usize,
    errors: Vec<String>,
    transport: Vec<String>,
    /// Lines neither the host's nor git's: ssh's.
    other: Vec<String>,
}

impl Kept {
    /// Keeps `line` unless it is another operation's, or [`LINES_KEPT`] of its kind are kept
    /// already; whether it kept it. Lines of another operation count for nothing: kept, they
    /// would take the places of this operation's own and hide them.
    fn keep(&mut self, line: &GroupLine) -> bool {
        if let (Some(ours), Some(theirs)) = (&self.gid, line_gid(line))
            && ours != theirs
        {
            self.foreign += 1;
            return false;
        }
        let kind = std::mem::discriminant(line);
        let same = self
            .lines
            .iter()
            .filter(|l| std::mem::discriminant(*l) == kind)
            .count();
        if same >= LINES_KEPT {
            self.dropped += 1;
            return false;
        }
        self.lines.push(line.clone());
        true
    }
}

/// The group operation a protocol line is about; `None` for those of no operation (`status`,
/// `config`).
fn line_gid(line: &GroupLine) -> Option<&str> {
    match line {
        GroupLine::Prepared { gid, .. }
        | GroupLine::Switched { gid, .. }
        | GroupLine::Unhealthy { gid, .. }
        | GroupLine::Restored { gid, .. }
        | GroupLine::Aborted { gid }
        | GroupLine::Live { gid, .. }
        | GroupLine::Ended { gid, .. } => Some(gid),
        GroupLine::Status(_) | GroupLine::Config(_) => None,
    }
}

/// The last [`ERRORS_KEPT`] of a kind of line, each cut to [`ERROR_CHARS`].
fn keep_last(list: &mut Vec<String>, text: &str) {
    if list.len() == ERRORS_KEPT {
        list.remove(0);
    }
    list.push(shorten(text));
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// At most `max` bytes of `text`, cut at a character.
fn cut_at(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    &text[..at]
}

/// A protocol line's text that came from JSON (where `\u001b` is an escape) made printable:
/// it reaches the pusher's terminal in errors and in `hosts`.
fn defang(line: GroupLine) -> GroupLine {
    let clean = |s: &str| child::printable(s).into_owned();
    match line {
        GroupLine::Status(mut status) => {
            status.build = status.build.as_deref().map(clean);
            status.commit = status.commit.as_deref().map(clean);
            status.fingerprint = clean(&status.fingerprint);
            status.version = clean(&status.version);
            status.config = defang_json(status.config);
            GroupLine::Status(status)
        }
        GroupLine::Config(config) => GroupLine::Config(defang_json(config)),
        other => other,
    }
}

fn defang_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(child::printable(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(defang_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (child::printable(&k).into_owned(), defang_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Where each line of `git push` goes: protocol lines returned, the host's output shown
/// prefixed and made printable, git's porcelain report (`To …`, `=\t…`, `Done`) dropped as
/// noise.
fn relay(
    host: &Host,
    line: &str,
    shown: bool,
    kept: &mut Kept,
    reporter: &Reporter,
) -> Option<GroupLine> {
    // A host's progress bar comes as redraws ended by `\r`, all in one line: only the last
    // one is shown (relayed line by line they would pile up as `remote: remote: …`).
    let line = line
        .rsplit('\r')
        .map(str::trim_end)
        .find(|part| !part.is_empty() && *part != "remote:")
        .unwrap_or_default();
    // git's clear-to-end-of-line after a `remote:` line, then every control character.
    let line = line.strip_suffix("\x1b[K").unwrap_or(line).trim_end();
    let line = child::printable(line);
    if let Some(protocol) = line
        .strip_prefix("remote: ")
        .filter(|rest| rest.starts_with(LINE_PREFIX))
    {
        return GroupLine::parse(protocol).map(defang);
    }
    // Read whole for the protocol lines; anything else is shown as long as a command's line.
    let line = cut_at(&line, child::MAX_LINE);
    match line.strip_prefix("remote: ") {
        Some(rest) => {
            if let Some(error) = rest.strip_prefix("error: ") {
                keep_last(&mut kept.errors, error.trim_start());
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
            match line
                .strip_prefix("fatal: ")
                .or_else(|| line.strip_prefix("error: "))
            {
                Some(error) => keep_last(&mut kept.transport, error),
                None if !line.is_empty() && kept.other.len() < 20 => {
                    kept.other.push(shorten(line));
                }
                None => {}
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
    fn the_ssh_command_is_bounded_goes_through_the_master_and_checks_host_keys() {
        let ssh = with_group_options("ssh", Some("123/00ff"), Duration::from_secs(15));
        assert_eq!(
            ssh,
            "ssh -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=5 \
             -o ServerAliveCountMax=3 -o ControlMaster=no -o ControlPath=123/00ff"
        );
        assert!(!ssh.contains("StrictHostKeyChecking") && !ssh.contains("KnownHosts"));
        // Never a master of its own, which ControlPersist would keep after this process.
        assert!(!ssh.contains("ControlPersist"));
        // An operator's core.sshCommand (a key, a known_hosts of its own) comes first.
        assert!(
            with_group_options("ssh -i /etc/atomdeploy/key", None, QUICK_CONNECT)
                .starts_with("ssh -i /etc/atomdeploy/key -o BatchMode=yes ")
        );
        assert_eq!(socket_name("x").split('/').count(), 2);
    }

    #[test]
    fn ssh_says_why_where_git_would_not() {
        let said =
            |lines: &[&str]| ssh_reason(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        assert_eq!(
            said(&[
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                "Host key verification failed."
            ])
            .as_deref(),
            Some("Host key verification failed.")
        );
        assert_eq!(
            said(&["root@127.0.0.2: Permission denied (publickey)."]).as_deref(),
            Some("root@127.0.0.2: Permission denied (publickey).")
        );
        assert_eq!(
            said(&["ssh: connect to host 127.0.0.2 port 1: Connection refused"]).as_deref(),
            Some("connect to host 127.0.0.2 port 1: Connection refused")
        );
        assert_eq!(
            said(&["Connection timed out during banner exchange"]).as_deref(),
            Some("Connection timed out during banner exchange")
        );
        assert_eq!(said(&["Everything up-to-date"]), None);
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
        pushed.result.as_ref().unwrap();
        let prepared = GroupLine::Prepared {
            gid: "g1".into(),
            build: "20261126-101501".into(),
            commit: commit.clone(),
        };
        assert_eq!(pushed.lines, std::slice::from_ref(&prepared));
        assert_eq!(*seen.lock().unwrap(), [prepared]);
        assert_eq!(pushed.errors, ["composer failed"]);
        assert_eq!(pushed.why("?"), "composer failed");
        let shown = reporter.transcript();
        assert!(shown.contains("web2: ==> composer\n"), "{shown}");
        assert!(shown.contains("web2: ssh=ssh -o BatchMode=yes"), "{shown}");
        assert!(shown.contains("ControlPath=none"), "{shown}");
        assert!(!shown.contains("atomdeploy-group"), "{shown}");
        assert!(root.join(".atomdeploy/ssh").is_dir());
    }

    #[test]
    fn a_hosts_progress_bar_is_shown_once_and_a_protocol_line_after_it_is_read() {
        let host = &Host::all(&["../web2.git".to_string()])[0];
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let mut kept = Kept::default();
        let bar = "remote: checking out [#  ] 1/3\rremote: checking out [###] 3/3\rremote: \r";
        assert_eq!(relay(host, bar, true, &mut kept, &reporter), None);
        let shown = reporter.transcript();
        assert_eq!(shown.matches("checking out").count(), 1, "{shown}");
        assert!(shown.contains("web2: checking out [###] 3/3"), "{shown}");
        assert!(!shown.contains("remote:"), "{shown}");
        let line = format!("remote: snapshot [##] 2/2\rremote: {LINE_PREFIX}aborted g1");
        assert_eq!(
            relay(host, &line, true, &mut kept, &reporter),
            Some(GroupLine::Aborted { gid: "g1".into() })
        );
    }

    /// Every control character a host could send (C0, DEL, C1) is taken out of what reaches
    /// the pusher, generated rather than listed; git's own `ESC[K` still ends a protocol line.
    #[test]
    fn no_control_character_of_a_host_reaches_the_pusher() {
        let host = &Host::all(&["../web2.git".to_string()])[0];
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let mut kept = Kept::default();
        let controls = (0u32..0x20)
            .chain(0x7f..0xa0)
            .filter(|c| !matches!(c, 0x09 | 0x0a | 0x0d))
            .filter_map(char::from_u32);
        for c in controls {
            let line = format!("remote: a{c}]0;owned{c}[2J b\x1b[K");
            assert_eq!(relay(host, &line, true, &mut kept, &reporter), None);
            let line = format!("remote: error: bad{c}\x07");
            relay(host, &line, true, &mut kept, &reporter);
        }
        let shown = reporter.transcript();
        assert!(
            shown
                .chars()
                .all(|c| c == '\n' || c == '\t' || !c.is_control()),
            "{shown:?}"
        );
        assert!(shown.contains("web2: a]0;owned[2J b\n"), "{shown:?}");
        assert!(kept.errors.iter().all(|e| e == "bad"), "{:?}", kept.errors);
        let status = format!(
            "remote: {LINE_PREFIX}status {{\"build\":\"x\\u001b[2J\",\"commit\":null,\"bad\":false,\
             \"fingerprint\":\"f\",\"config\":{{\"k\\u0007\":\"v\\u009b\"}},\"version\":\"1\"}}\x1b[K"
        );
        let Some(GroupLine::Status(status)) = relay(host, &status, true, &mut kept, &reporter)
        else {
            panic!("not read: {status}");
        };
        assert_eq!(status.build.as_deref(), Some("x[2J"));
        assert_eq!(status.config, serde_json::json!({"k": "v"}));
    }

    /// A host that floods protocol lines: the first few of each kind are kept, the rest
    /// counted; a line over a MiB long is not kept whole.
    #[test]
    fn a_flood_of_protocol_lines_keeps_a_few() {
        let host = &Host::all(&["../web2.git".to_string()])[0];
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let mut kept = Kept::default();
        for i in 0..10_000 {
            let line = format!("remote: {LINE_PREFIX}aborted g{i}");
            if let Some(parsed) = relay(host, &line, false, &mut kept, &reporter) {
                kept.keep(&parsed);
            }
            let line = format!("remote: error: {}", "x".repeat(10_000));
            relay(host, &line, false, &mut kept, &reporter);
        }
        assert_eq!(kept.lines.len(), LINES_KEPT);
        assert_eq!(kept.dropped, 10_000 - LINES_KEPT);
        assert_eq!(kept.errors.len(), ERRORS_KEPT);
        assert!(
            kept.errors
                .iter()
                .all(|e| e.chars().count() <= ERROR_CHARS + 1)
        );
    }
}
