//! Which tree of a commit is the app: the whole commit, or with `app_dir:` (a monorepo's
//! `backend/`) the subtree there. Everything that reads the app from git (the checkout,
//! composer's decision) goes through [`app_tree`], so that they all see the same files, at
//! the same paths, as application/ holds.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{ErrorCode, ObjectType, Oid, Repository, Tree};

/// The tree of `commit` that is deployed: its root tree when `app_dir` is empty, else the
/// directory at `app_dir` (a normalized relative path, as deploy.yml's `app_dir:` is). A
/// commit without that directory, or with a file, a symlink or a submodule there, is refused
/// with an error naming the commit and the path.
pub(crate) fn app_tree<'r>(repo: &'r Repository, commit: Oid, app_dir: &Path) -> Result<Tree<'r>> {
    let root = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .with_context(|| format!("cannot read the tree of commit {commit}"))?;
    if app_dir.as_os_str().is_empty() {
        return Ok(root);
    }
    let shown = app_dir.display();
    let refuse = |what: &str| -> Result<Tree<'r>> {
        bail!(
            "commit {commit} has {what} at `{shown}`, where deploy.yml's app_dir expects the \
             app's directory; the live build was not touched"
        )
    };
    let entry = match root.get_path(app_dir) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return refuse("nothing"),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read `{shown}` in commit {commit}"));
        }
    };
    match (entry.kind(), entry.filemode()) {
        (Some(ObjectType::Tree), _) => repo
            .find_tree(entry.id())
            .with_context(|| format!("cannot read `{shown}` in commit {commit}")),
        (Some(ObjectType::Commit), _) => refuse("a submodule"),
        (_, 0o120000) => refuse("a symlink"),
        _ => refuse("a file"),
    }
}

/// The app's paths that differ between the commit `since` names and `commit` (a submodule
/// as its one directory), or None when `since` names no commit of the repository any more: a
/// step that compares against its last run runs again then.
pub(crate) fn changed_since(
    repo: &Repository,
    since: &str,
    commit: Oid,
    app_dir: &Path,
) -> Result<Option<Vec<PathBuf>>> {
    let Ok(before) = Oid::from_str(since).and_then(|id| repo.find_commit(id)) else {
        return Ok(None);
    };
    let before = app_tree(repo, before.id(), app_dir)?;
    let after = app_tree(repo, commit, app_dir)?;
    Ok(Some(
        tree_diff(repo, &before, &after)?
            .into_iter()
            .map(|change| change.path)
            .collect(),
    ))
}

/// A path that two trees have differently: its blob (or submodule commit) and mode on each
/// side, None where that side has no such file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) path: PathBuf,
    pub(crate) old: Option<(Oid, i32)>,
    pub(crate) new: Option<(Oid, i32)>,
}

/// Every file (symlink, submodule) that differs between `old` and `new`, as `git diff-tree
/// -r` lists them: a file that becomes a symlink or a submodule, or the other way round, is
/// two changes, one without a new side and one without an old side. A subtree the two have
/// alike (the same id at the same path) is not read: libgit2's diff reads every tree of both,
/// 30 ms at 50,000 files for a commit that changes ten.
pub(crate) fn tree_diff(repo: &Repository, old: &Tree, new: &Tree) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    diff_entries(repo, Some(old), Some(new), &mut Vec::new(), &mut changes)?;
    Ok(changes)
}

const TREE: i32 = 0o040000;

fn kind(mode: i32) -> i32 {
    mode & 0o170000
}

