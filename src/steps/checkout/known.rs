//! What the last complete checkout of a working copy left, so that the next one need not
//! look at all of it again.
//!
//! libgit2's forced checkout compares every file of the working copy with the index and reads
//! every directory for files added by hand (to remove them): 40 ms of a 14,000-file content
//! push that writes 10 files. A directory's list of names changes only with its mtime and
//! ctime (adding, removing or renaming an entry sets both, and nobody can set a ctime back),
//! so once a checkout is complete its tracked directories' stat is kept here. The next
//! checkout reads only the directories whose stat moved since, and hands libgit2 the paths it
//! writes and the entries of those directories rather than the whole tree; what libgit2
//! decides for each path is what it decided before. The record also names the tree that was
//! written, every path of it checked: the next tree's check reads only the subtrees that
//! differ from it.
//!
//! The record is trusted only as far as it can be. It names the index file written with it
//! (libgit2 writes a new file each time) and the ignore rules in force (with other rules, a
//! file that was ignored may be neither tracked nor ignored, and must then go). A directory
//! whose times are within a second of the record's own may still change without its stat
//! showing it (file times are coarser than the clock): it is read next time whatever its stat
//! says. A checkout that ends early leaves its note that it is in progress, and the next one
//! looks at everything.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use git2::{Index, Oid, Repository};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::infra::fsutil;
use crate::infra::users;
use crate::state::builds;

use super::{GITLINK_MODE, directories_of};

/// With the version that wrote it: another version may check trees for more than this one.
const HEADER: &str = concat!("atomdeploy checkout record 1 ", env!("CARGO_PKG_VERSION"));

/// How close to the record's own time a directory's times make it racy.
const RACY: Duration = Duration::from_secs(1);

/// The record kept beside the index at `index_file`.
pub(super) fn path(index_file: &Path) -> PathBuf {
    let mut path = index_file.as_os_str().to_owned();
    path.push(".known");
    PathBuf::from(path)
}

/// A directory as `lstat` saw it, or racy: to be read whatever its stat.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The last complete checkout's record.
pub(super) struct Known {
    /// The tree written; every path of it was checked.
    pub(super) tree: Oid,
    /// The index written with the record: (inode, size, mtime).
    index: (u64, u64, (i64, i64)),
    ignores: u64,
    /// Every directory of the index, the working copy's top as "", and those the checkout
    /// kept that hold only ignored files (None: racy).
    dirs: Vec<(Vec<u8>, Option<Stamp>)>,
}

/// The record kept for `index_file`, if there is a readable one.
pub(super) fn read(index_file: &Path) -> Option<Known> {
    let bytes = std::fs::read(path(index_file)).ok()?;
    let split = bytes.windows(2).position(|w| w == b"\n\n")?;
    let header = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut lines = header.lines();
    (lines.next()? == HEADER).then_some(())?;
    let tree = Oid::from_str(lines.next()?.strip_prefix("tree ")?).ok()?;
    let index = match numbers(lines.next()?.strip_prefix("index ")?)?[..] {
        [ino, size, s, ns] => (ino as u64, size as u64, (s, ns)),
        _ => return None,
    };
    let ignores = lines.next()?.strip_prefix("ignores ")?.parse().ok()?;
    let mut dirs = Vec::new();
    for record in bytes[split + 2..].split(|b| *b == 0) {
        if record.is_empty() {
            continue;
        }
        let (fields, dir) = record.split_at(record.iter().position(|b| *b == b'\t')?);
        let stamp = match numbers(std::str::from_utf8(fields).ok()?)?[..] {
            [0] => None,
            [1, ino, ms, mns, cs, cns] => Some(Stamp {
                ino: ino as u64,
                mtime: (ms, mns),
                ctime: (cs, cns),
            }),
            _ => return None,
        };
        dirs.push((dir[1..].to_vec(), stamp));
    }
    Some(Known {
        tree,
        index,
        ignores,
        dirs,
    })
}

impl Known {
    /// Whether the record still describes `index_file` under the ignore rules `ignores`.
    pub(super) fn holds(&self, index_file: &Path, ignores: u64) -> bool {
        self.ignores == ignores && index_identity(index_file).is_some_and(|id| id == self.index)
    }

