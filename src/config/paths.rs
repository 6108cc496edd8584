//! The paths of the app in deploy.yml: `shared:`, `app_dir:`, `keep_assets:`, `exclude:` and
//! the build's `inputs:`. Each is made relative and normalized, and refused when it would
//! resolve outside the app or take over what makes a build the build of its commit. Entries
//! of different lists that overlap are found in the pass after reading ([`overlapping`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::visit::{Checked, NonEmpty};
use super::{Refusal, Spot};

/// One `shared:` entry: a normalized relative path inside the build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SharedEntry {
    pub(crate) path: PathBuf,
    /// Written with a trailing `/`: starts as an empty directory when nothing seeds it.
    pub(crate) is_dir: bool,
}

impl fmt::Display for SharedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.path.display(),
            if self.is_dir { "/" } else { "" }
        )
    }
}

/// A path of deploy.yml with its text as written, which the refusals of the pass after
/// reading quote.
pub(super) struct Written<T> {
    pub(super) value: T,
    pub(super) text: String,
}

impl<'de> Deserialize<'de> for Written<SharedEntry> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a path relative to the app", |text| {
            let value = SharedEntry::parse(text)?;
            Ok(Written {
                value,
                text: text.to_string(),
            })
        }))
    }
}

impl SharedEntry {
    fn parse(text: &str) -> Result<SharedEntry, String> {
        let is_dir = text.ends_with('/');
        let trimmed = text.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err("a shared entry must name a path inside the app".into());
        }
        let normal = normalized("shared entry", text, trimmed)?;
        if normal.as_os_str().is_empty() {
            return Err(format!("shared entry `{text}` names the app itself"));
        }
        if let Some(why) = part_of_the_build(&normal) {
            return Err(format!("shared entry `{text}` is refused: {why}"));
        }
        Ok(SharedEntry {
            path: normal,
            is_dir,
        })
    }
}

/// `path` (`text` as written, for the error) made relative and normalized: `.` dropped;
/// absolute or `..` refused, since every path of deploy.yml but `repository` is inside the app
/// (or the commit) and must never resolve outside it. Empty for the app itself.
fn normalized(what: &str, text: &str, path: &str) -> Result<PathBuf, String> {
    let mut normal = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{what} `{text}` is absolute; it must be relative to the app"
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "{what} `{text}` contains `..`; it would resolve outside the app"
                ));
            }
        }
    }
    Ok(normal)
}

/// git itself refuses a `.git` component in any case, at any depth.
fn has_git_component(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"))
}

/// Why a path cannot be shared: it is what makes a build the build of its commit, and a
/// copy kept across deploys would make every build claim, or run, another commit's.
fn part_of_the_build(path: &Path) -> Option<&'static str> {
    if has_git_component(path) {
        return Some("`.git` belongs to git and is never part of a build");
    }
    if path.starts_with("vendor") {
        return Some(
            "vendor/ is installed by composer for each build's composer.lock; shared, \
             every build would run the packages of whichever deploy wrote it last",
        );
    }
    if path == Path::new("REVISION") {
        return Some(
            "REVISION is written into each build with its commit id; shared, every build \
             would claim the same commit",
        );
    }
    if path == Path::new("auth.json") {
        return Some(
            "auth.json holds composer's credentials; keep them in the deploy root's auth.json \
             (beside deploy.yml), which composer alone is given, never in a build",
        );
    }
    if path == Path::new("composer.json") || path == Path::new("composer.lock") {
        return Some(
            "composer.json and composer.lock must be the commit's own, or the build's vendor/ \
             would not match its code",
        );
    }
    None
}

pub(super) fn shared_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Written<SharedEntry>>, D::Error> {
    let written = Vec::<Written<SharedEntry>>::deserialize(d)?;
    let entries: Vec<&SharedEntry> = written.iter().map(|w| &w.value).collect();
    let mut seen = BTreeSet::new();
    for entry in &entries {
        if !seen.insert(&entry.path) {
            return Err(de::Error::custom(format!(
                "shared entry `{entry}` is listed twice"
            )));
        }
    }
    for a in &entries {
        for b in &entries {
            if a.path != b.path && b.path.starts_with(&a.path) {
                return Err(de::Error::custom(format!(
                    "shared entries `{a}` and `{b}` nest; list only `{a}`"
                )));
            }
        }
    }
    Ok(written)
}

