//! The primary's own part of a group deploy or rollback ([`primary::Local`]), over the same
//! pipeline and switch as a single server's, and what deploy.rs and rollback.rs call when
//! deploy.yml lists `hosts:`.

use anyhow::{Result, anyhow};

use crate::infra::report::Reporter;
use crate::receive::group::primary::{self, Group, GroupDone, HostBuild, HostLog, Local};
use crate::receive::group::view;
use crate::receive::pipeline::{self, Deployed, GoLive, Prepared, Problem};
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Plan;
use crate::steps::Deploy;
use crate::steps::restore::{self, Restored};

/// What a group operation adds to the deploy log.
#[derive(Default)]
pub(crate) struct GroupLog {
    pub(crate) hosts: Vec<HostLog>,
    pub(crate) switch_spread_ms: Option<f64>,
}

impl GroupLog {
    fn done(done: &GroupDone, reporter: &Reporter) -> GroupLog {
        reporter.line(&format!("atomdeploy: {}", primary::spread_summary(done)));
        GroupLog {
            hosts: done.hosts.clone(),
            switch_spread_ms: Some(done.spread.as_secs_f64() * 1000.0),
        }
    }
}

/// A deploy's build on the primary.
struct LocalDeploy<'a, 'd> {
    d: &'a Deploy<'d>,
    prepared: Option<Prepared>,
    deployed: Option<Deployed>,
    /// `go_live` left the primary on its previous build already (its switch failed).
    gone_back: bool,
}

impl Local for LocalDeploy<'_, '_> {
    fn prepare(&mut self) -> Result<()> {
        self.prepared = Some(pipeline::prepare(self.d)?);
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        let prepared = self.prepared.as_ref().expect("release comes after prepare");
        // A failing release removes the build itself.
        pipeline::release(self.d, prepared).inspect_err(|_| self.prepared = None)
    }

    fn go_live(&mut self) -> Result<(u128, Option<anyhow::Error>)> {
        let prepared = self.prepared.take().expect("go_live comes after prepare");
        let deployed = pipeline::go_live(
            self.d,
            prepared,
            GoLive::Group {
                switched: &|_, _| {},
            },
        )
        .inspect_err(|_| self.gone_back = true)?;
        let ns = u128::from(deployed.switched_ns);
        // Whatever fails a single server's deploy once its build is live fails the group's,
        // as it does a host's switch: the group goes back.
        let problem = match &deployed.problem {
            Problem::None => None,
            Problem::Unhealthy(err) | Problem::Opcache(err) => Some(anyhow!("{err:#}")),
            Problem::AfterSwitch(err) => Some(anyhow!("after_switch failed: {err:#}")),
        };
        self.deployed = Some(deployed);
        Ok((ns, problem))
    }

    fn discard(&mut self) {
        if let Some(prepared) = self.prepared.take() {
            pipeline::discard(self.d, &prepared.build);
        }
    }

    fn restore(&mut self) -> Result<()> {
        let Some(deployed) = &self.deployed else {
            return Ok(());
        };
        if self.gone_back {
            return Ok(());
        }
        let Some(previous) = self.d.previous else {
            builds::mark_bad(&self.d.plan.layout, &deployed.build)?;
            return Err(anyhow!(
                "there is no earlier build to go back to; builds/{} stays live, marked bad",
                deployed.build
            ));
        };
        let restored = restore::restore(self.d.plan, &deployed.build, previous, self.d.reporter)?;
        if let Some(err) = restored.opcache {
            self.d.reporter.warn(&format!("{err:#}"));
        }
        Ok(())
    }
}

