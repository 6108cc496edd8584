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

use anyhow::{Result, anyhow, bail};

use crate::infra::report::{self, Output, Reported, Reporter};
use crate::receive::hook::status::StatusFile;
use crate::receive::push::{self, RefUpdate};
use crate::state::control_branches::Branches;
use crate::state::control_branches::branches;
use crate::state::plan::{Layout, Plan};
use crate::state::refs;

/// A root as the hook found it.
enum Loaded {
    Ready(Box<Plan>, Branches),
    /// Its deploy.yml (or its record of branches) is missing or broken, or it deploys another
    /// repository: the error, and the branches it seems to answer to, if they can be told.
    Broken(anyhow::Error, Option<Branches>),
}

impl Loaded {
    /// The branches the root answers to, as far as they can be told.
    fn branches(&self) -> Option<&Branches> {
        match self {
            Loaded::Ready(_, b) | Loaded::Broken(_, Some(b)) => Some(b),
            Loaded::Broken(_, None) => None,
        }
    }
}

fn load(root: &Path) -> Loaded {
    match Plan::load(root) {
        Ok(plan) => {
            let found = branches(&plan.layout, &plan.config.branch);
            match (super::check_repository(&plan), found) {
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
    /// The error, and the root's replay branch as this push set it, if it did.
    Broken(&'a anyhow::Error, Option<RefUpdate>),
}

/// The hook for a repository with several roots: each root handles the refs that are its own,
/// one root after the other, each under its own lock and with its own output heading; the
/// push fails (through the receive-pack wrapper) if any root's part failed.
pub(crate) fn run_several(roots: &[PathBuf], input: &[u8], status: &StatusFile) -> Result<()> {
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
        return refuse_group(roots, &loaded, &all, &shared);
    }
    let unclaimed = say_unclaimed(&loaded, &all.ignored, &shared);
    let work = parts(&loaded, input, &all.ignored, unclaimed)?;
    if work.is_empty() {
        return Ok(());
    }
    status.pending();
    let mut failures = Vec::new();
    for (root, part) in work {
        let what = match &part {
            Part::Ready(_, b, _) => format!(" (refs/heads/{})", b.deploy),
            Part::Broken(..) => String::new(),
        };
        shared.line(&format!("atomdeploy: ==== {}{what} ====", root.display()));
        match part {
            Part::Ready(plan, branches, request) => {
                // Its own transcript: each root's log holds its own output only.
                let reporter = Reporter::new(Output::detect(true));
                if let Err(failure) = super::handle_reported(plan, branches, &request, &reporter) {
                    failures.push(format!("{}: {failure}", root.display()));
                }
            }
            Part::Broken(err, replay) => {
                if let Some(update) = replay {
                    drop_replay(&update, &shared);
                }
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

/// The refs of the push that no root answers to, each said once (not once per root); whether
/// there were any.
fn say_unclaimed(loaded: &[(&PathBuf, Loaded)], ignored: &[RefUpdate], shared: &Reporter) -> bool {
    let unclaimed: Vec<&RefUpdate> = ignored
        .iter()
        .filter(|u| {
            !loaded
                .iter()
                .any(|(_, l)| l.branches().is_some_and(|b| b.claims(&u.refname)))
        })
        .collect();
    if unclaimed.is_empty() {
        return false;
    }
    let deployed: Vec<String> = loaded
        .iter()
        .filter_map(|(root, l)| {
            let b = l.branches()?;
            Some(format!("refs/heads/{} → {}", b.deploy, root.display()))
        })
        .collect();
    for update in &unclaimed {
        shared.line(&format!(
            "atomdeploy: {} is not the deploy branch of any root here ({}); not deployed",
            update.name(),
            deployed.join(", ")
        ));
    }
    true
}

/// What each root is asked: its own refs only (the others' were said once already).
fn parts<'a>(
    loaded: &'a [(&'a PathBuf, Loaded)],
    input: &[u8],
    ignored: &[RefUpdate],
    any_unclaimed: bool,
) -> Result<Vec<(&'a PathBuf, Part<'a>)>> {
    let mut work = Vec::new();
    for (root, l) in loaded {
        match l {
            Loaded::Ready(plan, branches) => {
                let mut request = push::parse(input, branches)?;
                request.ignored.clear();
                let asked = request.deploy.is_some()
                    || request.replay.is_some()
                    || request.rollback
                    || request.rollback_moved
                    || request.branch_deleted
                    || !request.control_tags.is_empty();
                if asked {
                    work.push((*root, Part::Ready(plan, branches, Box::new(request))));
                }
            }
            Loaded::Broken(err, branches) => {
                // A root that cannot say which branch it deploys may be the one this push was for.
                let concerned = match branches {
                    Some(b) => ignored.iter().any(|u| b.claims(&u.refname)),
                    None => any_unclaimed,
                };
                if concerned {
                    let replay = branches.as_ref().and_then(|b| {
                        let name = format!("refs/heads/{}", b.replay);
                        ignored
                            .iter()
                            .find(|u| u.refname == name.as_bytes() && !u.is_deletion())
                            .cloned()
                    });
                    work.push((*root, Part::Broken(err, replay)));
                }
            }
        }
    }
    Ok(work)
}

/// A replay branch goes once its push was handled, whatever came of it (see
/// `drop_replay_branch` in hook/mod.rs), here for a root that could not even load: or the same
/// push, once its deploy.yml is mended, would find the branch there already and deploy nothing.
fn drop_replay(update: &RefUpdate, reporter: &Reporter) {
    let name = update.name();
    let dropped = std::env::var_os("GIT_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("no repository is known"))
        .and_then(|repo| refs::delete_ref(&repo, &name, &update.new));
    if let Err(err) = dropped {
        reporter.warn(&format!("could not delete {name}: {err:#}"));
    }
}

/// For the one root of a repository, when its deploy.yml cannot load: drops the replay branch
/// this push set, as [`drop_replay`] does for one of several roots.
pub(super) fn drop_replay_of_unloadable(root: &Path, input: &[u8]) {
    let Loaded::Broken(_, Some(branches)) = load(root) else {
        return;
    };
    if let Ok(request) = push::parse(input, &branches)
        && let Some(update) = &request.replay
    {
        drop_replay(update, &Reporter::new(Output::detect(true)));
    }
}

/// A group ref names a group and an operation, not a root: with several roots a host cannot
/// tell which one it is for. The refs are deleted (as a host does after any operation) and
/// the push refused.
fn refuse_group(
    roots: &[PathBuf],
    loaded: &[(&PathBuf, Loaded)],
    all: &push::PushRequest,
    reporter: &Reporter,
) -> Result<()> {
    let group = &all.group;
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
    // Nothing of a refused push moves: each root's branches pushed along with it (a deploy
    // branch moved without its deploy would make the next push of that commit deploy nothing).
    let claimed = all.ignored.iter().filter(|u| {
        loaded
            .iter()
            .any(|(_, l)| l.branches().is_some_and(|b| b.claims(&u.refname)))
    });
    let failed = match &repo {
        Some(repo) => crate::receive::group::trust::put_back_all(repo, claimed),
        None => String::new(),
    };
    let listed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    bail!(
        "this repository serves {} deploy roots ({}), and a group operation ({}) does not say \
         which one it is for: a host of a group (`hosts:`) needs a repository of its own for \
         each environment{failed}",
        roots.len(),
        listed.join(", "),
        group
            .iter()
            .map(|u| u.name().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
