//! A primary's hosts (`hosts:` in deploy.yml), asked as `atomdeploy-hook hosts` asks them: each
//! one answers, builds with this server's app keys, and serves this server's live commit. One
//! line each.

use crate::infra::report::{Output, Reporter, short_id};
use crate::receive::group::view::{self, Row};
use crate::state::plan::Plan;

use super::Finding;
use super::root::shell_path;

pub(crate) fn check(plan: &Plan, out: &mut Vec<Finding>) {
    if plan.config.hosts.is_empty() {
        return;
    }
    let root = shell_path(&plan.layout.root);
    // Whatever a host prints while it is asked goes to stderr, not among the findings.
    let reporter = Reporter::new(Output::Plain);
    let (_, commit, rows) = match view::rows(plan, &reporter) {
        Ok(answer) => answer,
        Err(err) => {
            out.push(Finding::warn(
                "hosts",
                format!("not checked: {err:#}"),
                "deploy once (`git push production main`), then run doctor again",
            ));
            return;
        }
    };
    let (ours, _) = plan.config.app_fingerprint();
    for row in &rows {
        out.push(finding(row, &commit, &ours, &root));
    }
}

fn finding(row: &Row, commit: &str, ours: &str, root: &str) -> Finding {
    let label = &row.label;
    let leave_out = format!(
        "atomdeploy-hook hosts exclude {label} --reason \"…\" --root {root}` leaves it out of \
         deploys meanwhile"
    );
    if let Some(exclusion) = &row.excluded {
        return Finding::warn(
            "hosts",
            format!(
                "{label}: left out of deploys since {} by {}: {}",
                exclusion.when, exclusion.who, exclusion.why
            ),
            format!("once it is back: `atomdeploy-hook hosts include {label} --root {root}`"),
        );
    }
    if let Some(err) = &row.error {
        return Finding::fail(
            "hosts",
            format!("{label}: does not answer: {err}"),
            format!(
                "as this server's deploy user, `git ls-remote {}` must work (its sshd, its \
                 key in authorized_keys, its host key in known_hosts); `{leave_out}",
                row.url
            ),
        );
    }
    if row.fingerprint.as_deref() != Some(ours) {
        return Finding::fail(
            "hosts",
            format!(
                "{label}: its deploy.yml's app keys differ from this server's (fingerprint {}, \
                 here {ours}): every deploy would be refused",
                row.fingerprint.as_deref().unwrap_or("-")
            ),
            "make its deploy.yml agree with this server's (the per-host keys aside); a deploy \
             names the keys that differ",
        );
    }
    if !row.on_group_commit {
        return Finding::fail(
            "hosts",
            format!(
                "{label}: serves {} (builds/{}), not this server's live commit {}",
                row.live_commit.as_deref().map_or("nothing", short_id),
                row.live_build.as_deref().unwrap_or("-"),
                short_id(commit)
            ),
            format!(
                "`atomdeploy-hook hosts exclude {label} --reason catch-up --root {root}`, then \
                 `atomdeploy-hook hosts include {label} --root {root}` brings it to {}",
                short_id(commit)
            ),
        );
    }
    Finding::ok(
        "hosts",
        format!(
            "{label}: live on {} as this server, same app keys",
            short_id(commit)
        ),
    )
}
