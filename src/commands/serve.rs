//! `git push` tells the truth: git ignores a post-receive hook's exit status, but not that of
//! the remote `git-receive-pack`. `atomdeploy-hook receive-pack` runs git's own receive-pack
//! and exits non-zero when the deploy of this very push failed; `atomdeploy-hook serve` is the
//! same behind an `authorized_keys` forced command.
//!
//! The hook hands its outcome to the wrapper through a file that only this push knows: the
//! wrapper creates it unlinked (it has no name in any directory, so nothing of it outlives
//! the wrapper, however the wrapper ends) and names it in [`STATUS_ENV`] as
//! `/proc/<wrapper pid>/fd/<fd>`, which receive-pack's environment passes on to the hook. Two
//! pushes at once each read their own file.
//!
//! The same file carries the mark of a group's primary, which the hook checks
//! (`receive/hook/status.rs`).
//!
//! # Who may drive a host
//!
//! A group operation (`refs/atomdeploy/group/…`) puts builds live on a host without its own
//! checks, so only the group's primary may push one. The primary is recognised by the ssh key
//! it logs in with, which the host's operator restricts in `authorized_keys` to
//! `command="atomdeploy-hook serve --repo R --group-primary"`: OpenSSH runs that command for
//! that key and no other, whatever the client asks. `serve --group-primary` writes a random
//! secret as the first line of the status file and hands the hook the same secret in
//! [`PRIMARY_ENV`]; the hook takes the push for the primary's only when both match and the
//! file is an unlinked one held open by one of its own ancestors, of its own uid.
//!
//! Everyone else is refused: `serve` without the flag and `receive-pack` (the wrapper) remove
//! [`PRIMARY_ENV`] and set [`STATUS_ENV`] themselves, so that neither a client's `SendEnv` nor
//! anything it pushes (refs, push options) can carry the mark; `git-shell`, a plain key and a
//! push to a local path have no wrapper, so no status file of the right kind, and a variable
//! sent along names no file an ancestor of the hook holds with that secret in it. A local user
//! of the deploy uid is out of scope: it owns the deploy root already, and could do by hand
//! anything a group operation does.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};

use crate::receive::hook::status::{Outcome, new_secret, read_outcome};

/// The file this push's hook reports its outcome in ([`STATUS_ENV`]), and `serve
/// --group-primary`'s secret ([`PRIMARY_ENV`]; see the module's documentation). Defined where
/// every command the hook runs is made, which removes both.
pub use crate::infra::child::{PRIMARY_ENV, STATUS_ENV};

/// Who runs a push: anyone, or the group's primary (`serve --group-primary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Anyone,
    GroupPrimary,
}

impl Caller {
    /// `serve --group-primary` or not.
    pub(crate) fn from_flag(group_primary: bool) -> Caller {
        if group_primary {
            Caller::GroupPrimary
        } else {
            Caller::Anyone
        }
    }
}

/// `atomdeploy-hook receive-pack <repo>`: git's own receive-pack with the protocol untouched
/// (stdin and stdout are inherited, never copied through us), then the deploy's outcome as the
/// exit status. Returns the status to exit with.
///
/// `pusher`, when given, is who the log names as having pushed (see [`serve`]).
pub(crate) fn receive_pack(repo: &Path, pusher: Option<&str>, caller: Caller) -> Result<i32> {
    // Unlinked from the start (O_TMPFILE where the filesystem has it): a wrapper killed with
    // SIGKILL leaves no file behind.
    let mut status_file = tempfile::tempfile()
        .context("cannot create the file the hook reports this push's deploy in")?;
    let mut git = Command::new("git");
    git.arg("receive-pack").arg(repo).env(
        STATUS_ENV,
        format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            status_file.as_raw_fd()
        ),
    );
    match caller {
        Caller::GroupPrimary => {
            let secret = new_secret()?;
            writeln!(status_file, "{secret}")
                .context("cannot write the file the hook reports this push's deploy in")?;
            git.env(PRIMARY_ENV, secret);
        }
        // Whatever a client sent along (ssh's SendEnv) must not reach the hook.
        Caller::Anyone => {
            git.env_remove(PRIMARY_ENV);
        }
    }
    if let Some(pusher) = pusher {
        git.env(crate::infra::child::PUSHER_ENV, pusher);
    }
    let status = git.status().context("cannot run git receive-pack")?;
    if !status.success() {
        return Ok(exit_code(status));
    }
    let mut text = String::new();
    let _ = status_file.rewind();
    let _ = status_file.read_to_string(&mut text);
    if caller == Caller::GroupPrimary {
        // The secret is the wrapper's own line, not the hook's word.
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    Ok(match read_outcome(&text) {
        Outcome::Nothing | Outcome::Ok => 0,
        Outcome::Failed(why) => {
            crate::infra::report::error(&format!(
                "the push was received, but its deploy failed: {why}"
            ));
            1
        }
        Outcome::Unknown => {
            crate::infra::report::error(
                "the push was received, but the hook ended without saying how its deploy went; \
                 the deploy's result is unknown (`atomdeploy-hook log` on the server)",
            );
            1
        }
    })
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// What an ssh client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Service {
    ReceivePack,
    UploadPack,
}

