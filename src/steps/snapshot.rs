//! Copying `application/` into a build.
//!
//! The copy is made under a temporary name on the same filesystem as `builds/`; only a
//! complete build is renamed into `builds/`, so a half-made build never carries a build name.
//!
//! In `snapshot: link` mode a file is hard-linked from the live build instead of copied only
//! while both hold: `application/` still has the very file the live build's copy came from
//! (its inode and ctime, recorded with each build in its manifest), and that copy is still
//! what was placed (inode, size, mode, mtime). Why these and not others: see `manifest.rs`.
//! A file application/ has anew is linked as well when its bytes, size and mode are those of
//! the live build's copy (still as placed), compared from the page cache only.
//! Nothing is looked up through a symlink, shared entries are never linked, and `replay`
//! links nothing.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::infra::report::{self, Reporter};
use crate::state::manifest::{Manifest, ManifestWriter};
use crate::state::plan::Layout;
use crate::steps::Summary;

mod walk;

use walk::{Trees, Walk};

/// A build in the making. Dropping it before [`Snapshot::publish`] removes it.
pub(crate) struct Snapshot {
    dir: TempDir,
    /// Files copied, and their bytes.
    pub(crate) copied: u64,
    pub(crate) bytes: u64,
    /// Files hard-linked from the previous build.
    pub(crate) linked: u64,
    /// Of those, files application/ has anew with the very same bytes.
    pub(crate) same: u64,
    /// Files of the previous build that application/ still has as they were, but that were
    /// changed in the build since it was made: copied afresh instead of linked.
    changed: Mutex<Vec<PathBuf>>,
    /// Which application/ file each file came from, and what was placed.
    /// (Written as the files are placed, not kept in memory: at 50,000 files a list would be
    /// a good part of the hook's memory.)
    files: Mutex<ManifestWriter>,
}

impl Snapshot {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Which application/ file each of the build's files came from, to be kept beside it.
    pub(crate) fn write_manifest(self: &mut Snapshot, path: &Path) -> Result<()> {
        self.files
            .get_mut()
            .expect("no thread panicked holding it")
            .finish(path)
    }

    /// Says which files of the live build were written in place since it was made, if any.
    pub(crate) fn changed_warning(&mut self) -> Option<String> {
        let changed = self
            .changed
            .get_mut()
            .expect("no thread panicked holding it");
        changed.sort();
        let first = changed.first()?;
        let more = match changed.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Some(format!(
            "{}{more} of the live build changed after it was deployed (in every build that \
             shares it); the new build has the commit's copy. Something writes into builds/ \
             in place: a before_switch command (use `snapshot: copy` then) or a process the \
             read-only mode does not stop (root)",
            first.display()
        ))
    }

    /// Copies what [`Options::later`] left out, now that it is written: composer's autoloader
    /// after a `dump-autoload`, all of vendor/ after an `install`, placed in parallel as the
    /// rest was.
    pub(crate) fn add(
        &mut self,
        app: &Path,
        paths: &[PathBuf],
        options: &Options,
        reporter: &Reporter,
    ) -> Result<()> {
        let trees = Trees::open(app, options, self.dir.path())?;
        let bar = indicatif::ProgressBar::hidden();
        let walk = Walk::new(options, &trees, &self.changed, &self.files, &bar, reporter);
        for path in paths {
            let excluded = options.exclude.iter().any(|p| path.starts_with(p));
            if !excluded && !path.iter().any(|part| part == ".git") {
                walk.later(path)?;
            }
        }
        let placed = walk.counts();
        self.copied += placed.copied;
        self.linked += placed.linked;
        self.same += placed.same;
        self.bytes += placed.bytes;
        Ok(())
    }

    /// The step's line, once every file is placed.
    pub(crate) fn summary(&self, linking: Linking, meanwhile: Duration) -> Made {
        Made {
            linking,
            copied: self.copied,
            linked: self.linked,
            same: self.same,
            bytes: self.bytes,
            meanwhile,
        }
    }

    /// Renames the finished build to `dest` in one step.
    pub(crate) fn publish(self, dest: &Path) -> Result<PathBuf> {
        fs::rename(self.dir.path(), dest)
            .with_context(|| format!("cannot move the new build to {}", dest.display()))?;
        // The directory is gone from the temporary name; nothing is left for TempDir to remove.
        let _ = self.dir.keep();
        Ok(dest.to_path_buf())
    }
}

/// How the files of a build were placed, as the step's line tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linking {
    /// `snapshot: copy`.
    Copy,
    /// `snapshot: link`, linking from the live build.
    Link,
    /// `snapshot: link` in a `replay`, which links nothing.
    Replay,
}

