//! `keep_assets:`: the files of the listed directories in the builds still on disk are carried
//! into the new build before it is published, so that a page loaded before the switch still
//! finds its hashed chunks (`app-3f2a1c.js`) after it.
//!
//! - **Which builds**: those in builds/ that went live and are not bad (a failed health check,
//!   a rollback away from it, an attempt that never went live), newest first: the newest
//!   version of a name wins among old builds, and the new build's own files always win.
//! - **Only their own files**: what a build carried itself is recorded beside it
//!   (`.atomdeploy/builds/<name>.carried`) and never carried on, so assets do not accumulate:
//!   once cleanup removes a build, the next build no longer has its files. Carried files are
//!   never written into the manifest, so the next snapshot never takes one for a file that
//!   came from application/.
//! - **Nothing outside the build**: no symlink is followed, in the old builds or the new one;
//!   a kept directory that is (or lies below) a symlink is skipped with a warning. Only
//!   regular files are carried, and never over anything the new build has.
//! - **How**: in `snapshot: link` a read-only file is hard-linked (builds share read-only
//!   files already); anything else is copied (read-only in link mode). `snapshot: copy` and a
//!   `replay` copy every file: builds that share nothing, a build that links nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use walkdir::WalkDir;

use crate::config::SnapshotMode;
use crate::infra::perms;
use crate::infra::report::Reporter;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Layout;
use crate::steps::Deploy;
use crate::steps::{self, Summary};

/// How carried files are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carry {
    /// `snapshot: link`: hard links to read-only files, read-only copies of the rest.
    Link,
    /// Copies; `read_only` drops their write bits.
    Copy { read_only: bool },
}

/// The step's line.
pub(crate) struct Kept {
    pub(crate) files: u64,
    pub(crate) bytes_copied: u64,
    pub(crate) copied: u64,
    pub(crate) builds: usize,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept {} asset files from {} earlier builds",
            self.files, self.builds
        )?;
        if self.copied > 0 {
            write!(
                f,
                " ({} copied, {:.1} MB)",
                self.copied,
                self.bytes_copied as f64 / 1_000_000.0
            )?;
        }
        Ok(())
    }
}

impl Summary for Kept {}

/// The step, between the snapshot (and shared) and the publication of the build in the
/// making at `build`, named `name`. Does nothing without `keep_assets:`.
pub(crate) fn step(d: &Deploy, name: &BuildName, build: &Path) -> Result<()> {
    let config = &d.plan.config;
    if config.keep_assets.is_empty() {
        return Ok(());
    }
    // A replay is a build equal to a fresh checkout, yet pages loaded before it still need
    // their chunks: it carries them too, as copies, linking nothing.
    let carry = match config.snapshot {
        SnapshotMode::Copy => Carry::Copy { read_only: false },
        SnapshotMode::Link if d.replay => Carry::Copy { read_only: true },
        SnapshotMode::Link => Carry::Link,
    };
    let step = d.reporter.step("keep_assets");
    let kept = keep(
        &d.plan.layout,
        name,
        build,
        &config.keep_assets,
        carry,
        d.reporter,
    )
    .context("keep_assets failed")?;
    steps::close(d.reporter, step, Duration::ZERO, &kept);
    Ok(())
}

