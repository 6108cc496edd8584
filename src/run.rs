//! Dispatches a parsed command line.

use std::io::Read;

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cli::{Cli, Command};
use crate::plan::Plan;
use crate::report::{Output, Reporter};
use crate::{deploy, install, inventory, rollback};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Install {
            repo,
            root,
            branch,
            url,
        } => install::install(&install::Install {
            repo: &repo,
            root: &root.root,
            branch: &branch,
            url: url.as_deref(),
        }),
        Command::PostReceive { root } => {
            // Bytes, not text: a ref name need not be UTF-8 (see push.rs).
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("cannot read the pushed refs from stdin")?;
            let plan = Plan::load(&root.root)?;
            // git runs hooks in the repository that received the push.
            if let Some(git_dir) = std::env::var_os("GIT_DIR")
                && !install::same_path(Path::new(&git_dir), &plan.config.repository)
            {
                bail!(
                    "this hook runs for {}, but {} deploys {}; fix its `repository:`",
                    std::fs::canonicalize(&git_dir)
                        .unwrap_or_else(|_| git_dir.into())
                        .display(),
                    plan.layout.config_file.display(),
                    plan.config.repository.display()
                );
            }
            let reporter = Reporter::new(Output::detect(true));
            deploy::post_receive(&plan, &input, &reporter)
        }
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
        Command::Builds { json, root } => {
            inventory::print_builds(&Plan::load(&root.root)?.layout, json)
        }
        Command::Log { build, root } => {
            inventory::print_log(&Plan::load(&root.root)?.layout, build.as_deref())
        }
    }
}
