//! deploy.yml → a validated [`Config`].
//!
//! Read in two passes. The first deserializes the file into the raw document (`raw.rs`); every
//! check that looks at one value runs inside it, so that serde_yaml places a refusal at the
//! value's line and column. The second looks across entries (a path in two lists, a host
//! listed twice, the server's own repository among its hosts, a preflight with no address)
//! and points its refusal at a `Spot`, a key or an entry of the file, whose line and column
//! `raw::position` then finds. Each concern of the file has its own module under `config/`;
//! serde_yaml is used by `raw` alone, and no state outlives one parse.

mod branch;
mod build;
mod commands;
mod composer;
mod fingerprint;
mod health;
mod hosts;
mod limits;
mod notify;
mod paths;
mod raw;
mod visit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Deserialize;

pub(crate) use branch::{REPLAY_BRANCH, ROLLBACK_BRANCH};
pub(crate) use build::{Build, BuildCommand};
pub(crate) use composer::Composer;
pub use composer::DEFAULT_COMPOSER_ARGS;
pub(crate) use health::{FpmAddress, Healthcheck, Preflight, Probe};
pub(crate) use notify::{NotifyFormat, NotifyTarget, redacted_url};
pub(crate) use paths::{SharedEntry, same_path};
pub(crate) use raw::yaml_scalar;

use paths::PathList;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The bare repository, absolute (relative paths in the file are taken from the deploy root).
    pub(crate) repository: PathBuf,
    pub(crate) branch: String,
    pub(crate) keep_builds: usize,
    pub(crate) shared: Vec<SharedEntry>,
    /// `None` when composer is switched off.
    pub(crate) composer: Option<Composer>,
    pub(crate) before_switch: Vec<String>,
    pub(crate) after_switch: Vec<String>,
    /// Limit of each before_switch and after_switch command (its children included).
    pub(crate) command_timeout: Duration,
    /// Zero: give up at once when another deploy holds the lock.
    pub(crate) lock_timeout: Duration,
    pub(crate) healthcheck: Option<Healthcheck>,
    pub(crate) snapshot: SnapshotMode,
    /// `app_dir:` the directory of the commit that is the app (a monorepo's `backend/`),
    /// normalized; empty for the whole commit (read through it: `state/app_tree.rs`).
    pub(crate) app_dir: PathBuf,
    /// Directories of the app (normalized, relative) whose files the builds still on disk
    /// lend to each new build (see `steps/assets.rs`).
    pub(crate) keep_assets: Vec<PathBuf>,
    /// The php-fpm pool whose opcache is reset after every switch (`reset_opcache:`).
    pub(crate) reset_opcache: Option<FpmAddress>,
    /// The front-end build step (`build:`), run in application/ after composer.
    pub(crate) build: Option<Build>,
    /// Paths kept in application/ (and through checkouts) but never copied into a build.
    pub(crate) exclude: Vec<PathBuf>,
    /// The other web servers of a group (`hosts:`), as git push takes them; empty on a single
    /// server. The group deploy is in `src/receive/group/primary.rs`.
    pub(crate) hosts: Vec<String>,
    /// Hosts prepared at once.
    pub(crate) hosts_at_once: usize,
    /// Limit of one host's prepare (its `git push`, with everything it started).
    pub(crate) host_timeout: Duration,
    /// How long after the first server of a group switched every other one must have: past
    /// it, the group goes back rather than serve two versions for longer (`switch_window:`).
    pub(crate) switch_window: Duration,
    /// `release:` commands run once per deploy in the new build, after before_switch and
    /// right before the switch (on a group's primary only, once every host has prepared).
    pub(crate) release: Vec<String>,
    /// `notify:` webhooks told of each deploy, rollback and failure (see `src/receive/notify.rs`).
    pub(crate) notify: Vec<NotifyTarget>,
    /// Requests sent to php-fpm with the new build as document root before the switch
    /// (`preflight:`, see `steps/preflight.rs`).
    pub(crate) preflight: Option<Preflight>,
}

