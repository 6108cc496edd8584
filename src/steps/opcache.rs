//! `reset_opcache:`: right after a switch, the php-fpm pool itself is asked over FastCGI (the
//! way cachetool does it) to run `opcache_reset()`, so that a web server that hands PHP the
//! unresolved path (`$document_root`, Apache, shared hosts) serves the new build at once.
//!
//! Why a reset is enough, measured with PHP 8.2's php-fpm (`pm = static`, 4 workers,
//! `opcache.validate_timestamps=0`, nginx with `$document_root`): opcache keys the cached
//! scripts by the path PHP was given (`/srv/app/latest/public/index.php`), so without a reset
//! every worker serves the old build for ever. Each worker also keeps its own realpath cache
//! (`latest/public/index.php` → `builds/<old>/public/index.php`, for `realpath_cache_ttl`),
//! which no request to one worker can clear in another; but opcache itself empties every
//! worker's realpath cache at that worker's first request after a restart of the shared
//! cache (ZendAccelerator.c, `accel_activate`: "Reset in-process realpath cache"). What is
//! left is the moment in between: `opcache_reset()` only schedules the restart, which happens
//! at the start of a later request once no worker is inside one; until then the cache is off
//! and every worker compiles through its own stale realpath cache, serving the old build.
//! So the hook asks again until the pool says the restart happened, and says so when a long
//! request keeps it pending past the time limit.
//!
//! The FastCGI client is in [`crate::steps::fastcgi`], shared with `preflight:`.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::config::FpmAddress;
use crate::infra::report::Reporter;
use crate::state::plan::Layout;
use crate::steps::fastcgi::{self, Response};
use crate::steps::{self, Summary};

/// The whole reset, connection, restart and all, never takes longer: it runs while the
/// deploy lock is held and the new build is live already.
pub(crate) const LIMIT: Duration = Duration::from_secs(5);

/// Versioned: opcache (with `validate_timestamps=0`) would run a cached older script of the
/// same name after an upgrade of the hook.
const SCRIPT_NAME: &str = "opcache-reset-1.php";

/// Runs in the pool. `?reset` calls `opcache_reset()`; any request reports whether the
/// restart it scheduled is still pending. One marked JSON line, whatever else PHP prints
/// (a warning with `display_errors` on).
const SCRIPT: &str = r#"<?php
// Written by atomdeploy-hook (reset_opcache in deploy.yml); run by php-fpm over FastCGI.
$out = ['php' => PHP_VERSION, 'pid' => getmypid(), 'loaded' => function_exists('opcache_get_status')];
// Not opcache_get_status()['opcache_enabled']: that is false while a restart is pending.
$out['enabled'] = $out['loaded'] && filter_var(ini_get('opcache.enable'), FILTER_VALIDATE_BOOLEAN);
$out['restrict_api'] = (string) ini_get('opcache.restrict_api');
if ($out['enabled'] && ($_GET['do'] ?? '') === 'reset') {
    $out['reset'] = opcache_reset();
}
clearstatcache(true);
$status = $out['enabled'] ? opcache_get_status(false) : false;
$out['pending'] = is_array($status)
    && (!empty($status['restart_pending']) || !empty($status['restart_in_progress']));
echo "\nATOMDEPLOY-OPCACHE ", json_encode($out), "\n";
"#;

const MARKER: &str = "ATOMDEPLOY-OPCACHE ";

/// What the script reported.
#[derive(Debug, Deserialize)]
struct Report {
    php: String,
    loaded: bool,
    enabled: bool,
    restrict_api: String,
    reset: Option<bool>,
    #[serde(default)]
    pending: bool,
}

/// A reset that was done, or could not be done for a reason that is not an error.
pub(crate) struct Reset {
    pub(crate) address: FpmAddress,
    pub(crate) php: String,
    /// Pending past [`LIMIT`] (a long request in the pool), or opcache off in the pool.
    pub(crate) warning: Option<String>,
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "php-fpm pool at {} (PHP {})", self.address, self.php)
    }
}

impl Summary for Reset {}

