//! Dispatches a parsed command line.

use std::io::Read;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command};
use crate::plan::Plan;
use crate::report::{Output, Reporter};
use crate::{deploy, install};

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
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the pushed refs from stdin")?;
            let plan = Plan::load(&root.root)?;
            let reporter = Reporter::new(Output::detect(true));
            deploy::post_receive(&plan, &input, &reporter)
        }
    }
}
