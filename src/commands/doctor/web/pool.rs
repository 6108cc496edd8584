//! The php-fpm pool serving the root: the pool file whose `listen` is where nginx passes PHP
//! requests (or the one given), and what the running pool says about itself.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::FpmAddress;
use crate::infra::users;
use crate::steps::opcache;

use super::super::{Context, Finding};
use super::POOL_FILES;
use super::glob;
use super::nginx::Site;

const CHECK: &str = "php-fpm pool";

/// One `[name]` section of a php-fpm pool file.
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) at: String,
    pub(crate) listen: Option<FpmAddress>,
    /// Every `key = value` of the section, with its line.
    pub(crate) settings: Vec<(String, String, usize)>,
    /// Who the pool's workers run as: as the running pool says, else as its file says.
    pub(crate) ident: Option<Ident>,
    /// The running pool's own report, or why there is none.
    pub(crate) probe: Result<Probe, String>,
}

impl Pool {
    /// "pool `app` (file:line)", or what nginx passes to when no pool file listens there.
    pub(crate) fn label(&self) -> String {
        if self.at.is_empty() {
            "the pool nginx passes to (no pool file found)".to_string()
        } else {
            format!("pool `{}` ({})", self.name, self.at)
        }
    }

    fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// A user, its group and supplementary groups.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ident {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
}

impl Ident {
    pub(crate) fn user(&self) -> String {
        users::user_name(self.uid).unwrap_or_else(|| self.uid.to_string())
    }
    pub(crate) fn group(&self) -> String {
        users::group_or_gid(self.gid)
    }
}

/// What the probe run in the pool reports.
#[derive(Debug, Deserialize)]
pub(crate) struct Probe {
    pub(crate) php: String,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    pub(crate) opcache: bool,
    /// ini_get() of the settings doctor looks at; `None` for an unknown one.
    pub(crate) ini: BTreeMap<String, Option<String>>,
}

impl Probe {
    pub(crate) fn ini(&self, key: &str) -> Option<&str> {
        self.ini.get(key).and_then(|v| v.as_deref())
    }
}

const MARKER: &str = "ATOMDEPLOY-DOCTOR ";

/// Prints who runs it and the settings that decide whether a build can be served stale.
const PROBE: &str = r#"<?php
// Written by `atomdeploy-hook doctor` into a temporary directory, removed right after.
$out = ['php' => PHP_VERSION, 'opcache' => extension_loaded('Zend OPcache'), 'ini' => [],
    'uid' => function_exists('posix_geteuid') ? posix_geteuid() : null,
    'gid' => function_exists('posix_getegid') ? posix_getegid() : null,
    'groups' => function_exists('posix_getgroups') ? posix_getgroups() : null];
foreach (['opcache.enable', 'opcache.validate_timestamps', 'opcache.revalidate_freq',
    'realpath_cache_ttl', 'opcache.restrict_api'] as $key) {
    $value = ini_get($key);
    $out['ini'][$key] = $value === false ? null : $value;
}
echo "\nATOMDEPLOY-DOCTOR ", json_encode($out), "\n";
"#;

pub(crate) fn check(
    context: &Context,
    site: Option<&Site>,
    out: &mut Vec<Finding>,
) -> Option<Pool> {
    let target = target(context, site);
    if site.is_some() && target.is_none() {
        return None;
    }
    if target.is_none() && context.options.fpm_pool.is_none() {
        out.push(Finding::warn(
            CHECK,
            "not checked: neither nginx's fastcgi_pass nor reset_opcache says which pool \
             serves this root",
            "give the pool's file with --fpm-pool FILE (and nginx's configuration with \
             --nginx-config FILE)",
        ));
        return None;
    }
    let (pools, searched) = pool_files(context, out)?;
    let pool = match &target {
        Some(target) => pick(pools, target, &searched, out),
        None => only(pools, &searched, out)?,
    };
    Some(reach(pool, target, out))
}

/// Where requests for this root go: nginx's `fastcgi_pass`, else `reset_opcache:`.
fn target(context: &Context, site: Option<&Site>) -> Option<FpmAddress> {
    match site {
        Some(site) => site.passes.iter().find_map(|p| p.target.clone()),
        None => context
            .plan
            .as_ref()
            .and_then(|p| p.config.reset_opcache.clone()),
    }
}

