//! Which tracked files of a working copy were edited since its last checkout, and making
//! sure the checkout writes them again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use git2::{DiffOptions, Index, Repository};

use super::inside_real;

/// Tracked files whose content in `application/` differs from the last checkout: edits made
/// by hand on the server, which the forced checkout is about to replace.
pub(super) fn edited_on_server(repo: &Repository, index: &Index) -> Result<Vec<PathBuf>> {
    let mut options = DiffOptions::new();
    // A submodule's files are its own checkout's to compare (libgit2 would look for a
    // repository in its directory, find none, and call it edited).
    options
        .include_untracked(false)
        .include_ignored(false)
        .include_typechange(true)
        .ignore_submodules(true);
    let diff = repo.diff_index_to_workdir(Some(index), Some(&mut options))?;
    Ok(diff
        .deltas()
        .filter_map(|d| d.old_file().path().map(Path::to_path_buf))
        .collect())
}

/// Removes the edited files before the checkout writes them again. libgit2's checkout takes a
/// file whose size and modification time are still the index's for unchanged, and an edit
/// can keep both (same length, `touch -r`): removed, it is written whatever its stat says.
pub(super) fn remove(dir: &Path, edited: &[PathBuf]) -> Result<()> {
    for path in edited {
        // Only through real directories: a symlink above it was removed already, and what
        // it pointed to is not application/'s.
        if let Some(full) = inside_real(dir, path)
            && std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_file())
        {
            std::fs::remove_file(&full)
                .with_context(|| format!("cannot remove the edited {}", full.display()))?;
        }
    }
    Ok(())
}
