//! The builds on disk: their names, which one is live, and cleaning up old ones.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::state::build_name::BuildName;
use crate::state::plan::Layout;

/// Every build in `builds/`, oldest first. Anything else there is not ours and is left alone.
pub(crate) fn list(layout: &Layout) -> Result<Vec<BuildName>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&layout.builds)
        .with_context(|| format!("cannot list {}", layout.builds.display()))?;
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str().and_then(BuildName::parse) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The build `latest` points at, if any.
pub(crate) fn live(layout: &Layout) -> Option<BuildName> {
    let target = std::fs::read_link(&layout.latest).ok()?;
    let name = target.file_name()?.to_str()?;
    BuildName::parse(name)
}

/// The commit a build was made from (its `REVISION` file).
pub(crate) fn revision(layout: &Layout, build: &BuildName) -> Option<String> {
    let text = std::fs::read_to_string(layout.build_dir(build).join("REVISION")).ok()?;
    Some(text.trim().to_string())
}

/// What is recorded of a build beside its files (in the state folder, since builds are
/// immutable and `builds/` holds nothing but builds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) commit: String,
    /// The ref that was deployed, or the revision `replay` was given.
    pub(crate) source: String,
    pub(crate) deployed_at: String,
    /// Rolled back from, or failed its health check: never a rollback target again.
    #[serde(default)]
    pub(crate) bad: bool,
    /// Set once `latest` pointed at it. A build that never went live and is not live was
    /// left by an interrupted deploy. (Records without the field predate it: live once.)
    #[serde(default = "went_live_default")]
    pub(crate) went_live: bool,
}

fn went_live_default() -> bool {
    true
}

pub(crate) fn read_meta(layout: &Layout, build: &BuildName) -> Option<Meta> {
    let text = std::fs::read_to_string(layout.meta_file(build)).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn write_meta(layout: &Layout, build: &BuildName, meta: &Meta) -> Result<()> {
    replace_file(&layout.meta_file(build), &serde_json::to_vec_pretty(meta)?)
}

/// Replaces the file at `path` by `bytes`, whole or not at all (see infra/fsutil.rs), its
/// folder made if missing. Every record in the state folder is written so.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    crate::infra::fsutil::write_atomically(path, None, |out| out.write_all(bytes))
}

/// Removes the file at `path`; one that is already gone is fine (a record never written,
/// or removed by a run that was killed right after).
pub(crate) fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

pub(crate) fn is_bad(layout: &Layout, build: &BuildName) -> bool {
    read_meta(layout, build).is_some_and(|m| m.bad)
}

pub(crate) fn mark_bad(layout: &Layout, build: &BuildName) -> Result<()> {
    let mut meta = read_meta(layout, build).unwrap_or_else(|| Meta {
        commit: revision(layout, build).unwrap_or_default(),
        source: String::new(),
        deployed_at: String::new(),
        bad: false,
        went_live: true,
    });
    meta.bad = true;
    write_meta(layout, build, &meta)
}

/// Notes that `build` went live (see [`Meta::went_live`]).
pub(crate) fn record_went_live(layout: &Layout, build: &BuildName) -> Result<()> {
    match read_meta(layout, build) {
        Some(meta) if !meta.went_live => write_meta(
            layout,
            build,
            &Meta {
                went_live: true,
                ..meta
            },
        ),
        _ => Ok(()),
    }
}

/// Where a rollback from the live build goes: the newest older build that is not bad and is
/// of another commit. A `replay` makes a second build of the live commit; going back to the
/// first would change nothing a PHP team can see, so a rollback goes to the previous commit.
pub(crate) fn rollback_target(layout: &Layout) -> Result<Option<BuildName>> {
    let Some(live) = live(layout) else {
        return Ok(None);
    };
    let live_commit = revision(layout, &live);
    let same_commit = |b: &BuildName| live_commit.is_some() && revision(layout, b) == live_commit;
    Ok(list(layout)?
        .into_iter()
        .rev()
        .find(|b| *b < live && !is_bad(layout, b) && !same_commit(b)))
}

