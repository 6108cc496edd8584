//! Copying `application/` into a build.
//!
//! The copy is made under a temporary name on the same filesystem as `builds/`; only a
//! complete build is renamed into `builds/`, so a half-made build never carries a build name.
//!
//! In `snapshot: link` mode a file is hard-linked from the live build instead of copied only
//! while both hold: `application/` still has the very file the live build's copy came from
//! (its inode and ctime, recorded with each build in its manifest), and that copy is still
//! what was placed (inode, size, mode, mtime). Why these and not others: see `manifest.rs`.
//! Nothing is looked up through a symlink, shared entries are never linked, and `replay`
//! links nothing.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tempfile::TempDir;
use walkdir::WalkDir;

use crate::infra::fault;
use crate::infra::report::{self, Reporter};
use crate::state::manifest::{Identity, Manifest, ManifestWriter, Placed, Record};
use crate::state::plan::Layout;
use crate::steps::Summary;

/// A build in the making. Dropping it before [`Snapshot::publish`] removes it.
pub(crate) struct Snapshot {
    dir: TempDir,
    /// Files copied, and their bytes.
    pub(crate) copied: u64,
    pub(crate) bytes: u64,
    /// Files hard-linked from the previous build.
    pub(crate) linked: u64,
    /// Files of the previous build that application/ still has as they were, but that were
    /// changed in the build since it was made: copied afresh instead of linked.
    changed: Mutex<Vec<PathBuf>>,
    /// Which application/ file each file came from, and what was placed.
    /// (Written as the files are placed, not kept in memory: at 50,000 files a list would be
    /// a good part of the hook's memory.)
    files: Mutex<ManifestWriter>,
    /// The directories of the previous build that are directories all the way down from it,
    /// not reached through a symlink (see [`real_dir`]).
    real_dirs: HashSet<PathBuf>,
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
        let mut entries = Vec::new();
        for path in paths {
            // A later path that is a symlink is copied as one, as the rest of the snapshot
            // copies links: never followed.
            let walk = WalkDir::new(app.join(path))
                .follow_links(false)
                .follow_root_links(false)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.file_name() != ".git"
                        && !e
                            .path()
                            .strip_prefix(app)
                            .is_ok_and(|r| options.exclude.iter().any(|p| r.starts_with(p)))
                });
            for entry in walk {
                match entry {
                    Err(e)
                        if e.io_error()
                            .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) => {}
                    entry => entries.push(entry?),
                }
            }
        }
        let build = self.path().to_path_buf();
        let dir_modes = make_dirs(&entries, &build, app, options, &mut self.real_dirs)?;
        let placed = Place {
            options,
            real_dirs: &self.real_dirs,
            changed: &self.changed,
        }
        .all(
            &entries,
            app,
            &build,
            &self.files,
            &indicatif::ProgressBar::hidden(),
            reporter,
        )?;
        apply_modes(dir_modes)?;
        self.copied += placed.copied;
        self.linked += placed.linked;
        self.bytes += placed.bytes;
        Ok(())
    }

    /// The step's line, once every file is placed.
    pub(crate) fn summary(&self, linking: Linking, meanwhile: Duration) -> Made {
        Made {
            linking,
            copied: self.copied,
            linked: self.linked,
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
    pub(crate) bytes: u64,
    pub(crate) meanwhile: Duration,
}

impl fmt::Display for Made {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (copied, linked, size) = (self.copied, self.linked, megabytes(self.bytes));
        match self.linking {
            Linking::Copy => write!(f, "{copied} files copied, {size}")?,
            Linking::Replay => write!(f, "{copied} files copied, {size} (replay: nothing linked)")?,
            Linking::Link => write!(
                f,
                "{linked} files linked to the live build, {copied} copied ({size})"
            )?,
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
///
/// Directories are made first, in order; files and links are then copied in parallel, since
/// a deploy's snapshot is many small files and one thread waits on each in turn.
pub(crate) fn snapshot(
    layout: &Layout,
    commit: &str,
    options: &Options,
    reporter: &Reporter,
) -> Result<Snapshot> {
    let dir = build_in_making(layout)?;
    let source = &layout.application;
    let entries = entries(source, options)?;
    let build = dir.path().to_path_buf();
    let mut real_dirs = HashSet::new();
    if let Some((from, _)) = options.link_from
        && fs::symlink_metadata(from).is_ok_and(|m| m.is_dir())
    {
        real_dirs.insert(PathBuf::new());
    }
    let dir_modes = make_dirs(&entries, &build, source, options, &mut real_dirs)?;

    let bar = match options.progress {
        true => reporter.progress(entries.len() as u64, "copying"),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.inc(dir_modes.len() as u64);
    let files = Mutex::new(ManifestWriter::new(&layout.tmp())?);
    let changed = Mutex::new(Vec::new());
    let placed = Place {
        options,
        real_dirs: &real_dirs,
        changed: &changed,
    }
    .all(&entries, source, &build, &files, &bar, reporter)?;
    bar.finish_and_clear();
    apply_modes(dir_modes)?;
    write_revision(&build, commit, reporter).context("cannot write REVISION")?;
    // The web server reads the build as another user: give it application/'s mode, not
    // the 0700 of a fresh temporary directory.
    let mode = fs::metadata(source)?.permissions().mode();
    fs::set_permissions(&build, Permissions::from_mode(mode))?;
    Ok(Snapshot {
        dir,
        copied: placed.copied,
        linked: placed.linked,
        bytes: placed.bytes,
        changed,
        files,
        real_dirs,
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

/// Everything of application/ a snapshot copies now, in file-name order.
fn entries(source: &Path, options: &Options) -> Result<Vec<walkdir::DirEntry>> {
    WalkDir::new(source)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            // Git never tracks a `.git`, so none is the commit's: the working copy's own, or the
            // clones composer leaves in vendor/ for source installs (most of some apps' size).
            let git = e.file_name() == ".git";
            // Never copied: composer's credentials, should a commit carry them (checkout warns)
            // or someone leave them in application/ (the server's belong beside deploy.yml).
            let credentials = e.depth() == 1 && e.file_name() == "auth.json";
            let relative = e.path().strip_prefix(source).ok();
            let later = options.later.iter().any(|p| relative == Some(p.as_path()));
            let excluded = options
                .exclude
                .iter()
                .any(|p| relative == Some(p.as_path()));
            !(git || credentials || later || excluded)
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", source.display()))
}

/// A directory of the build, and the mode it gets once it is filled.
type DirMode = (PathBuf, Permissions);

/// Makes the build's directories, in order. Returns their modes, to apply last (see
/// [`apply_modes`]), and adds those that are real directories in the build linked from to
/// `real_dirs` (see [`real_dir`]).
fn make_dirs(
    entries: &[walkdir::DirEntry],
    build: &Path,
    source: &Path,
    options: &Options,
    real_dirs: &mut HashSet<PathBuf>,
) -> Result<Vec<DirMode>> {
    let mut dir_modes = Vec::new();
    for entry in entries.iter().filter(|e| e.file_type().is_dir()) {
        let relative = entry
            .path()
            .strip_prefix(source)
            .expect("walk stays below its root")
            .to_path_buf();
        let dest = build.join(&relative);
        fs::create_dir(&dest)
            .with_context(|| format!("cannot create {} in the build", relative.display()))?;
        if let Some((from, _)) = options.link_from
            && real_dir(from, &relative, real_dirs)
        {
            real_dirs.insert(relative);
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        dir_modes.push((dest, meta.permissions()));
    }
    Ok(dir_modes)
}

/// Gives the build's directories their modes, deepest first, once they are filled: a
/// read-only directory can still be filled until then.
fn apply_modes(dir_modes: Vec<DirMode>) -> Result<()> {
    for (path, permissions) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, permissions)?;
    }
    Ok(())
}

/// What [`Place::all`] placed.
struct Counts {
    copied: u64,
    linked: u64,
    bytes: u64,
}

enum Outcome {
    Linked,
    Copied(u64),
}

/// Whether `relative`, a directory of application/, is a real directory in the previous build
/// `from`, with every directory above it (in `real_dirs`) real too. A symlink there is the
/// previous build's link to a shared entry (or anything else): a file looked up through it
/// would be the users' data in shared/, and must never be linked into a build.
fn real_dir(from: &Path, relative: &Path, real_dirs: &HashSet<PathBuf>) -> bool {
    relative.parent().is_some_and(|p| real_dirs.contains(p))
        && fs::symlink_metadata(from.join(relative)).is_ok_and(|m| m.is_dir())
}

/// What placing a file needs besides the file.
struct Place<'a> {
    options: &'a Options<'a>,
    real_dirs: &'a HashSet<PathBuf>,
    changed: &'a Mutex<Vec<PathBuf>>,
}

impl Place<'_> {
    /// Places every file and symlink of `entries` (all below `source`) into `build`, in
    /// parallel: a deploy's snapshot is many small files, and one thread would wait on each in
    /// turn. Their directories are made already.
    fn all(
        &self,
        entries: &[walkdir::DirEntry],
        source: &Path,
        build: &Path,
        files: &Mutex<ManifestWriter>,
        bar: &indicatif::ProgressBar,
        reporter: &Reporter,
    ) -> Result<Counts> {
        let copied = AtomicU64::new(0);
        let linked = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        entries
            .par_iter()
            .filter(|e| !e.file_type().is_dir())
            .try_for_each(|entry| -> Result<()> {
                let relative = entry
                    .path()
                    .strip_prefix(source)
                    .expect("walk stays below its root");
                let dest = build.join(relative);
                let meta = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                let kind = meta.file_type();
                let done = if kind.is_symlink() {
                    fs::read_link(entry.path()).and_then(|target| {
                        std::os::unix::fs::symlink(within_build(&target, source, relative), &dest)
                    })
                } else if kind.is_file() {
                    self.file(entry.path(), relative, &dest, &meta, files)
                        .map(|outcome| match outcome {
                            Outcome::Linked => {
                                linked.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Copied(n) => {
                                copied.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(n, Ordering::Relaxed);
                            }
                        })
                } else {
                    reporter.warn(&format!(
                        "skipped {} (not a file, directory or symlink)",
                        relative.display()
                    ));
                    Ok(())
                };
                done.with_context(|| format!("cannot copy {} into the build", relative.display()))?;
                bar.inc(1);
                fault::point("snapshot-file");
                Ok(())
            })?;
        Ok(Counts {
            copied: copied.into_inner(),
            linked: linked.into_inner(),
            bytes: bytes.into_inner(),
        })
    }

    /// Puts one file of application/ into the build — a hard link to the previous build's
    /// copy when application/ still has the file that copy came from and the copy is still
    /// what was placed, a copy otherwise — and records it in the manifest (shared entries
    /// aside: they are never linked, so never recorded).
    fn file(
        &self,
        source: &Path,
        relative: &Path,
        dest: &Path,
        meta: &fs::Metadata,
        files: &Mutex<ManifestWriter>,
    ) -> io::Result<Outcome> {
        let options = self.options;
        let shareable = !options.never_link.iter().any(|p| relative.starts_with(p));
        let identity = Identity::of(meta);
        let (outcome, placed) = match shareable
            .then(|| self.previous(relative, &identity))
            .flatten()
        {
            Some((previous, placed)) => {
                fs::hard_link(previous, dest)?;
                (Outcome::Linked, placed)
            }
            None => {
                let (bytes, placed) =
                    copy_file(source, dest, meta, options.read_only && shareable)?;
                (Outcome::Copied(bytes), placed)
            }
        };
        if shareable {
            let record = Record {
                source: identity,
                placed,
            };
            files
                .lock()
                .expect("no thread panicked holding it")
                .add(relative, &record)?;
        }
        Ok(outcome)
    }

    /// The previous build's file at `relative`, if it can be linked: application/ still has
    /// the file it came from, it is reached without following any symlink, and it is still
    /// what was placed (written in place since, it is noted in `changed`).
    fn previous(&self, relative: &Path, identity: &Identity) -> Option<(PathBuf, Placed)> {
        let (from, manifest) = self.options.link_from?;
        let record = manifest.get(relative).filter(|r| r.source == *identity)?;
        if !relative
            .parent()
            .is_some_and(|p| self.real_dirs.contains(p))
        {
            return None;
        }
        let previous = from.join(relative);
        let meta = fs::symlink_metadata(&previous).ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        if Placed::of(&meta) != record.placed {
            self.changed
                .lock()
                .expect("no thread panicked holding it")
                .push(relative.to_path_buf());
            return None;
        }
        // A write between this check and the link lands in the new build as it would a moment
        // later in the live one; the manifest keeps what was checked, so the next build copies.
        Some((previous, record.placed))
    }
}

/// A link made in application/ with an absolute target inside it (as `php artisan
/// storage:link` makes them) would tie the build to the working copy, which the next deploy
/// rewrites before its switch. It is made relative, pointing at the same file in the build.
fn within_build(target: &Path, app: &Path, link: &Path) -> PathBuf {
    match target.strip_prefix(app) {
        Ok(inside) if target.is_absolute() => {
            let depth = link.components().count().saturating_sub(1);
            let mut relative: PathBuf = std::iter::repeat_n("..", depth).collect();
            relative.push(inside);
            if relative.as_os_str().is_empty() {
                relative.push(".");
            }
            relative
        }
        _ => target.to_path_buf(),
    }
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

/// Contents, mode and modification time; the copy itself goes through `io::copy`, which uses
/// copy_file_range(2) on Linux. `read_only` drops the write bits (builds that share files).
/// Returns the bytes copied and the copy as placed.
fn copy_file(
    from: &Path,
    to: &Path,
    meta: &fs::Metadata,
    read_only: bool,
) -> io::Result<(u64, Placed)> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.permissions().mode())
        .open(to)?;
    let bytes = io::copy(&mut src, &mut dst)?;
    // The umask may have narrowed the mode given at creation.
    let mode = meta.permissions().mode() & if read_only { !0o222 } else { !0 };
    dst.set_permissions(Permissions::from_mode(mode))?;
    dst.set_modified(meta.modified()?)?;
    Ok((bytes, Placed::of(&dst.metadata()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_links_into_the_app_become_relative() {
        let app = Path::new("/srv/app/application");
        let link = Path::new("public/storage");
        assert_eq!(
            within_build(
                Path::new("/srv/app/application/storage/app/public"),
                app,
                link
            ),
            Path::new("../storage/app/public")
        );
        assert_eq!(
            within_build(Path::new("/srv/app/application/x"), app, Path::new("top")),
            Path::new("x")
        );
        assert_eq!(
            within_build(
                Path::new("/srv/app/application"),
                app,
                Path::new("a/b/self")
            ),
            Path::new("../..")
        );
        assert_eq!(
            within_build(Path::new("/srv/app/application"), app, Path::new("self")),
            Path::new(".")
        );
        // Anything else is kept as it is.
        assert_eq!(
            within_build(Path::new("/usr/share/php"), app, link),
            Path::new("/usr/share/php")
        );
        assert_eq!(
            within_build(Path::new("../shared/x"), app, link),
            Path::new("../shared/x")
        );
        assert_eq!(
            within_build(Path::new("/srv/app/application-old/x"), app, link),
            Path::new("/srv/app/application-old/x")
        );
    }
}
