//! `composer:`: off, on with the default arguments, or with its own `args` and `timeout`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::limits::COMPOSER_TIMEOUT;

pub const DEFAULT_COMPOSER_ARGS: &[&str] = &[
    "install",
    "--no-dev",
    "--prefer-dist",
    "--no-interaction",
    "--optimize-autoloader",
    "--no-progress",
];

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Composer {
    pub(crate) args: Vec<String>,
    /// A composer run (scripts included) that takes longer is killed and the deploy fails.
    pub(crate) timeout: Duration,
}

const DEFAULT_COMPOSER_TIMEOUT: u64 = 900;

fn default_composer_args() -> Vec<String> {
    DEFAULT_COMPOSER_ARGS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

pub(super) fn default_composer() -> ComposerSetting {
    ComposerSetting(Some(Composer {
        args: default_composer_args(),
        timeout: Duration::from_secs(DEFAULT_COMPOSER_TIMEOUT),
    }))
}

/// `composer: false`, `composer: true`, or `composer: {args: [...]}`.
pub(super) struct ComposerSetting(pub(super) Option<Composer>);

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