/// How a build gets the files of application/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SnapshotMode {
    /// Every file copied: builds share nothing.
    Copy,
    /// Files of the live build hard-linked into the next one while application/ still has the
    /// very file each came from and it is still what was placed (see `manifest.rs`); all
    /// files made read-only.
    /// The default: 2-3 times faster deploys and a fraction of the disk (see BENCHMARKS.md).
    #[default]
    Link,
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
    let raw = raw::read(text).map_err(|err| {
        let message = notify::without_secrets(&err.message, raw::strings_under(text, "notify"));
        located(origin, err.position, &message)
    })?;
    let refused = |refusal: Refusal| refusal.located(origin, text);
    if let Some(refusal) = across_entries(text, &raw) {
        return Err(refused(refusal));
    }
    let repository = root.join(&raw.repository);
    let hosts = hosts::resolve(root, &repository, raw.hosts).map_err(refused)?;
    let preflight =
        health::preflight(raw.preflight, raw.reset_opcache.as_ref()).map_err(refused)?;
    Ok(Config {
        repository,
        branch: raw.branch,
        keep_builds: raw.keep_builds,
        shared: raw.shared.into_iter().map(|entry| entry.value).collect(),
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
        exclude: raw.exclude.into_iter().map(|entry| entry.value).collect(),
        hosts,
        hosts_at_once: raw.hosts_at_once,
        host_timeout: Duration::from_secs(raw.host_timeout),
        switch_window: Duration::from_secs(raw.switch_window),
        release: raw.release,
        notify: raw.notify,
        preflight,
    })
}

/// The checks that compare entries with one another, which no single value's check can make.
fn across_entries(text: &str, raw: &raw::RawConfig) -> Option<Refusal> {
    // Without exclude or keep_assets entries nothing can overlap: the file is not read again.
    if !raw.exclude.is_empty() || !raw.keep_assets.is_empty() {
        let mut order = PathList::ALL;
        // A list left out has no entries: where it sorts does not matter.
        order.sort_by_key(|list| raw::position(text, Spot::Key(list.key())));
        let refusal = paths::overlapping(&order, &raw.shared, &raw.exclude, &raw.keep_assets);
        if refusal.is_some() {
            return refusal;
        }
    }
    hosts::listed_twice(&raw.hosts)
}

/// Where in deploy.yml a refusal of the pass after reading points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    /// A top-level key itself (`preflight:`).
    Key(&'static str),
    /// The entry at an index of the list under a top-level key.
    Entry(&'static str, usize),
}

/// A refusal of the pass after reading.
struct Refusal {
    spot: Spot,
    message: String,
    /// Whether the message is prefixed with its spot (`hosts[1]: `), the way serde_yaml
    /// prefixes the refusals of the first pass.
    with_path: bool,
}

impl Refusal {
    fn at(spot: Spot, message: impl Into<String>) -> Refusal {
        Refusal {
            spot,
            message: message.into(),
            with_path: false,
        }
    }

    fn at_path(spot: Spot, message: impl Into<String>) -> Refusal {
        Refusal {
            with_path: true,
            ..Refusal::at(spot, message)
        }
    }

    fn located(self, origin: &Path, text: &str) -> anyhow::Error {
        let path = match (self.with_path, self.spot) {
            (false, _) => String::new(),
            (true, Spot::Key(key)) => format!("{key}: "),
            (true, Spot::Entry(key, index)) => format!("{key}[{index}]: "),
        };
        let message = format!("{path}{}", self.message);
        located(origin, raw::position(text, self.spot), &message)
    }
}

/// `file:line:column: message`, the form editors and terminals jump to.
fn located(origin: &Path, position: Option<(usize, usize)>, message: &str) -> anyhow::Error {
    match position {
        Some((line, column)) => anyhow!("{}:{line}:{column}: {message}", origin.display()),
        None => anyhow!("{}: {message}", origin.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limits::{Limit, NUMBERS};

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
