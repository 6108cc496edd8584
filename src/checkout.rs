//! Checking a commit out into `application/` with libgit2.
//!
//! `application/` keeps its untracked files between deploys (`vendor/` above all, so composer
//! is incremental). Its index lives in the state folder, not in the bare repository, so the
//! repository stays an ordinary bare repository for git's own tools.

use std::path::Path;

use anyhow::{Context, Result};
use git2::build::CheckoutBuilder;
use git2::{Delta, DiffOptions, Index, Oid, Repository};

use crate::plan::Layout;
use crate::report::Reporter;

#[derive(Debug, Default)]
pub struct Checkout {
    /// Files in the commit.
    pub files: usize,
    /// Files written because they were added or changed since the last checkout.
    pub written: usize,
    /// Files removed because the commit no longer has them.
    pub removed: usize,
    /// Tracked files that had been edited on the server; their edits are gone now.
    pub overwritten: Vec<String>,
}

pub fn checkout(
    repo_path: &Path,
    commit: Oid,
    layout: &Layout,
    reporter: &Reporter,
) -> Result<Checkout> {
    let repo = Repository::open_bare(repo_path)
        .with_context(|| format!("cannot open the repository {}", repo_path.display()))?;
    std::fs::create_dir_all(&layout.application)
        .with_context(|| format!("cannot create {}", layout.application.display()))?;
    repo.set_workdir(&layout.application, false)?;
    let mut index = Index::open(&layout.index_file())
        .with_context(|| format!("cannot open {}", layout.index_file().display()))?;
    repo.set_index(&mut index)?;

    let tree = repo.find_commit(commit)?.tree()?;
    let mut result = Checkout {
        files: count_files(&tree)?,
        ..Checkout::default()
    };
    let diff = repo.diff_tree_to_index(Some(&tree), Some(&index), None)?;
    for delta in diff.deltas() {
        // The diff runs from the new tree to the old index, so its sides are swapped.
        match delta.status() {
            Delta::Deleted | Delta::Modified | Delta::Typechange => result.written += 1,
            Delta::Added => result.removed += 1,
            _ => {}
        }
    }

    result.overwritten = edited_on_server(&repo, &index)?;

    let bar = reporter.progress(result.files as u64, "checking out");
    let mut builder = CheckoutBuilder::new();
    builder.force().progress(|_, completed, total| {
        bar.set_length(total as u64);
        bar.set_position(completed as u64);
    });
    repo.checkout_tree(tree.as_object(), Some(&mut builder))
        .with_context(|| {
            format!(
                "cannot check {commit} out into {}",
                layout.application.display()
            )
        })?;
    drop(builder);
    bar.finish_and_clear();
    index.write().context("cannot save the checkout's index")?;
    Ok(result)
}

/// Tracked files whose content in `application/` differs from the last checkout: edits made
/// by hand on the server, which the forced checkout is about to replace.
fn edited_on_server(repo: &Repository, index: &Index) -> Result<Vec<String>> {
    let mut options = DiffOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .include_typechange(true);
    let diff = repo.diff_index_to_workdir(Some(index), Some(&mut options))?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            d.old_file()
                .path()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect())
}

fn count_files(tree: &git2::Tree) -> Result<usize> {
    let mut count = 0;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            count += 1;
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(count)
}
