//! The deploy pipeline: lock, decide, checkout, composer, snapshot, shared, before_switch,
//! switch, after_switch, cleanup, log — in that order, each step a module of its own.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use git2::{ErrorCode, Oid, Repository};
use serde::Serialize;

use crate::builds::{self, BuildName};
use crate::lock::DeployLock;
use crate::plan::Plan;
use crate::report::{self, Reporter};
use crate::{checkout, child, composer, push, shared, snapshot, switch};

/// Handles one post-receive invocation: deploys if the push touched the deploy branch.
pub fn post_receive(plan: &Plan, input: &str, reporter: &Reporter) -> Result<()> {
    let request = push::parse(input, &plan.config.branch)?;
    let deploy_ref = format!("refs/heads/{}", plan.config.branch);
    for update in &request.ignored {
        reporter.line(&format!(
            "atomdeploy: {} is not the deploy branch ({deploy_ref}); not deployed",
            update.refname
        ));
    }
    if request.branch_deleted {
        reporter.line(&format!(
            "atomdeploy: {deploy_ref} was deleted; the live build stays as it is"
        ));
    }
    match request.deploy {
        Some(update) => deploy(plan, &update.refname, reporter),
        None => Ok(()),
    }
}

/// One line of the deploy log.
#[derive(Serialize)]
struct LogEntry<'a> {
    started_at: &'a str,
    /// When the lock was ours: the deploys of one root never overlap from here to `finished_at`.
    locked_at: &'a str,
    finished_at: String,
    pid: u32,
    #[serde(rename = "ref")]
    refname: &'a str,
    commit: &'a str,
    build: Option<String>,
    outcome: &'static str,
    error: Option<String>,
    steps: Vec<StepTime>,
    seconds: f64,
}

#[derive(Serialize)]
struct StepTime {
    step: String,
    seconds: f64,
}

