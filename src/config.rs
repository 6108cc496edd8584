//! deploy.yml → a validated [`Config`].
//!
//! Every check that can point at a place in the file runs inside deserialization, so that
//! serde_yaml attaches the line and column of the offending value to the error.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

pub const DEFAULT_COMPOSER_ARGS: &[&str] = &[
    "install",
    "--no-dev",
    "--prefer-dist",
    "--no-interaction",
    "--optimize-autoloader",
    "--no-progress",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The bare repository, absolute (relative paths in the file are taken from the deploy root).
    pub repository: PathBuf,
    pub branch: String,
    pub keep_builds: usize,
    pub shared: Vec<SharedEntry>,
    /// `None` when composer is switched off.
    pub composer: Option<Composer>,
    pub before_switch: Vec<String>,
    pub after_switch: Vec<String>,
    /// Limit of each before_switch and after_switch command (its children included).
    pub command_timeout: Duration,
    /// Zero: give up at once when another deploy holds the lock.
    pub lock_timeout: Duration,
    pub healthcheck: Option<Healthcheck>,
    pub snapshot: SnapshotMode,
    /// `app_dir:` the directory of the commit that is the app (a monorepo's `backend/`),
    /// normalized; empty for the whole commit. See [`crate::state::app_tree`].
    pub app_dir: PathBuf,
    /// Directories of the app (normalized, relative) whose files the builds still on disk
    /// lend to each new build (see `steps/assets.rs`).
    pub keep_assets: Vec<PathBuf>,
    /// The php-fpm pool whose opcache is reset after every switch (`reset_opcache:`).
    pub reset_opcache: Option<FpmAddress>,
    /// The front-end build step (`build:`), run in application/ after composer.
    pub build: Option<Build>,
    /// Paths kept in application/ (and through checkouts) but never copied into a build.
    pub exclude: Vec<PathBuf>,
    /// The other web servers of a group (`hosts:`), as git push takes them; empty on a single
    /// server. The group deploy is in `src/group/primary.rs`.
    pub hosts: Vec<String>,
    /// Hosts prepared at once.
    pub hosts_at_once: usize,
    /// Limit of one host's prepare (its `git push`, with everything it started).
    pub host_timeout: Duration,
    /// How long after the first server of a group switched every other one must have: past
    /// it, the group goes back rather than serve two versions for longer (`switch_window:`).
    pub switch_window: Duration,
    /// `release:` commands run once per deploy in the new build, after before_switch and
    /// right before the switch (on a group's primary only, once every host has prepared).
    pub release: Vec<String>,
    /// `notify:` webhooks told of each deploy, rollback and failure (see `src/notify.rs`).
    pub notify: Vec<NotifyTarget>,
    /// Requests sent to php-fpm with the new build as document root before the switch
    /// (`preflight:`, see `steps/preflight.rs`).
    pub preflight: Option<Preflight>,
}

/// `preflight:`. Split between the two sides of a group's fingerprint: `urls` and `timeout`
/// are the app's (every server must check the same pages, or one server could switch to a
/// build another would have refused), while `fastcgi` is where this server's own pool
/// listens, which differs from server to server just like `reset_opcache:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preflight {
    /// `preflight.fastcgi`, or `reset_opcache:` when it is not given.
    pub fastcgi: FpmAddress,
    /// Paths (with any query) as a browser would request them; each starts with `/`.
    pub urls: Vec<String>,
    /// Limit of each request, connection included.
    pub timeout: Duration,
}

/// How a build gets the files of application/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Every file copied: builds share nothing.
    Copy,
    /// Files of the live build hard-linked into the next one while application/ still has the
    /// very file each came from and it is still what was placed (see `manifest.rs`); all
    /// files made read-only.
    /// The default: 2-3 times faster deploys and a fraction of the disk (see BENCHMARKS.md).
    #[default]
    Link,
}

/// Checked after the switch; a build that fails it is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    pub probe: Probe,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// Limit of one attempt.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `sh -c` in the deploy root; healthy when it exits 0.
    Command(String),
    /// An HTTP GET; healthy when it answers 2xx.
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Composer {
    pub args: Vec<String>,
    /// A composer run (scripts included) that takes longer is killed and the deploy fails.
    pub timeout: Duration,
}

const DEFAULT_COMPOSER_TIMEOUT: u64 = 900;
const DEFAULT_COMMAND_TIMEOUT: u64 = 900;

/// The range of one number in deploy.yml. Every number has one, checked while the file is
/// read, so that no value a file can hold reaches a clock or a counter at run time: an
/// `Instant + Duration` of 2^64 seconds panics, and a panic after the switch would leave an
/// unchecked build live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// As written in deploy.yml, with its section: `healthcheck.timeout`.
    pub key: &'static str,
    pub min: f64,
    pub max: f64,
    /// Seconds (else a count).
    pub seconds: bool,
    /// Fractions allowed (else a whole number).
    pub fractional: bool,
    /// What the smallest value means, when that needs saying.
    pub min_means: Option<&'static str>,
}

/// A day: no deploy step should take longer, and no clock overflows adding it.
const DAY: f64 = 86_400.0;
const HOUR: f64 = 3_600.0;

pub const KEEP_BUILDS: Limit = Limit {
    key: "keep_builds",
    min: 1.0,
    max: 1000.0,
    seconds: false,
    fractional: false,
    min_means: Some("the live build only"),
};
pub const LOCK_TIMEOUT: Limit = Limit {
    key: "lock_timeout",
    min: 0.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: Some("do not wait"),
};
pub const COMMAND_TIMEOUT: Limit = Limit {
    key: "command_timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub const COMPOSER_TIMEOUT: Limit = Limit {
    key: "composer.timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub const HEALTHCHECK_RETRIES: Limit = Limit {
    key: "healthcheck.retries",
    min: 0.0,
    max: 100.0,
    seconds: false,
    fractional: false,
    min_means: Some("one attempt only"),
};
pub const HEALTHCHECK_INTERVAL: Limit = Limit {
    key: "healthcheck.interval",
    min: 0.0,
    max: HOUR,
    seconds: true,
    fractional: true,
    min_means: Some("retry at once"),
};
pub const HEALTHCHECK_TIMEOUT: Limit = Limit {
    key: "healthcheck.timeout",
    min: 0.001,
    max: DAY,
    seconds: true,
    fractional: true,
    min_means: None,
};

pub const BUILD_TIMEOUT: Limit = Limit {
    key: "build.timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub const HOSTS_AT_ONCE: Limit = Limit {
    key: "hosts_at_once",
    min: 1.0,
    max: 64.0,
    seconds: false,
    fractional: false,
    min_means: Some("one host after the other"),
};
pub const HOST_TIMEOUT: Limit = Limit {
    key: "host_timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub const PREFLIGHT_TIMEOUT: Limit = Limit {
    key: "preflight.timeout",
    min: 1.0,
    max: HOUR,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub const SWITCH_WINDOW: Limit = Limit {
    key: "switch_window",
    min: 1.0,
    max: HOUR,
    seconds: true,
    fractional: false,
    min_means: None,
};

/// Every number deploy.yml holds (the tests go through them all).
#[cfg(test)]
pub const NUMBERS: [Limit; 12] = [
    KEEP_BUILDS,
    LOCK_TIMEOUT,
    COMMAND_TIMEOUT,
    COMPOSER_TIMEOUT,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_INTERVAL,
    HEALTHCHECK_TIMEOUT,
    BUILD_TIMEOUT,
    HOSTS_AT_ONCE,
    HOST_TIMEOUT,
    SWITCH_WINDOW,
    PREFLIGHT_TIMEOUT,
];

impl Limit {
    /// `a whole number of seconds from 0 (do not wait) to 86400 (24 hours)`.
    pub fn range(&self) -> String {
        let what = match (self.fractional, self.seconds) {
            (false, false) => "a whole number",
            (false, true) => "a whole number of seconds",
            (true, _) => "a number of seconds",
        };
        let min = match self.min_means {
            Some(means) => format!("{} ({means})", self.min),
            None => self.min.to_string(),
        };
        let max = if self.max == DAY {
            format!("{} (24 hours)", self.max)
        } else if self.max == HOUR {
            format!("{} (1 hour)", self.max)
        } else {
            self.max.to_string()
        };
        format!("{what} from {min} to {max}")
    }

    /// serde_yaml puts the key's path (`healthcheck.timeout: `) before the message itself.
    fn refuse<E: de::Error>(&self, got: impl fmt::Display) -> E {
        E::custom(format!("must be {}; got {got}", self.range()))
    }

    /// False for NaN too.
    fn contains(&self, value: f64) -> bool {
        value >= self.min && value <= self.max
    }

    /// Reads the value at this key: any YAML scalar is looked at, so that every wrong one is
    /// refused with this key's name and range, at its line and column.
    fn read<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(NumberVisitor(self))
    }

    fn whole<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<u64, D::Error> {
        // Exact: `read` admits only whole numbers within a range far below 2^53 here.
        self.read(d).map(|v| v as u64)
    }

    fn duration<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<Duration, D::Error> {
        let seconds = self.read(d)?;
        Ok(Duration::from_secs_f64(seconds))
    }
}

