//! The refs the hook keeps in the bare repository.
//!
//! Stock git refuses to delete a ref the server does not have, so the bare repository keeps
//! `refs/heads/rollback` at the commit of the build a rollback would go to: deleting it is the
//! request, and `git ls-remote production rollback` shows where it would land.
//!
//! That ref can only be moved to a commit the repository still has. After a force push, the
//! commits of older builds are reachable from nothing else and `git gc` would prune them, so
//! every build on disk also has a ref of its own, `refs/atomdeploy/builds/<name>`, hidden
//! from clients (`transfer.hideRefs`), made and removed with the build.

use std::path::Path;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::infra::report::{Reporter, short_id};
use crate::state::builds;
use crate::state::plan::Plan;

/// Where each build's own ref lives.
const BUILD_REFS: &str = "refs/atomdeploy/builds/";

/// Gives every build on disk a ref at its commit and removes the refs of builds that are gone,
/// then points the root's rollback branch (`refs/heads/rollback`, or `rollback-<branch>` for a
/// root added to a repository that has others: see `receive/hook/several.rs`) at the commit of the
/// current rollback target, or deletes it when there is none. Call under the lock, after every
/// deploy and rollback. A failure only warns: the site is unaffected.
pub(crate) fn sync_ref(plan: &Plan, repo: &Repository, reporter: &Reporter) {
    sync_in(plan, Ok(repo), reporter);
}

/// [`sync_ref`] for a caller that has not opened the repository (a rollback).
pub(crate) fn open_and_sync_ref(plan: &Plan, reporter: &Reporter) {
    match Repository::open_bare(&plan.config.repository) {
        Ok(repo) => sync_in(plan, Ok(&repo), reporter),
        Err(err) => sync_in(plan, Err(&err), reporter),
    }
}

fn sync_in(plan: &Plan, repo: Result<&Repository, &git2::Error>, reporter: &Reporter) {
    let rollback = crate::state::control_branches::branches(&plan.layout, &plan.config.branch)
        .map(|b| b.rollback)
        .map_err(|err| {
            reporter.warn(&format!(
                "could not tell which branch to keep at the rollback target: {err:#}"
            ))
        });
    for lock in clear_stale_ref_locks(&plan.config.repository, rollback.as_deref().ok()) {
        reporter.warn(&format!(
            "removed {}, left by an interrupted deploy",
            lock.display()
        ));
    }
    let unopened = |err: &git2::Error| anyhow::anyhow!("{err}");
    let Ok(rollback) = rollback else { return };
    if let Err(err) = repo
        .map_err(unopened)
        .and_then(|repo| sync_build_refs(plan, repo, &build_refs(&rollback)))
    {
        reporter.warn(&format!(
            "could not keep the commits of the builds on disk in the repository: {err:#}"
        ));
    }
    if let Err(err) = repo
        .map_err(unopened)
        .and_then(|repo| try_sync_ref(plan, repo, &rollback))
    {
        reporter.warn(&format!("could not update refs/heads/{rollback}: {err:#}"));
    }
}

/// A ref lock outlives a hook killed while libgit2 wrote the ref, and makes every later write
/// of that ref fail. The deploy lock does not make them all ours: git itself takes them too
/// for a moment (a client's push to `rollback`, and `git gc --auto` packing refs or expiring
/// reflogs, even of `refs/atomdeploy/`), so only a lock older than a minute is stale. Returns
/// what was removed.
fn clear_stale_ref_locks(repo: &Path, rollback: Option<&str>) -> Vec<std::path::PathBuf> {
    const OLD: std::time::Duration = std::time::Duration::from_secs(60);
    let ours = walkdir::WalkDir::new(repo.join(BUILD_REFS.trim_end_matches('/')))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .filter(|p| p.extension().is_some_and(|x| x == "lock"));
    let shared = rollback
        .map(|branch| repo.join(format!("refs/heads/{branch}.lock")))
        .into_iter()
        .chain([repo.join("packed-refs.lock")]);
    let old = |p: &std::path::PathBuf| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > OLD))
    };
    ours.chain(shared)
        .filter(old)
        .filter(|lock| std::fs::remove_file(lock).is_ok())
        .collect()
}

fn try_sync_ref(plan: &Plan, repo: &Repository, rollback: &str) -> Result<()> {
    let layout = &plan.layout;
    let refname = format!("refs/heads/{rollback}");
    let target = builds::rollback_target(layout)?;
    match target.and_then(|t| builds::revision(layout, &t).map(|c| (t, c))) {
        Some((target, commit)) => {
            let oid = Oid::from_str(&commit)?;
            repo.reference(
                &refname,
                oid,
                true,
                &format!("atomdeploy: rollback target builds/{target}"),
            )?;
        }
        None => {
            if let Ok(mut reference) = repo.find_reference(&refname) {
                reference.delete()?;
            }
        }
    }
    Ok(())
}

