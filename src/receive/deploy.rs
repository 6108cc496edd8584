//! A deploy: steps 1, 2 and 12 (see [`crate::steps`]) around the pipeline. Under the lock,
//! it decides what to build, runs [`pipeline()`] and logs the attempt, whatever its end.

use anyhow::{Context, Result};
use git2::{ErrorCode, Oid, Repository};

use crate::infra::clock;
use crate::infra::fault;
use crate::infra::lock::DeployLock;
use crate::infra::report::{self, Reporter};
use crate::receive::pipeline::{Deployed, Problem, pipeline};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::history::{self, Outcome, StepTime};
use crate::state::plan::Plan;
use crate::state::recover;
use crate::state::refs;
use crate::steps::switch;

/// What to deploy.
pub(crate) struct Request<'a> {
    /// The ref or command that asked, for the log.
    pub(crate) source: &'a str,
    /// A revision to deploy instead of the deploy branch's head.
    pub(crate) rev: Option<&'a str>,
    /// Make a new build even when the commit is live already (`replay`).
    pub(crate) always_new: bool,
}

/// Deploys, under the lock, the deploy branch's head as it is once the lock is ours (or the
/// revision asked for). Taking the head under the lock, not the commit a push named, is what
/// makes concurrent pushes end with the branch head live whatever order their hooks ran in.
pub(crate) fn deploy(plan: &Plan, request: &Request, reporter: &Reporter) -> Result<()> {
    let layout = &plan.layout;
    let config = &plan.config;
    let started_at = clock::utc_now_rfc3339();
    let mut lock = DeployLock::acquire(&layout.lock_file(), config.lock_timeout, reporter)
        .inspect_err(|err| {
            let commit = asked_commit(plan, request).unwrap_or_default();
            log_refusal(plan, request, &started_at, &commit, err, reporter);
        })?;
    let locked_at = clock::utc_now_rfc3339();
    // Under the lock, so a push that waited for a deploy still honours a freeze set meanwhile;
    // before recovery, so that a refused push touches neither application/ nor builds/.
    if let Err(err) = crate::state::freeze::check(&plan.layout) {
        drop(lock);
        return Err(refuse_frozen(plan, request, &started_at, err, reporter));
    }
    fault::point("locked");
    recover::recover(layout, reporter).context("cleaning up after an interrupted deploy failed")?;

    let repo = Repository::open_bare(&config.repository)
        .with_context(|| format!("cannot open the repository {}", config.repository.display()))?;
    let Some(commit) = resolve(&repo, &config.branch, request.rev, reporter)? else {
        return Ok(());
    };
    let commit_id = commit.to_string();
    let short = report::short_id(&commit_id);
    lock.record(Some(&commit_id))?;
    if let Err(err) = switch::check_latest(layout) {
        drop(lock);
        log_refusal(plan, request, &started_at, &commit_id, &err, reporter);
        return Err(err);
    }

    let live = builds::live(layout);
    let live_commit = live.as_ref().and_then(|l| builds::revision(layout, l));
    let mut entry = history::Entry::begin(&started_at, &locked_at, request.source, &commit_id);
    entry.describe(&repo);
    if !request.always_new && live_commit.as_deref() == Some(commit_id.as_str()) {
        let live = live.expect("a live commit has a live build");
        reporter.line(&format!(
            "atomdeploy: {short} is already live as builds/{live}; nothing to do"
        ));
        entry.build = Some(live.to_string());
        entry.outcome = Outcome::Unchanged;
        // A group: hosts a killed deploy or an exclusion left behind catch up.
        if !config.hosts.is_empty() {
            match crate::receive::group::local::unchanged(plan, &commit_id, reporter) {
                Ok(group) => entry.hosts = group.hosts,
                Err(err) => {
                    entry.outcome = Outcome::Failed;
                    return finish(plan, &repo, entry, reporter, Some(err), lock);
                }
            }
        }
        return finish(plan, &repo, entry, reporter, None, lock);
    }

    // A replay of a tag's commit (`git push production v1.0~0:refs/heads/replay`) is that
    // tag's deploy to whoever reads the output, the log or `builds`.
    if request.rev.is_some() {
        entry.tag = history::tags_of(&repo, commit);
    }
    let what = match &entry.tag {
        Some(tag) => format!("{tag} ({short})"),
        None => short.to_string(),
    };
    reporter.line(&format!(
        "atomdeploy: deploying {what} from {}",
        request.source
    ));
    let d = crate::steps::Deploy {
        plan,
        repo: &repo,
        commit,
        source: request.source,
        replay: request.always_new,
        previous: live.as_ref(),
        reporter,
    };
    let result = if config.hosts.is_empty() {
        pipeline(&d)
    } else {
        let (result, group) = crate::receive::group::local::deploy(&d);
        entry.hosts = group.hosts;
        entry.switch_spread_ms = group.switch_spread_ms;
        result
    };
    let result = conclude(&mut entry, result, short, reporter);
    finish(plan, &repo, entry, reporter, result.err(), lock)
}

