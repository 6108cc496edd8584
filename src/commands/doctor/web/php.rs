//! opcache and the realpath cache of the running pool: what would serve a stale build.
//!
//! A stale build comes from one thing: PHP handed the same path for every build (nginx's
//! `$document_root`, through `latest`) with no `reset_opcache:`. Then opcache keys the old
//! build's scripts by that path and, with `validate_timestamps=0`, serves them until php-fpm
//! restarts; with timestamps validated it still does for up to `revalidate_freq` seconds,
//! and each worker's realpath cache maps `latest/...` to the old build for
//! `realpath_cache_ttl` seconds, so files of two builds mix in one request meanwhile. With
//! `$realpath_root` each build is new paths and none of these settings matter; with
//! `reset_opcache:` the reset empties both caches (src/steps/opcache.rs), if it reaches the
//! pool that serves the site.
//!
//! Separately, opcache settings in a pool file: php-fpm applies them after start-up, where
//! `opcache.enable` makes every new worker warn, which frameworks turn into a 500, and the
//! shared-memory sizes are silently ignored (webserver/php-fpm-pool.conf).

use crate::config::FpmAddress;

use super::super::{Context, Finding};
use super::nginx::Site;
use super::pool::{Pool, Probe};

const CHECK: &str = "opcache";

/// Settings php-fpm cannot change once started: in a pool they are ignored.
const START_UP_ONLY: [&str; 5] = [
    "opcache.memory_consumption",
    "opcache.interned_strings_buffer",
    "opcache.max_accelerated_files",
    "realpath_cache_size",
    "realpath_cache_ttl",
];

pub(crate) fn check(
    context: &Context,
    site: Option<&Site>,
    pool: Option<&Pool>,
    out: &mut Vec<Finding>,
) {
    let Some(pool) = pool else {
        return;
    };
    pool_settings(pool, out);
    let reset = context
        .plan
        .as_ref()
        .and_then(|p| p.config.reset_opcache.as_ref());
    if let Some(reset) = reset {
        reset_target(reset, pool, out);
    }
    let Ok(probe) = &pool.probe else {
        return;
    };
    if reset.is_some() {
        restrict_api(context, probe, pool, out);
    }
    let on = probe.opcache && truthy(probe.ini("opcache.enable"));
    if !on {
        out.push(Finding::warn(
            CHECK,
            format!(
                "opcache is {} in {}: every request compiles every PHP file again",
                if probe.opcache {
                    "disabled"
                } else {
                    "not loaded"
                },
                pool.label()
            ),
            "install webserver/opcache.ini into php-fpm's conf.d (e.g. \
             /etc/php/8.2/fpm/conf.d/99-atomdeploy.ini) and restart php-fpm",
        ));
    }
    let unresolved = site.is_some_and(|s| s.passes.iter().any(|p| !p.resolved));
    if unresolved && reset.is_none() {
        out.push(Finding::fail(
            CHECK,
            format!("{}: {}", pool.label(), stale(probe, on)),
            "hand PHP the build's own path: `fastcgi_param SCRIPT_FILENAME \
             $realpath_root$fastcgi_script_name;` (webserver/nginx-site.conf), or set \
             `reset_opcache: <the pool's listen>` in deploy.yml",
        ));
    } else if on {
        out.push(Finding::ok(
            CHECK,
            format!(
                "{}: opcache on, validate_timestamps={}, {}",
                pool.label(),
                probe.ini("opcache.validate_timestamps").unwrap_or("?"),
                if reset.is_some() {
                    "reset after each switch (reset_opcache)"
                } else {
                    "each build is new paths ($realpath_root)"
                }
            ),
        ));
    }
}

