//! The deploy log: one JSON line per attempt (deploy, rollback, or a push that found its
//! commit live), and the full output of each deploy, as the pusher saw it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::infra::child::PUSHER_ENV;
use crate::state::plan::Layout;

/// How many outputs of failed deploys (which left no build to keep them with) are kept.
const FAILED_OUTPUTS_KEPT: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) started_at: String,
    /// When the lock was ours: the attempts on one root never overlap from here to
    /// `finished_at`.
    pub(crate) locked_at: String,
    pub(crate) finished_at: String,
    pub(crate) pid: u32,
    /// The ref that triggered it (`refs/heads/main`, `refs/heads/rollback`), or the command.
    #[serde(rename = "ref")]
    pub(crate) refname: String,
    pub(crate) commit: String,
    /// The build made or switched to.
    pub(crate) build: Option<String>,
    /// For rollbacks: the build that was live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    /// When `latest` was switched, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) switched_at: Option<String>,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) steps: Vec<StepTime>,
    pub(crate) seconds: f64,
    /// The file in the output folder holding what the pusher saw.
    #[serde(default)]
    pub(crate) output: Option<String>,
    /// A group's other web servers (`hosts:`), each as this attempt left it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hosts: Vec<HostLog>,
    /// Between the first and the last server's switch, the primary's included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) switch_spread_ms: Option<f64>,
    /// On a host of a group: the group operation this attempt was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<GroupOp>,
    /// The commit's first line, and its author as `name <email>`: who and what, without the
    /// repository at hand. Absent in lines older hooks wrote, and when the commit is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) author: Option<String>,
    /// For a replay: the tags of the repository that name the commit deployed (`v1.0`), so
    /// that a tag deployed by `git push production v1.0~0:refs/heads/replay` is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tag: Option<String>,
    /// Who pushed (or ran the command): `serve --pusher`, else the hook's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pusher: Option<String>,
}

/// A group operation a host was asked for (see `receive/group/host.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupOp {
    pub(crate) gid: String,
    /// `prepare`, `reuse`, `switch`, `restore` or `abort`.
    pub(crate) op: String,
}

/// How an attempt ended, as the log spells it (scripts read these strings: keep them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// A new build went live (after_switch may have failed).
    #[serde(rename = "deployed")]
    Deployed,
    /// Nothing went live: refused, or a step before the switch failed.
    #[serde(rename = "failed")]
    Failed,
    /// The commit was live already.
    #[serde(rename = "unchanged")]
    Unchanged,
    /// A rollback switched to an older build (or to the one asked for).
    #[serde(rename = "rolled back")]
    RolledBack,
    /// The new build went live, failed its health check and was rolled back (or could not be).
    #[serde(rename = "unhealthy")]
    Unhealthy,
    /// A host of a group made a build up to its switch (or found one to reuse); the switch,
    /// if the group gets there, is an attempt of its own.
    #[serde(rename = "prepared")]
    Prepared,
    /// A host of a group dropped its prepared build: the group did not switch.
    #[serde(rename = "aborted")]
    Aborted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepTime {
    pub(crate) step: String,
    pub(crate) seconds: f64,
}

impl Entry {
    /// An attempt by this process, its outcome and the rest still to be filled in.
    pub(crate) fn begin(started_at: &str, locked_at: &str, refname: &str, commit: &str) -> Entry {
        Entry {
            started_at: started_at.to_string(),
            locked_at: locked_at.to_string(),
            finished_at: String::new(),
            pid: std::process::id(),
            refname: refname.to_string(),
            commit: commit.to_string(),
            build: None,
            from: None,
            switched_at: None,
            // Until it says otherwise, an attempt did not make it.
            outcome: Outcome::Failed,
            error: None,
            steps: Vec::new(),
            seconds: 0.0,
            output: None,
            hosts: Vec::new(),
            switch_spread_ms: None,
            group: None,
            subject: None,
            author: None,
            tag: None,
            pusher: pusher(),
        }
    }

    /// Fills in the commit's subject and author from the bare repository; an unknown commit
    /// (refused before it was resolved, a build without its revision) leaves them out.
    pub(crate) fn describe(&mut self, repo: &git2::Repository) {
        let Some(commit) = git2::Oid::from_str(&self.commit)
            .ok()
            .and_then(|id| repo.find_commit(id).ok())
        else {
            return;
        };
        self.subject = commit
            .summary_bytes()
            .map(|s| String::from_utf8_lossy(s).into_owned());
        let author = commit.author();
        self.author = Some(format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ));
    }

    /// [`Entry::describe`] with the repository at `path`, for callers that have not opened it.
    pub(crate) fn describe_at(&mut self, path: &Path) {
        if let Ok(repo) = git2::Repository::open_bare(path) {
            self.describe(&repo);
        }
    }
}

