//! The file a push's hook reports its outcome in, and the mark of a group's primary it
//! carries: the hook's side of the `receive-pack` and `serve` wrappers (`commands/serve.rs`,
//! whose documentation tells who may drive a host and why nobody else can). The wrapper
//! makes the file and the secret; the hook appends its word and checks the secret; the format
//! of both is here, so that each side reads what the other writes.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};

use crate::infra::child::{PRIMARY_ENV, STATUS_ENV};

/// The secret's length in hex digits (128 random bits).
const SECRET_LEN: usize = 32;

/// The hook's side: where it reports, if a wrapper asked. Written line by line, appended, so
/// that the last line is the latest word: `pending` once there is work that can fail, then
/// `ok` or `failed <why>`.
pub(crate) struct StatusFile(Option<File>);

impl StatusFile {
    /// Only a wrapper's own file ([`wrapper_file`]): a path a client sent along (ssh's
    /// `SendEnv`) or a stale variable names a file the hook must not append to, deploy.yml
    /// say, nor create.
    pub(crate) fn from_env() -> StatusFile {
        let path = std::env::var_os(STATUS_ENV);
        StatusFile(path.and_then(|p| wrapper_file(&p, OpenOptions::new().append(true))))
    }

    fn write(&self, line: &str) {
        let Some(mut file) = self.0.as_ref() else {
            return;
        };
        let _ = writeln!(file, "{}", line.replace('\n', " "));
    }

    /// The push asked for a deploy or a rollback: from here on, silence means "unknown".
    pub(crate) fn pending(&self) {
        self.write("pending");
    }

    pub(crate) fn ok(&self) {
        self.write("ok");
    }

    pub(crate) fn failed(&self, why: &str) {
        self.write(&format!("failed {why}"));
    }
}

/// What the wrapper learnt from the hook.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The hook never said there was work (nothing to deploy, or no hook ran).
    Nothing,
    Ok,
    Failed(String),
    /// Work began and the hook never said how it ended (killed, crashed).
    Unknown,
}

pub(crate) fn read_outcome(text: &str) -> Outcome {
    match text.lines().rfind(|l| !l.is_empty()) {
        None => Outcome::Nothing,
        Some("ok") => Outcome::Ok,
        Some("pending") => Outcome::Unknown,
        Some(line) => Outcome::Failed(line.strip_prefix("failed ").unwrap_or(line).to_string()),
    }
}

/// A fresh secret from the kernel's random source, as hex.
pub(crate) fn new_secret() -> Result<String> {
    let mut bytes = [0u8; SECRET_LEN / 2];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The hook's side of `serve --group-primary`: whether this push came through it, i.e. the
/// secret in [`PRIMARY_ENV`] is the first line of the status file named in [`STATUS_ENV`],
/// and that file is what a wrapper makes, held by an ancestor of this process. See the
/// module's documentation for who can get here and why nobody else can.
pub(crate) fn primary_asks() -> bool {
    let (Some(secret), Some(path)) = (std::env::var_os(PRIMARY_ENV), std::env::var_os(STATUS_ENV))
    else {
        return false;
    };
    let secret = secret.to_string_lossy();
    if secret.len() != SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Some(file) = wrapper_file(&path, OpenOptions::new().read(true)) else {
        return false;
    };
    let mut first = String::new();
    if BufReader::new(file).read_line(&mut first).is_err() {
        return false;
    }
    constant_time_eq(first.trim_end_matches('\n').as_bytes(), secret.as_bytes())
}

/// The file `path` names, opened with `options`, if it is one a wrapper made for this very
/// push: `/proc/<pid>/fd/<n>` of an ancestor of this process running as its uid, and an
/// unlinked regular file of that uid. None for anything else.
fn wrapper_file(path: &OsStr, options: &OpenOptions) -> Option<File> {
    let pid = wrapper_pid(&path.to_string_lossy())?;
    let uid = nix::unistd::geteuid().as_raw();
    let own_process = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid);
    if !own_process || !is_own_ancestor(pid) {
        return None;
    }
    let file = options.open(path).ok()?;
    let made_by_a_wrapper = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.nlink() == 0 && m.uid() == uid);
    made_by_a_wrapper.then_some(file)
}

/// The pid of `/proc/<pid>/fd/<n>`, the only form a wrapper hands on.
fn wrapper_pid(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/proc/")?;
    let (pid, fd) = rest.split_once("/fd/")?;
    fd.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether `pid` is this process's parent, or its parent's, and so on: the wrapper runs git
/// receive-pack, which runs the hook (through the hook file's shell).
fn is_own_ancestor(pid: u32) -> bool {
    let mut at = std::os::unix::process::parent_id();
    for _ in 0..16 {
        if at == pid {
            return true;
        }
        match crate::infra::child::parent_of(at) {
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wrappers_own_file_of_an_ancestor_can_carry_the_primarys_mark() {
        assert_eq!(wrapper_pid("/proc/12/fd/3"), Some(12));
        for other in [
            "/proc/self/fd/3",
            "/proc/12/fd/x",
            "/tmp/status",
            "/proc/12/cwd",
        ] {
            assert_eq!(wrapper_pid(other), None, "{other}");
        }
        let parent = std::os::unix::process::parent_id();
        assert_eq!(
            crate::infra::child::parent_of(std::process::id()),
            Some(parent)
        );
        assert!(is_own_ancestor(parent));
        assert!(!is_own_ancestor(std::process::id()), "not its own ancestor");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), SECRET_LEN);
        assert_ne!(secret, new_secret().unwrap());
    }

    #[test]
    fn the_last_word_of_the_hook_counts() {
        assert_eq!(read_outcome(""), Outcome::Nothing);
        assert_eq!(read_outcome("pending\n"), Outcome::Unknown);
        assert_eq!(read_outcome("pending\nok\n"), Outcome::Ok);
        assert_eq!(
            read_outcome("pending\nfailed composer: exit 1\n"),
            Outcome::Failed("composer: exit 1".into())
        );
    }
}
