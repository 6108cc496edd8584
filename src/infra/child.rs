//! Running the programs a deploy calls (composer, `before_switch`, `after_switch`, the health
//! check), with their output streamed to the pusher as it comes.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::infra::fault;
use crate::infra::report::Reporter;

/// How long output is still relayed after the command exited. A command that left a process
/// running in the background (`queue:work &`) leaves it holding the output pipe; the deploy
/// must not wait for it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long processes may take to die after SIGKILL before a deploy says they would not.
pub(crate) const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Lines of one command's output shown to the pusher (and kept for `log`); a command that
/// prints without end must not flood the pusher's terminal or the hook's memory.
const MAX_LINES: usize = 5000;
/// Bytes of one line shown; the rest of a longer line comes as further lines.
pub(crate) const MAX_LINE: usize = 4096;

/// The environment variable that marks every process a deploy starts, and so everything they
/// start in turn: unlike a process group or a parent, an environment survives `setsid`, double
/// forks and the death of the hook, so the next deploy can find a killed deploy's processes.
pub(crate) const RUN_VAR: &str = "ATOMDEPLOY_RUN";

/// Composer's credentials in the environment. No child gets it from the hook's environment:
/// a before_switch command, a build step or a health check that prints its environment (or
/// an `env` in a log) would show the credentials for private packages. Composer alone is
/// given them, by the composer step.
pub(crate) const COMPOSER_AUTH: &str = "COMPOSER_AUTH";

/// The marker of the run that holds the deploy lock (see lock.rs), given to every child.
static RUN: Mutex<Option<OsString>> = Mutex::new(None);

/// Sets (or, with `None`, clears) the marker children get from now on.
pub(crate) fn mark_run(marker: Option<OsString>) {
    *RUN.lock().unwrap_or_else(|e| e.into_inner()) = marker;
}

/// A command for a child: git's `GIT_*` variables of the hook are removed, so that `git`
/// run by composer scripts or deploy commands works on their own directory instead of the
/// bare repository, and nothing the pusher sent as a push option reaches them. Nor does
/// [`COMPOSER_AUTH`].
///
/// The child carries the run's marker ([`RUN_VAR`]) and dies with the thread that started it
/// (`PR_SET_PDEATHSIG`): a hook killed alone (the OOM killer, an operator's `kill -9 PID`)
/// does not leave composer or a command working on. That covers the child only, not what it
/// started; those the next deploy finds by the marker.
pub(crate) fn command(program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove(COMPOSER_AUTH);
    // The log's business, not the commands': a deploy must not run differently by pusher.
    cmd.env_remove(PUSHER_ENV);
    // A secret of this push only: no command's business, nor its output's.
    cmd.env_remove(PRIMARY_ENV);
    // The status file holds the same secret as its first line, and is the wrapper's word on
    // how the deploy went: a command must neither read the one nor write the other.
    cmd.env_remove(STATUS_ENV);
    if let Some(run) = RUN.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        // `RUN:N`, N per child: the run's marker for the next deploy, and the command's own
        // for its timeout (see [`run_limited`]).
        static CHILDREN: AtomicU32 = AtomicU32::new(0);
        let mut marker = run.clone();
        marker.push(format!(":{}", CHILDREN.fetch_add(1, Ordering::Relaxed) + 1));
        cmd.env(RUN_VAR, marker);
    }
    let parent = Pid::this();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The hook died before the signal was armed: the child would run on unwatched.
            if nix::unistd::getppid() != parent {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd
}

/// `sh -c COMMAND` in `cwd`.
pub(crate) fn shell(script: &str, cwd: &Path) -> Command {
    let mut cmd = command("sh", cwd);
    cmd.arg("-c").arg(script);
    cmd
}

enum Event {
    Line(String),
    Closed,
    Exited(std::io::Result<ExitStatus>),
}

/// Runs `cmd` to completion, each line of its stdout and stderr shown to the pusher (`what`
/// names it in errors), and kills the command and everything it started once `limit` has
/// passed: its tree of processes, and what left the tree (a double fork) but carries the
/// command's marker.
///
/// Children stay in the hook's process group, so that whoever kills that group (an SSH
/// session that drops, an operator's kill -9) stops them too and none is left working in
/// application/ while the next deploy starts.
pub(crate) fn run_limited(
    cmd: Command,
    what: &str,
    limit: Option<Duration>,
    reporter: &Reporter,
) -> Result<()> {
    run_limited_lines(cmd, what, limit, reporter, &mut |line, shown| {
        if shown {
            reporter.child_line(line);
        }
    })
}

