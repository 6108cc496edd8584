//! Which tracked files of a working copy were edited since its last checkout.
//!
//! libgit2 answers by walking the whole working copy in order, one `lstat` after another:
//! 100 ms of a content push at 50,000 files. Most files are what the index says, down to the
//! inode, so each index entry's `lstat` is compared first, in parallel, with what git compares
//! (mode, size, times, inode, owner, and an mtime not older than the index: "racily clean"),
//! and every directory above an entry must still be a real one; libgit2 then looks at the few
//! that differ only, and decides as it always did.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use git2::{DiffOptions, Index, IndexEntry, Repository};
use rayon::prelude::*;

use super::{BLOB_MODE, EXEC_MODE, GITLINK_MODE, LINK_MODE, directories_of};

/// Tracked files whose content in `dir` differs from `index` (read from `index_file`): edits
/// made by hand on the server, which the forced checkout is about to replace.
pub(super) fn edited_on_server(
    repo: &Repository,
    index: &Index,
    index_file: &Path,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    // An index whose own time is unknown makes every entry racy: all go to libgit2.
    let index_mtime = std::fs::metadata(index_file)
        .map(|m| (m.mtime(), m.mtime_nsec()))
        .ok();
    let entries: Vec<IndexEntry> = index.iter().collect();
    // lstat follows a symlink above the file; libgit2 does not descend through one (and
    // what stands there is what the checkout must not write through): every entry below a
    // directory that is not a real one any more goes to libgit2.
    let not_dirs: HashSet<&[u8]> = directories_of(&entries)
        .into_par_iter()
        .filter(|d| !is_real_dir(&dir.join(OsStr::from_bytes(d))))
        .collect();
    let below_not_dir = |path: &[u8]| {
        !not_dirs.is_empty()
            && path
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'/' && not_dirs.contains(&path[..i]))
    };
    let maybe: Vec<&[u8]> = entries
        .par_iter()
        .filter(|e| {
            let path = dir.join(OsStr::from_bytes(&e.path));
            below_not_dir(&e.path)
                || if e.mode == GITLINK_MODE as u32 {
                    // A submodule's files are its own checkout's; here only its directory.
                    !is_real_dir(&path)
                } else {
                    std::fs::symlink_metadata(path).map_or(true, |m| differs(e, &m, index_mtime))
                }
        })
        .map(|e| e.path.as_slice())
        .collect();
    if maybe.is_empty() {
        return Ok(Vec::new());
    }
    let mut options = DiffOptions::new();
    // A submodule's files are its own checkout's to compare (libgit2 would look for a
    // repository in its directory, find none, and call it edited). The paths are exact:
    // a pathspec would read `*` or `\` in a name.
    options
        .include_untracked(false)
        .include_ignored(false)
        .include_typechange(true)
        .ignore_submodules(true)
        .disable_pathspec_match(true);
    for path in &maybe {
        options.pathspec(OsStr::from_bytes(path));
    }
    let diff = repo.diff_index_to_workdir(Some(index), Some(&mut options))?;
    Ok(diff
        .deltas()
        .filter_map(|d| d.old_file().path().map(Path::to_path_buf))
        .collect())
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether `meta` may not be the file `entry` recorded: git's stat comparison, ctime and
/// nanoseconds included (comparing more only sends more to libgit2).
fn differs(entry: &IndexEntry, meta: &Metadata, index_mtime: Option<(i64, i64)>) -> bool {
    let kind = meta.file_type();
    let mode = if kind.is_symlink() {
        LINK_MODE as u32
    } else if kind.is_file() {
        (if meta.mode() & 0o100 != 0 {
            EXEC_MODE
        } else {
            BLOB_MODE
        }) as u32
    } else {
        return true;
    };
    let racy = index_mtime.is_none_or(|(s, ns)| (meta.mtime(), meta.mtime_nsec()) >= (s, ns));
    racy || mode != entry.mode
        || meta.size() as u32 != entry.file_size
        || meta.mtime() as i32 != entry.mtime.seconds()
        || meta.mtime_nsec() as u32 != entry.mtime.nanoseconds()
        || meta.ctime() as i32 != entry.ctime.seconds()
        || meta.ctime_nsec() as u32 != entry.ctime.nanoseconds()
        || meta.ino() as u32 != entry.ino
        || meta.uid() != entry.uid
        || meta.gid() != entry.gid
}
