//! Placing application/'s files into the build: each directory a job, on every CPU, and every
//! file named through its directory, open in each of the three trees (application/, the live
//! build, the new build). A build is many small files; walking each one's full path three or
//! four times (its `lstat`, the live build's copy, the link) was most of a snapshot's time.
//!
//! A job holds its directories open only while it runs, and opens them anew from the top of
//! each tree, so a deep or wide tree never holds more descriptors open (nor more stack) than
//! the jobs running at once need.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use nix::dir::Type;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode};
use nix::sys::time::TimeSpec;
use rayon::Scope;

use super::Options;
use crate::infra::at::{self, c_path, open_at, open_dir_at, stat_at, stat_fd};
use crate::infra::report::Reporter;
use crate::infra::{cache, fault, perms};
use crate::state::manifest::{self, Identity, ManifestWriter, Placed, Record};

/// application/, the live build linked from, and the build in the making, open as directories.
pub(super) struct Trees<'a> {
    source: &'a Path,
    app: OwnedFd,
    /// None when not linking, or when the live build is not a real directory.
    prev: Option<OwnedFd>,
    build: OwnedFd,
}

impl<'a> Trees<'a> {
    pub(super) fn open(source: &'a Path, options: &Options, build: &Path) -> Result<Trees<'a>> {
        let app = open_at(AT_FDCWD, &c_path(source)?, OFlag::O_DIRECTORY)
            .with_context(|| format!("cannot read {}", source.display()))?;
        // A symlink in place of the live build leads anywhere: nothing is linked from it.
        let prev = options
            .link_from
            .and_then(|(from, _)| open_dir_at(AT_FDCWD, &c_path(from).ok()?).ok());
        let build = open_at(AT_FDCWD, &c_path(build)?, OFlag::O_DIRECTORY)
            .with_context(|| format!("cannot open {}", build.display()))?;
        Ok(Trees {
            source,
            app,
            prev,
            build,
        })
    }
}

/// A directory to place: its path below application/, and whether the live build has it as
/// a real directory, with every directory above it real too. A symlink there is the live
/// build's link to a shared entry (or anything else): a file looked up through it would be
/// the users' data in shared/, and must never be linked into a build.
struct Job {
    relative: PathBuf,
    real_in_live: bool,
}

/// A directory being placed, open in each tree.
struct Here {
    relative: PathBuf,
    app: OwnedFd,
    prev: Option<OwnedFd>,
    new: OwnedFd,
    /// The manifest's lines of its files, added to the manifest at once when it is placed.
    /// (Only its own job writes them: the lock is never waited on.)
    lines: Mutex<Vec<u8>>,
}

impl Here {
    fn new(relative: PathBuf, app: OwnedFd, prev: Option<OwnedFd>, new: OwnedFd) -> Here {
        Here {
            relative,
            app,
            prev,
            new,
            lines: Mutex::new(Vec::new()),
        }
    }
}

/// What a walk placed.
pub(super) struct Counts {
    pub(super) copied: u64,
    pub(super) linked: u64,
    /// Of the linked files, those application/ has anew with the very same bytes.
    pub(super) same: u64,
    pub(super) bytes: u64,
}

/// One placing of files: the whole of application/ ([`Walk::everything`]) or paths it left
/// out ([`Walk::later`]).
pub(super) struct Walk<'a> {
    options: &'a Options<'a>,
    trees: &'a Trees<'a>,
    changed: &'a Mutex<Vec<PathBuf>>,
    files: &'a Mutex<ManifestWriter>,
    bar: &'a indicatif::ProgressBar,
    reporter: &'a Reporter,
    copied: AtomicU64,
    linked: AtomicU64,
    same: AtomicU64,
    bytes: AtomicU64,
    failed: Mutex<Option<anyhow::Error>>,
    /// Directories whose mode denies their owner search, which the jobs below them need:
    /// given their mode once every job is done, deepest first.
    closed: Mutex<Vec<(PathBuf, u32)>>,
}

