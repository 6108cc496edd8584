//! Running the programs a deploy calls (composer, `before_switch`, `after_switch`, the health
//! check), with their output streamed to the pusher as it comes.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::report::Reporter;

/// How long output is still relayed after the command exited. A command that left a process
/// running in the background (`queue:work &`) leaves it holding the output pipe; the deploy
/// must not wait for it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

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
/// passed. Such a command runs in a process group of its own, so that the kill reaches its
/// children too.
pub fn run_limited(
    mut cmd: Command,
    what: &str,
    limit: Option<Duration>,
    reporter: &Reporter,
) -> Result<()> {
    if limit.is_some() {
        cmd.process_group(0);
    }
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
                    // SAFETY: kill(2) of the process group the child leads (set above).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
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
            Event::Line(line) => reporter.child_line(&line),
            Event::Closed => open_streams -= 1,
            Event::Exited(result) => {
                status = Some(result.with_context(|| format!("cannot wait for {what}"))?);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
        }
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

fn spawn_relay(stream: impl Read + Send + 'static, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            let _ = tx.send(Event::Line(text.trim_end_matches(['\n', '\r']).to_string()));
            line.clear();
        }
        let _ = tx.send(Event::Closed);
    });
}
