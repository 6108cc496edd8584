//! A host's side of a group deploy: what a pushed `refs/atomdeploy/group/<gid>/<op>…` asks of
//! this server, done with the same lock, recovery, pipeline, switch and log as a deploy.
//!
//! Between `prepare` and `switch` the group's build sits in builds/ without having been live,
//! recorded in `.atomdeploy/group/<gid>.json`. Such a build is what [`recover`] removes at the
//! start of any later deploy, rollback or group operation (other than this group's switch):
//! a primary killed between the two, or a group given up, leaves nothing behind for long, and
//! never a build that goes live by itself.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::infra::clock;
use crate::infra::fault;
use crate::infra::lock::DeployLock;
use crate::infra::report::{Reporter, short_id};
use crate::receive::group::{GroupRef, Line, Op, REF_PREFIX, Status, trust};
use crate::receive::pipeline::{self, GoLive, Prepared, Problem};
use crate::receive::push::{PushRequest, RefUpdate};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::history::{self, GroupOp, Outcome};
use crate::state::plan::{Layout, Plan};
use crate::state::recover;
use crate::state::refs;
use crate::steps::Deploy;
use crate::steps::restore;
use crate::steps::switch;

/// What a host keeps of a group between its operations.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// `prepare` (a build of its own) or `reuse` (a build that was there already).
    op: String,
    build: String,
    commit: String,
    /// The build live when it was prepared: where `restore` goes back to.
    previous: Option<String>,
    prepared_at: String,
    #[serde(default)]
    switched_at: Option<String>,
}

impl Record {
    fn is_own_build(&self) -> bool {
        self.op == "prepare"
    }

    /// Whether `build` is still the group's own build, never live: the one thing `abort` and
    /// `restore` may remove. (Its name may have gone to another build since: names are
    /// reused within a second once a build is removed.)
    fn unswitched_own_build(&self, layout: &Layout, build: &BuildName) -> bool {
        self.is_own_build()
            && builds::live(layout).as_ref() != Some(build)
            && builds::revision(layout, build).as_deref() == Some(self.commit.as_str())
            && builds::read_meta(layout, build).is_some_and(|m| !m.went_live)
    }
}

fn records_dir(layout: &Layout) -> PathBuf {
    layout.state.join("group")
}

fn record_file(layout: &Layout, gid: &str) -> PathBuf {
    records_dir(layout).join(format!("{gid}.json"))
}