enum Outcome {
    Linked,
    /// Linked: application/'s file is another one, with the very same bytes.
    Same,
    Copied(u64),
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        options: &'a Options<'a>,
        trees: &'a Trees<'a>,
        changed: &'a Mutex<Vec<PathBuf>>,
        files: &'a Mutex<ManifestWriter>,
        bar: &'a indicatif::ProgressBar,
        reporter: &'a Reporter,
    ) -> Walk<'a> {
        Walk {
            options,
            trees,
            changed,
            files,
            bar,
            reporter,
            copied: AtomicU64::new(0),
            linked: AtomicU64::new(0),
            same: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: Mutex::new(None),
            closed: Mutex::new(Vec::new()),
        }
    }

    /// Places all of application/ (but `.git` at any depth, a top-level `auth.json`, and the
    /// `later` and `exclude:` paths) into the build.
    pub(super) fn everything(&self) -> Result<()> {
        let root = Job {
            relative: PathBuf::new(),
            real_in_live: self.trees.prev.is_some(),
        };
        self.run(|s| self.dir(s, root))
    }

    /// Places `relative`, left out of [`Walk::everything`], and all below it; nothing when
    /// application/ has no such path, or has it only through a symlink (which the build has
    /// already, as a symlink).
    pub(super) fn later(&self, relative: &Path) -> Result<()> {
        let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
            return Ok(());
        };
        let t = self.trees;
        let Some(app) = absent_as_none(beneath(t.app.as_fd(), parent))
            .with_context(|| format!("cannot read {}", t.source.join(parent).display()))?
        else {
            return Ok(());
        };
        let Some(new) = absent_as_none(beneath(t.build.as_fd(), parent))
            .with_context(|| format!("cannot add {} to the build", relative.display()))?
        else {
            return Ok(());
        };
        let prev = t
            .prev
            .as_ref()
            .and_then(|p| beneath(p.as_fd(), parent).ok());
        let here = Here::new(parent.to_path_buf(), app, prev, new);
        let name = CString::new(name.as_bytes()).context("a path with a NUL byte")?;
        match stat_at(here.app.as_fd(), &name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", t.source.join(relative).display()))
            }
            Ok(st) => {
                let kind = type_of(&st);
                self.run(|s| self.entry(s, &here, &name, kind, relative.to_path_buf()))?;
                self.record(&here)
            }
        }
    }

    /// What placing came to, once the walks are done.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            copied: self.copied.load(Ordering::Relaxed),
            linked: self.linked.load(Ordering::Relaxed),
            same: self.same.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Runs `first` and every job it spawns, then gives the closed directories their modes.
    fn run<'s>(&'s self, first: impl FnOnce(&Scope<'s>) -> Result<()> + Send) -> Result<()> {
        rayon::scope(|s| {
            if let Err(e) = first(s) {
                self.fail(e);
            }
        });
        let failed = self
            .failed
            .lock()
            .expect("no thread panicked holding it")
            .take();
        if let Some(e) = failed {
            return Err(e);
        }
        let mut closed =
            std::mem::take(&mut *self.closed.lock().expect("no thread panicked holding it"));
        closed.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode) in closed {
            nix::sys::stat::fchmodat(
                self.trees.build.as_fd(),
                c_path(&path)?.as_c_str(),
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .with_context(|| format!("cannot set the mode of {} in the build", path.display()))?;
        }
        Ok(())
    }

    fn fail(&self, e: anyhow::Error) {
        let mut failed = self.failed.lock().expect("no thread panicked holding it");
        failed.get_or_insert(e);
    }

    fn job<'s>(&'s self, s: &Scope<'s>, job: Job) {
        // After a failure the build is thrown away: no need to fill it further.
        if self.failed.lock().is_ok_and(|f| f.is_none())
            && let Err(e) = self.dir(s, job)
        {
            self.fail(e);
        }
    }

    /// Places what one directory holds; its subdirectories are jobs of their own.
    fn dir<'s>(&'s self, s: &Scope<'s>, job: Job) -> Result<()> {
        let here = self.open(job)?;
        let shown = || self.trees.source.join(&here.relative);
        let mut entries = at::entries(here.app.as_fd())
            .with_context(|| format!("cannot read {}", shown().display()))?
            .into_iter()
            .map(|(name, kind)| {
                let relative = here.relative.join(OsStr::from_bytes(name.to_bytes()));
                (name, kind, relative)
            })
            .collect::<Vec<_>>();
        entries.retain(|(_, _, relative)| self.wanted(relative));
        self.bar.inc_length(entries.len() as u64);
        // One after the other: the parallelism is in the many directories. A job that waited
        // on a parallel loop of its own would run other jobs meanwhile, on its stack and with
        // its directories open, as deep as the tree.
        for (name, kind, relative) in entries {
            let kind = match kind {
                Some(kind) => kind,
                None => type_of(
                    &stat_at(here.app.as_fd(), &name)
                        .with_context(|| format!("cannot read {}", shown().display()))?,
                ),
            };
            self.entry(s, &here, &name, kind, relative)?;
        }
        self.record(&here)?;
        // The top's mode is the snapshot's to give, once REVISION is written.
        if here.relative.as_os_str().is_empty() {
            return Ok(());
        }
        let mode = stat_fd(here.app.as_fd())
            .with_context(|| format!("cannot read {}", shown().display()))?
            .st_mode
            & 0o7777;
        // Every entry of this directory is made; those below it are made through it, which
        // takes search permission, and only that, until every job is done.
        if mode & 0o100 != 0 {
            nix::sys::stat::fchmod(here.new.as_fd(), Mode::from_bits_truncate(mode))
                .with_context(|| format!("cannot set the mode of {}", here.relative.display()))?;
        } else {
            let mut closed = self.closed.lock().expect("no thread panicked holding it");
            closed.push((here.relative, mode));
        }
        Ok(())
    }

    /// Whether the walk copies `relative` (and what is below it).
    fn wanted(&self, relative: &Path) -> bool {
        let name = relative.file_name().unwrap_or_default();
        // Git never tracks a `.git`, so none is the commit's: the working copy's own, or the
        // clones composer leaves in vendor/ for source installs (most of some apps' size).
        let git = name == ".git";
        // Never copied: composer's credentials at the top, should a commit carry them
        // (checkout warns) or someone leave them in application/ (the server's belong beside
        // deploy.yml). `relative` is from the top, so this is the top's only.
        let credentials = relative.as_os_str() == "auth.json";
        // Left out of every walk but its own, which starts at it (`later`).
        let later = self.options.later.iter().any(|p| p == relative);
        let excluded = self.options.exclude.iter().any(|p| p == relative);
        !(git || credentials || later || excluded)
    }

    /// The directory of `job`, open in each tree.
    fn open(&self, job: Job) -> Result<Here> {
        let t = self.trees;
        let opened = |root: &OwnedFd| -> io::Result<OwnedFd> {
            match job.relative.as_os_str().is_empty() {
                true => root.try_clone(),
                false => open_dir_at(root.as_fd(), &c_path(&job.relative)?),
            }
        };
        let app = opened(&t.app)
            .with_context(|| format!("cannot read {}", t.source.join(&job.relative).display()))?;
        let prev = match (&t.prev, job.real_in_live) {
            (Some(prev), true) => opened(prev).ok(),
            _ => None,
        };
        let new = opened(&t.build)
            .with_context(|| format!("cannot open {} in the build", job.relative.display()))?;
        Ok(Here::new(job.relative, app, prev, new))
    }

    /// Adds the manifest's lines of `here`'s files to the manifest.
    fn record(&self, here: &Here) -> Result<()> {
        let lines = std::mem::take(&mut *here.lines.lock().expect("no thread panicked holding it"));
        if !lines.is_empty() {
            self.files
                .lock()
                .expect("no thread panicked holding it")
                .add_lines(&lines)
                .context("cannot write the build's manifest")?;
        }
        Ok(())
    }

    /// Places one entry of `here`: a directory is made and becomes a job, a file is linked or
    /// copied, a symlink copied as one, never followed.
    fn entry<'s>(
        &'s self,
        s: &Scope<'s>,
        here: &Here,
        name: &CStr,
        kind: Type,
        relative: PathBuf,
    ) -> Result<()> {
        if kind == Type::Directory {
            nix::sys::stat::mkdirat(here.new.as_fd(), name, Mode::from_bits_truncate(0o777))
                .with_context(|| format!("cannot create {} in the build", relative.display()))?;
            self.bar.inc(1);
            let job = Job {
                relative,
                real_in_live: here.prev.is_some(),
            };
            s.spawn(move |s| self.job(s, job));
            return Ok(());
        }
        self.place(here, name, &relative)
            .with_context(|| format!("cannot copy {} into the build", relative.display()))?;
        self.bar.inc(1);
        fault::point("snapshot-file");
        Ok(())
    }

    /// Places one entry that is not a directory, by what it is now (the directory listing's
    /// type may be out of date).
    fn place(&self, here: &Here, name: &CStr, relative: &Path) -> Result<()> {
        let st = stat_at(here.app.as_fd(), name)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(here.app.as_fd(), name)?;
                let target = within_build(Path::new(&target), self.trees.source, relative);
                nix::unistd::symlinkat(&target, here.new.as_fd(), name)?;
            }
            libc::S_IFREG => match self.file(here, name, relative, &st)? {
                Outcome::Linked => {
                    self.linked.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Same => {
                    self.linked.fetch_add(1, Ordering::Relaxed);
                    self.same.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Copied(n) => {
                    self.copied.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(n, Ordering::Relaxed);
                }
            },
            libc::S_IFDIR => {
                return Err(anyhow!("it became a directory while the build was made"));
            }
            _ => self.reporter.warn(&format!(
                "skipped {} (not a file, directory or symlink)",
                relative.display()
            )),
        }
        Ok(())
    }

    /// Puts one file of application/ into the build — a hard link to the live build's copy
    /// when application/ still has the file that copy came from and the copy is still what
    /// was placed, a copy otherwise — and records it in the manifest (shared entries aside:
    /// they are never linked, so never recorded).
    fn file(
        &self,
        here: &Here,
        name: &CStr,
        relative: &Path,
        st: &libc::stat,
    ) -> io::Result<Outcome> {
        let options = self.options;
        let shareable = !options.never_link.iter().any(|p| relative.starts_with(p));
        let identity = Identity::of(st);
        let (outcome, placed) = match shareable
            .then(|| {
                let linked = |(fd, placed)| (fd, placed, Outcome::Linked);
                let same = |(fd, placed)| (fd, placed, Outcome::Same);
                (self.previous(here, name, relative, &identity).map(linked))
                    .or_else(|| self.same_bytes(here, name, relative, st).map(same))
            })
            .flatten()
        {
            Some((previous, placed, outcome)) => {
                nix::unistd::linkat(previous, name, here.new.as_fd(), name, AtFlags::empty())?;
                (outcome, placed)
            }
            None => {
                let read_only = options.read_only && shareable;
                let (bytes, placed) =
                    copy_at(here.app.as_fd(), here.new.as_fd(), name, st, read_only)?;
                (Outcome::Copied(bytes), placed)
            }
        };
        if shareable {
            let record = Record {
                source: identity,
                placed,
            };
            let mut lines = here.lines.lock().expect("no thread panicked holding it");
            manifest::line(&mut lines, relative, &record);
        }
        Ok(outcome)
    }

    /// The live build's directory holding the file at `relative`, if that file can be linked:
    /// application/ still has the file it came from, it is reached without following any
    /// symlink, and it is still what was placed (written in place since, it is noted in
    /// `changed`).
    fn previous<'h>(
        &self,
        here: &'h Here,
        name: &CStr,
        relative: &Path,
        identity: &Identity,
    ) -> Option<(BorrowedFd<'h>, Placed)> {
        let (_, manifest) = self.options.link_from?;
        let record = manifest.get(relative).filter(|r| r.source == *identity)?;
        let prev = here.prev.as_ref()?.as_fd();
        let st = stat_at(prev, name).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        if Placed::of(&st) != record.placed {
            self.changed
                .lock()
                .expect("no thread panicked holding it")
                .push(relative.to_path_buf());
            return None;
        }
        // A write between this check and the link lands in the new build as it would a moment
        // later in the live one; the manifest keeps what was checked, so the next build copies.
        Some((prev, record.placed))
    }

    /// The live build's file at `relative` when application/'s is another file with the very
    /// same bytes, size and mode, and the live build's is still what was placed. Composer
    /// writes every file of a package it reinstalls anew, though a version bump changes few of
    /// them; linking those spares their copy and the flush of it. Only files the page cache
    /// holds whole are compared: one that would have to be read from the disk is copied, which
    /// costs no more than before.
    fn same_bytes<'h>(
        &self,
        here: &'h Here,
        name: &CStr,
        relative: &Path,
        st: &libc::stat,
    ) -> Option<(BorrowedFd<'h>, Placed)> {
        let (_, manifest) = self.options.link_from?;
        let record = manifest.get(relative)?;
        let identity = Identity::of(st);
        let mode = perms::without_write_bits(st.st_mode & 0o7777, self.options.read_only);
        let size = st.st_size as u64;
        // The same file as recorded: `previous` has judged it already.
        if record.source == identity || !record.placed.fits(size, libc::S_IFREG | mode) {
            return None;
        }
        let prev = here.prev.as_ref()?.as_fd();
        // Looked at before it is opened, so that only a regular file still as placed is (the
        // fstat after the open catches one put in its place since).
        if Placed::of(&stat_at(prev, name).ok()?) != record.placed {
            return None;
        }
        let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let theirs = File::from(open_at(prev, name, flags).ok()?);
        let ours = File::from(open_at(here.app.as_fd(), name, flags).ok()?);
        let as_recorded = || {
            stat_fd(ours.as_fd()).is_ok_and(|s| Identity::of(&s) == identity)
                && stat_fd(theirs.as_fd()).is_ok_and(|s| Placed::of(&s) == record.placed)
        };
        let same = as_recorded()
            && cache::resident(ours.as_fd(), size)
            && cache::resident(theirs.as_fd(), size)
            && same_contents(
                size,
                |buf, at| ours.read_at(buf, at).ok(),
                |buf, at| theirs.read_at(buf, at).ok(),
            )
            // Neither was written to while they were compared.
            && as_recorded();
        same.then_some((prev, record.placed))
    }
}

