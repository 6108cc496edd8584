//! The programs a deploy runs: php and composer, and those of the `build:` step's commands.
//!
//! Looked up in doctor's own PATH: run doctor as the user, and with the PATH, that pushes run
//! the hook with (the ssh login's), or it answers for another environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::commands::doctor::{Finding, Level};
use crate::state::plan::Plan;

pub(crate) fn check(plan: &Plan, out: &mut Vec<Finding>) {
    out.push(program(
        "php",
        &["-r", "echo PHP_VERSION;"],
        "composer, composer's scripts and the app",
    ));
    if plan.config.composer.is_some() {
        let mut found = program(
            "composer",
            &["--version", "--no-interaction"],
            "the deploy's composer step (`composer: false` in deploy.yml turns it off)",
        );
        // The step skips an app without composer.json (and application/ is empty before
        // the first deploy): a missing composer hurts only once the app has one.
        let app = plan.layout.application.join("composer.json");
        if found.level == Level::Fail && !app.exists() {
            found.level = Level::Warn;
            found.message += &format!(
                " once the app has a composer.json ({} has none)",
                app.display()
            );
        }
        out.push(found);
    }
    if let Some(build) = &plan.config.build {
        let mut seen = Vec::new();
        for command in &build.commands {
            for name in programs(&command.run) {
                if !seen.contains(&name) {
                    out.push(build_program(&name, &command.run));
                    seen.push(name);
                }
            }
        }
    }
}

/// php or composer: where it is and its version.
fn program(name: &str, version_args: &[&str], needed_by: &str) -> Finding {
    let Ok(path) = which::which(name) else {
        return Finding::fail(
            "tools",
            format!("`{name}` is not in PATH, needed by {needed_by}: every deploy fails"),
            install_line(name),
        );
    };
    match version(&path, version_args) {
        Some(version) => Finding::ok("tools", format!("{name}: {} ({version})", path.display())),
        None => Finding::fail(
            "tools",
            format!(
                "{} does not run (`{name} {}` failed)",
                path.display(),
                version_args.join(" ")
            ),
            install_line(name),
        ),
    }
}

/// The first line a program prints when asked for its version, if it runs.
fn version(path: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(path)
        .args(args)
        // Composer run as root would otherwise ask whether to go on.
        .env("COMPOSER_ALLOW_SUPERUSER", "1")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // php may print a startup warning before the version it echoes last; composer says
    // `Composer version …` after any notice.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines
        .clone()
        .find(|l| l.to_lowercase().contains("version"))
        .or_else(|| lines.next_back());
    Some(line.unwrap_or_default().to_string())
}

fn build_program(name: &str, run: &str) -> Finding {
    let found = if name.contains('/') {
        // A path (`./node_modules/.bin/vite`) is the app's own, made by an earlier command.
        Some(PathBuf::from(name))
    } else {
        which::which(name).ok()
    };
    match found {
        Some(path) => Finding::ok(
            "tools",
            format!("{name} (build: `{run}`): {}", path.display()),
        ),
        None => Finding::fail(
            "tools",
            format!("`{name}` is not in PATH; the build step's `{run}` fails on every deploy"),
            install_line(name),
        ),
    }
}

/// The programs a `sh -c` command line starts: the first word of each of its commands, past
/// variable assignments, leaving out the shell's own builtins.
fn programs(run: &str) -> Vec<String> {
    const BUILTINS: &[&str] = &[
        "cd", "export", "set", "unset", "test", "[", "true", "false", "echo", "printf", ":", ".",
        "exit", "exec", "env", "if", "then", "else", "fi", "for", "do", "done", "while", "!",
        "command", "umask", "source",
    ];
    let mut names = Vec::new();
    for part in run.split(['&', '|', ';', '(', ')', '\n']) {
        let first = part
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
            .find(|w| !is_assignment(w));
        if let Some(word) = first
            && !word.is_empty()
            && !BUILTINS.contains(&word)
            && !names.iter().any(|n| n == word)
        {
            names.push(word.to_string());
        }
    }
    names
}

/// `NAME=value` before a command sets a variable for it.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// How to get a missing program on Debian or Ubuntu.
fn install_line(name: &str) -> String {
    match name {
        "php" => "apt-get install php-cli".into(),
        "composer" => "apt-get install composer".into(),
        "node" | "nodejs" => "apt-get install nodejs".into(),
        "npm" | "npx" => "apt-get install npm".into(),
        "yarn" | "pnpm" => format!("npm install --global {name} (or `corepack enable`)"),
        _ if name.contains('/') => format!("make {name} exist and be executable"),
        _ => format!("apt-get install {name} (or the package that provides `{name}`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_of_a_line_is_found() {
        assert_eq!(programs("npm ci"), ["npm"]);
        assert_eq!(
            programs("NODE_ENV=production npm run build && npx vite build"),
            ["npm", "npx"]
        );
        assert_eq!(
            programs("cd frontend; yarn install | tee log"),
            ["yarn", "tee"]
        );
        assert_eq!(programs("test -d dist || make assets"), ["make"]);
    }
}
