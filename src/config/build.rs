//! `build:`: the front-end build step, its commands and when each runs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::limits::BUILD_TIMEOUT;
use super::paths::input_list;
use super::visit::NonEmpty;

/// The front-end build step (`build:`): commands run with `sh -c` in application/ after
/// composer, so that their caches (node_modules/) persist there between deploys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Build {
    pub(crate) commands: Vec<BuildCommand>,
    /// The step runs only when a path of the commit under one of these changed since its last
    /// successful run; `None`: on every deploy.
    pub(crate) inputs: Option<Vec<PathBuf>>,
    /// Limit of each command, with everything it started.
    pub(crate) timeout: Duration,
}

/// One command of the build step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildCommand {
    pub(crate) run: String,
    /// When the step runs, this command runs only if a path under these changed since it last
    /// succeeded (`npm ci`, which empties node_modules/, only for a changed lockfile).
    pub(crate) inputs: Option<Vec<PathBuf>>,
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