    /// What libgit2 must look at in `dir` beyond the paths the checkout writes: the entries of
    /// every directory whose stat moved since the record (or is racy), but the tracked
    /// directories among them, which answer for themselves. None when the top itself is not a
    /// directory any more: everything, then.
    pub(super) fn to_look_at(&self, dir: &Path) -> Option<Vec<PathBuf>> {
        let tracked: HashSet<&[u8]> = self.dirs.iter().map(|(d, _)| d.as_slice()).collect();
        let moved: Vec<(&[u8], Option<std::fs::Metadata>)> = self
            .dirs
            .par_iter()
            .filter_map(|(relative, stamp)| {
                let meta = std::fs::symlink_metadata(join(dir, relative))
                    .ok()
                    .filter(|m| m.is_dir());
                let same = matches!((&meta, stamp), (Some(m), Some(s)) if Stamp::of(m) == *s);
                (!same).then_some((relative.as_slice(), meta))
            })
            .collect();
        let listed: Vec<Option<Vec<PathBuf>>> = moved
            .par_iter()
            .map(|(relative, meta)| {
                let here = Path::new(OsStr::from_bytes(relative));
                // Gone, or something else in its place: libgit2 decides for all of it.
                if meta.is_none() {
                    return (!relative.is_empty()).then(|| vec![here.to_path_buf()]);
                }
                let Ok(entries) = std::fs::read_dir(join(dir, relative)) else {
                    return Some(vec![here.to_path_buf()]);
                };
                let mut paths = Vec::new();
                for entry in entries {
                    let Ok(entry) = entry else {
                        return Some(vec![here.to_path_buf()]);
                    };
                    let path = here.join(entry.file_name());
                    if !tracked.contains(path.as_os_str().as_bytes()) {
                        paths.push(path);
                    }
                }
                Some(paths)
            })
            .collect();
        let mut paths = Vec::new();
        for list in listed {
            paths.extend(list?);
        }
        Some(paths)
    }
}

/// Keeps the record of a complete checkout of `tree` into `dir`, whose index was just
/// written to `index_file`. A working copy with a submodule gets none (its directory's
/// files are the submodule's checkout's, not this index's): every checkout looks at all.
/// `previous` is the record this checkout trusted, when it looked only where it said.
pub(super) fn write(
    repo: &Repository,
    index_file: &Path,
    tree: Oid,
    index: &Index,
    dir: &Path,
    ignores: u64,
    previous: Option<&Known>,
) -> Result<()> {
    let record = path(index_file);
    let identity = index_identity(index_file);
    let gitlinks = index.iter().any(|e| e.mode == GITLINK_MODE as u32);
    let Some((ino, size, (s, ns))) = identity.filter(|_| !gitlinks) else {
        return forget(index_file);
    };
    let entries: Vec<git2::IndexEntry> = index.iter().collect();
    let mut tracked = directories_of(&entries);
    tracked.insert(&[]);
    // Taken before any directory is looked at: a change after it has later times.
    let now = SystemTime::now();
    let stamp = |relative: &[u8]| {
        std::fs::symlink_metadata(join(dir, relative))
            .ok()
            .filter(|m| m.is_dir() && !racy(m, now))
            .map(|m| Stamp::of(&m))
    };
    let mut stamps: Vec<(Vec<u8>, Option<Stamp>)> = tracked
        .par_iter()
        .map(|relative| (relative.to_vec(), stamp(relative)))
        .collect();
    let kept = kept_directories(repo, dir, &tracked, &stamps, previous);
    stamps.extend(kept.into_iter().map(|relative| {
        let stamp = stamp(&relative);
        (relative, stamp)
    }));
    fsutil::write_atomically(&record, None, |out| {
        writeln!(out, "{HEADER}\ntree {tree}\nindex {ino} {size} {s} {ns}")?;
        writeln!(out, "ignores {ignores}\n")?;
        for (relative, stamp) in &stamps {
            match stamp {
                None => write!(out, "0\t")?,
                Some(Stamp {
                    ino,
                    mtime: (ms, mns),
                    ctime: (cs, cns),
                }) => write!(out, "1 {ino} {ms} {mns} {cs} {cns}\t")?,
            }
            out.write_all(relative)?;
            out.write_all(b"\0")?;
        }
        Ok(())
    })
}

