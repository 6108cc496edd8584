//! The deploy lock: one deploy at a time per deploy root.
//!
//! An exclusive flock(2) on a file that is never deleted. The kernel drops it when its holder
//! dies, however it dies, so it cannot go stale. The holder writes who it is into the file, so
//! a waiting deploy can say whom it waits for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::report::Reporter;

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    commit: Option<String>,
    since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(commit) = &self.commit {
            write!(f, " deploying {}", &commit[..commit.len().min(7)])?;
        }
        write!(f, " since {}", self.since)
    }
}

/// Held until dropped.
pub struct DeployLock {
    file: File,
    since: String,
}

impl DeployLock {
    /// Waits up to `timeout` for the lock. A waiting deploy says once whom it waits for.
    pub fn acquire(path: &Path, timeout: Duration, reporter: &Reporter) -> Result<DeployLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        if file.try_lock_exclusive().is_err() {
            reporter.line(&format!(
                "waiting for the deploy lock, held by {} (gives up after {}s)",
                describe_holder(&file),
                timeout.as_secs()
            ));
            wait_for(&file, timeout).map_err(|e| {
                e.context(format!(
                    "gave up waiting for the deploy lock after {}s; it is held by {}",
                    timeout.as_secs(),
                    describe_holder(&file)
                ))
            })?;
        }
        let mut lock = DeployLock {
            file,
            since: crate::builds::utc_now_rfc3339(),
        };
        lock.record(None)?;
        Ok(lock)
    }

    /// Says which commit the holder deploys, for anyone who has to wait.
    pub fn record(&mut self, commit: Option<&str>) -> Result<()> {
        let holder = Holder {
            pid: std::process::id(),
            commit: commit.map(str::to_string),
            since: self.since.clone(),
        };
        let text = serde_json::to_string(&holder)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Blocks in flock(2) on another thread so the wait can end on the timeout: flock itself has
/// none, and polling would add latency to every queued deploy.
fn wait_for(file: &File, timeout: Duration) -> Result<()> {
    let waiter = file.try_clone()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.lock_exclusive());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result.context("cannot take the deploy lock"),
        // The waiting thread may still get the lock later; the process exits on this error,
        // which releases it.
        Err(_) => bail!("timed out"),
    }
}

fn describe_holder(file: &File) -> String {
    let mut text = String::new();
    let mut reader = file;
    let _ = reader
        .seek(SeekFrom::Start(0))
        .and_then(|_| reader.read_to_string(&mut text));
    match serde_json::from_str::<Holder>(&text) {
        Ok(holder) => holder.to_string(),
        Err(_) => "another deploy".to_string(),
    }
}
