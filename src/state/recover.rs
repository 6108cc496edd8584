//! Cleaning up after a deploy that was killed (power cut, OOM, kill -9): run at the start of
//! the next deploy or rollback, under the lock, so nothing else is working on these files.

use std::fs;

use anyhow::Result;

use crate::infra::report::Reporter;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Layout;

pub(crate) fn recover(layout: &Layout, reporter: &Reporter) -> Result<()> {
    recover_sparing(layout, None, reporter)
}

/// [`recover`], leaving `spare` alone: a group's prepared build, which never went live yet
/// and is about to.
pub(crate) fn recover_sparing(
    layout: &Layout,
    spare: Option<&BuildName>,
    reporter: &Reporter,
) -> Result<()> {
    // Builds in the making and builds being removed.
    for dir in [layout.tmp(), layout.trash()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let removed = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => builds::delete_tree(&path),
                _ => fs::remove_file(&path).map_err(Into::into),
            };
            // Nothing reads these: one that cannot go yet (the web server's files in an old
            // build) is a warning, and tried again next time, never a failed deploy.
            if let Err(err) = removed {
                reporter.warn(&format!("{err:#}"));
            }
        }
    }
    // Symlinks made for a switch that did not happen.
    for entry in fs::read_dir(&layout.root)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".latest.") {
            fs::remove_file(entry.path())?;
        }
    }

    // A deploy killed right after its switch did not get to record it.
    let live = builds::live(layout);
    if let Some(live) = &live {
        builds::record_went_live(layout, live)?;
    }
    // A build that never went live was left between its snapshot and its switch.
    for build in builds::list(layout)? {
        if Some(&build) != live.as_ref()
            && Some(&build) != spare
            && builds::read_meta(layout, &build).is_some_and(|m| !m.went_live)
        {
            builds::remove_build(layout, &build)?;
            reporter.warn(&format!(
                "removed builds/{build}, left by an interrupted deploy; it was never live"
            ));
        }
    }

    // Records and outputs whose build is gone.
    let orphaned = |name: &str, suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(BuildName::parse)
            .is_some_and(|b| !layout.build_dir(&b).exists())
    };
    for (dir, suffix) in [
        (layout.meta_dir(), ".json"),
        (layout.meta_dir(), ".files"),
        (layout.meta_dir(), ".carried"),
        (layout.output_dir(), ".log"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            if orphaned(&entry.file_name().to_string_lossy(), suffix) {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}