fn diff_entries(
    repo: &Repository,
    old: Option<&Tree>,
    new: Option<&Tree>,
    prefix: &mut Vec<u8>,
    changes: &mut Vec<Change>,
) -> Result<()> {
    type Entries = std::collections::BTreeMap<Vec<u8>, (Oid, i32)>;
    let entries = |tree: Option<&Tree>| -> Entries {
        tree.into_iter()
            .flat_map(|t| t.iter())
            .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
            .collect()
    };
    let (old, new) = (entries(old), entries(new));
    let mut names: Vec<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (before, after) = (old.get(name).copied(), new.get(name).copied());
        if before == after {
            continue;
        }
        let len = prefix.len();
        prefix.extend_from_slice(name);
        let tree_of = |side: Option<(Oid, i32)>| -> Result<Option<Tree>> {
            match side {
                Some((id, mode)) if kind(mode) == TREE => Ok(Some(repo.find_tree(id)?)),
                _ => Ok(None),
            }
        };
        let file_of = |side: Option<(Oid, i32)>| side.filter(|(_, mode)| kind(*mode) != TREE);
        let (old_tree, new_tree) = (tree_of(before)?, tree_of(after)?);
        if old_tree.is_some() || new_tree.is_some() {
            prefix.push(b'/');
            diff_entries(repo, old_tree.as_ref(), new_tree.as_ref(), prefix, changes)?;
            prefix.truncate(len + name.len());
        }
        let path = || PathBuf::from(std::ffi::OsStr::from_bytes(prefix));
        match (file_of(before), file_of(after)) {
            (None, None) => {}
            (Some(b), Some(a)) if kind(b.1) != kind(a.1) => {
                changes.push(Change {
                    path: path(),
                    old: Some(b),
                    new: None,
                });
                changes.push(Change {
                    path: path(),
                    old: None,
                    new: Some(a),
                });
            }
            (b, a) => changes.push(Change {
                path: path(),
                old: b,
                new: a,
            }),
        }
        prefix.truncate(len);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An index entry of `path`, with no stat data.
    pub(crate) fn entry(path: &str, mode: u32, id: Oid) -> git2::IndexEntry {
        git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: 0,
            id,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        }
    }

    /// A commit of `files` (path, content); `link:` content makes a symlink, `gitlink` a
    /// submodule entry.
    fn commit(repo: &Repository, files: &[(&str, &str)]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for (path, content) in files {
            let (mode, id) = match *content {
                "gitlink" => (0o160000, Oid::from_str(&"1".repeat(40)).unwrap()),
                c if c.starts_with("link:") => (0o120000, repo.blob(&c.as_bytes()[5..]).unwrap()),
                c => (0o100644, repo.blob(c.as_bytes()).unwrap()),
            };
            index.add(&entry(path, mode, id)).unwrap();
        }
        let tree = index.write_tree_to(repo).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let who = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(None, &who, &who, "c", &tree, &[]).unwrap()
    }

    fn names(tree: &Tree) -> Vec<String> {
        tree.iter().map(|e| e.name().unwrap().to_string()).collect()
    }

    #[test]
    fn the_app_is_the_commit_or_its_directory_at_app_dir() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let id = commit(
            &repo,
            &[
                ("backend/composer.json", "{}"),
                ("backend/src/A.php", "<?php"),
                ("frontend/package.json", "{}"),
                ("apps/api/index.php", "<?php"),
                ("README", "x"),
                ("link", "link:backend"),
                ("sub", "gitlink"),
            ],
        );
        let root = app_tree(&repo, id, Path::new("")).unwrap();
        assert_eq!(
            names(&root),
            ["README", "apps", "backend", "frontend", "link", "sub"]
        );
        let backend = app_tree(&repo, id, Path::new("backend")).unwrap();
        assert_eq!(names(&backend), ["composer.json", "src"]);
        let api = app_tree(&repo, id, Path::new("apps/api")).unwrap();
        assert_eq!(names(&api), ["index.php"]);
        for (path, what) in [
            ("missing", "has nothing at `missing`"),
            ("backend/nope", "has nothing at `backend/nope`"),
            ("README", "has a file at `README`"),
            ("README/x", "has nothing at `README/x`"),
            ("link", "has a symlink at `link`"),
            ("link/src", "has nothing at `link/src`"),
            ("sub", "has a submodule at `sub`"),
        ] {
            let err = format!("{:#}", app_tree(&repo, id, Path::new(path)).unwrap_err());
            assert!(
                err.contains(&format!("commit {id} {what}")) && err.contains("app_dir"),
                "{path}: {err}"
            );
        }
    }

    /// A tree of `files`: (path, mode, content).
    fn tree_of(repo: &Repository, files: &[(String, i32, String)]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for (path, mode, content) in files {
            let id = match *mode {
                0o160000 => Oid::hash_object(ObjectType::Blob, content.as_bytes()).unwrap(),
                _ => repo.blob(content.as_bytes()).unwrap(),
            };
            index.add(&entry(path, *mode as u32, id)).unwrap();
        }
        index.write_tree_to(repo).unwrap()
    }

    /// Generated pairs of trees, paths colliding as files, directories, symlinks and
    /// submodules at every depth: the diff that skips shared subtrees lists exactly what
    /// libgit2's full diff lists.
    #[test]
    fn the_tree_diff_is_libgit2s_without_reading_shared_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let parts = ["a", "b", "a.b", "c-d"];
        let modes = [0o100644, 0o100755, 0o120000, 0o160000];
        let random_files = |next: &mut dyn FnMut(u64) -> u64| {
            let mut files: Vec<(String, i32, String)> = Vec::new();
            for _ in 0..next(12) {
                let depth = 1 + next(3) as usize;
                let path: Vec<&str> = (0..depth).map(|_| parts[next(4) as usize]).collect();
                let path = path.join("/");
                // A path cannot be a file and hold one.
                let clash = files.iter().any(|(p, _, _)| {
                    p == &path
                        || p.starts_with(&format!("{path}/"))
                        || path.starts_with(&format!("{p}/"))
                });
                if !clash {
                    let mode = modes[next(4) as usize];
                    files.push((path, mode, format!("{}", next(2))));
                }
            }
            files
        };
        for round in 0..300 {
            let old_files = random_files(&mut next);
            // The new tree: mostly the old one, some files changed, some gone, some new.
            let mut new_files = Vec::new();
            for (p, m, c) in &old_files {
                match next(5) {
                    0 => {}
                    1 => new_files.push((p.clone(), modes[next(4) as usize], c.clone())),
                    2 => new_files.push((p.clone(), *m, format!("{}", next(3)))),
                    _ => new_files.push((p.clone(), *m, c.clone())),
                }
            }
            for (p, m, c) in random_files(&mut next) {
                let clash = new_files.iter().any(|(q, _, _)| {
                    q == &p || q.starts_with(&format!("{p}/")) || p.starts_with(&format!("{q}/"))
                });
                if !clash {
                    new_files.push((p, m, c));
                }
            }
            let old = repo.find_tree(tree_of(&repo, &old_files)).unwrap();
            let new = repo.find_tree(tree_of(&repo, &new_files)).unwrap();
            let ours = tree_diff(&repo, &old, &new).unwrap();
            let theirs: Vec<Change> = repo
                .diff_tree_to_tree(Some(&old), Some(&new), None)
                .unwrap()
                .deltas()
                .map(|d| {
                    let side = |f: git2::DiffFile| {
                        (!f.id().is_zero()).then(|| (f.id(), i32::from(f.mode())))
                    };
                    Change {
                        path: d.new_file().path().or(d.old_file().path()).unwrap().into(),
                        old: side(d.old_file()),
                        new: side(d.new_file()),
                    }
                })
                .collect();
            let key = |c: &Change| (c.path.clone(), c.old.is_none(), c.new.is_none());
            let (mut ours, mut theirs) = (ours, theirs);
            ours.sort_by_key(key);
            theirs.sort_by_key(key);
            assert_eq!(
                ours, theirs,
                "round {round}: {old_files:?} -> {new_files:?}"
            );
        }
    }
}
