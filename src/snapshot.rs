//! Copying `application/` into a build.
//!
//! The copy is made under a temporary name on the same filesystem as `builds/`; only a
//! complete build is renamed into `builds/`, so a half-made build never carries a build name.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;
use walkdir::WalkDir;

use crate::fault;
use crate::plan::Layout;
use crate::report::Reporter;

/// A build in the making. Dropping it before [`Snapshot::publish`] removes it.
pub struct Snapshot {
    dir: TempDir,
    pub files: usize,
    pub bytes: u64,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        self.dir.path()
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

/// Copies `application/` (all of it but a top-level `.git`) and writes `REVISION`.
pub fn snapshot(layout: &Layout, commit: &str, reporter: &Reporter) -> Result<Snapshot> {
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
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", source.display()))?;

    let bar = reporter.progress(entries.len() as u64, "copying");
    let mut snapshot = Snapshot {
        dir,
        files: 0,
        bytes: 0,
    };
    // Directory modes are applied last, so a read-only directory can still be filled.
    let mut dir_modes = Vec::new();
    for entry in &entries {
        let relative = entry
            .path()
            .strip_prefix(source)
            .expect("walk stays below its root");
        let dest = snapshot.path().join(relative);
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        let kind = meta.file_type();
        let copied = if kind.is_dir() {
            fs::create_dir(&dest).map(|_| dir_modes.push((dest.clone(), meta.permissions())))
        } else if kind.is_symlink() {
            fs::read_link(entry.path()).and_then(|target| {
                std::os::unix::fs::symlink(within_build(&target, source, relative), &dest)
            })
        } else if kind.is_file() {
            copy_file(entry.path(), &dest, &meta).map(|bytes| {
                snapshot.files += 1;
                snapshot.bytes += bytes;
            })
        } else {
            reporter.warn(&format!(
                "skipped {} (not a file, directory or symlink)",
                relative.display()
            ));
            Ok(())
        };
        copied.with_context(|| format!("cannot copy {} into the build", relative.display()))?;
        bar.inc(1);
        fault::point("snapshot-file");
    }
    bar.finish_and_clear();
    for (path, permissions) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, permissions)?;
    }
    write_revision(snapshot.path(), commit, reporter).context("cannot write REVISION")?;
    // The web server reads the build as another user: give it application/'s mode, not
    // the 0700 of a fresh temporary directory.
    let mode = fs::metadata(source)?.permissions().mode();
    fs::set_permissions(snapshot.path(), Permissions::from_mode(mode))?;
    Ok(snapshot)
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
/// copy_file_range(2) on Linux.
fn copy_file(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<u64> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.permissions().mode())
        .open(to)?;
    let bytes = io::copy(&mut src, &mut dst)?;
    // The umask may have narrowed the mode given at creation.
    dst.set_permissions(meta.permissions())?;
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