/// Every pool of the given file, or of the files searched; and what was read, for findings.
fn pool_files(context: &Context, out: &mut Vec<Finding>) -> Option<(Vec<Pool>, String)> {
    if let Some(file) = &context.options.fpm_pool {
        return match fs::read_to_string(file) {
            Ok(text) => Some((parse(&text, file), file.display().to_string())),
            Err(err) => {
                out.push(Finding::fail(
                    CHECK,
                    format!("cannot read --fpm-pool {}: {err}", file.display()),
                    "give the pool file php-fpm reads (e.g. /etc/php/8.2/fpm/pool.d/app.conf)",
                ));
                None
            }
        };
    }
    let pattern = context.options.fpm_pools.as_deref().unwrap_or(POOL_FILES);
    let files = glob::expand(Path::new(pattern));
    let mut pools = Vec::new();
    for file in &files {
        if let Ok(text) = fs::read_to_string(file) {
            pools.extend(parse(&text, file));
        }
    }
    Some((pools, format!("{pattern} ({} file(s))", files.len())))
}

/// The pool sections of a php-fpm ini file (`[global]` is not a pool); `$pool` in a value is
/// the section's name, as php-fpm expands it.
fn parse(text: &str, file: &Path) -> Vec<Pool> {
    let mut pools: Vec<Pool> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with(';') || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            pools.push(Pool {
                name: name.trim().to_string(),
                at: format!("{}:{}", file.display(), n + 1),
                listen: None,
                settings: Vec::new(),
                ident: None,
                probe: Err("not asked".into()),
            });
            continue;
        }
        let (Some(pool), Some((key, value))) = (pools.last_mut(), line.split_once('=')) else {
            continue;
        };
        let value = value.trim().trim_matches('"').replace("$pool", &pool.name);
        if key.trim() == "listen" {
            pool.listen = listen_address(&value);
        }
        pool.settings.push((key.trim().to_string(), value, n + 1));
    }
    pools.retain(|p| p.name != "global");
    pools
}

/// A pool's `listen` (`/path`, `port`, `host:port`) as an address; host "" for any address.
fn listen_address(listen: &str) -> Option<FpmAddress> {
    if listen.starts_with('/') {
        return Some(FpmAddress::Unix(PathBuf::from(listen)));
    }
    let (host, port) = listen.rsplit_once(':').unwrap_or(("", listen));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // 0.0.0.0 stays: it is IPv4's any address only (see `same`).
    let host = if matches!(host, "*" | "::") { "" } else { host };
    Some(FpmAddress::Tcp {
        host: host.to_string(),
        port: port.trim().parse().ok()?,
    })
}

/// Whether a pool listening on `listen` is what a client of `target` reaches.
fn same(listen: &FpmAddress, target: &FpmAddress) -> bool {
    // `localhost` may be either loopback address; 127.0.0.1 and ::1 are two sockets.
    let loopback = |a: &str, b: &str| {
        (a == "localhost" || b == "localhost")
            && [a, b]
                .iter()
                .all(|h| matches!(*h, "localhost" | "127.0.0.1" | "::1"))
    };
    match (listen, target) {
        (FpmAddress::Unix(a), FpmAddress::Unix(b)) => {
            a == b || fs::canonicalize(a).is_ok_and(|a| fs::canonicalize(b).is_ok_and(|b| a == b))
        }
        (FpmAddress::Tcp { host: a, port: p }, FpmAddress::Tcp { host: b, port: q }) => {
            p == q
                && (a.is_empty()
                    || a == b
                    || loopback(a, b)
                    || (a == "0.0.0.0" && !b.contains(':')))
        }
        _ => false,
    }
}

