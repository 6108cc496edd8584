//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.
//! Everything but the command line is in the library (lib.rs).

use atomdeploy_hook::commands::{self, cli};
use atomdeploy_hook::infra::report;
use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    // Before anything is made: see the function for why.
    atomdeploy_hook::infra::perms::let_the_web_server_read();
    if let Err(err) = commands::run(cli) {
        if err.is::<report::Reported>() {
            std::process::exit(1);
        }
        // `{:#}` prints anyhow's whole chain on one line, which git shows as one red `error:` line.
        report::error(&format!("{err:#}"));
        std::process::exit(1);
    }
}
