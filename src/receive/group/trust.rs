//! Who may drive a host, and a host's knowledge that it belongs to a group.
//!
//! | what                                   | who may                        | refused by            |
//! |----------------------------------------|--------------------------------|-----------------------|
//! | `refs/atomdeploy/group/…` (any op)     | the group's primary, through   | [`admit`], on every   |
//! |                                        | `serve --group-primary` on a   | other way in and on a |
//! |                                        | server that is no primary      | primary               |
//! | the deploy branch, `replay`,           | developers, on a server that   | [`refuse_direct_push`]|
//! | `rollback`, `atomdeploy-hook replay`   | belongs to no group            | and                   |
//! | and `rollback`                         |                                | [`refuse_if_member`]  |
//! | `atomdeploy-hook leave-group`          | the host's operator (its uid)  | file permissions      |
//!
//! How the primary is recognised is in `commands/serve.rs`. A host joins a group with its first
//! accepted `prepare`/`replay`/`reuse` ([`join`]): from then on it deploys only what the
//! primary sends, so that the group never runs two commits (nor `release:` twice) because a
//! developer pushed to a host by mistake.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::infra::child::PUSHER_ENV;
use crate::infra::clock;
use crate::infra::lock::DeployLock;
use crate::infra::report::Reporter;
use crate::receive::hook::status;
use crate::receive::push::{PushRequest, RefUpdate};
use crate::state::builds;
use crate::state::history;
use crate::state::plan::{Layout, Plan};

/// What a host keeps of the group it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Membership {
    /// Who the primary is, as far as the host can tell (see [`primary_name`]).
    pub(crate) primary: String,
    /// UTC, RFC 3339: the first operation the host accepted from it.
    pub(crate) since: String,
}

fn file(layout: &Layout) -> PathBuf {
    layout.state.join("group-primary.json")
}

/// The group this server belongs to, if any. A file that does not read still says the server
/// is a host: deploying by itself is the worse mistake.
pub(crate) fn membership(layout: &Layout) -> Option<Membership> {
    let bytes = std::fs::read(file(layout)).ok()?;
    Some(
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Membership {
            primary: "the group's primary".to_string(),
            since: "an unknown time".to_string(),
        }),
    )
}

/// Refuses a group operation unless the group's primary sent it to a server that is no
/// primary itself. Prints nothing of the server's configuration.
pub(crate) fn admit(plan: &Plan) -> Result<()> {
    if !plan.config.hosts.is_empty() {
        bail!(
            "this server is a group's primary ({} lists `hosts:`): it takes group operations \
             from nobody; nothing was changed",
            plan.layout.config_file.display()
        );
    }
    if !status::primary_asks() {
        bail!(
            "group operations are accepted only from the group's primary, through \
             `atomdeploy-hook serve --repo {} --group-primary` as the forced command of the \
             primary's key in this host's authorized_keys; nothing was changed",
            plan.config.repository.display()
        );
    }
    Ok(())
}

/// Records that this server is a host of a group, once: at its first accepted operation
/// that deploys.
pub(crate) fn join(layout: &Layout) -> Result<()> {
    if file(layout).exists() {
        return Ok(());
    }
    let membership = Membership {
        primary: primary_name(),
        since: clock::utc_now_rfc3339(),
    };
    builds::replace_file(&file(layout), &serde_json::to_vec_pretty(&membership)?)
        .context("cannot record that this server belongs to a group")
}

/// The primary as `serve --pusher` names it, else its ssh address, else a plain description.
fn primary_name() -> String {
    let named = std::env::var(PUSHER_ENV).ok().filter(|p| !p.is_empty());
    let address = || {
        ["SSH_CONNECTION", "SSH_CLIENT"].iter().find_map(|var| {
            let value = std::env::var(var).ok()?;
            value.split_whitespace().next().map(str::to_string)
        })
    };
    named
        .or_else(address)
        .unwrap_or_else(|| "the group's primary".to_string())
}

fn refusal(layout: &Layout, member: &Membership, what: &str) -> String {
    format!(
        "this server is a host of a group: {} deploys it (since {}), so {what} deploys \
         nothing here; deploy through the primary, or first take this server out of the \
         group: `atomdeploy-hook leave-group --root {}`",
        member.primary,
        member.since,
        layout.root.display()
    )
}

/// `atomdeploy-hook replay` and `rollback` by hand: refused on a host of a group.
pub(crate) fn refuse_if_member(plan: &Plan, what: &str) -> Result<()> {
    match membership(&plan.layout) {
        Some(member) => bail!("{}", refusal(&plan.layout, &member, what)),
        None => Ok(()),
    }
}