struct NumberVisitor(&'static Limit);

/// A float the way YAML spells it, so that the error quotes what the user wrote.
fn yaml_float(v: f64) -> String {
    if v.is_nan() {
        ".nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        format!("{v:?}")
    }
}

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0.range())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_i128(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_i128(v.into())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<f64, E> {
        match i128::try_from(v) {
            Ok(v) => self.visit_i128(v),
            Err(_) => Err(self.0.refuse(v)),
        }
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<f64, E> {
        // Compared as integers: a huge one must not round into the range as a float.
        if v < self.0.min.ceil() as i128 || v > self.0.max.floor() as i128 {
            return Err(self.0.refuse(v));
        }
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        let shown = yaml_float(v);
        if !self.0.fractional {
            // `3.0` and `1e2` are in range and whole, yet written as YAML floats: say why.
            let hint = if self.0.contains(v) && v.fract() == 0.0 {
                " (write it without a decimal point or exponent)"
            } else {
                ""
            };
            return Err(self.0.refuse(format_args!("{shown}{hint}")));
        }
        if self.0.contains(v) {
            // `-0.0` becomes 0.
            Ok(v + 0.0)
        } else {
            Err(self.0.refuse(shown))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f64, E> {
        Err(self.0.refuse(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        Err(self.0.refuse(format_args!("the text {v:?}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(self.0.refuse("nothing"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.0.refuse("a list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.0.refuse("a map"))
    }
}

fn keep_builds<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    KEEP_BUILDS.whole(d).map(|n| n as usize)
}
fn lock_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    LOCK_TIMEOUT.whole(d)
}
fn command_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    COMMAND_TIMEOUT.whole(d)
}

fn default_composer_args() -> Vec<String> {
    DEFAULT_COMPOSER_ARGS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// One `shared:` entry: a normalized relative path inside the build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SharedEntry {
    pub path: PathBuf,
    /// Written with a trailing `/`: starts as an empty directory when nothing seeds it.
    pub is_dir: bool,
}

impl fmt::Display for SharedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.path.display(),
            if self.is_dir { "/" } else { "" }
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: PathBuf,
    #[serde(default = "default_branch", deserialize_with = "branch_name")]
    branch: String,
    #[serde(default = "default_keep_builds", deserialize_with = "keep_builds")]
    keep_builds: usize,
    #[serde(default, deserialize_with = "shared_list")]
    shared: Vec<SharedEntry>,
    #[serde(default = "default_composer")]
    composer: ComposerSetting,
    #[serde(default, deserialize_with = "command_list")]
    before_switch: Vec<String>,
    #[serde(default, deserialize_with = "command_list")]
    after_switch: Vec<String>,
    #[serde(
        default = "default_command_timeout",
        deserialize_with = "command_timeout"
    )]
    command_timeout: u64,
    #[serde(default = "default_lock_timeout", deserialize_with = "lock_timeout")]
    lock_timeout: u64,
    #[serde(default, deserialize_with = "healthcheck")]
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    snapshot: SnapshotMode,
    #[serde(default, deserialize_with = "app_dir")]
    app_dir: PathBuf,
    #[serde(default, deserialize_with = "keep_assets_list")]
    keep_assets: Vec<PathBuf>,
    #[serde(default, deserialize_with = "fpm_address")]
    reset_opcache: Option<FpmAddress>,
    #[serde(default)]
    build: Option<Build>,
    #[serde(default, deserialize_with = "exclude_list")]
    exclude: Vec<PathBuf>,
    #[serde(default, deserialize_with = "host_list")]
    hosts: Vec<String>,
    #[serde(default = "default_hosts_at_once", deserialize_with = "hosts_at_once")]
    hosts_at_once: usize,
    #[serde(default = "default_host_timeout", deserialize_with = "host_timeout")]
    host_timeout: u64,
    #[serde(default = "default_switch_window", deserialize_with = "switch_window")]
    switch_window: u64,
    #[serde(default, deserialize_with = "release_list")]
    release: Vec<String>,
    #[serde(default)]
    notify: Vec<NotifyTarget>,
    #[serde(default, deserialize_with = "preflight")]
    preflight: Option<RawPreflight>,
}

fn default_branch() -> String {
    "main".into()
}
fn default_keep_builds() -> usize {
    5
}
fn default_lock_timeout() -> u64 {
    600
}
fn default_command_timeout() -> u64 {
    DEFAULT_COMMAND_TIMEOUT
}
fn default_composer() -> ComposerSetting {
    ComposerSetting(Some(Composer {
        args: default_composer_args(),
        timeout: Duration::from_secs(DEFAULT_COMPOSER_TIMEOUT),
    }))
}

/// Parses the text of a deploy.yml. `origin` names the file in errors; relative paths in it
/// are resolved against `root`.
pub fn parse(text: &str, origin: &Path, root: &Path) -> Result<Config> {
    if text.trim().is_empty() {
        return Err(anyhow!(
            "{}: the file is empty; it needs at least `repository: /path/to/repo.git`",
            origin.display()
        ));
    }
    SEEN_PATHS.with(|seen| seen.take());
    let raw: Result<RawConfig, _> = serde_yaml::from_str(text);
    SEEN_PATHS.with(|seen| seen.take());
    let raw = raw.map_err(|e| located(origin, &e, text))?;
    let repository = root.join(&raw.repository);
    let hosts = resolve_hosts(text, origin, root, &repository, raw.hosts)?;
    let preflight = match raw.preflight {
        None => None,
        Some(p) => Some(Preflight {
            fastcgi: p
                .fastcgi
                .or_else(|| raw.reset_opcache.clone())
                .ok_or_else(|| {
                    anyhow!(
                        "{}:{}: preflight: needs `fastcgi:`, the `listen` of the php-fpm pool \
                         (`unix:/run/php/app.sock` or `127.0.0.1:9000`), since there is no \
                         `reset_opcache:` to take it from",
                        origin.display(),
                        top_level_key_line(text, "preflight")
                    )
                })?,
            urls: p.urls,
            timeout: p.timeout,
        }),
    };
    Ok(Config {
        repository,
        branch: raw.branch,
        keep_builds: raw.keep_builds,
        shared: raw.shared,
        composer: raw.composer.0,
        before_switch: raw.before_switch,
        after_switch: raw.after_switch,
        command_timeout: Duration::from_secs(raw.command_timeout),
        lock_timeout: Duration::from_secs(raw.lock_timeout),
        healthcheck: raw.healthcheck,
        snapshot: raw.snapshot,
        app_dir: raw.app_dir,
        keep_assets: raw.keep_assets,
        reset_opcache: raw.reset_opcache,
        build: raw.build,
        exclude: raw.exclude,
        hosts,
        hosts_at_once: raw.hosts_at_once,
        host_timeout: Duration::from_secs(raw.host_timeout),
        switch_window: Duration::from_secs(raw.switch_window),
        release: raw.release,
        notify: raw.notify,
        preflight,
    })
}

/// `line:column` of a top-level key, for an error found once the whole file is read.
fn top_level_key_line(text: &str, key: &str) -> String {
    let line = text
        .lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map_or(1, |i| i + 1);
    format!("{line}:1")
}

impl Config {
    /// The keys every server of a group must agree on (everything but the per-host keys:
    /// `repository`, `branch`, `lock_timeout`, `reset_opcache`, `hosts`, `hosts_at_once`,
    /// `host_timeout`, `switch_window`, `release`, `preflight.fastcgi`), as canonical JSON, and its xxh3-64 in hex. A host refuses a
    /// group deploy whose fingerprint differs from its own, rather than build the app another
    /// way than the primary does.
    pub fn app_fingerprint(&self) -> (String, serde_json::Value) {
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

/// Whether two paths name the same place, whether or not it exists yet.
pub fn same_path(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    resolve(a) == resolve(b)
}

/// `file:line:column: message`, the form editors and terminals jump to.
fn located(origin: &Path, err: &serde_yaml::Error, yaml: &str) -> anyhow::Error {
    let text = err.to_string();
    // serde_yaml appends " at line L column C" itself; we put the position up front instead.
    let message = match text.rfind(" at line ") {
        Some(i) if err.location().is_some() => &text[..i],
        _ => &text[..],
    };
    let message = without_notify_secrets(message, yaml);
    match err.location() {
        Some(loc) => anyhow!(
            "{}:{}:{}: {message}",
            origin.display(),
            loc.line(),
            loc.column()
        ),
        None => anyhow!("{}: {message}", origin.display()),
    }
}

/// serde quotes a value it could not take (`invalid type: string "…", expected struct
/// NotifyTarget`): a webhook URL written in the wrong shape under `notify:` would reach the
/// pusher whole, secret and all. Every string under `notify:` but a plain word (a key, a
/// format's name: nothing secret, and what such an error is about) shows redacted instead.
fn without_notify_secrets(message: &str, yaml: &str) -> String {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(yaml) else {
        // Not YAML at all: the error is the parser's, about the syntax, quoting no value.
        return message.to_string();
    };
    let mut strings = Vec::new();
    strings_in(&doc["notify"], &mut strings);
    strings.retain(|s| {
        !s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    // Longest first: a URL goes whole before a shorter string inside it could split it.
    strings.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut message = message.to_string();
    for s in strings {
        let shown = redacted_url(&s);
        // As serde quotes it: escaped the way Rust's Debug escapes a str.
        let quoted = format!("{s:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        message = message.replace(&s, &shown).replace(escaped, &shown);
    }
    message
}

/// Every string in `value`, mapping keys included (serde quotes an unknown field's name).
fn strings_in(value: &serde_yaml::Value, out: &mut Vec<String>) {
    use serde_yaml::Value;
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            strings_in(k, out);
            strings_in(v, out);
        }),
        Value::Tagged(tagged) => strings_in(&tagged.value, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The branch atomdeploy-hook keeps at the commit a rollback would go to.
pub const ROLLBACK_BRANCH: &str = "rollback";
/// The branch a push to deploys its commit as a new build; the hook deletes it again.
pub const REPLAY_BRANCH: &str = "replay";

fn branch_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name == ROLLBACK_BRANCH {
        return Err(de::Error::custom(
            "`rollback` is the branch atomdeploy-hook keeps at the rollback target; deploy another branch",
        ));
    }
    if name == REPLAY_BRANCH {
        return Err(de::Error::custom(
            "`replay` is the branch a push to deploys again (`git push production main:replay`); deploy another branch",
        ));
    }
    if git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
        Ok(name)
    } else {
        Err(de::Error::custom(format!(
            "`{name}` is not a valid branch name"
        )))
    }
}

fn healthcheck<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Healthcheck>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawHealthcheck {
        command: Option<String>,
        url: Option<String>,
        #[serde(default = "default_retries", deserialize_with = "retries")]
        retries: u32,
        #[serde(default = "default_interval", deserialize_with = "interval")]
        interval: Duration,
        #[serde(default = "default_timeout", deserialize_with = "timeout")]
        timeout: Duration,
    }
    fn default_retries() -> u32 {
        2
    }
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        HEALTHCHECK_RETRIES.whole(d).map(|n| n as u32)
    }
    fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HEALTHCHECK_INTERVAL.duration(d)
    }
    fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HEALTHCHECK_TIMEOUT.duration(d)
    }
    let Some(raw) = Option::<RawHealthcheck>::deserialize(d)? else {
        return Ok(None);
    };
    let probe = match (raw.command, raw.url) {
        (Some(command), None) if !command.trim().is_empty() => Probe::Command(command),
        (None, Some(url)) if url.starts_with("http://") => Probe::Url(url),
        (None, Some(url)) => {
            return Err(de::Error::custom(format!(
                "healthcheck.url `{url}` must be plain http:// (check the server's own web server)"
            )));
        }
        _ => {
            return Err(de::Error::custom(
                "healthcheck needs exactly one of `command` (non-empty) or `url`",
            ));
        }
    };
    Ok(Some(Healthcheck {
        probe,
        retries: raw.retries,
        interval: raw.interval,
        timeout: raw.timeout,
    }))
}

/// Where a php-fpm pool listens: `unix:/run/php/app.sock` or `tcp://127.0.0.1:9000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmAddress {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for FpmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FpmAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            FpmAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl FpmAddress {
    fn parse(text: &str) -> Result<FpmAddress, String> {
        let want = "must be `unix:/absolute/path.sock` or `tcp://host:port`, \
                    the `listen` of the php-fpm pool";
        if let Some(path) = text.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{want}; got `{text}`: the socket path must be absolute"
                ));
            }
            // sun_path holds 108 bytes with the terminating NUL.
            if path.as_os_str().len() > 107 || path.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(format!(
                    "{want}; got `{text}`: not a usable socket path (at most 107 bytes)"
                ));
            }
            return Ok(FpmAddress::Unix(path.to_path_buf()));
        }
        let Some(rest) = text.strip_prefix("tcp://") else {
            return Err(format!("{want}; got `{text}`"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return Err(format!("{want}; got `{text}`: the port is missing")),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => {
                return Err(format!(
                    "{want}; got `{text}`: not an IPv6 address in brackets"
                ));
            }
            None => host,
        };
        let host_ok = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            return Err(format!(
                "{want}; got `{text}`: `{host}` is not a host name or address"
            ));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(FpmAddress::Tcp {
                host: host.to_string(),
                port,
            }),
            _ => Err(format!("{want}; got `{text}`: the port must be 1 to 65535")),
        }
    }
}

/// `preflight:` as written; its `fastcgi` may still come from `reset_opcache:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreflight {
    #[serde(default, deserialize_with = "preflight_address")]
    fastcgi: Option<FpmAddress>,
    #[serde(
        default = "default_preflight_urls",
        deserialize_with = "preflight_urls"
    )]
    urls: Vec<String>,
    #[serde(
        default = "default_preflight_timeout",
        deserialize_with = "preflight_timeout"
    )]
    timeout: Duration,
}

fn default_preflight_urls() -> Vec<String> {
    vec!["/".into()]
}
fn default_preflight_timeout() -> Duration {
    Duration::from_secs(10)
}
fn preflight_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    PREFLIGHT_TIMEOUT.duration(d)
}

fn preflight<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawPreflight>, D::Error> {
    Option::<RawPreflight>::deserialize(d)
}

