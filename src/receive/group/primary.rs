//! The primary's side of a group deploy (DESIGN-12.md): prepare on every host while the
//! primary prepares its own build, `release:` once, then every host and the primary switch
//! together; all or nothing.
//!
//! The primary's lock is held around all of it (by the caller), so group operations never
//! overlap. Each host takes its own lock for each step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::infra::fault;
use crate::infra::report::{Reporter, short_id};
use crate::receive::group::excluded::{self, Exclusion};
use crate::receive::group::remote::{self, GroupLine, Host, Pushed};
use crate::receive::group::{GroupRef, Op};
use crate::state::builds;
pub(crate) use crate::state::history::HostLog;
use crate::state::plan::Plan;

/// A ref the primary pushes, named as the host parses it.
pub(crate) fn group_ref(gid: &str, op: Op) -> String {
    GroupRef {
        gid: gid.to_string(),
        op,
    }
    .refname()
}

/// A new id for one group operation: `[0-9A-Za-z-]{1,64}`, unique per primary (its lock
/// serialises operations; the pid and nanoseconds tell two within one second apart).
pub(crate) fn new_gid() -> String {
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
pub(crate) enum HostBuild {
    /// Build it (a deploy).
    Prepare,
    /// Build it linking nothing from the live build (`replay`).
    Replay,
    /// Take the newest good build of it already on disk (a rollback).
    Reuse,
}

/// The primary's own part of a group operation, driven by [`run`].
pub(crate) trait Local {
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
pub(crate) struct GroupDone {
    pub(crate) hosts: Vec<HostLog>,
    /// max − min of every rename(2) (the primary's included).
    pub(crate) spread: Duration,
    /// Servers switched, the primary included.
    pub(crate) servers: usize,
}

/// A group operation that did not switch everywhere: what happened to each host, and why.
#[derive(Debug)]
pub(crate) struct GroupFailed {
    pub(crate) hosts: Vec<HostLog>,
    pub(crate) error: anyhow::Error,
    /// Whether the primary's own build went live (and was switched back).
    pub(crate) switched: bool,
}

/// What a group operation needs to know.
pub(crate) struct Group<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) reporter: &'a Reporter,
    /// The commit every server goes to.
    pub(crate) commit: &'a str,
    pub(crate) build: HostBuild,
    /// The primary takes part (a deploy, a rollback), or only hosts catch up.
    pub(crate) here: bool,
}

impl Group<'_> {
    fn push(&self, host: &Host, dst: &str, on_line: &(dyn Fn(&GroupLine) + Sync)) -> Pushed {
        remote::push(self.plan, host, self.commit, dst, self.reporter, on_line)
    }
}