/// Fills the log entry in from what the pipeline did, and says how the deploy ended.
fn conclude(
    entry: &mut history::Entry,
    result: Result<Deployed>,
    short: &str,
    reporter: &Reporter,
) -> Result<()> {
    entry.steps = step_times(reporter);
    match result {
        Ok(Deployed {
            build,
            switched_at,
            problem: Problem::Unhealthy(err),
            ..
        }) => {
            entry.build = Some(build.to_string());
            entry.switched_at = Some(switched_at);
            entry.outcome = Outcome::Unhealthy;
            Err(err)
        }
        Ok(Deployed {
            build,
            switched_at,
            problem,
            ..
        }) => {
            entry.build = Some(build.to_string());
            entry.switched_at = Some(switched_at);
            entry.outcome = Outcome::Deployed;
            let took = reporter.elapsed().as_secs_f64();
            reporter.line(&format!(
                "deployed {short} as builds/{build} in {took:.2}s ({})",
                reporter.breakdown()
            ));
            problem.into_result(&build)
        }
        Err(err) => {
            entry.outcome = Outcome::Failed;
            Err(explain_disk_full(err))
        }
    }
}

/// How long each step took, for the log (a group host's operation logs them too).
pub(crate) fn step_times(reporter: &Reporter) -> Vec<StepTime> {
    reporter
        .step_durations()
        .into_iter()
        .map(|(step, d)| StepTime {
            step,
            seconds: d.as_secs_f64(),
        })
        .collect()
}

/// Logs a deploy that was refused before it began (no lock, a freeze, a `latest` that is not
/// a symlink), so that `atomdeploy-hook builds` lists it with the other failures. Called
/// without the lock: it may wait on a webhook.
fn log_refusal(
    plan: &Plan,
    request: &Request,
    started_at: &str,
    commit: &str,
    err: &anyhow::Error,
    reporter: &Reporter,
) {
    let why = format!("{err:#}");
    let at = (started_at, clock::utc_now_rfc3339());
    let entry = history::append_refusal(plan, at, (request.source, commit), &why, reporter);
    crate::receive::notify::send(plan, &entry, reporter);
}

/// Logs a deploy refused by a freeze, naming the commit that waits for the unfreeze (in the
/// log, the webhook and the error, with the command that deploys it then); returns the error.
fn refuse_frozen(
    plan: &Plan,
    request: &Request,
    started_at: &str,
    err: anyhow::Error,
    reporter: &Reporter,
) -> anyhow::Error {
    let commit = asked_commit(plan, request);
    let err = match &commit {
        Some(commit) => anyhow::anyhow!(
            "{err:#}: `git push production {}:refs/heads/{}`",
            report::short_id(commit),
            replay_branch(plan)
        ),
        None => err,
    };
    let commit = commit.unwrap_or_default();
    log_refusal(plan, request, started_at, &commit, &err, reporter);
    err
}

