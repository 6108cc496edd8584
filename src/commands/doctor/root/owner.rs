//! `owner`: what a deploy writes must be writable by the root's owner, the user deploys run
//! as. A command once run as root (`sudo atomdeploy-hook replay` before it switched users, a
//! `sudo composer install` in application/) leaves files that fail every later push.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::commands::doctor::Finding;
use crate::infra::owner::owner_of;
use crate::infra::users::{by_name, groups_of, user_name, user_or_uid};
use crate::state::builds;
use crate::state::plan::Layout;

use super::shell_path;

/// How many entries one tree is walked for at most: doctor must answer on a root with a huge
/// application/ too.
const WALK_LIMIT: usize = 200_000;
/// How many of the paths found are named.
const NAMED: usize = 3;

/// Who may write: the owner's uid and groups.
struct Writer {
    uid: u32,
    groups: Vec<u32>,
}

impl Writer {
    /// Whether this user may change `meta`'s entry: write (and, for a directory, search)
    /// permission, from the mode bits (root's own writes need none).
    fn may_write(&self, meta: &std::fs::Metadata) -> bool {
        if self.uid == 0 {
            return true;
        }
        let need = if meta.is_dir() { 0o3 } else { 0o2 };
        let bits = if meta.uid() == self.uid {
            meta.mode() >> 6
        } else if self.groups.contains(&meta.gid()) {
            meta.mode() >> 3
        } else {
            meta.mode()
        };
        bits & need == need
    }
}

/// The paths found, in the order walked.
#[derive(Default)]
struct Found {
    paths: Vec<(PathBuf, u32)>,
    unreadable: Vec<PathBuf>,
    cut_short: bool,
}

pub(crate) fn check(layout: &Layout, out: &mut Vec<Finding>) {
    let Some(uid) = owner_of(&layout.root) else {
        return;
    };
    // A uid without a name is what chown takes then, too.
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let groups = by_name(&name)
        .and_then(|(_, gid)| groups_of(&name, gid))
        .unwrap_or_default();
    let writer = Writer { uid, groups };
    report(layout, &name, &found(layout, &writer), out);
}

/// Every place a deploy writes that `writer` cannot.
fn found(layout: &Layout, writer: &Writer) -> Found {
    let mut found = Found::default();
    let all = |_: &Path| true;
    // `latest` is replaced by a rename in the root itself; builds are added to and removed
    // from builds/.
    walk(&layout.root, Some(0), all, writer, &mut found);
    walk(&layout.builds, Some(0), all, writer, &mut found);
    // A build's files are read-only on purpose; cleanup needs only its directories.
    if let Some(live) = builds::live(layout) {
        let none = |_: &Path| false;
        walk(&layout.build_dir(&live), None, none, writer, &mut found);
    }
    walk(&layout.application, None, all, writer, &mut found);
    // The submodule caches are bare repositories, whose objects git makes read-only.
    let modules = layout.state.join("modules");
    let records = |path: &Path| !path.starts_with(&modules);
    walk(&layout.state, None, records, writer, &mut found);
    found
}

/// Adds what `writer` cannot change under `top` (with `depth` 0, `top` alone): directories,
/// and the files for which `files` is true. `.atomdeploy/trash` holds what cleanup could not
/// remove, which each deploy reports itself.
fn walk(
    top: &Path,
    depth: Option<usize>,
    files: impl Fn(&Path) -> bool,
    writer: &Writer,
    found: &mut Found,
) {
    let entries = walkdir::WalkDir::new(top)
        .max_depth(depth.unwrap_or(usize::MAX))
        .sort_by_file_name();
    let mut it = entries.into_iter();
    let mut seen = 0;
    while let Some(entry) = it.next() {
        seen += 1;
        if seen > WALK_LIMIT {
            found.cut_short = true;
            return;
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(err)
                if err
                    .io_error()
                    .is_some_and(|e| e.kind() == ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(err) => {
                let path = err.path().unwrap_or(top);
                found.unreadable.push(path.to_path_buf());
                continue;
            }
        };
        let path = entry.path();
        if path.ends_with(".atomdeploy/trash") {
            it.skip_current_dir();
            continue;
        }
        let kind = entry.file_type();
        if kind.is_symlink() || (!kind.is_dir() && !files(path)) {
            continue;
        }
        match entry.metadata() {
            Ok(meta) if !writer.may_write(&meta) => {
                found.paths.push((path.to_path_buf(), meta.uid()))
            }
            Ok(_) => {}
            Err(_) => found.unreadable.push(path.to_path_buf()),
        }
    }
}

fn report(layout: &Layout, owner: &str, found: &Found, out: &mut Vec<Finding>) {
    if found.paths.is_empty() && found.unreadable.is_empty() {
        out.push(Finding::ok(
            "owner",
            format!(
                "{owner} (the owner of {}) can write everywhere a deploy writes",
                layout.root.display()
            ),
        ));
        return;
    }
    let named: Vec<String> = found
        .paths
        .iter()
        .take(NAMED)
        .map(|(path, uid)| format!("{} ({})", shown(layout, path), user_or_uid(*uid)))
        .chain(
            found
                .unreadable
                .iter()
                .take(NAMED)
                .map(|p| format!("{} (unreadable)", shown(layout, p))),
        )
        .collect();
    let count = found.paths.len() + found.unreadable.len();
    out.push(Finding::fail(
        "owner",
        format!(
            "{owner}, the owner of {} (whom deploys run as), cannot change {count}{} path(s) \
             where a deploy writes: {}{}; the next deploy may fail on them",
            layout.root.display(),
            if found.cut_short { "+" } else { "" },
            named.join(", "),
            if count > named.len() { ", …" } else { "" }
        ),
        fix(layout, owner, found),
    ));
}

/// `chown -R owner: …` of the topmost paths found (`chown` alone for the root and builds/,
/// which hold shared/ and the other builds), and `chmod u+w` for those the owner owns already
/// but left without write permission.
fn fix(layout: &Layout, owner: &str, found: &Found) -> String {
    let owner_uid = by_name(owner).map_or(owner.parse().ok(), |(uid, _)| Some(uid));
    let (mut alone, mut tops, mut modes) = (Vec::new(), Vec::<&Path>::new(), Vec::new());
    let all = found
        .paths
        .iter()
        .map(|(p, uid)| (p.as_path(), Some(*uid)))
        .chain(found.unreadable.iter().map(|p| (p.as_path(), None)));
    for (path, uid) in all {
        if uid.is_some() && uid == owner_uid {
            modes.push(shell_path(path));
        } else if path == layout.root || path == layout.builds {
            alone.push(shell_path(path));
        } else if !tops.iter().any(|t| path.starts_with(t)) {
            tops.push(path);
        }
    }
    let tops: Vec<String> = tops.iter().map(|p| shell_path(p)).collect();
    [("chown", alone), ("chown -R", tops)]
        .into_iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(chown, paths)| format!("{chown} {owner}: {}", paths.join(" ")))
        .chain((!modes.is_empty()).then(|| format!("chmod u+w {}", modes.join(" "))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A path relative to the root, as the message names it.
fn shown(layout: &Layout, path: &Path) -> String {
    match path.strip_prefix(&layout.root) {
        Ok(rel) if rel.as_os_str().is_empty() => layout.root.display().to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