/// Removes every bad build and the oldest good builds beyond `keep`; never the live one, nor
/// `spare` (a group's build before the one just switched to, which the primary may still
/// switch back to). Returns what it removed. Each build leaves `builds/` in one rename, as
/// [`park_build`] does; its files stay in the trash for [`empty_trash`], which the deploy runs
/// after the push has its answer (see steps/cleanup.rs).
pub(crate) fn cleanup_sparing(
    layout: &Layout,
    keep: usize,
    spare: Option<&BuildName>,
) -> Result<Vec<BuildName>> {
    let live = live(layout);
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    let mut good_kept = 0;
    for name in list(layout)?.iter().rev() {
        if Some(name) == live.as_ref() || Some(name) == spare {
            if !is_bad(layout, name) {
                good_kept += 1;
            }
            continue;
        }
        if !is_bad(layout, name) && good_kept < keep {
            good_kept += 1;
            continue;
        }
        // One build that cannot go does not keep the others.
        match park_build(layout, name) {
            Ok(_) => removed.push(name.clone()),
            Err(err) => problems.push(format!("builds/{name}: {err:#}")),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    Ok(removed)
}

/// What [`empty_trash`] deleted, and what it could not.
#[derive(Debug, Default)]
pub(crate) struct Emptied {
    pub(crate) deleted: usize,
    /// One line for each tree left in the trash (a [`Stuck`] one says why and what to do).
    pub(crate) problems: Vec<String>,
}

/// Deletes everything in the trash: the builds a cleanup moved out of `builds/`, and what a
/// killed run left there. Under the lock, so nothing else is moving trees in meanwhile.
pub(crate) fn empty_trash(layout: &Layout) -> Emptied {
    let mut emptied = Emptied::default();
    let Ok(entries) = std::fs::read_dir(layout.trash()) else {
        return emptied;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        crate::infra::fault::point("removing");
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => delete_tree(&path),
            _ => std::fs::remove_file(&path).map_err(Into::into),
        };
        match removed {
            Ok(()) => emptied.deleted += 1,
            Err(err) => emptied.problems.push(format!("{err:#}")),
        }
    }
    emptied
}

/// The space builds take, for deciding which to delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes on disk of the files (and directories) that no newer build shares: each file is
    /// counted once, in the newest build that has it. The builds' figures add up to what
    /// `builds/` takes on disk, and deleting a build together with every older one frees the
    /// sum of their figures (the oldest build's own is what deleting it alone frees).
    pub(crate) disk: u64,
    /// The build's full size, as if it shared nothing: `du -s --apparent-size`.
    pub(crate) apparent: u64,
}

/// The usage of each of `builds` (directories, given newest first), in that order.
pub(crate) fn disk_usage(builds: &[std::path::PathBuf]) -> Vec<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    builds
        .iter()
        .map(|build| {
            let mut usage = Usage::default();
            for meta in walkdir::WalkDir::new(build)
                .into_iter()
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
            {
                usage.apparent += meta.len();
                if seen.insert((meta.dev(), meta.ino())) {
                    usage.disk += meta.blocks() * 512;
                }
            }
            usage
        })
        .collect()
}

/// Moves a build out of `builds/` in one rename, then deletes it, so `builds/` never holds a
/// half-deleted build. A build that left `builds/` but could not be deleted (a [`Stuck`]
/// error) is gone as far as anything else goes: its records go with it.
pub(crate) fn remove_build(layout: &Layout, name: &BuildName) -> Result<()> {
    let parked = park_build(layout, name)?;
    crate::infra::fault::point("removing");
    delete_tree(&parked)
}

/// The first half of [`remove_build`]: the build leaves `builds/` in one rename, into the
/// trash, and its records go. Returns the tree in the trash that is still to be deleted
/// (by [`delete_tree`], [`empty_trash`], or the next deploy's recovery after a kill).
pub(crate) fn park_build(layout: &Layout, name: &BuildName) -> Result<std::path::PathBuf> {
    if live(layout).as_ref() == Some(name) {
        anyhow::bail!("refusing to remove builds/{name}: it is live");
    }
    let bad = is_bad(layout, name);
    let parked = park_dir(layout, &layout.build_dir(name))?;
    // Its record and output go with it; a build that is gone is never shown. But a bad
    // build's deploy failed (its health check, or someone marked it): `builds` lists it with
    // the other failed attempts, so its output is kept with theirs (and pruned with theirs).
    let _ = std::fs::remove_file(layout.meta_file(name));
    let _ = std::fs::remove_file(layout.manifest_file(name));
    let _ = std::fs::remove_file(layout.carried_file(name));
    let output = layout.output_dir().join(format!("{name}.log"));
    if bad {
        let _ = std::fs::rename(&output, layout.output_dir().join(failed_output_of(name)));
        let _ = crate::state::history::prune_failed(&layout.output_dir());
    } else {
        let _ = std::fs::remove_file(output);
    }
    Ok(parked)
}

/// The name under which the output of the bad build `name` is kept once the build is gone.
pub(crate) fn failed_output_of(name: &BuildName) -> String {
    format!("failed-{name}.log")
}

/// Removes a directory tree by first renaming it into the trash.
pub(crate) fn remove_dir(layout: &Layout, dir: &Path) -> Result<()> {
    let parked = park_dir(layout, dir)?;
    crate::infra::fault::point("removing");
    delete_tree(&parked)
}

/// Renames `dir` into a folder of its own in the trash; returns that folder.
fn park_dir(layout: &Layout, dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(layout.trash())?;
    let parked = tempfile::Builder::new()
        .prefix("removing-")
        .tempdir_in(layout.trash())?
        .keep();
    let target = parked.join("tree");
    std::fs::rename(dir, &target)
        .with_context(|| format!("cannot move {} out of the way", dir.display()))?;
    Ok(parked)
}