/// [`run_limited`], each line of output handed to `on_line` instead of shown as it is (a
/// group's host: its lines are prefixed with the host, and its protocol lines kept), with
/// whether it is within the lines shown to the pusher.
pub(crate) fn run_limited_lines(
    cmd: Command,
    what: &str,
    limit: Option<Duration>,
    reporter: &Reporter,
    on_line: &mut dyn FnMut(&str, bool),
) -> Result<()> {
    let watch = Watch {
        limit,
        since: Instant::now(),
        max_line: MAX_LINE,
        on_tick: &mut |_| None,
    };
    run_watched(cmd, what, watch, reporter, on_line)
}

/// Bytes of one line a host of the group may send whole: its protocol lines are the
/// project's own, and a status with a long `before_switch` is longer than [`MAX_LINE`].
pub(crate) const MAX_LONG_LINE: usize = 1 << 20;

/// How often [`Watch::on_tick`] is called while a command runs.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// How [`run_watched`] watches a command besides its lines.
pub(crate) struct Watch<'a> {
    /// Killed once this has passed since `since`.
    pub(crate) limit: Option<Duration>,
    /// When the limit started to run: before the command, when its caller waited for
    /// something on its behalf (a connection) first.
    pub(crate) since: Instant,
    /// Bytes of one line handed over whole; the rest of a longer line comes as further lines.
    pub(crate) max_line: usize,
    /// Called every [`TICK`] while the command runs, with how long it has printed nothing;
    /// `Some(why)` kills it as its limit would (the error: "… was stopped ({why}) and killed").
    pub(crate) on_tick: &'a mut dyn FnMut(Duration) -> Option<String>,
}

/// Why a command was killed.
enum Killed {
    Limit,
    Told(String),
}

