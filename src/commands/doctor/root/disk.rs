//! Free space and free inodes on the filesystem of `builds/`, against what the next build
//! takes there.
//!
//! In `snapshot: copy` mode a build copies every file: the next one needs a whole build.
//! In `snapshot: link` mode it hard-links the files the live build shares with it, so it needs
//! only its own directories and the files the deploy changed; how many change is not known
//! before the push. Below the floor ([`link_floor`]) a deploy is likely to fail; below a whole
//! build, one that changes everything (a composer.lock update that reinstalls vendor/, a
//! framework upgrade) will.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::commands::doctor::{Finding, Level};
use crate::commands::inventory::human_size;
use crate::config::SnapshotMode;
use crate::state::builds;
use crate::state::plan::Plan;

use super::shell_path;

/// What the next build takes on disk, counted from the live build (or application/ before
/// the first deploy).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Need {
    bytes: u64,
    inodes: u64,
}

/// Free space below which no deploy in link mode should be tried: its directories (never
/// shared) and inodes, plus a tenth of the build's files or 64 MiB, whichever is more. A tenth
/// is a deploy that changes a tenth of the app; 64 MiB covers a few updated packages in
/// vendor/ of a small app, and composer's own writes in application/ (on the same filesystem
/// in the usual layout). A server with less than that free is one log file away from failing
/// everything else too.
fn link_floor(build: &Need, dirs: &Need) -> Need {
    Need {
        bytes: dirs.bytes + (build.bytes / 10).max(64 << 20),
        inodes: dirs.inodes + build.inodes / 10,
    }
}

pub(crate) fn check(plan: &Plan, out: &mut Vec<Finding>) {
    let layout = &plan.layout;
    let source = match builds::live(layout) {
        Some(live) if layout.build_dir(&live).is_dir() => layout.build_dir(&live),
        _ => layout.application.clone(),
    };
    let (build, dirs) = measure(&source);
    let free = match free(&layout.builds) {
        Ok(free) => free,
        Err(err) => {
            out.push(Finding::warn(
                "disk",
                format!(
                    "cannot read the free space of {}: {err}",
                    layout.builds.display()
                ),
                format!("df -h -i {}", shell_path(&layout.builds)),
            ));
            return;
        }
    };
    let (floor, what) = match plan.config.snapshot {
        SnapshotMode::Copy => (build, "snapshot: copy copies every file"),
        SnapshotMode::Link => (
            link_floor(&build, &dirs),
            "snapshot: link needs the build's directories and the files a deploy changes",
        ),
    };
    let short_of = |need: &Need| {
        free.bytes < need.bytes || (free.inodes != u64::MAX && free.inodes < need.inodes)
    };
    let level = if short_of(&floor) {
        Level::Fail
    } else if short_of(&build) {
        Level::Warn
    } else {
        Level::Ok
    };
    let message = format!(
        "{} has {} and {} inodes free; a whole build (measured on {}) takes {} and {} inodes{}",
        layout.builds.display(),
        human_size(free.bytes),
        if free.inodes == u64::MAX {
            "unlimited".to_string()
        } else {
            free.inodes.to_string()
        },
        source.display(),
        human_size(build.bytes),
        build.inodes,
        match level {
            Level::Ok => String::new(),
            _ if plan.config.snapshot == SnapshotMode::Copy => format!(": {what}"),
            _ => format!(
                "; {what}: at least {} and {} inodes",
                human_size(floor.bytes),
                floor.inodes
            ),
        }
    );
    let fix = format!(
        "free space on that filesystem (`df -h -i {builds}`); `atomdeploy-hook builds --root {root}` \
         shows what each build takes, and a lower `keep_builds:` in deploy.yml keeps fewer",
        builds = shell_path(&layout.builds),
        root = shell_path(&layout.root)
    );
    out.push(match level {
        Level::Ok => Finding::ok("disk", message),
        Level::Warn => Finding::warn(
            "disk",
            format!("{message}: a deploy that changes most files will fail"),
            fix,
        ),
        Level::Fail => Finding::fail(
            "disk",
            format!("{message}: the next deploy is likely to fail"),
            fix,
        ),
    });
}

/// The whole tree under `dir` (each file once however many links it has) and its directories
/// alone.
fn measure(dir: &Path) -> (Need, Need) {
    let mut all = Need::default();
    let mut dirs = Need::default();
    let mut seen = HashSet::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        let Ok(meta) = entry.metadata() else { continue };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let bytes = meta.blocks() * 512;
        all.bytes += bytes;
        all.inodes += 1;
        if meta.is_dir() {
            dirs.bytes += bytes;
            dirs.inodes += 1;
        }
    }
    (all, dirs)
}

/// What the deploy user may still use on the filesystem of `path` (`u64::MAX` inodes where
/// the filesystem has no fixed number, as btrfs).
fn free(path: &Path) -> std::io::Result<Need> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    Ok(Need {
        bytes: stat.blocks_available() * stat.fragment_size(),
        inodes: if stat.files() == 0 {
            u64::MAX
        } else {
            stat.files_available()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_floor_is_the_directories_and_a_tenth_or_64_mib() {
        let dirs = Need {
            bytes: 4096,
            inodes: 1,
        };
        let small = Need {
            bytes: 1 << 20,
            inodes: 100,
        };
        assert_eq!(
            link_floor(&small, &dirs),
            Need {
                bytes: 4096 + (64 << 20),
                inodes: 11
            }
        );
        let big = Need {
            bytes: 10 << 30,
            inodes: 1000,
        };
        assert_eq!(link_floor(&big, &dirs).bytes, 4096 + (1 << 30));
    }
}
