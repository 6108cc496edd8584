//! `before_switch` and `after_switch`: the operator's commands, run in the build.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::infra::child;
use crate::infra::report::Reporter;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Plan;

/// What a command learns of the deploy, as `ATOMDEPLOY_*` variables.
pub(crate) struct DeployEnv<'a> {
    pub(crate) root: &'a Path,
    pub(crate) build: &'a Path,
    pub(crate) commit: &'a str,
}

/// Runs deploy.yml commands in the build, one after the other; the first failure stops them.
/// Each is killed, with everything it started, after `limit` (`command_timeout`).
pub(crate) fn run_commands(
    commands: &[String],
    env: &DeployEnv,
    limit: Duration,
    reporter: &Reporter,
) -> Result<()> {
    for script in commands {
        reporter.child_line(&format!("$ {script}"));
        let mut cmd: Command = child::shell(script, env.build);
        cmd.env("ATOMDEPLOY_ROOT", env.root)
            .env("ATOMDEPLOY_BUILD", env.build)
            .env("ATOMDEPLOY_COMMIT", env.commit);
        child::run_limited(cmd, &format!("`{script}`"), Some(limit), reporter)?;
    }
    Ok(())
}

/// after_switch for a build that has just gone live (deployed or rolled back to).
pub(crate) fn run_after_switch(plan: &Plan, build: &BuildName, reporter: &Reporter) -> Result<()> {
    let build_dir = plan.layout.build_dir(build);
    let commit = builds::revision(&plan.layout, build).unwrap_or_default();
    let env = DeployEnv {
        root: &plan.layout.root,
        build: &build_dir,
        commit: &commit,
    };
    run_commands(
        &plan.config.after_switch,
        &env,
        plan.config.command_timeout,
        reporter,
    )
}
