//! The `post-receive` hook: what git hands it, which repository it runs for, and what each
//! pushed ref asks of it (a deploy, a rollback, or nothing).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::deploy::{self, Request};
use crate::infra::lock::DeployLock;
use crate::infra::report::{Output, Reporter};
use crate::state::plan::Plan;
use crate::state::refs;
use crate::{install, push, rollback};

/// Runs the hook for the deploy root `root`, reading the pushed refs from stdin.
pub fn run(root: &Path) -> Result<()> {
    // Bytes, not text: a ref name need not be UTF-8 (see push.rs).
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read the pushed refs from stdin")?;
    let plan = Plan::load(root)?;
    check_repository(&plan)?;
    let reporter = Reporter::new(Output::detect(true));
    post_receive(&plan, &input, &reporter)
}

/// git runs hooks in the repository that received the push: refuses to deploy another one's.
fn check_repository(plan: &Plan) -> Result<()> {
    if let Some(git_dir) = std::env::var_os("GIT_DIR")
        && !install::same_path(Path::new(&git_dir), &plan.config.repository)
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

/// Handles one post-receive invocation: deploys if the push touched the deploy branch, rolls
/// back if it deleted the rollback branch.
pub fn post_receive(plan: &Plan, input: &[u8], reporter: &Reporter) -> Result<()> {
    let request = push::parse(input, &plan.config.branch)?;
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
    if request.rollback {
        rollback::rollback(plan, None, "refs/heads/rollback", reporter)?;
    } else if request.rollback_moved {
        reporter.line("atomdeploy: refs/heads/rollback is kept at the rollback target by atomdeploy-hook; reset it");
        let _lock =
            DeployLock::acquire(&plan.layout.lock_file(), plan.config.lock_timeout, reporter)?;
        refs::open_and_sync_ref(plan, reporter);
    }
    Ok(())
}
