//! Environments: one bare repository serving several deploy roots, e.g. `main` → `/srv/app`
//! and `staging` → `/srv/app-staging`, each with its own deploy.yml, lock, builds and log.
//!
//! The hook names them all: `post-receive --root /srv/app --root /srv/app-staging`. A root
//! knows nothing of the others, except which control branches are its own: `rollback` and
//! `replay` can mean one root only, so they stay the first root's (nothing changes for a
//! repository with one root) and each root added later gets `rollback-<branch>` and
//! `replay-<branch>`, recorded by `install` in its state folder (the CLI's `rollback --root`
//! must find the name without the hook).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::hook;
use crate::infra::report::{self, Output, Reported, Reporter};
use crate::push::{self, Branches, RefUpdate};
use crate::push_status::StatusFile;
use crate::state::plan::{Layout, Plan};
use crate::state::refs;

/// In a root's state folder: its own control branches, when it is not its repository's first
/// root. Two lines, `rollback: <name>` and `replay: <name>`.
const CONTROL_FILE: &str = "control-branches";

fn control_file(layout: &Layout) -> PathBuf {
    layout.state.join(CONTROL_FILE)
}

/// The branches of the root at `layout`, which deploys `deploy`.
pub fn branches(layout: &Layout, deploy: &str) -> Result<Branches> {
    let file = control_file(layout);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Branches::first(deploy));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut branches = Branches {
        deploy: deploy.to_string(),
        rollback: String::new(),
        replay: String::new(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, name) = line.split_once(':').unwrap_or((line, ""));
        let name = name.trim();
        let slot = match key.trim() {
            "rollback" => &mut branches.rollback,
            "replay" => &mut branches.replay,
            _ => bail!(
                "{}: `{line}` is not `rollback: <branch>` or `replay: <branch>`",
                file.display()
            ),
        };
        if !git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
            bail!("{}: `{name}` is not a valid branch name", file.display());
        }
        *slot = name.to_string();
    }
    if branches.rollback.is_empty() || branches.replay.is_empty() {
        bail!(
            "{} must name both a rollback and a replay branch",
            file.display()
        );
    }
    Ok(branches)
}

/// The control branches a root added to a repository that has others gets.
pub fn further_root(deploy: &str) -> Branches {
    Branches {
        deploy: deploy.to_string(),
        rollback: format!("{}-{deploy}", crate::config::ROLLBACK_BRANCH),
        replay: format!("{}-{deploy}", crate::config::REPLAY_BRANCH),
    }
}

/// Records `branches` as the root's own, in `.atomdeploy/control-branches`.
pub fn record_branches(layout: &Layout, branches: &Branches) -> Result<()> {
    let text = format!(
        "rollback: {}\nreplay: {}\n",
        branches.rollback, branches.replay
    );
    crate::state::builds::replace_file(&control_file(layout), text.as_bytes())
}

/// The roots a hook written by `install` names: the `--root` arguments of its `exec` line,
/// read as sh reads them (install quotes each one). None if the hook has no such line.
pub fn hook_roots(hook: &str) -> Option<Vec<PathBuf>> {
    let line = hook.lines().find(|l| l.trim_start().starts_with("exec "))?;
    let words = sh_words(line)?;
    let mut roots = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if word == "--root" {
            roots.push(PathBuf::from(words.next()?));
        } else if let Some(root) = word.strip_prefix("--root=") {
            roots.push(PathBuf::from(root));
        }
    }
    (!roots.is_empty()).then_some(roots)
}

/// Splits one line of sh into words: blanks separate, '…' quotes everything, "…" everything
/// but `\"` and `\\`, a backslash outside quotes escapes the next character. None for what
/// this does not read (an unterminated quote).
fn sh_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                words.extend(word.take());
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// A root as the hook found it.
enum Loaded {
    Ready(Box<Plan>, Branches),
    /// Its deploy.yml (or its record of branches) is missing or broken, or it deploys another
    /// repository: the error, and the branches it seems to answer to, if they can be told.
    Broken(anyhow::Error, Option<Branches>),
}