/// The directories git does not track that the checkout left in `dir` and that no rule
/// ignores as a whole: those holding only ignored files (logs the app writes). A file added
/// there changes only their stat, not a tracked directory's, so the record keeps theirs too.
/// Found by reading the tracked directories that changed since `previous` (all of them
/// without one) and what is below the directories found; those `previous` kept and still
/// there are kept again, read anew when their stat moved.
fn kept_directories(
    repo: &Repository,
    dir: &Path,
    tracked: &HashSet<&[u8]>,
    stamps: &[(Vec<u8>, Option<Stamp>)],
    previous: Option<&Known>,
) -> Vec<Vec<u8>> {
    let before: HashMap<&[u8], &Option<Stamp>> = previous
        .map(|p| p.dirs.iter().map(|(d, s)| (d.as_slice(), s)).collect())
        .unwrap_or_default();
    let unchanged = |relative: &[u8], now: &Option<Stamp>| {
        now.is_some() && before.get(relative).is_some_and(|was| *was == now)
    };
    let mut to_read: Vec<Vec<u8>> = stamps
        .iter()
        .filter(|(relative, now)| !unchanged(relative, now))
        .map(|(relative, _)| relative.clone())
        .collect();
    let mut kept = HashSet::new();
    for (relative, was) in previous.map_or(&[][..], |p| &p.dirs[..]) {
        if tracked.contains(relative.as_slice()) {
            continue;
        }
        let meta = std::fs::symlink_metadata(join(dir, relative)).ok();
        let Some(meta) = meta.filter(|m| m.is_dir()) else {
            continue;
        };
        kept.insert(relative.clone());
        if was.as_ref() != Some(&Stamp::of(&meta)) {
            to_read.push(relative.clone());
        }
    }
    while let Some(relative) = to_read.pop() {
        let Ok(entries) = std::fs::read_dir(join(dir, &relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut path = relative.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.file_name().as_bytes());
            let ignored = || repo.is_path_ignored(Path::new(OsStr::from_bytes(&path)));
            if tracked.contains(path.as_slice())
                || kept.contains(&path)
                || ignored().unwrap_or(true)
            {
                continue;
            }
            kept.insert(path.clone());
            to_read.push(path);
        }
    }
    kept.into_iter().collect()
}

/// Drops the record: the next checkout looks at everything.
pub(super) fn forget(index_file: &Path) -> Result<()> {
    builds::remove_file_if_present(&path(index_file))
}

/// The ignore rules a checkout of `repo` runs under: `added`, the rules the checkout adds,
/// and the files git reads them from beside the working copy's own `.gitignore` files (which
/// are tracked, and checked by the caller, or files added by hand, which it looks at).
pub(super) fn ignores(repo: &Repository, added: &str) -> u64 {
    // XXH3, not std's hasher: what is stored must hash alike after a Rust upgrade.
    let mut hasher = Xxh3::new();
    added.hash(&mut hasher);
    let config = repo.config().ok();
    let excludes = config
        .as_ref()
        .and_then(|c| c.get_path("core.excludesFile").ok())
        .or_else(|| {
            users::xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("git").join("ignore"))
        });
    for file in [Some(repo.path().join("info/exclude")), excludes] {
        file.hash(&mut hasher);
        file.and_then(|f| std::fs::read(f).ok()).hash(&mut hasher);
    }
    hasher.finish()
}

fn numbers(line: &str) -> Option<Vec<i64>> {
    line.split(' ').map(|n| n.parse().ok()).collect()
}

fn index_identity(index_file: &Path) -> Option<(u64, u64, (i64, i64))> {
    let meta = std::fs::symlink_metadata(index_file).ok()?;
    Some((meta.ino(), meta.len(), (meta.mtime(), meta.mtime_nsec())))
}

fn racy(meta: &std::fs::Metadata, now: SystemTime) -> bool {
    let latest = (meta.mtime(), meta.mtime_nsec()).max((meta.ctime(), meta.ctime_nsec()));
    let latest = UNIX_EPOCH + Duration::new(latest.0.max(0) as u64, latest.1 as u32);
    latest + RACY > now
}

