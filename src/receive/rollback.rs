//! Going back: `git push production :rollback`, `atomdeploy-hook rollback [--to BUILD]`, and
//! the automatic rollback after a failed health check. Every way back is the same atomic
//! switch as a deploy, under the same lock.
//!
//! `git push production :rollback` deletes the `rollback` branch that [`crate::state::refs`] keeps at
//! the rollback target.

use anyhow::{Context, Result, anyhow};

use crate::infra::clock;
use crate::infra::fault;
use crate::infra::lock::DeployLock;
use crate::infra::report::{Reporter, short_id};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::history::{self, Outcome};
use crate::state::plan::Plan;
use crate::state::recover;
use crate::state::refs::open_and_sync_ref;
use crate::steps::restore::restore;
use crate::steps::switch;

/// Rolls back from the live build to the newest older good build of another commit, or to
/// `to`.
/// `source` names who asked, for the log.
pub(crate) fn rollback(
    plan: &Plan,
    to: Option<&str>,
    source: &str,
    reporter: &Reporter,
) -> Result<()> {
    let layout = &plan.layout;
    let started_at = clock::utc_now_rfc3339();
    let mut lock = DeployLock::acquire(&layout.lock_file(), plan.config.lock_timeout, reporter)?;
    let locked_at = clock::utc_now_rfc3339();
    fault::point("rollback-locked");
    recover::recover(layout, reporter).context("cleaning up after an interrupted deploy failed")?;
    switch::check_latest(layout)?;
    let result = choose_target(plan, to, reporter);
    let (live, target) = match result {
        Ok(Some(pair)) => pair,
        Ok(None) => return Ok(()),
        Err(err) => {
            // Whatever the reason, the branch should show the truth afterwards.
            open_and_sync_ref(plan, reporter);
            return Err(err);
        }
    };
    let commit = builds::revision(layout, &target).unwrap_or_default();
    lock.record(Some(&commit))?;
    reporter.line(&format!(
        "atomdeploy: rolling back from builds/{live} to builds/{target}"
    ));
    let mut group = crate::receive::group::local::GroupLog::default();
    let restored = if plan.config.hosts.is_empty() {
        restore(plan, &live, &target, reporter)?
    } else {
        let (restored, log) =
            crate::receive::group::local::rollback(plan, &live, &target, &commit, reporter);
        match restored {
            Ok(restored) => {
                group = log;
                restored
            }
            Err(err) => {
                // Nothing moved (or everything went back): the branch and the log say so.
                open_and_sync_ref(plan, reporter);
                let entry = history::Entry {
                    finished_at: clock::utc_now_rfc3339(),
                    from: Some(live.to_string()),
                    error: Some(format!("{err:#}")),
                    seconds: reporter.elapsed().as_secs_f64(),
                    hosts: log.hosts,
                    ..history::Entry::begin(&started_at, &locked_at, source, &commit)
                };
                log_and_notify(plan, entry, lock, reporter);
                return Err(err);
            }
        }
    };
    let switched_at = restored.switched_at;
    fault::point("rollback-switched");
    open_and_sync_ref(plan, reporter);
    let summary = format!("rolled back to builds/{target} ({})", short_id(&commit));
    reporter.line(&summary);

    let entry = history::Entry {
        finished_at: clock::utc_now_rfc3339(),
        build: Some(target.to_string()),
        from: Some(live.to_string()),
        switched_at: Some(switched_at),
        outcome: Outcome::RolledBack,
        seconds: reporter.elapsed().as_secs_f64(),
        hosts: group.hosts,
        switch_spread_ms: group.switch_spread_ms,
        ..history::Entry::begin(&started_at, &locked_at, source, &commit)
    };
    log_and_notify(plan, entry, lock, reporter);
    // As after a deploy: the build stays live, and the push says the rollback failed, since
    // PHP may still run the code it was meant to leave.
    match restored.opcache {
        Some(err) => Err(anyhow!(
            "{err:#}; builds/{target} is live, but PHP may still run the code of builds/{live}"
        )),
        None => Ok(()),
    }
}

/// Appends the rollback's entry to the deploy log, then, with the lock released, tells the
/// `notify:` URLs: as after a deploy (deploy.rs `finish`), a slow webhook never holds the
/// queued pushes.
fn log_and_notify(plan: &Plan, mut entry: history::Entry, lock: DeployLock, reporter: &Reporter) {
    entry.describe_at(&plan.config.repository);
    if let Err(e) = history::append(&plan.layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    drop(lock);
    crate::receive::notify::send(plan, &entry, reporter);
}

/// `(live, target)`, or `None` when the target is live already.
fn choose_target(
    plan: &Plan,
    to: Option<&str>,
    reporter: &Reporter,
) -> Result<Option<(BuildName, BuildName)>> {
    let layout = &plan.layout;
    let live = builds::live(layout)
        .ok_or_else(|| anyhow!("nothing is live yet, so there is nothing to roll back"))?;
    let target = match to {
        Some(name) => {
            let target = BuildName::parse(name)
                .filter(|b| layout.build_dir(b).is_dir())
                .ok_or_else(|| anyhow!("there is no build `{name}` in builds/ (`atomdeploy-hook builds` lists them)"))?;
            if target == live {
                reporter.line(&format!("atomdeploy: builds/{live} is live already; nothing to do"));
                return Ok(None);
            }
            if builds::is_bad(layout, &target) {
                reporter.warn(&format!("builds/{target} is marked bad; switching to it as asked"));
            }
            target
        }
        None => builds::rollback_target(layout)?.ok_or_else(|| {
            anyhow!("there is no build to roll back to: no build older than builds/{live} is left that is not bad and of another commit")
        })?,
    };
    Ok(Some((live, target)))
}
