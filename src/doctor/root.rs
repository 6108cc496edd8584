//! The deploy root's own checks: the repository and its hook, deploy.yml, the tools a deploy
//! runs, the disk, and `latest`.

use crate::state::plan::Plan;

use super::{Context, Finding, Options};

/// Loads deploy.yml, saying whether it is valid.
pub fn load(options: &Options, out: &mut Vec<Finding>) -> Option<Plan> {
    match Plan::load(&options.root) {
        Ok(plan) => {
            out.push(Finding::ok(
                "deploy.yml",
                format!("{} is valid", plan.layout.config_file.display()),
            ));
            Some(plan)
        }
        Err(err) => {
            out.push(Finding::fail(
                "deploy.yml",
                format!("{err:#}"),
                "correct it at the place named; `atomdeploy-hook install` writes a documented one",
            ));
            None
        }
    }
}

pub fn check(_context: &Context, _out: &mut Vec<Finding>) {}