fn join(dir: &Path, relative: &[u8]) -> PathBuf {
    match relative.is_empty() {
        true => dir.to_path_buf(),
        false => dir.join(OsStr::from_bytes(relative)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::app_tree;

    /// An index file of `paths` (blobs that need not exist) in `state`, as a checkout leaves it.
    fn index_of(state: &Path, paths: &[&str]) -> (PathBuf, Index) {
        let file = state.join("application.index");
        let mut index = Index::open(&file).unwrap();
        for path in paths {
            let entry =
                app_tree::tests::entry(path, 0o100644, Oid::from_str(&"1".repeat(40)).unwrap());
            index.add(&entry).unwrap();
        }
        index.write().unwrap();
        (file, index)
    }

    /// A bare repository with `app` as its working directory, as the checkout has it.
    fn repo_for(state: &Path, app: &Path) -> Repository {
        let repo = Repository::init_bare(state.join("repo.git")).unwrap();
        repo.set_workdir(app, false).unwrap();
        repo
    }

    fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
        paths.sort();
        paths
    }

    #[test]
    fn a_record_holds_for_its_index_and_rules_only() {
        let state = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(app.path().join("a/b")).unwrap();
        let (file, index) = index_of(state.path(), &["a/b/x.php", "a/y.php", "z.php"]);
        let tree = Oid::from_str(&"2".repeat(40)).unwrap();
        let repo = repo_for(state.path(), app.path());
        write(&repo, &file, tree, &index, app.path(), 7, None).unwrap();
        let known = read(&file).expect("a record");
        assert_eq!(known.tree, tree);
        assert!(known.holds(&file, 7));
        assert!(!known.holds(&file, 8), "other ignore rules");
        // Every directory was made just now: racy, all of them read whatever their stat.
        assert!(known.dirs.iter().all(|(_, stamp)| stamp.is_none()));
        assert_eq!(known.dirs.len(), 3);
        std::fs::write(app.path().join("a/b/x.php"), "").unwrap();
        std::fs::write(app.path().join("z.php"), "").unwrap();
        assert_eq!(
            sorted(known.to_look_at(app.path()).unwrap()),
            [Path::new("a/b/x.php"), Path::new("z.php")].map(Path::to_path_buf),
            "the entries of every racy directory, but its tracked directories"
        );
        // A new index file (libgit2 writes one each time): the record is not for it.
        let (file, _) = index_of(state.path(), &["z.php"]);
        assert!(!known.holds(&file, 7));
    }

    #[test]
    fn only_directories_whose_stat_moved_are_read() {
        let app = tempfile::tempdir().unwrap();
        for dir in ["a/b", "c"] {
            std::fs::create_dir_all(app.path().join(dir)).unwrap();
        }
        let stamp = |dir: &str| Some(Stamp::of(&std::fs::metadata(app.path().join(dir)).unwrap()));
        let known = Known {
            tree: Oid::ZERO_SHA1,
            index: (0, 0, (0, 0)),
            ignores: 0,
            dirs: ["", "a", "a/b", "c"]
                .map(|d| (d.as_bytes().to_vec(), stamp(d)))
                .into(),
        };
        assert_eq!(known.to_look_at(app.path()), Some(Vec::new()));
        std::fs::write(app.path().join("a/b/added.php"), "").unwrap();
        std::fs::create_dir(app.path().join("c/new")).unwrap();
        assert_eq!(
            sorted(known.to_look_at(app.path()).unwrap()),
            [Path::new("a/b/added.php"), Path::new("c/new")].map(Path::to_path_buf)
        );
        // A tracked directory gone, or a symlink in its place: the path itself, for libgit2.
        std::fs::remove_dir_all(app.path().join("c")).unwrap();
        std::os::unix::fs::symlink("/", app.path().join("c")).unwrap();
        assert!(
            known
                .to_look_at(app.path())
                .unwrap()
                .contains(&PathBuf::from("c"))
        );
        // The top itself gone: everything.
        std::fs::remove_dir_all(app.path()).unwrap();
        assert_eq!(known.to_look_at(app.path()), None);
    }

    #[test]
    fn a_damaged_or_foreign_record_is_no_record() {
        let state = tempfile::tempdir().unwrap();
        let (file, index) = index_of(state.path(), &["a/x.php"]);
        let app = tempfile::tempdir().unwrap();
        std::fs::create_dir(app.path().join("a")).unwrap();
        let repo = repo_for(state.path(), app.path());
        write(&repo, &file, Oid::ZERO_SHA1, &index, app.path(), 1, None).unwrap();
        let good = std::fs::read(path(&file)).unwrap();
        let split = good.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let mut damaged: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"atomdeploy checkout record 1 0.0.0-other\n".to_vec(),
            good[..split - 1].to_vec(),
            [&good[..split], b"1 2 3\tno-number".as_slice(), b"\0"].concat(),
            [&good[..split], b"no tab at all\0".as_slice()].concat(),
            good.iter()
                .map(|b| if *b == b'\t' { b' ' } else { *b })
                .collect(),
        ];
        // Another version's record: it may check trees for less.
        let first_line = good.iter().position(|b| *b == b'\n').unwrap();
        damaged.push(
            [
                b"atomdeploy checkout record 1 9.9.9".as_slice(),
                &good[first_line..],
            ]
            .concat(),
        );
        for bytes in damaged {
            std::fs::write(path(&file), &bytes).unwrap();
            assert!(read(&file).is_none(), "{}", String::from_utf8_lossy(&bytes));
        }
        std::fs::write(path(&file), &good).unwrap();
        assert!(read(&file).is_some());
    }
}
