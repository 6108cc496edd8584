//! Running the programs a deploy calls (composer, `before_switch`, `after_switch`), with their
//! output streamed to the pusher as it comes.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wait_timeout::ChildExt;

use crate::report::Reporter;

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

/// Like [`run_streamed`], but kills the command and everything it started once `limit` has
/// passed. Such a command runs in a process group of its own, so that the kill reaches its
/// children too and none is left holding its output open.
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
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (status, timed_out) = std::thread::scope(|scope| -> Result<_> {
        scope.spawn(|| relay(stdout, reporter));
        scope.spawn(|| relay(stderr, reporter));
        let waited = match limit {
            Some(limit) => child.wait_timeout(limit),
            None => child.wait().map(Some),
        };
        match waited.with_context(|| format!("cannot wait for {what}"))? {
            Some(status) => Ok((status, false)),
            None => {
                // SAFETY: kill(2) with the negated id of the group the child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                Ok((child.wait()?, true))
            }
        }
    })?;
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

fn relay(stream: impl Read, reporter: &Reporter) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        let text = String::from_utf8_lossy(&line);
        reporter.child_line(text.trim_end_matches(['\n', '\r']));
        line.clear();
    }
}
