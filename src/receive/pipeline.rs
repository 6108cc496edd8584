//! Steps 3 to 11 of a deploy (see [`crate::steps`]), from the checkout to the cleanup: what
//! runs once `deploy` holds the lock and has decided what to build. Until the switch, any
//! failure leaves `latest` and `builds/` as they were.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::config::SnapshotMode;
use crate::infra::clock;
use crate::infra::fault;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::manifest::Manifest;
use crate::steps::Deploy;
use crate::steps::commands::{self, DeployEnv};
use crate::steps::composer::{self, Decision, Outcome};
use crate::steps::restore;
use crate::steps::snapshot::{self, Linking, Snapshot};
use crate::steps::{
    self, build, checkout, cleanup, health, opcache, preflight, shared, submodules, switch,
};

/// A new build that went live, and what went wrong after it did.
pub(crate) struct Deployed {
    pub(crate) build: BuildName,
    pub(crate) switched_at: String,
    /// The rename's instant in CLOCK_REALTIME nanoseconds (see [`switch::SwitchedAt`]).
    pub(crate) switched_ns: u64,
    pub(crate) problem: Problem,
}

/// What went wrong once the new build was live.
pub(crate) enum Problem {
    None,
    /// after_switch failed: reported, not undone.
    AfterSwitch(anyhow::Error),
    /// php-fpm's opcache could not be reset (`reset_opcache:`): reported like a failing
    /// after_switch; the build stays live, as rolling back would need the same reset.
    Opcache(anyhow::Error),
    /// The health check failed: the build was rolled back (or could not be); in a group, it
    /// stays live for the primary to decide.
    Unhealthy(anyhow::Error),
}

impl Problem {
    /// How the deploy of `build`, live now, ends: the push fails on any problem, and says the
    /// build stays live.
    pub(crate) fn into_result(self, build: &BuildName) -> Result<()> {
        match self {
            Problem::None => Ok(()),
            Problem::AfterSwitch(err) => {
                Err(err.context(format!("after_switch failed; builds/{build} is live")))
            }
            Problem::Opcache(err) => Err(anyhow!(
                "{err:#}; builds/{build} is live, but PHP may still run the previous build's code"
            )),
            Problem::Unhealthy(err) => Err(err),
        }
    }
}

/// A build made up to its switch: published in builds/, before_switch run, never live yet.
pub(crate) struct Prepared {
    pub(crate) build: BuildName,
    pub(crate) build_dir: PathBuf,
    /// The build that was live when it was made, which it replaces.
    pub(crate) previous: Option<BuildName>,
}

/// How [`go_live`] treats what follows the switch.
#[derive(Clone, Copy)]
pub(crate) enum GoLive<'a> {
    /// A single server: a build that fails its health check is rolled back at once.
    Alone,
    /// One server of a group: `switched` hears of the switch right after the rename (with its
    /// instant in nanoseconds), and an unhealthy build stays live, since only the primary
    /// knows whether the other servers switched too. The build that was live before is kept
    /// through the cleanup, for the primary's `restore`.
    Group {
        switched: &'a dyn Fn(&BuildName, u64),
    },
}

/// Runs steps 3 to 11 in order: [`prepare`], [`release`], [`go_live`].
pub(crate) fn pipeline(d: &Deploy) -> Result<Deployed> {
    let prepared = prepare(d)?;
    release(d, &prepared)?;
    go_live(d, prepared, GoLive::Alone)
}

