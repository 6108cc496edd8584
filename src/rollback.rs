//! Going back: `git push production :rollback`, `atomdeploy-hook rollback [--to BUILD]`, and
//! the automatic rollback after a failed health check. Every way back is the same atomic
//! switch as a deploy, under the same lock.
//!
//! `git push production :rollback` deletes the `rollback` branch that [`crate::state::refs`] keeps at
//! the rollback target.

use anyhow::{Context, Result, anyhow};

use crate::infra::fault;
use crate::infra::lock::DeployLock;
use crate::infra::recover;
use crate::infra::report::{Reporter, short_id};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::history::{self, Outcome};
use crate::state::plan::Plan;
use crate::state::refs::open_and_sync_ref;
use crate::steps::{commands, opcache, switch};

/// Rolls back from the live build to the newest older good build, or to `to`.
/// `source` names who asked, for the log.
pub fn rollback(plan: &Plan, to: Option<&str>, source: &str, reporter: &Reporter) -> Result<()> {
    let layout = &plan.layout;
    let started_at = builds::utc_now_rfc3339();
    let mut lock = DeployLock::acquire(&layout.lock_file(), plan.config.lock_timeout, reporter)?;
    let locked_at = builds::utc_now_rfc3339();
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
    let mut group = crate::group::local::GroupLog::default();
    let restored = if plan.config.hosts.is_empty() {
        restore(plan, &live, &target, reporter)?
    } else {
        let (restored, log) =
            crate::group::local::rollback(plan, &live, &target, &commit, reporter);
        group = log;
        restored?
    };
    let switched_at = restored.switched_at;
    fault::point("rollback-switched");
    open_and_sync_ref(plan, reporter);
    let summary = format!("rolled back to builds/{target} ({})", short_id(&commit));
    reporter.line(&summary);

    let entry = history::Entry {
        finished_at: builds::utc_now_rfc3339(),
        build: Some(target.to_string()),
        from: Some(live.to_string()),
        switched_at: Some(switched_at),
        outcome: Outcome::RolledBack,
        seconds: reporter.elapsed().as_secs_f64(),
        hosts: group.hosts,
        switch_spread_ms: group.switch_spread_ms,
        ..history::Entry::begin(&started_at, &locked_at, source, &commit)
    };
    if let Err(e) = history::append(layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    // As after a deploy: the build stays live, and the push says the rollback failed, since
    // PHP may still run the code it was meant to leave.
    match restored.opcache {
        Some(err) => Err(anyhow!(
            "{err:#}; builds/{target} is live, but PHP may still run the code of builds/{live}"
        )),
        None => Ok(()),
    }
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
            anyhow!("there is no build to roll back to: no build older than builds/{live} is left that is not bad")
        })?,
    };
    Ok(Some((live, target)))
}

/// A switch back that happened.
pub struct Restored {
    /// When the switch happened.
    pub switched_at: String,
    /// Why php-fpm's opcache could not be reset (`reset_opcache:`), if it could not.
    pub opcache: Option<anyhow::Error>,
}

/// Switches from `from` (live) to `to`, marking `from` bad when going back in time, resets
/// php-fpm's opcache when configured, then runs after_switch for `to`. A failing
/// after_switch is reported; `to` stays live.
pub fn restore(
    plan: &Plan,
    from: &BuildName,
    to: &BuildName,
    reporter: &Reporter,
) -> Result<Restored> {
    let layout = &plan.layout;
    if to < from {
        builds::mark_bad(layout, from).with_context(|| format!("cannot mark builds/{from} bad"))?;
    }
    fault::point("rollback-marked");
    let switched_at = switch::switch_step(layout, to, reporter)?;
    let opcache = plan
        .config
        .reset_opcache
        .as_ref()
        .and_then(|fpm| opcache::reset_step(layout, fpm, reporter));
    if !plan.config.after_switch.is_empty() {
        let step = reporter.step("after_switch");
        match commands::run_after_switch(plan, to, reporter) {
            Ok(()) => {
                reporter.done(step, "");
            }
            Err(err) => reporter.error(&format!("after_switch: {err:#} (builds/{to} stays live)")),
        }
    }
    Ok(Restored {
        switched_at,
        opcache,
    })
}
