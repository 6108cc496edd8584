//! The `post-receive` hook: what git hands it, which repository it runs for, and what each
//! pushed ref asks of it (a deploy, a rollback, a group operation, or nothing).

pub(crate) mod file;
mod several;
pub(crate) mod status;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::infra::lock::DeployLock;
use crate::infra::report::{self, Output, Reported, Reporter};
use crate::receive::deploy::{self, Request};
use crate::receive::hook::status::StatusFile;
use crate::receive::push::PushRequest;
use crate::receive::{group, push, rollback};
use crate::state::builds;
use crate::state::control_branches;
use crate::state::control_branches::Branches;
use crate::state::plan::Plan;
use crate::state::refs;

/// Runs the hook for the deploy roots `roots` (one, or several sharing the repository: see
/// `hook/several.rs`), reading the pushed refs from stdin, and tells a waiting
/// `atomdeploy-hook receive-pack` (if any) how it went.
pub(crate) fn run(roots: &[PathBuf]) -> Result<()> {
    let status = StatusFile::from_env();
    let result = run_reported(roots, &status);
    match &result {
        Ok(()) => status.ok(),
        Err(err) if err.is::<Reported>() => {}
        Err(err) => status.failed(&format!("{err:#}")),
    }
    result
}

fn run_reported(roots: &[PathBuf], status: &StatusFile) -> Result<()> {
    // Bytes, not text: a ref name need not be UTF-8 (see push.rs).
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read the pushed refs from stdin")?;
    let root = match roots {
        [root] => root,
        [] => bail!("no deploy root given: --root DIR"),
        several => return several::run_several(several, &input, status),
    };
    let plan = match Plan::load(root) {
        Ok(plan) => plan,
        Err(err) => {
            several::drop_replay_of_unloadable(root, &input);
            return Err(err);
        }
    };
    check_repository(&plan)?;
    let branches = control_branches::branches(&plan.layout, &plan.config.branch)?;
    let request = push::parse(&input, &branches)?;
    if request.deploy.is_some()
        || request.replay.is_some()
        || request.rollback
        || !request.group.is_empty()
    {
        status.pending();
    }
    let reporter = Reporter::new(Output::detect(true));
    if let Err(failure) = handle_reported(&plan, &branches, &request, &reporter) {
        status.failed(&failure);
        return Err(Reported.into());
    }
    Ok(())
}

/// One root's part of a push; a failure is reported to the pusher (the summary, then the
/// `error:` line) and returned as the push status's `step: why`.
pub(crate) fn handle_reported(
    plan: &Plan,
    branches: &Branches,
    request: &PushRequest,
    reporter: &Reporter,
) -> std::result::Result<(), String> {
    if !request.control_tags.is_empty() {
        // Branches pushed along are put back, as for every refused push: left moved, pushing
        // them again would be "Everything up-to-date" and deploy nothing.
        let why = format!(
            "{}{}",
            drop_control_tags(plan, branches, request, reporter),
            group::trust::put_back_claimed(plan, request)
        );
        report::error(&why);
        return Err(failure("push", &why));
    }
    // A host of a group deploys only what its primary sends: no summary (there was no
    // deploy to sum up), only the refusal. (A push with a group operation is the group's
    // to refuse or run: it deletes the group ref and puts the branches back either way.)
    if request.group.is_empty()
        && let Err(err) = group::trust::refuse_direct_push(plan, request, reporter)
    {
        let why = format!("{err:#}");
        report::error(&why);
        return Err(failure("group", &why));
    }
    let Err(err) = handle(plan, branches, request, reporter) else {
        return Ok(());
    };
    let why = format!("{err:#}");
    // The summary first: the `error:` line stays the last thing the pusher reads. (A
    // group's primary reads a host's errors and says what failed itself.)
    if request.group.is_empty() {
        summary(plan, branches, request, &why, reporter);
    }
    report::error(&why);
    Err(failure(failed_step(&why, reporter), &why))
}

