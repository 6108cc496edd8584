//! The deploy root's own checks: the repository and its hook, deploy.yml, the tools a deploy
//! runs, the disk, `latest`, and the secrets in shared/.

use crate::infra::quote::quote_if_needed;
use crate::state::plan::Plan;

use super::{Context, Finding, Options};

mod disk;
mod hook;
mod latest;
mod owner;
mod secrets;
mod tools;

/// Loads deploy.yml, saying whether it is valid.
pub(crate) fn load(options: &Options, out: &mut Vec<Finding>) -> Option<Plan> {
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

pub(crate) fn check(context: &Context, out: &mut Vec<Finding>) {
    match &context.plan {
        Some(plan) => {
            hook::check(plan, out);
            tools::check(plan, out);
            disk::check(plan, out);
        }
        None => {
            // Which repository, which tools and which snapshot mode are deploy.yml's to say.
            for check in ["hook", "fsck", "tools", "disk"] {
                out.push(Finding::warn(
                    check,
                    "not checked: deploy.yml did not load (see its finding)",
                    "correct deploy.yml, then run `atomdeploy-hook doctor` again",
                ));
            }
        }
    }
    latest::check(&context.layout, out);
    latest::freeze(&context.layout, out);
    owner::check(&context.layout, out);
    secrets::check(&context.layout, context.plan.as_ref(), out);
    membership(&context.layout, out);
}

/// A host of a group says so: its own pushes are refused, which an operator looking at the
/// server should not have to find out by pushing. Nothing on a server of its own.
fn membership(layout: &crate::state::plan::Layout, out: &mut Vec<Finding>) {
    if let Some(member) = crate::receive::group::trust::membership(layout) {
        out.push(Finding::ok(
            "group",
            format!(
                "a host of a group: {} deploys it (since {}); its own pushes, `replay` and \
                 `rollback` are refused until `atomdeploy-hook leave-group --root {}`",
                member.primary,
                member.since,
                shell_path(&layout.root)
            ),
        ));
    }
}

/// `atomdeploy-hook install …` for this root: rewrites the hook (and sets fsck) and keeps
/// deploy.yml as it is.
fn install_fix(plan: &Plan) -> String {
    format!(
        "atomdeploy-hook install --repo {} --root {} --branch {}",
        quote_if_needed(&plan.config.repository.to_string_lossy()),
        quote_if_needed(&plan.layout.root.to_string_lossy()),
        quote_if_needed(&plan.config.branch)
    )
}

/// A path as an operator pastes it into a shell.
pub(super) fn shell_path(path: &std::path::Path) -> String {
    quote_if_needed(&path.to_string_lossy())
}
