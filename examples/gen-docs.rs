//! Writes the man pages and shell completions that the Debian package ships, rendered from the
//! same clap definitions (`cli::Cli`) that parse the command line, so a new subcommand or flag
//! appears in them without anyone listing it:
//!
//!     cargo run --release --example gen-docs -- OUT_DIR
//!
//! gives OUT_DIR/man1/atomdeploy-hook.1 and one page per subcommand (atomdeploy-hook-install.1,
//! atomdeploy-hook-hosts-exclude.1, …), OUT_DIR/man5/deploy.yml.5 rendered from the commented
//! deploy.yml at the repository's root, and OUT_DIR/completions/ for bash, zsh and fish.
//! An example rather than a hidden subcommand: the shipped binary and the normal build do not
//! carry clap_mangen and clap_complete (dev-dependencies), and main.rs stays a parse and a call.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atomdeploy_hook::commands::cli::Cli;
use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::{Generator, Shell};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: gen-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    man_pages(&out.join("man1"))?;
    deploy_yml_page(&out.join("man5"))?;
    completions(&out.join("completions"))
}

/// One page for the command and one for each subcommand, nested ones included; the top page's
/// SUBCOMMANDS section names each of them with its page, and its ENVIRONMENT section the
/// variables a user sets. clap_mangen renders every section but the synopsis, whose options it
/// writes without their values (`[--to]` for `--to <BUILD>`), so that one is ours.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its full name (`atomdeploy-hook hosts exclude`) and the global
    // --root of `hosts` to its subcommands, as parsing sees them.
    cmd.build();
    let environment = environment(&cmd);
    write_pages(&cmd, Some(&environment), dir)
}

fn write_pages(cmd: &Command, environment: Option<&Roff>, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, None, dir)?;
    }
    let man = Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut sections: Vec<Vec<u8>> = Vec::new();
    let mut section = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut text = Vec::new();
        render(&mut text).map(|()| sections.push(text))
    };
    section(&|w| man.render_title(w))?;
    section(&|w| man.render_name_section(w))?;
    section(&|w| synopsis(cmd).to_writer(w))?;
    section(&|w| man.render_description_section(w))?;
    section(&|w| man.render_options_section(w))?;
    if cmd.has_subcommands() {
        section(&|w| man.render_subcommands_section(w))?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        section(&|w| man.render_extra_section(w))?;
    }
    if let Some(environment) = environment {
        section(&|w| environment.to_writer(w))?;
    }
    if cmd.get_version().is_some() {
        section(&|w| man.render_version_section(w))?;
    }
    // Each section comes with roff's preamble (the apostrophe string): the page needs one.
    let preamble = Roff::new().render();
    let mut page = Vec::new();
    for (i, text) in sections.iter().enumerate() {
        let body = match text.strip_prefix(preamble.as_bytes()) {
            Some(body) if i > 0 => body,
            _ => text,
        };
        page.extend_from_slice(body);
    }
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

/// `atomdeploy-hook rollback [--to <BUILD>] [--root <DIR>] [-h|--help]`: every option with its
/// value, as `--help`'s OPTIONS list shows it, optional ones first (as clap_mangen orders them),
/// then the arguments and the subcommand.
fn synopsis(cmd: &Command) -> Roff {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let mut line = vec![bold(name)];
    let options: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !arg.is_positional())
        .collect();
    let (required, optional): (Vec<&Arg>, Vec<&Arg>) =
        options.into_iter().partition(|arg| arg.is_required_set());
    for arg in optional.into_iter().chain(required) {
        // As clap's usage line: a required option bare, an optional one in brackets.
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(format!(" {open}")));
        match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => line.extend([
                bold(format!("-{short}")),
                roman("|"),
                bold(format!("--{long}")),
            ]),
            (Some(short), None) => line.push(bold(format!("-{short}"))),
            (None, Some(long)) => line.push(bold(format!("--{long}"))),
            (None, None) => {}
        }
        if arg.get_num_args().is_some_and(|n| n.takes_values()) {
            line.push(roman(" "));
            line.push(italic(format!("<{}>", value_name(arg))));
        }
        if matches!(arg.get_action(), ArgAction::Append | ArgAction::Count) {
            line.push(roman("..."));
        }
        line.push(roman(close));
    }
    for arg in cmd.get_positionals().filter(|arg| !arg.is_hide_set()) {
        let (open, close) = brackets(arg.is_required_set());
        line.push(roman(format!(" {open}")));
        line.push(italic(value_name(arg)));
        line.push(roman(close));
    }
    if cmd.has_subcommands() {
        let (open, close) = brackets(cmd.is_subcommand_required_set());
        line.push(roman(format!(" {open}")));
        line.push(italic(cmd.get_subcommand_value_name().unwrap_or("COMMAND")));
        line.push(roman(close));
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]).text(line);
    roff
}