/// The step a failure happened in: the one its message names first (a step's errors say
/// `<step> failed`, some before the step's header was shown), else the one begun last.
fn failed_step<'a>(why: &str, reporter: &'a Reporter) -> &'a str {
    const NAMED: &[(&str, &str)] = &[
        ("checkout failed", "checkout"),
        ("composer failed", "composer"),
        ("snapshot failed", "snapshot"),
        ("shared failed", "shared"),
        ("before_switch failed", "before_switch"),
        ("release failed", "release"),
        ("after_switch failed", "after_switch"),
        ("opcache reset failed", "opcache reset"),
        ("health check failed", "healthcheck"),
        ("switch failed", "switch"),
        // A group's (group/primary.rs): what failed where comes after, host by host.
        ("no server switched", "group deploy"),
        ("the group's switch failed", "group switch"),
        ("waiting for the deploy lock", "lock"),
        ("deploys are frozen", "freeze"),
    ];
    NAMED
        .iter()
        .filter_map(|(text, step)| why.find(text).map(|at| (at, *step)))
        .min()
        .map(|(_, step)| step)
        .or(reporter.last_step())
        .unwrap_or("deploy")
}

/// `step: why` in one line, the step not named twice.
fn failure(step: &str, why: &str) -> String {
    let why = first_line(why);
    if why.starts_with(step) {
        why
    } else {
        format!("{step}: {why}")
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(240) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// The block a failed push ends with, just above its `error:` line: what failed, what is
/// live, how to try again.
fn summary(
    plan: &Plan,
    branches: &Branches,
    request: &PushRequest,
    why: &str,
    reporter: &Reporter,
) {
    let what = if request.deploy.is_some() || request.replay.is_some() {
        "deploy"
    } else {
        "rollback"
    };
    let live = match builds::live(&plan.layout) {
        Some(build) => {
            let commit = builds::revision(&plan.layout, &build).unwrap_or_default();
            format!("builds/{build} ({})", report::short_id(&commit))
        }
        None => "nothing (no build is live yet)".to_string(),
    };
    let step = failed_step(why, reporter);
    let branch = &plan.config.branch;
    let replay = &branches.replay;
    // Every line is a command that works as printed, whatever the server has. The pushed
    // commit is on the branch already, so pushing the branch again says "Everything
    // up-to-date"; and `<commit>:replay` is refused by git while the server has no `replay`
    // (it never keeps one), since only a branch's name tells git the target is a branch.
    let retry = if step == "freeze" {
        vec![format!(
            "after `atomdeploy-hook unfreeze`: `git push production {branch}:{replay}`,"
        )]
    } else {
        vec![
            format!("after a fix in the code: commit it and `git push production {branch}`,"),
            format!("after a fix on the server: `git push production {branch}:{replay}`,"),
        ]
    };
    let commit = request
        .replay
        .as_ref()
        .or(request.deploy.as_ref())
        .map_or("<commit>", |update| report::short_id(&update.new));
    let mut lines = vec![
        format!("atomdeploy: ---- the {what} FAILED ----"),
        format!("atomdeploy:   failed in: {}", failure(step, why)),
        format!("atomdeploy:   live now:  {live}"),
    ];
    for (n, retry) in retry.iter().enumerate() {
        let label = if n == 0 { "retry:" } else { "" };
        lines.push(format!("atomdeploy:   {label:<10} {retry}"));
    }
    lines.push(format!(
        "atomdeploy:              or deploy a commit again: \
         `git push production {commit}:refs/heads/{replay}`"
    ));
    for line in lines {
        reporter.line(&line);
    }
}

/// Deletes the tags named like a control branch that this push made (each only if it still
/// names what the push set: a later push's own hook sees to its own), and says why and what
/// to push instead. Nothing else of the push is deployed: a push that meant to replay or roll
/// back and did not is no push to go on with.
fn drop_control_tags(
    plan: &Plan,
    branches: &Branches,
    request: &PushRequest,
    reporter: &Reporter,
) -> String {
    let repo = &plan.config.repository;
    let mut said = Vec::new();
    for update in &request.control_tags {
        let name = update.name();
        if let Err(err) = refs::delete_ref(repo, &name, &update.new) {
            reporter.warn(&format!("could not delete {name}: {err:#}"));
        }
        let commit = git2::Repository::open_bare(repo)
            .ok()
            .and_then(|r| {
                let object = r.find_object(git2::Oid::from_str(&update.new).ok()?, None);
                Some(object.ok()?.peel_to_commit().ok()?.id().to_string())
            })
            .unwrap_or_else(|| update.new.clone());
        let short = report::short_id(&commit);
        let replay = &branches.replay;
        let instead = if name.ends_with(&format!("/{replay}")) {
            format!(
                "to deploy {short} as a new build: `git push production {short}:refs/heads/{replay}` \
                 (a tag by name: `git push production v1.0~0:refs/heads/{replay}`)"
            )
        } else {
            format!(
                "to roll back: `git push production :{}`; to deploy {short}: \
                 `git push production {short}:refs/heads/{replay}`",
                branches.rollback
            )
        };
        said.push(format!(
            "this push made a tag, {name}, not the branch the hook answers to (git makes a tag \
             when what is pushed is a tag); the tag was deleted and nothing of this push was \
             deployed; {instead}"
        ));
    }
    said.join("; ")
}

/// git runs hooks in the repository that received the push: refuses to deploy another one's.
pub(crate) fn check_repository(plan: &Plan) -> Result<()> {
    if let Some(git_dir) = std::env::var_os("GIT_DIR")
        && !crate::config::same_path(Path::new(&git_dir), &plan.config.repository)
    {
        bail!(
            "this hook runs for {}, but {} deploys {}; fix its `repository:`",
            std::fs::canonicalize(&git_dir)
                .unwrap_or_else(|_| git_dir.into())
                .display(),
            plan.layout.config_file.display(),
            plan.config.repository.display()
        );
    }
    Ok(())
}

fn handle(
    plan: &Plan,
    branches: &Branches,
    request: &PushRequest,
    reporter: &Reporter,
) -> Result<()> {
    if !request.group.is_empty() {
        return group::host::handle(plan, request, reporter);
    }
    let deploy_ref = format!("refs/heads/{}", plan.config.branch);
    for update in &request.ignored {
        reporter.line(&format!(
            "atomdeploy: {} is not the deploy branch ({deploy_ref}); not deployed",
            update.name()
        ));
    }
    if request.branch_deleted {
        reporter.line(&format!(
            "atomdeploy: {deploy_ref} was deleted; the live build stays as it is"
        ));
    }
    if request.deploy.is_some() {
        deploy::deploy(
            plan,
            &Request {
                source: &deploy_ref,
                rev: None,
                always_new: false,
            },
            reporter,
        )?;
    }
    if let Some(update) = &request.replay {
        let replay_ref = format!("refs/heads/{}", branches.replay);
        let result = deploy::deploy(
            plan,
            &Request {
                source: &replay_ref,
                rev: Some(&update.new),
                always_new: true,
            },
            reporter,
        );
        drop_replay_branch(plan, &replay_ref, &update.new, reporter);
        result?;
    }
    let rollback_ref = format!("refs/heads/{}", branches.rollback);
    if request.rollback {
        rollback::rollback(plan, None, &rollback_ref, reporter)?;
    } else if request.rollback_moved {
        reporter.line(&format!(
            "atomdeploy: {rollback_ref} is kept at the rollback target by atomdeploy-hook; reset it"
        ));
        let _lock =
            DeployLock::acquire(&plan.layout.lock_file(), plan.config.lock_timeout, reporter)?;
        refs::open_and_sync_ref(plan, reporter);
    }
    Ok(())
}

/// Deletes the replay branch (`replay_ref`) once its push was handled, so that the same
/// `git push production main:replay` deploys again next time. Only if it still names `commit`:
/// another push may have moved it meanwhile, and its own hook will delete it.
fn drop_replay_branch(plan: &Plan, replay_ref: &str, commit: &str, reporter: &Reporter) {
    if let Err(err) = refs::delete_ref(&plan.config.repository, replay_ref, commit) {
        reporter.warn(&format!("could not delete {replay_ref}: {err:#}"));
    }
}
