//! The top layer: what an operator (or git, or ssh) runs. [`run`] dispatches a parsed
//! command line to the module that does it, or down to the layer below ([`crate::receive`])
//! for what a push also does: a deploy, a rollback by hand, a group operation.
//!
//! Layers, top to bottom: `commands`, `receive`, `steps`, `state`, `infra`, `config`. A
//! module imports only from its own layer or below (`scripts/shape/cycles.py` checks it).

pub mod cli;
pub(crate) mod doctor;
pub(crate) mod hosts;
pub(crate) mod install;
pub(crate) mod inventory;
pub mod serve;

use std::path::PathBuf;

use anyhow::Result;

use crate::infra::report::{Output, Reporter};
use crate::receive::{deploy, group, hook, rollback};
use crate::state::freeze;
use crate::state::plan::Plan;
use cli::{Cli, Command, HostsAction};

pub fn run(cli: Cli) -> Result<()> {
    // Before anything is read or written, and while this process has one thread.
    crate::infra::owner::become_owner(&written_roots(&cli.command)?)?;
    match cli.command {
        Command::Install {
            repo,
            root,
            branch,
            url,
            web_user,
        } => install::install(&install::Install {
            repo: &repo,
            root: &root,
            branch: &branch,
            url: url.as_deref(),
            web_user: web_user.as_deref(),
        }),
        Command::Doctor {
            root,
            fpm_pool,
            nginx_config,
            fpm_pools,
        } => {
            let healthy = doctor::doctor(&doctor::Options {
                root: root.dir()?,
                fpm_pool,
                nginx_config: Some(nginx_config),
                fpm_pools: Some(fpm_pools),
            })?;
            exit_with(if healthy { 0 } else { 1 })
        }
        Command::PostReceive { root } => hook::run(&root),
        Command::ReceivePack { repo } => {
            exit_with(serve::receive_pack(&repo, None, serve::Caller::Anyone)?)
        }
        Command::Serve {
            repo,
            pusher,
            group_primary,
            appended,
        } => {
            let caller = serve::Caller::from_flag(group_primary);
            exit_with(serve::serve(
                &repo,
                pusher.as_deref(),
                caller,
                appended.as_deref(),
            )?)
        }
        Command::Replay { rev, root } => replay(rev.as_deref(), &root.dir()?),
        Command::Rollback { to, root } => {
            let plan = Plan::load(&root.dir()?)?;
            group::trust::refuse_if_member(&plan, "`atomdeploy-hook rollback`")?;
            let reporter = Reporter::new(Output::detect(false));
            rollback::rollback(&plan, to.as_deref(), "rollback command", &reporter)
        }
        Command::Freeze { message, root } => freeze::freeze(
            &Plan::load(&root.dir()?)?.layout,
            &message,
            &Reporter::new(Output::detect(false)),
        ),
        Command::LeaveGroup { root } => {
            group::trust::leave(&root.dir()?, &Reporter::new(Output::detect(false)))
        }
        Command::Unfreeze { root } => freeze::unfreeze(
            &Plan::load(&root.dir()?)?.layout,
            &Reporter::new(Output::detect(false)),
        ),
        Command::EmptyTrash { root } => crate::steps::cleanup::empty_trash(&root.dir()?),
        Command::Builds { json, names, root } => {
            let layout = Plan::load(&root.dir()?)?.layout;
            if names {
                inventory::print_build_names(&layout)
            } else {
                inventory::print_builds(&layout, json)
            }
        }
        Command::Log { build, root } => {
            inventory::print_log(&Plan::load(&root.dir()?)?.layout, build.as_deref())
        }
        Command::Hosts { action, json, root } => {
            let plan = Plan::load(&cli::root_or_here(root)?)?;
            let reporter = Reporter::new(Output::detect(false));
            match action {
                None => exit_with(hosts::print(&plan, json)?),
                Some(HostsAction::Exclude { host, reason }) => {
                    hosts::exclude(&plan, &host, &reason, &reporter)
                }
                Some(HostsAction::Include { host }) => hosts::include(&plan, &host, &reporter),
            }
        }
    }
}

/// The deploy roots a command writes into, which only their owner may do (see
/// `infra/owner.rs`); none for the read-only ones, which anyone may run, and for `install`,
/// which creates a root and keeps rules of its own. A root found from the current directory
/// counts as much as one given.
fn written_roots(command: &Command) -> Result<Vec<PathBuf>> {
    Ok(match command {
        Command::PostReceive { root } => root.clone(),
        Command::Replay { root, .. }
        | Command::Rollback { root, .. }
        | Command::Freeze { root, .. }
        | Command::Unfreeze { root }
        | Command::EmptyTrash { root }
        | Command::LeaveGroup { root } => vec![cli::root_or_here(root.root.clone())?],
        Command::Hosts {
            action: Some(_),
            root,
            ..
        } => vec![cli::root_or_here(root.clone())?],
        Command::Install { .. }
        | Command::Doctor { .. }
        | Command::ReceivePack { .. }
        | Command::Serve { .. }
        | Command::Builds { .. }
        | Command::Log { .. }
        | Command::Hosts { action: None, .. } => Vec::new(),
    })
}

/// `atomdeploy-hook replay`: always a new build, refused on a host of a group.
fn replay(rev: Option<&str>, root: &std::path::Path) -> Result<()> {
    let plan = Plan::load(root)?;
    group::trust::refuse_if_member(&plan, "`atomdeploy-hook replay`")?;
    let reporter = Reporter::new(Output::detect(false));
    let source = match rev {
        Some(rev) => format!("replay {rev}"),
        None => "replay".to_string(),
    };
    let request = deploy::Request {
        source: &source,
        rev,
        always_new: true,
    };
    deploy::deploy(&plan, &request, &reporter)
}

/// The wrappers' status is git's answer to the pusher: passed on as it is.
fn exit_with(code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        std::process::exit(code)
    }
}
