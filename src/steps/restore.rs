//! Switching back to an older build: the flip, the opcache reset and after_switch, as
//! `atomdeploy-hook rollback`, `git push production :rollback`, the automatic rollback of a
//! failed health check and a group that goes back all do it.

use anyhow::{Context, Result};

use crate::infra::fault;
use crate::infra::report::Reporter;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Plan;
use crate::steps::{commands, opcache, switch};

/// A switch back that happened.
pub(crate) struct Restored {
    /// When the switch happened.
    pub(crate) switched_at: String,
    /// Why php-fpm's opcache could not be reset (`reset_opcache:`), if it could not.
    pub(crate) opcache: Option<anyhow::Error>,
}

/// Switches from `from` (live) to `to`, marking `from` bad when going back in time, resets
/// php-fpm's opcache when configured, then runs after_switch for `to`. A failing
/// after_switch is reported; `to` stays live.
pub(crate) fn restore(
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
