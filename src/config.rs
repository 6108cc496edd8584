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
    pub lock_timeout: Duration,
    pub healthcheck: Option<Healthcheck>,
    pub snapshot: SnapshotMode,
}

/// How a build gets the files of application/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Every file copied: builds share nothing.
    Copy,
    /// Files unchanged since the live build hard-linked to it, and all files made read-only.
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
    #[serde(default = "default_keep_builds", deserialize_with = "at_least_one")]
    keep_builds: usize,
    #[serde(default, deserialize_with = "shared_list")]
    shared: Vec<SharedEntry>,
    #[serde(default = "default_composer")]
    composer: ComposerSetting,
    #[serde(default, deserialize_with = "command_list")]
    before_switch: Vec<String>,
    #[serde(default, deserialize_with = "command_list")]
    after_switch: Vec<String>,
    #[serde(default = "default_lock_timeout")]
    lock_timeout: u64,
    #[serde(default, deserialize_with = "healthcheck")]
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    snapshot: SnapshotMode,
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
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| located(origin, &e))?;
    Ok(Config {
        repository: root.join(raw.repository),
        branch: raw.branch,
        keep_builds: raw.keep_builds,
        shared: raw.shared,
        composer: raw.composer.0,
        before_switch: raw.before_switch,
        after_switch: raw.after_switch,
        lock_timeout: Duration::from_secs(raw.lock_timeout),
        healthcheck: raw.healthcheck,
        snapshot: raw.snapshot,
    })
}

/// `file:line:column: message`, the form editors and terminals jump to.
fn located(origin: &Path, err: &serde_yaml::Error) -> anyhow::Error {
    let text = err.to_string();
    // serde_yaml appends " at line L column C" itself; we put the position up front instead.
    let message = match text.rfind(" at line ") {
        Some(i) if err.location().is_some() => &text[..i],
        _ => &text[..],
    };
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

/// The branch atomdeploy-hook keeps at the commit a rollback would go to.
pub const ROLLBACK_BRANCH: &str = "rollback";

fn branch_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name == ROLLBACK_BRANCH {
        return Err(de::Error::custom(
            "`rollback` is the branch atomdeploy-hook keeps at the rollback target; deploy another branch",
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
        #[serde(default = "default_retries")]
        retries: u32,
        #[serde(default = "default_interval")]
        interval: f64,
        #[serde(default = "default_timeout")]
        timeout: f64,
    }
    fn default_retries() -> u32 {
        2
    }
    fn default_interval() -> f64 {
        1.0
    }
    fn default_timeout() -> f64 {
        10.0
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
    let seconds = |name: &str, value: f64| {
        Duration::try_from_secs_f64(value).map_err(|_| {
            de::Error::custom(format!(
                "healthcheck.{name} must be a number of seconds, at least 0"
            ))
        })
    };
    let timeout = seconds("timeout", raw.timeout)?;
    if timeout.is_zero() {
        return Err(de::Error::custom("healthcheck.timeout must be more than 0"));
    }
    Ok(Some(Healthcheck {
        probe,
        retries: raw.retries,
        interval: seconds("interval", raw.interval)?,
        timeout,
    }))
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(de::Error::custom(
            "keep_builds must be at least 1 (the live build is always kept)",
        )),
        n => Ok(n),
    }
}

fn command_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let commands = Vec::<String>::deserialize(d)?;
    if commands.iter().any(|c| c.trim().is_empty()) {
        return Err(de::Error::custom("a command must not be empty"));
    }
    Ok(commands)
}

impl<'de> Deserialize<'de> for SharedEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so that serde_yaml locates the error at the entry
        // itself rather than at the list around it.
        struct EntryVisitor;
        impl Visitor<'_> for EntryVisitor {
            type Value = SharedEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path relative to the app")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SharedEntry, E> {
                SharedEntry::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_str(EntryVisitor)
    }
}

impl SharedEntry {
    fn parse(text: &str) -> Result<SharedEntry, String> {
        let is_dir = text.ends_with('/');
        let trimmed = text.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err("a shared entry must name a path inside the app".into());
        }
        let path = Path::new(trimmed);
        let mut normal = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => normal.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "shared entry `{text}` is absolute; shared paths are relative to the app"
                    ));
                }
                Component::ParentDir => {
                    return Err(format!(
                        "shared entry `{text}` contains `..`; it would resolve outside the build"
                    ));
                }
            }
        }
        if normal.as_os_str().is_empty() {
            return Err(format!("shared entry `{text}` names the app itself"));
        }
        if normal == Path::new(".git") || normal.starts_with(".git") {
            return Err(format!("shared entry `{text}` is inside .git"));
        }
        Ok(SharedEntry {
            path: normal,
            is_dir,
        })
    }
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
                    #[serde(default = "default_composer_timeout")]
                    timeout: u64,
                }
                fn default_composer_timeout() -> u64 {
                    DEFAULT_COMPOSER_TIMEOUT
                }
                let raw = RawComposer::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if raw.args.is_empty() {
                    return Err(de::Error::custom(
                        "composer.args must not be empty; use `composer: false` to skip composer",
                    ));
                }
                if raw.timeout == 0 {
                    return Err(de::Error::custom(
                        "composer.timeout must be at least 1 second",
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
        assert!(parse_err("repository: r\ncomposer: {timeout: 0}\n").contains("at least 1 second"));
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
                .contains("at least 0")
        );
        assert!(
            parse_err("repository: r\nhealthcheck: {command: x, timeout: 0}\n")
                .contains("more than 0")
        );
        let err = parse_err("repository: r\nhealthcheck:\n  comand: x\n");
        assert!(
            err.starts_with("/srv/app/deploy.yml:3:3: ") && err.contains("unknown field `comand`"),
            "{err}"
        );
    }

    #[test]
    fn the_rollback_branch_cannot_be_the_deploy_branch() {
        assert!(parse_err("repository: r\nbranch: rollback\n").contains("rollback target"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse_err("repository: r\nkeep_builds: 0\n").contains("at least 1"));
        assert!(parse_err("repository: r\nbranch: 'a..b'\n").contains("not a valid branch"));
        assert!(parse_err("repository: r\ncomposer: {args: []}\n").contains("must not be empty"));
        assert!(parse_err("repository: r\ncomposer: {arg: [x]}\n").contains("unknown field `arg`"));
        assert!(parse_err("repository: r\nbefore_switch: ['']\n").contains("must not be empty"));
        assert!(parse_err("repository: r\nlock_timeout: -1\n").contains("lock_timeout"));
    }
}