/// [`run_limited_lines`] with a say in when the command is given up (see [`Watch`]).
pub(crate) fn run_watched(
    mut cmd: Command,
    what: &str,
    watch: Watch,
    reporter: &Reporter,
    on_line: &mut dyn FnMut(&str, bool),
) -> Result<()> {
    let (pid, marker, rx) = spawn_watched(&mut cmd, what, watch.max_line)?;
    let limit = watch.limit;
    // deploy.yml bounds every limit, but an overflow must never panic a deploy: a limit past
    // what Instant can hold is no limit.
    let deadline = limit.and_then(|limit| watch.since.checked_add(limit));
    let mut status = None;
    let mut open_streams = 2;
    let mut drain_until = None;
    let mut killed: Option<Killed> = None;
    let mut lines = 0;
    let mut last_line = Instant::now();
    let mut next_tick = Instant::now() + TICK;
    // Once killed, the command gets STOP_LIMIT to be reaped: a process stuck in the kernel
    // (a hung NFS mount) would otherwise hold the deploy, and its lock, for ever.
    let mut killed_at: Option<Instant> = None;
    while status.is_none() || open_streams > 0 {
        let until = match (status.is_some(), killed_at) {
            (true, _) => drain_until,
            (false, Some(at)) => Some(at + STOP_LIMIT),
            (false, None) => Some(deadline.map_or(next_tick, |d| d.min(next_tick))),
        };
        let event = match until {
            Some(until) => match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) if status.is_some() => break,
                Err(mpsc::RecvTimeoutError::Timeout) if killed_at.is_some() => bail!(
                    "{what} {}, and has not died {}s later",
                    killed_why(killed.as_ref(), limit),
                    STOP_LIMIT.as_secs()
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let why = if deadline.is_some_and(|d| now >= d) {
                        Some(Killed::Limit)
                    } else {
                        next_tick = now + TICK;
                        (watch.on_tick)(now - last_line).map(Killed::Told)
                    };
                    if why.is_some() {
                        kill_timed_out(pid, marker.as_ref(), what, reporter);
                        killed = why;
                        killed_at = Some(now);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            Event::Line(line) => {
                lines += 1;
                last_line = Instant::now();
                on_line(&line, lines <= MAX_LINES);
                fault::point("child-output");
            }
            Event::Closed => open_streams -= 1,
            Event::Exited(result) => {
                status = Some(result.with_context(|| format!("cannot wait for {what}"))?);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
        }
    }
    if lines > MAX_LINES {
        on_line(
            &format!(
                "… {} more lines of output from {what} not shown",
                lines - MAX_LINES
            ),
            true,
        );
    }
    let status = status.with_context(|| format!("lost track of {what}"))?;
    if killed.is_some() {
        bail!("{what} {}", killed_why(killed.as_ref(), limit));
    }
    match status.code() {
        _ if status.success() => Ok(()),
        Some(code) => bail!("{what} failed with exit status {code}"),
        None => bail!("{what} was killed by a signal ({status})"),
    }
}

/// `did not finish within 3s and was killed`, or why the command was told to stop.
fn killed_why(killed: Option<&Killed>, limit: Option<Duration>) -> String {
    match killed {
        Some(Killed::Told(why)) => format!("was stopped ({why}) and killed"),
        _ => format!(
            "did not finish within {}s and was killed",
            limit.unwrap_or_default().as_secs_f64()
        ),
    }
}

/// `line` without its control characters (tab aside): what a program or a host prints must
/// not move the cursor, clear the screen, retitle the window or ring the bell of whoever
/// reads it. The C1 controls go too (U+009B is a CSI to some terminals).
pub(crate) fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if line.chars().all(|c| c == '\t' || !c.is_control()) {
        return std::borrow::Cow::Borrowed(line);
    }
    std::borrow::Cow::Owned(
        line.chars()
            .filter(|c| *c == '\t' || !c.is_control())
            .collect(),
    )
}

/// Starts `cmd` with its output piped, and threads that send its lines and its exit as
/// [`Event`]s. Returns its pid, its run marker and the events.
fn spawn_watched(
    cmd: &mut Command,
    what: &str,
    max_line: usize,
) -> Result<(i32, Option<std::ffi::OsString>, mpsc::Receiver<Event>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let pid = child.id() as i32;
    let marker = cmd
        .get_envs()
        .find(|(key, _)| *key == RUN_VAR)
        .and_then(|(_, value)| value.map(OsStr::to_os_string));
    // Bounded: a command (a host) that prints faster than its lines are relayed waits for
    // them, instead of piling its output up in the hook's memory.
    let (tx, rx) = mpsc::sync_channel(16);
    // Detached threads: a reader blocked on a pipe that a background process keeps open must
    // not keep the deploy waiting; it ends when that process closes the pipe or we exit.
    spawn_relay(child.stdout.take().expect("piped"), tx.clone(), max_line);
    spawn_relay(child.stderr.take().expect("piped"), tx.clone(), max_line);
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });
    Ok((pid, marker, rx))
}

/// A command past its limit: its tree of processes, and what carries its marker outside the
/// tree (a double fork), are killed.
fn kill_timed_out(pid: i32, marker: Option<&std::ffi::OsString>, what: &str, reporter: &Reporter) {
    kill_tree(pid);
    if let Some(marker) = marker
        && let Err(err) = stop_marked(std::slice::from_ref(marker), STOP_LIMIT)
    {
        reporter.warn(&format!("{what} timed out: {err:#}"));
    }
}