/// Carries the own files of `dirs` from every earlier good build on disk into `build` (not
/// yet in builds/), and records what it carried as `name`'s.
pub(crate) fn keep(
    layout: &Layout,
    name: &BuildName,
    build: &Path,
    dirs: &[PathBuf],
    carry: Carry,
    reporter: &Reporter,
) -> Result<Kept> {
    let mut kept = Kept {
        files: 0,
        bytes_copied: 0,
        copied: 0,
        builds: 0,
    };
    let mut target = Target {
        build,
        dirs: HashMap::new(),
        carried: Vec::new(),
        reporter,
    };
    let mut usable = Vec::new();
    for dir in dirs {
        if target.real_dir(dir, false)? {
            usable.push(dir);
        }
    }
    let sources = builds::list(layout)?
        .into_iter()
        .rev()
        .filter(|b| b != name)
        .filter(|b| builds::read_meta(layout, b).is_some_and(|m| m.went_live && !m.bad));
    for source in sources {
        let Some(not_own) = read_carried(&layout.carried_file(&source)) else {
            reporter.warn(&format!(
                "keep_assets: the record of what builds/{source} carried is damaged; nothing \
                 is taken from it"
            ));
            continue;
        };
        let from = layout.build_dir(&source);
        let before = kept.files;
        for dir in &usable {
            if !real_dir_in(&from, dir) {
                if fs::symlink_metadata(from.join(dir)).is_ok() {
                    reporter.warn(&format!(
                        "keep_assets: builds/{source}/{} is reached through a symlink or is no \
                         directory; nothing is taken from it",
                        dir.display()
                    ));
                }
                continue;
            }
            let source = Source {
                name: &source,
                dir: &from,
                not_own: &not_own,
            };
            carry_dir(&source, dir, &mut target, carry, &mut kept)?;
        }
        if kept.files > before {
            kept.builds += 1;
        }
    }
    write_carried(layout, name, &target.carried)?;
    Ok(kept)
}

/// An earlier build that lends files: its name, directory, and what it carried itself.
struct Source<'a> {
    name: &'a BuildName,
    dir: &'a Path,
    not_own: &'a HashSet<PathBuf>,
}

/// Carries the own regular files of `dir` in `source` that the new build lacks.
fn carry_dir(
    source: &Source,
    dir: &Path,
    target: &mut Target,
    carry: Carry,
    kept: &mut Kept,
) -> Result<()> {
    let (from, not_own, name) = (source.dir, source.not_own, source.name);
    let build = target.build;
    for entry in WalkDir::new(from.join(dir))
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot read builds/{name}"))?;
        // Symlinks are not followed, and only regular files are carried.
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(from)
            .expect("walk stays below its root");
        if not_own.contains(relative) {
            continue;
        }
        let dest = build.join(relative);
        let parent = relative.parent().expect("a file lies in a kept directory");
        if !target.real_dir(parent, true)? {
            continue;
        }
        match fs::symlink_metadata(&dest) {
            // The new build's own file, or a newer build's: it wins.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot look at {}", dest.display()));
            }
        }
        let copied = place(entry.path(), &dest, carry).with_context(|| {
            format!(
                "cannot carry builds/{name}/{} into the new build",
                relative.display()
            )
        })?;
        if let Some(bytes) = copied {
            kept.copied += 1;
            kept.bytes_copied += bytes;
        }
        kept.files += 1;
        target.carried.push(relative.to_path_buf());
        crate::infra::fault::point("keep-assets-file");
    }
    Ok(())
}

/// The new build's directories, checked (and made) once each, never through a symlink.
struct Target<'a> {
    build: &'a Path,
    /// Relative directory → whether it is a real directory of the build.
    dirs: HashMap<PathBuf, bool>,
    /// What was carried into it, for its record.
    carried: Vec<PathBuf>,
    reporter: &'a Reporter,
}

