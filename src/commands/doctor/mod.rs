//! `atomdeploy-hook doctor`: checks one deploy root and the server around it, and says for
//! each finding how to fix it. Exits non-zero when something would break a deploy or a
//! request; a warning is something that works today but will hurt later.
//!
//! Read-only: doctor never changes the root, the repository or the server. On a primary it
//! asks its hosts what they serve, as `atomdeploy-hook hosts` does.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;

use crate::state::plan::{Layout, Plan};

mod hosts;
mod root;
mod web;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    /// Works now, but something will go wrong later (or a check could not be made).
    Warn,
    /// Would break a deploy or a request.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warn => "warning",
            Level::Fail => "FAIL",
        })
    }
}

/// One thing doctor found: which check, what it saw, and (unless all is well) the fix.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) level: Level,
    /// A short, stable name (`hook`, `fsck`, `php-fpm pool`...): tests and scripts match it.
    pub(crate) check: &'static str,
    pub(crate) message: String,
    pub(crate) fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            check,
            message: message.into(),
            fix: None,
        }
    }
    pub(crate) fn warn(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Warn,
            check,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    pub(crate) fn fail(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Fail,
            check,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What doctor was asked to look at.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) root: PathBuf,
    /// The php-fpm pool file serving the app; default: found among the pool files.
    pub(crate) fpm_pool: Option<PathBuf>,
    /// nginx's main configuration file; default: /etc/nginx/nginx.conf.
    pub(crate) nginx_config: Option<PathBuf>,
    /// Where php-fpm's pool files are searched when `fpm_pool` is not given (a path whose
    /// components may hold `*`); default: [`web::POOL_FILES`].
    pub(crate) fpm_pools: Option<String>,
}

/// What every check may read: the options, the root's layout, and its validated plan when
/// deploy.yml could be loaded (a broken deploy.yml is itself a finding, and the checks that
/// need it are skipped with a warning rather than failing doctor).
pub(crate) struct Context<'a> {
    pub(crate) options: &'a Options,
    pub(crate) layout: Layout,
    pub(crate) plan: Option<Plan>,
}

/// Runs every check and prints the findings; `Ok(false)` when one would break a deploy or
/// a request.
pub(crate) fn doctor(options: &Options) -> Result<bool> {
    let findings = findings(options);
    print!("{}", render(&findings));
    Ok(findings.iter().all(|f| f.level != Level::Fail))
}

/// Every check's findings, in the order an operator would fix them.
pub(crate) fn findings(options: &Options) -> Vec<Finding> {
    let layout = Layout::new(&std::fs::canonicalize(&options.root).unwrap_or(options.root.clone()));
    let mut out = Vec::new();
    let plan = root::load(options, &mut out);
    let context = Context {
        options,
        layout: plan.as_ref().map(|p| p.layout.clone()).unwrap_or(layout),
        plan,
    };
    root::check(&context, &mut out);
    if let Some(plan) = &context.plan {
        hosts::check(plan, &mut out);
    }
    web::check(&context, &mut out);
    out
}

/// One line per finding, its fix indented under it, then a one-line verdict.
pub(crate) fn render(findings: &[Finding]) -> String {
    let mut text = String::new();
    for finding in findings {
        text.push_str(&format!(
            "{:<8} {}: {}\n",
            finding.level.to_string(),
            finding.check,
            finding.message
        ));
        if let Some(fix) = &finding.fix {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "fix:" } else { "" };
                text.push_str(&format!("{:<8} {lead:<4} {line}\n", ""));
            }
        }
    }
    let failures = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warnings = findings.iter().filter(|f| f.level == Level::Warn).count();
    text.push_str(&match (failures, warnings) {
        (0, 0) => "doctor: all checks passed\n".to_string(),
        (0, w) => format!("doctor: no problem that breaks a deploy; {w} warning(s)\n"),
        (f, w) => {
            format!("doctor: {f} problem(s) would break a deploy or a request; {w} warning(s)\n")
        }
    });
    text
}