/// SIGKILLs `root` and every process descended from it. They are stopped first, so that none
/// can fork away or be re-parented while the tree is read.
fn kill_tree(root: i32) {
    let mut stopped = vec![root];
    // A pid we spawned and have not reaped.
    let _ = kill(Pid::from_raw(root), Signal::SIGSTOP);
    loop {
        let found: Vec<i32> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if found.is_empty() {
            break;
        }
        for pid in found {
            // A descendant of our own child.
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            stopped.push(pid);
        }
    }
    for pid in stopped {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Names the file a push's hook reports its outcome in: the `receive-pack` wrapper's
/// (commands/serve.rs).
pub const STATUS_ENV: &str = "ATOMDEPLOY_PUSH_STATUS";

/// Carries `serve --group-primary`'s secret to the hook (commands/serve.rs).
pub const PRIMARY_ENV: &str = "ATOMDEPLOY_GROUP_PRIMARY";

/// Carries `serve --pusher` from the forced command to the hook, which logs it.
pub(crate) const PUSHER_ENV: &str = "ATOMDEPLOY_PUSHER";

/// The parent of `pid`, from /proc/<pid>/stat (its 4th field, after the name in parentheses,
/// which may itself hold spaces and parentheses).
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Every process whose chain of parents leads to `root`, read from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(ppid) = parent_of(pid as u32) {
            parents.push((pid, ppid as i32));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree.remove(0);
    tree
}

/// Sends the stream's lines, each cut at `max_line` bytes so that output without newlines
/// cannot grow without bound in memory.
fn spawn_relay(stream: impl Read + Send + 'static, tx: mpsc::SyncSender<Event>, max_line: usize) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream).take(u64::MAX);
        let mut line = Vec::new();
        loop {
            reader.set_limit(max_line as u64);
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let _ = tx.send(Event::Line(text.trim_end_matches(['\n', '\r']).to_string()));
                    line.clear();
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// A process as /proc showed it. The start time tells it from a later process that got the
/// same pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) pid: i32,
    start: u64,
    /// Its command line, for the pusher.
    pub(crate) command: String,
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.pid, self.command)
    }
}

/// `(state, start time)` of a process from /proc/PID/stat.
fn stat_of(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses. The start time is
    // field 22, the 20th after comm.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of process `pid` (clock ticks after boot), if it runs; a zombie does not.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    stat_of(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
        .map(|(_, start)| start)
}

impl Process {
    /// Whether it has ended: no such process any more, another process with its pid, or a
    /// zombie (which runs no code; its parent may be slow to reap it).
    fn gone(&self) -> bool {
        match stat_of(self.pid) {
            Some((state, start)) => start != self.start || matches!(state, 'Z' | 'X' | 'x'),
            None => true,
        }
    }

    fn stopped(&self) -> bool {
        self.gone() || matches!(stat_of(self.pid), Some(('T' | 't', _)))
    }

    /// kill(2), unless its pid now belongs to another process.
    fn signal(&self, signal: Signal) {
        if !self.gone() {
            // A process just checked to be this one: the window in which its pid could be
            // reused is the few instructions since.
            let _ = kill(Pid::from_raw(self.pid), signal);
        }
    }
}

/// Every process but this one whose environment holds `RUN_VAR=MARKER` or `RUN_VAR=MARKER:N`
/// for one of `markers` (a run's marker finds the processes of all its commands).
/// Processes whose environment cannot be read (another user's) are not seen.
pub(crate) fn marked(markers: &[OsString]) -> Vec<Process> {
    let wanted: Vec<Vec<u8>> = markers
        .iter()
        .map(|m| [RUN_VAR.as_bytes(), b"=", m.as_bytes()].concat())
        .collect();
    let matches = |var: &[u8]| {
        wanted.iter().any(|w| {
            var.strip_prefix(w.as_slice())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b":"))
        })
    };
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(matches) {
            continue;
        }
        let Some((_, start)) = stat_of(pid) else {
            continue;
        };
        let process = Process {
            pid,
            start,
            command: command_line(pid),
        };
        if !process.gone() {
            found.push(process);
        }
    }
    found
}

fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        text = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
    }
    if text.chars().count() > 80 {
        text = text.chars().take(79).collect::<String>() + "…";
    }
    text
}