fn brackets(required: bool) -> (&'static str, &'static str) {
    if required { ("<", ">") } else { ("[", "]") }
}

/// What clap's help calls the value: the declared value name, else the argument's id in capitals.
fn value_name(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        None => arg.get_id().as_str().to_uppercase(),
    }
}

/// The variables a user sets, for the top page: those clap reads in place of a flag (found in
/// the definitions, so a new one appears here by itself), then those the code reads by hand,
/// then those a deploy sets for the commands it runs.
fn environment(cmd: &Command) -> Roff {
    let mut flags: Vec<EnvFlag> = Vec::new();
    collect_env(cmd, &mut flags);
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for flag in &flags {
        let mut text = vec![
            roman("Read in place of "),
            bold(format!("--{}", flag.long)),
            roman(format!(
                " when it is not given, by {}.",
                flag.commands.join(", ")
            )),
        ];
        if flag.long == "root" {
            let needed: Vec<&str> = flag.required.iter().map(String::as_str).collect();
            text.push(roman(format!(
                " With neither, {} the deploy root the current directory is in: the nearest \
                 directory at or above it that holds deploy.yml and .atomdeploy/.",
                match needed.as_slice() {
                    [] => "every command takes".to_string(),
                    needed => format!("every command but {} takes", needed.join(" and ")),
                }
            )));
        }
        roff.control("TP", [])
            .text([bold(flag.var.as_str())])
            .text(text);
    }
    roff.control("TP", [])
        .text([bold("COMPOSER_AUTH")])
        .text([roman(
            "Credentials for composer, passed to composer when the deploy root has no \
             auth.json; no other program a deploy starts receives it.",
        )]);
    roff.control("PP", []).text([
        roman("A deploy sets "),
        bold("ATOMDEPLOY_ROOT"),
        roman(", "),
        bold("ATOMDEPLOY_BUILD"),
        roman(" (the new build) and "),
        bold("ATOMDEPLOY_COMMIT"),
        roman(" for the commands of deploy.yml, and "),
        bold("ATOMDEPLOY_RUN"),
        roman(
            " for every program it starts: the next deploy stops what a killed one left \
             running by it.",
        ),
    ]);
    roff
}

/// A variable clap reads for a flag: the commands that take the flag (`rollback`,
/// `hosts exclude`, …), and those of them that cannot do without it.
struct EnvFlag {
    var: String,
    long: String,
    commands: Vec<String>,
    required: Vec<String>,
}

/// Each variable clap reads for a flag, in the order of the definitions.
fn collect_env(cmd: &Command, found: &mut Vec<EnvFlag>) {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let short = name
        .split_once(' ')
        .map_or(name, |(_, rest)| rest)
        .to_string();
    for arg in cmd.get_arguments().filter(|arg| !arg.is_hide_env_set()) {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let var = var.to_string_lossy().into_owned();
        let at = match found.iter().position(|f| f.var == var && f.long == long) {
            Some(at) => at,
            None => {
                found.push(EnvFlag {
                    var,
                    long: long.to_string(),
                    commands: Vec::new(),
                    required: Vec::new(),
                });
                found.len() - 1
            }
        };
        found[at].commands.push(short.clone());
        if arg.is_required_set() {
            found[at].required.push(short.clone());
        }
    }
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect_env(sub, found);
    }
}

