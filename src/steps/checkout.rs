//! Checking a commit out into `application/` with libgit2.
//!
//! `application/` keeps its untracked files between deploys (`vendor/` above all, so composer
//! is incremental). Its index lives in the state folder, not in the bare repository, so the
//! repository stays an ordinary bare repository for git's own tools.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::build::CheckoutBuilder;
use git2::{CheckoutNotificationType, Delta, FileMode, Index, Oid, Repository};

use crate::infra::fault;
use crate::infra::report::Reporter;
use crate::state::app_tree::{app_tree, tree_diff};
use crate::state::plan::Layout;
use crate::steps::Summary;

mod edited;
mod fresh;
mod known;

#[derive(Debug, Default)]
pub(crate) struct Checkout {
    /// Files in the commit.
    pub(crate) files: usize,
    /// Files written because they were added or changed since the last checkout.
    pub(crate) written: usize,
    /// Files removed because the commit no longer has them.
    pub(crate) removed: usize,
    /// Tracked files that had been edited on the server; their edits are gone now.
    pub(crate) overwritten: Vec<String>,
    /// Symlinks made on the server where the commit has a file or a directory; removed.
    pub(crate) unlinked: Vec<String>,
    /// Files added on the server that git neither tracks nor ignores; removed.
    pub(crate) added_by_hand: Vec<String>,
    /// The app's tree has composer's `auth.json`: credentials in the repository.
    pub(crate) committed_auth: bool,
    /// Submodules checked out, nested ones included (their files are in the counts above).
    pub(crate) submodules: usize,
}

impl Checkout {
    /// Adds the checkout of the submodule at `path` (in application/) to this one.
    pub(crate) fn absorb(&mut self, path: &Path, sub: Checkout) {
        let at = |list: Vec<String>| {
            list.into_iter()
                .map(|p| format!("{}/{p}", display(path)))
                .collect::<Vec<_>>()
        };
        self.files += sub.files;
        self.written += sub.written;
        self.removed += sub.removed;
        self.overwritten.extend(at(sub.overwritten));
        self.unlinked.extend(at(sub.unlinked));
        self.added_by_hand.extend(at(sub.added_by_hand));
        self.submodules += 1 + sub.submodules;
    }

    /// What the pusher must know was undone on the server, one warning each.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.overwritten.is_empty() {
            warnings.push(format!(
                "overwrote edits made on the server to tracked files in application/: {}",
                self.overwritten.join(", ")
            ));
        }
        if !self.added_by_hand.is_empty() {
            warnings.push(format!(
                "removed files added on the server to application/ that git neither tracks nor ignores: {}",
                self.added_by_hand.join(", ")
            ));
        }
        if self.committed_auth {
            warnings.push(
                "the commit has an auth.json (composer's credentials) in the app's root: it is \
                 never copied into a build, but everyone who can read the repository has those \
                 credentials. Remove it from the repository (`git rm --cached auth.json`, and \
                 add it to .gitignore), rotate the credentials, and put them in auth.json in the \
                 deploy root, beside deploy.yml (chmod 600), which composer alone is given"
                    .to_string(),
            );
        }
        if !self.unlinked.is_empty() {
            warnings.push(format!(
                "removed symlinks made on the server in application/ where the commit has files: {}",
                self.unlinked.join(", ")
            ));
        }
        warnings
    }
}

impl fmt::Display for Checkout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files, {} written, {} removed",
            self.files, self.written, self.removed
        )?;
        match self.submodules {
            0 => Ok(()),
            1 => f.write_str(" (1 submodule)"),
            n => write!(f, " ({n} submodules)"),
        }
    }
}

impl Summary for Checkout {}

/// Checks `commit` (its directory at `app_dir`, see [`app_tree`]) out into `application/`.
/// The deploy's repository gets `application/` as its working directory and the state
/// folder's index for it; nothing after this step reads a working tree through it.
pub(crate) fn checkout(
    repo: &Repository,
    commit: Oid,
    app_dir: &Path,
    layout: &Layout,
    composer: bool,
    excluded: &[PathBuf],
    reporter: &Reporter,
) -> Result<Checkout> {
    start_afresh_for_another_app_dir(layout, app_dir, reporter)?;
    let mut result = checkout_worktree(
        repo,
        commit,
        app_dir,
        &Worktree::application(layout),
        composer,
        excluded,
        reporter,
    )?;
    result.committed_auth = app_tree(repo, commit, app_dir)?
        .get_name("auth.json")
        .is_some();
    Ok(result)
}

/// A directory checked out from one repository, with its own index in the state folder:
/// `application/` itself, or a submodule's directory in it (see `submodules.rs`).
pub(crate) struct Worktree {
    pub(crate) dir: PathBuf,
    pub(crate) index: PathBuf,
    /// Commits whose checkout into `dir` started and has not completed.
    pub(crate) pending: PathBuf,
    /// The index as the pusher is shown it: `.atomdeploy/application.index`.
    pub(crate) shown_index: String,
}

