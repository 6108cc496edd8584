//! The steps of a deploy, each a module of its own, in the order a deploy runs them
//! (docs/deploying.md, "The deploy, step by step", tells the same list):
//!
//! 1. **lock** — `infra/lock.rs`, then `state/recover.rs` cleans up what a killed deploy left;
//! 2. **decide** — `receive/deploy.rs`: the branch head under the lock, or nothing when it is live;
//! 3. **checkout** — [`checkout`]: the commit into `application/`;
//! 4. **composer** — [`composer`]: only as much as the commit needs;
//!    then **build** — [`build`]: the front-end commands, when their inputs changed;
//! 5. **snapshot** — [`snapshot`]: `application/` into a new build (with
//!    `state/manifest.rs`), while composer runs when composer writes only its autoloader
//!    (`pipeline::composer_while_copying`);
//! 6. **shared** — [`shared`]: the `shared:` entries linked into the build, then
//!    **keep_assets** — [`assets`]: the `keep_assets:` files of earlier builds carried in;
//! 7. **before_switch** — [`commands`], in the build; then **preflight** — [`preflight`]:
//!    the build's pages requested from php-fpm before it is live;
//! 8. **switch** — [`switch`]: `latest` flipped in one rename; then, when `reset_opcache:` is
//!    set, [`opcache`] asks php-fpm to forget the old build's compiled scripts (also after
//!    every rollback's switch);
//! 9. **after_switch** — [`commands`];
//! 10. **healthcheck** — [`health`]; failing, `receive/rollback.rs` puts the previous build back;
//! 11. **cleanup** — [`cleanup`]: old and bad builds removed, never the live one;
//! 12. **log** — `state/history.rs`, and `state/refs.rs` moves the `rollback` branch.
//!
//! `receive/pipeline.rs` runs 3 to 11, handing each step a [`Deploy`]; every step there
//! returns a summary that knows its own line.
//!
//! A layer below `receive` and above `state`: a step uses state, infra and config, and never
//! the pipeline or the hook that run it.

use std::fmt;
use std::time::Duration;

use git2::{Oid, Repository};

use crate::infra::report::{Reporter, Step};
use crate::state::build_name::BuildName;
use crate::state::plan::Plan;

pub(crate) mod assets;
pub(crate) mod build;
pub(crate) mod checkout;
pub(crate) mod cleanup;
pub(crate) mod commands;
pub(crate) mod composer;
pub(crate) mod fastcgi;
pub(crate) mod health;
pub(crate) mod opcache;
pub(crate) mod preflight;
pub(crate) mod restore;
pub(crate) mod shared;
pub(crate) mod snapshot;
pub(crate) mod submodules;
pub(crate) mod switch;

/// One deploy, from the checkout on: what every step reads.
pub(crate) struct Deploy<'a> {
    pub(crate) plan: &'a Plan,
    /// The bare repository, opened once for the whole deploy.
    pub(crate) repo: &'a Repository,
    pub(crate) commit: Oid,
    /// The ref or command that asked, for the build's record.
    pub(crate) source: &'a str,
    /// `replay`: the build links nothing from the live one.
    pub(crate) replay: bool,
    /// The live build, which the new one replaces (and links from).
    pub(crate) previous: Option<&'a BuildName>,
    pub(crate) reporter: &'a Reporter,
}

/// What a step did, as the detail of its line (`    checkout 0.04s: 12 files, …`).
pub(crate) trait Summary: fmt::Display {
    /// A step that had nothing to do: its line says why, and the summary line says `skipped`.
    fn skipped(&self) -> bool {
        false
    }
}

/// Closes `step` with the line `summary` gives; `before` is work done before the step's
/// header (the part of a snapshot made while composer ran).
pub(crate) fn close(reporter: &Reporter, step: Step, before: Duration, summary: &impl Summary) {
    let detail = summary.to_string();
    if summary.skipped() {
        reporter.skipped(step, &detail);
    } else {
        reporter.done_after(step, before, &detail);
    }
}
