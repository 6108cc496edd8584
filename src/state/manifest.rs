//! What each file of a build is, for `snapshot: link`: the application/ file it came from and
//! the file as it was placed in the build.
//!
//! A file is hard-linked from the live build into the next one by its record alone, without
//! reading it, only when both of these hold. (When only the second holds, it is linked if its
//! bytes, size and mode are those of application/'s file: see the snapshot's walk.)
//!
//! - **application/ still has the very file the build's copy came from.** Size and
//!   modification time cannot tell: composer mirrors path packages with whole-second mtimes, so
//!   two versions deployed within a second look alike. The inode and its change time (ctime)
//!   can: no program can set a ctime, and every write, rename or creation updates it.
//!   (application/'s files are never linked anywhere, so nothing of ours moves their ctime.)
//! - **The build's file is still what was placed.** Builds share inodes, so a write into a
//!   live build's file in place (PHP running as root ignores the read-only mode) changes it
//!   in every build that shares it; linking it again would carry the change into every later
//!   build. ctime cannot judge this one: making and removing hard links changes an inode's
//!   ctime (and link count), and every deploy does both to the shared inodes — the next build
//!   links them, cleanup unlinks the oldest build's names after the manifest is written, a
//!   failed deploy drops its half-made build. So the build's file is recorded as placed by
//!   inode, size, mode and modification time to the nanosecond: links and unlinks change none
//!   of them, while a write sets the mtime to the time of the write (which is after the file
//!   was placed, so never the recorded mtime, which is that of the application/ file it was
//!   copied from), a truncation the size, a `chmod u+w` the mode, a replacement the inode.
//!   What escapes is a writer that deliberately sets the mtime back, i.e. one that may as
//!   well rewrite this manifest; `replay` never links, for a build made from scratch.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::infra::fsutil::NewFile;

/// A file of application/ as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
    size: u64,
    mode: u32,
}

impl Identity {
    /// From `lstat(2)`'s answer (the same fields `std::fs::Metadata` gives, so manifests of
    /// either kind compare).
    pub(crate) fn of(st: &libc::stat) -> Identity {
        Identity {
            ino: st.st_ino,
            ctime: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
            size: st.st_size as u64,
            mode: st.st_mode,
        }
    }
}

/// A file of a build as it was placed there (see the module's comment for why not its ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    ino: u64,
    size: u64,
    mode: u32,
    mtime: i64,
    mtime_nsec: i64,
}

impl Placed {
    pub(crate) fn of(st: &libc::stat) -> Placed {
        Placed {
            ino: st.st_ino,
            size: st.st_size as u64,
            mode: st.st_mode,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }

    /// Whether a file of `size` bytes placed with `mode` (type and permission bits) would be
    /// placed as this one was, its contents aside.
    pub(crate) fn fits(&self, size: u64, mode: u32) -> bool {
        self.size == size && self.mode == mode
    }
}

/// One file of a build: where it came from and what was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) source: Identity,
    pub(crate) placed: Placed,
}

/// Files by a 64-bit hash of their path, not the path itself: at 50,000 files the paths
/// would be most of the hook's memory. A collision cannot link a wrong file: the identity
/// found must still be that of the file at hand, and no two files share an inode and ctime;
/// a file linked for its bytes is compared with the one at hand whatever record led to it.
#[derive(Debug, Default)]
pub(crate) struct Manifest(HashMap<u64, Record, Xxh3DefaultBuilder>);

/// XXH3: several times SipHash's speed on paths, and a manifest of 60,000 files is hashed
/// once per deploy. (Keys live in memory only: the file holds the paths.)
fn key(path: &Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path.as_os_str().as_bytes())
}

/// The first line of a manifest: an empty name, then the format. Manifests of format 1 had no
/// such line and recorded no [`Placed`]; they start with a path, never with a NUL, so they
/// (and any other format) read as empty: the next build is one full copy.
const HEADER: &[u8] = b"\0atomdeploy-manifest 2\n";

/// How many files a manifest's map is sized for before reading it: 62,000 at 50,000 files.
const MOST_LINES_AT_ONCE: u64 = 1 << 17;
/// The longest path a line may hold, its NUL included (Linux's PATH_MAX).
const PATH_MAX: u64 = 4096;
/// The longest numbers part of a line, its newline included.
const FIELDS_MAX: u64 = 10 * 21;

impl Manifest {
    pub(crate) fn get(&self, relative: &Path) -> Option<&Record> {
        self.0.get(&key(relative))
    }