/// `fastcgi:` takes what php-fpm's `listen` and nginx's `fastcgi_pass` take (`host:port`),
/// besides `reset_opcache:`'s `tcp://host:port` and `unix:/path`.
fn preflight_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FpmAddress>, D::Error> {
    let text = String::deserialize(d)?;
    if text.starts_with("unix:") || text.starts_with("tcp://") {
        // Its own reason (a relative or too long socket path, a port out of range).
        return FpmAddress::parse(&text)
            .map(Some)
            .map_err(de::Error::custom);
    }
    let bare = match text.contains(':') && !text.contains('/') {
        true => FpmAddress::parse(&format!("tcp://{text}")).ok(),
        false => None,
    };
    bare.map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "must be `unix:/absolute/path.sock` or `host:port` (the `listen` of the php-fpm \
             pool); got `{text}`"
        ))
    })
}

fn preflight_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(d)?;
    if urls.is_empty() {
        return Err(de::Error::custom(
            "needs at least one URL (leave `preflight:` out to check nothing)",
        ));
    }
    for url in &urls {
        // The path as the browser sends it to nginx: the host is this server's own, and a
        // space or a fragment would never reach PHP as written.
        let bad = !url.starts_with('/')
            || url.starts_with("//")
            || url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '#')
            // nginx resolves `.` and `..` before choosing the script; the hook does not.
            || url
                .split('?')
                .next()
                .unwrap_or_default()
                .split('/')
                .any(|segment| segment == "." || segment == "..");
        if bad {
            return Err(de::Error::custom(format!(
                "`{url}` must be a path starting with `/` (with a query if need be, no host, \
                 no spaces, no `#`, no `.` or `..`), as in `/health?deep=1`"
            )));
        }
    }
    Ok(urls)
}

fn fpm_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FpmAddress>, D::Error> {
    // Checked in a visitor, so that serde_yaml places the error at the value.
    struct AddressVisitor;
    impl<'de> Visitor<'de> for AddressVisitor {
        type Value = Option<FpmAddress>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("`unix:/absolute/path.sock` or `tcp://host:port`")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            FpmAddress::parse(text).map(Some).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(AddressVisitor)
}

fn command_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let commands = Vec::<String>::deserialize(d)?;
    if commands.iter().any(|c| c.trim().is_empty()) {
        return Err(de::Error::custom("a command must not be empty"));
    }
    Ok(commands)
}

/// `release:` commands, each refused at its own line and column when empty.
fn release_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Release(String);
    impl<'de> Deserialize<'de> for Release {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Checked("a command", |text| {
                if text.trim().is_empty() {
                    return Err("a release command must not be empty".into());
                }
                Ok(Release(text.to_string()))
            }))
        }
    }
    let commands = Vec::<Release>::deserialize(d)?;
    Ok(commands.into_iter().map(|c| c.0).collect())
}

impl<'de> Deserialize<'de> for SharedEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a path relative to the app", |text| {
            let entry = SharedEntry::parse(text)?;
            seen_path(PathKey::Shared, &entry.path, text)?;
            Ok(entry)
        }))
    }
}

impl SharedEntry {
    fn parse(text: &str) -> Result<SharedEntry, String> {
        let is_dir = text.ends_with('/');
        let trimmed = text.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err("a shared entry must name a path inside the app".into());
        }
        let normal = normalized("shared entry", text, trimmed)?;
        if normal.as_os_str().is_empty() {
            return Err(format!("shared entry `{text}` names the app itself"));
        }
        if let Some(why) = part_of_the_build(&normal) {
            return Err(format!("shared entry `{text}` is refused: {why}"));
        }
        Ok(SharedEntry {
            path: normal,
            is_dir,
        })
    }
}

/// `path` (`text` as written, for the error) made relative and normalized: `.` dropped;
/// absolute or `..` refused, since every path of deploy.yml but `repository` is inside the app
/// (or the commit) and must never resolve outside it. Empty for the app itself.
fn normalized(what: &str, text: &str, path: &str) -> Result<PathBuf, String> {
    let mut normal = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{what} `{text}` is absolute; it must be relative to the app"
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "{what} `{text}` contains `..`; it would resolve outside the app"
                ));
            }
        }
    }
    Ok(normal)
}

/// git itself refuses a `.git` component in any case, at any depth.
fn has_git_component(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"))
}

/// Why a path cannot be shared: it is what makes a build the build of its commit, and a
/// copy kept across deploys would make every build claim, or run, another commit's.
fn part_of_the_build(path: &Path) -> Option<&'static str> {
    if has_git_component(path) {
        return Some("`.git` belongs to git and is never part of a build");
    }
    if path.starts_with("vendor") {
        return Some(
            "vendor/ is installed by composer for each build's composer.lock; shared, \
             every build would run the packages of whichever deploy wrote it last",
        );
    }
    if path == Path::new("REVISION") {
        return Some(
            "REVISION is written into each build with its commit id; shared, every build \
             would claim the same commit",
        );
    }
    if path == Path::new("auth.json") {
        return Some(
            "auth.json holds composer's credentials; keep them in the deploy root's auth.json \
             (beside deploy.yml), which composer alone is given, never in a build",
        );
    }
    if path == Path::new("composer.json") || path == Path::new("composer.lock") {
        return Some(
            "composer.json and composer.lock must be the commit's own, or the build's vendor/ \
             would not match its code",
        );
    }
    None
}

fn shared_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SharedEntry>, D::Error> {
    let entries = Vec::<SharedEntry>::deserialize(d)?;
    let mut seen = BTreeSet::new();
    for entry in &entries {
        if !seen.insert(&entry.path) {
            return Err(de::Error::custom(format!(
                "shared entry `{entry}` is listed twice"
            )));
        }
    }
    for a in &entries {
        for b in &entries {
            if a.path != b.path && b.path.starts_with(&a.path) {
                return Err(de::Error::custom(format!(
                    "shared entries `{a}` and `{b}` nest; list only `{a}`"
                )));
            }
        }
    }
    Ok(entries)
}

/// `app_dir:` a relative path to a directory of the commit, checked like a shared entry (at
/// its line and column); `.` (or `./`) is the whole commit, as when the key is left out.
fn app_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    d.deserialize_str(Checked(
        "a directory of the commit, relative to its root",
        app_dir_path,
    ))
}

fn app_dir_path(text: &str) -> Result<PathBuf, String> {
    let normal = normalized("app_dir", text, text)?;
    if has_git_component(&normal) {
        return Err(format!(
            "app_dir `{text}` names a `.git` directory, which git never tracks"
        ));
    }
    if text.trim().is_empty() {
        return Err(
            "app_dir must name a directory of the commit (`.` for the whole commit)".into(),
        );
    }
    Ok(normal)
}

/// One `keep_assets:` entry: a directory of the app, normalized.
struct KeepAssetsDir(PathBuf);

impl<'de> Deserialize<'de> for KeepAssetsDir {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a directory relative to the app", |text| {
            let dir = keep_assets_dir(text)?;
            seen_path(PathKey::KeepAssets, &dir, &dir.display().to_string())?;
            Ok(KeepAssetsDir(dir))
        }))
    }
}

fn keep_assets_dir(text: &str) -> Result<PathBuf, String> {
    let normal = normalized("keep_assets entry", text, text.trim_end_matches('/'))?;
    if normal.as_os_str().is_empty() {
        return Err(format!(
            "keep_assets entry `{text}` names the app itself; name the directory the front-end build writes (public/build/assets/)"
        ));
    }
    if let Some(why) = part_of_the_build(&normal) {
        return Err(format!("keep_assets entry `{text}` is refused: {why}"));
    }
    Ok(normal)
}

fn keep_assets_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let dirs: Vec<PathBuf> = Vec::<KeepAssetsDir>::deserialize(d)?
        .into_iter()
        .map(|dir| dir.0)
        .collect();
    for (i, a) in dirs.iter().enumerate() {
        for b in &dirs[i + 1..] {
            if a == b {
                return Err(de::Error::custom(format!(
                    "keep_assets entry `{}` is listed twice",
                    a.display()
                )));
            }
            if a.starts_with(b) || b.starts_with(a) {
                return Err(de::Error::custom(format!(
                    "keep_assets entries `{}` and `{}` nest; list only the outer one",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    Ok(dirs)
}

/// The front-end build step (`build:`): commands run with `sh -c` in application/ after
/// composer, so that their caches (node_modules/) persist there between deploys.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub commands: Vec<BuildCommand>,
    /// The step runs only when a path of the commit under one of these changed since its last
    /// successful run; `None`: on every deploy.
    pub inputs: Option<Vec<PathBuf>>,
    /// Limit of each command, with everything it started.
    pub timeout: Duration,
}

/// One command of the build step.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildCommand {
    pub run: String,
    /// When the step runs, this command runs only if a path under these changed since it last
    /// succeeded (`npm ci`, which empties node_modules/, only for a changed lockfile).
    pub inputs: Option<Vec<PathBuf>>,
}

const DEFAULT_BUILD_TIMEOUT: u64 = 900;

impl<'de> Deserialize<'de> for Build {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawBuild {
            #[serde(deserialize_with = "build_commands")]
            commands: Vec<BuildCommand>,
            #[serde(default, deserialize_with = "input_list")]
            inputs: Option<Vec<PathBuf>>,
            #[serde(default = "default_build_timeout", deserialize_with = "build_timeout")]
            timeout: u64,
        }
        fn default_build_timeout() -> u64 {
            DEFAULT_BUILD_TIMEOUT
        }
        fn build_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            BUILD_TIMEOUT.whole(d)
        }
        fn build_commands<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BuildCommand>, D::Error> {
            d.deserialize_seq(NonEmpty(
                "build.commands must list at least one command; remove `build:` to have no build step",
                std::marker::PhantomData,
            ))
        }
        let raw = RawBuild::deserialize(d)?;
        Ok(Build {
            commands: raw.commands,
            inputs: raw.inputs,
            timeout: Duration::from_secs(raw.timeout),
        })
    }
}

impl<'de> Deserialize<'de> for BuildCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = BuildCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command, or a map with `run` and `inputs`")
            }
            fn visit_str<E: de::Error>(self, run: &str) -> Result<BuildCommand, E> {
                if run.trim().is_empty() {
                    return Err(E::custom("a build command must not be empty"));
                }
                Ok(BuildCommand {
                    run: run.to_string(),
                    inputs: None,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BuildCommand, M::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct RawCommand {
                    run: String,
                    #[serde(default, deserialize_with = "input_list")]
                    inputs: Option<Vec<PathBuf>>,
                }
                let raw = RawCommand::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut command = self.visit_str::<M::Error>(&raw.run)?;
                command.inputs = raw.inputs;
                Ok(command)
            }
        }
        d.deserialize_any(CommandVisitor)
    }
}

/// A string value (`expecting` says what it should be) checked by the function inside the
/// visitor, so that serde_yaml locates a refusal at the value itself, not at the list or map
/// around it.
struct Checked<T>(&'static str, fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for Checked<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.1)(text).map_err(E::custom)
    }
}

/// A list that must not be empty (the message says why), refused at the list itself.
struct NonEmpty<T>(&'static str, std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for NonEmpty<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(self.0));
        }
        Ok(items)
    }
}

/// A path of the app in deploy.yml (`what` names its key in errors), normalized: relative,
/// without `.` or `..`, never the app itself.
fn app_path(what: &str, text: &str) -> Result<PathBuf, String> {
    let normal = normalized(what, text, text)?;
    if normal.as_os_str().is_empty() {
        return Err(format!("{what} `{text}` must name a path inside the app"));
    }
    if has_git_component(&normal) {
        return Err(format!(
            "{what} `{text}` is refused: `.git` belongs to git and is never part of the app"
        ));
    }
    Ok(normal)
}