/// Everything up to the switch: checkout, composer, the build step, snapshot, shared,
/// keep_assets, publishing into builds/, before_switch, preflight. On failure nothing is live
/// that was not before, and the build is gone from builds/.
pub(crate) fn prepare(d: &Deploy) -> Result<Prepared> {
    let layout = &d.plan.layout;
    let config = &d.plan.config;
    // Read before anything changes: an auth.json others can read, or that is not JSON,
    // fails the deploy with application/ and the live build untouched.
    let composer_auth = match &config.composer {
        Some(_) => composer::ServerAuth::read(layout).context("composer failed")?,
        None => None,
    };
    let undone = build::around_checkout(layout, config.build.is_some(), || checkout_step(d))?;
    // Composer's look at vendor/ and the read of the live build's manifest, side by side:
    // both only read, and nothing writes before composer runs. (The manifest, much the larger,
    // on this thread: see `composer_while_copying` on memory.)
    let (inputs, previous_manifest) = std::thread::scope(|scope| {
        let running = config
            .composer
            .as_ref()
            .map(|settings| (settings, scope.spawn(|| composer::vendor_print(layout))));
        let manifest = SnapshotInputs::previous_manifest(d);
        let inputs = running.map(|(settings, vendor)| {
            (
                settings,
                vendor.join().expect("the fingerprint does not panic"),
            )
        });
        (inputs, manifest)
    });
    let decision = match inputs {
        Some((settings, vendor)) => Some(
            composer::decide_for(d.repo, d.commit, &config.app_dir, layout, settings, vendor)
                .context("composer failed")?
                .with_auth(composer_auth),
        ),
        None => None,
    };
    let build_decision = match &config.build {
        Some(settings) => {
            let force = build::Force::new(d.replay, undone);
            Some(
                build::decide(d.repo, d.commit, &config.app_dir, layout, settings, force)
                    .context("build failed")?,
            )
        }
        None => None,
    };
    let name = BuildName::next(time::OffsetDateTime::now_utc(), &builds::list(layout)?);
    let snap = composer_and_snapshot(d, decision, build_decision, previous_manifest)?;
    shared_step(d, &snap)?;
    // keep_assets: before the build is published, so that it is complete at the switch.
    steps::assets::step(d, &name, snap.path())?;
    let build_dir = publish(d, &name, snap)?;
    let prepared = Prepared {
        build: name,
        build_dir,
        previous: d.previous.cloned(),
    };
    before_switch(d, &prepared)
        .and_then(|()| preflight(d, &prepared))
        .inspect_err(|_| discard(d, &prepared.build))?;
    Ok(prepared)
}

/// `release:` in the new build, once per deploy, right before the switch. A failure removes
/// the build: nothing went live.
pub(crate) fn release(d: &Deploy, prepared: &Prepared) -> Result<()> {
    let config = &d.plan.config;
    if config.release.is_empty() {
        return Ok(());
    }
    commands_step(d, prepared, "release", &config.release)
        .inspect_err(|_| discard(d, &prepared.build))
}

/// The switch, then php-fpm's opcache reset, after_switch, the health check and the cleanup.
/// Only a failed switch is an error (the build is removed then); what fails once the build is
/// live is the returned [`Problem`].
pub(crate) fn go_live(d: &Deploy, prepared: Prepared, mode: GoLive) -> Result<Deployed> {
    let layout = &d.plan.layout;
    let config = &d.plan.config;
    let name = prepared.build;
    let commit = d.commit.to_string();
    let env = DeployEnv {
        root: &layout.root,
        build: &prepared.build_dir,
        commit: &commit,
    };
    let switched =
        switch::switch_step_at(layout, &name, d.reporter).inspect_err(|_| discard(d, &name))?;
    if let GoLive::Group { switched: heard } = mode {
        heard(&name, switched.ns);
    }
    let (switched_at, switched_ns) = (switched.at, switched.ns);
    // Before after_switch and the health check, so that both meet the new build's code.
    let opcache = config
        .reset_opcache
        .as_ref()
        .and_then(|fpm| opcache::reset_step(layout, fpm, d.reporter));
    let problem = match (after_switch(d, &env), opcache) {
        (Problem::None, Some(err)) => Problem::Opcache(err),
        // after_switch's failure ends the deploy; this one is shown now, not lost.
        (problem, Some(err)) => {
            d.reporter.error(&format!("{err:#}"));
            problem
        }
        (problem, None) => problem,
    };
    if let Some(check) = &config.healthcheck {
        let step = d.reporter.step("healthcheck");
        fault::point("healthcheck");
        match health::check(check, &layout.root, &prepared.build_dir, d.reporter) {
            Ok(healthy) => steps::close(d.reporter, step, Duration::ZERO, &healthy),
            Err(err) => {
                let err = match mode {
                    GoLive::Alone => unhealthy(d, &name, err),
                    GoLive::Group { .. } => err.context("health check failed"),
                };
                return Ok(Deployed {
                    problem: Problem::Unhealthy(err),
                    build: name,
                    switched_at,
                    switched_ns,
                });
            }
        }
    }
    let spare = match mode {
        GoLive::Alone => None,
        GoLive::Group { .. } => prepared.previous.as_ref(),
    };
    cleanup_step(d, spare);
    Ok(Deployed {
        build: name,
        switched_at,
        switched_ns,
        problem,
    })
}

