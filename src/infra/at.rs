//! The file system through open directories: each call names one entry of a directory
//! already open (`openat(2)`, `fstatat(2)`, ...), so the kernel neither walks a long path
//! again for every file nor follows a symlink that was swapped in above it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
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

/// `path` as the system calls take it.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}
