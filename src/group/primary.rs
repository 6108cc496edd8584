//! The primary's side of a group deploy (DESIGN-12.md): prepare on every host while the
//! primary prepares its own build, `release:` once, then every host and the primary switch
//! together; all or nothing.
//!
//! The primary's lock is held around all of it (by the caller), so group operations never
//! overlap. Each host takes its own lock for each step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::group::excluded::{self, Exclusion};
use crate::group::remote::{self, GroupLine, Host, Pushed};
use crate::group::{GroupRef, Op};
use crate::infra::fault;
use crate::infra::report::{Reporter, short_id};
pub use crate::state::history::HostLog;
use crate::state::plan::Plan;

/// A ref the primary pushes, named as the host parses it.
pub fn group_ref(gid: &str, op: Op) -> String {
    GroupRef {
        gid: gid.to_string(),
        op,
    }
    .refname()
}

/// A new id for one group operation: `[0-9A-Za-z-]{1,64}`, unique per primary (its lock
/// serialises operations; the pid and nanoseconds tell two within one second apart).
pub fn new_gid() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(format).expect("a UTC time always formats");
    let salt = (now.nanosecond() as u64) ^ (u64::from(std::process::id()) << 32);
    format!(
        "{stamp}-{:06x}",
        xxhash_rust::xxh3::xxh3_64(&salt.to_le_bytes()) & 0xff_ffff
    )
}

/// How the hosts get their build of the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBuild {
    /// Build it (a deploy).
    Prepare,
    /// Build it linking nothing from the live build (`replay`).
    Replay,
    /// Take the newest good build of it already on disk (a rollback).
    Reuse,
}

/// The primary's own part of a group operation, driven by [`run`].
pub trait Local {
    /// Everything up to the switch (a deploy's build, or nothing for a rollback).
    fn prepare(&mut self) -> Result<()>;
    /// `release:`, once, after every host has prepared.
    fn release(&mut self) -> Result<()>;
    /// The flip and what follows it here (opcache, after_switch, health check, cleanup).
    /// `Ok` once the flip happened, with its CLOCK_REALTIME nanoseconds and what went wrong
    /// after it (`Some`: the group must go back).
    fn go_live(&mut self) -> Result<(u128, Option<anyhow::Error>)>;
    /// The prepared build is not going live: remove it.
    fn discard(&mut self);
    /// Back to the build that was live before, after the group failed once this one was live.
    /// Does nothing when `go_live` went back already.
    fn restore(&mut self) -> Result<()>;
}

/// A group operation that switched everywhere.
#[derive(Debug)]
pub struct GroupDone {
    pub hosts: Vec<HostLog>,
    /// max − min of every rename(2) (the primary's included).
    pub spread: Duration,
    /// Servers switched, the primary included.
    pub servers: usize,
}

/// A group operation that did not switch everywhere: what happened to each host, and why.
#[derive(Debug)]
pub struct GroupFailed {
    pub hosts: Vec<HostLog>,
    pub error: anyhow::Error,
    /// Whether the primary's own build went live (and was switched back).
    pub switched: bool,
}

/// What a group operation needs to know.
pub struct Group<'a> {
    pub plan: &'a Plan,
    pub reporter: &'a Reporter,
    /// The commit every server goes to.
    pub commit: &'a str,
    pub build: HostBuild,
    /// The primary takes part (a deploy, a rollback), or only hosts catch up.
    pub here: bool,
}

impl Group<'_> {
    fn push(&self, host: &Host, dst: &str, on_line: &(dyn Fn(&GroupLine) + Sync)) -> Pushed {
        remote::push(self.plan, host, self.commit, dst, self.reporter, on_line)
    }
}

/// The hosts a deploy goes to, each exclusion in effect shown as a warning; and the excluded
/// ones, for the log.
pub fn active_hosts(plan: &Plan, reporter: &Reporter) -> Result<(Vec<Host>, Vec<HostLog>)> {
    let exclusions = excluded::read(&plan.layout)?;
    let mut active = Vec::new();
    let mut left_out = Vec::new();
    for host in Host::all(&plan.config.hosts) {
        match exclusions.iter().find(|e| e.url == host.url) {
            Some(exclusion) => {
                reporter.warn(&exclusion.warning());
                left_out.push(HostLog {
                    url: host.url.clone(),
                    label: host.label.clone(),
                    build: None,
                    outcome: "excluded".into(),
                    error: Some(exclusion.why.clone()),
                });
            }
            None => active.push(host),
        }
    }
    Ok((active, left_out))
}

