//! The atomic flip: `latest` goes from one build to the next in a single rename(2).
//!
//! A symlink cannot be changed in place, and `rm` + `ln` leaves an instant with no `latest`
//! at all. Instead a new symlink is made under a unique name next to `latest` and renamed
//! over it: every reader sees either the old build or the new one, never nothing.

use std::fmt;
use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::clock;
use crate::infra::fault;
use crate::infra::report::{self, Reporter};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Layout;
use crate::steps::{self, Summary};

/// Refuses a `latest` that is not a symlink (a hand-made layout): replacing it would delete
/// what someone put there.
pub(crate) fn check_latest(layout: &Layout) -> Result<()> {
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

/// The switch as a step of a deploy or rollback, with what it took shown to the pusher.
/// Returns when the rename happened (UTC, as in the deploy log).
pub(crate) fn switch_step(
    layout: &Layout,
    build: &BuildName,
    reporter: &Reporter,
) -> Result<String> {
    switch_step_at(layout, build, reporter).map(|at| at.at)
}

/// When a switch happened.
pub(crate) struct SwitchedAt {
    /// UTC, as in the deploy log.
    pub(crate) at: String,
    /// CLOCK_REALTIME nanoseconds taken right after rename(2): the servers of a group
    /// compare theirs to tell how far apart they switched.
    pub(crate) ns: u64,
}

/// [`switch_step`], returning the instant of the rename to the nanosecond as well.
pub(crate) fn switch_step_at(
    layout: &Layout,
    build: &BuildName,
    reporter: &Reporter,
) -> Result<SwitchedAt> {
    let step = reporter.step("switch");
    let switched = switch(layout, build).context("switch failed")?;
    if let Some(err) = &switched.after {
        reporter.warn(&format!("builds/{build} is live, but {err:#}"));
    }
    steps::close(reporter, step, Duration::ZERO, &switched);
    Ok(SwitchedAt {
        at: switched.at,
        ns: switched.ns,
    })
}

/// The build that went live, and how long the parts of the switch took.
pub(crate) struct Switched {
    pub(crate) build: BuildName,
    /// Writing the build's files to disk before it may go live.
    pub(crate) flush: Duration,
    /// The rename itself: the instant readers go from one build to the other.
    pub(crate) rename: Duration,
    /// When the rename happened.
    pub(crate) at: String,
    /// The same instant as CLOCK_REALTIME nanoseconds (see [`SwitchedAt::ns`]).
    pub(crate) ns: u64,
    /// What went wrong after the rename (the build is live all the same).
    pub(crate) after: Option<anyhow::Error>,
}

impl fmt::Display for Switched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latest -> builds/{} (flush {}, rename {})",
            self.build,
            report::seconds(self.flush),
            report::seconds(self.rename)
        )
    }
}

impl Summary for Switched {}

/// Points `latest` at `builds/<build>`.
///
/// The build's filesystem is flushed first (syncfs(2)), so that a power cut right after the
/// switch cannot leave `latest` pointing at files that never reached the disk; the root folder
/// is flushed after, so that the new `latest` itself survives one.
pub(crate) fn switch(layout: &Layout, build: &BuildName) -> Result<Switched> {
    check_latest(layout)?;
    let build_dir = layout.build_dir(build);
    let started = Instant::now();
    syncfs(&build_dir).with_context(|| format!("cannot flush {} to disk", build_dir.display()))?;
    let flush = started.elapsed();

    let target = Path::new("builds").join(build.to_string());
    let temp = layout
        .root
        .join(format!(".latest.{}.{}", std::process::id(), build));
    // A leftover of a killed deploy with this very name would make symlink(2) fail.
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(&target, &temp)
        .with_context(|| format!("cannot create the symlink {}", temp.display()))?;
    fault::point("switch-linked");
    let started = Instant::now();
    if let Err(err) = fs::rename(&temp, &layout.latest) {
        let _ = fs::remove_file(&temp);
        return Err(err)
            .with_context(|| format!("cannot rename a symlink over {}", layout.latest.display()));
    }
    let rename = started.elapsed();
    // First thing after the rename: this is the instant a group's servers compare.
    // (SystemTime reads CLOCK_REALTIME.)
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let at = clock::utc_now_rfc3339();
    fault::point("switched");
    // The build is live from here on: nothing after this point may fail the switch, or the
    // caller would treat a live build as one that never went live. These can only warn
    // (the next deploy's recovery records a missed went-live).
    let after = File::open(&layout.root)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot flush {}", layout.root.display()))
        .and_then(|()| builds::record_went_live(layout, build))
        .err();
    Ok(Switched {
        build: build.clone(),
        flush,
        rename,
        at,
        ns,
        after,
    })
}

/// Flushes the filesystem `path` is on (syncfs(2)).
pub(crate) fn syncfs(path: &Path) -> std::io::Result<()> {
    let dir = File::open(path)?;
    Ok(nix::unistd::syncfs(&dir)?)
}
