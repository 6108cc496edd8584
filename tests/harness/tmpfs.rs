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
    /// this machine does not let us mount one (not root, or no mount namespace). Never under
    /// CI, which runs as root.
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
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root): {}",
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
