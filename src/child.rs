//! Running the programs a deploy calls (composer, `before_switch`, `after_switch`), with their
//! output streamed to the pusher as it comes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

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
pub fn run_streamed(mut cmd: Command, what: &str, reporter: &Reporter) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    std::thread::scope(|scope| {
        scope.spawn(|| relay(stdout, reporter));
        scope.spawn(|| relay(stderr, reporter));
    });
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {what}"))?;
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
