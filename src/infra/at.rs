//! The file system through open directories: each call names one entry of a directory
//! already open (`openat(2)`, `fstatat(2)`, ...), so the kernel neither walks a long path
//! again for every file nor follows a symlink that was swapped in above it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Type;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

/// `name` in `dir` ([`nix::fcntl::AT_FDCWD`] for a path from the working directory), opened
/// read-only.
pub(crate) fn open_at(dir: BorrowedFd, name: &CStr, flags: OFlag) -> io::Result<OwnedFd> {
    let flags = flags | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    Ok(nix::fcntl::openat(dir, name, flags, Mode::empty())?)
}

/// The directory `name` in `dir`, which must be one itself, not a symlink to one.
pub(crate) fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
}

/// `name` in `dir` as `lstat(2)` sees it: a symlink is not followed.
pub(crate) fn stat_at(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstatat(
        dir,
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

pub(crate) fn stat_fd(fd: BorrowedFd) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstat(fd)?)
}

/// The entries of the directory open as `fd`, but `.` and `..`, each with its type where the
/// file system's directory entries tell it (`None`: ask [`stat_at`]).
pub(crate) fn entries(fd: BorrowedFd) -> io::Result<Vec<(CString, Option<Type>)>> {
    // A copy, which the stream owns and closes: `fd` stays open for the *at calls.
    let mut dir = nix::dir::Dir::from_fd(fd.try_clone_to_owned()?)?;
    let mut entries = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            entries.push((name.to_owned(), entry.file_type()));
        }
    }
    Ok(entries)
}

/// The names in the directory open as `fd`, but `.` and `..`.
pub(crate) fn names(fd: BorrowedFd) -> io::Result<Vec<CString>> {
    Ok(entries(fd)?.into_iter().map(|(name, _)| name).collect())
}

/// Reads from `fd` at `offset` only what the page cache holds (`preadv2(2)` with
/// `RWF_NOWAIT`): `None` when the next byte would have to come from the disk (or the kernel
/// cannot tell), so that a caller reading only to save work never waits on the disk for it.
/// tmpfs cannot tell (it refuses the flag) and has no disk behind it: there a plain read.
pub(crate) fn read_cached(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> Option<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: one iovec over `buf`, which outlives the call; the fd is open for its duration.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n >= 0 {
        return usize::try_from(n).ok();
    }
    if io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP) || !on_tmpfs(fd) {
        return None;
    }
    // SAFETY: as above, `buf.len()` bytes into `buf`.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
    usize::try_from(n).ok()
}

fn on_tmpfs(fd: BorrowedFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// `path` as the system calls take it.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::path::Path;

    use super::*;

    /// A 1 MiB file in `dir`, written back to its disk; open for reading.
    fn written(dir: &Path) -> (std::fs::File, Vec<u8>) {
        let path = dir.join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        let bytes: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        file.sync_all().unwrap();
        (std::fs::File::open(&path).unwrap(), bytes)
    }

    fn reads_what_it_holds(file: &std::fs::File, bytes: &[u8]) {
        let mut buf = vec![0; 4096];
        assert_eq!(read_cached(file.as_fd(), &mut buf, 8192), Some(4096));
        assert_eq!(buf, bytes[8192..8192 + 4096]);
        assert_eq!(
            read_cached(file.as_fd(), &mut buf, 1 << 20),
            Some(0),
            "at the end"
        );
    }

    /// What the snapshot's comparison relies on: bytes the page cache holds are read, and a
    /// file dropped from it gives `None` rather than a wait on the disk.
    #[test]
    fn reads_only_what_the_page_cache_holds() {
        // The build's own folder: on a disk wherever the suite's temp dir is.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let (file, bytes) = written(dir.path());
        if on_tmpfs(file.as_fd()) {
            eprintln!(
                "skipped: {} is on tmpfs, not on a disk",
                dir.path().display()
            );
            return;
        }
        reads_what_it_holds(&file, &bytes);
        nix::fcntl::posix_fadvise(
            file.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
        assert_eq!(read_cached(file.as_fd(), &mut [0; 4096], 8192), None);
    }

    /// tmpfs refuses `RWF_NOWAIT`; all of it is in memory, so it is read plainly.
    #[test]
    fn reads_tmpfs_though_it_cannot_say_what_is_cached() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("skipped: no /dev/shm to make a file in");
            return;
        };
        let (file, bytes) = written(dir.path());
        assert!(on_tmpfs(file.as_fd()), "/dev/shm is a tmpfs");
        reads_what_it_holds(&file, &bytes);
    }
}
