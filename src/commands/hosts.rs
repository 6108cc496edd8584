//! `atomdeploy-hook hosts [--json]`, `hosts exclude`, `hosts include`: what each host of the
//! group serves, and leaving a dead host out of deploys for an emergency.

use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};

use crate::infra::clock;
use crate::infra::lock::DeployLock;
use crate::infra::report::{Reporter, short_id};
use crate::receive::group::excluded;
use crate::receive::group::primary;
use crate::receive::group::remote::Host;
use crate::receive::group::view::{Row, catch_up, primary_live, rows};
use crate::state::plan::Plan;

/// What `hosts` exits with, for scripts: 0 when every host that is not excluded answered and
/// is live on the primary's live commit, 1 when one is on another commit (or none), 2 when one
/// did not answer. An excluded host counts for neither: it is known to be out.
pub(crate) fn exit_code(rows: &[Row]) -> i32 {
    let counted = || rows.iter().filter(|r| r.excluded.is_none());
    if counted().any(|r| r.error.is_some()) {
        2
    } else if counted().any(|r| !r.on_group_commit) {
        1
    } else {
        0
    }
}

/// `atomdeploy-hook hosts [--json]`; returns its exit status ([`exit_code`]).
pub(crate) fn print(plan: &Plan, json: bool) -> Result<i32> {
    if plan.config.hosts.is_empty() {
        bail!(
            "{} lists no `hosts:`; this server deploys alone",
            plan.layout.config_file.display()
        );
    }
    let reporter = Reporter::new(crate::infra::report::Output::detect(false));
    let (live, commit, rows) = rows(plan, &reporter)?;
    if json {
        let value = serde_json::json!({
            "primary": {"live_build": live, "live_commit": commit},
            "hosts": rows,
        });
        let text = serde_json::to_string_pretty(&value)?;
        crate::infra::report::to_stdout(|out| writeln!(out, "{text}"))?;
        return Ok(exit_code(&rows));
    }
    crate::infra::report::to_stdout(|out| write_table(out, &live, &commit, &rows))?;
    Ok(exit_code(&rows))
}

fn write_table(out: &mut dyn Write, live: &str, commit: &str, rows: &[Row]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:<20} {:<8} {:<40} URL",
        "HOST", "LIVE BUILD", "COMMIT", "STATE"
    )?;
    writeln!(
        out,
        "{:<12} {:<20} {:<8} {:<40} (this server)",
        "primary",
        live,
        short_id(commit),
        "live"
    )?;
    for row in rows {
        let mut state = match &row.error {
            Some(err) => format!("UNREACHABLE: {err}"),
            None if !row.on_group_commit => {
                format!("NOT ON {} (the group's commit)", short_id(commit))
            }
            None if row.bad == Some(true) => "live, marked bad".into(),
            None => "live".into(),
        };
        if let Some(e) = &row.excluded {
            state.push_str(&format!("; EXCLUDED by {}: {}", e.who, e.why));
        }
        writeln!(
            out,
            "{:<12} {:<20} {:<8} {:<40} {}",
            row.label,
            row.live_build.as_deref().unwrap_or("-"),
            row.live_commit.as_deref().map(short_id).unwrap_or("-"),
            state,
            row.url
        )?;
    }
    Ok(())
}

/// The host `name` names: its URL as deploy.yml lists it, or its label.
fn find_host(plan: &Plan, name: &str) -> Result<Host> {
    let hosts = Host::all(&plan.config.hosts);
    let resolved = plan.layout.root.join(name).to_string_lossy().into_owned();
    hosts
        .into_iter()
        .find(|h| h.url == name || h.label == name || h.url == resolved)
        .ok_or_else(|| {
            anyhow!(
                "`{name}` is not one of the hosts in {}",
                plan.layout.config_file.display()
            )
        })
}

/// `atomdeploy-hook hosts exclude <url> --reason …`.
pub(crate) fn exclude(plan: &Plan, name: &str, reason: &str, reporter: &Reporter) -> Result<()> {
    if reason.trim().is_empty() {
        bail!("say why the host is left out: --reason \"…\"");
    }
    let host = find_host(plan, name)?;
    // Without the deploy lock: a deploy may hold it for up to host_timeout, waiting on the
    // very host an operator leaves out. That deploy's push to it stops at once (see
    // remote::push); the next deploy goes without it.
    excluded::update(&plan.layout, |list| {
        if list.iter().any(|e| e.url == host.url) {
            bail!("{} is excluded already", host.url);
        }
        list.push(primary::exclusion(&host.url, reason.trim()));
        Ok(())
    })?;
    log(plan, "hosts exclude", &host, Some(reason.trim()), reporter);
    reporter.warn(&format!(
        "{} is left out of every deploy until `atomdeploy-hook hosts include {}`",
        host.url, host.url
    ));
    Ok(())
}

/// `atomdeploy-hook hosts include <url>`: the host is brought to the primary's live commit at
/// once (prepare and switch on it alone), then deploys reach it again. Should that fail, it
/// stays excluded, so that deploys keep working.
pub(crate) fn include(plan: &Plan, name: &str, reporter: &Reporter) -> Result<()> {
    let host = find_host(plan, name)?;
    let _lock = DeployLock::acquire(&plan.layout.lock_file(), plan.config.lock_timeout, reporter)?;
    if !excluded::read(&plan.layout)?
        .iter()
        .any(|e| e.url == host.url)
    {
        bail!("{} is not excluded", host.url);
    }
    let (_, commit) = primary_live(plan)?;
    catch_up(plan, &commit, std::slice::from_ref(&host), reporter)
        .with_context(|| format!("{} stays excluded", host.url))?;
    excluded::update(&plan.layout, |list| {
        list.retain(|e| e.url != host.url);
        Ok(())
    })?;
    log(plan, "hosts include", &host, None, reporter);
    reporter.line(&format!(
        "atomdeploy: {} is back in the group, live on {}",
        host.label,
        short_id(&commit)
    ));
    Ok(())
}

/// One line in the deploy log for an exclusion or an inclusion.
fn log(plan: &Plan, what: &str, host: &Host, why: Option<&str>, reporter: &Reporter) {
    let now = clock::utc_now_rfc3339();
    let mut entry = crate::state::history::Entry::begin(&now, &now, what, "");
    entry.finished_at = now;
    entry.outcome = crate::state::history::Outcome::Unchanged;
    entry.error = why.map(|w| format!("{}: {w}", host.url));
    entry.hosts = vec![primary::HostLog {
        url: host.url.clone(),
        label: host.label.clone(),
        build: None,
        outcome: match why {
            Some(_) => "excluded".into(),
            None => "included".into(),
        },
        error: why.map(str::to_string),
    }];
    if let Err(e) = crate::state::history::append(&plan.layout, &entry) {
        reporter.warn(&format!("could not write the deploy log: {e:#}"));
    }
}
