//! Writes the man pages and shell completions that the Debian package ships, rendered from the
//! same clap definitions (`cli::Cli`) that parse the command line, so a new subcommand or flag
//! appears in them without anyone listing it:
//!
//!     cargo run --release --example gen-docs -- OUT_DIR
//!
//! gives OUT_DIR/man1/atomdeploy-hook.1 and one page per subcommand (atomdeploy-hook-install.1,
//! atomdeploy-hook-hosts-exclude.1, …), and OUT_DIR/completions/ for bash, zsh and fish.
//! An example rather than a hidden subcommand: the shipped binary and the normal build do not
//! carry clap_mangen and clap_complete (dev-dependencies), and main.rs stays a parse and a call.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atomdeploy_hook::cli::Cli;
use clap::CommandFactory;
use clap_complete::{Generator, Shell};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: gen-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    man_pages(&out.join("man1"))?;
    completions(&out.join("completions"))
}

/// One page for the command and one for each subcommand, nested ones included; the top page's
/// SUBCOMMANDS section names each of them with its page.
fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}

fn completions(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut script);
        let mut script = String::from_utf8(script).context("a completion script is not UTF-8")?;
        if shell == Shell::Bash {
            script = bash_hyphen_fix(&script, &name);
        }
        let path = dir.join(shell.file_name(&name));
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// clap_complete's bash script names a subcommand's state `atomdeploy__hook__subcmd__hosts`
/// where it walks the words, but `atomdeploy__subcmd__hook__subcmd__hosts` where it completes:
/// with a hyphen in the binary's name, nothing after a subcommand ever completes (clap issue
/// #6421, open). Spelling the second like the first fixes it; once clap fixes it, this finds
/// nothing to replace.
fn bash_hyphen_fix(script: &str, name: &str) -> String {
    const SEP: &str = "__subcmd__";
    let walked = format!("{}{SEP}", name.replace('-', "__"));
    let completed = format!("{}{SEP}", name.replace('-', SEP));
    script.replace(&completed, &walked)
}