/// The hosts a deploy goes to, each exclusion in effect shown as a warning; and the excluded
/// ones, for the log.
pub(crate) fn active_hosts(plan: &Plan, reporter: &Reporter) -> Result<(Vec<Host>, Vec<HostLog>)> {
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
pub(crate) fn on_all<T: Send>(hosts: &[Host], f: impl Fn(&Host) -> T + Sync) -> Vec<T> {
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
pub(crate) fn run(
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

    // 3. Switch everywhere together; 4. should anything go wrong, every server goes back.
    let switched = switch_everywhere(g, &gid, hosts, &mut logs, local);
    logs.extend(left_out);
    if switched.problems.is_empty() {
        let spread = match (switched.stamps.iter().min(), switched.stamps.iter().max()) {
            (Some(min), Some(max)) => Duration::from_nanos((max - min) as u64),
            _ => Duration::ZERO,
        };
        return Ok(GroupDone {
            hosts: logs,
            spread,
            servers: switched.ends.len() + usize::from(switched.local_switched),
        });
    }
    let problems = switched.problems.join("; ");
    let may_have_switched = switched
        .ends
        .iter()
        .any(|end| !matches!(end, Some(SwitchEnd::NotSwitched(_))));
    let error = if switched.local_switched || may_have_switched {
        anyhow!("the group's switch failed ({problems}); {}", switched.back)
    } else {
        anyhow!("no server switched: {problems}")
    };
    Err(GroupFailed {
        hosts: logs,
        error,
        switched: switched.local_switched,
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
    let ours = builds::live(&g.plan.layout).and_then(|b| builds::revision(&g.plan.layout, &b));
    let stop = AtomicBool::new(false);
    let (preps, local_prep) = std::thread::scope(|scope| {
        let remote = scope.spawn(|| {
            on_hosts(hosts, g.plan.config.hosts_at_once, &stop, |host| {
                let pushed = g.push(host, &prepare_ref, &|line| {
                    if let GroupLine::Live { gid: g2, commit } = line
                        && g2 == gid
                    {
                        warn_drift(g, host, commit.as_deref(), ours.as_deref());
                    }
                });
                let prep = read_prepare(&pushed, gid, g.commit, &app_keys);
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

/// A host not live on the primary's live commit before a deploy drifted (a deploy that reached
/// it alone, a killed group): said before the deploy brings it back in line. A host catching
/// up (`here` false) is behind by design, and said so by its caller.
fn warn_drift(g: &Group, host: &Host, theirs: Option<&str>, ours: Option<&str>) {
    if !g.here || theirs == ours {
        return;
    }
    let name = |c: Option<&str>| c.map_or("nothing".to_string(), |c| short_id(c).to_string());
    g.reporter.warn(&format!(
        "{} was live on {}, not on this server's live {}: it drifted; this deploy brings it \
         back in line",
        host.label,
        name(theirs),
        name(ours)
    ));
}

/// Step 3: every host's switch push at once. The primary's flip waits for the first host's, so
/// that it falls among the hosts' instead of ahead of them all by a connection's start. Then
/// every push is waited for, unless one host lags past `switch_window`: the group goes back
/// then without waiting for it (its `restore` waits for its lock on the host). Every host
/// that may have switched is sent back when anything went wrong.
fn switch_everywhere(
    g: &Group,
    gid: &str,
    hosts: &[Host],
    logs: &mut [HostLog],
    local: &mut dyn Local,
) -> Switched {
    let switch_ref = group_ref(gid, Op::Switch);
    let started_ns = now_ns();
    let (tx, rx) = mpsc::channel::<Heard>();
    std::thread::scope(|scope| {
        let mut running: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let tx = Mutex::new(tx.clone());
                let switch_ref = &switch_ref;
                let send = move |heard: Heard| {
                    let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(heard);
                };
                Some(scope.spawn(move || {
                    let pushed = g.push(host, switch_ref, &|line| {
                        if matches!(line, GroupLine::Switched { gid: g2, .. } if g2 == gid) {
                            send(Heard::Switched(i, Instant::now(), now_ns()));
                        }
                    });
                    send(Heard::Done(i));
                    pushed
                }))
            })
            .collect();
        drop(tx);
        let mut watch = Watch::new(hosts.len());
        // Nothing flips here unless a host did (with every host excluded, there is none to
        // wait for).
        watch.wait(&rx, |w| w.first.is_some() || w.all_done(), None);
        let local_live = if watch.first.is_some() || hosts.is_empty() {
            // The crash tests kill the primary here, some hosts switched, others not.
            fault::point("group-switch");
            let live = local.go_live();
            if let Ok((ns, _)) = &live
                && g.here
            {
                watch.local_flip(*ns);
            }
            Some(live)
        } else {
            None
        };
        let window = g.plan.config.switch_window;
        let deadline = watch.first.map(|first| first + window);
        watch.wait(&rx, Watch::all_done, deadline);
        let mut pushes: Vec<Option<Pushed>> = hosts.iter().map(|_| None).collect();
        let join = |handle: std::thread::ScopedJoinHandle<'_, Pushed>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        for (i, slot) in running.iter_mut().enumerate() {
            if watch.done[i] {
                pushes[i] = slot.take().map(join);
            }
        }
        let mut switched = Switched::read(g, gid, hosts, &pushes, &watch, started_ns);
        // A host catching up switches alone: nothing here flipped, went back or lagged, and
        // nothing here is to be said of in its error.
        let local_switched = g.here && switched.add_local(local_live);
        switched.lags(hosts, &watch, window);
        if !switched.problems.is_empty() {
            switched.back = go_back(g, gid, hosts, &switched.ends, logs, local, local_switched);
        }
        // A lagging host's push is waited for only now, the group gone back already.
        for (i, slot) in running.iter_mut().enumerate() {
            if let Some(handle) = slot.take() {
                pushes[i] = Some(join(handle));
            }
        }
        switched.log(hosts, &pushes, gid, logs);
        switched.local_switched = local_switched;
        switched
    })
}

/// What a switch push tells the primary while it runs.
enum Heard {
    /// Its `switched` line arrived: when, on this server's monotonic and real-time clocks.
    Switched(usize, Instant, u128),
    /// The push ended.
    Done(usize),
}

/// The switch pushes as they report, on this server's clock.
struct Watch {
    /// When each host's `switched` line arrived (monotonic, then CLOCK_REALTIME ns).
    arrived: Vec<Option<(Instant, u128)>>,
    done: Vec<bool>,
    /// The first switch of the group: a host's line or the primary's own flip.
    first: Option<Instant>,
    /// The primary's own flip.
    local: Option<Instant>,
}

impl Watch {
    fn new(hosts: usize) -> Watch {
        Watch {
            arrived: vec![None; hosts],
            done: vec![false; hosts],
            first: None,
            local: None,
        }
    }

    fn all_done(&self) -> bool {
        self.done.iter().all(|d| *d)
    }

    fn note(&mut self, heard: Heard) {
        match heard {
            Heard::Switched(i, at, ns) => {
                self.arrived[i] = Some((at, ns));
                self.first = Some(self.first.map_or(at, |first| first.min(at)));
            }
            Heard::Done(i) => self.done[i] = true,
        }
    }

    /// The primary's flip at CLOCK_REALTIME `ns`, placed on the monotonic clock.
    fn local_flip(&mut self, ns: u128) {
        let ago = Duration::from_nanos(u64::try_from(now_ns().saturating_sub(ns)).unwrap_or(0));
        let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        self.local = Some(at);
        self.first = Some(self.first.map_or(at, |first| first.min(at)));
    }

    /// Takes reports until `enough` holds, or until `deadline` passes while a host that is
    /// still running has not switched (one that switched is waited for past it: its health
    /// check may take its time).
    fn wait(
        &mut self,
        rx: &mpsc::Receiver<Heard>,
        enough: impl Fn(&Watch) -> bool,
        deadline: Option<Instant>,
    ) {
        while !enough(self) {
            let lagging = (0..self.done.len()).any(|i| !self.done[i] && self.arrived[i].is_none());
            let heard = match deadline {
                Some(deadline) if lagging => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(heard) => heard,
                        Err(_) => return,
                    }
                }
                _ => match rx.recv() {
                    Ok(heard) => heard,
                    Err(_) => return,
                },
            };
            self.note(heard);
        }
    }
}

/// How one host's switch push ended.
#[derive(Debug, Clone, PartialEq)]
enum SwitchEnd {
    /// `switched`, `ended … ok`, and `git push` succeeded.
    Clean { build: String, ns: u64 },
    /// The host ended its switch saying it did not switch: nothing to send back.
    NotSwitched(String),
    /// Anything else: it switched and something failed after, or nobody knows whether it
    /// switched (killed, its connection dropped, a host without `ended`). It goes back.
    Unclean { build: Option<String>, why: String },
}

/// Reads one host's switch push.
fn read_switch(gid: &str, pushed: &Pushed) -> SwitchEnd {
    let mut flipped = None;
    let mut unhealthy = None;
    let mut ended = None;
    for line in &pushed.lines {
        match line {
            GroupLine::Switched { gid: g2, build, ns } if g2 == gid => {
                flipped = Some((build.clone(), *ns));
            }
            GroupLine::Unhealthy { gid: g2, why } if g2 == gid => unhealthy = Some(why.clone()),
            GroupLine::Ended { gid: g2, failed } if g2 == gid => ended = Some(failed.clone()),
            _ => {}
        }
    }
    match (flipped, ended, &pushed.result) {
        (Some((build, ns)), Some(None), Ok(())) => SwitchEnd::Clean { build, ns },
        (None, Some(Some(why)), _) => SwitchEnd::NotSwitched(pushed.why(&why)),
        (Some((build, _)), Some(Some(why)), _) => SwitchEnd::Unclean {
            build: Some(build),
            why: match unhealthy {
                Some(unhealthy) => format!("unhealthy: {unhealthy}"),
                None => why,
            },
        },
        (Some((build, _)), None, _) => SwitchEnd::Unclean {
            build: Some(build),
            why: format!(
                "it switched, but its switch did not end ({}); it may be unhealthy",
                pushed.why("the connection closed before it said how it went")
            ),
        },
        (flipped, _, _) => SwitchEnd::Unclean {
            why: format!(
                "{}; whether it switched is unknown",
                pushed.why("its switch did not end")
            ),
            build: flipped.map(|(build, _)| build),
        },
    }
}

/// A host's clock may be this far from the primary's before its switch time is not believed.
const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Why a host's switch time (CLOCK_REALTIME ns) cannot be right: before the switch push
/// started, or after its line arrived, by more than [`CLOCK_SKEW`].
fn implausible_stamp(ns: u128, started_ns: u128, arrived_ns: u128) -> Option<String> {
    let skew = CLOCK_SKEW.as_nanos();
    if ns + skew < started_ns {
        let by = Duration::from_nanos(u64::try_from(started_ns - ns).unwrap_or(u64::MAX));
        Some(format!("{} in the past", human(by)))
    } else if ns > arrived_ns + skew {
        let by = Duration::from_nanos(u64::try_from(ns - arrived_ns).unwrap_or(u64::MAX));
        Some(format!("{} in the future", human(by)))
    } else {
        None
    }
}

/// `12 ms`, `4.2 s`, `3 min`, `3 h`, `12 days`.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{} ms", format_ms(d))
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 2.0 * 86400.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} days", s / 86400.0)
    }
}

/// The primary's own flip: its nanoseconds and what went wrong after it, or why it failed;
/// `None` when it was not tried (no host flipped).
type LocalLive = Option<Result<(u128, Option<anyhow::Error>)>>;

/// What the switch pushes (and the primary's flip) did.
struct Switched {
    /// CLOCK_REALTIME nanoseconds of every rename(2) believed.
    stamps: Vec<u128>,
    /// What went wrong, one line each.
    problems: Vec<String>,
    /// How each host's switch ended (`None`: still running, it lagged).
    ends: Vec<Option<SwitchEnd>>,
    /// What going back did, for the error.
    back: String,
    local_switched: bool,
}

impl Switched {
    /// Reads the pushes that ended; a host's implausible switch time is said and left out.
    fn read(
        g: &Group,
        gid: &str,
        hosts: &[Host],
        pushes: &[Option<Pushed>],
        watch: &Watch,
        started_ns: u128,
    ) -> Switched {
        let mut out = Switched {
            stamps: Vec::new(),
            problems: Vec::new(),
            ends: Vec::new(),
            back: String::new(),
            local_switched: false,
        };
        for (i, (host, pushed)) in hosts.iter().zip(pushes).enumerate() {
            let end = pushed.as_ref().map(|p| read_switch(gid, p));
            match &end {
                Some(SwitchEnd::Clean { ns, .. }) => {
                    let arrived = watch.arrived[i].map_or_else(now_ns, |(_, ns)| ns);
                    match implausible_stamp(u128::from(*ns), started_ns, arrived) {
                        None => out.stamps.push(u128::from(*ns)),
                        Some(off) => g.reporter.warn(&format!(
                            "{} reported a switch time {off}; its clock or its hook is wrong \
                             (left out of the spread)",
                            host.label
                        )),
                    }
                }
                Some(SwitchEnd::NotSwitched(why) | SwitchEnd::Unclean { why, .. }) => {
                    out.problems.push(format!("{}: {why}", host.label));
                }
                None => {}
            }
            out.ends.push(end);
        }
        out
    }

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

    /// A server whose switch came later than `window` after the group's first, or had not
    /// come when it passed, is a problem: two versions were served for longer than allowed.
    fn lags(&mut self, hosts: &[Host], watch: &Watch, window: Duration) {
        let Some(first) = watch.first else {
            return;
        };
        let late = |at: Instant| at.saturating_duration_since(first);
        let secs = window.as_secs();
        if let Some(at) = watch.local
            && late(at) > window
        {
            self.problems.push(format!(
                "this server switched {} after the first server, past switch_window ({secs} s)",
                human(late(at))
            ));
        }
        for (i, host) in hosts.iter().enumerate() {
            match watch.arrived[i] {
                Some((at, _)) if late(at) > window => self.problems.push(format!(
                    "{} switched {} after the first server, past switch_window ({secs} s)",
                    host.label,
                    human(late(at))
                )),
                None if !watch.done[i] => self.problems.push(format!(
                    "{} had not switched {} after the first server (switch_window {secs} s); \
                     it is sent back once it does",
                    host.label,
                    human(late(Instant::now()))
                )),
                _ => {}
            }
        }
    }

    /// Each host's log, once every push ended.
    fn log(&mut self, hosts: &[Host], pushes: &[Option<Pushed>], gid: &str, logs: &mut [HostLog]) {
        for (i, log) in logs.iter_mut().enumerate().take(hosts.len()) {
            let end = match (&self.ends[i], &pushes[i]) {
                (Some(end), _) => end.clone(),
                (None, Some(pushed)) => read_switch(gid, pushed),
                (None, None) => continue,
            };
            // Set by go_back already: the host is back, or could not be sent back.
            let gone_back = log.outcome == "restored" || log.error.is_some();
            match end {
                SwitchEnd::Clean { build, .. } => {
                    log.build = Some(build);
                    if !gone_back {
                        log.outcome = "switched".into();
                    }
                }
                // A lagging host's switch may come after its restore, which left nothing to
                // switch to: the restore is what its log says.
                SwitchEnd::NotSwitched(_) if gone_back => {}
                SwitchEnd::NotSwitched(why) => {
                    log.outcome = "failed".into();
                    log.error = Some(why);
                }
                SwitchEnd::Unclean { build, why } => {
                    if build.is_some() {
                        log.build = build;
                    }
                    if !gone_back {
                        log.outcome = "failed".into();
                    }
                    if log.error.is_none() {
                        log.error = Some(why);
                    }
                }
            }
        }
    }
}

/// How one host's prepare ended.
fn read_prepare(pushed: &Pushed, gid: &str, commit: &str, app_keys: &serde_json::Value) -> Prep {
    for line in &pushed.lines {
        match line {
            // A host that built another commit than the one pushed (a hook of another
            // version, or one that is not ours) must not switch to it.
            GroupLine::Prepared {
                gid: g2,
                commit: theirs,
                ..
            } if g2 == gid && theirs != commit => {
                return Prep::Failed(format!(
                    "prepared {}, not the pushed {}",
                    short_id(theirs),
                    short_id(commit)
                ));
            }
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

/// After a failed switch: `restore` to every host that may have switched (all but those that
/// said they did not: a host killed right after its rename never said it switched), and the
/// primary back. Returns what was switched back, for the error.
fn go_back(
    g: &Group,
    gid: &str,
    hosts: &[Host],
    ends: &[Option<SwitchEnd>],
    logs: &mut [HostLog],
    local: &mut dyn Local,
    local_switched: bool,
) -> String {
    let targets: Vec<usize> = (0..hosts.len())
        .filter(|i| !matches!(ends[*i], Some(SwitchEnd::NotSwitched(_))))
        .collect();
    let restore_ref = group_ref(gid, Op::Restore);
    let target_hosts: Vec<Host> = targets.iter().map(|i| hosts[*i].clone()).collect();
    // The primary goes back meanwhile: a lagging host's restore waits for its lock, and the
    // others need not wait with it.
    let (restores, local_back) = std::thread::scope(|scope| {
        let restores =
            scope.spawn(|| on_all(&target_hosts, |host| g.push(host, &restore_ref, &|_| {})));
        let local_back = local_switched.then(|| local.restore());
        let restores = restores
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (restores, local_back)
    });
    let mut back = Vec::new();
    let mut stuck = Vec::new();
    for (i, pushed) in targets.iter().zip(restores) {
        let host = &hosts[*i];
        let restored = pushed
            .lines
            .iter()
            .any(|l| matches!(l, GroupLine::Restored { gid: g2, .. } if g2 == gid));
        if restored {
            back.push(host.label.clone());
            logs[*i].outcome = "restored".into();
        } else {
            let why = pushed.why("no answer");
            stuck.push(format!("{} ({why})", host.label));
            logs[*i].error = Some(format!("could not switch back: {why}"));
        }
    }
    match local_back {
        Some(Ok(())) => back.push("this server".into()),
        Some(Err(err)) => stuck.push(format!("this server ({err:#})")),
        None => {}
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
pub(crate) fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `switched 3 servers within 12 ms`.
pub(crate) fn spread_summary(done: &GroupDone) -> String {
    format!(
        "switched {} servers within {} ms",
        done.servers,
        format_ms(done.spread)
    )
}

pub(crate) fn format_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Tells `exclusions` a host is out, for `atomdeploy-hook hosts exclude`.
pub(crate) fn exclusion(url: &str, why: &str) -> Exclusion {
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

    const GID: &str = "g";
    const BUILD: &str = "20261126-101500";

    fn pushed(lines: &[GroupLine], result: Result<()>) -> Pushed {
        Pushed {
            lines: lines.to_vec(),
            errors: Vec::new(),
            transport: Vec::new(),
            ssh: None,
            gave_up: false,
            result,
        }
    }

    fn switched(gid: &str) -> GroupLine {
        GroupLine::Switched {
            gid: gid.into(),
            build: BUILD.into(),
            ns: 7,
        }
    }

    fn ended(failed: Option<&str>) -> GroupLine {
        GroupLine::Ended {
            gid: GID.into(),
            failed: failed.map(str::to_string),
        }
    }

    /// Every combination of what a switch push may bring back: clean only with `switched`,
    /// `ended ok` and a push that succeeded; sent back whenever it may have switched.
    #[test]
    fn a_switch_is_clean_only_when_it_switched_ended_ok_and_the_push_succeeded() {
        let failed_push = || Err(anyhow!("git push to web2 was killed"));
        for with_switched in [false, true] {
            for end in [None, Some(None), Some(Some("after_switch failed"))] {
                for push_ok in [false, true] {
                    let mut lines = Vec::new();
                    if with_switched {
                        lines.push(switched(GID));
                    }
                    if let Some(failed) = end {
                        lines.push(ended(failed));
                    }
                    let result = if push_ok { Ok(()) } else { failed_push() };
                    let got = read_switch(GID, &pushed(&lines, result));
                    let case =
                        format!("switched {with_switched}, ended {end:?}, push ok {push_ok}");
                    match (with_switched, end, push_ok) {
                        (true, Some(None), true) => assert_eq!(
                            got,
                            SwitchEnd::Clean {
                                build: BUILD.into(),
                                ns: 7
                            },
                            "{case}"
                        ),
                        (false, Some(Some(_)), _) => {
                            assert!(matches!(got, SwitchEnd::NotSwitched(_)), "{case}: {got:?}")
                        }
                        _ => assert!(matches!(got, SwitchEnd::Unclean { .. }), "{case}: {got:?}"),
                    }
                }
            }
        }
        // Another group's lines count for nothing.
        let other = pushed(&[switched("other"), ended(None)], Ok(()));
        assert!(matches!(
            read_switch(GID, &other),
            SwitchEnd::Unclean { build: None, .. }
        ));
        // An unhealthy host says why.
        let unhealthy = pushed(
            &[
                switched(GID),
                GroupLine::Unhealthy {
                    gid: GID.into(),
                    why: "exit 1".into(),
                },
                ended(Some("health check failed")),
            ],
            Ok(()),
        );
        assert_eq!(
            read_switch(GID, &unhealthy),
            SwitchEnd::Unclean {
                build: Some(BUILD.into()),
                why: "unhealthy: exit 1".into()
            }
        );
    }

    #[test]
    fn a_switch_time_is_believed_only_between_the_push_and_its_line_give_or_take_the_skew() {
        let s = 1_000_000_000u128;
        let started = 1_764_000_000 * s;
        let arrived = started + s / 10;
        for ns in [started, arrived, started - s, arrived + s] {
            assert_eq!(implausible_stamp(ns, started, arrived), None, "{ns}");
        }
        assert_eq!(
            implausible_stamp(arrived + 3 * 3600 * s, started, arrived).as_deref(),
            Some("3 h in the future")
        );
        assert_eq!(
            implausible_stamp(started - 3 * s, started, arrived).as_deref(),
            Some("3.0 s in the past")
        );
        assert_eq!(
            implausible_stamp(0, started, arrived).as_deref(),
            Some("20417 days in the past")
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
