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
            script = bash_build_names(&script, &name)?;
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

/// `rollback --to <TAB>` offers the root's builds rather than files: clap_complete completes
/// every option's value as a file name, so the `--to)` case of the rollback block is replaced
/// by a call to a function of ours. It asks the binary itself (`builds --names`), so that the
/// root is found as the command would find it: `--root` on the line, else `$ATOMDEPLOY_ROOT`,
/// else the root around the current directory. Fails when clap's output no longer has the case,
/// rather than shipping a completion without it.
fn bash_build_names(script: &str, name: &str) -> Result<String> {
    let block = format!("{}__subcmd__rollback)\n", name.replace('-', "__"));
    let files = "                --to)\n                    COMPREPLY=($(compgen -f \"${cur}\"))\n";
    let builds = "                --to)\n                    COMPREPLY=($(compgen -W \
                  \"$(_atomdeploy__hook_build_names)\" -- \"${cur}\"))\n";
    let start = script
        .find(&block)
        .context("the bash completion has no rollback block")?;
    let at = start
        + script[start..]
            .find(files)
            .context("the bash completion's rollback block completes no --to")?;
    let mut patched = format!("{}{builds}{}", &script[..at], &script[at + files.len()..]);
    let register = patched
        .rfind("\nif [[ \"${BASH_VERSINFO[0]}\"")
        .or_else(|| patched.rfind("\ncomplete "))
        .context("the bash completion registers no function")?;
    patched.insert_str(register + 1, BASH_BUILD_NAMES);
    Ok(patched)
}

const BASH_BUILD_NAMES: &str = r#"# The builds of the root this command line names (--root DIR or --root=DIR), else of
# $ATOMDEPLOY_ROOT's, else of the root around the current directory: the binary finds it.
_atomdeploy__hook_build_names() {
    local i word root=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == --root ]] || continue
        word=${COMP_WORDS[i + 1]}
        [[ $word == = ]] && word=${COMP_WORDS[i + 2]}
        [[ $word == "~/"* ]] && word=$HOME/${word#"~/"}
        root=(--root "$word")
    done
    "${COMP_WORDS[0]}" builds --names "${root[@]}" 2>/dev/null
}

"#;