/// Whether the first `size` bytes that `ours` and `theirs` read (as `pread`: into the buffer,
/// from the offset; `None` on an error) are the same. A read that ends before `size` is a
/// file that shrank: not the same.
fn same_contents(
    size: u64,
    mut ours: impl FnMut(&mut [u8], u64) -> Option<usize>,
    mut theirs: impl FnMut(&mut [u8], u64) -> Option<usize>,
) -> bool {
    const CHUNK: usize = 16 * 1024;
    let (mut a, mut b) = ([0u8; CHUNK], [0u8; CHUNK]);
    let mut offset = 0;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(CHUNK, |left| left.min(CHUNK));
        if !fill(&mut ours, &mut a[..want], offset) || !fill(&mut theirs, &mut b[..want], offset) {
            return false;
        }
        if a[..want] != b[..want] {
            return false;
        }
        offset += want as u64;
    }
    true
}

/// Reads all of `buf` from `offset` on, however short each read; false at an error or the end.
fn fill(
    read: &mut impl FnMut(&mut [u8], u64) -> Option<usize>,
    buf: &mut [u8],
    offset: u64,
) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match read(&mut buf[got..], offset + got as u64) {
            Some(n) if n > 0 => got += n,
            _ => return false,
        }
    }
    true
}

/// The directory `relative` below `root`, each step of the way a real directory.
fn beneath(root: BorrowedFd, relative: &Path) -> io::Result<OwnedFd> {
    let mut dir = root.try_clone_to_owned()?;
    for part in relative.components() {
        let name = c_path(Path::new(part.as_os_str()))?;
        dir = open_dir_at(dir.as_fd(), &name)?;
    }
    Ok(dir)
}

