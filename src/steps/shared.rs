//! Linking `shared/` entries (sessions, uploads, `.env`) into a build.
//!
//! What is in `shared/` belongs to the users of the site and is never replaced: an entry is
//! seeded from the build only when `shared/` does not have it yet, and the build's own copy
//! is then swapped for a relative symlink.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::SharedEntry;
use crate::state::plan::Layout;
use crate::steps::Summary;

/// What happened to one entry, for the step's line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Linked {
    Existing,
    SeededFromBuild,
    CreatedEmpty,
}

/// Links every entry into `build`, a directory exactly two levels below the deploy root
/// (`builds/<name>` or a build in the making in the state folder).
///
/// Every entry is checked before any is touched, so that a refused entry leaves shared/ as it
/// was. Seeding then moves the build's copy into shared/ in one rename per entry: an entry is
/// in the build or in shared/, never half in each.
/// What the step did to every entry, for its line.
pub(crate) struct Shared(pub Vec<Linked>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seeded = self.0.iter().filter(|l| **l != Linked::Existing).count();
        write!(f, "{} linked, {seeded} new in shared/", self.0.len())
    }
}

impl Summary for Shared {}

pub(crate) fn link_all(layout: &Layout, build: &Path, entries: &[SharedEntry]) -> Result<Shared> {
    let planned = entries
        .iter()
        .map(|entry| plan(layout, build, entry).with_context(|| format!("shared entry `{entry}`")))
        .collect::<Result<Vec<_>>>()?;
    if planned.iter().any(|l| *l != Linked::Existing) {
        crate::infra::perms::check_can_add(&layout.shared)?;
    }
    entries
        .iter()
        .zip(planned)
        .map(|(entry, linked)| {
            apply(layout, build, entry, &linked)
                .map(|()| linked)
                .with_context(|| format!("shared entry `{entry}`"))
        })
        .collect::<Result<_>>()
        .map(Shared)
}

/// What linking `entry` will do, or why it cannot be done. Touches nothing.
fn plan(layout: &Layout, build: &Path, entry: &SharedEntry) -> Result<Linked> {
    let in_build = build.join(&entry.path);
    let in_shared = layout.shared.join(&entry.path);
    check_parents(build, &entry.path)?;
    let build_copy = fs::symlink_metadata(&in_build).ok();
    if let Some(meta) = &build_copy {
        if meta.file_type().is_symlink() {
            // Following it could read anything on the server into shared/.
            bail!(
                "the commit has a symlink at {}; a shared path must not be one in git",
                entry.path.display()
            );
        }
        if meta.is_dir() != entry.is_dir {
            bail!(
                "the commit has a {} at {}, but deploy.yml lists it as a {}",
                kind(meta.is_dir()),
                entry.path.display(),
                kind(entry.is_dir)
            );
        }
    }
    match fs::symlink_metadata(&in_shared) {
        Ok(meta) => {
            let is_dir = fs::metadata(&in_shared)
                .map(|m| m.is_dir())
                .unwrap_or(meta.is_dir());
            if is_dir != entry.is_dir {
                bail!(
                    "{} is a {}, but deploy.yml lists it as a {}",
                    in_shared.display(),
                    kind(is_dir),
                    kind(entry.is_dir)
                );
            }
            Ok(Linked::Existing)
        }
        Err(_) if build_copy.is_some() => Ok(Linked::SeededFromBuild),
        Err(_) if entry.is_dir => Ok(Linked::CreatedEmpty),
        Err(_) => bail!(
            "{} does not exist and the commit has no {} to seed it from; create it on the server",
            in_shared.display(),
            entry.path.display()
        ),
    }
}

fn apply(layout: &Layout, build: &Path, entry: &SharedEntry, linked: &Linked) -> Result<()> {
    let in_build = build.join(&entry.path);
    let in_shared = layout.shared.join(&entry.path);
    let made = (*linked != Linked::Existing)
        .then(|| first_missing(&layout.shared, &entry.path))
        .flatten();
    if *linked != Linked::Existing
        && let Some(parent) = in_shared.parent()
    {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match linked {
        Linked::Existing => {}
        Linked::SeededFromBuild => {
            // A secret seeded from the commit (a `.env`) is not left readable by every user
            // of the server. Done in the build, which only the deploy user writes: in
            // shared/, the web server could swap a name for a symlink while it runs.
            crate::infra::perms::protect_secrets(&in_build)?;
            fs::rename(&in_build, &in_shared)
                .with_context(|| format!("cannot seed {}", in_shared.display()))?
        }
        Linked::CreatedEmpty => fs::create_dir(&in_shared)
            .with_context(|| format!("cannot create {}", in_shared.display()))?,
    }
    // What install --web-user did to shared/, done to what this deploy added to it.
    if let Some(made) = made {
        crate::infra::perms::treat_new(&layout.shared, &made)?;
    }
    make_parents(build, &entry.path)?;
    match fs::symlink_metadata(&in_build) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&in_build)?,
        Ok(_) => fs::remove_file(&in_build)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(link_target(&entry.path), &in_build)
        .with_context(|| format!("cannot link {}", in_build.display()))?;
    crate::infra::fault::point("shared-entry");
    Ok(())
}

/// Refuses an entry whose parents in the build are not directories: a symlink there (from
/// the commit) could point anywhere on the server, and linking through it would write there.
fn check_parents(build: &Path, entry: &Path) -> Result<()> {
    let mut dir = build.to_path_buf();
    for part in entry.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        let shown = dir.strip_prefix(build).unwrap_or(&dir).display();
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!(
                    "the commit has a symlink at {shown}; shared entries are never linked through one"
                )
            }
            Ok(meta) if !meta.is_dir() => {
                bail!("the commit has a file at {shown} where a directory is needed")
            }
            Ok(_) => {}
            Err(_) => break, // created by make_parents, below anything the commit has
        }
    }
    Ok(())
}

/// The outermost of `entry` and its parents that `shared` does not have yet.
fn first_missing(shared: &Path, entry: &Path) -> Option<PathBuf> {
    let mut path = shared.to_path_buf();
    for part in entry.components() {
        path.push(part);
        if fs::symlink_metadata(&path).is_err() {
            return Some(path);
        }
    }
    None
}

/// Creates the directories above an entry that the build does not have yet.
fn make_parents(build: &Path, entry: &Path) -> Result<()> {
    if let Some(parent) = entry.parent() {
        let dir = build.join(parent);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// From `<root>/builds/<name>/<entry>` back up to `<root>/shared/<entry>`.
fn link_target(entry: &Path) -> PathBuf {
    let depth = entry.components().count() - 1 + 2;
    let mut target: PathBuf = std::iter::repeat_n("..", depth).collect();
    target.push("shared");
    target.push(entry);
    target
}

fn kind(is_dir: bool) -> &'static str {
    if is_dir { "directory" } else { "file" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_climb_out_of_the_build_to_shared() {
        assert_eq!(
            link_target(Path::new(".env")),
            Path::new("../../shared/.env")
        );
        assert_eq!(
            link_target(Path::new("storage/framework/sessions")),
            Path::new("../../../../shared/storage/framework/sessions")
        );
    }
}