/// A push to the deploy branch or a control branch of a host of a group: refused, each of
/// those refs put back where it was (only if nobody moved it since), so that the push moves
/// nothing.
pub(crate) fn refuse_direct_push(
    plan: &Plan,
    request: &PushRequest,
    reporter: &Reporter,
) -> Result<()> {
    let Some(member) = membership(&plan.layout) else {
        return Ok(());
    };
    let touched = claimed(request);
    if touched.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = touched.iter().map(|u| u.name().into_owned()).collect();
    let why = refusal(
        &plan.layout,
        &member,
        &format!("a push to {}", names.join(", ")),
    );
    let why = format!("{why}{}", put_back_claimed(plan, request));
    // Logged and notified as a frozen push is: a deploy that was asked for and refused.
    let entry = log_refusal(plan, &touched, &why, reporter);
    crate::receive::notify::send(plan, &entry, reporter);
    bail!("{why}")
}

/// Writes a refused push in the deploy log as a failed attempt, as a frozen push is: which
/// refs, who pushed and why nothing was deployed. An operator who wonders why a push did
/// nothing, or who tried to drive this host, finds it in `atomdeploy-hook builds`. Returns the
/// entry, for a caller that notifies about it.
pub(crate) fn log_refusal(
    plan: &Plan,
    refused: &[&RefUpdate],
    why: &str,
    reporter: &Reporter,
) -> history::Entry {
    let now = clock::utc_now_rfc3339();
    let names: Vec<String> = refused.iter().map(|u| u.name().into_owned()).collect();
    let commit = refused
        .iter()
        .find(|u| !u.is_deletion())
        .map(|u| u.new.as_str())
        .unwrap_or_default();
    let at = (now.as_str(), now.clone());
    history::append_refusal(plan, at, (&names.join(", "), commit), why, reporter)
}

/// The deploy branch's and the control branches' updates of a push.
fn claimed(request: &PushRequest) -> Vec<&RefUpdate> {
    let mut touched: Vec<&RefUpdate> = request.deploy.iter().chain(&request.replay).collect();
    touched.extend(request.controls.iter());
    touched
}

/// Puts every branch `request` claims back where it was, for a refused push (a group
/// operation's, or one to a host of a group) to move nothing; says what could not be.
pub(crate) fn put_back_claimed(plan: &Plan, request: &PushRequest) -> String {
    put_back_all(&plan.config.repository, claimed(request))
}

/// Puts each of `updates` back where it was in `repo`; says what could not be.
pub(crate) fn put_back_all<'a>(
    repo: &std::path::Path,
    updates: impl IntoIterator<Item = &'a RefUpdate>,
) -> String {
    let mut failed = String::new();
    for update in updates {
        if let Err(err) = put_back(repo, update) {
            failed.push_str(&format!(
                "; {} could not be put back: {err:#}",
                update.name()
            ));
        }
    }
    failed
}

/// Sets the ref of `update` back to its old value if it still holds the new one; a ref the
/// push made goes again.
fn put_back(repo: &std::path::Path, update: &RefUpdate) -> Result<()> {
    let name = update.name();
    if update.is_creation() {
        return crate::state::refs::delete_ref(repo, &name, &update.new);
    }
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["update-ref", &*name, &update.old, &update.new])
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `atomdeploy-hook leave-group`: this server deploys its own pushes again. Under the deploy
/// lock, as every deploy: a group operation running here (which may have just recorded the
/// membership) ends first, so that the host is never building for its group while it takes
/// itself for a server on its own.
pub(crate) fn leave(root: &std::path::Path, reporter: &Reporter) -> Result<()> {
    let layout = &Layout::new(root);
    if !layout.config_file.is_file() {
        bail!(
            "{} is not a deploy root (no {}); nothing was changed",
            layout.root.display(),
            layout.config_file.display()
        );
    }
    let plan = Plan::load(root)?;
    let _lock = DeployLock::acquire(&layout.lock_file(), plan.config.lock_timeout, reporter)?;
    match membership(layout) {
        None => {
            println!(
                "{} belongs to no group; there is nothing to leave",
                layout.root.display()
            );
            Ok(())
        }
        Some(member) => {
            std::fs::remove_file(file(layout))
                .with_context(|| format!("cannot remove {}", file(layout).display()))?;
            println!(
                "{} has left the group of {} (a member since {}): its own pushes, `replay` and \
                 `rollback` deploy again; take it out of the primary's `hosts:` too",
                layout.root.display(),
                member.primary,
                member.since
            );
            Ok(())
        }
    }
}