/// `app_dir:` a relative path to a directory of the commit, checked like a shared entry (at
/// its line and column); `.` (or `./`) is the whole commit, as when the key is left out.
pub(super) fn app_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    d.deserialize_str(Checked(
        "a directory of the commit, relative to its root",
        app_dir_path,
    ))
}

fn app_dir_path(text: &str) -> Result<PathBuf, String> {
    let normal = normalized("app_dir", text, text)?;
    if has_git_component(&normal) {
        return Err(format!(
            "app_dir `{text}` names a `.git` directory, which git never tracks"
        ));
    }
    if text.trim().is_empty() {
        return Err(
            "app_dir must name a directory of the commit (`.` for the whole commit)".into(),
        );
    }
    Ok(normal)
}

/// One `keep_assets:` entry: a directory of the app, normalized.
struct KeepAssetsDir(PathBuf);

impl<'de> Deserialize<'de> for KeepAssetsDir {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a directory relative to the app", |text| {
            keep_assets_dir(text).map(KeepAssetsDir)
        }))
    }
}

fn keep_assets_dir(text: &str) -> Result<PathBuf, String> {
    let normal = normalized("keep_assets entry", text, text.trim_end_matches('/'))?;
    if normal.as_os_str().is_empty() {
        return Err(format!(
            "keep_assets entry `{text}` names the app itself; name the directory the front-end build writes (public/build/assets/)"
        ));
    }
    if let Some(why) = part_of_the_build(&normal) {
        return Err(format!("keep_assets entry `{text}` is refused: {why}"));
    }
    Ok(normal)
}

pub(super) fn keep_assets_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let dirs: Vec<PathBuf> = Vec::<KeepAssetsDir>::deserialize(d)?
        .into_iter()
        .map(|dir| dir.0)
        .collect();
    for (i, a) in dirs.iter().enumerate() {
        for b in &dirs[i + 1..] {
            if a == b {
                return Err(de::Error::custom(format!(
                    "keep_assets entry `{}` is listed twice",
                    a.display()
                )));
            }
            if a.starts_with(b) || b.starts_with(a) {
                return Err(de::Error::custom(format!(
                    "keep_assets entries `{}` and `{}` nest; list only the outer one",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    Ok(dirs)
}

/// A path of the app in deploy.yml (`what` names its key in errors), normalized: relative,
/// without `.` or `..`, never the app itself.
fn app_path(what: &str, text: &str) -> Result<PathBuf, String> {
    let normal = normalized(what, text, text)?;
    if normal.as_os_str().is_empty() {
        return Err(format!("{what} `{text}` must name a path inside the app"));
    }
    if has_git_component(&normal) {
        return Err(format!(
            "{what} `{text}` is refused: `.git` belongs to git and is never part of the app"
        ));
    }
    Ok(normal)
}

/// `inputs:` of the build step or of one of its commands.
pub(super) fn input_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<PathBuf>>, D::Error> {
    struct Input(PathBuf);
    impl<'de> Deserialize<'de> for Input {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Checked("a path relative to the app", |text| {
                app_path("build input", text).map(Input)
            }))
        }
    }
    let inputs = d.deserialize_seq(NonEmpty::<Input>(
        "inputs must list at least one path; leave `inputs` out to run on every deploy",
        std::marker::PhantomData,
    ))?;
    Ok(Some(inputs.into_iter().map(|i| i.0).collect()))
}

/// `exclude:`: kept in application/, never copied into a build.
pub(super) fn exclude_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Written<PathBuf>>, D::Error> {
    struct Excluded(Written<PathBuf>);
    impl<'de> Deserialize<'de> for Excluded {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Checked("a path relative to the app", |text| {
                let what = "exclude entry";
                let path = app_path(what, text.trim_end_matches('/'))?;
                if let Some(why) = part_of_the_build(&path) {
                    return Err(format!("{what} `{text}` is refused: {why}"));
                }
                Ok(Excluded(Written {
                    value: path,
                    text: text.to_string(),
                }))
            }))
        }
    }
    let entries = Vec::<Excluded>::deserialize(d)?;
    Ok(entries.into_iter().map(|e| e.0).collect())
}

/// Whether two paths name the same place, whether or not it exists yet.
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    resolve(a) == resolve(b)
}