/// The step after a switch: resets the pool's opcache and reports it. Returns the error that
/// makes the deploy (or rollback) end failed, with the build left live.
pub(crate) fn reset_step(
    layout: &Layout,
    address: &FpmAddress,
    reporter: &Reporter,
) -> Option<anyhow::Error> {
    let step = reporter.step("opcache reset");
    match reset(layout, address) {
        Ok(done) => {
            if let Some(warning) = &done.warning {
                reporter.warn(warning);
            }
            steps::close(reporter, step, Duration::ZERO, &done);
            None
        }
        Err(err) => Some(err.context("opcache reset failed")),
    }
}

/// Asks the pool at `address` to reset its opcache, then until its restart happened.
pub(crate) fn reset(layout: &Layout, address: &FpmAddress) -> Result<Reset> {
    let deadline = Instant::now() + LIMIT;
    let script = write_script(layout)?;
    let first = ask(address, &script, "do=reset", deadline)?;
    if !first.loaded || !first.enabled {
        return Ok(Reset {
            address: address.clone(),
            php: first.php,
            warning: Some(format!(
                "opcache is {} in the php-fpm pool at {address}: nothing to reset. Each worker's \
                 realpath cache may still map latest/ to the old build for realpath_cache_ttl \
                 seconds, unless the web server passes the resolved path ($realpath_root)",
                if first.loaded {
                    "disabled"
                } else {
                    "not loaded"
                }
            )),
        });
    }
    if first.reset != Some(true) {
        let why = if first.restrict_api.is_empty() {
            String::new()
        } else {
            format!(
                ": opcache.restrict_api is `{}`, and {} is outside it; set it empty or to a \
                 prefix of {}",
                first.restrict_api,
                script.display(),
                layout.state.display()
            )
        };
        bail!("opcache_reset() returned false in the php-fpm pool at {address}{why}");
    }
    let php = first.php;
    let mut pending = first.pending;
    let mut why = String::from("a request was running all along");
    while pending {
        // A poll needs a moment of its own; one begun at the deadline could only time out.
        if deadline.saturating_duration_since(Instant::now()) < Duration::from_millis(200) {
            return Ok(Reset {
                address: address.clone(),
                php,
                warning: Some(format!(
                    "the opcache restart in the php-fpm pool at {address} was still pending after \
                     {}s ({why}); until it happens the workers serve the old build",
                    LIMIT.as_secs()
                )),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        // The reset is scheduled already: a poll that fails (all workers busy) leaves it
        // unconfirmed, not undone.
        match ask(address, &script, "", deadline) {
            Ok(report) => pending = report.pending,
            Err(err) => why = format!("the pool did not answer: {err:#}"),
        }
    }
    Ok(Reset {
        address: address.clone(),
        php,
        warning: None,
    })
}

/// Writes the script where the pool can read it: under the deploy root, not in /tmp (a pool
/// with PrivateTmp, or another user's, would not see it there).
fn write_script(layout: &Layout) -> Result<PathBuf> {
    let path = layout.state.join(SCRIPT_NAME);
    if fs::read_to_string(&path).ok().as_deref() != Some(SCRIPT) {
        let tmp = layout
            .state
            .join(format!(".{SCRIPT_NAME}.{}", std::process::id()));
        fs::write(&tmp, SCRIPT)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// One request to the pool; its report, or why there is none.
fn ask(address: &FpmAddress, script: &Path, query: &str, deadline: Instant) -> Result<Report> {
    let json = run_script(address, script, query, MARKER, deadline)?;
    serde_json::from_str::<Report>(&json)
        .map_err(|e| anyhow!("the php-fpm pool at {address} reported `{json}`: {e}"))
}

/// Runs `script` in the pool at `address` (the way the reset does, so that doctor asks the
/// running pool for its real settings): the rest of the line of its output that starts with
/// `marker`. Fails, saying why, when the pool cannot be reached (the error's root cause is
/// the connection's) or answers without that line.
pub(crate) fn run_script(
    address: &FpmAddress,
    script: &Path,
    query: &str,
    marker: &str,
    deadline: Instant,
) -> Result<String> {
    let response = fastcgi::request(address, &params(script, query), deadline, LIMIT)
        .with_context(|| format!("cannot reach the php-fpm pool at {address}"))?;
    let stdout = String::from_utf8_lossy(&response.stdout);
    match stdout.lines().find_map(|line| line.strip_prefix(marker)) {
        Some(found) => Ok(found.to_string()),
        None => Err(no_report(address, script, &response)),
    }
}

/// The pool answered, but not with the script's report: say what it said, and why that may be.
fn no_report(address: &FpmAddress, script: &Path, response: &Response) -> anyhow::Error {
    let squeeze = |text: &str| {
        let text: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let text = text.join(" / ");
        match text.char_indices().nth(200) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    };
    let (status, body) = response.status_and_body();
    let (body, stderr) = (
        squeeze(&body),
        squeeze(&String::from_utf8_lossy(&response.stderr)),
    );
    let said = format!("{status} {body} {stderr}").to_ascii_lowercase();
    let unreadable = [
        "primary script unknown",
        "file not found",
        "no input file",
        "access denied",
        "permission denied",
        "unable to open primary script",
        "403",
        "404",
    ]
    .iter()
    .any(|s| said.contains(s));
    let mut message = format!(
        "the php-fpm pool at {address} did not run {} (it answered {status}: {}",
        script.display(),
        if body.is_empty() { "nothing" } else { &body },
    );
    if !stderr.is_empty() {
        message.push_str(&format!("; stderr: {stderr}"));
    }
    message.push(')');
    if unreadable {
        message.push_str(&format!(
            ": the pool's user must be able to enter every directory above the script (x \
             permission on {} and each parent) and read it; a chroot, open_basedir or \
             security.limit_extensions in the pool can refuse it too",
            script.parent().unwrap_or(script).display()
        ));
    }
    anyhow!(message)
}

fn params(script: &Path, query: &str) -> Vec<(String, String)> {
    let script = script.display().to_string();
    let dir = Path::new(&script)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let uri = format!("/{SCRIPT_NAME}");
    [
        ("GATEWAY_INTERFACE", "FastCGI/1.0"),
        ("SERVER_SOFTWARE", "atomdeploy-hook"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", &script),
        ("SCRIPT_NAME", &uri),
        ("REQUEST_URI", &format!("{uri}?{query}")),
        ("DOCUMENT_URI", &uri),
        ("DOCUMENT_ROOT", &dir),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", "0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_NAME", "localhost"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_script_is_explained() {
        let response = Response {
            stdout: b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n"
                .to_vec(),
            stderr: b"Primary script unknown".to_vec(),
            app_status: 0,
        };
        let address = FpmAddress::Unix("/run/php/app.sock".into());
        let err = no_report(&address, Path::new("/srv/app/.atomdeploy/x.php"), &response);
        let text = format!("{err}");
        assert_eq!(
            text,
            "the php-fpm pool at unix:/run/php/app.sock did not run /srv/app/.atomdeploy/x.php \
             (it answered 404 Not Found: File not found.; stderr: Primary script unknown): the \
             pool's user must be able to enter every directory above the script (x permission \
             on /srv/app/.atomdeploy and each parent) and read it; a chroot, open_basedir or \
             security.limit_extensions in the pool can refuse it too"
        );
        // A PHP error is shown as it is, with no hint about permissions.
        let fatal = Response {
            stdout: b"Status: 500 Internal Server Error\r\nContent-type: text/html\r\n\r\n"
                .to_vec(),
            stderr: b"PHP Fatal error:  Allowed memory size exhausted\n".to_vec(),
            app_status: 255,
        };
        let text = format!("{}", no_report(&address, Path::new("/x.php"), &fatal));
        assert!(
            text.ends_with(
                "(it answered 500 Internal Server Error: nothing; stderr: PHP Fatal error:  \
                 Allowed memory size exhausted)"
            ),
            "{text}"
        );
    }
}
