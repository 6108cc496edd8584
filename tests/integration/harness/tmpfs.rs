//! A small filesystem of its own for a test that fills a disk, so that it fills nothing else.

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted for one test, unmounted however the test ends.
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Tmpfs {
    /// A tmpfs with mount `options` (`size=…`, `nr_inodes=…`), or None, said on stderr, when
    /// not run as root. As root (and under CI) a failed mount fails the test: a disk test
    /// that silently did not run would pass for nothing.
    #[must_use]
    pub fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("atomdeploy-tmpfs-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        if out.status.success() {
            return Some(Tmpfs { _dir: dir, path });
        }
        // SAFETY: geteuid(2) reads the process's own user id; it cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            !root && std::env::var_os("CI").is_none(),
            "root (and CI, which runs as root) must be able to mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root; this disk test did not run");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process the test left may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