impl Worktree {
    pub(crate) fn application(layout: &Layout) -> Worktree {
        Worktree {
            dir: layout.application.clone(),
            index: layout.index_file(),
            pending: layout.state.join("checkout.pending"),
            shown_index: ".atomdeploy/application.index".into(),
        }
    }
}

/// [`checkout`] of `commit` of `repo` into `wt.dir`, which the caller made sure is a real
/// directory (no symlink on the way) or absent.
pub(crate) fn checkout_worktree(
    repo: &Repository,
    commit: Oid,
    app_dir: &Path,
    wt: &Worktree,
    composer: bool,
    excluded: &[PathBuf],
    reporter: &Reporter,
) -> Result<Checkout> {
    let known = known::read(&wt.index);
    let tree = checked_tree(repo, commit, app_dir, known.as_ref().map(|k| k.tree))?;
    let rules = added_ignore_rules(composer, excluded);
    let ignores = known::ignores(repo, &rules);
    let (mut index, index_lost) = prepare(repo, wt, &rules, reporter)?;
    let known = known.filter(|k| k.holds(&wt.index, ignores));
    let mut result = Checkout::default();
    let Changes {
        mut to_write,
        to_remove,
        old_gitlinks,
        new_gitlinks,
    } = changes(repo, &tree, &index, known.as_ref(), &mut result)?;

    // A checkout killed half-way leaves files the index does not know: those of the tree
    // it was writing. Remember which, to remove the ones this tree does not have.
    // Every interrupted tree is kept until a checkout completes: a second checkout killed
    // (or failing) before then must not forget the first one's files. (The app's tree, not
    // the commit, is noted: with `app_dir:` only a directory of the commit was written.
    // Versions before it noted commits, whose tree the id leads to just as well.)
    let pending = &wt.pending;
    let interrupted = interrupted_trees(pending);
    let strays = interrupted
        .iter()
        .map(|other| untracked_files_of(repo, *other, &index, reporter))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let interrupted = (!interrupted.is_empty()).then_some(interrupted);
    // An empty application/ (a first deploy) with nothing interrupted to clean up after:
    // written in parallel, see `fresh`.
    let fresh = match interrupted {
        None => fresh::plan(repo, &tree, &wt.dir, &index)?,
        Some(_) => None,
    };
    // Forced, the checkout also rewrites what was edited on the server; after an
    // interruption, or without an index, nothing says what it will write: every path.
    let mut edited = Vec::new();
    if interrupted.is_some() || index_lost {
        to_write = tree_files(repo, &tree)?;
    } else {
        // (After an interruption, differences are the interrupted checkout's, not edits.)
        edited = edited::edited_on_server(repo, &index, &wt.index, &wt.dir)?;
        result.overwritten = edited.iter().map(|p| display(p)).collect();
        to_write.extend(edited.iter().cloned());
    }
    note_in_progress(
        pending,
        interrupted.as_deref().unwrap_or_default(),
        tree.id(),
    )?;
    // (An empty application/ has no symlink in anybody's way: 50,000 lstat calls saved.)
    if fresh.is_none() {
        result.unlinked = clear_symlinks_in_the_way(&to_write, &tree, &index, &wt.dir)?;
    }
    clear_where_submodules_come_and_go(&wt.dir, &new_gitlinks, &old_gitlinks)?;
    // libgit2's checkout takes a file whose size and mtime are still the index's for
    // unchanged, and an edit can keep both (same length, `touch -r`): removed, an edited file
    // is written again whatever its stat says. (A symlink there went with those in the way.)
    remove_non_dirs(&wt.dir, &edited)?;
    // libgit2 decides with the .gitignore files the working copy has before it writes the
    // new ones: what it kept as ignored is not known to be so under the new rules.
    let gitignore = |p: &PathBuf| p.file_name() == Some(OsStr::new(".gitignore"));
    let rules_change = to_write.iter().chain(&to_remove).any(gitignore);
    let partial = interrupted.is_none() && !index_lost && !rules_change;
    let partial = partial && old_gitlinks.is_empty() && new_gitlinks.is_empty();
    let trusted = known.as_ref().filter(|_| partial);
    let look_at = trusted.and_then(|k| look_at(k, &wt.dir, [to_write, to_remove]));
    match fresh {
        Some(fresh) => {
            fresh
                .write(repo, &wt.dir, &mut index, reporter)
                .with_context(|| format!("cannot check {commit} out into {}", wt.dir.display()))?;
        }
        None => {
            result.added_by_hand =
                write_tree(repo, &tree, commit, &wt.dir, look_at.as_deref(), reporter)?;
        }
    }
    remove_old_gitlinks(repo, &old_gitlinks, &tree, &wt.dir)
        .with_context(|| format!("cannot check {commit} out where submodules were"))?;
    index.write().context("cannot save the checkout's index")?;
    result.files = index.len();
    remove_strays(&tree, &wt.dir, strays);
    keep_record(repo, wt, &tree, &index, ignores, rules_change, trusted);
    std::fs::remove_file(pending).context("cannot note the checkout as done")?;
    Ok(result)
}

