//! Copying `application/` into a build.
//!
//! The copy is made under a temporary name on the same filesystem as `builds/`; only a
//! complete build is renamed into `builds/`, so a half-made build never carries a build name.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;
use tempfile::TempDir;
use walkdir::WalkDir;

use crate::fault;
use crate::manifest::{Identity, Manifest, ManifestWriter};
use crate::plan::Layout;
use crate::report::Reporter;

/// A build in the making. Dropping it before [`Snapshot::publish`] removes it.
pub struct Snapshot {
    dir: TempDir,
    /// Files copied, and their bytes.
    pub copied: u64,
    pub bytes: u64,
    /// Files hard-linked from the previous build.
    pub linked: u64,
    /// Which application/ file each file came from.
    /// (Written as the files are placed, not kept in memory: at 50,000 files a list would be
    /// a good part of the hook's memory.)
    files: std::sync::Mutex<ManifestWriter>,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Which application/ file each of the build's files came from, to be kept beside it.
    pub fn write_manifest(self: &mut Snapshot, path: &Path) -> Result<()> {
        self.files
            .get_mut()
            .expect("no thread panicked holding it")
            .finish(path)
    }

    /// Copies what [`Options::later`] left out, now that it is written.
    pub fn add(&mut self, app: &Path, paths: &[PathBuf], options: &Options) -> Result<()> {
        for path in paths {
            for entry in WalkDir::new(app.join(path))
                .follow_links(false)
                .sort_by_file_name()
            {
                let entry = match entry {
                    Err(e)
                        if e.io_error()
                            .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                    {
                        continue;
                    }
                    entry => entry?,
                };
                let relative = entry
                    .path()
                    .strip_prefix(app)
                    .expect("walk stays below its root");
                let dest = self.path().join(relative);
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    fs::create_dir(&dest)?;
                    fs::set_permissions(&dest, meta.permissions())?;
                } else if meta.file_type().is_symlink() {
                    std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
                } else {
                    self.files
                        .get_mut()
                        .expect("no thread panicked holding it")
                        .add(relative, &Identity::of(&meta))?;
                    match place_file(entry.path(), relative, &dest, &meta, options)? {
                        Placed::Linked => self.linked += 1,
                        Placed::Copied(n) => {
                            self.copied += 1;
                            self.bytes += n;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Renames the finished build to `dest` in one step.
    pub fn publish(self, dest: &Path) -> Result<PathBuf> {
        fs::rename(self.dir.path(), dest)
            .with_context(|| format!("cannot move the new build to {}", dest.display()))?;
        // The directory is gone from the temporary name; nothing is left for TempDir to remove.
        let _ = self.dir.keep();
        Ok(dest.to_path_buf())
    }
}

/// How a build gets its files.
pub struct Options<'a> {
    /// `snapshot: link`: hard-link files unchanged since this build (the live one) instead of
    /// copying them, as `rsync --link-dest` does. Files of such builds are made read-only, so
    /// that writing one in place fails loudly instead of changing every build that shares it.
    pub link_from: Option<(&'a Path, &'a Manifest)>,
    /// Drop the write bits of every file copied: set for every build in `snapshot: link`, the
    /// first one too, since the next build will share its files.
    pub read_only: bool,
    /// Paths that are always copied, never linked (the shared entries: they may be seeded
    /// into shared/, where users write).
    pub never_link: &'a [PathBuf],
    /// Paths left out, to be added with [`Snapshot::add`] once written (composer's autoloader
    /// while composer runs).
    pub later: &'a [PathBuf],
    /// Show a progress bar (not while another step prints).
    pub progress: bool,
}

/// Copies `application/` (all of it but a top-level `.git`) and writes `REVISION`.
///
/// Directories are made first, in order; files and links are then copied in parallel, since
/// a deploy's snapshot is many small files and one thread waits on each in turn.
pub fn snapshot(
    layout: &Layout,
    commit: &str,
    options: &Options,
    reporter: &Reporter,
) -> Result<Snapshot> {
    fs::create_dir_all(layout.tmp())?;
    // Same depth below the root as builds/<name>, so relative links made in it stay right
    // after the rename.
    let dir = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(layout.tmp())
        .with_context(|| format!("cannot create a build under {}", layout.tmp().display()))?;
    let source = &layout.application;
    let entries: Vec<walkdir::DirEntry> = WalkDir::new(source)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let git = e.depth() == 1 && e.file_name() == ".git";
            let later = options
                .later
                .iter()
                .any(|p| e.path().strip_prefix(source).is_ok_and(|r| r == p));
            !(git || later)
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", source.display()))?;
    let build = dir.path().to_path_buf();
    let relative = |entry: &walkdir::DirEntry| {
        entry
            .path()
            .strip_prefix(source)
            .expect("walk stays below its root")
            .to_path_buf()
    };

    // Directory modes are applied last, so a read-only directory can still be filled.
    let mut dir_modes = Vec::new();
    for entry in entries.iter().filter(|e| e.file_type().is_dir()) {
        let dest = build.join(relative(entry));
        fs::create_dir(&dest)
            .with_context(|| format!("cannot create {} in the build", relative(entry).display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        dir_modes.push((dest, meta.permissions()));
    }

    let bar = match options.progress {
        true => reporter.progress(entries.len() as u64, "copying"),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.inc(dir_modes.len() as u64);
    let copied = AtomicU64::new(0);
    let linked = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let files = std::sync::Mutex::new(ManifestWriter::new(&layout.tmp())?);
    entries
        .par_iter()
        .filter(|e| !e.file_type().is_dir())
        .try_for_each(|entry| -> Result<()> {
            let relative = relative(entry);
            let dest = build.join(&relative);
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let kind = meta.file_type();
            let done = if kind.is_symlink() {
                fs::read_link(entry.path()).and_then(|target| {
                    std::os::unix::fs::symlink(within_build(&target, source, &relative), &dest)
                })
            } else if kind.is_file() {
                files
                    .lock()
                    .expect("no thread panicked holding it")
                    .add(&relative, &Identity::of(&meta))?;
                place_file(entry.path(), &relative, &dest, &meta, options).map(
                    |placed| match placed {
                        Placed::Linked => {
                            linked.fetch_add(1, Ordering::Relaxed);
                        }
                        Placed::Copied(n) => {
                            copied.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                    },
                )
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
    bar.finish_and_clear();
    for (path, permissions) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, permissions)?;
    }
    write_revision(&build, commit, reporter).context("cannot write REVISION")?;
    // The web server reads the build as another user: give it application/'s mode, not
    // the 0700 of a fresh temporary directory.
    let mode = fs::metadata(source)?.permissions().mode();
    fs::set_permissions(&build, Permissions::from_mode(mode))?;
    Ok(Snapshot {
        dir,
        copied: copied.into_inner(),
        linked: linked.into_inner(),
        bytes: bytes.into_inner(),
        files,
    })
}

enum Placed {
    Linked,
    Copied(u64),
}

/// Puts one file of application/ into the build: a hard link to the previous build's copy
/// when that is unchanged (link mode, shared entries aside), a copy otherwise.
fn place_file(
    source: &Path,
    relative: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    options: &Options,
) -> io::Result<Placed> {
    let shareable = !options.never_link.iter().any(|p| relative.starts_with(p));
    let previous = options
        .link_from
        .filter(|_| shareable)
        .filter(|(_, manifest)| manifest.get(relative) == Some(&Identity::of(meta)))
        .map(|(from, _)| from.join(relative))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()));
    match previous {
        Some(previous) => fs::hard_link(previous, dest).map(|()| Placed::Linked),
        None => copy_file(source, dest, meta, options.read_only && shareable).map(Placed::Copied),
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
fn copy_file(from: &Path, to: &Path, meta: &fs::Metadata, read_only: bool) -> io::Result<u64> {
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
    Ok(bytes)
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