/// Removes a build that never went live, so that only builds that made it stay in builds/.
/// (Checked, not assumed: the one build that must never be removed is the live one.)
pub(crate) fn discard(d: &Deploy, build: &BuildName) {
    let layout = &d.plan.layout;
    if builds::live(layout).as_ref() != Some(build)
        && let Err(cleanup) = builds::remove_build(layout, build)
    {
        d.reporter
            .warn(&format!("could not remove builds/{build}: {cleanup:#}"));
    }
}

/// Returns whether the checkout removed or rewrote files in application/ that were not the
/// last commit's (what the build step may have written).
fn checkout_step(d: &Deploy) -> Result<bool> {
    let step = d.reporter.step("checkout");
    let layout = &d.plan.layout;
    let composer = d.plan.config.composer.is_some();
    // A handle of its own, dropped when the checkout is done: what libgit2 keeps for it (the
    // objects it read, the pack windows it mapped) would otherwise stay through the snapshot,
    // and add about 8 MB to the deploy's peak at 50,000 files.
    let repo = git2::Repository::open_bare(d.repo.path())
        .with_context(|| format!("checkout failed: cannot open {}", d.repo.path().display()))?;
    let repo = &repo;
    // Fetched before application/ is touched: a submodule that cannot be had fails the
    // deploy with nothing changed. (Each fetch is limited like a deploy command.)
    let modules = submodules::resolve(
        repo,
        d.commit,
        &d.plan.config.app_dir,
        &submodules::Fetching {
            layout,
            timeout: d.plan.config.command_timeout,
            reporter: d.reporter,
        },
    )
    .context("checkout failed")?;
    let excluded = &d.plan.config.exclude;
    let mut done = checkout::checkout(
        repo,
        d.commit,
        &d.plan.config.app_dir,
        layout,
        composer,
        excluded,
        d.reporter,
    )
    .context("checkout failed")?;
    submodules::checkout_all(&modules, layout, &mut done, d.reporter).context("checkout failed")?;
    for warning in done.warnings() {
        d.reporter.warn(&warning);
    }
    steps::close(d.reporter, step, Duration::ZERO, &done);
    Ok(!done.overwritten.is_empty() || !done.added_by_hand.is_empty())
}

/// What a snapshot reads besides application/, kept here for as long as the snapshot borrows
/// it through [`snapshot::Options`].
struct SnapshotInputs {
    previous_dir: Option<PathBuf>,
    /// The previous build's manifest: a map of every file, dropped as soon as the snapshot is
    /// made.
    previous_manifest: Manifest,
    never_link: Vec<PathBuf>,
    later: Vec<PathBuf>,
    exclude: Vec<PathBuf>,
    linking: Linking,
}

impl SnapshotInputs {
    fn new(d: &Deploy, later: Vec<PathBuf>, previous_manifest: Manifest) -> SnapshotInputs {
        let config = &d.plan.config;
        SnapshotInputs {
            previous_dir: d.previous.map(|b| d.plan.layout.build_dir(b)),
            previous_manifest,
            never_link: config.shared.iter().map(|e| e.path.clone()).collect(),
            later,
            exclude: config.exclude.clone(),
            linking: Self::linking(d),
        }
    }

    fn linking(d: &Deploy) -> Linking {
        // `replay` links nothing: it is how a build equal to a fresh checkout is made, whatever
        // happened to the builds on disk.
        match d.plan.config.snapshot {
            SnapshotMode::Copy => Linking::Copy,
            SnapshotMode::Link if d.replay => Linking::Replay,
            SnapshotMode::Link => Linking::Link,
        }
    }

    /// The live build's manifest, when the snapshot links from it.
    fn previous_manifest(d: &Deploy) -> Manifest {
        match d.previous {
            Some(previous) if Self::linking(d) == Linking::Link => {
                Manifest::read(&d.plan.layout.manifest_file(previous))
            }
            _ => Manifest::default(),
        }
    }

    fn options(&self) -> snapshot::Options<'_> {
        snapshot::Options {
            link_from: self
                .previous_dir
                .as_deref()
                .filter(|_| self.linking == Linking::Link)
                .map(|dir| (dir, &self.previous_manifest)),
            read_only: self.linking != Linking::Copy,
            never_link: &self.never_link,
            later: &self.later,
            exclude: &self.exclude,
            progress: self.later.is_empty(),
        }
    }
}