    /// Reads a manifest; a missing, damaged or older one is empty (nothing is linked then).
    pub(crate) fn read(path: &Path) -> Manifest {
        let Ok(file) = std::fs::File::open(path) else {
            return Manifest::default();
        };
        // A line is 90 to 150 bytes: room for every file at once, no growing on the way. (Up
        // to a bound: a damaged file's size says nothing, and must not cost its size in memory.)
        let lines = file
            .metadata()
            .map_or(0, |m| m.len() / 100)
            .min(MOST_LINES_AT_ONCE) as usize;
        Self::parse(BufReader::new(file), lines).unwrap_or_default()
    }

    fn parse(mut reader: impl BufRead, lines: usize) -> Option<Manifest> {
        let mut header = vec![0; HEADER.len()];
        reader.read_exact(&mut header).ok()?;
        if header != HEADER {
            return None;
        }
        let mut map = HashMap::with_capacity_and_hasher(lines, Default::default());
        let (mut name, mut fields) = (Vec::new(), Vec::new());
        loop {
            name.clear();
            fields.clear();
            // `<path>\0<10 numbers>\n`: paths may hold any byte but NUL, and are no longer
            // than the system's; the numbers take at most 10 × 20 bytes and their spaces.
            if reader
                .by_ref()
                .take(PATH_MAX)
                .read_until(0, &mut name)
                .ok()?
                == 0
            {
                return Some(Manifest(map));
            }
            reader
                .by_ref()
                .take(FIELDS_MAX)
                .read_until(b'\n', &mut fields)
                .ok()?;
            if name.pop() != Some(0) || fields.pop() != Some(b'\n') {
                return None;
            }
            let mut numbers = [0i64; 10];
            let mut parts = fields.split(|b| *b == b' ');
            for n in &mut numbers {
                *n = number(parts.next()?)?;
            }
            if parts.next().is_some() {
                return None;
            }
            let [
                ino,
                ctime,
                ctime_nsec,
                size,
                mode,
                p_ino,
                p_size,
                p_mode,
                mtime,
                mtime_nsec,
            ] = numbers;
            let record = Record {
                source: Identity {
                    ino: ino as u64,
                    ctime,
                    ctime_nsec,
                    size: size as u64,
                    mode: mode as u32,
                },
                placed: Placed {
                    ino: p_ino as u64,
                    size: p_size as u64,
                    mode: p_mode as u32,
                    mtime,
                    mtime_nsec,
                },
            };
            map.insert(key(Path::new(std::ffi::OsStr::from_bytes(&name))), record);
        }
    }
}

/// A decimal number as the writer writes them: an optional `-`, then digits only.
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// Appends the manifest's line for the file `name` to `lines`: `<path>\0<10 numbers>\n`.
/// (itoa: the ten numbers of every file of a build, formatted without `fmt`'s machinery.)
pub(crate) fn line(lines: &mut Vec<u8>, name: &Path, record: &Record) {
    let (s, p) = (&record.source, &record.placed);
    lines.extend_from_slice(name.as_os_str().as_bytes());
    let mut push = |separator: u8, number: &str| {
        lines.push(separator);
        lines.extend_from_slice(number.as_bytes());
    };
    let mut n = itoa::Buffer::new();
    push(0, n.format(s.ino));
    push(b' ', n.format(s.ctime));
    push(b' ', n.format(s.ctime_nsec));
    push(b' ', n.format(s.size));
    push(b' ', n.format(s.mode));
    push(b' ', n.format(p.ino));
    push(b' ', n.format(p.size));
    push(b' ', n.format(p.mode));
    push(b' ', n.format(p.mtime));
    push(b' ', n.format(p.mtime_nsec));
    lines.push(b'\n');
}

/// Writes a manifest as a snapshot goes, file by file, into a temporary file that
/// [`ManifestWriter::finish`] puts in place.
pub(crate) struct ManifestWriter {
    /// None once finished.
    out: Option<NewFile>,
}

impl ManifestWriter {
    pub(crate) fn new(dir: &Path) -> Result<ManifestWriter> {
        let mut out = NewFile::new_in(dir)?;
        out.write_all(HEADER)?;
        Ok(ManifestWriter { out: Some(out) })
    }

    #[cfg(test)]
    pub(crate) fn add(&mut self, name: &Path, record: &Record) -> std::io::Result<()> {
        let mut lines = Vec::new();
        line(&mut lines, name, record);
        self.add_lines(&lines)
    }

