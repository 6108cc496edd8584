//! The first checkout into an empty `application/`, written in parallel.
//!
//! libgit2 writes one file after another, looking every directory on the way up again for
//! each; on a first deploy of a large app that was most of the deploy (4.5 s of 9 s at 50,000
//! files, where `git archive` takes 1 s). When nothing is there to compare with, the files can
//! be written side by side straight from their blobs, and the index made from what was
//! written, as libgit2 would have made it. Only when the bytes on disk are the blobs' bytes:
//! anything that could make libgit2 convert them (gitattributes, `core.autocrlf`), a
//! submodule, or a repository that asks for no symlinks leaves the checkout to libgit2.

use std::ffi::OsStr;
use std::fs::{DirBuilder, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use git2::{Index, IndexEntry, IndexTime, Oid, Repository};
use rayon::prelude::*;

use crate::infra::fault;
use crate::infra::report::Reporter;
use crate::infra::users;

use super::{GITLINK_MODE, TREE_MODE, walk, write_blob};

/// A file of the tree: its path (below the app), blob and mode.
struct File {
    path: Vec<u8>,
    id: Oid,
    mode: i32,
}

/// What a fresh checkout writes: the tree's directories (parents first) and files.
pub(super) struct Fresh {
    dirs: Vec<Vec<u8>>,
    files: Vec<File>,
}

/// The fresh checkout of `tree` into `dir`, when it may be one: `dir` holds nothing, the
/// index nothing, and libgit2 would write every blob's bytes as they are. None otherwise.
pub(super) fn plan(
    repo: &Repository,
    tree: &git2::Tree,
    dir: &Path,
    index: &Index,
) -> Result<Option<Fresh>> {
    if !index.is_empty() || !is_empty_dir(dir)? || converts(repo) {
        return Ok(None);
    }
    let mut fresh = Fresh {
        dirs: Vec::new(),
        files: Vec::new(),
    };
    let mut plain = true;
    walk(repo, tree, &mut Vec::new(), &mut |relative, entry| {
        let name = entry.name_bytes();
        match entry.filemode() {
            TREE_MODE => fresh.dirs.push(relative.to_vec()),
            GITLINK_MODE => plain = false,
            _ if name == b".gitattributes" => plain = false,
            mode => fresh.files.push(File {
                path: relative.to_vec(),
                id: entry.id(),
                mode,
            }),
        }
        Ok(())
    })?;
    Ok(plain.then_some(fresh))
}

impl Fresh {
    /// Writes every directory and file into `dir`, then puts each file into `index` with what
    /// `lstat` says of it, so that the next checkout finds them unchanged without reading
    /// them.
    pub(super) fn write(
        self,
        repo: &Repository,
        dir: &Path,
        index: &mut Index,
        reporter: &Reporter,
    ) -> Result<()> {
        let join = |relative: &[u8]| dir.join(OsStr::from_bytes(relative));
        // The walk gives parents before their children. Modes as libgit2 makes them, the
        // umask applying.
        let mut builder = DirBuilder::new();
        builder.mode(0o755);
        for relative in &self.dirs {
            let path = join(relative);
            builder
                .create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        let bar = reporter.progress(self.files.len() as u64, "checking out");
        let git_dir = repo.path().to_path_buf();
        // A repository per worker: a libgit2 handle is not to be shared between threads.
        let written: Vec<Metadata> = self
            .files
            .par_iter()
            .map_init(
                || Repository::open_bare(&git_dir),
                |repo, file| -> Result<Metadata> {
                    let repo = repo
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                    let path = join(&file.path);
                    write_blob(repo, file.id, file.mode, &path)?;
                    let meta = std::fs::symlink_metadata(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    bar.inc(1);
                    fault::point("checkout-file");
                    Ok(meta)
                },
            )
            .collect::<Result<_>>()?;
        bar.finish_and_clear();
        for (file, meta) in self.files.iter().zip(&written) {
            index
                .add(&entry(file, meta))
                .context("cannot add the checkout to its index")?;
        }
        Ok(())
    }
}

/// The index entry of `file` as written: git's stat fields, truncated to 32 bits as git's
/// index keeps them.
fn entry(file: &File, meta: &Metadata) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32),
        mtime: IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        mode: file.mode as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        file_size: meta.size() as u32,
        id: file.id,
        flags: file.path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: file.path.clone(),
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Whether libgit2 could write something other than a blob's bytes, or a symlink as a file,
/// by configuration or by attributes from outside the tree. (Read as libgit2 reads them; an
/// unreadable configuration counts as converting.)
fn converts(repo: &Repository) -> bool {
    let Ok(config) = repo.config() else {
        return true;
    };
    let set = |name: &str| config.get_entry(name).is_ok();
    let crlf = config
        .get_string("core.autocrlf")
        .is_ok_and(|v| !v.eq_ignore_ascii_case("false"));
    let no_symlinks = config.get_bool("core.symlinks").is_ok_and(|v| !v);
    let home_attributes =
        users::xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("git/attributes"));
    crlf || no_symlinks
        || set("core.attributesFile")
        || repo.path().join("info/attributes").exists()
        || home_attributes.is_some_and(|p| p.exists())
        || Path::new("/etc/gitattributes").exists()
}
