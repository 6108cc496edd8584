//! The health check after a switch: a command or an HTTP GET that must succeed, or the new
//! build is rolled back.

use std::fmt;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::config::{Healthcheck, Probe};
use crate::infra::child;
use crate::infra::report::Reporter;
use crate::steps::Summary;

/// A check that passed, and at which attempt.
pub(crate) struct Healthy(pub u32);

impl fmt::Display for Healthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "healthy (attempt {})", self.0)
    }
}

impl Summary for Healthy {}

/// Probes until one attempt succeeds or the retries are spent.
pub(crate) fn check(
    check: &Healthcheck,
    root: &Path,
    build: &Path,
    reporter: &Reporter,
) -> Result<Healthy> {
    // deploy.yml bounds retries; saturating all the same, as no count here may panic.
    let attempts = check.retries.saturating_add(1);
    let mut last = anyhow!("not probed");
    for attempt in 1..=attempts {
        match probe(check, root, build, reporter) {
            Ok(()) => return Ok(Healthy(attempt)),
            Err(err) => {
                reporter.child_line(&format!("attempt {attempt}/{attempts} failed: {err:#}"));
                last = err;
            }
        }
        if attempt < attempts {
            std::thread::sleep(check.interval);
        }
    }
    bail!("unhealthy after {attempts} attempts; the last: {last:#}")
}

fn probe(check: &Healthcheck, root: &Path, build: &Path, reporter: &Reporter) -> Result<()> {
    match &check.probe {
        Probe::Command(script) => {
            let mut cmd = child::shell(script, root);
            cmd.env("ATOMDEPLOY_ROOT", root)
                .env("ATOMDEPLOY_BUILD", build);
            child::run_limited(cmd, &format!("`{script}`"), Some(check.timeout), reporter)
        }
        Probe::Url(url) => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(check.timeout))
                .http_status_as_error(false)
                // The check is of this server's own web server, never through a proxy.
                .proxy(None)
                .build()
                .into();
            let response = agent
                .get(url)
                .call()
                .map_err(|e| anyhow!("GET {url}: {e}"))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                bail!("GET {url} answered {status}")
            }
        }
    }
}
