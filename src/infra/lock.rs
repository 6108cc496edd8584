//! The deploy lock: one deploy at a time per deploy root.
//!
//! An exclusive flock(2) on a file that is never deleted. The kernel drops it when its holder
//! dies, however it dies, so it cannot go stale. The holder writes who it is into the file, so
//! a waiting deploy can say whom it waits for.
//!
//! The kernel frees the lock of a holder killed alone (`kill -9 PID`, the OOM killer), but not
//! what that holder had started: composer's scripts, a command's children. So each holder
//! records its run in `runs/` next to the lock file and marks every child with it (see
//! child.rs); the record goes when the holder lets go of the lock, whether it succeeded,
//! failed or panicked. A holder that finds a record left behind stops every process marked
//! with it before it does anything else. Processes left in the background by a run that did
//! finish carry a marker no record names, and are left alone.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::infra::child;
use crate::infra::report::Reporter;

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    commit: Option<String>,
    since: String,
    /// What a holder that deploys nothing does (the cleanup after a push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    doing: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(commit) = &self.commit {
            write!(f, " deploying {}", crate::infra::report::short_id(commit))?;
        }
        if let Some(doing) = &self.doing {
            write!(f, " {doing}")?;
        }
        write!(f, " since {}", self.since)
    }
}

/// Held until dropped.
pub(crate) struct DeployLock {
    file: File,
    since: String,
    /// This run's record in `runs/`, once made.
    run: Option<PathBuf>,
}

impl Drop for DeployLock {
    /// The run ended (the lock file itself is closed after this, so no next holder can take
    /// this run for a killed one).
    fn drop(&mut self) {
        child::mark_run(None);
        if let Some(run) = &self.run {
            let _ = std::fs::remove_file(run);
        }
    }
}