/// A tree in the trash that could not be deleted, because a directory in it is not the deploy
/// user's to empty: the web server made it in a build, most likely. It stays in the trash,
/// where nothing reads it, and every later deploy tries again.
#[derive(Debug)]
pub(crate) struct Stuck {
    pub(crate) tree: std::path::PathBuf,
    pub(crate) blocker: std::path::PathBuf,
    pub(crate) owner: u32,
    pub(crate) mode: u32,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = crate::infra::users::user_name(self.owner)
            .unwrap_or_else(|| format!("uid {}", self.owner));
        // Named as in the build it was (the parked tree is `<tree>/tree`).
        let inside = self
            .blocker
            .strip_prefix(&self.tree)
            .unwrap_or(&self.blocker);
        let inside = inside.strip_prefix("tree").unwrap_or(inside);
        write!(
            f,
            "left in the trash, as {}: its {} belongs to {owner} (mode {:o}), and this user \
             cannot empty it; delete it as root (`sudo rm -rf {}`); each deploy tries again \
             until then. A directory the app writes in belongs in `shared:` in deploy.yml",
            self.tree.display(),
            inside.display(),
            self.mode & 0o7777,
            self.tree.display()
        )
    }
}

impl std::error::Error for Stuck {}

/// Deletes `tree`. When some of it cannot go, deletes all that can and names, as [`Stuck`],
/// the first directory this user cannot empty.
pub(crate) fn delete_tree(tree: &Path) -> Result<()> {
    let err = match std::fs::remove_dir_all(tree) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => err,
    };
    for entry in walkdir::WalkDir::new(tree)
        .contents_first(true)
        .into_iter()
        .filter_map(Result::ok)
    {
        let _ = if entry.file_type().is_dir() {
            std::fs::remove_dir(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
    }
    if std::fs::symlink_metadata(tree).is_err() {
        return Ok(());
    }
    let blocker = walkdir::WalkDir::new(tree)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir() && !may_empty(e.path()))
        .find_map(|e| Some((e.path().to_path_buf(), e.metadata().ok()?)));
    match blocker {
        Some((blocker, meta)) => {
            use std::os::unix::fs::MetadataExt;
            Err(Stuck {
                tree: tree.to_path_buf(),
                blocker,
                owner: meta.uid(),
                mode: meta.mode(),
            }
            .into())
        }
        None => Err(err).with_context(|| format!("cannot remove {}", tree.display())),
    }
}

/// Whether this process may delete what `dir` holds (write and search permission).
fn may_empty(dir: &Path) -> bool {
    use nix::unistd::AccessFlags;
    // AT_EACCESS: the effective ids decide, as they do when the files are deleted.
    nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> BuildName {
        BuildName::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    const FOUR: [&str; 4] = [
        "20260101-000000",
        "20260102-000000",
        "20260103-000000",
        "20260104-000000",
    ];

    /// A deploy root holding the named builds, `latest` pointing at `live`.
    fn root_with(builds: &[&str], live: &str) -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        for build in builds {
            std::fs::create_dir_all(layout.builds.join(build)).unwrap();
            std::fs::write(
                layout.builds.join(build).join("REVISION"),
                format!("{build}\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(&layout.state).unwrap();
        std::os::unix::fs::symlink(format!("builds/{live}"), &layout.latest).unwrap();
        (tmp, layout)
    }

    fn names(layout: &Layout) -> Vec<String> {
        list(layout)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn cleanup_never_removes_the_live_build_even_when_it_is_the_oldest() {
        let all = FOUR;
        let (_tmp, layout) = root_with(&all, all[0]);
        let removed = cleanup_sparing(&layout, 1, None).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(names(&layout), [all[0], all[3]]);
        let emptied = empty_trash(&layout);
        assert_eq!((emptied.deleted, emptied.problems.len()), (2, 0));
        assert!(
            std::fs::read_dir(layout.trash()).unwrap().next().is_none(),
            "trash emptied"
        );
    }

    #[test]
    fn bad_builds_do_not_count_toward_keep_and_are_removed_unless_live() {
        let all = FOUR;
        let (_tmp, layout) = root_with(&all, all[2]);
        mark_bad(&layout, &name(all[3])).unwrap();
        mark_bad(&layout, &name(all[2])).unwrap();
        // Live and bad: kept. Newest: bad, removed. Two good ones kept for keep=2.
        cleanup_sparing(&layout, 2, None).unwrap();
        assert_eq!(names(&layout), [all[0], all[1], all[2]]);
        assert!(
            !layout.meta_file(&name(all[3])).exists(),
            "its record went with it"
        );
    }

    #[test]
    fn the_rollback_target_is_the_newest_older_good_build() {
        let all = FOUR;
        let (_tmp, layout) = root_with(&all, all[2]);
        assert_eq!(rollback_target(&layout).unwrap(), Some(name(all[1])));
        mark_bad(&layout, &name(all[1])).unwrap();
        assert_eq!(rollback_target(&layout).unwrap(), Some(name(all[0])));
        mark_bad(&layout, &name(all[0])).unwrap();
        assert_eq!(rollback_target(&layout).unwrap(), None);
    }
}