/// Stops every process marked with one of `markers`, then kills them, and waits until they
/// are gone. They are all stopped (SIGSTOP) before any is killed, and /proc is read again
/// until no new one shows, so that none can fork away meanwhile. Returns what it killed, or
/// an error naming what was still there after `limit`.
pub(crate) fn stop_marked(markers: &[OsString], limit: Duration) -> Result<Vec<Process>> {
    // A process that does not stop (in uninterruptible sleep) must leave the kill its time.
    let deadline = Instant::now() + limit / 2;
    let mut found: Vec<Process> = Vec::new();
    loop {
        let new: Vec<Process> = marked(markers)
            .into_iter()
            .filter(|p| !found.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for process in new {
            process.signal(Signal::SIGSTOP);
            found.push(process);
        }
        // kill(2) returns before the process has stopped; a fork it is in the middle of
        // would show only afterwards.
        poll_until(deadline, || found.iter().all(Process::stopped));
        if Instant::now() >= deadline {
            break;
        }
    }
    for process in &found {
        process.signal(Signal::SIGKILL);
    }
    poll_until(Instant::now() + limit, || found.iter().all(Process::gone));
    let left: Vec<String> = found
        .iter()
        .filter(|p| !p.gone())
        .map(ToString::to_string)
        .collect();
    if !left.is_empty() {
        bail!(
            "still running {}s after SIGKILL: {}",
            limit.as_secs(),
            left.join(", ")
        );
    }
    Ok(found)
}

/// Polls `done` every few milliseconds until it holds or `deadline` passes.
fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child of a command that ended keeps running with the marker, in a session of its
    /// own; it is found and killed, and nothing without the marker is.
    #[test]
    fn stop_marked_kills_marked_processes_that_escaped_and_only_those() {
        let marker = OsString::from(format!("/test/{}-stop-marked", std::process::id()));
        let mut unmarked = Command::new("sleep").arg("30").spawn().unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg("setsid sleep 30 >/dev/null 2>&1 & echo $!")
            .env(RUN_VAR, format!("{}:7", marker.to_string_lossy()))
            .output()
            .unwrap();
        let escaped: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // setsid forks when it leads a group; the marked sleep is the one that runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        poll_until(deadline, || {
            !marked(std::slice::from_ref(&marker)).is_empty()
        });
        // The run's marker and the command's find it; another command's does not.
        let command = |n: u32| OsString::from(format!("{}:{n}", marker.to_string_lossy()));
        assert!(!marked(&[command(7)]).is_empty());
        assert!(marked(&[command(70), command(8)]).is_empty());

        let killed = stop_marked(std::slice::from_ref(&marker), Duration::from_secs(10)).unwrap();
        assert!(!killed.is_empty(), "nothing found (escaped pid {escaped})");
        assert!(
            killed.iter().all(|p| p.command.contains("sleep 30")),
            "{killed:?}"
        );
        assert!(marked(std::slice::from_ref(&marker)).is_empty());
        assert!(
            unmarked.try_wait().unwrap().is_none(),
            "an unmarked process was killed"
        );
        unmarked.kill().unwrap();
        unmarked.wait().unwrap();
    }

    /// A line as long as a host's status with a long before_switch comes whole when asked
    /// for, cut at MAX_LINE otherwise; a command told to stop by `on_tick` is killed with the
    /// reason given, long before its limit.
    #[test]
    fn long_lines_come_whole_when_asked_and_a_tick_can_stop_a_command() {
        let reporter = Reporter::new(crate::infra::report::Output::Plain);
        let long = |max_line: usize| {
            let mut lines = Vec::new();
            let watch = Watch {
                limit: Some(Duration::from_secs(60)),
                since: Instant::now(),
                max_line,
                on_tick: &mut |_| None,
            };
            let cmd = shell(
                "head -c 100000 /dev/zero | tr '\\0' x; echo",
                Path::new("/"),
            );
            run_watched(cmd, "printf", watch, &reporter, &mut |line, _| {
                lines.push(line.len())
            })
            .unwrap();
            lines
        };
        assert_eq!(long(MAX_LONG_LINE), [100_000]);
        assert_eq!(long(MAX_LINE).first(), Some(&MAX_LINE));

        let started = Instant::now();
        let mut ticks = 0;
        let watch = Watch {
            limit: Some(Duration::from_secs(600)),
            since: Instant::now(),
            max_line: MAX_LINE,
            on_tick: &mut |quiet| {
                ticks += 1;
                (quiet >= TICK).then(|| "left out meanwhile".to_string())
            },
        };
        let err = run_watched(
            shell("sleep 600", Path::new("/")),
            "sleep",
            watch,
            &reporter,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "sleep was stopped (left out meanwhile) and killed");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(ticks >= 1);
    }

    #[test]
    fn a_process_that_started_later_with_the_same_pid_is_not_the_same() {
        let me = std::process::id() as i32;
        let real = Process {
            pid: me,
            start: start_time(me).unwrap(),
            command: String::new(),
        };
        assert!(!real.gone());
        let other = Process {
            start: real.start + 1,
            ..real.clone()
        };
        assert!(other.gone());
    }
}