/// The tags of `repo` that point at `commit` (through an annotated tag too), in order, as
/// one `v1.0, stable`; `None` when there is none.
pub(crate) fn tags_of(repo: &git2::Repository, commit: git2::Oid) -> Option<String> {
    let mut names = Vec::new();
    let _ = repo.tag_foreach(|id, name| {
        let peeled = repo
            .find_object(id, None)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id());
        if peeled.ok() == Some(commit) {
            let name = String::from_utf8_lossy(name);
            names.push(name.trim_start_matches("refs/tags/").to_string());
        }
        true
    });
    names.sort();
    (!names.is_empty()).then(|| names.join(", "))
}

/// Who pushed, as `atomdeploy-hook serve --pusher` names it (the key's owner; passed on through
/// receive-pack in [`PUSHER_ENV`]), else the user the hook runs as.
pub(crate) fn pusher() -> Option<String> {
    Some(first_named(&[PUSHER_ENV, "USER"]))
}

/// Who runs this command (`freeze`, `hosts exclude`): the person behind sudo, else the login,
/// else the uid's name.
pub(crate) fn operator() -> String {
    first_named(&["SUDO_USER", "USER", "LOGNAME"])
}

/// The first of the environment variables `keys` that is set and not empty, else the name of
/// the uid this process runs as: an environment without `$USER` (cron, systemd, a cleared
/// environment) still says who.
fn first_named(keys: &[&str]) -> String {
    keys.iter()
        .find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            let uid = crate::infra::users::current_uid();
            crate::infra::users::user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
        })
}

pub(crate) fn append(layout: &Layout, entry: &Entry) -> Result<()> {
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(layout.deploy_log())?;
    // A crash mid-append leaves a last line without its newline; glued onto it, this entry
    // would be unreadable too. (Two appenders racing here make at most an empty line.)
    if ends_torn(&file)? {
        line.insert(0, '\n');
    }
    // One write of one line to a file opened for appending.
    file.write_all(line.as_bytes())?;
    Ok(())
}

/// True when the file holds something and does not end with a newline.
fn ends_torn(file: &File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// Every entry, oldest first. Lines that do not parse (a torn last line after a crash) are
/// skipped rather than failing the listing.
pub(crate) fn read(layout: &Layout) -> Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(layout.deploy_log()) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("cannot read the deploy log"),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Keeps a deploy's output: with its build's name when it made one, else as a failed
/// attempt. Returns the file's name.
pub(crate) fn save_output(
    layout: &Layout,
    build: Option<&str>,
    started_at: &str,
    text: &str,
) -> Result<String> {
    let dir = layout.output_dir();
    std::fs::create_dir_all(&dir)?;
    let name = match build {
        Some(build) => format!("{build}.log"),
        None => format!(
            "failed-{}-{}.log",
            started_at.replace([':', '.'], ""),
            std::process::id()
        ),
    };
    std::fs::write(dir.join(&name), text)?;
    if build.is_none() {
        prune_failed(&dir)?;
    }
    Ok(name)
}

/// Appends the entry of a push refused before any deploy began (a freeze, a host of a group,
/// a group operation from anyone but the primary), `failed` with `why`, and returns it for
/// whoever tells the webhooks. A single appended line: safe without the lock.
pub(crate) fn append_refusal(
    plan: &crate::state::plan::Plan,
    (started_at, finished_at): (&str, String),
    (source, commit): (&str, &str),
    why: &str,
    reporter: &crate::infra::report::Reporter,
) -> Entry {
    let mut entry = Entry {
        finished_at,
        outcome: Outcome::Failed,
        error: Some(why.to_string()),
        seconds: reporter.elapsed().as_secs_f64(),
        ..Entry::begin(started_at, "", source, commit)
    };
    entry.describe_at(&plan.config.repository);
    if let Err(e) = append(&plan.layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    entry
}

/// Keeps the newest [`FAILED_OUTPUTS_KEPT`] outputs of failed attempts in `dir`, newest by
/// when they were written: their names do not sort by time (an attempt's
/// `failed-2026-12-03T…` and a removed bad build's `failed-20261203-…` side by side).
pub(crate) fn prune_failed(dir: &Path) -> Result<()> {
    let mut failed: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let written = e.metadata().and_then(|m| m.modified()).ok()?;
            name.starts_with("failed-").then_some((written, name))
        })
        .collect();
    failed.sort();
    let excess = failed.len().saturating_sub(FAILED_OUTPUTS_KEPT);
    for (_, name) in &failed[..excess] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(())
}

