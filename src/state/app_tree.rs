//! Which tree of a commit is the app: the whole commit, or with `app_dir:` (a monorepo's
//! `backend/`) the subtree there. Everything that reads the app from git (the checkout,
//! composer's decision) goes through [`app_tree`], so that they all see the same files, at
//! the same paths, as application/ holds.

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

/// The app's paths that differ between the commit `since` names and `commit` (both sides of
/// a rename; a submodule as its one directory), or None when `since` names no commit of the
/// repository any more: a step that compares against its last run runs again then.
pub(crate) fn changed_since(
    repo: &Repository,
    since: &str,
    commit: Oid,
    app_dir: &Path,
) -> Result<Option<Vec<PathBuf>>> {
    let Ok(before) = Oid::from_str(since).and_then(|id| repo.find_commit(id)) else {
        return Ok(None);
    };
    let diff = repo.diff_tree_to_tree(
        Some(&app_tree(repo, before.id(), app_dir)?),
        Some(&app_tree(repo, commit, app_dir)?),
        None,
    )?;
    Ok(Some(
        diff.deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .map(Path::to_path_buf)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let entry = git2::IndexEntry {
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
            };
            index.add(&entry).unwrap();
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
}
