//! What each host of the group serves, as the primary asks them ([`rows`]: the `hosts`
//! command and `doctor` show it, a deploy finds the hosts behind), and bringing hosts that are
//! behind to the primary's commit ([`catch_up`]).

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::infra::report::Reporter;
use crate::receive::group::excluded;
use crate::receive::group::primary::{self, Group, HostBuild, Local};
use crate::receive::group::remote::{self, GroupLine, Host};
use crate::state::builds;
use crate::state::plan::Plan;

/// One host as `hosts` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) live_build: Option<String>,
    pub(crate) live_commit: Option<String>,
    pub(crate) bad: Option<bool>,
    /// Its config fingerprint (the app keys of its deploy.yml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fingerprint: Option<String>,
    /// Live on the primary's live commit.
    pub(crate) on_group_commit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) excluded: Option<excluded::Exclusion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The primary's live build and commit.
pub(crate) fn primary_live(plan: &Plan) -> Result<(String, String)> {
    let live =
        builds::live(&plan.layout).ok_or_else(|| anyhow!("nothing is live on this server yet"))?;
    let commit = builds::revision(&plan.layout, &live)
        .ok_or_else(|| anyhow!("builds/{live} has no recorded commit"))?;
    Ok((live.to_string(), commit))
}

/// Asks every host for its `status`, in parallel (no lock is taken on the hosts), each within
/// a short bound (a dead host is UNREACHABLE within seconds, a deploy stuck on it or not).
/// The ssh connections it opened are closed before it returns.
pub(crate) fn rows(plan: &Plan, reporter: &Reporter) -> Result<(String, String, Vec<Row>)> {
    rows_of(plan, &Host::all(&plan.config.hosts), reporter)
}

/// [`rows`] of `hosts` alone.
pub(crate) fn rows_of(
    plan: &Plan,
    hosts: &[Host],
    reporter: &Reporter,
) -> Result<(String, String, Vec<Row>)> {
    let (live, commit) = primary_live(plan)?;
    let exclusions = excluded::read(&plan.layout)?;
    let gid = primary::new_gid();
    let status_ref = primary::group_ref(&gid, crate::receive::group::Op::Status);
    let answers = primary::on_all(hosts, |host| {
        remote::push(plan, host, &commit, &status_ref, reporter, &|_| {})
    });
    remote::close_connections(&plan.layout);
    let rows = hosts
        .iter()
        .zip(answers)
        .map(|(host, pushed)| {
            let status = pushed.lines.iter().find_map(|l| match l {
                GroupLine::Status(status) => Some(status.clone()),
                _ => None,
            });
            let live_commit = status.as_ref().and_then(|s| s.commit.clone());
            Row {
                label: host.label.clone(),
                url: host.url.clone(),
                live_build: status.as_ref().and_then(|s| s.build.clone()),
                on_group_commit: live_commit.as_deref() == Some(commit.as_str()),
                live_commit,
                bad: status.as_ref().map(|s| s.bad),
                fingerprint: status.as_ref().map(|s| s.fingerprint.clone()),
                excluded: exclusions.iter().find(|e| e.url == host.url).cloned(),
                error: match status {
                    Some(_) => None,
                    None => Some(pushed.why("the host did not answer")),
                },
            }
        })
        .collect();
    Ok((live, commit, rows))
}

/// The primary's side when only a host catches up: nothing to build or switch here.
struct Nothing;

impl Local for Nothing {
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }
    fn release(&mut self) -> Result<()> {
        Ok(())
    }
    fn go_live(&mut self) -> Result<(u128, Option<anyhow::Error>)> {
        Ok((primary::now_ns(), None))
    }
    fn discard(&mut self) {}
    fn restore(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Brings `hosts` to `commit` (prepare, then switch), the primary untouched. The caller holds
/// the primary's lock.
pub(crate) fn catch_up(
    plan: &Plan,
    commit: &str,
    hosts: &[Host],
    reporter: &Reporter,
) -> Result<()> {
    let group = Group {
        plan,
        reporter,
        commit,
        build: HostBuild::Prepare,
        here: false,
    };
    primary::run(&group, hosts, Vec::new(), &mut Nothing)
        .map(|_| ())
        .map_err(|failed| failed.error)
}