impl Target<'_> {
    /// Whether `relative` is a directory of the build reached without a symlink; `make`
    /// creates what is missing of it. A symlink or a file on the way is warned about once.
    fn real_dir(&mut self, relative: &Path, make: bool) -> Result<bool> {
        let mut dir = PathBuf::new();
        for part in relative.components() {
            dir.push(part);
            if let Some(real) = self.dirs.get(&dir) {
                if !real {
                    return Ok(false);
                }
                continue;
            }
            let path = self.build.join(&dir);
            let real = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => true,
                Ok(meta) => {
                    let what = match meta.file_type().is_symlink() {
                        true => "a symlink",
                        false => "not a directory",
                    };
                    self.reporter.warn(&format!(
                        "keep_assets: {} is {what} in the new build (from the commit); nothing \
                         is carried into it",
                        dir.display()
                    ));
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !make {
                        // Checked again, and made, when a file needs it.
                        return Ok(true);
                    }
                    fs::create_dir(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    true
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot look at {}", path.display()));
                }
            };
            self.dirs.insert(dir.clone(), real);
            if !real {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether `relative` is a directory in `build`, every part of it a directory, none a symlink.
fn real_dir_in(build: &Path, relative: &Path) -> bool {
    let is_dir = |dir: &Path| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    let mut dir = build.to_path_buf();
    is_dir(&dir)
        && relative.components().all(|part| {
            dir.push(part);
            is_dir(&dir)
        })
}

/// Places one file; returns the bytes copied, or None for a hard link.
fn place(from: &Path, to: &Path, carry: Carry) -> io::Result<Option<u64>> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let read_only = match carry {
        // Only a read-only file is shared: a writable one (made by `snapshot: copy`) could be
        // written in place in one build and change in the other.
        Carry::Link if mode & 0o222 == 0 => match fs::hard_link(from, to) {
            Ok(()) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            // Another filesystem, or too many links: copied instead.
            Err(_) => true,
        },
        Carry::Link => true,
        Carry::Copy { read_only } => read_only,
    };
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)?;
    let bytes = io::copy(&mut src, &mut dst)?;
    // The umask may have narrowed the mode given at creation.
    let mode = perms::without_write_bits(mode, read_only);
    dst.set_permissions(Permissions::from_mode(mode))?;
    dst.set_modified(meta.modified()?)?;
    Ok(Some(bytes))
}

/// The first line of a `.carried` record; then each path, ended by a NUL (paths may hold any
/// other byte).
const HEADER: &[u8] = b"atomdeploy-carried 1\n";

/// What a build carried: nothing when it has no record (made without `keep_assets:`, or
/// before it existed); None when the record is damaged.
fn read_carried(path: &Path) -> Option<HashSet<PathBuf>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(HashSet::new()),
        Err(_) => return None,
    };
    let mut reader = BufReader::new(file);
    let mut header = vec![0; HEADER.len()];
    io::Read::read_exact(&mut reader, &mut header).ok()?;
    if header != HEADER {
        return None;
    }
    let mut paths = HashSet::new();
    loop {
        let mut name = Vec::new();
        if reader.read_until(0, &mut name).ok()? == 0 {
            return Some(paths);
        }
        if name.pop() != Some(0) {
            return None;
        }
        paths.insert(PathBuf::from(std::ffi::OsStr::from_bytes(&name)));
    }
}

/// Records what `name` carried, whole or not at all (a temporary file renamed into place).
fn write_carried(layout: &Layout, name: &BuildName, carried: &[PathBuf]) -> Result<()> {
    crate::infra::fsutil::write_atomically(&layout.carried_file(name), None, |out| {
        out.write_all(HEADER)?;
        for relative in carried {
            out.write_all(relative.as_os_str().as_bytes())?;
            out.write_all(b"\0")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carried_record_reads_back_and_a_damaged_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let name = BuildName::parse("20260101-000000").unwrap();
        let paths = [
            PathBuf::from("public/build/assets/app-1.js"),
            PathBuf::from("public/build/new\nline.css"),
            PathBuf::from(std::ffi::OsStr::from_bytes(b"a/latin-\xe9")),
        ];
        write_carried(&layout, &name, &paths).unwrap();
        let back = read_carried(&layout.carried_file(&name)).unwrap();
        assert_eq!(back, paths.iter().cloned().collect());
        assert_eq!(
            read_carried(&tmp.path().join("missing")),
            Some(HashSet::new())
        );
        let bad = tmp.path().join("bad");
        fs::write(&bad, b"atomdeploy-carried 2\n").unwrap();
        assert_eq!(read_carried(&bad), None);
        fs::write(&bad, b"atomdeploy-carried 1\na\0b").unwrap();
        assert_eq!(read_carried(&bad), None, "cut short");
    }
}
