//! The front-end build step (`build:` in deploy.yml): commands run with `sh -c` in
//! `application/` after composer and before the snapshot, so that what they keep there
//! (node_modules/, caches) persists between deploys, and only when the commit needs them.
//!
//! The rule: what a skipped step leaves in `application/` is exactly what its commands made
//! of a commit whose inputs are the same as this one's. So the step runs when
//! - a path of the commit under its `inputs` changed since its last successful run (a git tree
//!   diff between that run's commit and this one), or it has no `inputs`;
//! - its last run did not finish (a marker written before it starts, removed once every
//!   command succeeded), or it never ran;
//! - its commands or inputs changed;
//! - the checkout removed or rewrote files in `application/` (untracked files git does not
//!   ignore, tracked files written since): they may be the step's output.
//!
//! When it runs, a command with `inputs` of its own runs only when those changed since that
//! command last succeeded (`npm ci` empties node_modules/: only for a changed lockfile). Each
//! command's success is recorded as it ends and its record dropped before it starts, so a
//! run that was interrupted runs again what had not finished, and only that of the commands
//! with inputs of their own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::config::{Build, BuildCommand};
use crate::infra::report::{self, Reporter};
use crate::infra::{child, fault};
use crate::state::app_tree::{app_tree, changed_since};
use crate::state::plan::Layout;
use crate::steps::Summary;

/// What the build step will do for a commit, decided with the repository before composer
/// runs (a snapshot may overlap composer only when the step writes nothing).
pub(crate) struct Decision {
    commit: Oid,
    /// deploy.yml's `app_dir:`, which the inputs are paths in.
    app_dir: PathBuf,
    /// Why the step runs, or `None` when it is skipped.
    why: Option<String>,
    /// Why it is skipped.
    skipped: String,
    /// For each command, why it is skipped (when the step runs).
    commands: Vec<Option<String>>,
    /// Inputs the commit does not have: a typo there would skip the step for ever.
    missing: Vec<String>,
}

impl Decision {
    /// Whether the step writes into application/ this time.
    pub(crate) fn runs(&self) -> bool {
        self.why.is_some()
    }
}

