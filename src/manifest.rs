//! Which file of application/ each file of a build came from, for `snapshot: link`.
//!
//! Size and modification time cannot tell whether a file changed: composer mirrors path
//! packages with whole-second mtimes, so two versions deployed within a second look alike.
//! The inode and its change time (ctime) can: no program can set a ctime, and every write,
//! rename or creation updates it. A build records those of the application/ files it was
//! made from; the next build links a file only when application/ still has that very file.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

/// A file of application/ as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
    size: u64,
    mode: u32,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            size: meta.len(),
            mode: meta.mode(),
        }
    }
}

/// Files by a 64-bit hash of their path, not the path itself: at 50,000 files the paths
/// would be most of the hook's memory. A collision cannot link a wrong file: the identity
/// found must still be that of the file at hand, and no two files share an inode and ctime.
#[derive(Debug, Default)]
pub struct Manifest(HashMap<u64, Identity>);

fn key(path: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.as_os_str().as_bytes().hash(&mut hasher);
    hasher.finish()
}

impl Manifest {
    pub fn get(&self, relative: &Path) -> Option<&Identity> {
        self.0.get(&key(relative))
    }

    /// Reads a manifest; a missing or damaged one is empty (nothing is linked then).
    pub fn read(path: &Path) -> Manifest {
        let Ok(file) = std::fs::File::open(path) else {
            return Manifest::default();
        };
        let mut reader = BufReader::new(file);
        let mut map = HashMap::new();
        let (mut name, mut fields) = (Vec::new(), Vec::new());
        loop {
            name.clear();
            fields.clear();
            // `<path>\0<ino> <ctime> <nsec> <size> <mode>\n`: paths may hold any byte but NUL.
            match reader.read_until(0, &mut name) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if reader.read_until(b'\n', &mut fields).is_err() || name.pop() != Some(0) {
                break;
            }
            let text = String::from_utf8_lossy(&fields);
            let numbers: Vec<i64> = text
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let [ino, ctime, ctime_nsec, size, mode] = numbers[..] else {
                return Manifest::default();
            };
            let identity = Identity {
                ino: ino as u64,
                ctime,
                ctime_nsec,
                size: size as u64,
                mode: mode as u32,
            };
            map.insert(key(Path::new(std::ffi::OsStr::from_bytes(&name))), identity);
        }
        Manifest(map)
    }
}

/// Writes a manifest as a snapshot goes, file by file, into a temporary file that
/// [`ManifestWriter::finish`] puts in place.
pub struct ManifestWriter {
    out: BufWriter<tempfile::NamedTempFile>,
}

impl ManifestWriter {
    pub fn new(dir: &Path) -> Result<ManifestWriter> {
        std::fs::create_dir_all(dir)?;
        Ok(ManifestWriter {
            out: BufWriter::new(tempfile::NamedTempFile::new_in(dir)?),
        })
    }

    pub fn add(&mut self, name: &Path, id: &Identity) -> std::io::Result<()> {
        self.out.write_all(name.as_os_str().as_bytes())?;
        writeln!(
            self.out,
            "\0{} {} {} {} {}",
            id.ino, id.ctime, id.ctime_nsec, id.size, id.mode
        )
    }

    /// Puts the manifest at `path` (on the same filesystem as the temporary file).
    pub fn finish(&mut self, path: &Path) -> Result<()> {
        self.out.flush()?;
        std::fs::create_dir_all(path.parent().expect("a manifest lives in a folder"))?;
        std::fs::hard_link(self.out.get_ref().path(), path)
            .or_else(|_| std::fs::copy(self.out.get_ref().path(), path).map(|_| ()))
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_manifest_reads_back_what_was_written_whatever_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let id = |n: u64| Identity {
            ino: n,
            ctime: 1_700_000_000,
            ctime_nsec: 123,
            size: 42,
            mode: 0o100644,
        };
        let names = [
            PathBuf::from("a/b.php"),
            PathBuf::from("new\nline"),
            PathBuf::from(std::ffi::OsStr::from_bytes(b"latin-\xe9")),
        ];
        let path = dir.path().join("m");
        let mut writer = ManifestWriter::new(dir.path()).unwrap();
        for (i, name) in names.iter().enumerate() {
            writer.add(name, &id(i as u64)).unwrap();
        }
        writer.finish(&path).unwrap();
        let back = Manifest::read(&path);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(back.get(name), Some(&id(i as u64)));
        }
        assert!(
            Manifest::read(&dir.path().join("missing"))
                .get(&names[0])
                .is_none()
        );
    }
}
