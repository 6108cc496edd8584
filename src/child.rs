//! Running the programs a deploy calls (composer, `before_switch`, `after_switch`, the health
//! check), with their output streamed to the pusher as it comes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fault;
use crate::report::Reporter;

/// How long output is still relayed after the command exited. A command that left a process
/// running in the background (`queue:work &`) leaves it holding the output pipe; the deploy
/// must not wait for it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Lines of one command's output shown to the pusher (and kept for `log`); a command that
/// prints without end must not flood the pusher's terminal or the hook's memory.
const MAX_LINES: usize = 5000;
/// Bytes of one line shown; the rest of a longer line comes as further lines.
const MAX_LINE: usize = 4096;

/// A command for a child: git's `GIT_*` variables of the hook are removed, so that `git`
/// run by composer scripts or deploy commands works on their own directory instead of the
/// bare repository, and nothing the pusher sent as a push option reaches them.
pub fn command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `sh -c COMMAND` in `cwd`.
pub fn shell(script: &str, cwd: &Path) -> Command {
    let mut cmd = command("sh", cwd);
    cmd.arg("-c").arg(script);
    cmd
}

/// Runs `cmd` to completion, each line of its stdout and stderr shown to the pusher.
/// `what` names it in errors.
pub fn run_streamed(cmd: Command, what: &str, reporter: &Reporter) -> Result<()> {
    run_limited(cmd, what, None, reporter)
}

enum Event {
    Line(String),
    Closed,
    Exited(std::io::Result<ExitStatus>),
}

/// Like [`run_streamed`], but kills the command and everything it started once `limit` has
/// passed.
///
/// Children stay in the hook's process group, so that whoever kills that group (an SSH
/// session that drops, an operator's kill -9) stops them too and none is left working in
/// application/ while the next deploy starts.
pub fn run_limited(
    mut cmd: Command,
    what: &str,
    limit: Option<Duration>,
    reporter: &Reporter,
) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    // Detached threads: a reader blocked on a pipe that a background process keeps open must
    // not keep the deploy waiting; it ends when that process closes the pipe or we exit.
    spawn_relay(child.stdout.take().expect("piped"), tx.clone());
    spawn_relay(child.stderr.take().expect("piped"), tx.clone());
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });

    let deadline = limit.map(|limit| Instant::now() + limit);
    let mut status = None;
    let mut open_streams = 2;
    let mut drain_until = None;
    let mut timed_out = false;
    let mut lines = 0;
    while status.is_none() || open_streams > 0 {
        let wait_until = match (status.is_some(), drain_until, deadline) {
            (true, Some(drain), _) => Some(drain),
            (false, _, Some(deadline)) if !timed_out => Some(deadline),
            _ => None,
        };
        let event = match wait_until {
            Some(until) => match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) if status.is_some() => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill_tree(pid);
                    timed_out = true;
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
                if lines <= MAX_LINES {
                    reporter.child_line(&line);
                }
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
        reporter.child_line(&format!(
            "… {} more lines of output from {what} not shown",
            lines - MAX_LINES
        ));
    }
    let status = status.with_context(|| format!("lost track of {what}"))?;
    if timed_out {
        bail!(
            "{what} did not finish within {}s and was killed",
            limit.unwrap_or_default().as_secs_f64()
        );
    }
    if !status.success() {
        match status.code() {
            Some(code) => bail!("{what} failed with exit status {code}"),
            None => bail!("{what} was killed by a signal ({status})"),
        }
    }
    Ok(())
}

/// SIGKILLs `root` and every process descended from it. They are stopped first, so that none
/// can fork away or be re-parented while the tree is read.
fn kill_tree(root: i32) {
    let mut stopped = vec![root];
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe { libc::kill(root, libc::SIGSTOP) };
    loop {
        let found: Vec<i32> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if found.is_empty() {
            break;
        }
        for pid in found {
            // SAFETY: kill(2) of a descendant of our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.push(pid);
        }
    }
    for pid in stopped {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Every process whose chain of parents leads to `root`, read from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok())
        {
            parents.push((pid, ppid));
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

/// Sends the stream's lines, each cut at [`MAX_LINE`] bytes so that output without newlines
/// cannot grow without bound in memory.
fn spawn_relay(stream: impl Read + Send + 'static, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream).take(u64::MAX);
        let mut line = Vec::new();
        loop {
            reader.set_limit(MAX_LINE as u64);
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