/// None for a path that is not there, or is there only through a symlink or a file.
fn absent_as_none(opened: io::Result<OwnedFd>) -> io::Result<Option<OwnedFd>> {
    match opened {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::NotADirectory
                || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn type_of(st: &libc::stat) -> Type {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Type::Directory,
        libc::S_IFREG => Type::File,
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFIFO => Type::Fifo,
        libc::S_IFSOCK => Type::Socket,
        libc::S_IFCHR => Type::CharacterDevice,
        _ => Type::BlockDevice,
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

/// Contents, mode and modification time of `name` in `from`, as `name` in `to`; the copy
/// itself goes through `io::copy`, which uses copy_file_range(2) on Linux. `read_only` drops
/// the write bits (builds that share files). Returns the bytes copied and the copy as placed.
fn copy_at(
    from: BorrowedFd,
    to: BorrowedFd,
    name: &CStr,
    st: &libc::stat,
    read_only: bool,
) -> io::Result<(u64, Placed)> {
    let mode = st.st_mode & 0o7777;
    // (Non-blocking: should a FIFO have taken the file's place, the open does not hang.)
    let mut src = File::from(open_at(from, name, OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK)?);
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    let mut dst = File::from(nix::fcntl::openat(
        to,
        name,
        flags | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )?);
    let bytes = io::copy(&mut src, &mut dst)?;
    // The umask may have narrowed the mode given at creation.
    let mode = perms::without_write_bits(mode, read_only);
    dst.set_permissions(Permissions::from_mode(mode))?;
    nix::sys::stat::futimens(
        dst.as_fd(),
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )?;
    Ok((bytes, Placed::of(&stat_fd(dst.as_fd())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of `data` as `pread` would be, each read cut short to a length `cut` picks
    /// (at least 1), failing every read that reaches offset `fail_at`, if given.
    fn reader<'d>(
        data: &'d [u8],
        mut cut: impl FnMut(usize) -> usize + 'd,
        fail_at: Option<u64>,
    ) -> impl FnMut(&mut [u8], u64) -> Option<usize> + 'd {
        move |buf, at| {
            if fail_at.is_some_and(|f| at + buf.len() as u64 > f) {
                return None;
            }
            let from = usize::try_from(at).ok()?.min(data.len());
            let n = buf.len().min(data.len() - from);
            let n = if n == 0 { 0 } else { cut(n).clamp(1, n) };
            buf[..n].copy_from_slice(&data[from..from + n]);
            Some(n)
        }
    }

    /// Sizes around the comparison's 16 KiB reads, a byte flipped at generated places, reads
    /// cut short at generated lengths: equal only when every byte is.
    #[test]
    fn contents_compare_equal_only_when_every_byte_is_however_the_reads_are_cut() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for size in [0usize, 1, 2, 100, 16383, 16384, 16385, 32768, 40000, 70001] {
            let data: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            for round in 0..20 {
                let cut_a = next();
                let cut_b = next();
                let whole = |n: usize| n;
                let short_a = move |n: usize| (cut_a as usize % n) + 1;
                let short_b = move |n: usize| (cut_b as usize % n) + 1;
                assert!(
                    same_contents(
                        size as u64,
                        reader(&data, short_a, None),
                        reader(&data, short_b, None)
                    ),
                    "size {size}, round {round}"
                );
                if size == 0 {
                    continue;
                }
                let places = [0, size - 1, 16383, 16384, next() as usize % size];
                let at = places[next() as usize % places.len()].min(size - 1);
                let mut other = data.clone();
                other[at] ^= 1 << (next() % 8);
                assert!(
                    !same_contents(
                        size as u64,
                        reader(&data, short_a, None),
                        reader(&other, whole, None)
                    ),
                    "size {size}: byte {at} differs"
                );
                // A file that shrank, or a read that failed, is never the same.
                let shorter = &data[..size - 1];
                assert!(!same_contents(
                    size as u64,
                    reader(&data, whole, None),
                    reader(shorter, short_b, None)
                ));
                let fail = next() % size as u64;
                assert!(!same_contents(
                    size as u64,
                    reader(&data, whole, None),
                    reader(&data, whole, Some(fail))
                ));
            }
        }
    }

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