/// `inputs:` of the build step or of one of its commands.
fn input_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    struct Input(PathBuf);
    impl<'de> Deserialize<'de> for Input {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Checked("a path relative to the app", |text| {
                app_path("build input", text).map(Input)
            }))
        }
    }
    let inputs = d.deserialize_seq(NonEmpty::<Input>(
        "inputs must list at least one path; leave `inputs` out to run on every deploy",
        std::marker::PhantomData,
    ))?;
    Ok(Some(inputs.into_iter().map(|i| i.0).collect()))
}

/// `exclude:`: kept in application/, never copied into a build.
fn exclude_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    struct Excluded(PathBuf);
    impl<'de> Deserialize<'de> for Excluded {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(Checked("a path relative to the app", |text| {
                let what = "exclude entry";
                let path = app_path(what, text.trim_end_matches('/'))?;
                if let Some(why) = part_of_the_build(&path) {
                    return Err(format!("{what} `{text}` is refused: {why}"));
                }
                seen_path(PathKey::Exclude, &path, text)?;
                Ok(Excluded(path))
            }))
        }
    }
    let entries = Vec::<Excluded>::deserialize(d)?;
    Ok(entries.into_iter().map(|e| e.0).collect())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PathKey {
    Shared,
    Exclude,
    KeepAssets,
}

thread_local! {
    /// The shared, exclude and keep_assets entries read so far from the file being parsed: an
    /// exclude or keep_assets entry that overlaps a shared one is refused where the later of
    /// the two stands, whichever list comes first (so the error has its line and column).
    static SEEN_PATHS: std::cell::RefCell<Vec<(PathKey, PathBuf, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes a shared, exclude or keep_assets entry; refuses an exclude or keep_assets entry
/// that overlaps a shared one (a shared path is a link into shared/ in every build: an
/// excluded one is kept out of builds, and files carried into a kept one would be written
/// into shared/, where users' data lives).
fn seen_path(key: PathKey, path: &Path, text: &str) -> Result<(), String> {
    SEEN_PATHS.with(|seen| {
        let mut seen = seen.borrow_mut();
        for (other_key, other, other_text) in seen.iter() {
            // (Shared and keep_assets entries listed twice are refused by their lists.)
            if key == PathKey::Exclude && *other_key == key && other == path {
                return Err(format!("exclude entry `{text}` is listed twice"));
            }
            let (kind, entry, shared) = match (key, *other_key) {
                (PathKey::Shared, PathKey::Shared) => continue,
                (PathKey::Shared, kind) => (kind, other_text.as_str(), text),
                (kind, PathKey::Shared) => (kind, text, other_text.as_str()),
                _ => continue,
            };
            if !(other.starts_with(path) || path.starts_with(other)) {
                continue;
            }
            return Err(if kind == PathKey::KeepAssets {
                format!(
                    "keep_assets entry `{entry}` overlaps shared entry `{shared}`; files carried \
                     from earlier builds would be written into shared/"
                )
            } else {
                format!(
                    "exclude entry `{entry}` overlaps shared entry `{shared}`: a shared path is \
                     linked into every build, an excluded one is kept out of builds; list it in \
                     only one of them"
                )
            });
        }
        seen.push((key, path.to_path_buf(), text.to_string()));
        Ok(())
    })
}

/// `composer: false`, `composer: true`, or `composer: {args: [...]}`.
struct ComposerSetting(Option<Composer>);

impl<'de> Deserialize<'de> for ComposerSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SettingVisitor;
        impl<'de> Visitor<'de> for SettingVisitor {
            type Value = ComposerSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`false`, `true`, or a map with `args`")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<ComposerSetting, E> {
                Ok(if on {
                    default_composer()
                } else {
                    ComposerSetting(None)
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<ComposerSetting, M::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct RawComposer {
                    #[serde(default = "default_composer_args")]
                    args: Vec<String>,
                    #[serde(
                        default = "default_composer_timeout",
                        deserialize_with = "composer_timeout"
                    )]
                    timeout: u64,
                }
                fn default_composer_timeout() -> u64 {
                    DEFAULT_COMPOSER_TIMEOUT
                }
                fn composer_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
                    COMPOSER_TIMEOUT.whole(d)
                }
                let raw = RawComposer::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if raw.args.is_empty() {
                    return Err(de::Error::custom(
                        "composer.args must not be empty; use `composer: false` to skip composer",
                    ));
                }
                Ok(ComposerSetting(Some(Composer {
                    args: raw.args,
                    timeout: Duration::from_secs(raw.timeout),
                })))
            }
        }
        d.deserialize_any(SettingVisitor)
    }
}

// ---- `hosts:`, `hosts_at_once:`, `host_timeout:` (a group of web servers, issue #12) ----

fn default_hosts_at_once() -> usize {
    4
}
fn default_host_timeout() -> u64 {
    1800
}
fn hosts_at_once<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    HOSTS_AT_ONCE.whole(d).map(|n| n as usize)
}
fn host_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    HOST_TIMEOUT.whole(d)
}
fn default_switch_window() -> u64 {
    30
}
fn switch_window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    SWITCH_WINDOW.whole(d)
}

/// Checks one `hosts:` entry on its own: a URL `git push` reaches over ssh or a local path,
/// and nothing in it that ssh or git could take for an option (`-oProxyCommand=…` as a host
/// runs a command on the primary).
pub fn check_host_url(text: &str) -> Result<gix_url::Url, String> {
    if text.trim().is_empty() {
        return Err("a host must not be empty".into());
    }
    if text.starts_with('-') {
        return Err(format!("host `{text}` starts with `-`, like an option"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "host `{}` holds spaces or control characters",
            text.escape_debug()
        ));
    }
    let url = gix_url::parse(text.as_bytes())
        .map_err(|e| format!("host `{text}` is not a git URL: {e}"))?;
    match url.scheme {
        gix_url::Scheme::Ssh | gix_url::Scheme::File => {}
        _ => {
            return Err(format!(
                "host `{text}` must be reached over ssh (`user@host:/path`, `ssh://…`) or be a \
                 local path"
            ));
        }
    }
    let optionish = |part: Option<&str>| part.is_some_and(|p| p.starts_with('-'));
    if optionish(url.user()) || optionish(url.host()) || url.path.starts_with(b"-") {
        return Err(format!(
            "host `{text}` has a part that starts with `-`, like an option"
        ));
    }
    if url.password().is_some() {
        return Err(format!(
            "host `{text}` holds a password; the primary reaches hosts with its ssh key"
        ));
    }
    if url.path.is_empty() || url.path_is_root() {
        return Err(format!("host `{text}` names no repository path"));
    }
    Ok(url)
}

thread_local! {
    /// The hosts read so far from the `hosts:` list being parsed, to refuse one listed twice at
    /// its own line (an error of the list itself would point at the list).
    static SEEN_HOSTS: std::cell::RefCell<Vec<(String, gix_url::Url)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One `hosts:` entry, checked where it stands.
struct HostEntry(String);

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("the git URL of another web server", |text| {
            let url = check_host_url(text)?;
            SEEN_HOSTS.with(|seen| {
                let mut seen = seen.borrow_mut();
                if let Some((first, _)) = seen.iter().find(|(_, u)| same_host(u, &url)) {
                    return Err(format!("host `{text}` is listed twice (as `{first}` too)"));
                }
                seen.push((text.to_string(), url));
                Ok(HostEntry(text.to_string()))
            })
        }))
    }
}

fn host_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    SEEN_HOSTS.with(|seen| seen.take());
    let hosts = Option::<Vec<HostEntry>>::deserialize(d);
    SEEN_HOSTS.with(|seen| seen.take());
    Ok(hosts?
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.0)
        .collect())
}

/// Two spellings of one repository (`web2:/srv/app.git`, `ssh://web2/srv/app.git`).
fn same_host(a: &gix_url::Url, b: &gix_url::Url) -> bool {
    a.scheme == b.scheme
        && a.user() == b.user()
        && a.host() == b.host()
        && a.port_or_default() == b.port_or_default()
        && a.path.strip_suffix(b"/").unwrap_or(&a.path)
            == b.path.strip_suffix(b"/").unwrap_or(&b.path)
}

/// Local paths made absolute (against the deploy root, like `repository:`), and none of them
/// the primary's own repository: a push to itself would deploy into its own lock.
fn resolve_hosts(
    text: &str,
    origin: &Path,
    root: &Path,
    repository: &Path,
    hosts: Vec<String>,
) -> Result<Vec<String>> {
    let mut resolved = Vec::with_capacity(hosts.len());
    for host in hosts {
        let url = check_host_url(&host).map_err(|e| anyhow!("{}: {e}", origin.display()))?;
        if url.scheme != gix_url::Scheme::File {
            resolved.push(host);
            continue;
        }
        let path = root.join(std::path::Path::new(&*url.path.to_string()));
        if same_path(&path, repository) {
            // After the `hosts:` key: `repository:` may spell the same path.
            let after = text.find("hosts:").unwrap_or(0);
            let at = text[after..]
                .find(&host)
                .map(|i| i + after)
                .map(|i| {
                    let line = text[..i].matches('\n').count() + 1;
                    let column = i - text[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
                    format!("{line}:{column}:")
                })
                .unwrap_or_default();
            return Err(anyhow!(
                "{}:{at} host `{host}` is this server's own repository ({}); list the other \
                 web servers only",
                origin.display(),
                repository.display()
            ));
        }
        resolved.push(path.to_string_lossy().into_owned());
    }
    Ok(resolved)
}

// ---- `notify:` webhooks (issue #13) ----

/// One `notify:` entry: where to POST, and the body's shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    #[serde(deserialize_with = "notify_url")]
    pub url: NotifyUrl,
    #[serde(default)]
    pub format: NotifyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// The deploy log's facts as a JSON object.
    #[default]
    Json,
    /// `{"text": "<one line>"}`, what a Slack incoming webhook takes.
    Slack,
}

/// Checked inside the visitor, so that the error points at the URL itself.
fn notify_url<'de, D: Deserializer<'de>>(d: D) -> Result<NotifyUrl, D::Error> {
    struct UrlVisitor;
    impl Visitor<'_> for UrlVisitor {
        type Value = NotifyUrl;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an http:// or https:// URL")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<NotifyUrl, E> {
            check_notify_url(text).map_err(E::custom)?;
            Ok(NotifyUrl(text.to_string()))
        }
    }
    d.deserialize_str(UrlVisitor)
}

/// A `notify:` URL. A webhook's URL is its password (Slack's token is its path; others carry
/// one in the query, or as `user:pass@`): whoever reads it can post in its name. So it shows,
/// in Display and Debug alike, only as [`redacted_url`] gives it, whatever prints it (the
/// pusher's lines, notify.jsonl, a warning); [`NotifyUrl::secret`] is for sending to it.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl(String);

impl NotifyUrl {
    /// The whole URL, secret parts and all: only to send to, never to show.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&redacted_url(&self.0))
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NotifyUrl({})", redacted_url(&self.0))
    }
}

/// What may be shown of a URL that can carry a secret in its userinfo, path or query:
/// `scheme://host[:port]/…`, the same shape whatever the path (an empty one included, so
/// that the shape tells nothing either). Parsed by the http crate, the parser ureq sends
/// with; what it cannot parse shows its scheme at most.
pub fn redacted_url(text: &str) -> String {
    if let Ok(uri) = text.parse::<ureq::http::Uri>()
        && let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority())
        && !authority.host().is_empty()
    {
        let port = authority
            .port_u16()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        return format!("{scheme}://{}{port}/…", authority.host());
    }
    match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://…")
        }
        _ => "…".to_string(),
    }
}