/// `atomdeploy-hook serve --repo R`, an `authorized_keys` forced command: runs the wrapper for
/// a push to R, git-upload-pack for a fetch from R, `builds [--json]` and `log [BUILD]` of the
/// deploy root(s) R's hook deploys into (so that a developer sees what is on the server
/// without a shell), and refuses everything else.
///
/// `pusher` is the key's owner as the operator wrote it in the forced command; without it, an
/// empty name makes the hook fall back to its user, so that a client's own environment
/// (`SendEnv`) cannot name someone else.
///
/// `caller` is [`Caller::GroupPrimary`] for `--group-primary`: only the forced command of
/// the group primary's key on a host says so (see the module's documentation). `appended` is
/// the path git adds to a local `--receive-pack` command (how a primary reaches a host that is
/// a local path); it must name the same repository.
pub(crate) fn serve(
    repo: &Path,
    pusher: Option<&str>,
    caller: Caller,
    appended: Option<&Path>,
) -> Result<i32> {
    let own = std::fs::canonicalize(repo)
        .with_context(|| format!("cannot find the repository {}", repo.display()))?;
    if let Some(appended) = appended
        && std::fs::canonicalize(appended).ok().as_ref() != Some(&own)
    {
        bail!(
            "refused: {} is not {}, the only repository this command serves",
            appended.display(),
            own.display()
        );
    }
    let Some(asked) = std::env::var_os("SSH_ORIGINAL_COMMAND") else {
        // Run as a local `--receive-pack` (git appended the path, checked above): no ssh
        // client asks anything, git wants receive-pack. sshd never appends to a forced command.
        if appended.is_some() {
            return receive_pack(&own, Some(pusher.unwrap_or("")), caller);
        }
        bail!(
            "this key may only push to and fetch from {} with git, and read `builds [--json]` \
             and `log [BUILD]`; no shell, no other command",
            own.display()
        );
    };
    let asked = asked.to_string_lossy().into_owned();
    if let Some(read) = parse_read(&asked) {
        let read = read.with_context(|| {
            format!(
                "refused `{asked}`: this key may read `builds [--json]` and `log [BUILD]`, \
                 nothing else"
            )
        })?;
        return serve_read(&own, &read, &asked).map(|()| 0);
    }
    let (service, path) = parse_command(&asked).with_context(|| {
        format!(
            "refused `{asked}`: this key may only push to and fetch from {} with git, \
             or read `builds [--json]` and `log [BUILD]`",
            own.display()
        )
    })?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if !names_repository(&path, home.as_deref(), &own) {
        bail!(
            "refused `{asked}`: this key may only push to and fetch from {}",
            own.display()
        );
    }
    match service {
        Service::ReceivePack => receive_pack(&own, Some(pusher.unwrap_or("")), caller),
        Service::UploadPack => {
            let err = Command::new("git").arg("upload-pack").arg(&own).exec();
            Err(err).context("cannot run git upload-pack")
        }
    }
}

/// What a key with `serve` may read without a shell: `builds [--json]` and `log [BUILD]`, of
/// the deploy root(s) the repository's hook names. The words after the verb, checked word by
/// word; with several roots the first of them names the root by its branch.
#[derive(Debug, PartialEq, Eq)]
enum ReadCommand {
    Builds { json: bool, words: Vec<String> },
    Log { words: Vec<String> },
}