impl DeployLock {
    /// Waits up to `timeout` for the lock. A waiting deploy says once whom it waits for.
    pub(crate) fn acquire(
        path: &Path,
        timeout: Duration,
        reporter: &Reporter,
    ) -> Result<DeployLock> {
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
            since: crate::infra::clock::utc_now_rfc3339(),
            run: None,
        };
        lock.record(None)?;
        let runs = path.with_file_name("runs");
        stop_killed_runs(&runs, reporter)?;
        lock.run = Some(begin_run(&runs)?);
        Ok(lock)
    }

    /// Says which commit the holder deploys, for anyone who has to wait.
    pub(crate) fn record(&mut self, commit: Option<&str>) -> Result<()> {
        self.write_holder(Holder {
            pid: std::process::id(),
            commit: commit.map(str::to_string),
            since: self.since.clone(),
            doing: None,
        })
    }

    /// Says what the holder does, when it deploys nothing, for anyone who has to wait.
    pub(crate) fn record_doing(&mut self, doing: &str) -> Result<()> {
        self.write_holder(Holder {
            pid: std::process::id(),
            commit: None,
            since: self.since.clone(),
            doing: Some(doing.to_string()),
        })
    }

    fn write_holder(&mut self, holder: Holder) -> Result<()> {
        let text = serde_json::to_string(&holder)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Where a process started by [`DeployLock::hand_over`] finds the lock, and the pipe it
/// closes once it has taken the lock over.
const HANDED_LOCK_FD: RawFd = 3;
const TAKEN_OVER_FD: RawFd = 4;

impl DeployLock {
    /// Starts `cmd` holding this lock on after this process has let go of it and exited: the
    /// child inherits the lock's open file description, which keeps the flock(2) for as long
    /// as one descriptor of it is open, so no other deploy can take the lock in between. The
    /// child runs in a session of its own (an ssh session that ends, a pusher's Ctrl-C, do
    /// not reach it) and is not killed with this process; it gets no descriptor of this one
    /// but its standard ones, which are the caller's to set: git waits for every copy of the
    /// hook's stdout and stderr to close before the push returns. Returns the child's pid
    /// once it has taken the lock over (see [`DeployLock::take_over`]) or died.
    pub(crate) fn hand_over(&self, cmd: &mut Command) -> std::io::Result<u32> {
        let lock = self.file.as_raw_fd();
        let (taken_over, write) = std::io::pipe()?;
        let write_fd = write.as_raw_fd();
        // SAFETY: prctl(2), setsid(2), fcntl(2), dup2(2) and close_range(2) are
        // async-signal-safe and touch no memory of the parent. `lock` and `write_fd` are
        // open in the parent until spawn() returns, so in the forked child too.
        unsafe {
            cmd.pre_exec(move || {
                use nix::fcntl::{FcntlArg, fcntl};
                // child::command arms this; a process that must outlive the hook disarms it.
                nix::sys::prctl::set_pdeathsig(None)?;
                nix::unistd::setsid()?;
                // Above 4 first, so that neither lands on the other's number.
                let high_lock = fcntl(BorrowedFd::borrow_raw(lock), FcntlArg::F_DUPFD(10))?;
                let high_write = fcntl(BorrowedFd::borrow_raw(write_fd), FcntlArg::F_DUPFD(10))?;
                // libc's: nix's dup2 wants the target open and owned already, which 3 and 4
                // need not be.
                if libc::dup2(high_lock, HANDED_LOCK_FD) < 0
                    || libc::dup2(high_write, TAKEN_OVER_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Whatever the hook inherited without close-on-exec (git's pipes among them)
                // stays with the hook. Marked, not closed: the pipe on which spawn() learns
                // whether exec failed is among them. (Best effort: Linux 5.11 and later; nix
                // has no close_range.)
                libc::syscall(
                    libc::SYS_close_range,
                    TAKEN_OVER_FD + 1,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(write);
        // Returns at end of file: the child closed its end, or died.
        let _ = std::io::copy(&mut &taken_over, &mut std::io::sink());
        Ok(child.id())
    }

    /// The lock [`DeployLock::hand_over`] gave this process, if it was given one for `path`;
    /// otherwise the lock taken as [`DeployLock::acquire`] takes it (an operator running the
    /// command by hand). The holder's record then names this process.
    pub(crate) fn take_over(
        path: &Path,
        timeout: Duration,
        reporter: &Reporter,
    ) -> Result<DeployLock> {
        let Some(file) = handed_lock(path) else {
            return DeployLock::acquire(path, timeout, reporter);
        };
        // The open file description holds the lock already: this cannot block.
        file.try_lock_exclusive()
            .context("the deploy lock handed over is not held")?;
        // SAFETY: TAKEN_OVER_FD is the pipe hand_over gave, this process's only use of it.
        let _ = nix::unistd::close(unsafe { OwnedFd::from_raw_fd(TAKEN_OVER_FD) });
        let mut lock = DeployLock {
            file,
            since: crate::infra::clock::utc_now_rfc3339(),
            run: None,
        };
        lock.record(None)?;
        Ok(lock)
    }
}

/// The descriptor [`DeployLock::hand_over`] leaves the lock on, if it is open on `path`.
fn handed_lock(path: &Path) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let wanted = std::fs::metadata(path).ok()?;
    // SAFETY: only fstat(2) uses the borrow, which fails if nothing is open there.
    let stat = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(HANDED_LOCK_FD) }).ok()?;
    if stat.st_dev != wanted.dev() || stat.st_ino != wanted.ino() {
        return None;
    }
    // SAFETY: the descriptor is open, on the lock file, and nothing else in this process
    // owns it.
    Some(unsafe { File::from_raw_fd(HANDED_LOCK_FD) })
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

/// Records this run in `runs/` and marks the children started from now on with it. The
/// record's name is `PID-START-N`: the pid with its start time names this process whatever
/// later reuses the pid, and N tells apart the runs of one process (a push that deploys and
/// then rolls back).
fn begin_run(runs: &Path) -> Result<PathBuf> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let start = child::start_time(pid as i32).unwrap_or_default();
    let n = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    std::fs::create_dir_all(runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let record = runs.join(format!("{pid}-{start}-{n}"));
    std::fs::write(
        &record,
        format!("{}\n", crate::infra::clock::utc_now_rfc3339()),
    )
    .with_context(|| format!("cannot write {}", record.display()))?;
    child::mark_run(Some(OsString::from(&record)));
    Ok(record)
}

/// Stops what runs killed before they let go of the lock left running, and forgets them.
/// Called under the lock, before the holder touches anything. The warning names what was
/// stopped; an error (nothing deployed) names what would not die.
fn stop_killed_runs(runs: &Path, reporter: &Reporter) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let record = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-').map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start))) = (parts.next(), parts.next()) else {
            continue;
        };
        // A holder that is alive would still hold the lock; a record of one that does not
        // (it could not remove it) is not this deploy's to end.
        if child::start_time(pid as i32) == Some(start) {
            continue;
        }
        let stopped = child::stop_marked(&[OsString::from(&record)], child::STOP_LIMIT)
            .with_context(|| {
                format!("cannot stop what an interrupted deploy (pid {pid}) left running")
            })?;
        if !stopped.is_empty() {
            let list: Vec<String> = stopped.iter().map(ToString::to_string).collect();
            reporter.warn(&format!(
                "stopped {} process{} that an interrupted deploy (pid {pid}) left running: {}",
                stopped.len(),
                if stopped.len() == 1 { "" } else { "es" },
                list.join(", ")
            ));
        }
        std::fs::remove_file(&record)
            .with_context(|| format!("cannot remove {}", record.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::report::Output;
    use std::process::Command;

    fn records(runs: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(runs)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// One test, not three: the marker children get is global to the process.
    #[test]
    fn a_run_is_recorded_while_held_and_its_leftovers_are_stopped_by_the_next_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let runs = dir.path().join("runs");
        let reporter = Reporter::new(Output::Plain);
        let limit = Duration::from_secs(5);

        // Held: recorded, and its children carry `RECORD:N`.
        let lock = DeployLock::acquire(&path, limit, &reporter).unwrap();
        assert_eq!(records(&runs), lock.run.as_slice());
        let out = child::shell("echo $ATOMDEPLOY_RUN", dir.path())
            .output()
            .unwrap();
        let marker = String::from_utf8(out.stdout).unwrap();
        assert!(
            marker.starts_with(&format!("{}:", lock.run.as_ref().unwrap().display())),
            "{marker}"
        );
        drop(lock);
        assert!(records(&runs).is_empty(), "a finished run stays recorded");

        // A panic while held is a run that ended too.
        let panicked = std::panic::catch_unwind(|| {
            let _lock = DeployLock::acquire(&path, limit, &reporter).unwrap();
            panic!("a bug");
        });
        assert!(panicked.is_err());
        assert!(records(&runs).is_empty(), "a panicked run stays recorded");

        // A record whose holder is gone: its process is stopped, a finished run's is not.
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let killed_run = runs.join(format!("{pid}-1-1"));
        std::fs::write(&killed_run, "").unwrap();
        let marked = |run: &Path| {
            Command::new("sleep")
                .arg("30")
                .env(child::RUN_VAR, format!("{}:3", run.display()))
                .spawn()
                .unwrap()
        };
        let mut orphan = marked(&killed_run);
        let mut worker = marked(&runs.join("1-1-1"));
        // spawn() returns once the child is in execve(2), before the kernel has set up the
        // new program's environment: until then /proc/PID/environ reads empty and the marker
        // cannot be seen (a window that a loaded machine widens). A process a killed deploy
        // left behind is long past it.
        let markers = [
            OsString::from(&killed_run),
            OsString::from(runs.join("1-1-1")),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child::marked(&markers).len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let lock = DeployLock::acquire(&path, limit, &reporter).unwrap();
        let orphan_ended = orphan.try_wait().unwrap();
        let worker_ended = worker.try_wait().unwrap();
        let _ = worker.kill();
        let _ = worker.wait();
        let _ = orphan.kill();
        let _ = orphan.wait();
        assert!(orphan_ended.is_some(), "the killed run's process runs on");
        assert!(
            worker_ended.is_none(),
            "a finished run's process was stopped"
        );
        assert!(reporter.transcript().contains(&format!(
            "warning: stopped 1 process that an interrupted deploy (pid {pid}) left running: {} `sleep 30`",
            orphan.id()
        )));
        assert_eq!(records(&runs), lock.run.as_slice());
    }
}
