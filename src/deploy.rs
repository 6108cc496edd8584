//! The deploy pipeline: lock, decide, checkout, composer, snapshot, shared, before_switch,
//! switch, after_switch, health check, cleanup, log — in that order, each step a module of
//! its own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use git2::{ErrorCode, Oid, Repository};

use crate::build_name::BuildName;
use crate::builds;
use crate::config::SnapshotMode;
use crate::history::{self, Outcome, StepTime};
use crate::lock::DeployLock;
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::report::{self, Reporter};
use crate::{
    checkout, commands, composer, fault, health, recover, refs, rollback, shared, snapshot, switch,
};

/// What to deploy.
pub struct Request<'a> {
    /// The ref or command that asked, for the log.
    pub source: &'a str,
    /// A revision to deploy instead of the deploy branch's head.
    pub rev: Option<&'a str>,
    /// Make a new build even when the commit is live already (`replay`).
    pub always_new: bool,
}

/// Deploys, under the lock, the deploy branch's head as it is once the lock is ours (or the
/// revision asked for). Taking the head under the lock, not the commit a push named, is what
/// makes concurrent pushes end with the branch head live whatever order their hooks ran in.
pub fn deploy(plan: &Plan, request: &Request, reporter: &Reporter) -> Result<()> {
    let layout = &plan.layout;
    let config = &plan.config;
    let started_at = builds::utc_now_rfc3339();
    let mut lock = DeployLock::acquire(&layout.lock_file(), config.lock_timeout, reporter)
        .inspect_err(|err| log_refusal(plan, request, &started_at, "", err, reporter))?;
    let locked_at = builds::utc_now_rfc3339();
    fault::point("locked");
    recover::recover(layout, reporter).context("cleaning up after an interrupted deploy failed")?;

    let repo = Repository::open_bare(&config.repository)
        .with_context(|| format!("cannot open the repository {}", config.repository.display()))?;
    let Some(commit) = resolve(&repo, &config.branch, request.rev, reporter)? else {
        return Ok(());
    };
    let commit_id = commit.to_string();
    let short = report::short_id(&commit_id);
    lock.record(Some(&commit_id))?;
    switch::check_latest(layout)
        .inspect_err(|err| log_refusal(plan, request, &started_at, &commit_id, err, reporter))?;

    let live = builds::live(layout);
    let live_commit = live.as_ref().and_then(|l| builds::revision(layout, l));
    let mut entry = history::Entry::begin(&started_at, &locked_at, request.source, &commit_id);
    if !request.always_new && live_commit.as_deref() == Some(commit_id.as_str()) {
        let live = live.expect("a live commit has a live build");
        reporter.line(&format!(
            "atomdeploy: {short} is already live as builds/{live}; nothing to do"
        ));
        entry.build = Some(live.to_string());
        entry.outcome = Outcome::Unchanged;
        return finish(plan, entry, reporter, None);
    }

    reporter.line(&format!(
        "atomdeploy: deploying {short} from {}",
        request.source
    ));
    let result = pipeline(plan, commit, request, live.as_ref(), reporter);
    entry.steps = reporter
        .step_durations()
        .into_iter()
        .map(|(step, d)| StepTime {
            step,
            seconds: d.as_secs_f64(),
        })
        .collect();
    let result = match result {
        Ok(Deployed {
            build,
            switched_at,
            problem: Problem::Unhealthy(err),
        }) => {
            entry.build = Some(build.to_string());
            entry.switched_at = Some(switched_at);
            entry.outcome = Outcome::Unhealthy;
            Err(err)
        }
        Ok(Deployed {
            build,
            switched_at,
            problem,
        }) => {
            entry.build = Some(build.to_string());
            entry.switched_at = Some(switched_at);
            entry.outcome = Outcome::Deployed;
            let took = reporter.elapsed().as_secs_f64();
            reporter.line(&format!(
                "deployed {short} as builds/{build} in {took:.2}s ({})",
                reporter.breakdown()
            ));
            match problem {
                Problem::AfterSwitch(err) => {
                    Err(err.context(format!("after_switch failed; builds/{build} is live")))
                }
                _ => Ok(()),
            }
        }
        Err(err) => {
            entry.outcome = Outcome::Failed;
            Err(explain_disk_full(err))
        }
    };
    finish(plan, entry, reporter, result.err())
}