/// A group deploy from the primary (deploy.rs, once it holds the lock and chose the commit).
/// `Ok(Deployed)` with [`Problem::Unhealthy`] when the group switched and went back.
pub(crate) fn deploy(d: &Deploy) -> (Result<Deployed>, GroupLog) {
    let (hosts, left_out) = match primary::active_hosts(d.plan, d.reporter) {
        Ok(active) => active,
        Err(err) => return (Err(err), GroupLog::default()),
    };
    let commit = d.commit.to_string();
    let group = Group {
        plan: d.plan,
        reporter: d.reporter,
        commit: &commit,
        build: if d.replay {
            HostBuild::Replay
        } else {
            HostBuild::Prepare
        },
        here: true,
    };
    let mut local = LocalDeploy {
        d,
        prepared: None,
        deployed: None,
        gone_back: false,
    };
    match primary::run(&group, &hosts, left_out, &mut local) {
        Ok(done) => {
            let log = GroupLog::done(&done, d.reporter);
            let deployed = local
                .deployed
                .ok_or_else(|| anyhow!("the primary's build did not go live"));
            (deployed, log)
        }
        Err(failed) => {
            let log = GroupLog {
                hosts: failed.hosts,
                switch_spread_ms: None,
            };
            match local.deployed {
                Some(deployed) if failed.switched => (
                    Ok(Deployed {
                        problem: Problem::Unhealthy(failed.error),
                        ..deployed
                    }),
                    log,
                ),
                _ => (Err(failed.error), log),
            }
        }
    }
}

/// The commit is live here already: hosts that are not on it (one included again, one a
/// killed deploy left behind) are brought to it.
pub(crate) fn unchanged(plan: &Plan, commit: &str, reporter: &Reporter) -> Result<GroupLog> {
    let (hosts, left_out) = primary::active_hosts(plan, reporter)?;
    // The active hosts alone: an excluded one may be dead, and asking it would hold this push
    // for its bound and warn of a wait nobody needs.
    let (_, _, rows) = view::rows_of(plan, &hosts, reporter)?;
    let behind: Vec<_> = hosts
        .into_iter()
        .filter(|h| {
            rows.iter()
                .any(|r| r.url == h.url && r.live_commit.as_deref() != Some(commit))
        })
        .collect();
    if !behind.is_empty() {
        reporter.line(&format!(
            "atomdeploy: bringing {} to this server's live commit",
            behind
                .iter()
                .map(|h| h.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        view::catch_up(plan, commit, &behind, reporter)?;
    }
    Ok(GroupLog {
        hosts: left_out,
        switch_spread_ms: None,
    })
}

/// A rollback's switch on the primary: nothing to prepare, the target is on disk.
struct LocalRollback<'a> {
    plan: &'a Plan,
    live: &'a BuildName,
    target: &'a BuildName,
    reporter: &'a Reporter,
    restored: Option<Restored>,
}

impl Local for LocalRollback<'_> {
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }
    fn release(&mut self) -> Result<()> {
        Ok(())
    }
    fn go_live(&mut self) -> Result<(u128, Option<anyhow::Error>)> {
        let restored = restore::restore(self.plan, self.live, self.target, self.reporter)?;
        let ns = rfc3339_ns(&restored.switched_at).unwrap_or_else(primary::now_ns);
        self.restored = Some(restored);
        Ok((ns, None))
    }
    fn discard(&mut self) {}
    fn restore(&mut self) -> Result<()> {
        if self.restored.is_none() {
            return Ok(());
        }
        restore::restore(self.plan, self.target, self.live, self.reporter).map(|_| ())
    }
}

/// The rename's instant from the log's timestamp (microseconds).
fn rfc3339_ns(at: &str) -> Option<u128> {
    let parsed =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    u128::try_from(parsed.unix_timestamp_nanos()).ok()
}

/// A rollback of the whole group to `target`'s commit: every host switches to its newest
/// good build of it (`reuse`), the primary to `target`.
pub(crate) fn rollback(
    plan: &Plan,
    live: &BuildName,
    target: &BuildName,
    commit: &str,
    reporter: &Reporter,
) -> (Result<Restored>, GroupLog) {
    let (hosts, left_out) = match primary::active_hosts(plan, reporter) {
        Ok(active) => active,
        Err(err) => return (Err(err), GroupLog::default()),
    };
    let group = Group {
        plan,
        reporter,
        commit,
        build: HostBuild::Reuse,
        here: true,
    };
    let mut local = LocalRollback {
        plan,
        live,
        target,
        reporter,
        restored: None,
    };
    match primary::run(&group, &hosts, left_out, &mut local) {
        Ok(done) => {
            let log = GroupLog::done(&done, reporter);
            let restored = local
                .restored
                .ok_or_else(|| anyhow!("this server did not switch"));
            (restored, log)
        }
        Err(failed) => (
            Err(failed.error),
            GroupLog {
                hosts: failed.hosts,
                switch_spread_ms: None,
            },
        ),
    }
}
