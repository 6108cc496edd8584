//! The app fingerprint: the keys of deploy.yml every server of a group must agree on, as
//! canonical JSON and its hash. A host compares the primary's with its own before it builds.

use std::path::PathBuf;

use super::{Config, Probe, SnapshotMode};

impl Config {
    /// The keys every server of a group must agree on (everything but the per-host keys:
    /// `repository`, `branch`, `lock_timeout`, `reset_opcache`, `hosts`, `hosts_at_once`,
    /// `host_timeout`, `switch_window`, `release`, `preflight.fastcgi`), as canonical JSON, and its xxh3-64 in hex. A host refuses a
    /// group deploy whose fingerprint differs from its own, rather than build the app another
    /// way than the primary does.
    pub(crate) fn app_fingerprint(&self) -> (String, serde_json::Value) {
        use serde_json::json;
        // Taken apart field by field: a key added to Config does not compile until it is
        // placed here, on one side or the other.
        let Config {
            repository: _,
            branch: _,
            lock_timeout: _,
            reset_opcache: _,
            release: _,
            // Told by the server that ran the attempt: hosts of a group need not agree.
            notify: _,
            hosts: _,
            hosts_at_once: _,
            host_timeout: _,
            switch_window: _,
            keep_builds,
            shared,
            composer,
            before_switch,
            after_switch,
            command_timeout,
            healthcheck,
            snapshot,
            app_dir,
            keep_assets,
            build,
            exclude,
            preflight,
        } = self;
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let paths = |ps: &[PathBuf]| ps.iter().map(path).collect::<Vec<_>>();
        let app = json!({
            "keep_builds": keep_builds,
            "shared": shared.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "composer": composer.as_ref().map(|c| json!({
                "args": c.args,
                "timeout": c.timeout.as_secs_f64(),
            })),
            "before_switch": before_switch,
            "after_switch": after_switch,
            "command_timeout": command_timeout.as_secs_f64(),
            "healthcheck": healthcheck.as_ref().map(|h| json!({
                "command": match &h.probe { Probe::Command(c) => Some(c), Probe::Url(_) => None },
                "url": match &h.probe { Probe::Url(u) => Some(u), Probe::Command(_) => None },
                "retries": h.retries,
                "interval": h.interval.as_secs_f64(),
                "timeout": h.timeout.as_secs_f64(),
            })),
            "snapshot": match snapshot { SnapshotMode::Copy => "copy", SnapshotMode::Link => "link" },
            "app_dir": path(app_dir),
            "keep_assets": paths(keep_assets),
            "build": build.as_ref().map(|b| json!({
                "commands": b.commands.iter().map(|c| json!({
                    "run": c.run,
                    "inputs": c.inputs.as_deref().map(paths),
                })).collect::<Vec<_>>(),
                "inputs": b.inputs.as_deref().map(paths),
                "timeout": b.timeout.as_secs_f64(),
            })),
            "exclude": paths(exclude),
            // Not `fastcgi`: each server's own pool (see [`Preflight`]).
            "preflight": preflight.as_ref().map(|p| json!({
                "urls": p.urls,
                "timeout": p.timeout.as_secs_f64(),
            })),
        });
        let canonical = canonical_json(&app);
        let fingerprint = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()));
        (fingerprint, app)
    }
}

/// JSON text with every object's keys sorted, whatever map serde_json was built with: the
/// same value is the same text on every server.
fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}