fn read_record(layout: &Layout, gid: &str) -> Option<Record> {
    let text = fs::read_to_string(record_file(layout, gid)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(layout: &Layout, gid: &str, record: &Record) -> Result<()> {
    // Whole or not at all: a record is read by the next operation, maybe after a kill.
    builds::replace_file(
        &record_file(layout, gid),
        &serde_json::to_vec_pretty(record)?,
    )
    .with_context(|| format!("cannot write the record of group {gid}"))
}

fn drop_record(layout: &Layout, gid: &str) {
    let _ = fs::remove_file(record_file(layout, gid));
}

/// Records of every other group: a primary starts a group operation only once the one before
/// is over (its lock serialises them), so theirs are done with, whatever became of them.
fn drop_other_records(layout: &Layout, gid: &str) {
    let Ok(entries) = fs::read_dir(records_dir(layout)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != format!("{gid}.json").as_str() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Handles a push that carries group refs: the one operation it asks for, then the ref is
/// deleted again, whatever happened. Nothing else of the push is deployed.
pub(crate) fn handle(plan: &Plan, request: &PushRequest, reporter: &Reporter) -> Result<()> {
    // Whether the operation is refused or run, the branches this push claims go back: a
    // deploy branch moved without its deploy would make the next push of that commit deploy
    // nothing. (It prints nothing of this server's configuration.)
    let failed = trust::put_back_claimed(plan, request);
    // Before anything else, and before a word of this server's configuration is printed.
    if let Err(err) = trust::admit(plan) {
        delete_pushed(plan, &request.group, reporter);
        let why = format!("{err:#}{failed}");
        // In the log (not notified: a host's group operations never are, its primary's are).
        let refused: Vec<&RefUpdate> = request.group.iter().collect();
        trust::log_refusal(plan, &refused, &why, reporter);
        return Err(anyhow!("{why}"));
    }
    for update in other_refs(request) {
        reporter.line(&format!(
            "atomdeploy: {} not deployed: this push carries a group operation",
            update.name()
        ));
    }
    if let Some(failed) = failed.strip_prefix("; ") {
        reporter.warn(failed);
    }
    drop_stale_group_refs(plan, &request.group, reporter);
    let result = match &request.group[..] {
        [update] => GroupRef::parse(&update.refname)
            .and_then(|group| one(plan, &group, &update.name(), &update.new, reporter)),
        updates => Err(anyhow!(
            "a push carries one group operation; this one carried {}: {}",
            updates.len(),
            updates
                .iter()
                .map(|u| u.name().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    delete_pushed(plan, &request.group, reporter);
    result
}

fn delete_pushed(plan: &Plan, group: &[RefUpdate], reporter: &Reporter) {
    for update in group {
        let name = update.name();
        if let Err(err) = refs::delete_ref(&plan.config.repository, &name, &update.new) {
            reporter.warn(&format!("could not delete {name}: {err:#}"));
        }
    }
}

fn other_refs(request: &PushRequest) -> impl Iterator<Item = &RefUpdate> {
    request
        .deploy
        .iter()
        .chain(&request.replay)
        .chain(&request.ignored)
}

/// The state an operation works on.
struct Ctx<'a> {
    plan: &'a Plan,
    gid: &'a str,
    /// The pushed ref, for the log.
    refname: &'a str,
    commit: Oid,
    reporter: &'a Reporter,
}

fn one(
    plan: &Plan,
    group: &GroupRef,
    refname: &str,
    commit: &str,
    reporter: &Reporter,
) -> Result<()> {
    let commit =
        Oid::from_str(commit).with_context(|| format!("`{commit}` is not an object id"))?;
    let ctx = Ctx {
        plan,
        gid: &group.gid,
        refname,
        commit,
        reporter,
    };
    let result = match &group.op {
        Op::Status => status(&ctx),
        op => {
            let started_at = clock::utc_now_rfc3339();
            let mut entry = history::Entry::begin(&started_at, "", refname, &commit.to_string());
            entry.describe_at(&plan.config.repository);
            entry.group = Some(GroupOp {
                gid: group.gid.clone(),
                op: op.name().to_string(),
            });
            match DeployLock::acquire(&plan.layout.lock_file(), plan.config.lock_timeout, reporter)
            {
                Ok(mut lock) => {
                    let result = locked(&ctx, op, &mut entry, &mut lock);
                    finish(&ctx, entry, result, Some(lock))
                }
                Err(err) => finish(&ctx, entry, Err(err), None),
            }
        }
    };
    // The last word, logged or not: without it the primary cannot tell a host that finished
    // from one killed after its last line (a switch's health check still running, say).
    reporter.line(
        &Line::Ended {
            gid: group.gid.clone(),
            failed: result.as_ref().err().map(|err| format!("{err:#}")),
        }
        .to_string(),
    );
    result
}

/// Every operation but `status`, under the lock; fills the log entry in.
fn locked(ctx: &Ctx, op: &Op, entry: &mut history::Entry, lock: &mut DeployLock) -> Result<()> {
    entry.locked_at = clock::utc_now_rfc3339();
    lock.record(Some(&ctx.commit.to_string()))?;
    fault::point("group-locked");
    match op {
        Op::Prepare(fp) => prepare(ctx, fp, Making::Build, entry),
        Op::Replay(fp) => prepare(ctx, fp, Making::Replay, entry),
        Op::Reuse(fp) => prepare(ctx, fp, Making::Reuse, entry),
        Op::Switch => switch_to(ctx, entry),
        Op::Restore => restore(ctx, entry),
        Op::Abort => abort(ctx, entry),
        Op::Status => unreachable!("status takes no lock"),
    }
}

fn open_repo(plan: &Plan) -> Result<Repository> {
    Repository::open_bare(&plan.config.repository).with_context(|| {
        format!(
            "cannot open the repository {}",
            plan.config.repository.display()
        )
    })
}

/// How `prepare` gets the group's build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Making {
    /// A new build, linking unchanged files from the live one.
    Build,
    /// A new build linking nothing, as a single server's `replay` makes.
    Replay,
    /// The newest good build of the commit already on disk (a rollback).
    Reuse,
}

/// `prepare/<fp>`: the pushed commit built up to its switch. `reuse/<fp>`: the newest good
/// build of it already on disk, for a rollback.
fn prepare(ctx: &Ctx, fp: &str, making: Making, entry: &mut history::Entry) -> Result<()> {
    let layout = &ctx.plan.layout;
    // As a single server refuses a push: a freeze holds whoever asks.
    crate::state::freeze::check(layout)?;
    recover::recover(layout, ctx.reporter)
        .context("cleaning up after an interrupted deploy failed")?;
    drop_other_records(layout, ctx.gid);
    let (mine, app) = ctx.plan.config.app_fingerprint();
    if mine != fp {
        ctx.reporter.line(&Line::Config(app).to_string());
        bail!(
            "{} differs from the primary's deploy.yml in the keys every server must share \
             (fingerprint {mine} here, {fp} on the primary); make them the same (the \
             `atomdeploy-group: config` line above shows this host's); nothing was built",
            layout.config_file.display()
        );
    }
    switch::check_latest(layout)?;
    let live = builds::live(layout);
    // Before anything is built: a host that drifted is named before the deploy heals it.
    ctx.reporter.line(
        &Line::Live {
            gid: ctx.gid.to_string(),
            commit: live.as_ref().and_then(|b| builds::revision(layout, b)),
        }
        .to_string(),
    );
    let repo = open_repo(ctx.plan)?;
    let commit = repo
        .find_object(ctx.commit, None)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("{} is not a commit", ctx.commit))?
        .id();
    let short = short_id_of(commit);
    let branch = format!("refs/heads/{}", ctx.plan.config.branch);
    if making != Making::Reuse {
        check_fast_forward(&repo, &branch, commit)?;
    }
    // Every check passed: from here on this server deploys what its primary sends only.
    trust::join(layout)?;
    let (op, build) = if making == Making::Reuse {
        let found = newest_good_build_of(layout, &commit.to_string())?.ok_or_else(|| {
            anyhow!(
                "there is no build of {short} on this host that is not bad, so there is \
                 nothing to reuse; deploy it again instead"
            )
        })?;
        ctx.reporter.line(&format!(
            "atomdeploy: group {}: reusing builds/{found} ({short})",
            ctx.gid
        ));
        ("reuse", found)
    } else {
        ctx.reporter
            .line(&format!("atomdeploy: group {}: preparing {short}", ctx.gid));
        // The deploy branch goes to the commit, as a push to it would move it: libgit2's
        // checkout takes HEAD's tree as what application/ holds, and with an unborn HEAD it
        // rewrites every file in place, so that none stays the file the live build links from
        // and `snapshot: link` copies everything.
        repo.reference(&branch, commit, true, "atomdeploy: group prepare")
            .with_context(|| format!("cannot move {branch} to {short}"))?;
        let d = Deploy {
            plan: ctx.plan,
            repo: &repo,
            commit,
            source: ctx.refname,
            replay: making == Making::Replay,
            previous: live.as_ref(),
            reporter: ctx.reporter,
        };
        ("prepare", pipeline::prepare(&d)?.build)
    };
    let record = new_record(op, &build, commit, live.as_ref());
    if let Err(err) = write_record(layout, ctx.gid, &record) {
        // Without its record no switch can find it: a build of ours goes again.
        if record.unswitched_own_build(layout, &build) {
            let _ = builds::remove_build(layout, &build);
        }
        return Err(err);
    }
    // The group ref goes once this is over: the build's own ref keeps its commit.
    refs::sync_ref(ctx.plan, &repo, ctx.reporter);
    entry.build = Some(build.to_string());
    entry.outcome = Outcome::Prepared;
    ctx.reporter.line(
        &Line::Prepared {
            gid: ctx.gid.to_string(),
            build: build.to_string(),
            commit: commit.to_string(),
        }
        .to_string(),
    );
    fault::point("group-prepared");
    Ok(())
}

/// `receive.denyNonFastForwards` holds for the primary as for a developer's push: the deploy
/// branch never goes back to an older commit (nor to one not built on it).
fn check_fast_forward(repo: &Repository, branch: &str, commit: Oid) -> Result<()> {
    let denied = repo
        .config()
        .and_then(|c| c.get_bool("receive.denyNonFastForwards"))
        .unwrap_or(false);
    let Ok(current) = repo.refname_to_id(branch) else {
        return Ok(());
    };
    if !denied || current == commit || repo.graph_descendant_of(commit, current)? {
        return Ok(());
    }
    bail!(
        "{} is not a fast-forward of {branch} ({} here), and this repository's \
         receive.denyNonFastForwards forbids moving it back; nothing was built (deploy a newer \
         commit, or roll the group back with a rollback, which moves no branch)",
        short_id_of(commit),
        short_id_of(current)
    )
}

fn new_record(op: &str, build: &BuildName, commit: Oid, previous: Option<&BuildName>) -> Record {
    Record {
        op: op.to_string(),
        build: build.to_string(),
        commit: commit.to_string(),
        previous: previous.map(ToString::to_string),
        prepared_at: clock::utc_now_rfc3339(),
        switched_at: None,
    }
}

fn short_id_of(commit: Oid) -> String {
    short_id(&commit.to_string()).to_string()
}

/// The newest build of `commit` in builds/ that is not bad.
fn newest_good_build_of(layout: &Layout, commit: &str) -> Result<Option<BuildName>> {
    Ok(builds::list(layout)?.into_iter().rev().find(|b| {
        builds::revision(layout, b).as_deref() == Some(commit) && !builds::is_bad(layout, b)
    }))
}

/// Group refs a killed hook did not get to delete (`pushed` aside, which this hook deletes
/// when done): any group push clears them, so that the same operation can be pushed again
/// (git does nothing for a push of a ref to the commit it names already). Another group
/// push being handled meanwhile loses nothing: its hook finds its ref gone, which is fine.
fn drop_stale_group_refs(plan: &Plan, pushed: &[RefUpdate], reporter: &Reporter) {
    let Ok(repo) = open_repo(plan) else {
        return;
    };
    let Ok(references) = repo.references_glob(&format!("{REF_PREFIX}*")) else {
        return;
    };
    let stale: Vec<(String, String)> = references
        .flatten()
        .filter_map(|r| Some((r.name().ok()?.to_string(), r.target()?.to_string())))
        .filter(|(name, _)| !pushed.iter().any(|u| u.refname == name.as_bytes()))
        .collect();
    for (name, target) in stale {
        if let Err(err) = refs::delete_ref(&plan.config.repository, &name, &target) {
            reporter.warn(&format!(
                "could not delete {name}, left by a killed hook: {err:#}"
            ));
        }
    }
}

/// The group's record, which must be of the pushed commit.
fn record_of(ctx: &Ctx) -> Result<Record> {
    let record = read_record(&ctx.plan.layout, ctx.gid).ok_or_else(|| {
        anyhow!(
            "group {} has nothing prepared on this host (never prepared, aborted, or \
             replaced by a later group or deploy)",
            ctx.gid
        )
    })?;
    if record.commit != ctx.commit.to_string() {
        bail!(
            "group {} prepared {} here, not the pushed {}",
            ctx.gid,
            short_id(&record.commit),
            short_id_of(ctx.commit)
        );
    }
    Ok(record)
}

fn build_name(name: &str) -> Result<BuildName> {
    BuildName::parse(name).ok_or_else(|| anyhow!("`{name}` in a group record is not a build name"))
}

/// `switch`: the group's build goes live; the `switched` line carries the rename's instant.
fn switch_to(ctx: &Ctx, entry: &mut history::Entry) -> Result<()> {
    let layout = &ctx.plan.layout;
    let record = record_of(ctx)?;
    let build = build_name(&record.build)?;
    entry.build = Some(build.to_string());
    recover::recover_sparing(layout, Some(&build), ctx.reporter)
        .context("cleaning up after an interrupted deploy failed")?;
    let build_dir = layout.build_dir(&build);
    if builds::revision(layout, &build).as_deref() != Some(record.commit.as_str()) {
        bail!(
            "builds/{build}, prepared by group {}, is gone or not of {}; nothing was switched",
            ctx.gid,
            short_id(&record.commit)
        );
    }
    switch::check_latest(layout)?;
    let previous = record.previous.as_deref().map(build_name).transpose()?;
    entry.from = previous.as_ref().map(ToString::to_string);
    let repo = open_repo(ctx.plan)?;
    let d = Deploy {
        plan: ctx.plan,
        repo: &repo,
        commit: ctx.commit,
        source: ctx.refname,
        replay: false,
        previous: previous.as_ref(),
        reporter: ctx.reporter,
    };
    let prepared = Prepared {
        build: build.clone(),
        build_dir,
        previous: previous.clone(),
    };
    let heard = |build: &BuildName, ns: u64| {
        ctx.reporter.line(
            &Line::Switched {
                gid: ctx.gid.to_string(),
                build: build.to_string(),
                ns,
            }
            .to_string(),
        );
    };
    ctx.reporter.line(&format!(
        "atomdeploy: group {}: switching to builds/{build}",
        ctx.gid
    ));
    let deployed = pipeline::go_live(&d, prepared, GoLive::Group { switched: &heard })?;
    entry.switched_at = Some(deployed.switched_at.clone());
    let record = Record {
        switched_at: Some(deployed.switched_at.clone()),
        ..record
    };
    if let Err(err) = write_record(layout, ctx.gid, &record) {
        ctx.reporter.warn(&format!("{err:#}"));
    }
    refs::sync_ref(ctx.plan, &repo, ctx.reporter);
    match deployed.problem {
        Problem::Unhealthy(err) => {
            entry.outcome = Outcome::Unhealthy;
            ctx.reporter.line(
                &Line::Unhealthy {
                    gid: ctx.gid.to_string(),
                    why: format!("{err:#}"),
                }
                .to_string(),
            );
            Err(err.context(format!(
                "builds/{build} is live; the primary decides whether the group goes back"
            )))
        }
        problem => {
            entry.outcome = Outcome::Deployed;
            ctx.reporter.line(&format!(
                "atomdeploy: group {}: builds/{build} ({}) is live",
                ctx.gid,
                short_id(&record.commit)
            ));
            problem.into_result(&build)
        }
    }
}

/// `restore`: back to the build live before the group's, which is marked bad when it was
/// made for the group (a reused build is an older good one and stays good).
fn restore(ctx: &Ctx, entry: &mut history::Entry) -> Result<()> {
    let layout = &ctx.plan.layout;
    recover::recover(layout, ctx.reporter)
        .context("cleaning up after an interrupted deploy failed")?;
    let record = record_of(ctx)?;
    let build = build_name(&record.build)?;
    let previous = record.previous.as_deref().map(build_name).transpose()?;
    entry.from = Some(build.to_string());
    entry.build = previous.as_ref().map(ToString::to_string);
    switch::check_latest(layout)?;
    let live = builds::live(layout);
    let mut opcache = None;
    let groups_build_live = live.as_ref() == Some(&build)
        && builds::revision(layout, &build).as_deref() == Some(record.commit.as_str());
    if groups_build_live {
        let Some(previous) = &previous else {
            if record.is_own_build() {
                builds::mark_bad(layout, &build)?;
            }
            bail!(
                "nothing was live on this host before builds/{build}, so there is nothing to \
                 go back to; builds/{build} stays live"
            );
        };
        if !layout.build_dir(previous).is_dir() {
            bail!(
                "builds/{previous}, live before group {}, is gone; builds/{build} stays live",
                ctx.gid
            );
        }
        if record.is_own_build() {
            builds::mark_bad(layout, &build)
                .with_context(|| format!("cannot mark builds/{build} bad"))?;
        }
        ctx.reporter.line(&format!(
            "atomdeploy: group {}: going back from builds/{build} to builds/{previous}",
            ctx.gid
        ));
        let restored = restore::restore(ctx.plan, &build, previous, ctx.reporter)?;
        entry.switched_at = Some(restored.switched_at);
        opcache = restored.opcache;
    } else if live == previous {
        // The group's build never went live here: nothing to switch, only to remove.
        if record.unswitched_own_build(layout, &build) {
            builds::remove_build(layout, &build)
                .with_context(|| format!("cannot remove builds/{build}"))?;
        }
        if previous.is_none() {
            drop_record(layout, ctx.gid);
            bail!(
                "nothing is live on this host, as before group {}; builds/{build} never went live and is gone",
                ctx.gid
            );
        }
    } else {
        bail!(
            "{} is live, neither group {}'s builds/{build} nor the build before it; nothing \
             was changed",
            live.map_or("nothing".to_string(), |b| format!("builds/{b}")),
            ctx.gid
        );
    }
    drop_record(layout, ctx.gid);
    refs::open_and_sync_ref(ctx.plan, ctx.reporter);
    entry.outcome = Outcome::RolledBack;
    let back = previous.expect("each branch above returned unless something was live before");
    ctx.reporter.line(
        &Line::Restored {
            gid: ctx.gid.to_string(),
            build: back.to_string(),
        }
        .to_string(),
    );
    match opcache {
        Some(err) => Err(anyhow!(
            "{err:#}; builds/{back} is live, but PHP may still run the code of builds/{build}"
        )),
        None => Ok(()),
    }
}

/// `abort`: the group's build is removed unless it is live (or was on disk before the group,
/// for `reuse`), and its record dropped. Done already is fine.
fn abort(ctx: &Ctx, entry: &mut history::Entry) -> Result<()> {
    let layout = &ctx.plan.layout;
    if let Some(record) = read_record(layout, ctx.gid) {
        let build = build_name(&record.build)?;
        entry.build = Some(build.to_string());
        if record.unswitched_own_build(layout, &build) {
            builds::remove_build(layout, &build)
                .with_context(|| format!("cannot remove builds/{build}"))?;
            ctx.reporter.line(&format!(
                "atomdeploy: group {}: removed builds/{build}, which never went live",
                ctx.gid
            ));
        }
        drop_record(layout, ctx.gid);
    }
    recover::recover(layout, ctx.reporter)
        .context("cleaning up after an interrupted deploy failed")?;
    refs::open_and_sync_ref(ctx.plan, ctx.reporter);
    entry.outcome = Outcome::Aborted;
    ctx.reporter.line(
        &Line::Aborted {
            gid: ctx.gid.to_string(),
        }
        .to_string(),
    );
    Ok(())
}

/// `status`: what is live and how this host builds, without the lock (it reads only).
fn status(ctx: &Ctx) -> Result<()> {
    let layout = &ctx.plan.layout;
    let live = builds::live(layout);
    let (fingerprint, config) = ctx.plan.config.app_fingerprint();
    let status = Status {
        commit: live.as_ref().and_then(|b| builds::revision(layout, b)),
        bad: live.as_ref().is_some_and(|b| builds::is_bad(layout, b)),
        build: live.map(|b| b.to_string()),
        fingerprint,
        config,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    ctx.reporter
        .line(&Line::Status(Box::new(status)).to_string());
    Ok(())
}

/// Logs the attempt with its output, as a deploy does, then lets go of the lock (after which
/// the old builds' files are deleted, as after a deploy: the primary's push does not wait).
fn finish(
    ctx: &Ctx,
    mut entry: history::Entry,
    result: Result<()>,
    lock: Option<DeployLock>,
) -> Result<()> {
    let layout = &ctx.plan.layout;
    if let Err(err) = &result {
        let message = format!("{err:#}");
        ctx.reporter.record_error(&message);
        entry.error = Some(message);
    }
    entry.steps = crate::receive::deploy::step_times(ctx.reporter);
    entry.finished_at = clock::utc_now_rfc3339();
    entry.seconds = ctx.reporter.elapsed().as_secs_f64();
    // A prepared build's output is kept with it, and a switch's added after it.
    let build = entry
        .build
        .as_deref()
        .and_then(BuildName::parse)
        .filter(|b| layout.build_dir(b).is_dir());
    let kept = match (&entry.outcome, build) {
        (Outcome::Failed, _) | (_, None) => {
            history::save_output(layout, None, &entry.started_at, &ctx.reporter.transcript())
        }
        (_, Some(build)) => append_output(layout, &build, &ctx.reporter.transcript()),
    };
    match kept {
        Ok(name) => entry.output = Some(name),
        Err(e) => ctx
            .reporter
            .warn(&format!("could not keep the output: {e:#}")),
    }
    if let Err(e) = history::append(layout, &entry) {
        ctx.reporter
            .warn(&format!("could not write the deploy log: {e:#}"));
    }
    if let Some(lock) = lock {
        crate::steps::cleanup::after_the_push(layout, lock, entry.output.as_deref(), ctx.reporter);
    }
    result
}

fn append_output(layout: &Layout, build: &BuildName, text: &str) -> Result<String> {
    use std::io::Write;
    let name = format!("{build}.log");
    fs::create_dir_all(layout.output_dir())?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.output_dir().join(&name))?;
    file.write_all(text.as_bytes())?;
    Ok(name)
}
