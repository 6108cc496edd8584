//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.

mod builds;
mod checkout;
mod child;
mod cli;
mod composer;
mod config;
mod deploy;
mod fault;
mod health;
mod history;
mod install;
mod inventory;
mod lock;
mod manifest;
mod plan;
mod push;
mod recover;
mod report;
mod rollback;
mod run;
mod shared;
mod snapshot;
mod switch;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(err) = run::run(cli) {
        // `{:#}` prints anyhow's whole chain on one line, which git shows as one red `error:` line.
        report::error(&format!("{err:#}"));
        std::process::exit(1);
    }
}