/// The snapshot step's line: what was linked and copied, and how much of it was done while
/// composer ran.
pub(crate) struct Made {
    pub(crate) linking: Linking,
    pub(crate) copied: u64,
    pub(crate) linked: u64,
    pub(crate) same: u64,
    pub(crate) bytes: u64,
    pub(crate) meanwhile: Duration,
}

impl fmt::Display for Made {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (copied, linked, size) = (self.copied, self.linked, megabytes(self.bytes));
        match self.linking {
            Linking::Copy => write!(f, "{copied} files copied, {size}")?,
            Linking::Replay => write!(f, "{copied} files copied, {size} (replay: nothing linked)")?,
            Linking::Link => {
                write!(f, "{linked} files linked to the live build")?;
                if self.same > 0 {
                    write!(
                        f,
                        " ({} of them written anew with the same bytes)",
                        self.same
                    )?;
                }
                write!(f, ", {copied} copied ({size})")?;
            }
        }
        if !self.meanwhile.is_zero() {
            write!(
                f,
                "; {} of it while composer ran",
                report::seconds(self.meanwhile)
            )?;
        }
        Ok(())
    }
}

impl Summary for Made {}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// How a build gets its files.
pub(crate) struct Options<'a> {
    /// `snapshot: link`: hard-link files from this build (the live one) instead of copying
    /// them, as `rsync --link-dest` does, when its manifest shows that application/ still has
    /// the very file its copy came from and that the copy is still what was placed. Files of such builds are made read-only, so
    /// that writing one in place fails loudly instead of changing every build that shares it.
    pub(crate) link_from: Option<(&'a Path, &'a Manifest)>,
    /// Drop the write bits of every file copied: set for every build in `snapshot: link`, the
    /// first one too, since the next build will share its files.
    pub(crate) read_only: bool,
    /// Paths that are always copied, never linked, and kept out of the manifest (the shared
    /// entries: they may be seeded into shared/, where users write, and the build has a
    /// symlink into shared/ there, through which nothing may ever be linked back into a build).
    pub(crate) never_link: &'a [PathBuf],
    /// Paths left out, to be added with [`Snapshot::add`] once written (composer's autoloader
    /// while composer runs).
    pub(crate) later: &'a [PathBuf],
    /// `exclude:`: never copied, so never in the manifest and never linked.
    pub(crate) exclude: &'a [PathBuf],
    /// Show a progress bar (not while another step prints).
    pub(crate) progress: bool,
}

/// Copies `application/` (all of it but `.git` directories and gitfiles, at any depth, and
/// the `exclude:` paths) and writes `REVISION`.
pub(crate) fn snapshot(
    layout: &Layout,
    commit: &str,
    options: &Options,
    reporter: &Reporter,
) -> Result<Snapshot> {
    let dir = build_in_making(layout)?;
    let source = &layout.application;
    let build = dir.path().to_path_buf();
    // Its length grows as the walk reads each directory.
    let bar = match options.progress {
        true => reporter.progress(0, "copying"),
        false => indicatif::ProgressBar::hidden(),
    };
    let files = Mutex::new(ManifestWriter::new(&layout.tmp())?);
    let changed = Mutex::new(Vec::new());
    let trees = Trees::open(source, options, &build)?;
    let walk = Walk::new(options, &trees, &changed, &files, &bar, reporter);
    walk.everything()?;
    let placed = walk.counts();
    bar.finish_and_clear();
    write_revision(&build, commit, reporter).context("cannot write REVISION")?;
    // The web server reads the build as another user: give it application/'s mode, not
    // the 0700 of a fresh temporary directory.
    let mode = fs::metadata(source)?.permissions().mode();
    fs::set_permissions(&build, Permissions::from_mode(mode))?;
    Ok(Snapshot {
        dir,
        copied: placed.copied,
        linked: placed.linked,
        same: placed.same,
        bytes: placed.bytes,
        changed,
        files,
    })
}

/// A new, empty build under a temporary name in the state folder.
fn build_in_making(layout: &Layout) -> Result<TempDir> {
    fs::create_dir_all(layout.tmp())?;
    // Same depth below the root as builds/<name>, so relative links made in it stay right
    // after the rename.
    tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(layout.tmp())
        .with_context(|| format!("cannot create a build under {}", layout.tmp().display()))
}

/// Writes the commit id to `REVISION`, replacing whatever the commit had there without
/// following it: a `REVISION` symlink in the commit must not redirect the write.
fn write_revision(build: &Path, commit: &str, reporter: &Reporter) -> io::Result<()> {
    let path = build.join("REVISION");
    match fs::symlink_metadata(&path) {
        Ok(meta) => {
            reporter
                .warn("the commit has its own REVISION; it is replaced by the deployed commit id");
            if meta.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)?;
    io::Write::write_all(&mut file, format!("{commit}\n").as_bytes())
}
