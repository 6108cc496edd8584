//! The raw document: deploy.yml as serde reads it into [`RawConfig`], each value checked
//! where it stands so that serde_yaml places a refusal at its line and column. The one module
//! that uses serde_yaml: it also finds where an entry stands for the refusals of the pass
//! after reading ([`position`]), and writes the scalars `install` puts into a new deploy.yml.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::SnapshotMode;
use super::Spot;
use super::branch::branch_name;
use super::build::Build;
use super::commands::{command_list, release_list};
use super::composer::{ComposerSetting, default_composer};
use super::health::{
    FpmAddress, Healthcheck, RawPreflight, fpm_address, healthcheck, read_preflight,
};
use super::hosts::{
    default_host_timeout, default_hosts_at_once, default_switch_window, host_list, host_timeout,
    hosts_at_once, switch_window,
};
use super::limits::{COMMAND_TIMEOUT, KEEP_BUILDS, LOCK_TIMEOUT};
use super::notify::NotifyTarget;
use super::paths::{SharedEntry, Written, app_dir, exclude_list, keep_assets_list, shared_list};

const DEFAULT_COMMAND_TIMEOUT: u64 = 900;

/// The keys of deploy.yml, each checked on its own where it stands, with the defaults of the
/// keys left out. Shared and exclude entries keep their text as written, which the refusals
/// of the pass after reading quote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) repository: PathBuf,
    #[serde(default = "default_branch", deserialize_with = "branch_name")]
    pub(super) branch: String,
    #[serde(default = "default_keep_builds", deserialize_with = "keep_builds")]
    pub(super) keep_builds: usize,
    #[serde(default, deserialize_with = "shared_list")]
    pub(super) shared: Vec<Written<SharedEntry>>,
    #[serde(default = "default_composer")]
    pub(super) composer: ComposerSetting,
    #[serde(default, deserialize_with = "command_list")]
    pub(super) before_switch: Vec<String>,
    #[serde(default, deserialize_with = "command_list")]
    pub(super) after_switch: Vec<String>,
    #[serde(
        default = "default_command_timeout",
        deserialize_with = "command_timeout"
    )]
    pub(super) command_timeout: u64,
    #[serde(default = "default_lock_timeout", deserialize_with = "lock_timeout")]
    pub(super) lock_timeout: u64,
    #[serde(default, deserialize_with = "healthcheck")]
    pub(super) healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub(super) snapshot: SnapshotMode,
    #[serde(default, deserialize_with = "app_dir")]
    pub(super) app_dir: PathBuf,
    #[serde(default, deserialize_with = "keep_assets_list")]
    pub(super) keep_assets: Vec<PathBuf>,
    #[serde(default, deserialize_with = "fpm_address")]
    pub(super) reset_opcache: Option<FpmAddress>,
    #[serde(default)]
    pub(super) build: Option<Build>,
    #[serde(default, deserialize_with = "exclude_list")]
    pub(super) exclude: Vec<Written<PathBuf>>,
    #[serde(default, deserialize_with = "host_list")]
    pub(super) hosts: Vec<String>,
    #[serde(default = "default_hosts_at_once", deserialize_with = "hosts_at_once")]
    pub(super) hosts_at_once: usize,
    #[serde(default = "default_host_timeout", deserialize_with = "host_timeout")]
    pub(super) host_timeout: u64,
    #[serde(default = "default_switch_window", deserialize_with = "switch_window")]
    pub(super) switch_window: u64,
    #[serde(default, deserialize_with = "release_list")]
    pub(super) release: Vec<String>,
    #[serde(default)]
    pub(super) notify: Vec<NotifyTarget>,
    #[serde(default, deserialize_with = "read_preflight")]
    pub(super) preflight: Option<RawPreflight>,
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

fn keep_builds<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    KEEP_BUILDS.whole(d).map(|n| n as usize)
}
fn lock_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    LOCK_TIMEOUT.whole(d)
}
fn command_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    COMMAND_TIMEOUT.whole(d)
}

/// A refusal of the reading itself: its message, and where it stands when serde_yaml knows.
pub(super) struct YamlError {
    /// Line and column, from 1.
    pub(super) position: Option<(usize, usize)>,
    pub(super) message: String,
}