fn pick(pools: Vec<Pool>, target: &FpmAddress, searched: &str, out: &mut Vec<Finding>) -> Pool {
    let listens: Vec<String> = pools
        .iter()
        .map(|p| match &p.listen {
            Some(l) => format!("[{}] {l}", p.name),
            None => format!("[{}] no listen", p.name),
        })
        .collect();
    if let Some(pool) = pools
        .into_iter()
        .find(|p| p.listen.as_ref().is_some_and(|l| same(l, target)))
    {
        return pool;
    }
    out.push(Finding::fail(
        CHECK,
        format!(
            "no pool in {searched} listens on {target}, where nginx passes PHP requests \
             (pools there: {})",
            if listens.is_empty() {
                "none".to_string()
            } else {
                listens.join(", ")
            }
        ),
        format!(
            "make the pool serving this app `listen = {}` (webserver/php-fpm-pool.conf), or \
             name its file with --fpm-pool FILE",
            match target {
                FpmAddress::Unix(path) => path.display().to_string(),
                // php-fpm, like nginx, takes an IPv6 address in brackets.
                FpmAddress::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
                FpmAddress::Tcp { host, port } => format!("{host}:{port}"),
            }
        ),
    ));
    // The running pool (if any) is still asked who it runs as, for the checks after this.
    Pool {
        name: "?".into(),
        at: String::new(),
        listen: Some(target.clone()),
        settings: Vec::new(),
        ident: None,
        probe: Err("not asked".into()),
    }
}

/// Without a `fastcgi_pass` to match: the given file's only pool.
fn only(mut pools: Vec<Pool>, searched: &str, out: &mut Vec<Finding>) -> Option<Pool> {
    if pools.len() == 1 {
        return pools.pop();
    }
    out.push(Finding::warn(
        CHECK,
        format!(
            "not checked: no fastcgi_pass or reset_opcache names the pool, and {searched} \
             holds {} pools, not one",
            pools.len()
        ),
        "give the pool's file with --fpm-pool FILE (and nginx's configuration with \
         --nginx-config FILE)",
    ));
    None
}

/// Connects to the pool and runs the probe in it; says what it found.
fn reach(mut pool: Pool, target: Option<FpmAddress>, out: &mut Vec<Finding>) -> Pool {
    let Some(address) = target.or_else(|| pool.listen.clone().map(connectable)) else {
        out.push(Finding::fail(
            CHECK,
            format!("pool `{}` ({}) has no `listen`", pool.name, pool.at),
            "set `listen = /run/php/app.sock` (webserver/php-fpm-pool.conf)",
        ));
        return pool;
    };
    let restart = "start or reload php-fpm (`systemctl reload php8.2-fpm`) and read its log \
                   (`journalctl -u php8.2-fpm`): a pool with an error is not loaded";
    if let FpmAddress::Unix(path) = &address
        && !path.exists()
    {
        out.push(Finding::fail(
            CHECK,
            format!(
                "{}: the socket {} does not exist: php-fpm is not running, or has not loaded \
                 this pool",
                pool.label(),
                path.display()
            ),
            restart,
        ));
        return pool;
    }
    pool.probe = probe(&address);
    let from_file = file_ident(&pool);
    if let Err(err) = &pool.probe
        && err.starts_with("cannot reach")
    {
        out.push(Finding::fail(
            CHECK,
            format!("{}: {err}", pool.label()),
            restart,
        ));
        return pool;
    }
    pool.ident = pool
        .probe
        .as_ref()
        .ok()
        .and_then(Probe::ident)
        .or(from_file.clone());
    report(&pool, &address, from_file, out);
    pool
}

/// A listen on any address is reached on the loopback one.
fn connectable(listen: FpmAddress) -> FpmAddress {
    match listen {
        FpmAddress::Tcp { host, port } if host.is_empty() || host == "0.0.0.0" => FpmAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        other => other,
    }
}