/// Keeps the record of this checkout for the next one, unless the ignore rules changed with
/// it (see `look_at`). Only a shortcut: a record that cannot be kept is one the next
/// checkout does without (one left from before names another index file).
fn keep_record(
    repo: &Repository,
    wt: &Worktree,
    tree: &git2::Tree,
    index: &Index,
    ignores: u64,
    rules_change: bool,
    trusted: Option<&known::Known>,
) {
    let _ = match rules_change {
        true => known::forget(&wt.index),
        false => known::write(repo, &wt.index, tree.id(), index, &wt.dir, ignores, trusted),
    };
}

/// Every directory above the index's `entries`, the top (empty path) aside.
fn directories_of(entries: &[git2::IndexEntry]) -> std::collections::HashSet<&[u8]> {
    let mut dirs = std::collections::HashSet::new();
    for entry in entries {
        let mut path = entry.path.as_slice();
        while let Some(slash) = path.iter().rposition(|b| *b == b'/') {
            path = &path[..slash];
            if !dirs.insert(path) {
                break; // and everything above it, inserted with it
            }
        }
    }
    dirs
}

/// The trees of checkouts that were interrupted, as noted in `pending`.
fn interrupted_trees(pending: &Path) -> Vec<Oid> {
    std::fs::read_to_string(pending)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| Oid::from_str(line.trim()).ok())
        .collect()
}

/// Notes in `pending` that `tree` is being checked out, beside the `interrupted` ones.
fn note_in_progress(pending: &Path, interrupted: &[Oid], tree: Oid) -> Result<()> {
    let mut noted: Vec<String> = interrupted
        .iter()
        .filter(|id| **id != tree)
        .map(Oid::to_string)
        .collect();
    noted.push(tree.to_string());
    std::fs::write(pending, noted.join("\n") + "\n").context("cannot note the checkout in progress")
}

/// Removes what interrupted checkouts wrote that `tree` does not have.
fn remove_strays(tree: &git2::Tree, dir: &Path, strays: Vec<PathBuf>) {
    for stray in strays {
        // Only where the path still leads through real directories of application/: the
        // commit now live may have a symlink (into shared/, anywhere) above it.
        if tree.get_path(&stray).is_err()
            && let Some(full) = inside_real(dir, &stray)
            && std::fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir())
        {
            let _ = std::fs::remove_file(full);
        }
    }
}

/// What libgit2 looks at, given the last checkout's record: the paths written and removed,
/// and the entries of the directories that moved since; None (everything) when the record
/// cannot tell (see `known`).
fn look_at(known: &known::Known, dir: &Path, changed: [Vec<PathBuf>; 2]) -> Option<Vec<PathBuf>> {
    let [to_write, to_remove] = changed;
    let mut paths = [to_write, to_remove, known.to_look_at(dir)?].concat();
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// Makes room where submodules come and go, before the checkout writes: a file where the
/// commit has a new submodule, and what an old submodule's checkout wrote there (the
/// submodule's, gone with it) before libgit2 writes what the commit has at that path.
fn clear_where_submodules_come_and_go(
    dir: &Path,
    new_gitlinks: &[PathBuf],
    old_gitlinks: &[PathBuf],
) -> Result<()> {
    remove_non_dirs(dir, new_gitlinks)?;
    for path in old_gitlinks {
        if let Some(full) = inside_real(dir, path)
            && std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir())
        {
            std::fs::remove_dir_all(&full)
                .with_context(|| format!("cannot remove the submodule {}", full.display()))?;
        }
    }
    Ok(())
}

/// Removes whatever is not a directory at each of `paths` in `dir`, reached through real
/// directories only (what a symlink above it points to is not the working copy's).
fn remove_non_dirs(dir: &Path, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        if let Some(full) = inside_real(dir, path)
            && std::fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir())
        {
            std::fs::remove_file(&full)
                .with_context(|| format!("cannot remove {}", full.display()))?;
        }
    }
    Ok(())
}

/// The app's tree of the commit, once every path in it is one git accepts.
/// `checked`, a tree checked before, spares reading the subtrees the two have in common.
pub(crate) fn checked_tree<'r>(
    repo: &'r Repository,
    commit: Oid,
    app_dir: &Path,
    checked: Option<Oid>,
) -> Result<git2::Tree<'r>> {
    // The root tree first, for a refusal that names its unreadable directory as `/`.
    repo.find_commit(commit)?
        .tree()
        .map_err(|e| unreadable(b"", &e))
        .map_err(|refused| anyhow::anyhow!("refusing commit {commit}: {refused}"))?;
    let tree = app_tree(repo, commit, app_dir)?;
    // Before anything is touched: a path git refuses would be joined onto application/ below
    // (and by libgit2), and `..` or `.git` there reach outside it.
    let checked = checked.and_then(|id| repo.find_tree(id).ok());
    if let Err(refused) = check_tree(repo, &tree, checked.as_ref()) {
        bail!(
            "refusing commit {commit}: {refused}; nothing was changed (git refuses such trees \
             at push time when receive.fsckObjects is on, as `atomdeploy-hook install` sets it)"
        );
    }
    Ok(tree)
}