/// How long the old build is served after a switch, given the path through `latest`.
fn stale(probe: &Probe, on: bool) -> String {
    let ttl = probe.ini("realpath_cache_ttl").unwrap_or("120");
    let realpath = format!(
        "each worker's realpath cache maps latest/ to the old build for realpath_cache_ttl={ttl}s"
    );
    if !on {
        return format!(
            "PHP is handed paths through `latest`, and {realpath}: files of two builds mix \
             after each switch"
        );
    }
    if !truthy(probe.ini("opcache.validate_timestamps")) {
        return "opcache.validate_timestamps=0 with paths through `latest`: opcache keeps \
                serving the build it compiled first under the same names, after every deploy, \
                until php-fpm restarts"
            .to_string();
    }
    format!(
        "opcache.revalidate_freq={}s with paths through `latest`, and {realpath}: the old \
         build (or a mix of both) is served after each switch",
        probe.ini("opcache.revalidate_freq").unwrap_or("2")
    )
}

fn truthy(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "on" | "true" | "yes")
    )
}

/// `php_admin_value[opcache.enable]` and the like in the pool's file.
fn pool_settings(pool: &Pool, out: &mut Vec<Finding>) {
    for (key, value, line) in &pool.settings {
        let Some(name) = key
            .strip_prefix("php_admin_value[")
            .or_else(|| key.strip_prefix("php_value["))
            .or_else(|| key.strip_prefix("php_admin_flag["))
            .or_else(|| key.strip_prefix("php_flag["))
            .and_then(|k| k.strip_suffix(']'))
        else {
            continue;
        };
        let seen = format!(
            "{key} = {value} in pool `{}` ({}:{line})",
            pool.name,
            pool.at.rsplit_once(':').map(|(f, _)| f).unwrap_or(&pool.at)
        );
        if name == "opcache.enable" {
            out.push(Finding::fail(
                CHECK,
                format!(
                    "{seen}: PHP warns \"Zend OPcache can't be temporary enabled\" as each \
                     worker starts, and frameworks answer that worker's first request with a \
                     500 (after every pm.max_requests, scale-up and reload)"
                ),
                "remove the line: opcache.enable belongs in php-fpm's conf.d \
                 (webserver/opcache.ini), and is on by default",
            ));
        } else if START_UP_ONLY.contains(&name) {
            out.push(Finding::warn(
                CHECK,
                format!("{seen}: ignored, php-fpm sets it once at start-up"),
                "move it to php-fpm's conf.d (webserver/opcache.ini) and restart php-fpm",
            ));
        }
    }
}

/// `reset_opcache:` must reach the pool that serves the site, or it resets another one.
fn reset_target(reset: &FpmAddress, pool: &Pool, out: &mut Vec<Finding>) {
    let Some(listen) = &pool.listen else {
        return;
    };
    let same = match (reset, listen) {
        (FpmAddress::Unix(a), FpmAddress::Unix(b)) => {
            a == b
                || std::fs::canonicalize(a)
                    .is_ok_and(|a| std::fs::canonicalize(b).is_ok_and(|b| a == b))
        }
        (FpmAddress::Tcp { port: p, .. }, FpmAddress::Tcp { port: q, .. }) => p == q,
        _ => false,
    };
    if !same {
        out.push(Finding::fail(
            CHECK,
            format!(
                "reset_opcache resets the pool at {reset}, but the site is served by {} at \
                 {listen}: its opcache is never reset",
                pool.label()
            ),
            format!("`reset_opcache: {listen}` in deploy.yml"),
        ));
    }
}

/// opcache_reset() is refused to a script outside `opcache.restrict_api`: the reset (and so
/// each deploy) fails.
fn restrict_api(context: &Context, probe: &Probe, pool: &Pool, out: &mut Vec<Finding>) {
    let Some(prefix) = probe.ini("opcache.restrict_api").filter(|p| !p.is_empty()) else {
        return;
    };
    let state = context.layout.state.display().to_string();
    if !state.starts_with(prefix) {
        out.push(Finding::fail(
            CHECK,
            format!(
                "opcache.restrict_api is `{prefix}` in {}: reset_opcache's script in {state} is \
                 outside it, so opcache_reset() is refused and every deploy ends failed",
                pool.label()
            ),
            format!("set opcache.restrict_api empty, or to a prefix of {state}"),
        ));
    }
}