fn report(pool: &Pool, address: &FpmAddress, from_file: Option<Ident>, out: &mut Vec<Finding>) {
    let who = |i: &Ident| format!("{}:{} (uid {}, gid {})", i.user(), i.group(), i.uid, i.gid);
    let seen = format!("{} at {address}", pool.label());
    match (&pool.probe, &pool.ident) {
        (Ok(probe), Some(ident)) => {
            out.push(Finding::ok(
                CHECK,
                format!(
                    "{seen} answers: PHP {}, running as {}",
                    probe.php,
                    who(ident)
                ),
            ));
            if let Some(file) = from_file.filter(|f| f.uid != ident.uid || f.gid != ident.gid) {
                out.push(Finding::warn(
                    CHECK,
                    format!(
                        "{seen} runs as {}, but its file says {}: php-fpm has not been \
                         reloaded since the file changed",
                        who(ident),
                        who(&file)
                    ),
                    "`systemctl reload php8.2-fpm` (after `php-fpm8.2 -t`)",
                ));
            }
        }
        (probe, ident) => out.push(Finding::warn(
            CHECK,
            format!(
                "{seen} answers, but did not run doctor's probe ({}); its user is taken from \
                 the pool file ({}) and its opcache settings are not checked",
                probe
                    .as_ref()
                    .err()
                    .map(String::as_str)
                    .unwrap_or("no user"),
                ident.as_ref().map(who).unwrap_or_else(|| "none".into())
            ),
            "a pool with PrivateTmp, a chroot or an open_basedir that leaves out the system's \
             temporary directory cannot run it; doctor's other checks do not depend on it",
        )),
    }
}

impl Probe {
    fn ident(&self) -> Option<Ident> {
        Some(Ident {
            uid: self.uid?,
            gid: self.gid?,
            groups: self.groups.clone().unwrap_or_default(),
        })
    }
}

/// Runs [`PROBE`] in the pool from a temporary directory any user can read, removed after.
fn probe(address: &FpmAddress) -> Result<Probe, String> {
    let dir = tempfile::Builder::new()
        .prefix("atomdeploy-doctor-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let script = dir.path().join("probe.php");
    fs::write(&script, PROBE)
        .and_then(|()| fs::set_permissions(&script, fs::Permissions::from_mode(0o644)))
        .and_then(|()| fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let json = opcache::run_script(address, &script, "", MARKER, deadline)
        .map_err(|e| format!("{e:#}"))?;
    serde_json::from_str(&json).map_err(|e| format!("the probe reported `{json}`: {e}"))
}

/// The pool file's `user` and `group`, as the system knows them.
fn file_ident(pool: &Pool) -> Option<Ident> {
    let user = pool.setting("user")?;
    let (uid, primary) = users::by_name(user)?;
    let gid = match pool.setting("group") {
        Some(group) => users::group_id(group)?,
        None => primary,
    };
    let groups = users::groups_of(user, gid).unwrap_or_default();
    Some(Ident { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_their_listen() {
        let pools = parse(
            "[global]\npid = /run/x.pid\n[app]\nuser = deploy\nlisten = /run/php/$pool.sock\n\
             ; listen = 9000\n[tcp]\nlisten = 127.0.0.1:9001\n[any]\nlisten = 9002\n",
            Path::new("/p.conf"),
        );
        let listens: Vec<_> = pools
            .iter()
            .map(|p| (p.name.as_str(), p.listen.clone()))
            .collect();
        assert_eq!(
            listens,
            [
                ("app", Some(FpmAddress::Unix("/run/php/app.sock".into()))),
                (
                    "tcp",
                    Some(FpmAddress::Tcp {
                        host: "127.0.0.1".into(),
                        port: 9001
                    })
                ),
                (
                    "any",
                    Some(FpmAddress::Tcp {
                        host: "".into(),
                        port: 9002
                    })
                ),
            ]
        );
        assert_eq!(pools[0].at, "/p.conf:3");
        let tcp = |h: &str, p| FpmAddress::Tcp {
            host: h.into(),
            port: p,
        };
        assert!(same(&tcp("", 9002), &tcp("10.0.0.1", 9002)));
        assert!(same(&tcp("127.0.0.1", 9001), &tcp("localhost", 9001)));
        assert!(!same(&tcp("127.0.0.1", 9001), &tcp("127.0.0.1", 9002)));
        assert!(!same(&tcp("10.0.0.2", 9001), &tcp("10.0.0.1", 9001)));
        assert!(!same(&tcp("127.0.0.1", 9001), &tcp("::1", 9001)));
        assert!(same(&tcp("0.0.0.0", 9001), &tcp("127.0.0.1", 9001)));
        assert!(!same(&tcp("0.0.0.0", 9001), &tcp("::1", 9001)));
        assert!(same(&tcp("::1", 9001), &tcp("localhost", 9001)));
    }
}
