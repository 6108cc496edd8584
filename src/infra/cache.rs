//! Whether a file's bytes are in memory (the page cache), asked without reading them. A deploy
//! that reads a file only to spare itself work must never wait on the disk for it, nor set the
//! disk reading it: a read that finds a page missing starts the kernel's readahead, even a
//! `preadv2` with `RWF_NOWAIT`, which only returns without waiting for it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// cachestat(2), Linux 6.5 and later. Its number is the same on every architecture (system
/// calls added since Linux 5.1 share one table); the libc crate does not name it on x86_64.
const SYS_CACHESTAT: libc::c_long = 451;

/// `struct cachestat_range`.
#[repr(C)]
struct Range {
    off: u64,
    len: u64,
}

/// `struct cachestat`.
#[repr(C)]
#[derive(Default)]
struct Stat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Set once cachestat(2) is refused (ENOSYS, EPERM): mincore(2) from then on.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Whether all of the first `len` bytes of the file open as `fd` are in memory; false when
/// the kernel cannot tell. (On tmpfs they are, unless swapped out.)
pub(crate) fn resident(fd: BorrowedFd, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    if !NO_CACHESTAT.load(Ordering::Relaxed) {
        match by_cachestat(fd, len) {
            Ok(all) => return all,
            // An older kernel, or a sandbox (seccomp) that refuses the call it does not know.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                NO_CACHESTAT.store(true, Ordering::Relaxed);
            }
            Err(_) => return false,
        }
    }
    by_mincore(fd, len).unwrap_or(false)
}

fn pages(len: u64) -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    len.div_ceil(u64::try_from(page).unwrap_or(4096).max(1))
}

fn by_cachestat(fd: BorrowedFd, len: u64) -> io::Result<bool> {
    let range = Range { off: 0, len };
    let mut stat = Stat::default();
    // SAFETY: both structs have the kernel's layout and outlive the call, which writes only
    // into `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.nr_cache >= pages(len))
}

/// The same through a mapping of the file: mincore(2) tells which of its pages are in the
/// page cache (for a file its caller owns or may write, as the deploy user does its builds').
fn by_mincore(fd: BorrowedFd, len: u64) -> io::Result<bool> {
    let size = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut vec = vec![0u8; usize::try_from(pages(len)).unwrap_or(usize::MAX)];
    // SAFETY: a new read-only mapping of `size` bytes, unmapped before returning and never
    // read; mincore writes one byte per page of it into `vec`, which has that many.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::mincore(addr, size, vec.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::munmap(addr, size);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(vec.iter().all(|page| page & 1 == 1))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::path::Path;

    use super::*;

    /// A file of 1 MiB and a bit in `dir`, written back to its disk and read once.
    fn written(dir: &Path) -> std::fs::File {
        let path = dir.join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![7u8; (1 << 20) + 100]).unwrap();
        file.sync_all().unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        file.read_to_end(&mut Vec::new()).unwrap();
        file
    }

    fn on_tmpfs(file: &std::fs::File) -> bool {
        nix::sys::statfs::fstatfs(file)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    }

    /// Both ways of asking see a file in memory, and see it gone once the kernel dropped it.
    #[test]
    fn a_file_read_is_in_memory_and_one_dropped_is_not() {
        // Under target/: on the disk the build is on, wherever the suite's temp dir is.
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
        let file = written(dir.path());
        let len = file.metadata().unwrap().len();
        assert!(resident(file.as_fd(), len));
        assert!(by_mincore(file.as_fd(), len).unwrap());
        assert!(resident(file.as_fd(), 0), "nothing to read");
        if on_tmpfs(&file) {
            eprintln!(
                "skipped the dropped half: {} is on tmpfs",
                dir.path().display()
            );
            return;
        }
        nix::fcntl::posix_fadvise(
            file.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
        assert!(!resident(file.as_fd(), len));
        assert!(!by_mincore(file.as_fd(), len).unwrap());
        // Asking started no read: the file is still out of memory.
        assert!(!resident(file.as_fd(), len));
    }

    /// tmpfs is memory: its files are resident, by both ways of asking.
    #[test]
    fn a_file_on_tmpfs_is_in_memory() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("skipped: no /dev/shm to make a file in");
            return;
        };
        let file = written(dir.path());
        assert!(on_tmpfs(&file), "/dev/shm is a tmpfs");
        let len = file.metadata().unwrap().len();
        assert!(resident(file.as_fd(), len));
        assert!(by_mincore(file.as_fd(), len).unwrap());
    }
}