/// What the step did, for its line.
pub(crate) enum Outcome {
    Skipped(String),
    Ran {
        why: String,
        ran: usize,
        skipped: Vec<String>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Skipped(why) => write!(f, "skipped ({why})"),
            Outcome::Ran { why, ran, skipped } => {
                let s = if *ran == 1 { "" } else { "s" };
                write!(f, "{ran} command{s} ran ({why})")?;
                if !skipped.is_empty() {
                    write!(f, "; skipped {}", skipped.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl Summary for Outcome {
    fn skipped(&self) -> bool {
        matches!(self, Outcome::Skipped(_))
    }
}

/// What the state folder keeps of the step's runs.
#[derive(Serialize, Deserialize, Default)]
struct Record {
    /// The commit of the last run in which every command succeeded.
    step: Option<String>,
    /// [`config_key`] of the step when it last started: a changed configuration runs every
    /// command (a command added before `npm ci` may undo what `npm ci` made).
    config: Option<String>,
    /// Each command (by [`command_key`]) and the commit it last succeeded for.
    commands: BTreeMap<String, String>,
}

impl Record {
    /// An unreadable record is no record: the step runs in full.
    fn read(layout: &Layout) -> Record {
        std::fs::read(record_file(layout))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write(&self, layout: &Layout) -> Result<()> {
        // Renamed into place: a crash mid-write must not leave a record that says too much.
        crate::state::builds::replace_file(&record_file(layout), &serde_json::to_vec(self)?)
            .context("cannot record the build step's progress")
    }
}

fn record_file(layout: &Layout) -> PathBuf {
    layout.state.join("build.json")
}

/// Present from just before the step starts until every command succeeded.
fn pending_marker(layout: &Layout) -> PathBuf {
    layout.state.join("build.pending")
}

fn command_key(command: &BuildCommand) -> String {
    serde_json::json!([command.run, command.inputs]).to_string()
}

/// Another `app_dir:` is another app: its outputs are not in application/ any more.
fn config_key(build: &Build, app_dir: &Path) -> String {
    let commands: Vec<String> = build.commands.iter().map(command_key).collect();
    serde_json::json!([commands, build.inputs, app_dir]).to_string()
}

/// Runs `checkout` (which returns whether it removed or rewrote files in application/ that
/// were not the last commit's) so that the step's records never outlive its output: a
/// checkout that undid such files, or that did not finish (killed, failed), may have removed
/// what the step wrote, and the records are dropped before anything else can fail. Without a
/// build step they are dropped too: nothing keeps them true meanwhile.
pub(crate) fn around_checkout(
    layout: &Layout,
    configured: bool,
    checkout: impl FnOnce() -> Result<bool>,
) -> Result<bool> {
    let marker = layout.state.join("build.checkout");
    if !configured || marker.exists() {
        forget(layout)?;
    }
    if !configured {
        return checkout();
    }
    std::fs::write(&marker, "").context("cannot note the checkout for the build step")?;
    let undone = checkout()?;
    if undone {
        forget(layout)?;
    }
    let _ = std::fs::remove_file(&marker);
    Ok(undone)
}

/// Drops every record: the next run runs every command.
fn forget(layout: &Layout) -> Result<()> {
    crate::state::builds::remove_file_if_present(&record_file(layout))?;
    crate::state::builds::remove_file_if_present(&pending_marker(layout))
}

/// Whether a path of the app under one of `inputs` differs between the two commits.
enum Changed {
    Nothing,
    Path(PathBuf),
    /// The earlier commit is no longer in the repository.
    Gone,
}

fn changed_under(
    repo: &Repository,
    since: &str,
    commit: Oid,
    app_dir: &Path,
    inputs: &[PathBuf],
) -> Result<Changed> {
    let Some(changed) = changed_since(repo, since, commit, app_dir)? else {
        return Ok(Changed::Gone);
    };
    let found = changed
        .into_iter()
        .find(|path| inputs.iter().any(|input| path.starts_with(input)));
    Ok(match found {
        Some(path) => Changed::Path(path),
        None => Changed::Nothing,
    })
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why every command runs, whatever the records say.
pub(crate) enum Force {
    No,
    /// The checkout removed or rewrote files in application/ that the last run may have
    /// written.
    Undone,
    /// `replay`, which makes a build from scratch.
    Replay,
}

impl Force {
    pub(crate) fn new(replay: bool, undone: bool) -> Force {
        match (replay, undone) {
            (true, _) => Force::Replay,
            (false, true) => Force::Undone,
            (false, false) => Force::No,
        }
    }
}

/// Decides what the step does for `commit`.
pub(crate) fn decide(
    repo: &Repository,
    commit: Oid,
    app_dir: &Path,
    layout: &Layout,
    build: &Build,
    force: Force,
) -> Result<Decision> {
    let record = Record::read(layout);
    let forced = match force {
        Force::No => None,
        Force::Undone => Some(
            "the checkout removed or rewrote files in application/ that it may have written; \
             every command runs",
        ),
        Force::Replay => Some("replay: every command runs"),
    };
    let config_changed = record
        .config
        .as_ref()
        .is_some_and(|config| *config != config_key(build, app_dir));
    let forced =
        forced.or(config_changed.then_some("its commands or inputs changed; every command runs"));
    let why = match (&record.step, &build.inputs) {
        _ if forced.is_some() => forced.map(str::to_string),
        _ if pending_marker(layout).exists() => Some(
            match crate::steps::composer::failure_in(&pending_marker(layout)) {
                Some(why) => format!("the last run failed: {why}"),
                None => "the last run did not finish".into(),
            },
        ),
        (None, _) => Some("first run".into()),
        (Some(_), None) => Some("no inputs: it runs on every deploy".into()),
        (Some(last), Some(inputs)) => match changed_under(repo, last, commit, app_dir, inputs)? {
            Changed::Nothing => None,
            Changed::Path(path) => Some(format!("{} changed", path.display())),
            Changed::Gone => Some("the commit it last ran for is gone".into()),
        },
    };
    let skipped = match (&record.step, &build.inputs) {
        (Some(last), Some(inputs)) => format!(
            "no input changed since {}: {}",
            report::short_id(last),
            list(inputs)
        ),
        _ => String::new(),
    };
    let tree = app_tree(repo, commit, app_dir)?;
    let mut missing = Vec::new();
    let all_inputs = build
        .inputs
        .iter()
        .chain(build.commands.iter().filter_map(|c| c.inputs.as_ref()));
    for input in all_inputs.flatten() {
        let shown = input.display().to_string();
        if tree.get_path(input).is_err() && !missing.contains(&shown) {
            missing.push(shown);
        }
    }
    let mut commands = Vec::new();
    for command in &build.commands {
        let skip = match (&command.inputs, record.commands.get(&command_key(command))) {
            _ if forced.is_some() => None,
            (None, _) | (Some(_), None) => None,
            (Some(inputs), Some(since)) => {
                match changed_under(repo, since, commit, app_dir, inputs)? {
                    Changed::Nothing => Some(format!(
                        "`{}` ({} unchanged since {})",
                        command.run,
                        list(inputs),
                        report::short_id(since)
                    )),
                    Changed::Path(_) | Changed::Gone => None,
                }
            }
        };
        commands.push(skip);
    }
    Ok(Decision {
        commit,
        app_dir: app_dir.to_path_buf(),
        why,
        skipped,
        commands,
        missing,
    })
}

/// Runs what `decision` says, in application/; each command is killed, with everything it
/// started, after `build.timeout`.
pub(crate) fn run(
    decision: Decision,
    layout: &Layout,
    build: &Build,
    reporter: &Reporter,
) -> Result<Outcome> {
    for input in &decision.missing {
        reporter.warn(&format!(
            "build input `{input}` is not in the commit; no change there will run the build step"
        ));
    }
    let Some(why) = decision.why else {
        return Ok(Outcome::Skipped(decision.skipped));
    };
    let commit = decision.commit.to_string();
    std::fs::write(pending_marker(layout), &commit)
        .context("cannot record that the build step is starting")?;
    let mut record = Record::read(layout);
    record.step = None;
    record.config = Some(config_key(build, &decision.app_dir));
    // Commands no longer configured say nothing of what is in application/ now.
    let keys: Vec<String> = build.commands.iter().map(command_key).collect();
    record.commands.retain(|key, _| keys.contains(key));
    record.write(layout)?;
    let mut ran = 0;
    let mut skipped = Vec::new();
    for ((command, key), skip) in build.commands.iter().zip(&keys).zip(decision.commands) {
        if let Some(skip) = skip {
            reporter.child_line(&format!("skipped {skip}"));
            skipped.push(skip);
            continue;
        }
        // Until it succeeds, what it writes is no run's output.
        record.commands.remove(key);
        record.write(layout)?;
        fault::point("build");
        reporter.child_line(&format!("$ {}", command.run));
        run_command(&command.run, layout, &commit, build.timeout, reporter)
            .inspect_err(|err| crate::steps::composer::mark_failed(&pending_marker(layout), err))?;
        record.commands.insert(key.clone(), commit.clone());
        record.write(layout)?;
        ran += 1;
    }
    record.step = Some(commit);
    record.write(layout)?;
    let _ = std::fs::remove_file(pending_marker(layout));
    Ok(Outcome::Ran { why, ran, skipped })
}

fn run_command(
    script: &str,
    layout: &Layout,
    commit: &str,
    limit: Duration,
    reporter: &Reporter,
) -> Result<()> {
    let mut cmd = child::shell(script, &layout.application);
    cmd.env("ATOMDEPLOY_ROOT", &layout.root)
        .env("ATOMDEPLOY_COMMIT", commit);
    child::run_limited(cmd, &format!("`{script}`"), Some(limit), reporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(layout: &Layout) -> bool {
        record_file(layout).exists()
    }

    fn record(layout: &Layout) {
        let record = Record {
            step: Some("0".repeat(40)),
            config: None,
            commands: BTreeMap::new(),
        };
        record.write(layout).unwrap();
    }

    /// The records must never outlive the output they describe, whatever happens after a
    /// checkout that may have removed it.
    #[test]
    fn a_checkout_that_undid_files_or_did_not_finish_drops_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(&layout.state).unwrap();

        record(&layout);
        assert!(!around_checkout(&layout, true, || Ok(false)).unwrap());
        assert!(
            recorded(&layout),
            "a checkout that undid nothing keeps them"
        );

        assert!(around_checkout(&layout, true, || Ok(true)).unwrap());
        assert!(!recorded(&layout));

        // A checkout that failed (or was killed: the same marker stays) undid who knows what.
        record(&layout);
        assert!(around_checkout(&layout, true, || anyhow::bail!("disk full")).is_err());
        assert!(recorded(&layout), "dropped only once it is known");
        around_checkout(&layout, true, || Ok(false)).unwrap();
        assert!(!recorded(&layout));

        // Without a build step nothing keeps them true.
        record(&layout);
        around_checkout(&layout, false, || Ok(false)).unwrap();
        assert!(!recorded(&layout));
    }
}