/// `builds …` or `log …` as ssh hands them over; None for anything else (git's commands).
/// Only letters, digits and `._/-` between single spaces: no quoting, no shell
/// metacharacters, so nothing is ever unquoted or guessed at.
fn parse_read(command: &str) -> Option<Result<ReadCommand>> {
    let mut words = command.split(' ');
    let verb = words.next()?;
    if verb != "builds" && verb != "log" {
        return None;
    }
    let mut words: Vec<String> = words.map(str::to_string).collect();
    Some((|| {
        for word in &words {
            let plain = !word.is_empty()
                && !word.starts_with(['/', '.'])
                && !word.contains("..")
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
            if !plain {
                bail!("`{word}` is not a build, a failed attempt's id or a branch");
            }
        }
        let json = verb == "builds" && words.first().is_some_and(|w| w == "--json");
        if json {
            words.remove(0);
        }
        if words.iter().any(|w| w.starts_with('-')) {
            bail!("no option but `builds --json`");
        }
        let most = if verb == "builds" { 1 } else { 2 };
        if words.len() > most {
            bail!("too many words");
        }
        Ok(if verb == "builds" {
            ReadCommand::Builds { json, words }
        } else {
            ReadCommand::Log { words }
        })
    })())
}

/// A build's name or a `failed-…` id as `builds` prints them; nothing that could be a path.
fn is_build_id(word: &str) -> bool {
    crate::state::build_name::BuildName::parse(word).is_some()
        || word.strip_prefix("failed-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Runs a [`ReadCommand`] (see [`read_target`]). Read-only: neither takes the deploy lock
/// nor writes.
fn serve_read(repo: &Path, read: &ReadCommand, asked: &str) -> Result<()> {
    let (root, build) = read_target(repo, read).with_context(|| {
        format!(
            "refused `{asked}`: this key may read `builds [--json]` and `log [BUILD]`, \
             nothing else"
        )
    })?;
    let layout = crate::state::plan::Plan::load(&root)?.layout;
    match read {
        ReadCommand::Builds { json, .. } => {
            crate::commands::inventory::print_builds(&layout, *json)
        }
        ReadCommand::Log { .. } => crate::commands::inventory::print_log(&layout, build.as_deref()),
    }
}

/// The root a [`ReadCommand`] is for, and the build `log` asked for: the root the
/// repository's hook names or, with several, the one whose branch is the first word.
fn read_target(repo: &Path, read: &ReadCommand) -> Result<(PathBuf, Option<String>)> {
    let hook = repo.join("hooks/post-receive");
    let roots = std::fs::read_to_string(&hook)
        .ok()
        .and_then(|text| crate::receive::hook::file::hook_roots(&text))
        .with_context(|| format!("{} names no deploy root", hook.display()))?;
    let (ReadCommand::Builds { words, .. } | ReadCommand::Log { words }) = read;
    let mut words = words.iter().map(String::as_str);
    let root = if let [root] = roots.as_slice() {
        root.clone()
    } else {
        let branches: Vec<(String, &PathBuf)> = roots
            .iter()
            .map(|root| {
                let plan = crate::state::plan::Plan::load(root);
                (plan.map(|p| p.config.branch).unwrap_or_default(), root)
            })
            .collect();
        let asked = words.next().unwrap_or_default();
        let found = branches.iter().find(|(b, _)| !b.is_empty() && b == asked);
        let Some((_, root)) = found else {
            let names: Vec<String> = branches.iter().map(|(b, _)| format!("`{b}`")).collect();
            bail!(
                "this repository deploys several roots: name one by its branch ({}) right \
                 after `builds [--json]` or `log`",
                names.join(", ")
            );
        };
        root.to_path_buf()
    };
    let build = match read {
        ReadCommand::Builds { .. } => None,
        ReadCommand::Log { .. } => words.next(),
    };
    if words.next().is_some() {
        bail!("one build at most, and only after `log`");
    }
    if let Some(build) = build
        && !is_build_id(build)
    {
        bail!("`{build}` is not a build's name or a failed attempt's id");
    }
    Ok((root, build.map(str::to_string)))
}

/// `git-receive-pack '<path>'` (or `git receive-pack …`, or upload-pack) as git sends it.
fn parse_command(command: &str) -> Result<(Service, String)> {
    let command = command.trim();
    let (program, rest) = if let Some(rest) = command.strip_prefix("git ") {
        let rest = rest.trim_start();
        let (sub, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        (format!("git-{sub}"), rest)
    } else {
        let (program, rest) = command.split_once(' ').unwrap_or((command, ""));
        (program.to_string(), rest)
    };
    let service = match program.as_str() {
        "git-receive-pack" => Service::ReceivePack,
        "git-upload-pack" => Service::UploadPack,
        _ => bail!("only git-receive-pack and git-upload-pack are allowed"),
    };
    let path = unquote(rest.trim())?;
    if path.is_empty() {
        bail!("no repository named");
    }
    Ok((service, path))
}

/// Undoes git's `sq_quote`: single-quoted runs, and `\'` or `\!` between them. Anything else
/// (a second word, an unquoted `;`) is refused rather than guessed at.
fn unquote(text: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => bail!("an unterminated quote"),
                }
            },
            '\\' => match chars.next() {
                Some(c @ ('\'' | '!')) => out.push(c),
                _ => bail!("an unexpected backslash"),
            },
            c if c.is_ascii_alphanumeric() || "/._-~+".contains(c) => out.push(c),
            c => bail!("an unexpected {c:?} in the repository's path"),
        }
    }
    Ok(out)
}