/// The commented example that `install` writes into a new deploy root and the package ships:
/// the one place each key of deploy.yml is described, so deploy.yml(5) is rendered from it
/// rather than written a second time, and the two cannot disagree.
const DEPLOY_YML: &str = include_str!("../deploy.yml");

/// deploy.yml(5): the file's opening comment as the description, then one entry per group of
/// keys (the file separates them with blank lines), tagged with the keys, whose body is the
/// group's comments as text and its YAML (commented out or not) as an example, in the file's
/// order.
pub fn deploy_yml_page(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut groups = DEPLOY_YML.split("\n\n").filter(|g| !g.trim().is_empty());
    let header = groups.next().context("deploy.yml is empty")?;
    let mut header = header.lines().map(uncomment);
    let title = header.next().context("deploy.yml has no title line")?;
    let summary = title
        .split_once(" — ")
        .map_or(title, |(_, summary)| summary)
        .trim_end_matches('.');
    let version = format!("atomdeploy-hook {}", env!("CARGO_PKG_VERSION"));
    let mut roff = Roff::new();
    roff.control("TH", ["DEPLOY.YML", "5", "", version.as_str()])
        .control("SH", ["NAME"])
        .text([roman(format!("deploy.yml - {summary}"))])
        .control("SH", ["DESCRIPTION"]);
    let header: Vec<&str> = header.collect();
    segments(&mut roff, &header, |line| line.starts_with(' '));
    roff.control("SH", ["KEYS"]);
    for group in groups {
        let mut yaml = false;
        // A line is YAML when it is a key at the left margin, or indented right after YAML (a
        // list item, a nested key); any other comment is text.
        let lines: Vec<(bool, &str)> = group
            .lines()
            .map(|line| {
                let text = uncomment(line);
                yaml = top_level_key(text).is_some() || (yaml && text.starts_with(' '));
                (yaml, text)
            })
            .collect();
        let keys: Vec<&str> = lines
            .iter()
            .filter(|(yaml, _)| *yaml)
            .filter_map(|(_, text)| top_level_key(text))
            .collect();
        roff.control("TP", []).text([bold(keys.join(", "))]);
        let text: Vec<&str> = lines.iter().map(|(_, text)| *text).collect();
        let is_yaml = |line: &str| lines.iter().any(|(yaml, text)| *yaml && *text == line);
        segments(&mut roff, &text, is_yaml);
    }
    roff.control("SH", ["SEE ALSO"]).text([
        bold("atomdeploy-hook"),
        roman("(1), "),
        bold("atomdeploy-hook-install"),
        roman(
            "(1); the example /usr/share/doc/atomdeploy-hook/examples/deploy.yml, and every key \
             explained in /usr/share/doc/atomdeploy-hook/docs/deploy.yml.md.gz",
        ),
    ]);
    let path = dir.join("deploy.yml.5");
    std::fs::write(&path, roff.render()).with_context(|| format!("cannot write {}", path.display()))
}

/// A line of deploy.yml without its comment sign and the one space after it.
fn uncomment(line: &str) -> &str {
    match line.strip_prefix('#') {
        Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
        None => line,
    }
}

/// `keep_builds` of `keep_builds: 5`: a key at the left margin.
fn top_level_key(line: &str) -> Option<&str> {
    let (key, rest) = line.split_once(':')?;
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    (is_key && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

/// `lines` as paragraphs of filled text, and those `verbatim` picks out as unfilled examples,
/// each run of either kind a paragraph of its own, at the indentation of the entry.
fn segments(roff: &mut Roff, lines: &[&str], verbatim: impl Fn(&str) -> bool) {
    let mut i = 0;
    while i < lines.len() {
        let kind = verbatim(lines[i]);
        let run = lines[i..]
            .iter()
            .take_while(|l| verbatim(l) == kind)
            .count();
        if i > 0 {
            roff.control("IP", []);
        }
        if kind {
            roff.control("nf", []);
            for line in &lines[i..i + run] {
                roff.text([roman(*line)]);
            }
            roff.control("fi", []);
        } else {
            roff.text([roman(lines[i..i + run].join(" "))]);
        }
        i += run;
    }
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