fn load(root: &Path) -> Loaded {
    match Plan::load(root) {
        Ok(plan) => {
            let found = branches(&plan.layout, &plan.config.branch);
            match (hook::check_repository(&plan), found) {
                (Ok(()), Ok(branches)) => Loaded::Ready(Box::new(plan), branches),
                (Err(err), found) => Loaded::Broken(err, found.ok()),
                (Ok(()), Err(err)) => Loaded::Broken(err, None),
            }
        }
        Err(err) => {
            let layout = Layout::new(root);
            let guess = guess_branch(&layout.config_file).and_then(|b| branches(&layout, &b).ok());
            Loaded::Broken(err, guess)
        }
    }
}

/// The branch a deploy.yml that does not parse seems to deploy: its top-level `branch:` line,
/// or the default when it has none. None when there is no file to read.
fn guess_branch(config_file: &Path) -> Option<String> {
    let text = fs::read_to_string(config_file).ok()?;
    let named = text.lines().find_map(|line| {
        let value = line.strip_prefix("branch:")?;
        let value = value.split('#').next().unwrap_or_default().trim();
        Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
    });
    Some(named.unwrap_or_else(|| "main".to_string()))
}

/// A root's part of a push.
enum Part<'a> {
    Ready(&'a Plan, &'a Branches, Box<push::PushRequest>),
    Broken(&'a anyhow::Error),
}

