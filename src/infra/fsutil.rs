//! Files replaced whole: written under a temporary name in the folder they go to, then
//! renamed over their path in one rename(2). A reader, maybe the next deploy after a kill,
//! finds the old file or the new one, never half of one; a writer killed half-way leaves a
//! temporary file, never a damaged record.
//!
//! tempfile's `NamedTempFile` makes the temporary file (a name no one else has, mode 0600,
//! removed if the writer fails before the rename) and renames it. Nothing here calls fsync,
//! as none of the writers this replaced did: before a build goes live, switch.rs flushes
//! the whole filesystem (syncfs(2)), the records written so far with it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use tempfile::TempPath;

/// A file being written under a temporary name, until [`NewFile::put`] renames it over
/// the path it is for. Dropped without that, it is removed.
pub(crate) struct NewFile {
    out: BufWriter<File>,
    tmp: TempPath,
}

impl NewFile {
    /// A new empty file in `dir` (made if missing), which must be on the filesystem of the
    /// path the file is put at.
    pub(crate) fn new_in(dir: &Path) -> io::Result<NewFile> {
        fs::create_dir_all(dir)?;
        let (file, tmp) = tempfile::NamedTempFile::new_in(dir)?.into_parts();
        Ok(NewFile {
            out: BufWriter::new(file),
            tmp,
        })
    }

    /// Renames the file, written whole, over `path`.
    pub(crate) fn put(self, path: &Path) -> Result<()> {
        let NewFile { out, tmp } = self;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|file| {
                drop(file);
                Ok(tmp.persist(path)?)
            })
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Replaces the file at `path` by what `write` writes, whole or not at all (see the module
/// comment); its folder is made if missing. The file gets `mode` if given, else 0600.
pub(crate) fn write_atomically(
    path: &Path,
    mode: Option<u32>,
    write: impl FnOnce(&mut NewFile) -> io::Result<()>,
) -> Result<()> {
    let dir = path.parent().expect("a file lies in a folder");
    let written = NewFile::new_in(dir).and_then(|mut file| {
        if let Some(mode) = mode {
            fs::set_permissions(&file.tmp, fs::Permissions::from_mode(mode))?;
        }
        write(&mut file)?;
        Ok(file)
    });
    written
        .with_context(|| format!("cannot write {}", path.display()))?
        .put(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/record");
        write_atomically(&path, None, |out| out.write_all(b"old")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        write_atomically(&path, Some(0o755), |out| out.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o755);
        assert_eq!(entries(path.parent().unwrap()), ["record"]);
    }

    #[test]
    fn a_write_that_fails_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        fs::write(&path, "old").unwrap();
        let err = write_atomically(&path, None, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("cannot write {}: disk full", path.display())
        );
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["record"]);
    }
}
