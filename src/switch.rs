//! The atomic flip: `latest` goes from one build to the next in a single rename(2).
//!
//! A symlink cannot be changed in place, and `rm` + `ln` leaves an instant with no `latest`
//! at all. Instead a new symlink is made under a unique name next to `latest` and renamed
//! over it: every reader sees either the old build or the new one, never nothing.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::builds::BuildName;
use crate::plan::Layout;

/// Refuses a `latest` that is not a symlink (a hand-made layout): replacing it would delete
/// what someone put there.
pub fn check_latest(layout: &Layout) -> Result<()> {
    match fs::symlink_metadata(&layout.latest) {
        Ok(meta) if !meta.file_type().is_symlink() => bail!(
            "{} is a real {}, not a symlink; nothing was changed. Move it aside \
             (`mv {} {}.before-atomdeploy`) and deploy again; point the web server at {}/public",
            layout.latest.display(),
            if meta.is_dir() { "directory" } else { "file" },
            layout.latest.display(),
            layout.latest.display(),
            layout.latest.display()
        ),
        _ => Ok(()),
    }
}

/// Points `latest` at `builds/<build>`. Returns how long the flip itself took.
pub fn switch(layout: &Layout, build: &BuildName) -> Result<Duration> {
    check_latest(layout)?;
    let target = Path::new("builds").join(build.to_string());
    let started = Instant::now();
    let temp = layout
        .root
        .join(format!(".latest.{}.{}", std::process::id(), build));
    // A leftover of a killed deploy with this very name would make symlink(2) fail.
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(&target, &temp)
        .with_context(|| format!("cannot create the symlink {}", temp.display()))?;
    if let Err(err) = fs::rename(&temp, &layout.latest) {
        let _ = fs::remove_file(&temp);
        return Err(err)
            .with_context(|| format!("cannot rename a symlink over {}", layout.latest.display()));
    }
    let took = started.elapsed();
    // Make the new `latest` survive a power cut.
    File::open(&layout.root)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot flush {}", layout.root.display()))?;
    Ok(took)
}