/// The hook for a repository with several roots: each root handles the refs that are its own,
/// one root after the other, each under its own lock and with its own output heading; the
/// push fails (through the receive-pack wrapper) if any root's part failed.
pub fn run_several(roots: &[PathBuf], input: &[u8], status: &StatusFile) -> Result<()> {
    // Every ref of the push, whatever it is for: no branch is named `refs/heads/`.
    let nothing = Branches {
        deploy: String::new(),
        rollback: String::new(),
        replay: String::new(),
    };
    let all = push::parse(input, &nothing)?;
    // A root listed twice (a hand-edited hook) would deploy each push twice.
    let mut unique: Vec<&PathBuf> = Vec::new();
    for root in roots {
        if !unique
            .iter()
            .any(|seen| crate::config::same_path(seen, root))
        {
            unique.push(root);
        }
    }
    let loaded: Vec<(&PathBuf, Loaded)> = unique.into_iter().map(|r| (r, load(r))).collect();
    let shared = Reporter::new(Output::detect(true));
    if !all.group.is_empty() {
        return refuse_group(roots, &loaded, &all.group, &shared);
    }
    let claimed_by = |branches: &Branches, update: &RefUpdate| branches.claims(&update.refname);
    let unclaimed: Vec<&RefUpdate> = all
        .ignored
        .iter()
        .filter(|u| {
            !loaded.iter().any(|(_, l)| match l {
                Loaded::Ready(_, b) | Loaded::Broken(_, Some(b)) => claimed_by(b, u),
                Loaded::Broken(_, None) => false,
            })
        })
        .collect();
    if !unclaimed.is_empty() {
        let deployed: Vec<String> = loaded
            .iter()
            .filter_map(|(root, l)| match l {
                Loaded::Ready(_, b) | Loaded::Broken(_, Some(b)) => {
                    Some(format!("refs/heads/{} → {}", b.deploy, root.display()))
                }
                Loaded::Broken(_, None) => None,
            })
            .collect();
        for update in &unclaimed {
            shared.line(&format!(
                "atomdeploy: {} is not the deploy branch of any root here ({}); not deployed",
                update.name(),
                deployed.join(", ")
            ));
        }
    }

    // What each root is asked: its own refs only (the others' were noticed above, once).
    let mut work = Vec::new();
    for (root, l) in &loaded {
        match l {
            Loaded::Ready(plan, branches) => {
                let mut request = push::parse(input, branches)?;
                request.ignored.clear();
                let asked = request.deploy.is_some()
                    || request.replay.is_some()
                    || request.rollback
                    || request.rollback_moved
                    || request.branch_deleted;
                if asked {
                    work.push((*root, Part::Ready(plan, branches, Box::new(request))));
                }
            }
            Loaded::Broken(err, branches) => {
                // A root that cannot say which branch it deploys may be the one this push was for.
                let concerned = match branches {
                    Some(b) => all.ignored.iter().any(|u| claimed_by(b, u)),
                    None => !unclaimed.is_empty(),
                };
                if concerned {
                    work.push((*root, Part::Broken(err)));
                }
            }
        }
    }
    if work.is_empty() {
        return Ok(());
    }
    status.pending();
    let mut failures = Vec::new();
    for (root, part) in work {
        let what = match &part {
            Part::Ready(_, b, _) => format!(" (refs/heads/{})", b.deploy),
            Part::Broken(_) => String::new(),
        };
        shared.line(&format!("atomdeploy: ==== {}{what} ====", root.display()));
        match part {
            Part::Ready(plan, branches, request) => {
                // Its own transcript: each root's log holds its own output only.
                let reporter = Reporter::new(Output::detect(true));
                if let Err(failure) = hook::handle_reported(plan, branches, &request, &reporter) {
                    failures.push(format!("{}: {failure}", root.display()));
                }
            }
            Part::Broken(err) => {
                let why = format!("{}: {err:#}", root.display());
                report::error(&why);
                failures.push(why);
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    status.failed(&failures.join("; "));
    Err(Reported.into())
}

/// A group ref names a group and an operation, not a root: with several roots a host cannot
/// tell which one it is for. The refs are deleted (as a host does after any operation) and
/// the push refused.
fn refuse_group(
    roots: &[PathBuf],
    loaded: &[(&PathBuf, Loaded)],
    group: &[RefUpdate],
    reporter: &Reporter,
) -> Result<()> {
    let repo = loaded
        .iter()
        .find_map(|(_, l)| match l {
            Loaded::Ready(plan, _) => Some(plan.config.repository.clone()),
            Loaded::Broken(..) => None,
        })
        .or_else(|| std::env::var_os("GIT_DIR").map(PathBuf::from));
    for update in group {
        let name = update.name();
        let deleted = repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository is known"))
            .and_then(|repo| refs::delete_ref(repo, &name, &update.new));
        if let Err(err) = deleted {
            reporter.warn(&format!("could not delete {name}: {err:#}"));
        }
    }
    let listed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    bail!(
        "this repository serves {} deploy roots ({}), and a group operation ({}) does not say \
         which one it is for: a host of a group (`hosts:`) needs a repository of its own for \
         each environment",
        roots.len(),
        listed.join(", "),
        group
            .iter()
            .map(|u| u.name().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_of_a_hook_are_read_as_sh_reads_them() {
        let hook = "#!/bin/sh\n# installed\nexec '/usr/bin/atomdeploy-hook' post-receive \
                    --root '/srv/app' --root '/srv/my app/it'\\''s \"x\"'\n";
        assert_eq!(
            hook_roots(hook).unwrap(),
            [
                PathBuf::from("/srv/app"),
                PathBuf::from("/srv/my app/it's \"x\"")
            ]
        );
        assert_eq!(
            hook_roots("exec bin post-receive --root=/a --root \"/b \\\"c\\\"\" # x").unwrap(),
            [PathBuf::from("/a"), PathBuf::from("/b \"c\"")]
        );
        assert!(hook_roots("#!/bin/sh\necho hi\n").is_none());
        assert!(hook_roots("exec bin post-receive --root '/unterminated").is_none());
    }

    #[test]
    fn a_further_root_gets_branches_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(branches(&layout, "main").unwrap(), Branches::first("main"));
        record_branches(&layout, &further_root("staging")).unwrap();
        let own = branches(&layout, "staging").unwrap();
        assert_eq!(
            (own.rollback.as_str(), own.replay.as_str()),
            ("rollback-staging", "replay-staging")
        );
        fs::write(control_file(&layout), "rollback: a..b\nreplay: x\n").unwrap();
        assert!(branches(&layout, "staging").is_err());
    }
}
