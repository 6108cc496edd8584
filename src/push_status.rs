//! `git push` tells the truth: git ignores a post-receive hook's exit status, but not that of
//! the remote `git-receive-pack`. `atomdeploy-hook receive-pack` runs git's own receive-pack
//! and exits non-zero when the deploy of this very push failed; `atomdeploy-hook serve` is the
//! same behind an `authorized_keys` forced command.
//!
//! The hook hands its outcome to the wrapper through a file that only this push knows: the
//! wrapper creates it and names it in [`STATUS_ENV`], which receive-pack's environment passes
//! on to the hook. Two pushes at once each read their own file, and a push killed mid-way
//! leaves no shared state behind to mislead the next one.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};

/// Names the file this push's hook reports its outcome in.
pub const STATUS_ENV: &str = "ATOMDEPLOY_PUSH_STATUS";

/// The hook's side: where it reports, if a wrapper asked. Written line by line, appended, so
/// that the last line is the latest word: `pending` once there is work that can fail, then
/// `ok` or `failed <why>`.
pub struct StatusFile(Option<PathBuf>);

impl StatusFile {
    pub fn from_env() -> StatusFile {
        StatusFile(std::env::var_os(STATUS_ENV).map(PathBuf::from))
    }

    fn write(&self, line: &str) {
        let Some(path) = &self.0 else { return };
        // Never created here: a stale variable must not make files appear.
        if let Ok(mut file) = OpenOptions::new().append(true).open(path) {
            let _ = writeln!(file, "{}", line.replace('\n', " "));
        }
    }

    /// The push asked for a deploy or a rollback: from here on, silence means "unknown".
    pub fn pending(&self) {
        self.write("pending");
    }

    pub fn ok(&self) {
        self.write("ok");
    }

    pub fn failed(&self, why: &str) {
        self.write(&format!("failed {why}"));
    }
}

/// What the wrapper learnt from the hook.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The hook never said there was work (nothing to deploy, or no hook ran).
    Nothing,
    Ok,
    Failed(String),
    /// Work began and the hook never said how it ended (killed, crashed).
    Unknown,
}

fn read_outcome(text: &str) -> Outcome {
    match text.lines().rfind(|l| !l.is_empty()) {
        None => Outcome::Nothing,
        Some("ok") => Outcome::Ok,
        Some("pending") => Outcome::Unknown,
        Some(line) => Outcome::Failed(line.strip_prefix("failed ").unwrap_or(line).to_string()),
    }
}

/// `atomdeploy-hook receive-pack <repo>`: git's own receive-pack with the protocol untouched
/// (stdin and stdout are inherited, never copied through us), then the deploy's outcome as the
/// exit status. Returns the status to exit with.
///
/// `pusher`, when given, is who the log names as having pushed (see [`serve`]).
pub fn receive_pack(repo: &Path, pusher: Option<&str>) -> Result<i32> {
    let status_file = tempfile::Builder::new()
        .prefix("atomdeploy-push-")
        .tempfile()
        .context("cannot create the file the hook reports this push's deploy in")?;
    let mut git = Command::new("git");
    git.arg("receive-pack")
        .arg(repo)
        .env(STATUS_ENV, status_file.path());
    if let Some(pusher) = pusher {
        git.env(crate::state::history::PUSHER_ENV, pusher);
    }
    let status = git.status().context("cannot run git receive-pack")?;
    if !status.success() {
        return Ok(exit_code(status));
    }
    let text = std::fs::read_to_string(status_file.path()).unwrap_or_default();
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
/// a push to R, git-upload-pack for a fetch from R, and refuses everything else.
///
/// `pusher` is the key's owner as the operator wrote it in the forced command; without it, an
/// empty name makes the hook fall back to its user, so that a client's own environment
/// (`SendEnv`) cannot name someone else.
pub fn serve(repo: &Path, pusher: Option<&str>) -> Result<i32> {
    let own = std::fs::canonicalize(repo)
        .with_context(|| format!("cannot find the repository {}", repo.display()))?;
    let Some(asked) = std::env::var_os("SSH_ORIGINAL_COMMAND") else {
        bail!(
            "this key may only push to and fetch from {} with git; no shell, no other command",
            own.display()
        );
    };
    let asked = asked.to_string_lossy().into_owned();
    let (service, path) = parse_command(&asked).with_context(|| {
        format!(
            "refused `{asked}`: this key may only push to and fetch from {} with git",
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
        Service::ReceivePack => receive_pack(&own, Some(pusher.unwrap_or(""))),
        Service::UploadPack => {
            let err = Command::new("git").arg("upload-pack").arg(&own).exec();
            Err(err).context("cannot run git upload-pack")
        }
    }
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
    fn the_last_word_of_the_hook_counts() {
        assert_eq!(read_outcome(""), Outcome::Nothing);
        assert_eq!(read_outcome("pending\n"), Outcome::Unknown);
        assert_eq!(read_outcome("pending\nok\n"), Outcome::Ok);
        assert_eq!(
            read_outcome("pending\nfailed composer: exit 1\n"),
            Outcome::Failed("composer: exit 1".into())
        );
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
