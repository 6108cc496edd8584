//! Fault injection for the crash tests, compiled into debug builds only: at a named point,
//! the process kills its whole process group with SIGKILL, as a dropped SSH session or an
//! OOM kill would, and nothing gets to clean up.
//!
//! `ATOMDEPLOY_FAULT=NAME` kills the first time `NAME` is reached; `NAME@N` the N-th time
//! (points inside loops, such as one per copied file).

#[cfg(debug_assertions)]
pub fn point(name: &str) {
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
        // SAFETY: kill(2) of our own process group; nothing returns from it.
        unsafe { libc::kill(0, libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_: &str) {}