/// The lists whose entries must not overlap one another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathList {
    Shared,
    Exclude,
    KeepAssets,
}

impl PathList {
    pub(super) const ALL: [PathList; 3] =
        [PathList::Shared, PathList::Exclude, PathList::KeepAssets];

    pub(super) fn key(self) -> &'static str {
        match self {
            PathList::Shared => "shared",
            PathList::Exclude => "exclude",
            PathList::KeepAssets => "keep_assets",
        }
    }
}

/// One entry of those lists, as the overlap check sees it.
struct Listed<'a> {
    list: PathList,
    index: usize,
    path: &'a Path,
    /// As the refusal quotes it: shared and exclude entries as written, keep_assets ones
    /// normalized.
    text: String,
}

/// The pass after reading: refuses an exclude entry listed twice, and an exclude or
/// keep_assets entry that overlaps a shared one (a shared path is a link into shared/ in
/// every build: an excluded one is kept out of builds, and files carried into a kept one
/// would be written into shared/, where users' data lives). `order` holds the three lists in
/// the order their keys stand in the file: the refusal points at the later of the two
/// entries, whichever list comes first. (Shared and keep_assets entries listed twice are
/// refused while their lists are read.)
pub(super) fn overlapping(
    order: &[PathList],
    shared: &[Written<SharedEntry>],
    exclude: &[Written<PathBuf>],
    keep_assets: &[PathBuf],
) -> Option<Refusal> {
    let mut entries = Vec::new();
    for &list in order {
        let listed = |index, path, text| Listed {
            list,
            index,
            path,
            text,
        };
        match list {
            PathList::Shared => entries.extend(
                shared
                    .iter()
                    .enumerate()
                    .map(|(i, w)| listed(i, &w.value.path, w.text.clone())),
            ),
            PathList::Exclude => entries.extend(
                exclude
                    .iter()
                    .enumerate()
                    .map(|(i, w)| listed(i, &w.value, w.text.clone())),
            ),
            PathList::KeepAssets => entries.extend(
                keep_assets
                    .iter()
                    .enumerate()
                    .map(|(i, dir)| listed(i, dir, dir.display().to_string())),
            ),
        }
    }
    for (later, entry) in entries.iter().enumerate() {
        if let Some(message) = entries[..later]
            .iter()
            .find_map(|other| overlap(entry, other))
        {
            let spot = Spot::Entry(entry.list.key(), entry.index);
            return Some(Refusal::at_path(spot, message));
        }
    }
    None
}

/// Why `entry` cannot stand after `other`, if it cannot.
fn overlap(entry: &Listed, other: &Listed) -> Option<String> {
    if entry.list == PathList::Exclude
        && other.list == PathList::Exclude
        && entry.path == other.path
    {
        return Some(format!("exclude entry `{}` is listed twice", entry.text));
    }
    let (kind, listed, shared) = match (entry.list, other.list) {
        (PathList::Shared, PathList::Shared) => return None,
        (PathList::Shared, kind) => (kind, &other.text, &entry.text),
        (kind, PathList::Shared) => (kind, &entry.text, &other.text),
        _ => return None,
    };
    if !(other.path.starts_with(entry.path) || entry.path.starts_with(other.path)) {
        return None;
    }
    Some(if kind == PathList::KeepAssets {
        format!(
            "keep_assets entry `{listed}` overlaps shared entry `{shared}`; files carried \
             from earlier builds would be written into shared/"
        )
    } else {
        format!(
            "exclude entry `{listed}` overlaps shared entry `{shared}`: a shared path is \
             linked into every build, an excluded one is kept out of builds; list it in \
             only one of them"
        )
    })
}