/// Deploys the deploy branch's head as it is once the lock is ours. Taking the head under the
/// lock, not the commit a push named, is what makes concurrent pushes end with the branch head
/// live whatever order their hooks ran in.
pub fn deploy(plan: &Plan, refname: &str, reporter: &Reporter) -> Result<()> {
    let layout = &plan.layout;
    let config = &plan.config;
    let started_at = builds::utc_now_rfc3339();
    let mut lock = DeployLock::acquire(&layout.lock_file(), config.lock_timeout, reporter)?;
    let locked_at = builds::utc_now_rfc3339();

    let repo = Repository::open_bare(&config.repository)
        .with_context(|| format!("cannot open the repository {}", config.repository.display()))?;
    let branch_ref = format!("refs/heads/{}", config.branch);
    let commit = match repo.find_reference(&branch_ref) {
        Ok(reference) => reference.peel_to_commit()?.id(),
        Err(e) if e.code() == ErrorCode::NotFound => {
            reporter.line(&format!(
                "atomdeploy: {branch_ref} does not exist any more; nothing to deploy"
            ));
            return Ok(());
        }
        Err(e) => return Err(e).context(format!("cannot read {branch_ref}")),
    };
    let commit_id = commit.to_string();
    let short = short_id(&commit_id);
    lock.record(Some(&commit_id))?;
    switch::check_latest(layout)?;

    let live = builds::live(layout);
    let unchanged = live
        .as_ref()
        .filter(|live| builds::revision(layout, live).as_deref() == Some(commit_id.as_str()));
    let outcome = match unchanged {
        Some(live) => {
            reporter.line(&format!(
                "atomdeploy: {short} is already live as builds/{live}; nothing to do"
            ));
            Ok(None)
        }
        None => {
            reporter.line(&format!("atomdeploy: deploying {short} from {branch_ref}"));
            pipeline(plan, commit, reporter).map(Some)
        }
    };
    let (build, outcome_name, error) = match &outcome {
        Ok(None) => (live.map(|l| l.to_string()), "unchanged", None),
        Ok(Some(done)) => (
            Some(done.build.to_string()),
            "deployed",
            done.after_switch.as_ref().map(|e| format!("{e:#}")),
        ),
        Err(e) => (None, "failed", Some(format!("{e:#}"))),
    };
    let entry = LogEntry {
        started_at: &started_at,
        locked_at: &locked_at,
        finished_at: builds::utc_now_rfc3339(),
        pid: std::process::id(),
        refname,
        commit: &commit_id,
        build,
        outcome: outcome_name,
        error,
        steps: reporter
            .step_durations()
            .into_iter()
            .map(|(step, d)| StepTime {
                step,
                seconds: d.as_secs_f64(),
            })
            .collect(),
        seconds: reporter.elapsed().as_secs_f64(),
    };
    if let Err(e) = append_log(&layout.deploy_log(), &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    drop(lock);

    let Some(done) = outcome? else { return Ok(()) };
    reporter.line(&format!(
        "deployed {short} as builds/{} in {:.2}s",
        done.build,
        reporter.elapsed().as_secs_f64()
    ));
    match done.after_switch {
        Some(err) => Err(err.context(format!(
            "after_switch failed; builds/{} is live",
            done.build
        ))),
        None => Ok(()),
    }
}

struct Deployed {
    build: BuildName,
    /// after_switch runs once the build is live; its failure is reported, not undone.
    after_switch: Option<anyhow::Error>,
}

/// Steps 3 to 10. Until the switch, any failure leaves `latest` and `builds/` as they were.
fn pipeline(plan: &Plan, commit: Oid, reporter: &Reporter) -> Result<Deployed> {
    let layout = &plan.layout;
    let config = &plan.config;
    let commit_id = commit.to_string();

    let step = reporter.step("checkout");
    let co = checkout::checkout(&config.repository, commit, layout, reporter)
        .context("checkout failed")?;
    if !co.overwritten.is_empty() {
        reporter.warn(&format!(
            "overwrote edits made on the server to tracked files in application/: {}",
            co.overwritten.join(", ")
        ));
    }
    reporter.done(
        step,
        &format!(
            "{} files, {} written, {} removed",
            co.files, co.written, co.removed
        ),
    );

    if let Some(settings) = &config.composer {
        let step = reporter.step("composer");
        let outcome = composer::install(&layout.application, settings, reporter)
            .context("composer failed")?;
        let detail = match outcome {
            composer::Outcome::Ran => "",
            composer::Outcome::NoComposerJson => "skipped, no composer.json",
        };
        reporter.done(step, detail);
    }

    let step = reporter.step("snapshot");
    let name = BuildName::next(time::OffsetDateTime::now_utc(), &builds::list(layout)?);
    let snap = snapshot::snapshot(layout, &commit_id, reporter).context("snapshot failed")?;
    reporter.done(
        step,
        &format!("{} files, {}", snap.files, megabytes(snap.bytes)),
    );

    if !config.shared.is_empty() {
        let step = reporter.step("shared");
        let linked = shared::link_all(layout, snap.path(), &config.shared)
            .context("linking shared entries failed")?;
        let seeded = linked
            .iter()
            .filter(|l| **l != shared::Linked::Existing)
            .count();
        reporter.done(
            step,
            &format!("{} linked, {seeded} new in shared/", linked.len()),
        );
    }

    let build_dir = snap
        .publish(&layout.builds.join(name.to_string()))
        .context("snapshot failed")?;
    let env = DeployEnv {
        root: &layout.root,
        build: &build_dir,
        commit: &commit_id,
    };

    let before = (|| {
        if !config.before_switch.is_empty() {
            let step = reporter.step("before_switch");
            run_commands(&config.before_switch, &env, reporter).context("before_switch failed")?;
            reporter.done(step, "");
        }
        let step = reporter.step("switch");
        let took = switch::switch(layout, &name).context("switch failed")?;
        reporter.done(
            step,
            &format!(
                "latest -> builds/{name} (rename took {})",
                report::seconds(took)
            ),
        );
        Ok(())
    })();
    if let Err(err) = before {
        // Never live: take it out of builds/ so that only builds that made it stay there.
        if let Err(cleanup) = builds::remove_build(layout, &name) {
            reporter.warn(&format!("could not remove builds/{name}: {cleanup:#}"));
        }
        return Err(err);
    }

    let mut after_switch = None;
    if !config.after_switch.is_empty() {
        let step = reporter.step("after_switch");
        match run_commands(&config.after_switch, &env, reporter) {
            Ok(()) => {
                reporter.done(step, "");
            }
            Err(err) => {
                report::error(&format!("after_switch: {err:#} (builds/{name} stays live)"));
                after_switch = Some(err);
            }
        }
    }

    let step = reporter.step("cleanup");
    match builds::cleanup(layout, config.keep_builds) {
        Ok(removed) => {
            reporter.done(
                step,
                &format!(
                    "{} old builds removed (keep_builds: {})",
                    removed.len(),
                    config.keep_builds
                ),
            );
        }
        Err(err) => reporter.warn(&format!("cleanup failed (the new build is live): {err:#}")),
    }
    Ok(Deployed {
        build: name,
        after_switch,
    })
}

struct DeployEnv<'a> {
    root: &'a Path,
    build: &'a Path,
    commit: &'a str,
}

/// Runs deploy.yml commands in the build, one after the other; the first failure stops them.
fn run_commands(commands: &[String], env: &DeployEnv, reporter: &Reporter) -> Result<()> {
    for script in commands {
        reporter.child_line(&format!("$ {script}"));
        let mut cmd: Command = child::shell(script, env.build);
        cmd.env("ATOMDEPLOY_ROOT", env.root)
            .env("ATOMDEPLOY_BUILD", env.build)
            .env("ATOMDEPLOY_COMMIT", env.commit);
        child::run_streamed(cmd, &format!("`{script}`"), reporter)?;
    }
    Ok(())
}

fn append_log(path: &Path, entry: &LogEntry) -> Result<()> {
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    // One write of one line to a file opened for appending: concurrent writers cannot
    // interleave within it.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())?;
    Ok(())
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(7)]
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
