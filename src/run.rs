//! Dispatches a parsed command line.

use anyhow::Result;

use crate::cli::{Cli, Command, HostsAction};
use crate::infra::report::{Output, Reporter};
use crate::state::plan::Plan;
use crate::{deploy, doctor, freeze, group, hook, install, inventory, push_status, rollback};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Install {
            repo,
            root,
            branch,
            url,
            web_user,
        } => install::install(&install::Install {
            repo: &repo,
            root: &root.root,
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
                root: root.root,
                fpm_pool,
                nginx_config: Some(nginx_config),
                fpm_pools: Some(fpm_pools),
            })?;
            exit_with(if healthy { 0 } else { 1 })
        }
        Command::PostReceive { root } => hook::run(&root),
        Command::ReceivePack { repo } => exit_with(push_status::receive_pack(&repo, None)?),
        Command::Serve { repo, pusher } => exit_with(push_status::serve(&repo, pusher.as_deref())?),
        Command::Replay { rev, root } => {
            let plan = Plan::load(&root.root)?;
            let reporter = Reporter::new(Output::detect(false));
            let source = match &rev {
                Some(rev) => format!("replay {rev}"),
                None => "replay".to_string(),
            };
            let request = deploy::Request {
                source: &source,
                rev: rev.as_deref(),
                always_new: true,
            };
            deploy::deploy(&plan, &request, &reporter)
        }
        Command::Rollback { to, root } => {
            let plan = Plan::load(&root.root)?;
            let reporter = Reporter::new(Output::detect(false));
            rollback::rollback(&plan, to.as_deref(), "rollback command", &reporter)
        }
        Command::Freeze { message, root } => freeze::freeze(
            &Plan::load(&root.root)?.layout,
            &message,
            &Reporter::new(Output::detect(false)),
        ),
        Command::Unfreeze { root } => freeze::unfreeze(
            &Plan::load(&root.root)?.layout,
            &Reporter::new(Output::detect(false)),
        ),
        Command::Builds { json, root } => {
            inventory::print_builds(&Plan::load(&root.root)?.layout, json)
        }
        Command::Log { build, root } => {
            inventory::print_log(&Plan::load(&root.root)?.layout, build.as_deref())
        }
        Command::Hosts { action, json, root } => {
            let root = root.ok_or_else(|| {
                anyhow::anyhow!("the deploy root is needed: --root DIR (or ATOMDEPLOY_ROOT)")
            })?;
            let plan = Plan::load(&root)?;
            let reporter = Reporter::new(Output::detect(false));
            match action {
                None => exit_with(group::view::print(&plan, json)?),
                Some(HostsAction::Exclude { host, reason }) => {
                    group::view::exclude(&plan, &host, &reason, &reporter)
                }
                Some(HostsAction::Include { host }) => {
                    group::view::include(&plan, &host, &reporter)
                }
            }
        }
    }
}

/// The wrappers' status is git's answer to the pusher: passed on as it is.
fn exit_with(code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        std::process::exit(code)
    }
}
