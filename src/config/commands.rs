//! The shell commands of deploy.yml: `before_switch:`, `after_switch:` and `release:`.

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::visit::Checked;

pub(super) fn command_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let commands = Vec::<String>::deserialize(d)?;
    if commands.iter().any(|c| c.trim().is_empty()) {
        return Err(de::Error::custom("a command must not be empty"));
    }
    Ok(commands)
}

/// `release:` commands, each refused at its own line and column when empty.
pub(super) fn release_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