/// The commit a refused deploy would have deployed (the revision asked for, else the deploy
/// branch's head), read without the lock; `None` when there is none.
fn asked_commit(plan: &Plan, request: &Request) -> Option<String> {
    let repo = Repository::open_bare(&plan.config.repository).ok()?;
    let rev = request.rev.map_or_else(
        || format!("refs/heads/{}", plan.config.branch),
        str::to_string,
    );
    let commit = repo.revparse_single(&rev).ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

/// This root's replay branch (`replay`, or `replay-<branch>` for a further root).
fn replay_branch(plan: &Plan) -> String {
    crate::state::control_branches::branches(&plan.layout, &plan.config.branch)
        .map_or_else(|_| crate::config::REPLAY_BRANCH.to_string(), |b| b.replay)
}

/// Resolves what to deploy; `None` when the deploy branch is gone (nothing to do).
fn resolve(
    repo: &Repository,
    branch: &str,
    rev: Option<&str>,
    reporter: &Reporter,
) -> Result<Option<Oid>> {
    if let Some(rev) = rev {
        let object = repo
            .revparse_single(rev)
            .with_context(|| format!("`{rev}` is not a revision in {}", repo.path().display()))?;
        let commit = object
            .peel_to_commit()
            .with_context(|| format!("`{rev}` is not a commit"))?;
        return Ok(Some(commit.id()));
    }
    let branch_ref = format!("refs/heads/{branch}");
    match repo.find_reference(&branch_ref) {
        Ok(reference) => Ok(Some(reference.peel_to_commit()?.id())),
        Err(e) if e.code() == ErrorCode::NotFound => {
            reporter.line(&format!(
                "atomdeploy: {branch_ref} does not exist; nothing to deploy"
            ));
            Ok(None)
        }
        Err(e) => Err(e).context(format!("cannot read {branch_ref}")),
    }
}

/// Logs the attempt, keeps its output, points the rollback branch at the new target, and
/// then, with the lock released, tells the `notify:` URLs.
fn finish(
    plan: &Plan,
    repo: &Repository,
    mut entry: history::Entry,
    reporter: &Reporter,
    error: Option<anyhow::Error>,
    lock: DeployLock,
) -> Result<()> {
    fault::point("finish");
    let layout = &plan.layout;
    if entry.outcome != Outcome::Unchanged {
        refs::sync_ref(plan, repo, reporter);
    }
    if let Some(err) = &error {
        let message = format!("{err:#}");
        reporter.record_error(&message);
        entry.error = Some(message);
    }
    entry.finished_at = clock::utc_now_rfc3339();
    entry.seconds = reporter.elapsed().as_secs_f64();
    if entry.outcome != Outcome::Unchanged {
        let build = entry
            .build
            .as_deref()
            .filter(|b| BuildName::parse(b).is_some_and(|b| layout.build_dir(&b).is_dir()));
        match history::save_output(layout, build, &entry.started_at, &reporter.transcript()) {
            Ok(name) => entry.output = Some(name),
            Err(e) => reporter.warn(&format!("could not keep the deploy's output: {e:#}")),
        }
    }
    if let Err(e) = history::append(layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
    // Everything the next deploy reads is written: a webhook that is slow to answer holds
    // this pusher (at most notify::TOTAL_BOUND), never the pushes queued behind the lock. The
    // old builds' files are deleted meanwhile, and after the push, under the lock.
    crate::steps::cleanup::after_the_push(layout, lock, entry.output.as_deref(), reporter);
    crate::receive::notify::send(plan, &entry, reporter);
    error.map_or(Ok(()), Err)
}

/// Says so plainly when a step failed because the disk is full (ENOSPC, EDQUOT).
fn explain_disk_full(err: anyhow::Error) -> anyhow::Error {
    let codes = [libc::ENOSPC, libc::EDQUOT];
    // libgit2 keeps no errno, only strerror's text in its message (the checkout's writes):
    // the text this process's strerror gives, in the same locale.
    let texts = codes.map(|code| std::io::Error::from_raw_os_error(code).to_string());
    let full = err.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| codes.contains(&code));
        let git = cause
            .downcast_ref::<git2::Error>()
            .filter(|e| e.class() == git2::ErrorClass::Os)
            .is_some_and(|e| {
                texts.iter().any(|text| {
                    // io::Error's text ends with ` (os error N)`.
                    let text = text.split(" (os error").next().unwrap_or(text);
                    e.message().contains(text)
                })
            });
        io || git
    });
    if full {
        err.context("the disk is full; free space and push again (the live build was not touched)")
    } else {
        err
    }
}