    /// Adds lines made with [`line`]: a snapshot makes a directory's lines at once, so
    /// that the threads placing files take the writer once a directory, not once a file.
    pub(crate) fn add_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.out
            .as_mut()
            .expect("a manifest is not added to once finished")
            .write_all(lines)
    }

    /// Puts the manifest at `path`, on the filesystem of the folder given to
    /// [`ManifestWriter::new`], in one rename.
    pub(crate) fn finish(&mut self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path.parent().expect("a manifest lives in a folder"))?;
        self.out
            .take()
            .expect("a manifest is finished once")
            .put(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn record(n: u64) -> Record {
        Record {
            source: Identity {
                ino: n,
                ctime: 1_700_000_000,
                ctime_nsec: 123,
                size: 42,
                mode: 0o100644,
            },
            placed: Placed {
                ino: n + 1000,
                size: 42,
                mode: 0o100444,
                mtime: -5,
                mtime_nsec: 999_999_999,
            },
        }
    }

    #[test]
    fn a_manifest_reads_back_what_was_written_whatever_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            PathBuf::from("a/b.php"),
            PathBuf::from("new\nline"),
            PathBuf::from(std::ffi::OsStr::from_bytes(b"latin-\xe9")),
        ];
        let path = dir.path().join("m");
        let mut writer = ManifestWriter::new(dir.path()).unwrap();
        for (i, name) in names.iter().enumerate() {
            writer.add(name, &record(i as u64)).unwrap();
        }
        writer.finish(&path).unwrap();
        let back = Manifest::read(&path);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(back.get(name), Some(&record(i as u64)));
        }
        assert!(
            Manifest::read(&dir.path().join("missing"))
                .get(&names[0])
                .is_none()
        );
    }

    #[test]
    fn an_older_or_damaged_manifest_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        // Format 1: no header, five numbers.
        std::fs::write(&path, b"a/b.php\x001 2 3 4 5\n").unwrap();
        assert!(Manifest::read(&path).get(Path::new("a/b.php")).is_none());
        // A later format.
        std::fs::write(
            &path,
            b"\0atomdeploy-manifest 3\na\x001 2 3 4 5 6 7 8 9 10\n",
        )
        .unwrap();
        assert!(Manifest::read(&path).get(Path::new("a")).is_none());
        // Cut short in the middle of a record, or a record with a number too few.
        let mut whole = HEADER.to_vec();
        whole.extend_from_slice(b"a\x001 2 3 4 5 6 7 8 9 10\nb\x001 2 3 4 5 6 7 8 9 10\n");
        for bad in [&whole[..whole.len() - 1], &whole[..whole.len() - 4]] {
            std::fs::write(&path, bad).unwrap();
            assert!(Manifest::read(&path).get(Path::new("a")).is_none());
        }
        std::fs::write(&path, &whole).unwrap();
        assert!(Manifest::read(&path).get(Path::new("b")).is_some());
        // Numbers the writer never writes.
        for fields in [
            "1 2 3 4 5 6 7 8 9 10 11",
            "1 2 3 4 5 6 7 8 9 1x",
            "1 2 3 4 5 6 7 8 9 +10",
            "1 2 3 4 5 6 7 8  10",
            "1 2 3 4 5 6 7 8 9 -",
            "1 2 3 4 5 6 7 8 9 99999999999999999999",
            "1 2 3 4 5 6 7 8 9 10 ",
        ] {
            let mut bad = HEADER.to_vec();
            bad.extend_from_slice(format!("a\0{fields}\n").as_bytes());
            std::fs::write(&path, &bad).unwrap();
            assert!(
                Manifest::read(&path).get(Path::new("a")).is_none(),
                "{fields}"
            );
        }
        // A file whose size says millions of lines, or one endless line, of zeros (a sparse
        // file): empty, without its size in memory.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 40).unwrap();
        drop(file);
        let mut sparse = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut sparse, HEADER).unwrap();
        drop(sparse);
        assert!(Manifest::read(&path).get(Path::new("")).is_none());
        // The extremes it does write.
        let mut extremes = HEADER.to_vec();
        extremes.extend_from_slice(
            format!("a\0{} -{} 0 0 0 0 0 0 -0 0\n", i64::MAX, i64::MAX).as_bytes(),
        );
        std::fs::write(&path, &extremes).unwrap();
        let record = *Manifest::read(&path).get(Path::new("a")).unwrap();
        assert_eq!(record.source.ino, i64::MAX as u64);
        assert_eq!(record.source.ctime, -i64::MAX);
    }
}
