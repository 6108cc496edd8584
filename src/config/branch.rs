//! `branch:`: the branch deployed, and the two branch names the hook keeps for itself.

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The branch atomdeploy-hook keeps at the commit a rollback would go to.
pub(crate) const ROLLBACK_BRANCH: &str = "rollback";
/// The branch a push to deploys its commit as a new build; the hook deletes it again.
pub(crate) const REPLAY_BRANCH: &str = "replay";

pub(super) fn branch_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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
