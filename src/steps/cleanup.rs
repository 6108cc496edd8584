//! The last step of a deploy that went live: old and bad builds go, never the live one.
//!
//! In two halves, so that the push does not wait for the disk: the step moves each build out
//! of `builds/` with one rename (what `builds`, rollbacks and the next deploy see is final
//! then), and once the deploy is logged, a process of its own deletes their files from the
//! trash, holding the deploy lock the push hands it (see [`after_the_push`]). The next deploy
//! waits for it; one killed midway leaves trees in the trash, which the next deploy deletes
//! as it deletes whatever a killed run left there.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::infra::child;
use crate::infra::fault;
use crate::infra::lock::DeployLock;
use crate::infra::report::{Output, Reporter};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Layout;
use crate::steps::Summary;

/// How many builds went, and the setting that decided it.
pub(crate) struct Cleaned {
    pub(crate) removed: usize,
    pub(crate) keep: usize,
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} old builds removed (keep_builds: {})",
            self.removed, self.keep
        )?;
        if self.removed > 0 {
            write!(f, "; their files are deleted in the background")?;
        }
        Ok(())
    }
}

impl Summary for Cleaned {}

/// Moves every bad build and the oldest good ones beyond `keep` out of `builds/` (see
/// [`builds::cleanup_sparing`]), never `spare`; their files wait in the trash for
/// [`after_the_push`].
pub(crate) fn cleanup(layout: &Layout, keep: usize, spare: Option<&BuildName>) -> Result<Cleaned> {
    let removed = builds::cleanup_sparing(layout, keep, spare)?.len();
    Ok(Cleaned { removed, keep })
}

/// The hidden command that deletes the trash in the background.
pub(crate) const EMPTY_TRASH: &str = "empty-trash";

/// Lets go of the deploy lock: at once when the trash is empty, else by handing it to a
/// process that deletes what the trash holds and then exits (`atomdeploy-hook empty-trash`),
/// its output appended to the deploy's (`output`, a file in the output folder). Called once
/// the deploy's log and output are written, when nothing but the lock is left to let go of.
pub(crate) fn after_the_push(
    layout: &Layout,
    lock: DeployLock,
    output: Option<&str>,
    reporter: &Reporter,
) {
    let trash_is_empty = std::fs::read_dir(layout.trash())
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(true);
    if trash_is_empty {
        return;
    }
    if let Err(err) = start_emptying(layout, &lock, output) {
        // Slower, but the trash is not left to grow until the next deploy.
        reporter.warn(&format!(
            "could not delete the old builds' files in the background ({err:#}); deleting them now"
        ));
        let emptied = builds::empty_trash(layout);
        for problem in emptied.problems {
            reporter.warn(&problem);
        }
    }
}

fn start_emptying(layout: &Layout, lock: &DeployLock, output: Option<&str>) -> Result<()> {
    let out = match output {
        Some(name) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.output_dir().join(name))?,
        None => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let mut cmd = child::command(std::env::current_exe()?, &layout.root);
    cmd.arg(EMPTY_TRASH)
        .arg("--root")
        .arg(&layout.root)
        .stdout(out.try_clone()?)
        .stderr(out);
    lock.hand_over(&mut cmd)?;
    Ok(())
}

/// `atomdeploy-hook empty-trash`: under the lock that the push handed over (or one taken
/// here), deletes what the trash holds, and says so, with whatever could not go, in the
/// deploy's output (`atomdeploy-hook log`). What stays in the trash, the next deploy tries
/// again and warns of.
pub(crate) fn empty_trash(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    let reporter = Reporter::new(Output::Plain);
    // Only when the command is run by hand with a deploy running: the lock's usual wait.
    let wait = Duration::from_secs(600);
    let mut lock = DeployLock::take_over(&layout.lock_file(), wait, &reporter)?;
    lock.record_doing("deleting old builds")?;
    fault::point("cleanup");
    fault::hold("cleanup");
    let started = Instant::now();
    let emptied = builds::empty_trash(&layout);
    reporter.line(&format!(
        "cleanup in the background: {} old build{} deleted from the trash in {:.2}s",
        emptied.deleted,
        if emptied.deleted == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    ));
    for problem in &emptied.problems {
        reporter.warn(problem);
    }
    drop(lock);
    Ok(())
}