/// Whether `path`, as the client sent it, names `own` (canonical): absolute, `~/…` or relative
/// to HOME (what scp-like `host:app.git` sends), with or without `.git`, as receive-pack
/// itself would look it up.
fn names_repository(path: &str, home: Option<&Path>, own: &Path) -> bool {
    let full = if let Some(rest) = path.strip_prefix("~/") {
        match home {
            Some(home) => home.join(rest),
            None => return false,
        }
    } else if path.starts_with('~') {
        // `~user/…`: another account's home is never this repository's way in.
        return false;
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        match home {
            Some(home) => home.join(path),
            None => return false,
        }
    };
    let mut with_git = OsString::from(full.as_os_str());
    with_git.push(".git");
    [full, PathBuf::from(with_git)]
        .iter()
        .any(|candidate| std::fs::canonicalize(candidate).is_ok_and(|c| c == own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_quoting_is_undone() {
        assert_eq!(
            parse_command("git-receive-pack '/srv/app.git'").unwrap(),
            (Service::ReceivePack, "/srv/app.git".into())
        );
        assert_eq!(
            parse_command("git receive-pack '/srv/it'\\''s.git'").unwrap(),
            (Service::ReceivePack, "/srv/it's.git".into())
        );
        assert_eq!(
            parse_command("git-upload-pack 'app.git'").unwrap(),
            (Service::UploadPack, "app.git".into())
        );
        assert_eq!(
            parse_command("git-receive-pack '~/a'\\!'b'").unwrap().1,
            "~/a!b"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "sh",
            "git-receive-pack",
            "git-upload-archive '/srv/app.git'",
            "git-receive-pack '/srv/app.git'; rm -rf /",
            "git-receive-pack '/srv/app.git' '/other'",
            "git-receive-pack '/srv/app.git",
            "git-receive-pack $(id)",
        ] {
            assert!(parse_command(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn builds_and_log_are_read_word_by_word() {
        let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_read("builds --json").unwrap().unwrap(),
            ReadCommand::Builds {
                json: true,
                words: vec![]
            }
        );
        assert_eq!(
            parse_read("log staging 20261126-101500-2")
                .unwrap()
                .unwrap(),
            ReadCommand::Log {
                words: words(&["staging", "20261126-101500-2"])
            }
        );
        assert!(parse_read("git-receive-pack 'app.git'").is_none());
        assert!(parse_read("builds;").is_none());
        for bad in [
            "builds  --json",
            "builds --json --json",
            "builds a b",
            "log ../x",
            "log a/../../b",
            "log /etc/passwd",
            "log $(id)",
            "log a b c",
            "log 'x'",
            "log x;id",
            "log --to",
        ] {
            assert!(parse_read(bad).unwrap().is_err(), "{bad:?} was accepted");
        }
        assert!(is_build_id("20261126-101500") && is_build_id("failed-2026-11-26T085526123Z"));
        assert!(!is_build_id("failed-") && !is_build_id("failed-a/b") && !is_build_id("main"));
    }

    #[test]
    fn paths_are_compared_canonically() {
        let tmp = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir(home.join("app.git")).unwrap();
        let own = home.join("app.git");
        assert!(names_repository("app.git", Some(&home), &own));
        assert!(names_repository("app", Some(&home), &own));
        assert!(names_repository("~/app.git", Some(&home), &own));
        assert!(names_repository(own.to_str().unwrap(), None, &own));
        assert!(names_repository(
            &format!(
                "{}/../{}/app.git",
                home.display(),
                home.file_name().unwrap().to_str().unwrap()
            ),
            None,
            &own
        ));
        assert!(!names_repository("other.git", Some(&home), &own));
        assert!(!names_repository("~root/app.git", Some(&home), &own));
    }
}