/// Its errors show the URL redacted: a refused URL may still hold a good secret (a typo in
/// the scheme, say), and the error reaches the pusher.
fn check_notify_url(text: &str) -> Result<(), String> {
    let shown = redacted_url(text);
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("notify url `{shown}` must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("notify url `{shown}` needs a host, and no spaces"));
    }
    // ureq's own parser is the one that will send it: what it refuses is refused here.
    text.parse::<ureq::http::Uri>()
        .map_err(|e| format!("notify url `{shown}` is not a URL: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("deploy.yml"), Path::new("/srv/app")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        format!(
            "{:#}",
            parse(
                text,
                Path::new("/srv/app/deploy.yml"),
                Path::new("/srv/app")
            )
            .unwrap_err()
        )
    }

    #[test]
    fn defaults_apply_when_only_repository_is_given() {
        let config = parse_ok("repository: /srv/app.git\n");
        assert_eq!(config.repository, Path::new("/srv/app.git"));
        assert_eq!(config.branch, "main");
        assert_eq!(config.keep_builds, 5);
        assert_eq!(config.lock_timeout.as_secs(), 600);
        assert_eq!(config.composer.unwrap().args, DEFAULT_COMPOSER_ARGS);
        assert!(config.shared.is_empty() && config.before_switch.is_empty());
    }

    #[test]
    fn every_key_is_read() {
        let config = parse_ok(
            "repository: repo.git\nbranch: production\nkeep_builds: 3\nshared:\n  - .env\n  - storage/sessions/\n\
             composer:\n  args: [install, --no-dev]\nbefore_switch:\n  - php artisan migrate --force\n\
             after_switch: [\"echo done\"]\nlock_timeout: 30\n",
        );
        assert_eq!(config.repository, Path::new("/srv/app/repo.git"));
        assert_eq!(config.branch, "production");
        assert_eq!(config.keep_builds, 3);
        assert_eq!(
            config.shared,
            vec![
                SharedEntry {
                    path: ".env".into(),
                    is_dir: false
                },
                SharedEntry {
                    path: "storage/sessions".into(),
                    is_dir: true
                },
            ]
        );
        assert_eq!(config.composer.unwrap().args, ["install", "--no-dev"]);
        assert_eq!(config.before_switch, ["php artisan migrate --force"]);
        assert_eq!(config.after_switch, ["echo done"]);
        assert_eq!(config.lock_timeout.as_secs(), 30);
    }

    #[test]
    fn composer_timeout_defaults_to_15_minutes() {
        let composer = parse_ok("repository: r\n").composer.unwrap();
        assert_eq!(composer.timeout, Duration::from_secs(900));
        let composer = parse_ok("repository: r\ncomposer: {timeout: 60}\n")
            .composer
            .unwrap();
        assert_eq!(
            (composer.timeout, composer.args.len()),
            (Duration::from_secs(60), DEFAULT_COMPOSER_ARGS.len())
        );
        assert!(
            parse_err("repository: r\ncomposer: {timeout: 0}\n")
                .contains("composer.timeout: must be a whole number of seconds from 1 to 86400")
        );
    }

    #[test]
    fn snapshot_mode_is_copy_or_link() {
        assert_eq!(parse_ok("repository: r\n").snapshot, SnapshotMode::Link);
        assert_eq!(
            parse_ok("repository: r\nsnapshot: copy\n").snapshot,
            SnapshotMode::Copy
        );
        assert_eq!(
            parse_ok("repository: r\nsnapshot: link\n").snapshot,
            SnapshotMode::Link
        );
        let err = parse_err("repository: r\nsnapshot: reflink\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:2:11: ")
                && err.contains("unknown variant `reflink`"),
            "{err}"
        );
    }

    #[test]
    fn composer_can_be_switched_off_or_on() {
        assert_eq!(parse_ok("repository: r\ncomposer: false\n").composer, None);
        assert!(
            parse_ok("repository: r\ncomposer: true\n")
                .composer
                .is_some()
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = parse_err("repository: r\nkeep_build: 3\n");
        assert!(err.starts_with("/srv/app/deploy.yml:2:1: "), "{err}");
        assert!(err.contains("unknown field `keep_build`"), "{err}");
        assert!(!err.contains(" at line "), "position said twice: {err}");
    }

    #[test]
    fn wrong_type_is_located() {
        let err = parse_err("repository: r\nkeep_builds: many\n");
        assert!(err.starts_with("/srv/app/deploy.yml:2:14: "), "{err}");
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse_err("repository: r\nshared: [.env\n");
        assert!(err.starts_with("/srv/app/deploy.yml:"), "{err}");
        assert!(err.chars().filter(|c| *c == ':').count() >= 3, "{err}");
    }

    #[test]
    fn missing_repository_and_empty_file_are_refused() {
        assert!(parse_err("branch: main\n").contains("missing field `repository`"));
        assert!(parse_err("  \n").contains("the file is empty"));
    }

    #[test]
    fn bad_shared_entries_are_refused_with_their_position() {
        let err = parse_err("repository: r\nshared:\n  - .env\n  - /etc/passwd\n");
        assert!(err.starts_with("/srv/app/deploy.yml:4:5: "), "{err}");
        assert!(err.contains("absolute"), "{err}");
        assert!(parse_err("repository: r\nshared: [../secrets]\n").contains("`..`"));
        assert!(parse_err("repository: r\nshared: [storage/../../x]\n").contains("`..`"));
        assert!(parse_err("repository: r\nshared: ['']\n").contains("must name a path"));
        assert!(parse_err("repository: r\nshared: [./]\n").contains("names the app itself"));
        assert!(parse_err("repository: r\nshared: [.env, ./.env]\n").contains("listed twice"));
        assert!(parse_err("repository: r\nshared: [storage/, storage/logs/]\n").contains("nest"));
    }

    #[test]
    fn healthcheck_takes_a_command_or_a_url() {
        let config = parse_ok("repository: r\nhealthcheck:\n  command: curl -fsS localhost\n");
        let check = config.healthcheck.unwrap();
        assert_eq!(check.probe, Probe::Command("curl -fsS localhost".into()));
        assert_eq!(
            (check.retries, check.interval, check.timeout),
            (2, Duration::from_secs(1), Duration::from_secs(10))
        );
        let config = parse_ok(
            "repository: r\nhealthcheck: {url: 'http://127.0.0.1:8080/health', retries: 0, interval: 0.2, timeout: 1.5}\n",
        );
        let check = config.healthcheck.unwrap();
        assert_eq!(
            check.probe,
            Probe::Url("http://127.0.0.1:8080/health".into())
        );
        assert_eq!(
            (check.retries, check.interval, check.timeout),
            (0, Duration::from_millis(200), Duration::from_millis(1500))
        );
        assert_eq!(parse_ok("repository: r\n").healthcheck, None);
    }

    #[test]
    fn a_healthcheck_needs_exactly_one_probe() {
        assert!(parse_err("repository: r\nhealthcheck: {retries: 1}\n").contains("exactly one of"));
        assert!(
            parse_err("repository: r\nhealthcheck: {command: x, url: 'http://a/'}\n")
                .contains("exactly one of")
        );
        assert!(
            parse_err("repository: r\nhealthcheck: {url: 'https://a/'}\n")
                .contains("plain http://")
        );
        assert!(
            parse_err("repository: r\nhealthcheck: {command: x, timeout: -1}\n")
                .contains("healthcheck.timeout: must be a number of seconds from 0.001")
        );
        assert!(
            parse_err("repository: r\nhealthcheck: {command: x, timeout: 0}\n").contains("got 0")
        );
        let err = parse_err("repository: r\nhealthcheck:\n  comand: x\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:3:3: ") && err.contains("unknown field `comand`"),
            "{err}"
        );
    }

    #[test]
    fn app_dir_is_a_normalized_directory_of_the_commit() {
        assert_eq!(parse_ok("repository: r\n").app_dir, PathBuf::new());
        for (written, normal) in [
            ("backend", "backend"),
            ("backend/", "backend"),
            ("./backend//", "backend"),
            ("apps/api/", "apps/api"),
            ("'apps/./api'", "apps/api"),
            (".", ""),
            ("./", ""),
        ] {
            let config = parse_ok(&format!("repository: r\napp_dir: {written}\n"));
            assert_eq!(config.app_dir, PathBuf::from(normal), "{written}");
        }
        for (written, why) in [
            ("/srv/backend", "is absolute"),
            ("../backend", "contains `..`"),
            ("backend/../../x", "contains `..`"),
            ("backend/.git", "`.git`"),
            ("''", "must name a directory"),
            ("[backend]", "invalid type"),
        ] {
            let err = parse_err(&format!(
                "repository: r\nbranch: main\napp_dir: {written}\n"
            ));
            assert!(
                err.starts_with("/srv/app/deploy.yml:3:10: ") && err.contains(why),
                "{written}: {err}"
            );
        }
    }

    #[test]
    fn reset_opcache_takes_a_unix_socket_or_a_tcp_address() {
        assert_eq!(parse_ok("repository: r\n").reset_opcache, None);
        assert_eq!(
            parse_ok("repository: r\nreset_opcache: ~\n").reset_opcache,
            None
        );
        let unix = parse_ok("repository: r\nreset_opcache: unix:/run/php/app.sock\n");
        assert_eq!(
            unix.reset_opcache,
            Some(FpmAddress::Unix("/run/php/app.sock".into()))
        );
        assert_eq!(
            unix.reset_opcache.unwrap().to_string(),
            "unix:/run/php/app.sock"
        );
        for (text, host, port) in [
            ("tcp://127.0.0.1:9000", "127.0.0.1", 9000),
            ("'tcp://localhost:9001/'", "localhost", 9001),
            ("'tcp://[::1]:9000'", "::1", 9000),
            ("tcp://php-fpm.internal:65535", "php-fpm.internal", 65535),
        ] {
            let config = parse_ok(&format!("repository: r\nreset_opcache: {text}\n"));
            assert_eq!(
                config.reset_opcache,
                Some(FpmAddress::Tcp {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn a_wrong_reset_opcache_is_refused_at_its_position() {
        let long = format!("unix:/{}", "s".repeat(107));
        for (value, says) in [
            ("/run/php/app.sock", "got `/run/php/app.sock`"),
            ("unix:run/php/app.sock", "must be absolute"),
            ("'unix:'", "must be absolute"),
            (long.as_str(), "at most 107 bytes"),
            ("tcp://127.0.0.1", "port is missing"),
            ("tcp://127.0.0.1:0", "1 to 65535"),
            ("tcp://127.0.0.1:65536", "1 to 65535"),
            ("tcp://127.0.0.1:http", "1 to 65535"),
            ("tcp://:9000", "not a host name"),
            ("'tcp://a b:9000'", "not a host name"),
            ("'tcp://[nope]:9000'", "IPv6"),
            ("http://127.0.0.1:9000", "got `http://127.0.0.1:9000`"),
            ("127.0.0.1:9000", "`tcp://host:port`"),
            ("9000", "`unix:/absolute/path.sock` or `tcp://host:port`"),
            ("true", "`unix:/absolute/path.sock` or `tcp://host:port`"),
            (
                "[unix:/a]",
                "`unix:/absolute/path.sock` or `tcp://host:port`",
            ),
        ] {
            let err = parse_err(&format!(
                "repository: r\nkeep_builds: 2\nreset_opcache: {value}\n"
            ));
            assert!(
                err.starts_with("/srv/app/deploy.yml:3:16: reset_opcache: ") && err.contains(says),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn the_rollback_branch_cannot_be_the_deploy_branch() {
        assert!(parse_err("repository: r\nbranch: rollback\n").contains("rollback target"));
        assert!(parse_err("repository: r\nbranch: replay\n").contains("deploys again"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            parse_err("repository: r\nkeep_builds: 0\n").contains("from 1 (the live build only)")
        );
        assert!(parse_err("repository: r\nbranch: 'a..b'\n").contains("not a valid branch"));
        assert!(parse_err("repository: r\ncomposer: {args: []}\n").contains("must not be empty"));
        assert!(parse_err("repository: r\ncomposer: {arg: [x]}\n").contains("unknown field `arg`"));
        assert!(parse_err("repository: r\nbefore_switch: ['']\n").contains("must not be empty"));
        assert!(parse_err("repository: r\nlock_timeout: -1\n").contains("lock_timeout"));
    }

    /// deploy.yml text with `value` written at `limit`'s key, and where the value starts.
    fn with_number(limit: &Limit, value: &str) -> (String, usize, usize) {
        let mut text = String::from("repository: r\n");
        let field = match limit.key.split_once('.') {
            Some((section, field)) => {
                text.push_str(&format!("{section}:\n"));
                if section == "healthcheck" {
                    text.push_str("  command: x\n");
                }
                if section == "build" {
                    text.push_str("  commands: [x]\n");
                }
                if section == "preflight" {
                    text.push_str("  fastcgi: unix:/run/php/app.sock\n");
                }
                format!("  {field}: ")
            }
            None => format!("{}: ", limit.key),
        };
        let line = text.lines().count() + 1;
        text.push_str(&format!("{field}{value}\n"));
        (text, line, field.len() + 1)
    }

    /// The value a parsed config holds for `limit`'s key, as a number of its unit.
    fn number_at(config: &Config, limit: &Limit) -> f64 {
        let check = || config.healthcheck.as_ref().unwrap();
        match limit.key {
            "keep_builds" => config.keep_builds as f64,
            "lock_timeout" => config.lock_timeout.as_secs_f64(),
            "command_timeout" => config.command_timeout.as_secs_f64(),
            "composer.timeout" => config.composer.as_ref().unwrap().timeout.as_secs_f64(),
            "healthcheck.retries" => check().retries as f64,
            "healthcheck.interval" => check().interval.as_secs_f64(),
            "healthcheck.timeout" => check().timeout.as_secs_f64(),
            "build.timeout" => config.build.as_ref().unwrap().timeout.as_secs_f64(),
            "hosts_at_once" => config.hosts_at_once as f64,
            "host_timeout" => config.host_timeout.as_secs_f64(),
            "switch_window" => config.switch_window.as_secs_f64(),
            "preflight.timeout" => config.preflight.as_ref().unwrap().timeout.as_secs_f64(),
            other => panic!("no test knows the key {other}"),
        }
    }

    /// Parses `value` at `limit`'s key; never panics, and either accepts a value within the
    /// range or refuses it at the value's position, naming the key and the range.
    fn try_number(limit: &Limit, value: &str) -> Option<f64> {
        let (text, line, column) = with_number(limit, value);
        let origin = Path::new("/srv/app/deploy.yml");
        let parsed = std::panic::catch_unwind(|| parse(&text, origin, Path::new("/srv/app")))
            .unwrap_or_else(|_| panic!("parsing panicked on {text:?}"));
        match parsed {
            Ok(config) => {
                let got = number_at(&config, limit);
                assert!(
                    limit.contains(got),
                    "{}: {value} was accepted as {got}, outside {}",
                    limit.key,
                    limit.range()
                );
                Some(got)
            }
            Err(err) => {
                let err = format!("{err:#}");
                let head = format!("/srv/app/deploy.yml:{line}:{column}: {}: ", limit.key);
                assert!(
                    err.starts_with(&head),
                    "{value:?}: want {head:?} in {err:?}"
                );
                assert!(
                    err.contains(&limit.range()),
                    "{value:?}: no range in {err:?}"
                );
                None
            }
        }
    }

    const EXTREMES: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "2",
        "100",
        "101",
        "1000",
        "1001",
        "3600",
        "3601",
        "86400",
        "86401",
        "4294967295",
        "4294967296",
        "-2147483649",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "340282366920938463463374607431768211456",
        "1e19",
        "-1e19",
        "1e308",
        "1e309",
        "-1e309",
        ".inf",
        "-.inf",
        "+.inf",
        ".Inf",
        ".INF",
        ".nan",
        ".NaN",
        ".NAN",
        "0.5",
        "1.5",
        "-0.0",
        "0.0",
        "2.0",
        "1e2",
        "1E2",
        "1e-2",
        "5e-324",
        "0.001",
        "0.0009",
        "0x10",
        "0xffffffffffffffffff",
        "0o17",
        "-0x1",
        "+5",
        "007",
        "~",
        "null",
        "''",
        "'5'",
        "\"600\"",
        "10m",
        "true",
        "no",
        "[]",
        "[5]",
        "{}",
        "{a: 1}",
        "!!str 5",
        "!!float 5",
        "!!int 5",
        "!custom 5",
    ];

    #[test]
    fn every_number_at_its_extremes_is_in_range_or_refused_with_key_and_position() {
        for limit in &NUMBERS {
            for value in EXTREMES {
                try_number(limit, value);
            }
        }
    }

    #[test]
    fn every_number_accepts_its_bounds_and_refuses_just_past_them() {
        for limit in &NUMBERS {
            let (min, max) = (limit.min.to_string(), limit.max.to_string());
            assert_eq!(try_number(limit, &min), Some(limit.min), "{}", limit.key);
            assert_eq!(try_number(limit, &max), Some(limit.max), "{}", limit.key);
            let (below, above) = if limit.fractional {
                (limit.min - 0.0001, limit.max + 0.0001)
            } else {
                (limit.min - 1.0, limit.max + 1.0)
            };
            assert_eq!(try_number(limit, &below.to_string()), None, "{}", limit.key);
            assert_eq!(try_number(limit, &above.to_string()), None, "{}", limit.key);
            assert_eq!(try_number(limit, "1e19"), None, "{}", limit.key);
            assert_eq!(try_number(limit, "-1"), None, "{}", limit.key);
            assert_eq!(try_number(limit, ".nan"), None, "{}", limit.key);
            assert_eq!(try_number(limit, ".inf"), None, "{}", limit.key);
            if !limit.fractional {
                let err = parse_err(&with_number(limit, "2.0").0);
                assert!(err.contains("without a decimal point"), "{err}");
                assert_eq!(try_number(limit, "1.5"), None, "{}", limit.key);
            }
        }
    }

    #[test]
    fn zero_is_accepted_where_it_means_something() {
        let config = parse_ok("repository: r\nlock_timeout: 0\n");
        assert_eq!(config.lock_timeout, Duration::ZERO);
        let check = parse_ok("repository: r\nhealthcheck: {command: x, retries: 0, interval: 0}\n")
            .healthcheck
            .unwrap();
        assert_eq!((check.retries, check.interval), (0, Duration::ZERO));
    }

    #[test]
    fn command_timeout_defaults_to_15_minutes() {
        assert_eq!(
            parse_ok("repository: r\n").command_timeout,
            Duration::from_secs(900)
        );
        assert_eq!(
            parse_ok("repository: r\ncommand_timeout: 5\n").command_timeout,
            Duration::from_secs(5)
        );
    }

    /// A tiny xorshift: the same sequence on every run, so a failure can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn digits(&mut self, max_len: u64) -> String {
            let len = 1 + self.below(max_len);
            (0..len)
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect()
        }
    }

    /// A random number as YAML might spell it: any sign, length, fraction, exponent, base
    /// or special value.
    fn random_number(rng: &mut Rng) -> String {
        let sign = ["", "", "-", "+"][rng.below(4) as usize];
        let body = match rng.below(9) {
            0..=2 => rng.digits(6),
            3 => rng.digits(45),
            4 => format!("{}.{}", rng.digits(8), rng.digits(8)),
            5 => {
                let e = ["e", "E", "e+", "e-"][rng.below(4) as usize];
                format!("{}{e}{}", rng.digits(3), rng.digits(3))
            }
            6 => format!("{}.{}e{}", rng.digits(2), rng.digits(2), rng.digits(4)),
            7 => [
                ".inf", ".Inf", ".nan", ".NaN", "0x1f", "0o17", "0b101", "1_000", "0.",
            ][rng.below(9) as usize]
                .to_string(),
            _ => format!("0x{:x}", rng.next()),
        };
        format!("{sign}{body}")
    }

    #[test]
    fn random_numbers_never_panic_and_accepted_ones_are_in_range() {
        let mut rng = Rng(0x5eed_2026_1126_0008);
        let mut accepted = 0;
        for _ in 0..3000 {
            let value = random_number(&mut rng);
            for limit in &NUMBERS {
                let got = try_number(limit, &value);
                accepted += usize::from(got.is_some());
                // A plain decimal integer in range must be accepted as itself.
                let plain = value.strip_prefix('-').unwrap_or(&value);
                if !limit.fractional
                    && plain.bytes().all(|b| b.is_ascii_digit())
                    && !(plain.len() > 1 && plain.starts_with('0'))
                    && let Ok(n) = value.parse::<i128>()
                    && limit.contains(n as f64)
                {
                    assert_eq!(got, Some(n as f64), "{}: {value}", limit.key);
                }
            }
        }
        // The generator reaches both sides of the ranges.
        eprintln!("{accepted} of {} accepted", 3000 * NUMBERS.len());
        assert!(
            accepted > 1000 && accepted < 3000 * NUMBERS.len() - 1000,
            "{accepted}"
        );
    }

    #[test]
    fn shared_refuses_what_makes_a_build_its_commit() {
        for (entry, why) in [
            ("REVISION", "REVISION is written into each build"),
            ("vendor/", "vendor/ is installed by composer"),
            ("vendor", "vendor/ is installed by composer"),
            ("./vendor/autoload.php", "vendor/ is installed by composer"),
            ("vendor/composer/", "vendor/ is installed by composer"),
            ("composer.json", "must be the commit's own"),
            ("composer.lock", "must be the commit's own"),
            (".git", "`.git` belongs to git"),
            (".GIT/hooks/", "`.git` belongs to git"),
            ("storage/.Git", "`.git` belongs to git"),
            ("public/.gIt/config", "`.git` belongs to git"),
            ("auth.json", "composer's credentials"),
        ] {
            let err = parse_err(&format!("repository: r\nshared:\n  - .env\n  - {entry}\n"));
            assert!(
                err.starts_with("/srv/app/deploy.yml:4:5: ")
                    && err.contains(&format!("shared entry `{entry}` is refused: "))
                    && err.contains(why),
                "{entry}: {err}"
            );
        }
        // Names that only look alike are the app's own.
        let config = parse_ok(
            "repository: r\nshared: [storage/REVISION, vendors/, app/vendor/, .gitignore-data, config/composer.json]\n",
        );
        assert_eq!(config.shared.len(), 5);
    }

    #[test]
    fn the_build_step_reads_commands_inputs_and_timeout() {
        let config = parse_ok(
            "repository: r\nbuild:\n  commands:\n    - run: npm ci --prefer-offline\n      inputs: [package.json, ./package-lock.json]\n    - npm run build\n  inputs: [package.json, package-lock.json, resources/, vite.config.js]\n  timeout: 60\nexclude: [node_modules/, storage/cache]\n",
        );
        let build = config.build.unwrap();
        assert_eq!(
            build.commands,
            [
                BuildCommand {
                    run: "npm ci --prefer-offline".into(),
                    inputs: Some(vec!["package.json".into(), "package-lock.json".into()]),
                },
                BuildCommand {
                    run: "npm run build".into(),
                    inputs: None
                },
            ]
        );
        let inputs: Vec<PathBuf> = [
            "package.json",
            "package-lock.json",
            "resources",
            "vite.config.js",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(build.inputs, Some(inputs));
        assert_eq!(build.timeout, Duration::from_secs(60));
        assert_eq!(
            config.exclude,
            [
                PathBuf::from("node_modules"),
                PathBuf::from("storage/cache")
            ]
        );
        let build = parse_ok("repository: r\nbuild: {commands: [make]}\n")
            .build
            .unwrap();
        assert_eq!(
            (build.inputs, build.timeout),
            (None, Duration::from_secs(900))
        );
        let defaults = parse_ok("repository: r\n");
        assert_eq!((defaults.build, defaults.exclude), (None, vec![]));
    }

    #[test]
    fn bad_build_steps_are_refused_at_their_position() {
        let mut wrong = Vec::new();
        for (text, at, says) in [
            (
                "build:\n  commands: [x]\n  inputs: [../up]\n",
                "4:12",
                "build input `../up` contains `..`",
            ),
            (
                "build:\n  commands: [x]\n  inputs: [/etc]\n",
                "4:12",
                "build input `/etc` is absolute",
            ),
            (
                "build:\n  commands: [x]\n  inputs: [a, '']\n",
                "4:15",
                "must name a path inside the app",
            ),
            (
                "build:\n  commands: [x]\n  inputs: [.git/HEAD]\n",
                "4:12",
                "`.git` belongs to git",
            ),
            (
                "build:\n  commands: [x]\n  inputs: []\n",
                "4:11",
                "inputs must list at least one path",
            ),
            (
                "build:\n  commands:\n    - run: x\n      inputs: [a/../../b]\n",
                "5:16",
                "contains `..`",
            ),
            (
                "build:\n  commands:\n    - npm ci\n    - '  '\n",
                "5:7",
                "a build command must not be empty",
            ),
            (
                "build:\n  commands:\n    - run: ''\n",
                "4:7",
                "a build command must not be empty",
            ),
            (
                "build:\n  commands: []\n",
                "3:13",
                "must list at least one command",
            ),
            ("build:\n  inputs: [a]\n", "3:3", "missing field `commands`"),
            (
                "build:\n  commands:\n    - {run: x, input: [a]}\n",
                "4:16",
                "unknown field `input`",
            ),
            (
                "build:\n  commands: [x]\n  timeout: 0\n",
                "4:12",
                "build.timeout: must be a whole number of seconds from 1 to 86400",
            ),
            (
                "build:\n  commands: [x]\n  timeout: 86401\n",
                "4:12",
                "build.timeout",
            ),
        ] {
            let err = parse_err(&format!("repository: r\n{text}"));
            if !(err.starts_with(&format!("/srv/app/deploy.yml:{at}: ")) && err.contains(says)) {
                wrong.push(format!("{text:?}: want {at} and {says:?} in {err}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn exclude_is_checked_like_shared_and_never_overlaps_it() {
        for (text, at, says) in [
            (
                "exclude: [node_modules/, ../x]\n",
                "2:26",
                "exclude entry `../x` contains `..`",
            ),
            ("exclude:\n  - /tmp\n", "3:5", "is absolute"),
            (
                "exclude: [vendor/]\n",
                "2:11",
                "vendor/ is installed by composer",
            ),
            ("exclude: [REVISION]\n", "2:11", "REVISION is written"),
            ("exclude: [a/.Git]\n", "2:11", "`.git` belongs to git"),
            ("exclude: [./]\n", "2:11", "must name a path inside the app"),
            ("exclude: [a, ./a/]\n", "2:14", "listed twice"),
            (
                "shared: [storage/]\nexclude:\n  - node_modules\n  - storage/cache/\n",
                "5:5",
                "exclude entry `storage/cache/` overlaps shared entry `storage/`",
            ),
            (
                "exclude: [storage/]\nshared:\n  - .env\n  - storage/logs/\n",
                "5:5",
                "exclude entry `storage/` overlaps shared entry `storage/logs/`",
            ),
            (
                "shared: [.env]\nexclude: [.env]\n",
                "3:11",
                "overlaps shared entry `.env`",
            ),
        ] {
            let err = parse_err(&format!("repository: r\n{text}"));
            assert!(
                err.starts_with(&format!("/srv/app/deploy.yml:{at}: ")) && err.contains(says),
                "{text:?}: want {at} and {says:?} in {err}"
            );
        }
        // Only a real overlap counts; and nothing of one parse reaches the next.
        let config = parse_ok(
            "repository: r\nshared: [storage/]\nexclude: [storage-cache/, node_modules]\n",
        );
        assert_eq!(config.exclude.len(), 2);
        assert_eq!(
            parse_ok("repository: r\nexclude: [storage/]\n")
                .exclude
                .len(),
            1
        );
    }

    #[test]
    fn the_shipped_deploy_yml_holds_the_defaults_and_states_every_range() {
        let text = include_str!("../deploy.yml");
        let shipped = parse(text, Path::new("deploy.yml"), Path::new("/srv")).unwrap();
        let defaults = parse_ok("repository: /srv/app.git\n");
        assert_eq!(shipped, defaults);
        for limit in &NUMBERS {
            let field = limit.key.rsplit('.').next().unwrap();
            let range = format!("{field} {}-{}", limit.min, limit.max);
            let stated = text.contains(&range)
                || text.contains(&format!(
                    "{field} and composer.timeout {}-{}",
                    limit.min, limit.max
                ));
            assert!(
                stated,
                "deploy.yml does not state {}'s range ({range})",
                limit.key
            );
        }
    }

    #[test]
    fn keep_assets_takes_normalized_directories_of_the_app() {
        let config = parse_ok("repository: r\nkeep_assets: [public/build/assets/, ./web//dist]\n");
        assert_eq!(
            config.keep_assets,
            [
                PathBuf::from("public/build/assets"),
                PathBuf::from("web/dist")
            ]
        );
        assert!(parse_ok("repository: r\n").keep_assets.is_empty());
    }

    #[test]
    fn keep_assets_refuses_paths_outside_the_app_with_their_position() {
        for (entry, why) in [
            ("/var/www/assets", "is absolute"),
            ("../assets", "contains `..`"),
            ("public/../../x", "contains `..`"),
            ("./", "names the app itself"),
            ("''", "names the app itself"),
            ("vendor/x/", "vendor/ is installed by composer"),
            ("public/.git", "`.git` belongs to git"),
        ] {
            let err = parse_err(&format!("repository: r\nkeep_assets:\n  - {entry}\n"));
            assert!(
                err.starts_with("/srv/app/deploy.yml:3:5: ") && err.contains(why),
                "{entry}: {err}"
            );
        }
        assert!(parse_err("repository: r\nkeep_assets: [a/, ./a]\n").contains("listed twice"));
        assert!(parse_err("repository: r\nkeep_assets: [a/, a/b/]\n").contains("nest"));
    }

    #[test]
    fn keep_assets_must_not_overlap_a_shared_entry_whatever_the_order() {
        for text in [
            "repository: r\nshared: [storage/, .env]\nkeep_assets:\n  - public/build/\n  - storage/app/public/\n",
            "repository: r\nkeep_assets:\n  - public/build/\n  - storage/app/public/\nshared: [storage/, .env]\n",
        ] {
            let err = parse_err(text);
            // At the later of the two entries, as for `exclude:`.
            let at = if text.starts_with("repository: r\nshared") {
                "5:5"
            } else {
                "5:10"
            };
            assert!(
                err.starts_with(&format!("/srv/app/deploy.yml:{at}: "))
                    && err.contains(
                        "keep_assets entry `storage/app/public` overlaps shared entry `storage/`"
                    ),
                "{err}"
            );
        }
        // A shared entry inside a kept directory overlaps it too.
        let err = parse_err("repository: r\nshared: [public/build/hot]\nkeep_assets: [public/]\n");
        assert!(err.starts_with("/srv/app/deploy.yml:3:15: "), "{err}");
        // Neighbours do not.
        let config =
            parse_ok("repository: r\nshared: [public/uploads/]\nkeep_assets: [public/build/]\n");
        assert_eq!(config.keep_assets, [PathBuf::from("public/build")]);
    }

    #[test]
    fn release_is_a_list_of_commands() {
        assert!(parse_ok("repository: r\n").release.is_empty());
        let config = parse_ok("repository: r\nrelease:\n  - php artisan migrate --force\n");
        assert_eq!(config.release, ["php artisan migrate --force"]);
        let err = parse_err("repository: r\nrelease: ['  ']\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:2:11: ")
                && err.contains("a release command must not be empty"),
            "{err}"
        );
        assert!(
            parse_err("repository: r\nrelease: migrate\n").starts_with("/srv/app/deploy.yml:2:")
        );
    }

    const GROUP_BASE: &str = "repository: /srv/app.git\nshared: [.env, storage/]\n\
        composer: {args: [install, --no-dev]}\nbuild: {commands: [npm ci]}\nkeep_builds: 3\n";

    fn fingerprint(text: &str) -> String {
        parse_ok(text).app_fingerprint().0
    }

    #[test]
    fn the_app_fingerprint_is_stable_and_ignores_the_order_of_keys() {
        let (fp, json) = parse_ok(GROUP_BASE).app_fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(fingerprint(GROUP_BASE), fp);
        let reordered = "keep_builds: 3\nbuild: {commands: [npm ci]}\nrepository: /srv/app.git\n\
            composer: {args: [install, --no-dev]}\nshared: [.env, storage/]\n";
        assert_eq!(fingerprint(reordered), fp);
        assert_eq!(json["shared"], serde_json::json!([".env", "storage/"]));
        assert_eq!(json["keep_builds"], 3);
    }

    #[test]
    fn every_app_key_changes_the_fingerprint() {
        let base = fingerprint(GROUP_BASE);
        for (what, extra) in [
            ("shared", "shared: [.env]\n"),
            ("composer.args", "composer: {args: [install]}\n"),
            (
                "composer.timeout",
                "composer: {args: [install, --no-dev], timeout: 60}\n",
            ),
            ("composer off", "composer: false\n"),
            ("build", "build: {commands: [npm ci, npm run build]}\n"),
            (
                "build.inputs",
                "build: {commands: [npm ci], inputs: [assets/]}\n",
            ),
            ("keep_builds", "keep_builds: 4\n"),
            (
                "before_switch",
                "before_switch: [php artisan config:cache]\n",
            ),
            ("after_switch", "after_switch: [echo done]\n"),
            ("command_timeout", "command_timeout: 60\n"),
            ("healthcheck", "healthcheck: {command: 'true'}\n"),
            ("snapshot", "snapshot: copy\n"),
            ("app_dir", "app_dir: backend\n"),
            ("keep_assets", "keep_assets: [public/build/]\n"),
            ("exclude", "exclude: [node_modules/]\n"),
            ("preflight", "preflight: {fastcgi: '127.0.0.1:9000'}\n"),
            (
                "preflight.urls",
                "preflight: {fastcgi: '127.0.0.1:9000', urls: [/health]}\n",
            ),
            (
                "preflight.timeout",
                "preflight: {fastcgi: '127.0.0.1:9000', timeout: 3}\n",
            ),
        ] {
            let text = with_key(GROUP_BASE, extra);
            assert_ne!(
                fingerprint(&text),
                base,
                "{what} did not change it:\n{text}"
            );
        }
    }

    #[test]
    fn per_host_keys_do_not_change_the_fingerprint() {
        let base = fingerprint(GROUP_BASE);
        for extra in [
            "lock_timeout: 5\n",
            "reset_opcache: unix:/run/php/web2.sock\n",
            "repository: /srv/elsewhere.git\n",
            "branch: production\n",
            "release: [php artisan migrate --force]\n",
            "host_timeout: 60\n",
            "switch_window: 5\n",
        ] {
            let text = with_key(GROUP_BASE, extra);
            assert_eq!(fingerprint(&text), base, "changed by {extra}");
        }
    }

    /// `text` with the top-level key of `line` replaced (or added).
    fn with_key(text: &str, line: &str) -> String {
        let key = line.split(':').next().unwrap();
        let mut out: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(line);
        out
    }

    #[test]
    fn preflight_fastcgi_is_per_host() {
        let on = |address: &str| {
            fingerprint(&with_key(
                GROUP_BASE,
                &format!("preflight: {{fastcgi: '{address}', urls: [/, /health]}}\n"),
            ))
        };
        assert_eq!(on("unix:/run/php/web1.sock"), on("10.0.0.2:9000"));
    }

    #[test]
    fn preflight_takes_its_address_from_reset_opcache_and_defaults_to_the_home_page() {
        assert_eq!(parse_ok("repository: r\n").preflight, None);
        let config =
            parse_ok("repository: r\nreset_opcache: tcp://127.0.0.1:9000\npreflight: {}\n");
        assert_eq!(
            config.preflight,
            Some(Preflight {
                fastcgi: FpmAddress::Tcp {
                    host: "127.0.0.1".into(),
                    port: 9000
                },
                urls: vec!["/".into()],
                timeout: Duration::from_secs(10),
            })
        );
        let own = parse_ok(
            "repository: r\nreset_opcache: unix:/run/a.sock\npreflight:\n  fastcgi: unix:/run/b.sock\n  urls: [/, '/health?deep=1']\n  timeout: 1\n",
        )
        .preflight
        .unwrap();
        assert_eq!(own.fastcgi, FpmAddress::Unix("/run/b.sock".into()));
        assert_eq!(own.urls, ["/", "/health?deep=1"]);
        assert_eq!(own.timeout, Duration::from_secs(1));
        // php-fpm's and nginx's own spelling of a TCP address.
        let tcp = parse_ok("repository: r\npreflight: {fastcgi: 'localhost:9000'}\n");
        assert_eq!(
            tcp.preflight.unwrap().fastcgi,
            FpmAddress::Tcp {
                host: "localhost".into(),
                port: 9000
            }
        );
    }

    #[test]
    fn a_wrong_preflight_is_refused_at_its_position() {
        let err = parse_err("repository: r\nkeep_builds: 2\npreflight:\n  urls: [/]\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:3:1: preflight: needs `fastcgi:`")
                && err.contains("no `reset_opcache:`"),
            "{err}"
        );
        for (value, says) in [
            (
                "fastcgi: /run/php/app.sock",
                "must be `unix:/absolute/path.sock` or `host:port`",
            ),
            (
                "fastcgi: unix:run/app.sock",
                "the socket path must be absolute",
            ),
            (
                "fastcgi: 'tcp://127.0.0.1:99999'",
                "the port must be 1 to 65535",
            ),
            ("fastcgi: 'localhost'", "got `localhost`"),
            ("fastcgi: '127.0.0.1:0'", "got `127.0.0.1:0`"),
            ("fastcgi: '127.0.0.1:65536'", "got `127.0.0.1:65536`"),
            (
                "fastcgi: 'http://127.0.0.1:80'",
                "got `http://127.0.0.1:80`",
            ),
            ("fastcgi: [x]", "invalid type"),
            (
                "urls: [health]",
                "`health` must be a path starting with `/`",
            ),
            (
                "urls: ['//evil.example/']",
                "`//evil.example/` must be a path",
            ),
            ("urls: ['http://localhost/']", "must be a path"),
            ("urls: ['/a b']", "must be a path"),
            ("urls: ['/#top']", "must be a path"),
            ("urls: ['/../secret.php']", "must be a path"),
            ("urls: ['/./x']", "must be a path"),
            ("urls: []", "needs at least one URL"),
            ("urls: /", "invalid type"),
            ("port: 9000", "unknown field `port`"),
        ] {
            let fastcgi = if value.starts_with("fastcgi:") {
                ""
            } else {
                "  fastcgi: unix:/run/php/app.sock\n"
            };
            let err = parse_err(&format!(
                "repository: r\nkeep_builds: 2\npreflight:\n{fastcgi}  {value}\n"
            ));
            assert!(
                err.starts_with("/srv/app/deploy.yml:")
                    && err.contains("preflight")
                    && err.contains(says),
                "{value}: {err}"
            );
            assert!(!err.starts_with("/srv/app/deploy.yml:1:"), "{value}: {err}");
        }
    }

    #[test]
    fn hosts_default_to_a_single_server() {
        let config = parse_ok("repository: r\n");
        assert!(config.hosts.is_empty());
        assert_eq!(config.hosts_at_once, 4);
        assert_eq!(config.host_timeout, Duration::from_secs(1800));
        assert_eq!(config.switch_window, Duration::from_secs(30));
    }

    #[test]
    fn switch_window_is_whole_seconds_from_one_to_an_hour_and_says_where_it_is_wrong() {
        let window = |text: &str| parse_ok(&format!("repository: r\n{text}")).switch_window;
        assert_eq!(window(""), Duration::from_secs(30));
        assert_eq!(window("switch_window: 1\n"), Duration::from_secs(1));
        assert_eq!(window("switch_window: 3600\n"), Duration::from_secs(3600));
        for value in ["0", "3601", "-5", "1e19", "soon", ".nan", "2.5", "[30]"] {
            let err = parse_err(&format!("repository: r\nswitch_window: {value}\n"));
            assert!(
                err.starts_with("/srv/app/deploy.yml:2:16: switch_window: "),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn hosts_take_ssh_urls_and_local_paths() {
        let config = parse_ok(
            "repository: r\nhosts:\n  - deploy@web2.internal:/srv/app.git\n  \
             - ssh://deploy@web3.internal:2222/srv/app.git\n  - /srv/web4.git\n  - ../web5.git\n\
             hosts_at_once: 2\nhost_timeout: 60\nswitch_window: 5\n",
        );
        assert_eq!(
            config.hosts,
            [
                "deploy@web2.internal:/srv/app.git",
                "ssh://deploy@web3.internal:2222/srv/app.git",
                "/srv/web4.git",
                "/srv/app/../web5.git",
            ]
        );
        assert_eq!(config.hosts_at_once, 2);
        assert_eq!(config.host_timeout, Duration::from_secs(60));
        assert_eq!(config.switch_window, Duration::from_secs(5));
    }

    #[test]
    fn hosts_refuse_what_could_be_taken_for_an_option() {
        for (host, why) in [
            ("-oProxyCommand=touch /tmp/x", "starts with `-`"),
            ("ssh://-oProxyCommand=x/srv/app.git", "starts with `-`"),
            ("-x@web2:/srv/app.git", "starts with `-`"),
            ("https://web2/app.git", "over ssh"),
            ("ext::sh -c touch% /tmp/x", "spaces"),
            ("ssh://web2", "does not specify a path"),
            ("\"\"", "must not be empty"),
        ] {
            let err = parse_err(&format!("repository: r\nhosts:\n  - {host}\n"));
            assert!(
                err.starts_with("/srv/app/deploy.yml:3:5: ") && err.contains(why),
                "{host}: {err}"
            );
        }
    }

    #[test]
    fn hosts_refuse_duplicates_and_the_primary_itself() {
        let err = parse_err(
            "repository: r\nhosts:\n  - deploy@web2:/srv/app.git\n  - ssh://deploy@web2/srv/app.git\n",
        );
        assert!(
            err.starts_with("/srv/app/deploy.yml:4:5: ") && err.contains("listed twice"),
            "{err}"
        );
        let err =
            parse_err("repository: /srv/app.git\nhosts:\n  - /srv/web2.git\n  - /srv/app.git\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:4:5: ") && err.contains("own repository"),
            "{err}"
        );
        let err = parse_err("repository: repo.git\nhosts:\n  - repo.git/\n");
        assert!(err.contains("own repository"), "{err}");
        let err = parse_err("repository: r\nhosts: web2:/srv/app.git\n");
        assert!(err.contains("a sequence"), "{err}");
    }

    #[test]
    fn notify_takes_http_urls_and_a_format() {
        let config = parse_ok(
            "repository: r\nnotify:\n  - url: http://127.0.0.1:9000/d\n  - url: https://hooks.example/x\n    format: slack\n",
        );
        assert_eq!(config.notify.len(), 2);
        assert_eq!(config.notify[0].format, NotifyFormat::Json);
        assert_eq!(config.notify[1].format, NotifyFormat::Slack);
        assert!(parse_ok("repository: r\n").notify.is_empty());
    }

    #[test]
    fn notify_refuses_bad_urls_where_they_stand() {
        for bad in ["ftp://x/", "http://", "http:// x/", "127.0.0.1:9000"] {
            let err = parse_err(&format!("repository: r\nnotify:\n  - url: '{bad}'\n"));
            assert!(err.contains("deploy.yml:3:10"), "{bad}: {err}");
            assert!(err.contains("notify url"), "{bad}: {err}");
        }
        let err = parse_err("repository: r\nnotify:\n  - url: http://a/\n    format: xml\n");
        assert!(err.contains("deploy.yml:4:"), "{err}");
    }

    #[test]
    fn a_notify_url_shows_scheme_host_and_port_only() {
        for (url, shown) in [
            (
                "https://hooks.slack.com/services/T0/B0/XX",
                "https://hooks.slack.com/…",
            ),
            (
                "http://u:pw@127.0.0.1:9000/d?token=t#f",
                "http://127.0.0.1:9000/…",
            ),
            ("http://u@[::1]:80", "http://[::1]:80/…"),
            ("https://h.example?token=t", "https://h.example/…"),
            ("ftp://u:pw@h/secret", "ftp://h/…"),
            ("http:// u:pw@h/secret", "http://…"),
            ("u:pw@h/secret", "…"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
        let config = parse_ok("repository: r\nnotify:\n  - url: http://u:pw@h/secret?token=t\n");
        let url = &config.notify[0].url;
        assert_eq!(url.secret(), "http://u:pw@h/secret?token=t");
        assert_eq!(url.to_string(), "http://h/…");
        let debug = format!("{config:?}");
        assert!(debug.contains("NotifyUrl(http://h/…)"), "{debug}");
        for secret in ["pw", "secret", "token"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    /// A URL refused, or written in a shape `notify:` does not take, is quoted in the error
    /// (serde quotes what it could not take): redacted, at its line and column still.
    #[test]
    fn an_error_about_a_notify_entry_keeps_its_secrets() {
        let secrets = ["hookuser", "hookpw", "s3cretpath", "q5ecret"];
        let url = "//hookuser:hookpw@hooks.example/s3cretpath?token=q5ecret";
        let shown = "https://hooks.example/…";
        for (yaml, at) in [
            (
                format!("notify:\n  - url: 'ftp:{url}'\n"),
                "3:10: notify[0].url: notify url `ftp://hooks.example/…` must",
            ),
            (
                format!("notify:\n  - url: 'http:{url} x'\n"),
                "3:10: notify[0].url: notify url `http://…` needs",
            ),
            (
                format!("notify:\n  - 'https:{url}'\n"),
                &format!("3:5: notify[0]: invalid type: string \"{shown}\""),
            ),
            (
                format!("notify: 'https:{url}'\n"),
                &format!("2:9: notify: invalid type: string \"{shown}\""),
            ),
            (
                format!("notify:\n  - url: http://a/\n    'https:{url}': 1\n"),
                &format!("4:5: notify[0]: unknown field `{shown}`"),
            ),
            (
                format!("notify:\n  - url: [\"https:{url}\"]\n"),
                "3:10: notify[0].url: invalid type: sequence",
            ),
        ] {
            let err = parse_err(&format!("repository: r\n{yaml}"));
            assert!(err.contains(&format!("deploy.yml:{at}")), "{yaml}: {err}");
            for secret in secrets {
                assert!(!err.contains(secret), "{secret} in {err}");
            }
        }
    }
}