/// One host's part, for the deploy log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HostLog {
    pub(crate) url: String,
    pub(crate) label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) build: Option<String>,
    /// `switched`, `failed`, `aborted`, `restored`, `excluded`.
    pub(crate) outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_newest_failed_outputs_are_kept_whatever_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        // Oldest first, the two kinds of name interleaved; sorted by name, every
        // `failed-2026-…` would come before every `failed-2026120…`.
        let names: Vec<String> = (0..FAILED_OUTPUTS_KEPT + 6)
            .map(|i| {
                if i % 2 == 0 {
                    format!("failed-20261203-1500{i:02}.log")
                } else {
                    format!("failed-2026-12-03T1500{i:02}Z-1.log")
                }
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(t0 + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        prune_failed(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut newest = names[6..].to_vec();
        newest.sort();
        assert_eq!(left, newest);
    }

    use super::*;

    fn entry(commit: &str) -> Entry {
        Entry {
            outcome: Outcome::Deployed,
            ..Entry::begin(
                "2026-11-26T00:00:00Z",
                "2026-11-26T00:00:00Z",
                "refs/heads/main",
                commit,
            )
        }
    }

    /// A deploy log in a temporary root with one entry per commit.
    fn log_of(commits: &[&str]) -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        std::fs::create_dir_all(layout.deploy_log().parent().unwrap()).unwrap();
        for commit in commits {
            append(&layout, &entry(commit)).unwrap();
        }
        (tmp, layout)
    }

    #[test]
    fn an_entry_after_a_torn_last_line_starts_on_a_line_of_its_own() {
        let (_tmp, layout) = log_of(&["a", "b"]);
        // A crash in the middle of writing "b"'s line.
        let text = std::fs::read_to_string(layout.deploy_log()).unwrap();
        std::fs::write(layout.deploy_log(), &text[..text.len() - 20]).unwrap();

        append(&layout, &entry("c")).unwrap();
        append(&layout, &entry("d")).unwrap();

        let commits: Vec<_> = read(&layout)
            .unwrap()
            .into_iter()
            .map(|e| e.commit)
            .collect();
        assert_eq!(commits, ["a", "c", "d"]);
        let text = std::fs::read_to_string(layout.deploy_log()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    /// The log is read by scripts and by older and newer versions of the hook.
    #[test]
    fn outcomes_are_written_as_the_log_always_spelled_them() {
        let all = [
            (Outcome::Deployed, "deployed"),
            (Outcome::Failed, "failed"),
            (Outcome::Unchanged, "unchanged"),
            (Outcome::RolledBack, "rolled back"),
            (Outcome::Unhealthy, "unhealthy"),
            (Outcome::Prepared, "prepared"),
            (Outcome::Aborted, "aborted"),
        ];
        for (outcome, text) in all {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        }
    }

    /// Lines written before the log named the commit's subject, author and pusher.
    #[test]
    fn an_older_line_still_reads_without_who_and_what() {
        let (_tmp, layout) = log_of(&[]);
        let old = r#"{"started_at":"2026-11-01T10:00:00.000Z","locked_at":"2026-11-01T10:00:00.100Z","finished_at":"2026-11-01T10:00:05.000Z","pid":42,"ref":"refs/heads/main","commit":"0123456789abcdef0123456789abcdef01234567","build":"20261101-100000","outcome":"deployed","error":null,"steps":[],"seconds":5.0,"output":"20261101-100000.log"}"#;
        std::fs::write(layout.deploy_log(), format!("{old}\n")).unwrap();
        append(&layout, &entry("b")).unwrap();
        let entries = read(&layout).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].build.as_deref(), Some("20261101-100000"));
        assert_eq!(entries[0].subject, None);
        assert_eq!(entries[0].pusher, None);
        assert!(entries[1].pusher.is_some());
    }

    #[test]
    fn a_whole_log_gets_no_empty_lines() {
        let (_tmp, layout) = log_of(&["a", "b"]);
        let text = std::fs::read_to_string(layout.deploy_log()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("\n\n"));
    }
}
