//! Checking a commit out into `application/` with libgit2.
//!
//! `application/` keeps its untracked files between deploys (`vendor/` above all, so composer
//! is incremental). Its index lives in the state folder, not in the bare repository, so the
//! repository stays an ordinary bare repository for git's own tools.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use git2::build::CheckoutBuilder;
use git2::{CheckoutNotificationType, Delta, DiffOptions, Index, Oid, Repository};

use crate::fault;
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
    /// Symlinks made on the server where the commit has a file or a directory; removed.
    pub unlinked: Vec<String>,
    /// Files added on the server that git neither tracks nor ignores; removed.
    pub added_by_hand: Vec<String>,
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
    let mut result = Checkout::default();
    let diff = repo.diff_tree_to_index(Some(&tree), Some(&index), None)?;
    // Paths the checkout is about to write.
    let mut to_write: Vec<PathBuf> = Vec::new();
    for delta in diff.deltas() {
        // The diff runs from the new tree to the old index, so its sides are swapped.
        match delta.status() {
            Delta::Deleted | Delta::Modified | Delta::Typechange => {
                result.written += 1;
                to_write.extend(delta.old_file().path().map(Path::to_path_buf));
            }
            Delta::Added => result.removed += 1,
            _ => {}
        }
    }

    // A checkout killed half-way leaves files the index does not know: those of the commit
    // it was writing. Remember which, to remove the ones this commit does not have.
    let pending = layout.state.join("checkout.pending");
    let interrupted = std::fs::read_to_string(&pending)
        .ok()
        .and_then(|text| Oid::from_str(text.trim()).ok());
    let strays = match interrupted {
        Some(other) => untracked_files_of(&repo, other, &index)?,
        // After an interruption, differences are the interrupted checkout's, not edits.
        None => {
            result.overwritten = edited_on_server(&repo, &index)?;
            Vec::new()
        }
    };
    // Forced, the checkout also rewrites what was edited on the server; after an
    // interruption the index says too little to know what it will write: every path.
    if interrupted.is_some() {
        to_write = tree_files(&repo, &tree)?;
    } else {
        to_write.extend(result.overwritten.iter().map(PathBuf::from));
    }
    std::fs::write(&pending, commit.to_string()).context("cannot note the checkout in progress")?;
    result.unlinked = clear_symlinks_in_the_way(&to_write, &tree, &index, &layout.application)?;

    let bar = reporter.progress(result.files as u64, "checking out");
    let mut added_by_hand = Vec::new();
    let mut builder = CheckoutBuilder::new();
    // Files added on the server that git neither tracks nor ignores go too, so that the
    // working copy is the commit (ignored ones, vendor/ above all, stay).
    builder
        .force()
        .remove_untracked(true)
        .notify_on(CheckoutNotificationType::UNTRACKED)
        .notify(|_, path, _, _, _| {
            added_by_hand.extend(path.map(|p| p.to_string_lossy().into_owned()));
            true
        })
        .progress(|_, completed, total| {
            bar.set_length(total as u64);
            bar.set_position(completed as u64);
            fault::point("checkout-file");
        });
    repo.checkout_tree(tree.as_object(), Some(&mut builder))
        .with_context(|| {
            format!(
                "cannot check {commit} out into {}",
                layout.application.display()
            )
        })?;
    drop(builder);
    result.added_by_hand = added_by_hand;
    bar.finish_and_clear();
    index.write().context("cannot save the checkout's index")?;
    result.files = index.len();
    for stray in strays {
        if tree.get_path(&stray).is_err() {
            let _ = std::fs::remove_file(layout.application.join(&stray));
        }
    }
    std::fs::remove_file(&pending).context("cannot note the checkout as done")?;
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

/// Removes every symlink in `app` that stands where the checkout will write a file, or above
/// such a file.
///
/// libgit2 does not replace a symlink with a directory: it writes the directory's files
/// through the link, wherever it points (a tracked `public/uploads -> ../../shared/uploads`
/// that becomes a directory would overwrite uploads in shared/). Removing a link loses
/// nothing; what it points to is left alone. Only the paths being written are looked at, so
/// a deploy of a few changed files stays cheap. Returns the links git did not track.
fn clear_symlinks_in_the_way(
    to_write: &[PathBuf],
    tree: &git2::Tree,
    index: &Index,
    app: &Path,
) -> Result<Vec<String>> {
    let mut untracked = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for file in to_write {
        for path in file.ancestors().filter(|p| !p.as_os_str().is_empty()) {
            if !seen.insert(path.to_path_buf()) {
                break; // this and everything above it was looked at already
            }
            // A link the commit itself has at this very path is the checkout's to update.
            if path == file.as_path()
                && tree.get_path(path).is_ok_and(|e| e.filemode() == LINK_MODE)
            {
                continue;
            }
            let full = app.join(path);
            if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(&full)
                    .with_context(|| format!("cannot remove the symlink {}", full.display()))?;
                if index
                    .get_path(path, 0)
                    .is_none_or(|e| e.mode != LINK_MODE as u32)
                {
                    untracked.push(path.to_string_lossy().into_owned());
                }
            }
        }
    }
    untracked.sort();
    Ok(untracked)
}

/// Every file of `tree`.
fn tree_files(repo: &Repository, tree: &git2::Tree) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(repo, tree, &mut Vec::new(), &mut |relative, entry| {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            files.push(PathBuf::from(OsStr::from_bytes(relative)));
        }
        Ok(())
    })?;
    Ok(files)
}

const LINK_MODE: i32 = 0o120000;

/// Files of `commit` that `index` does not track.
fn untracked_files_of(
    repo: &Repository,
    commit: Oid,
    index: &Index,
) -> Result<Vec<std::path::PathBuf>> {
    let Ok(tree) = repo.find_commit(commit).and_then(|c| c.tree()) else {
        return Ok(Vec::new()); // gone from the repository: nothing to go by
    };
    let mut files = Vec::new();
    walk(repo, &tree, &mut Vec::new(), &mut |relative, entry| {
        let path = Path::new(OsStr::from_bytes(relative));
        if entry.kind() != Some(git2::ObjectType::Tree) && index.get_path(path, 0).is_none() {
            files.push(path.to_path_buf());
        }
        Ok(())
    })?;
    Ok(files)
}

/// Visits every entry of `tree`, parents before children, with its path as bytes. (git2's
/// own walk gives up on directory names that are not UTF-8, which git allows.)
fn walk(
    repo: &Repository,
    tree: &git2::Tree,
    prefix: &mut Vec<u8>,
    visit: &mut impl FnMut(&[u8], &git2::TreeEntry) -> Result<()>,
) -> Result<()> {
    for entry in tree.iter() {
        let len = prefix.len();
        prefix.extend_from_slice(entry.name_bytes());
        visit(prefix, &entry)?;
        if entry.kind() == Some(git2::ObjectType::Tree) {
            let subtree = repo.find_tree(entry.id())?;
            prefix.push(b'/');
            walk(repo, &subtree, prefix, visit)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}