/// Where the refs of a root's builds live: the first root's straight under [`BUILD_REFS`], a
/// further root's (whose builds may have the same names) in a folder named after its rollback
/// branch. A build's name has no `/`, so each root tells its own refs from the others'.
fn build_refs(rollback: &str) -> String {
    if rollback == crate::config::ROLLBACK_BRANCH {
        BUILD_REFS.to_string()
    } else {
        format!("{BUILD_REFS}{rollback}/")
    }
}

fn sync_build_refs(plan: &Plan, repo: &Repository, prefix: &str) -> Result<()> {
    hide_internal_refs(repo)?;
    let layout = &plan.layout;
    let on_disk = builds::list(layout)?;
    let mut missing = Vec::new();
    for build in &on_disk {
        let refname = format!("{prefix}{build}");
        let Some(commit) = builds::revision(layout, build) else {
            continue;
        };
        let oid = Oid::from_str(&commit)?;
        if repo.refname_to_id(&refname).ok() == Some(oid) {
            continue;
        }
        // Fails only when the commit is gone already (a build older than these refs).
        if repo
            .reference(&refname, oid, true, &format!("atomdeploy: builds/{build}"))
            .is_err()
        {
            missing.push(format!("builds/{build} ({})", short_id(&commit)));
        }
    }
    for reference in repo.references_glob(&format!("{prefix}*"))? {
        let mut reference = reference?;
        let gone = match reference.name().ok().and_then(|n| n.strip_prefix(prefix)) {
            None => true,
            // Another root's.
            Some(name) if name.contains('/') => false,
            Some(name) => !on_disk.iter().any(|b| b.to_string() == name),
        };
        if gone {
            reference.delete()?;
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "the repository no longer has the commit of {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Hides the refs atomdeploy-hook keeps for itself (`refs/atomdeploy/…`) from clients: fetches
/// neither list nor send any of them (`uploadpack.hideRefs`), and a push cannot change the
/// builds' refs, which keep the commits of the builds on disk from being pruned
/// (`transfer.hideRefs`). A push may create `refs/atomdeploy/group/…`, since that is how a
/// group's primary asks a host for something (see `group/`); the hook deletes those again.
/// (A hidden ref cannot be pushed to at all, which is why the group refs are not hidden from
/// pushes; and these are separate keys rather than one negated entry, since a negation's
/// effect would hang on the order of sections in the config file.)
///
/// Set by `install` for new and existing repositories, and by the hook when missing. An
/// older install hid all of `refs/atomdeploy` from pushes too: that entry is replaced. Writes
/// the config only when something is missing.
pub(crate) fn hide_internal_refs(repo: &Repository) -> Result<()> {
    const FROM_FETCHES: (&str, &str) = ("uploadpack.hideRefs", "refs/atomdeploy");
    const FROM_BOTH: (&str, &str) = ("transfer.hideRefs", "refs/atomdeploy/builds");
    const OLDER: (&str, &str) = ("transfer.hideRefs", "refs/atomdeploy");
    let mut config = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    let has = |config: &git2::Config, (key, value): (&str, &str)| {
        let mut present = false;
        if let Ok(entries) = config.multivar(key, None) {
            let _ = entries.for_each(|e| present |= e.value_bytes() == value.as_bytes());
        }
        present
    };
    let written = |result: Result<(), git2::Error>| {
        result.with_context(|| {
            format!(
                "cannot set which refs git hides in {}",
                repo.path().join("config").display()
            )
        })
    };
    if has(&config, OLDER) {
        written(config.remove_multivar(OLDER.0, "^refs/atomdeploy$"))?;
    }
    for (key, value) in [FROM_FETCHES, FROM_BOTH] {
        if !has(&config, (key, value)) {
            // A regex matching no value: the entry is added next to any others.
            written(config.set_multivar(key, "^$", value))?;
        }
    }
    Ok(())
}

/// Deletes `refname` from the bare repository `repo` if it still names `commit` (a push may
/// have moved it meanwhile, and its own hook will see to it). A ref already gone is no error.
pub(crate) fn delete_ref(repo: &Path, refname: &str, commit: &str) -> Result<()> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["update-ref", "-d", refname, commit])
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run git")?;
    let gone = || Repository::open_bare(repo).is_ok_and(|r| r.find_reference(refname).is_err());
    if out.status.success() || gone() {
        Ok(())
    } else {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}