/// Steps 4 and 5: composer, the build step, then the snapshot; or composer and the snapshot
/// at once, when composer will write only its autoloader and the build step nothing,
/// everything else being copied meanwhile.
fn composer_and_snapshot(
    d: &Deploy,
    decision: Option<Decision>,
    build_decision: Option<build::Decision>,
    previous_manifest: Manifest,
) -> Result<Snapshot> {
    let layout = &d.plan.layout;
    // A build step that runs writes into application/ after composer: nothing may be copied
    // before it has finished.
    let later = match (&d.plan.config.composer, &decision) {
        (Some(settings), Some(decision))
            if !build_decision.as_ref().is_some_and(build::Decision::runs) =>
        {
            composer::writes_only(decision, &settings.args, &layout.application)
        }
        _ => None,
    }
    .unwrap_or_default();
    let inputs = SnapshotInputs::new(d, later, previous_manifest);
    let options = inputs.options();
    let mut early = None;
    if let (Some(settings), Some(decision)) = (&d.plan.config.composer, decision) {
        let step = d.reporter.step("composer");
        let run = || composer::run(decision, layout, settings, d.reporter);
        let ran = if options.later.is_empty() {
            run()
        } else {
            let (ran, snap) = composer_while_copying(d, &options, run);
            early = Some(snap);
            ran
        };
        let outcome = ran.context("composer failed")?;
        steps::close(d.reporter, step, Duration::ZERO, &outcome);
    }
    if let (Some(settings), Some(decision)) = (&d.plan.config.build, build_decision) {
        let step = d.reporter.step("build");
        let outcome = build::run(decision, layout, settings, d.reporter).context("build failed")?;
        steps::close(d.reporter, step, Duration::ZERO, &outcome);
    }

    let step = d.reporter.step("snapshot");
    let commit = d.commit.to_string();
    let (mut snap, meanwhile) = match early {
        Some((snap, took)) => (snap.context("snapshot failed")?, took),
        None => (
            snapshot::snapshot(layout, &commit, &options, d.reporter).context("snapshot failed")?,
            Duration::ZERO,
        ),
    };
    snap.add(&layout.application, &inputs.later, &options, d.reporter)
        .context("snapshot failed")?;
    let linking = inputs.linking;
    // The previous build's manifest is a map of every file: let it go before what follows.
    drop(inputs);
    if let Some(warning) = snap.changed_warning() {
        d.reporter.warn(&warning);
    }
    let summary = snap.summary(linking, meanwhile);
    steps::close(d.reporter, step, meanwhile, &summary);
    Ok(snap)
}

/// The overlap: composer waits on its child in a thread of its own while this one copies
/// everything composer will not write. Returns composer's outcome, and the snapshot with the
/// time it took.
fn composer_while_copying(
    d: &Deploy,
    options: &snapshot::Options,
    run: impl FnOnce() -> Result<Outcome> + Send,
) -> (Result<Outcome>, (Result<Snapshot>, Duration)) {
    let commit = d.commit.to_string();
    // The copy stays on this thread, where the memory the checkout freed is reused (a new
    // thread's allocator arena would start empty and add to the peak).
    std::thread::scope(|scope| {
        let composer = scope.spawn(run);
        let started = Instant::now();
        let snap = snapshot::snapshot(&d.plan.layout, &commit, options, d.reporter);
        // Start writing the copy out while composer still runs, so that the flush before the
        // switch finds little left to do. (It is repeated there.)
        if let Ok(snap) = &snap {
            let _ = switch::syncfs(snap.path());
        }
        let took = started.elapsed();
        let ran = composer.join().expect("composer's thread does not panic");
        (ran, (snap, took))
    })
}

fn shared_step(d: &Deploy, snap: &Snapshot) -> Result<()> {
    let entries = &d.plan.config.shared;
    if entries.is_empty() {
        return Ok(());
    }
    let step = d.reporter.step("shared");
    let linked = shared::link_all(&d.plan.layout, snap.path(), entries)
        .context("linking shared entries failed")?;
    steps::close(d.reporter, step, Duration::ZERO, &linked);
    Ok(())
}