/// Runs `f` on every host, at most `at_once` at a time, the results in the hosts' order.
/// Once `stop` is set no further host is started (those running finish).
fn on_hosts<T: Send>(
    hosts: &[Host],
    at_once: usize,
    stop: &AtomicBool,
    f: impl Fn(&Host) -> T + Sync,
) -> Vec<Option<T>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<T>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..at_once.clamp(1, hosts.len().max(1)) {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(host) = hosts.get(i) else {
                        break;
                    };
                    let result = f(host);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Runs `f` on every host at once, the results in the hosts' order.
pub fn on_all<T: Send>(hosts: &[Host], f: impl Fn(&Host) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = hosts.iter().map(|h| scope.spawn(|| f(h))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// One host's prepare, as it ended.
enum Prep {
    Ready { build: String },
    Failed(String),
}

/// Prepare everywhere, release, switch everywhere, for `hosts` and the primary (`local`).
/// The ssh connections it opened are closed when it ends, however it ends.
pub fn run(
    g: &Group,
    hosts: &[Host],
    left_out: Vec<HostLog>,
    local: &mut dyn Local,
) -> Result<GroupDone, GroupFailed> {
    let result = run_phases(g, hosts, left_out, local);
    remote::close_connections(&g.plan.layout);
    result
}

fn run_phases(
    g: &Group,
    hosts: &[Host],
    left_out: Vec<HostLog>,
    local: &mut dyn Local,
) -> Result<GroupDone, GroupFailed> {
    let gid = new_gid();
    announce(g, hosts);

    // 1. Prepare everywhere, the primary's own build meanwhile.
    let (mut logs, mut failures, local_ready) = prepare_everywhere(g, &gid, hosts, local);

    // 2. `release:` once, here, once every build is ready.
    if failures.is_empty()
        && let Err(err) = local.release()
    {
        failures.push(format!("this server: {err:#}"));
    }
    if !failures.is_empty() {
        call_off(g, &gid, hosts, &mut logs, local, local_ready);
        logs.extend(left_out);
        return Err(GroupFailed {
            hosts: logs,
            // One line: the receive-pack wrapper's status shows the first line only.
            error: anyhow!("no server switched: {}", failures.join("; ")),
            switched: false,
        });
    }

    // 3. Switch everywhere together.
    let (switches, local_live) = switch_everywhere(g, &gid, hosts, local);
    let mut switched = read_switches(&gid, hosts, &switches, &mut logs);
    let local_switched = switched.add_local(local_live);
    if switched.problems.is_empty() {
        let spread = match (switched.stamps.iter().min(), switched.stamps.iter().max()) {
            (Some(min), Some(max)) => Duration::from_nanos((max - min) as u64),
            _ => Duration::ZERO,
        };
        logs.extend(left_out);
        return Ok(GroupDone {
            hosts: logs,
            spread,
            servers: switched.stamps.len(),
        });
    }

    // 4. Something did not go live: every server that switched goes back.
    let back = go_back(g, &gid, &switched.hosts, &mut logs, local, local_switched);
    logs.extend(left_out);
    let problems = switched.problems.join("; ");
    let error = if local_switched || !switched.hosts.is_empty() {
        anyhow!("the group's switch failed ({problems}); {back}")
    } else {
        anyhow!("no server switched: {problems}")
    };
    Err(GroupFailed {
        hosts: logs,
        error,
        switched: local_switched,
    })
}

fn announce(g: &Group, hosts: &[Host]) {
    g.reporter.line(&format!(
        "atomdeploy: preparing {} on {} host{} ({}){}",
        short_id(g.commit),
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" },
        hosts
            .iter()
            .map(|h| h.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if g.here { " and here" } else { "" }
    ));
}

/// Step 1: every host prepares (at most `hosts_at_once` at a time) while the primary builds its
/// own on this thread. Returns each host's log, the failures (the primary's first), and whether
/// the primary's own build is ready.
fn prepare_everywhere(
    g: &Group,
    gid: &str,
    hosts: &[Host],
    local: &mut dyn Local,
) -> (Vec<HostLog>, Vec<String>, bool) {
    let (fingerprint, app_keys) = g.plan.config.app_fingerprint();
    let op = match g.build {
        HostBuild::Prepare => Op::Prepare(fingerprint),
        HostBuild::Replay => Op::Replay(fingerprint),
        HostBuild::Reuse => Op::Reuse(fingerprint),
    };
    let prepare_ref = group_ref(gid, op);
    let stop = AtomicBool::new(false);
    let (preps, local_prep) = std::thread::scope(|scope| {
        let remote = scope.spawn(|| {
            on_hosts(hosts, g.plan.config.hosts_at_once, &stop, |host| {
                let pushed = g.push(host, &prepare_ref, &|_| {});
                let prep = read_prepare(&pushed, gid, &app_keys);
                if matches!(prep, Prep::Failed(_)) {
                    // A host that cannot prepare calls the deploy off: start no more.
                    stop.store(true, Ordering::SeqCst);
                }
                prep
            })
        });
        // The crash tests kill the primary here, the hosts mid-prepare.
        fault::point("group-prepare");
        let local_prep = local.prepare();
        if local_prep.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let preps = remote
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (preps, local_prep)
    });
    let logs: Vec<HostLog> = hosts
        .iter()
        .zip(&preps)
        .map(|(host, prep)| {
            let (build, outcome, error) = match prep {
                Some(Prep::Ready { build }) => (Some(build.clone()), "prepared", None),
                Some(Prep::Failed(why)) => (None, "failed", Some(why.clone())),
                None => (None, "not started", None),
            };
            HostLog {
                url: host.url.clone(),
                label: host.label.clone(),
                build,
                outcome: outcome.into(),
                error,
            }
        })
        .collect();
    let mut failures: Vec<String> = logs
        .iter()
        .filter_map(|log| Some(format!("{}: {}", log.label, log.error.as_ref()?)))
        .collect();
    if let Err(err) = &local_prep {
        failures.insert(0, format!("this server: {err:#}"));
    }
    (logs, failures, local_prep.is_ok())
}

/// Step 3: every host's switch push at once. The primary's flip waits for the first host's, so
/// that it falls among the hosts' instead of ahead of them all by a connection's start.
/// Returns each host's push and the primary's `go_live` (`None`: no host flipped, nor it).
fn switch_everywhere(
    g: &Group,
    gid: &str,
    hosts: &[Host],
    local: &mut dyn Local,
) -> (Vec<Pushed>, LocalLive) {
    let switch_ref = group_ref(gid, Op::Switch);
    let (first_tx, first_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|host| {
                let tx = Mutex::new(first_tx.clone());
                let switch_ref = &switch_ref;
                scope.spawn(move || {
                    g.push(host, switch_ref, &|line| {
                        if matches!(line, GroupLine::Switched { .. }) {
                            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(());
                        }
                    })
                })
            })
            .collect();
        drop(first_tx);
        // `Err`: every push ended without a flip, so none happened anywhere. (With every host
        // excluded there is no push to wait for.)
        let first = if hosts.is_empty() {
            Ok(())
        } else {
            first_rx.recv()
        };
        let local_live = match first {
            Ok(()) => {
                // The crash tests kill the primary here, some hosts switched, others not.
                fault::point("group-switch");
                Some(local.go_live())
            }
            Err(_) => None,
        };
        let switches: Vec<Pushed> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        (switches, local_live)
    })
}

/// The primary's own flip: its nanoseconds and what went wrong after it, or why it failed;
/// `None` when it was not tried (no host flipped).
type LocalLive = Option<Result<(u128, Option<anyhow::Error>)>>;

/// What the switch pushes (and the primary's flip) did.
struct Switched {
    /// CLOCK_REALTIME nanoseconds of every rename(2).
    stamps: Vec<u128>,
    /// What went wrong, one line each.
    problems: Vec<String>,
    /// The hosts that flipped.
    hosts: Vec<Host>,
}

/// Reads each host's switch push into its log.
fn read_switches(gid: &str, hosts: &[Host], switches: &[Pushed], logs: &mut [HostLog]) -> Switched {
    let mut out = Switched {
        stamps: Vec::new(),
        problems: Vec::new(),
        hosts: Vec::new(),
    };
    for ((host, pushed), log) in hosts.iter().zip(switches).zip(logs.iter_mut()) {
        let mut flipped = None;
        let mut unhealthy = None;
        for line in &pushed.lines {
            match line {
                GroupLine::Switched { gid: g2, build, ns } if g2 == gid => {
                    flipped = Some((build.clone(), u128::from(*ns)));
                }
                GroupLine::Unhealthy { gid: g2, why } if g2 == gid => {
                    unhealthy = Some(why.clone());
                }
                _ => {}
            }
        }
        match flipped {
            Some((build, ns)) => {
                out.stamps.push(ns);
                out.hosts.push(host.clone());
                log.build = Some(build);
                log.outcome = "switched".into();
                if let Some(why) = unhealthy {
                    out.problems
                        .push(format!("{}: unhealthy: {why}", host.label));
                    log.error = Some(format!("unhealthy: {why}"));
                }
            }
            None => {
                let why = pushed.why("the host did not switch");
                out.problems.push(format!("{}: {why}", host.label));
                log.outcome = "failed".into();
                log.error = Some(why);
            }
        }
    }
    out
}

impl Switched {
    /// Adds the primary's own flip; returns whether it happened.
    fn add_local(&mut self, live: LocalLive) -> bool {
        match live {
            Some(Ok((ns, after))) => {
                self.stamps.push(ns);
                if let Some(err) = after {
                    self.problems.insert(0, format!("this server: {err:#}"));
                }
                true
            }
            Some(Err(err)) => {
                self.problems.insert(0, format!("this server: {err:#}"));
                false
            }
            None => {
                self.problems
                    .insert(0, "this server: not switched, as no host did".into());
                false
            }
        }
    }
}

/// How one host's prepare ended.
fn read_prepare(pushed: &Pushed, gid: &str, app_keys: &serde_json::Value) -> Prep {
    for line in &pushed.lines {
        match line {
            GroupLine::Prepared { gid: g2, build, .. } if g2 == gid => {
                return Prep::Ready {
                    build: build.clone(),
                };
            }
            GroupLine::Config(theirs) => {
                return Prep::Failed(format!(
                    "its deploy.yml differs from this server's in {}; make them agree \
                     (the per-host keys aside, the app's keys are decided here)",
                    differing_keys(app_keys, theirs).join(", ")
                ));
            }
            _ => {}
        }
    }
    Prep::Failed(pushed.why("the host did not prepare the build"))
}

/// The top-level keys whose values differ between two configurations' JSON.
fn differing_keys(ours: &serde_json::Value, theirs: &serde_json::Value) -> Vec<String> {
    // The host may send its keys alone or with its fingerprint around them.
    let theirs = theirs
        .get("keys")
        .or_else(|| theirs.get("config"))
        .unwrap_or(theirs);
    let empty = serde_json::Map::new();
    let ours = ours.as_object().unwrap_or(&empty);
    let theirs_map = theirs.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = ours
        .keys()
        .chain(theirs_map.keys())
        .filter(|k| ours.get(*k) != theirs_map.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        keys.push("its app keys (another version of atomdeploy-hook?)".into());
    }
    keys
}

/// The deploy is called off before any switch: every host that was asked to prepare is told
/// to abort (a host killed mid-prepare needs it as much as a prepared one), and the
/// primary's own build is removed.
fn call_off(
    g: &Group,
    gid: &str,
    hosts: &[Host],
    logs: &mut [HostLog],
    local: &mut dyn Local,
    local_prepared: bool,
) {
    let asked: Vec<usize> = (0..hosts.len())
        .filter(|i| logs[*i].outcome != "not started")
        .collect();
    let abort_ref = group_ref(gid, Op::Abort);
    let aborts = on_all(
        &asked.iter().map(|i| hosts[*i].clone()).collect::<Vec<_>>(),
        |host| g.push(host, &abort_ref, &|_| {}),
    );
    for (i, pushed) in asked.iter().zip(aborts) {
        let aborted = pushed
            .lines
            .iter()
            .any(|l| matches!(l, GroupLine::Aborted { gid: g2 } if g2 == gid));
        if aborted {
            if logs[*i].outcome == "prepared" {
                logs[*i].outcome = "aborted".into();
            }
        } else {
            let why = pushed.why("no answer");
            g.reporter.warn(&format!(
                "{}: could not remove the prepared build ({why}); it is not live, and the \
                 host's next deploy removes it",
                hosts[*i].label
            ));
        }
    }
    if local_prepared {
        local.discard();
    }
}

/// After a failed switch: `restore` to every host that switched, and the primary back.
/// Returns what was switched back, for the error.
fn go_back(
    g: &Group,
    gid: &str,
    switched: &[Host],
    logs: &mut [HostLog],
    local: &mut dyn Local,
    local_switched: bool,
) -> String {
    let restore_ref = group_ref(gid, Op::Restore);
    let restores = on_all(switched, |host| g.push(host, &restore_ref, &|_| {}));
    let mut back = Vec::new();
    let mut stuck = Vec::new();
    for (host, pushed) in switched.iter().zip(restores) {
        let restored = pushed
            .lines
            .iter()
            .any(|l| matches!(l, GroupLine::Restored { gid: g2, .. } if g2 == gid));
        let log = logs.iter_mut().find(|l| l.url == host.url);
        if restored {
            back.push(host.label.clone());
            if let Some(log) = log {
                log.outcome = "restored".into();
            }
        } else {
            let why = pushed.why("no answer");
            stuck.push(format!("{} ({why})", host.label));
            if let Some(log) = log {
                log.error = Some(format!("could not switch back: {why}"));
            }
        }
    }
    if local_switched {
        match local.restore() {
            Ok(()) => back.push("this server".into()),
            Err(err) => stuck.push(format!("this server ({err:#})")),
        }
    }
    let mut said = if back.is_empty() {
        "nothing had switched".to_string()
    } else {
        format!("switched back: {}", back.join(", "))
    };
    if !stuck.is_empty() {
        said.push_str(&format!(
            "; COULD NOT switch back: {} — run `atomdeploy-hook hosts` to see what each serves",
            stuck.join(", ")
        ));
    }
    said
}

/// CLOCK_REALTIME now, in nanoseconds, as the hosts stamp their switches.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `switched 3 servers within 12 ms`.
pub fn spread_summary(done: &GroupDone) -> String {
    format!(
        "switched {} servers within {} ms",
        done.servers,
        format_ms(done.spread)
    )
}

pub fn format_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Tells `exclusions` a host is out, for `atomdeploy-hook hosts exclude`.
pub fn exclusion(url: &str, why: &str) -> Exclusion {
    Exclusion {
        url: url.to_string(),
        when: excluded::now(),
        who: excluded::who(),
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_valid_and_differ() {
        let a = new_gid();
        assert!(a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let b = new_gid();
        assert_ne!(a, b);
    }

    #[test]
    fn drift_names_the_keys_that_differ() {
        let ours = serde_json::json!({"shared": ["a/"], "keep_builds": 5, "composer": null});
        let theirs = serde_json::json!({"shared": ["b/"], "keep_builds": 5, "exclude": []});
        assert_eq!(
            differing_keys(&ours, &theirs),
            ["composer", "exclude", "shared"]
        );
        let wrapped = serde_json::json!({"fingerprint": "x", "keys": theirs});
        assert_eq!(
            differing_keys(&ours, &wrapped),
            ["composer", "exclude", "shared"]
        );
    }

    #[test]
    fn hosts_run_at_most_so_many_at_once_and_stop_when_told() {
        let hosts = Host::all(&(0..9).map(|i| format!("/h/web{i}.git")).collect::<Vec<_>>());
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        // Three at a time meet at the barrier (a fourth would pass the count of three).
        let barrier = std::sync::Barrier::new(3);
        let results = on_hosts(&hosts, 3, &AtomicBool::new(false), |host| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            barrier.wait();
            running.fetch_sub(1, Ordering::SeqCst);
            host.label.clone()
        });
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(results[8].as_deref(), Some("web8"));
        let stop = AtomicBool::new(false);
        let results = on_hosts(&hosts, 1, &stop, |host| {
            if host.label == "web2" {
                stop.store(true, Ordering::SeqCst);
            }
        });
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 3);
    }
}