/// Logs a deploy that was refused before it began (no lock, a `latest` that is not a
/// symlink), so that `atomdeploy-hook builds` lists it with the other failures.
fn log_refusal(
    plan: &Plan,
    request: &Request,
    started_at: &str,
    commit: &str,
    err: &anyhow::Error,
    reporter: &Reporter,
) {
    let entry = history::Entry {
        finished_at: builds::utc_now_rfc3339(),
        outcome: Outcome::Failed,
        error: Some(format!("{err:#}")),
        seconds: reporter.elapsed().as_secs_f64(),
        ..history::Entry::begin(started_at, "", request.source, commit)
    };
    // A single appended line: safe without the lock.
    if let Err(e) = history::append(&plan.layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
}

/// Resolves what to deploy; `None` when the deploy branch is gone (nothing to do).
fn resolve(
    repo: &Repository,
    branch: &str,
    rev: Option<&str>,
    reporter: &Reporter,
) -> Result<Option<Oid>> {
    if let Some(rev) = rev {
        let object = repo
            .revparse_single(rev)
            .with_context(|| format!("`{rev}` is not a revision in {}", repo.path().display()))?;
        let commit = object
            .peel_to_commit()
            .with_context(|| format!("`{rev}` is not a commit"))?;
        return Ok(Some(commit.id()));
    }
    let branch_ref = format!("refs/heads/{branch}");
    match repo.find_reference(&branch_ref) {
        Ok(reference) => Ok(Some(reference.peel_to_commit()?.id())),
        Err(e) if e.code() == ErrorCode::NotFound => {
            reporter.line(&format!(
                "atomdeploy: {branch_ref} does not exist; nothing to deploy"
            ));
            Ok(None)
        }
        Err(e) => Err(e).context(format!("cannot read {branch_ref}")),
    }
}

/// Logs the attempt, keeps its output, points the rollback branch at the new target.
fn finish(
    plan: &Plan,
    mut entry: history::Entry,
    reporter: &Reporter,
    error: Option<anyhow::Error>,
) -> Result<()> {
    fault::point("finish");
    let layout = &plan.layout;
    if entry.outcome != Outcome::Unchanged {
        refs::sync_ref(plan, reporter);
    }
    if let Some(err) = &error {
        let message = format!("{err:#}");
        reporter.record_error(&message);
        entry.error = Some(message);
    }
    entry.finished_at = builds::utc_now_rfc3339();
    entry.seconds = reporter.elapsed().as_secs_f64();
    if entry.outcome != Outcome::Unchanged {
        let build = entry
            .build
            .as_deref()
            .filter(|b| BuildName::parse(b).is_some_and(|b| layout.build_dir(&b).is_dir()));
        match history::save_output(layout, build, &entry.started_at, &reporter.transcript()) {
            Ok(name) => entry.output = Some(name),
            Err(e) => reporter.warn(&format!("could not keep the deploy's output: {e:#}")),
        }
    }
    if let Err(e) = history::append(layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    error.map_or(Ok(()), Err)
}

struct Deployed {
    build: BuildName,
    switched_at: String,
    problem: Problem,
}

/// What went wrong once the new build was live.
enum Problem {
    None,
    /// after_switch failed: reported, not undone.
    AfterSwitch(anyhow::Error),
    /// The health check failed: the build was rolled back (or could not be).
    Unhealthy(anyhow::Error),
}

/// Steps 3 to 12. Until the switch, any failure leaves `latest` and `builds/` as they were.
fn pipeline(
    plan: &Plan,
    commit: Oid,
    request: &Request,
    previous: Option<&BuildName>,
    reporter: &Reporter,
) -> Result<Deployed> {
    let source = request.source;
    let layout = &plan.layout;
    let config = &plan.config;
    let commit_id = commit.to_string();

    let step = reporter.step("checkout");
    let co = checkout::checkout(
        &config.repository,
        commit,
        layout,
        config.composer.is_some(),
        reporter,
    )
    .context("checkout failed")?;
    if !co.overwritten.is_empty() {
        reporter.warn(&format!(
            "overwrote edits made on the server to tracked files in application/: {}",
            co.overwritten.join(", ")
        ));
    }
    if !co.added_by_hand.is_empty() {
        reporter.warn(&format!(
            "removed files added on the server to application/ that git neither tracks nor ignores: {}",
            co.added_by_hand.join(", ")
        ));
    }
    if !co.unlinked.is_empty() {
        reporter.warn(&format!(
            "removed symlinks made on the server in application/ where the commit has files: {}",
            co.unlinked.join(", ")
        ));
    }
    reporter.done(
        step,
        &format!(
            "{} files, {} written, {} removed",
            co.files, co.written, co.removed
        ),
    );

    let outcome = match &config.composer {
        Some(settings) => Some(
            composer::decide_for(&config.repository, commit, layout, settings)
                .context("composer failed")?,
        ),
        None => None,
    };
    // When composer will write only its autoloader, everything else is copied meanwhile.
    let later = outcome
        .as_ref()
        .and_then(|o| composer::writes_only(o, &layout.application))
        .unwrap_or_default();
    let name = BuildName::next(time::OffsetDateTime::now_utc(), &builds::list(layout)?);
    let previous_dir = previous.map(|b| layout.build_dir(b));
    let never_link: Vec<_> = config.shared.iter().map(|e| e.path.clone()).collect();
    // `replay` links nothing: it is how a build equal to a fresh checkout is made, whatever
    // happened to the builds on disk.
    let link = config.snapshot == SnapshotMode::Link && !request.always_new;
    let previous_manifest = match previous {
        Some(previous) if link => Manifest::read(&layout.manifest_file(previous)),
        _ => Manifest::default(),
    };
    let options = snapshot::Options {
        link_from: previous_dir
            .as_deref()
            .filter(|_| link)
            .map(|dir| (dir, &previous_manifest)),
        read_only: config.snapshot == SnapshotMode::Link,
        never_link: &never_link,
        later: &later,
        progress: later.is_empty(),
    };

    let mut early = None;
    if let (Some(settings), Some(outcome)) = (&config.composer, outcome) {
        let step = reporter.step("composer");
        let run = || {
            composer::run(
                outcome,
                &config.repository,
                commit,
                layout,
                settings,
                reporter,
            )
        };
        let ran = if later.is_empty() {
            run()
        } else {
            // composer waits on its child in a thread of its own; the copy stays on this one,
            // where the memory the checkout freed is reused (a new thread's allocator arena
            // would start empty and add to the peak).
            std::thread::scope(|scope| {
                let composer = scope.spawn(run);
                let started = Instant::now();
                let snap = snapshot::snapshot(layout, &commit_id, &options, reporter);
                // Start writing the copy out while composer still runs, so that the flush
                // before the switch finds little left to do. (It is repeated there.)
                if let Ok(snap) = &snap {
                    let _ = switch::syncfs(snap.path());
                }
                early = Some((snap, started.elapsed()));
                composer.join().expect("composer's thread does not panic")
            })
        };
        match ran.context("composer failed")? {
            composer::Outcome::Install(why) => reporter.done(step, &format!("install ({why})")),
            composer::Outcome::Reinstall(why) => {
                reporter.done(step, &format!("install into an empty vendor/ ({why})"))
            }
            composer::Outcome::DumpAutoload => {
                reporter.done(step, "dump-autoload (autoload sources changed)")
            }
            composer::Outcome::Skipped => {
                reporter.skipped(step, "skipped (its inputs and vendor/ are unchanged)")
            }
            composer::Outcome::NoComposerJson => {
                reporter.skipped(step, "skipped (no composer.json)")
            }
        };
    }

    let step = reporter.step("snapshot");
    let (mut snap, meanwhile) = match early {
        Some((snap, took)) => (snap.context("snapshot failed")?, took),
        None => (
            snapshot::snapshot(layout, &commit_id, &options, reporter)
                .context("snapshot failed")?,
            Duration::ZERO,
        ),
    };
    snap.add(&layout.application, &later, &options)
        .context("snapshot failed")?;
    // The previous build's manifest is a map of every file: let it go before what follows.
    drop(previous_manifest);
    if let Some(warning) = snap.changed_warning() {
        reporter.warn(&warning);
    }
    let mut detail = match config.snapshot {
        SnapshotMode::Copy => format!("{} files copied, {}", snap.copied, megabytes(snap.bytes)),
        SnapshotMode::Link if !link => format!(
            "{} files copied, {} (replay: nothing linked)",
            snap.copied,
            megabytes(snap.bytes)
        ),
        SnapshotMode::Link => format!(
            "{} files linked to the live build, {} copied ({})",
            snap.linked,
            snap.copied,
            megabytes(snap.bytes)
        ),
    };
    if !meanwhile.is_zero() {
        detail.push_str(&format!(
            "; {} of it while composer ran",
            report::seconds(meanwhile)
        ));
    }
    reporter.done_after(step, meanwhile, &detail);

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

    let meta = builds::Meta {
        commit: commit_id.clone(),
        source: source.to_string(),
        deployed_at: builds::utc_now_rfc3339(),
        bad: false,
        went_live: false,
    };
    fault::point("snapshot-done");
    builds::write_meta(layout, &name, &meta).context("snapshot failed")?;
    snap.write_manifest(&layout.manifest_file(&name))
        .context("snapshot failed")?;
    let build_dir = snap
        .publish(&layout.build_dir(&name))
        .context("snapshot failed")?;
    fault::point("published");
    let env = commands::DeployEnv {
        root: &layout.root,
        build: &build_dir,
        commit: &commit_id,
    };

    let before = (|| {
        if !config.before_switch.is_empty() {
            let step = reporter.step("before_switch");
            fault::point("before_switch");
            commands::run_commands(
                &config.before_switch,
                &env,
                config.command_timeout,
                reporter,
            )
            .context("before_switch failed")?;
            reporter.done(step, "");
        }
        switch::switch_step(layout, &name, reporter)
    })();
    let switched_at = match before {
        Ok(at) => at,
        Err(err) => {
            // Never live: take it out of builds/ so that only builds that made it stay there.
            // (Checked, not assumed: the one build that must never be removed is the live one.)
            if builds::live(layout).as_ref() != Some(&name)
                && let Err(cleanup) = builds::remove_build(layout, &name)
            {
                reporter.warn(&format!("could not remove builds/{name}: {cleanup:#}"));
            }
            return Err(err);
        }
    };

    let mut problem = Problem::None;
    if !config.after_switch.is_empty() {
        let step = reporter.step("after_switch");
        fault::point("after_switch");
        match commands::run_commands(&config.after_switch, &env, config.command_timeout, reporter) {
            Ok(()) => {
                reporter.done(step, "");
            }
            // Reported once, as the deploy's last line, after the summary.
            Err(err) => problem = Problem::AfterSwitch(err),
        }
    }

    if let Some(check) = &config.healthcheck {
        let step = reporter.step("healthcheck");
        fault::point("healthcheck");
        match health::check(check, &layout.root, &build_dir, reporter) {
            Ok(attempts) => {
                reporter.done(step, &format!("healthy (attempt {attempts})"));
            }
            Err(err) => {
                return Ok(Deployed {
                    problem: Problem::Unhealthy(unhealthy(plan, &name, previous, err, reporter)),
                    build: name,
                    switched_at,
                });
            }
        }
    }

    let step = reporter.step("cleanup");
    fault::point("cleanup");
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
        switched_at,
        problem,
    })
}

/// The new build failed its health check: back to the build that was live before, if any.
/// Returns the error that ends the deploy.
fn unhealthy(
    plan: &Plan,
    build: &BuildName,
    previous: Option<&BuildName>,
    err: anyhow::Error,
    reporter: &Reporter,
) -> anyhow::Error {
    let err = err.context("health check failed");
    let Some(previous) = previous else {
        if let Err(mark) = builds::mark_bad(&plan.layout, build) {
            reporter.warn(&format!("could not mark builds/{build} bad: {mark:#}"));
        }
        return err.context(format!(
            "there is no earlier build to roll back to; builds/{build} stays live"
        ));
    };
    match rollback::restore(plan, build, previous, reporter) {
        Ok(_) => err.context(format!(
            "rolled back to builds/{previous}; builds/{build} is marked bad"
        )),
        Err(restore) => anyhow!("{restore:#}").context(format!(
            "{err:#}; rolling back to builds/{previous} failed too"
        )),
    }
}

/// Says so plainly when a step failed because the disk is full (ENOSPC, EDQUOT).
fn explain_disk_full(err: anyhow::Error) -> anyhow::Error {
    let full = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT)
    });
    if full {
        err.context("the disk is full; free space and push again (the live build was not touched)")
    } else {
        err
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