/// Gives the repository `application/` as its working directory and the state folder's
/// index. Returns the index, and whether it was lost (see [`open_index`]).
fn prepare(
    repo: &Repository,
    wt: &Worktree,
    rules: &str,
    reporter: &Reporter,
) -> Result<(Index, bool)> {
    std::fs::create_dir_all(&wt.dir)
        .with_context(|| format!("cannot create {}", wt.dir.display()))?;
    repo.set_workdir(&wt.dir, false)?;
    if !rules.is_empty() {
        repo.add_ignore_rule(rules)?;
    }
    remove_stale_index_lock(wt, reporter)?;
    let (mut index, index_lost) = open_index(wt, reporter)?;
    repo.set_index(&mut index)?;
    Ok((index, index_lost))
}

/// Where the `app_dir:` that application/ (and its index, and composer's record) was checked
/// out for is noted. No file: the whole commit, as before `app_dir:` existed.
fn app_dir_file(layout: &Layout) -> PathBuf {
    layout.state.join("application.app_dir")
}

/// When deploy.yml's `app_dir:` changed since application/ was last checked out, empties
/// application/ and forgets its index and composer's last run: what it holds beside the
/// tracked files (vendor/, node_modules/, anything ignored) belongs to another directory of
/// the repository, and the index's paths to another tree; kept, ignored files of the old app
/// would go into every build of the new one. The note is written last, so that a deploy
/// killed half-way does all of it again.
fn start_afresh_for_another_app_dir(
    layout: &Layout,
    app_dir: &Path,
    reporter: &Reporter,
) -> Result<()> {
    let file = app_dir_file(layout);
    let noted = match std::fs::read(&file) {
        Ok(bytes) => PathBuf::from(OsStr::from_bytes(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PathBuf::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if noted == app_dir {
        return Ok(());
    }
    let shown = |dir: &Path| match dir.as_os_str().is_empty() {
        true => "the whole commit".to_string(),
        false => format!("`{}/`", dir.display()),
    };
    reporter.line(&format!(
        "    app_dir changed from {} to {}: application/ is checked out afresh",
        shown(&noted),
        shown(app_dir)
    ));
    crate::steps::composer::forget_last_run(layout)?;
    if std::fs::symlink_metadata(&layout.application).is_ok() {
        crate::state::builds::remove_dir(layout, &layout.application)
            .context("cannot empty application/ for the new app_dir")?;
    }
    // The submodules' indexes too: they would say their files are still there.
    let indexes = layout.submodule_indexes();
    if indexes.exists() {
        std::fs::remove_dir_all(&indexes)
            .with_context(|| format!("cannot remove {}", indexes.display()))?;
    }
    let stale = [
        known::path(&layout.index_file()),
        layout.index_file(),
        layout.state.join("checkout.pending"),
    ];
    for stale in stale {
        crate::state::builds::remove_file_if_present(&stale)?;
    }
    crate::state::builds::replace_file(&file, app_dir.as_os_str().as_bytes())
}

/// The ignore rules a checkout adds to the working copy's own, for this checkout only (a
/// tracked path stays tracked whatever a rule says).
fn added_ignore_rules(composer: bool, excluded: &[PathBuf]) -> String {
    let mut rules = String::new();
    if composer {
        // What composer writes is its own, not files added by hand: an app that ignores
        // neither vendor/ nor its lock must not lose vendor/ (a full install every deploy) or
        // be told on every push that they were removed.
        rules.push_str("/vendor/\n/composer.lock\n");
    }
    // `exclude:` paths are kept in application/ (node_modules/ between builds), never
    // removed as files added by hand.
    rules.push_str(&ignore_rules(excluded));
    rules
}

/// Gitignore lines matching exactly `paths` (relative to the app) and what is below them.
fn ignore_rules(paths: &[PathBuf]) -> String {
    let mut rules = String::new();
    // (deploy.yml's paths are UTF-8; a line break cannot be written in a rule.)
    for path in paths.iter().filter_map(|p| p.to_str()) {
        if path.contains(['\n', '\r']) {
            continue;
        }
        rules.push('/');
        for c in path.chars() {
            // Glob characters and the escape itself are taken literally.
            if "*?[]\\!# ".contains(c) {
                rules.push('\\');
            }
            rules.push(c);
        }
        rules.push('\n');
    }
    rules
}

/// What the commit changes against the index, beyond the counts it adds to `result`.
struct Changes {
    /// Paths the checkout is about to write.
    to_write: Vec<PathBuf>,
    /// Paths the checkout is about to remove.
    to_remove: Vec<PathBuf>,
    /// Submodule directories the commit no longer has as submodules: libgit2 leaves them.
    old_gitlinks: Vec<PathBuf>,
    /// Where the commit has a new submodule: libgit2 cannot make its directory over a file.
    new_gitlinks: Vec<PathBuf>,
}

/// The [`Changes`] from the index to `tree`, `known` the last checkout's record if it holds.
fn changes(
    repo: &Repository,
    tree: &git2::Tree,
    index: &Index,
    known: Option<&known::Known>,
    result: &mut Checkout,
) -> Result<Changes> {
    // When the record holds, the index is the tree it names: comparing the two trees reads
    // only the subtrees that differ, where the index has no subtrees to skip.
    if let Some(was) = known.and_then(|k| repo.find_tree(k.tree).ok()) {
        return changes_since(repo, &was, tree, result);
    }
    let diff = repo.diff_tree_to_index(Some(tree), Some(index), None)?;
    let mut to_write: Vec<PathBuf> = Vec::new();
    let mut to_remove: Vec<PathBuf> = Vec::new();
    let mut old_gitlinks: Vec<PathBuf> = Vec::new();
    let mut new_gitlinks: Vec<PathBuf> = Vec::new();
    for delta in diff.deltas() {
        // The diff runs from the new tree to the old index, so its sides are swapped.
        match delta.status() {
            Delta::Deleted | Delta::Modified | Delta::Typechange => {
                result.written += 1;
                to_write.extend(delta.old_file().path().map(Path::to_path_buf));
            }
            Delta::Added => {
                result.removed += 1;
                to_remove.extend(delta.new_file().path().map(Path::to_path_buf));
            }
            _ => {}
        }
        let (commit_has, index_had) = (delta.old_file(), delta.new_file());
        if index_had.mode() == FileMode::Commit && commit_has.mode() != FileMode::Commit {
            old_gitlinks.extend(index_had.path().map(Path::to_path_buf));
        }
        if commit_has.mode() == FileMode::Commit && index_had.mode() != FileMode::Commit {
            new_gitlinks.extend(commit_has.path().map(Path::to_path_buf));
        }
    }
    Ok(Changes {
        to_write,
        to_remove,
        old_gitlinks,
        new_gitlinks,
    })
}

/// [`changes`] from `was`, the tree the index holds, to `tree`.
fn changes_since(
    repo: &Repository,
    was: &git2::Tree,
    tree: &git2::Tree,
    result: &mut Checkout,
) -> Result<Changes> {
    let mut changes = Changes {
        to_write: Vec::new(),
        to_remove: Vec::new(),
        old_gitlinks: Vec::new(),
        new_gitlinks: Vec::new(),
    };
    let gitlink = |side: Option<(Oid, i32)>| side.is_some_and(|(_, mode)| mode == GITLINK_MODE);
    for change in tree_diff(repo, was, tree)? {
        if change.new.is_some() {
            result.written += 1;
            changes.to_write.push(change.path.clone());
        } else {
            result.removed += 1;
            changes.to_remove.push(change.path.clone());
        }
        if gitlink(change.old) && !gitlink(change.new) {
            changes.old_gitlinks.push(change.path.clone());
        }
        if gitlink(change.new) && !gitlink(change.old) {
            changes.new_gitlinks.push(change.path);
        }
    }
    Ok(changes)
}

/// The checkout itself, forced: of `paths` only (and what is below them) when given, of
/// the whole tree otherwise. Returns the files added by hand that it removed.
fn write_tree(
    repo: &Repository,
    tree: &git2::Tree,
    commit: Oid,
    dir: &Path,
    paths: Option<&[PathBuf]>,
    reporter: &Reporter,
) -> Result<Vec<String>> {
    // (libgit2 reads no paths as all of them.)
    if paths.is_some_and(|p| p.is_empty()) {
        return Ok(Vec::new());
    }
    // Its length comes with the first progress call.
    let bar = reporter.progress(0, "checking out");
    let mut added_by_hand = Vec::new();
    let mut builder = CheckoutBuilder::new();
    if let Some(paths) = paths {
        // Exact paths: a pathspec would read `*` or `\` in a name.
        builder.disable_pathspec_match(true);
        for path in paths {
            builder.path(path);
        }
    }
    // Files added on the server that git neither tracks nor ignores go too, so that the
    // working copy is the commit (ignored ones, vendor/ above all, stay).
    builder
        .force()
        .remove_untracked(true)
        .notify_on(CheckoutNotificationType::UNTRACKED)
        .notify(|_, path, _, _, _| {
            added_by_hand.extend(path.map(display));
            true
        })
        .progress(|_, completed, total| {
            bar.set_length(total as u64);
            bar.set_position(completed as u64);
            fault::point("checkout-file");
        });
    repo.checkout_tree(tree.as_object(), Some(&mut builder))
        .with_context(|| format!("cannot check {commit} out into {}", dir.display()))?;
    drop(builder);
    bar.finish_and_clear();
    Ok(added_by_hand)
}

/// libgit2 writes the index through `<index>.lock`; a checkout killed at that moment leaves
/// the lock, and every later write of the index fails on it. The deploy lock, held by the
/// caller, proves that nobody else is writing the index: the lock is stale.
fn remove_stale_index_lock(wt: &Worktree, reporter: &Reporter) -> Result<()> {
    let mut lock = wt.index.clone().into_os_string();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    match std::fs::remove_file(&lock) {
        Ok(()) => {
            reporter.warn(&format!(
                "removed {}.lock, left by a checkout that was killed \
                 (the deploy lock shows nobody else is using it)",
                wt.shown_index
            ));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", lock.display())),
    }
}

/// The checkout's index, or a new empty one when the file cannot be read (garbage, cut
/// short): the working copy is then checked out in full, as after an interruption. The
/// second value says whether the index was lost.
fn open_index(wt: &Worktree, reporter: &Reporter) -> Result<(Index, bool)> {
    let file = &wt.index;
    match Index::open(file) {
        Ok(index) => Ok((index, false)),
        Err(err) => {
            std::fs::remove_file(file)
                .with_context(|| format!("cannot remove the unreadable {}", file.display()))?;
            reporter.warn(&format!(
                "removed {}, which could not be read ({}); checking out every file",
                wt.shown_index,
                err.message()
            ));
            let index =
                Index::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            Ok((index, true))
        }
    }
}

/// Removes the directories libgit2 leaves where the commit before had a submodule and this
/// one has none (or a file): empty ones only (the submodule's files went before the
/// checkout; what stands there now is libgit2's). What the commit has of its own at such a
/// path (a file, a link), which libgit2 could not write while the directory stood, is then
/// written here from its blob. (A second
/// libgit2 checkout limited to those paths is no answer: its pathspec reads a `\` in a name
/// as an escape, and a name git allows, `x\y`, then matches nothing.)
fn remove_old_gitlinks(
    repo: &Repository,
    paths: &[PathBuf],
    tree: &git2::Tree,
    app: &Path,
) -> Result<()> {
    for path in paths {
        let Some(full) = inside_real(app, path) else {
            continue;
        };
        let in_commit = tree.get_path(path).ok();
        let kind = in_commit.as_ref().map(|e| e.kind());
        if kind == Some(Some(git2::ObjectType::Tree))
            || kind == Some(Some(git2::ObjectType::Commit))
        {
            continue; // a directory here is the commit's
        }
        let is_dir = std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir());
        if is_dir && std::fs::read_dir(&full).is_ok_and(|mut d| d.next().is_none()) {
            std::fs::remove_dir(&full)
                .with_context(|| format!("cannot remove {}", full.display()))?;
            if let Some(entry) = in_commit {
                write_blob(repo, entry.id(), entry.filemode(), &full)?;
            }
        }
    }
    Ok(())
}

/// Writes blob `id` of tree mode `mode` at `full`, which must not exist, as libgit2's
/// checkout does: a symlink for 120000, else a file, 0755 for 100755 and 0644 otherwise (the
/// umask applying).
fn write_blob(repo: &Repository, id: Oid, mode: i32, full: &Path) -> Result<()> {
    let blob = repo.find_blob(id)?;
    let written = if mode == LINK_MODE {
        std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), full)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if mode == EXEC_MODE { 0o755 } else { 0o644 })
            .open(full)
            .and_then(|mut file| std::io::Write::write_all(&mut file, blob.content()))
    };
    written.with_context(|| format!("cannot write {}", full.display()))
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
        // Index paths were never checked (an index written by an older version may hold
        // anything); a path that is not a plain relative path is not looked at.
        if inside(app, file).is_none() {
            continue;
        }
        for path in file.ancestors().filter(|p| !p.as_os_str().is_empty()) {
            if !seen.insert(path.to_path_buf()) {
                break; // this and everything above it was looked at already
            }
            let full = app.join(path);
            // A link the commit itself has at this very path is the checkout's to update.
            // (Asked of the tree only for a link on disk: a first checkout writes every file.)
            if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink())
                && !(path == file.as_path()
                    && tree.get_path(path).is_ok_and(|e| e.filemode() == LINK_MODE))
            {
                std::fs::remove_file(&full)
                    .with_context(|| format!("cannot remove the symlink {}", full.display()))?;
                if index
                    .get_path(path, 0)
                    .is_none_or(|e| e.mode != LINK_MODE as u32)
                {
                    untracked.push(display(path));
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

/// Tree entry modes, as libgit2 gives them (`TreeEntry::filemode`, `IndexEntry::mode`).
const LINK_MODE: i32 = 0o120000;
const TREE_MODE: i32 = 0o040000;
const GITLINK_MODE: i32 = 0o160000;
const EXEC_MODE: i32 = 0o100755;
const BLOB_MODE: i32 = 0o100644;

/// Files of the tree `id` (or of the commit `id`) that `index` does not track.
fn untracked_files_of(
    repo: &Repository,
    id: Oid,
    index: &Index,
    reporter: &Reporter,
) -> Result<Vec<std::path::PathBuf>> {
    let Ok(tree) = repo.find_object(id, None).and_then(|o| o.peel_to_tree()) else {
        return Ok(Vec::new()); // gone from the repository: nothing to go by
    };
    // Noted by a version that did not check trees: its paths may lead anywhere.
    if let Err(refused) = check_tree(repo, &tree, None) {
        reporter.warn(&format!(
            "ignoring the files of {id}, whose checkout was interrupted: {refused}"
        ));
        return Ok(Vec::new());
    }
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
pub(crate) fn walk(
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

/// A path of a tree that git refuses, and why.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) path: Vec<u8>,
    pub(crate) why: String,
}

/// A tree libgit2 cannot parse (an empty name, say, which git itself cannot even push): the
/// path of the directory, with a `/`.
fn unreadable(dir: &[u8], err: &git2::Error) -> Refused {
    let mut path = dir.to_vec();
    path.push(b'/');
    Refused {
        path,
        why: format!("a directory that cannot be read ({})", err.message()),
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its tree has `{}`, {}",
            display(Path::new(OsStr::from_bytes(&self.path))),
            self.why
        )
    }
}

/// Checks every entry of `tree` the way git's fsck and `verify_path` do, before any of its
/// paths is used. Trees met twice (the same directory in two places) are read once, and
/// those that `checked`, a tree checked before, has at the same path are not read at all:
/// what is checked of a tree depends on nothing but its entries.
fn check_tree(
    repo: &Repository,
    tree: &git2::Tree,
    checked: Option<&git2::Tree>,
) -> Result<(), Refused> {
    let mut seen = std::collections::HashSet::new();
    check_entries(repo, tree, checked, &mut Vec::new(), &mut seen)
}

fn check_entries(
    repo: &Repository,
    tree: &git2::Tree,
    checked: Option<&git2::Tree>,
    prefix: &mut Vec<u8>,
    seen: &mut std::collections::HashSet<Oid>,
) -> Result<(), Refused> {
    let mut names = std::collections::HashSet::with_capacity(tree.len());
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let len = prefix.len();
        prefix.extend_from_slice(name);
        let refuse = |why: &str| Refused {
            path: prefix.clone(),
            why: why.to_string(),
        };
        if let Some(why) = refused_name(name, entry.filemode()) {
            return Err(refuse(why));
        }
        // A symlink and a directory of one name: libgit2 would write the directory's files
        // through the link.
        if !names.insert(name.to_vec()) {
            return Err(refuse("a name the directory has twice"));
        }
        let before = checked
            .and_then(|c| c.get_name_bytes(name))
            .filter(|b| b.kind() == Some(git2::ObjectType::Tree));
        let unchanged = before.as_ref().is_some_and(|b| b.id() == entry.id());
        if entry.kind() == Some(git2::ObjectType::Tree) && !unchanged && seen.insert(entry.id()) {
            let subtree = repo
                .find_tree(entry.id())
                .map_err(|e| unreadable(prefix, &e))?;
            let before = before.and_then(|b| repo.find_tree(b.id()).ok());
            prefix.push(b'/');
            check_entries(repo, &subtree, before.as_ref(), prefix, seen)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// Why git refuses `name` as a tree entry of `mode` (fsck.c and read-cache.c's
/// verify_path, NTFS and HFS+ protections included), or None.
fn refused_name(name: &[u8], mode: i32) -> Option<&'static str> {
    use gix_validate::path::component::{Error, Mode};
    if name.is_empty() {
        return Some("an empty name");
    }
    if name.contains(&0) {
        return Some("a NUL byte in a name");
    }
    if name.contains(&b'/') {
        return Some("a `/` in a name");
    }
    if name == b"." || name == b".." {
        return Some("a name that means this or the parent directory");
    }
    // Which names HFS+ and NTFS read as `.git` or `.gitmodules` is gix-validate's, as git
    // has them. Only those two verdicts count: its others here are about a `\` part or the
    // HFS+ reading being empty, `.` or `..`, which git lets through. Windows' own rules
    // (device names such as `aux.php`, a `:`, a trailing dot) stay off: git does not apply
    // them on Linux, and they would refuse ordinary names.
    let verdicts = |mode| {
        hfs_and_ntfs_views(name).filter_map(move |(view, options)| {
            gix_validate::path::component(view.into(), mode, options).err()
        })
    };
    if verdicts(None).any(|err| matches!(err, Error::DotGitDir)) {
        return Some("a name that means `.git` (on NTFS or HFS+, if not here)");
    }
    if mode == LINK_MODE
        && verdicts(Some(Mode::Symlink)).any(|err| matches!(err, Error::SymlinkedGitModules))
    {
        return Some("`.gitmodules` as a symlink");
    }
    None
}

/// `name` as HFS+ reads it, then as NTFS does, each with the options that check it so.
/// HFS+: up to invalid UTF-8 or U+FFFE/U+FFFF, where git (utf8.c) ends the name and
/// gix-validate would read on past a U+FFFD. NTFS takes `\` as a separator: every part
/// after one counts as a name of its own.
fn hfs_and_ntfs_views(
    name: &[u8],
) -> impl Iterator<Item = (&[u8], gix_validate::path::component::Options)> {
    use gix_validate::path::component::Options;
    let valid = match std::str::from_utf8(name) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&name[..e.valid_up_to()]).unwrap_or_default(),
    };
    let hfs = valid
        .find(['\u{FFFE}', '\u{FFFF}'])
        .map_or(valid, |end| &valid[..end]);
    let only = |protect_hfs, protect_ntfs| Options {
        protect_windows: false,
        protect_hfs,
        protect_ntfs,
    };
    std::iter::once((hfs.as_bytes(), only(true, false))).chain(
        name.split(|b| *b == b'\\')
            .map(move |part| (part, only(false, true))),
    )
}

/// `dir` joined with `path` when `path` is a relative path of names git accepts (no `..`,
/// no `.git`, no empty part), so that the result is inside `dir`; otherwise None.
pub(crate) fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let bytes = path.as_os_str().as_bytes();
    let ok = !bytes.is_empty()
        && bytes
            .split(|b| *b == b'/')
            .all(|name| refused_name(name, 0).is_none());
    ok.then(|| dir.join(path))
}

/// [`inside`], and only while every directory above the path in `dir` is a real directory:
/// what is removed by path must not be reached through a symlink the commit put above it
/// (into shared/, or anywhere on the server).
pub(crate) fn inside_real(dir: &Path, path: &Path) -> Option<PathBuf> {
    let full = inside(dir, path)?;
    let mut above = dir.to_path_buf();
    for part in path.parent().into_iter().flat_map(Path::components) {
        above.push(part);
        if !std::fs::symlink_metadata(&above).is_ok_and(|m| m.file_type().is_dir()) {
            return None;
        }
    }
    Some(full)
}

/// A path as the pusher is shown it: bytes that are not UTF-8 replaced, control characters
/// escaped so that a name cannot forge lines of output.
pub(crate) fn display(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &[u8]) -> bool {
        refused_name(name, BLOB_MODE).is_some()
    }

    fn refused_link(name: &[u8]) -> bool {
        refused_name(name, LINK_MODE).is_some()
    }

    #[test]
    fn names_git_refuses_are_refused() {
        for name in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"a\0b",
            b".git",
            b".GIT",
            b".Git",
            b"git~1",
            b"GIT~1",
            b".git.",
            b".git ",
            b".git. . ",
            b"GIT~1 . ",
            b".git::$INDEX_ALLOCATION",
            b".git\\hooks",
            b"x\\.git",
            b".g\xe2\x80\x8cit",
            b"\xef\xbb\xbf.git",
            b".git\xe2\x80\x8f",
            b".git\xff",
            b".git\xef\xbf\xbe",
        ] {
            assert!(refused(name), "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn near_misses_git_accepts_are_kept() {
        for name in [
            &b"..."[..],
            b".gitx",
            b"git~2",
            b"gi7eba~1",
            b"..\\x",
            b" .git",
            b".gi\xfft",
            b"\xe2\x80\x8cgit",
            b"d\xff",
            b".gitmodules",
            b".hidden",
            b"x\\y",
        ] {
            assert!(!refused(name), "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn gitmodules_is_refused_as_a_symlink_only() {
        for name in [
            &b".gitmodules"[..],
            b".GITMODULES",
            b".gitmodules .",
            b".gitmodules:x",
            b"gi7eba~1",
            b"GITMOD~1",
            b"a\\.gitmodules",
            b".git\xe2\x80\x8cmodules",
        ] {
            assert!(refused_link(name), "{:?}", String::from_utf8_lossy(name));
            assert!(!refused(name) || name.starts_with(b".git\xe2"));
        }
        assert!(!refused_link(b".gitmodulesx"));
        assert!(!refused_link(b".gitattributes"));
    }

    #[test]
    fn excluded_paths_become_literal_anchored_ignore_rules() {
        let paths: Vec<PathBuf> = ["node_modules", "a b/c*[1]", "café", "x\ny"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            ignore_rules(&paths),
            "/node_modules\n/a\\ b/c\\*\\[1\\]\n/café\n"
        );
    }

    #[test]
    fn only_plain_relative_paths_are_joined() {
        let dir = Path::new("/app");
        assert_eq!(
            inside(dir, Path::new("a/b")),
            Some(PathBuf::from("/app/a/b"))
        );
        for bad in [
            "../x",
            "a/../../x",
            "a/./b",
            "/etc",
            "a//b",
            "a/.git/config",
            "",
        ] {
            assert_eq!(inside(dir, Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn paths_are_shown_lossily_and_without_control_characters() {
        let path = Path::new(OsStr::from_bytes(b"d\xff/a\nb"));
        assert_eq!(display(path), "d\u{FFFD}/a\\nb");
    }
}