/// Reads the document; the first refusal met, in the order of the file, ends it.
pub(super) fn read(text: &str) -> Result<RawConfig, YamlError> {
    serde_yaml::from_str(text).map_err(|err| {
        let position = err.location().map(|at| (at.line(), at.column()));
        let shown = err.to_string();
        // serde_yaml's Display ends with where the error stands; the position goes up front
        // instead, so exactly that ending is cut off (a syntax error keeps the rest of what
        // libyaml says, the construct it was reading included).
        let message = match position {
            Some((line, column)) => shown
                .strip_suffix(&format!(" at line {line} column {column}"))
                .unwrap_or(&shown)
                .to_string(),
            None => shown,
        };
        YamlError { position, message }
    })
}

/// Where `spot` stands in `text` (line and column, from 1), for a refusal found once the
/// whole document is read. serde_yaml keeps no positions in what it returns, only in its
/// errors: so the document is read again by a walker that refuses exactly that key or entry,
/// and the error tells where. `None` when the document holds no such spot.
pub(super) fn position(text: &str, spot: Spot) -> Option<(usize, usize)> {
    let err = FindSpot(spot)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    err.location().map(|at| (at.line(), at.column()))
}

/// Walks the top-level map to the key or entry of its spot, skipping everything else.
struct FindSpot(Spot);

impl<'de> DeserializeSeed<'de> for FindSpot {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindSpot {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the map of deploy.yml")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let (key, entry) = match self.0 {
            Spot::Key(key) => (key, None),
            Spot::Entry(key, index) => (key, Some(index)),
        };
        while let Some(found) = map.next_key_seed(FindKey {
            key,
            refuse: entry.is_none(),
        })? {
            match entry {
                Some(index) if found => map.next_value_seed(FindEntry(index))?,
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }
}

/// A key of the top-level map: whether it is the one sought, refused when the spot is the
/// key itself.
struct FindKey {
    key: &'static str,
    refuse: bool,
}

impl<'de> DeserializeSeed<'de> for FindKey {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FindKey {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match key == self.key {
            true if self.refuse => Err(E::custom("here")),
            found => Ok(found),
        }
    }
}

/// The list under the key sought: its entry at the index is refused.
struct FindEntry(usize);

impl<'de> DeserializeSeed<'de> for FindEntry {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FindEntry {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.0 {
            seq.next_element::<IgnoredAny>()?;
        }
        seq.next_element_seed(Refuse)?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Refuses whatever value it is given, so that serde_yaml places the error at that value.
struct Refuse;

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Refuse {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Every visit_* left to its default refuses the value as of the wrong type.
        f.write_str("nothing")
    }
}

/// Every string under the top-level `key`, mapping keys included (serde quotes an unknown
/// field's name); none when the text is not YAML.
pub(super) fn strings_under(text: &str, key: &str) -> Vec<String> {
    let mut strings = Vec::new();
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        strings_in(&doc[key], &mut strings);
    }
    strings
}

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

/// `value` as a YAML scalar, quoted when it must be, for a line of deploy.yml written by
/// `install`.
pub(crate) fn yaml_scalar(value: &str) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(value)?.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spot_is_found_where_it_stands_in_any_style_and_nowhere_else() {
        let block =
            "repository: r\nbuild: {hosts: [nested]}\nhosts:\n  - web2:/a.git\n  - web3:/a.git\n";
        assert_eq!(position(block, Spot::Key("hosts")), Some((3, 1)));
        assert_eq!(position(block, Spot::Entry("hosts", 0)), Some((4, 5)));
        assert_eq!(position(block, Spot::Entry("hosts", 1)), Some((5, 5)));
        let flow = "{repository: r, hosts: [web2:/a.git, 'web3:/a.git'], preflight: {}}\n";
        assert_eq!(position(flow, Spot::Entry("hosts", 1)), Some((1, 38)));
        assert_eq!(position(flow, Spot::Key("preflight")), Some((1, 54)));
        // An alias stands where its anchor does.
        let alias = "repository: r\nshared: &paths [a, b]\nexclude: *paths\n";
        assert_eq!(position(alias, Spot::Entry("exclude", 1)), Some((2, 20)));
        let entry = "repository: r\nnotify:\n  - url: http://a/\n    format: slack\n";
        assert_eq!(position(entry, Spot::Entry("notify", 0)), Some((3, 5)));
        for absent in [
            Spot::Key("shared"),
            Spot::Entry("shared", 0),
            Spot::Entry("hosts", 2),
        ] {
            assert_eq!(position(block, absent), None, "{absent:?}");
        }
    }

    #[test]
    fn a_refusal_of_the_reading_says_its_position_once() {
        let err = read("repository: r\nkeep_builds: many\n").err().unwrap();
        assert_eq!(err.position, Some((2, 14)));
        assert!(
            err.message.starts_with("keep_builds: ") && !err.message.contains(" at line "),
            "{}",
            err.message
        );
    }
}