/// Records the build and renames it into `builds/`. Returns its directory.
fn publish(d: &Deploy, name: &BuildName, mut snap: Snapshot) -> Result<PathBuf> {
    let layout = &d.plan.layout;
    let meta = builds::Meta {
        commit: d.commit.to_string(),
        source: d.source.to_string(),
        deployed_at: clock::utc_now_rfc3339(),
        bad: false,
        went_live: false,
    };
    fault::point("snapshot-done");
    builds::write_meta(layout, name, &meta).context("snapshot failed")?;
    snap.write_manifest(&layout.manifest_file(name))
        .context("snapshot failed")?;
    let build_dir = snap
        .publish(&layout.build_dir(name))
        .context("snapshot failed")?;
    fault::point("published");
    Ok(build_dir)
}

/// Step 7: before_switch, in the published build.
fn before_switch(d: &Deploy, prepared: &Prepared) -> Result<()> {
    let config = &d.plan.config;
    if config.before_switch.is_empty() {
        return Ok(());
    }
    commands_step(d, prepared, "before_switch", &config.before_switch)
}

/// `preflight:`: the complete build (before_switch has run) answers its pages before it may go
/// live. Part of [`prepare`], so that in a group every server checks its own build before
/// any server switches.
fn preflight(d: &Deploy, prepared: &Prepared) -> Result<()> {
    match &d.plan.config.preflight {
        Some(settings) => preflight::step(settings, &prepared.build_dir, d.reporter),
        None => Ok(()),
    }
}

/// Runs a key's commands in the published build as the step `name` (which also names its
/// fault point and its error).
fn commands_step(
    d: &Deploy,
    prepared: &Prepared,
    name: &'static str,
    list: &[String],
) -> Result<()> {
    let step = d.reporter.step(name);
    fault::point(name);
    let commit = d.commit.to_string();
    let env = DeployEnv {
        root: &d.plan.layout.root,
        build: &prepared.build_dir,
        commit: &commit,
    };
    commands::run_commands(list, &env, d.plan.config.command_timeout, d.reporter)
        .with_context(|| format!("{name} failed"))?;
    d.reporter.done(step, "");
    Ok(())
}

fn after_switch(d: &Deploy, env: &DeployEnv) -> Problem {
    let config = &d.plan.config;
    if config.after_switch.is_empty() {
        return Problem::None;
    }
    let step = d.reporter.step("after_switch");
    fault::point("after_switch");
    match commands::run_commands(
        &config.after_switch,
        env,
        config.command_timeout,
        d.reporter,
    ) {
        Ok(()) => {
            d.reporter.done(step, "");
            Problem::None
        }
        // Reported once, as the deploy's last line, after the summary.
        Err(err) => Problem::AfterSwitch(err),
    }
}

/// The new build failed its health check: back to the build that was live before, if any.
/// Returns the error that ends the deploy.
fn unhealthy(d: &Deploy, build: &BuildName, err: anyhow::Error) -> anyhow::Error {
    let err = err.context("health check failed");
    let Some(previous) = d.previous else {
        if let Err(mark) = builds::mark_bad(&d.plan.layout, build) {
            d.reporter
                .warn(&format!("could not mark builds/{build} bad: {mark:#}"));
        }
        return err.context(format!(
            "there is no earlier build to roll back to; builds/{build} stays live"
        ));
    };
    match restore::restore(d.plan, build, previous, d.reporter) {
        Ok(restored) => {
            let err = err.context(format!(
                "rolled back to builds/{previous}; builds/{build} is marked bad"
            ));
            match restored.opcache {
                Some(reset) => anyhow!("{err:#}; and {reset:#}"),
                None => err,
            }
        }
        Err(restore) => anyhow!("{restore:#}").context(format!(
            "{err:#}; rolling back to builds/{previous} failed too"
        )),
    }
}

/// `spare`: a build kept whatever keep_builds says (see [`GoLive::Group`]). The builds leave
/// builds/ here; their files are deleted once the push has its answer (see [`cleanup`]).
fn cleanup_step(d: &Deploy, spare: Option<&BuildName>) {
    let step = d.reporter.step("cleanup");
    let keep = d.plan.config.keep_builds;
    match cleanup::cleanup(&d.plan.layout, keep, spare) {
        Ok(cleaned) => steps::close(d.reporter, step, Duration::ZERO, &cleaned),
        Err(err) => d
            .reporter
            .warn(&format!("cleanup failed (the new build is live): {err:#}")),
    }
}
