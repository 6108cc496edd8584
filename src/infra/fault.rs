//! Fault injection for the crash tests, compiled into debug builds only: at a named point,
//! the process kills its whole process group with SIGKILL, as a dropped SSH session or an
//! OOM kill would, and nothing gets to clean up.
//!
//! `ATOMDEPLOY_FAULT=NAME` kills the first time `NAME` is reached; `NAME@N` the N-th time
//! (points inside loops, such as one per copied file). A trailing `!pid` (`NAME@N!pid`) kills
//! the hook's own process alone, as the OOM killer or `kill -9 PID` would, leaving whatever
//! it started running.

#[cfg(debug_assertions)]
pub(crate) fn point(name: &str) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ARMED: AtomicBool = AtomicBool::new(true);
    static HITS: Mutex<u64> = Mutex::new(0);
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Ok(wanted) = std::env::var("ATOMDEPLOY_FAULT") else {
        ARMED.store(false, Ordering::Relaxed);
        return;
    };
    let (wanted, alone) = match wanted.strip_suffix("!pid") {
        Some(wanted) => (wanted.to_string(), true),
        None => (wanted, false),
    };
    let (point, nth) = match wanted.split_once('@') {
        Some((point, n)) => (point.to_string(), n.parse().unwrap_or(1)),
        None => (wanted, 1),
    };
    if point != name {
        return;
    }
    let mut hits = HITS.lock().unwrap();
    *hits += 1;
    if *hits == nth {
        // Pid 0: the whole process group.
        let target = if alone { std::process::id() as i32 } else { 0 };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(target),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn point(_: &str) {}

/// Holds the process at a named point until a test lets it go, compiled into debug builds
/// only: how a test makes a step slow without guessing how slow. `ATOMDEPLOY_HOLD=NAME:DIR`
/// writes this process's pid into `DIR/NAME.held` when `NAME` is reached, then waits until
/// `DIR/NAME.open` exists.
#[cfg(debug_assertions)]
pub(crate) fn hold(name: &str) {
    let Some(dir) = std::env::var("ATOMDEPLOY_HOLD")
        .ok()
        .and_then(|v| Some(v.strip_prefix(name)?.strip_prefix(':')?.to_string()))
    else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    // Whole or not at all: the test reads the pid as soon as the file is there.
    let held = dir.join(format!("{name}.held"));
    let partial = dir.join(format!("{name}.held.partial"));
    let _ = std::fs::write(&partial, std::process::id().to_string())
        .and_then(|()| std::fs::rename(&partial, &held));
    while !dir.join(format!("{name}.open")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn hold(_: &str) {}
