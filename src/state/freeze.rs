//! A deploy freeze (`atomdeploy-hook freeze --message …`): pushes to the deploy branch are
//! still received (the branch moves) but not deployed until `unfreeze`. Rollbacks still run,
//! since a freeze is there to keep the site as it is, and a rollback is how a bad live build is
//! left. Kept in `.atomdeploy/freeze.json`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::infra::clock;
use crate::infra::report::Reporter;
use crate::state::plan::Layout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Freeze {
    pub(crate) message: String,
    pub(crate) who: String,
    /// UTC, RFC 3339.
    pub(crate) when: String,
}

impl Freeze {
    /// The refusal a deploy or replay ends with; `receive/hook/mod.rs` names its step `freeze`
    /// by its first words.
    pub(crate) fn refusal(&self) -> String {
        format!(
            "deploys are frozen: \"{}\" (frozen by {} at {}); the pushed commit is kept in the \
             repository, not deployed: `atomdeploy-hook unfreeze`, then replay it",
            self.message, self.who, self.when
        )
    }
}

fn file(layout: &Layout) -> PathBuf {
    layout.state.join("freeze.json")
}

/// The freeze in effect, if any. An unreadable file is an error, not "not frozen": deploying
/// through a freeze someone set is the worse mistake.
pub(crate) fn read(layout: &Layout) -> Result<Option<Freeze>> {
    let path = file(layout);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a freeze; remove it to deploy", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Refuses when deploys are frozen. Touches nothing but the freeze file.
pub(crate) fn check(layout: &Layout) -> Result<()> {
    match read(layout)? {
        Some(freeze) => bail!("{}", freeze.refusal()),
        None => Ok(()),
    }
}

/// `atomdeploy-hook freeze`: freezes, or replaces the message of the freeze in effect.
pub(crate) fn freeze(layout: &Layout, message: &str, reporter: &Reporter) -> Result<()> {
    let message = message.trim();
    if message.is_empty() {
        bail!("--message is empty: say why deploys are frozen, the pushers will read it");
    }
    let previous = read(layout).ok().flatten();
    let freeze = Freeze {
        message: message.to_string(),
        // The person behind sudo, else the login, else the uid's name.
        who: crate::state::history::operator(),
        when: clock::utc_now_rfc3339(),
    };
    write(layout, &freeze)?;
    match previous {
        Some(old) => reporter.line(&format!(
            "atomdeploy: deploys stay frozen; message updated (was \"{}\", frozen by {} at {})",
            old.message, old.who, old.when
        )),
        None => reporter.line(&format!(
            "atomdeploy: deploys are frozen: \"{}\"; pushes are kept but not deployed, \
             rollbacks still work; `atomdeploy-hook unfreeze` to end it",
            freeze.message
        )),
    }
    Ok(())
}

/// `atomdeploy-hook unfreeze`: ends the freeze, saying whose it was.
pub(crate) fn unfreeze(layout: &Layout, reporter: &Reporter) -> Result<()> {
    let path = file(layout);
    // Read first, so that a damaged file is still removed (it blocks deploys as a freeze).
    let old = read(layout);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            reporter.line("atomdeploy: deploys were not frozen; nothing to do");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    match old {
        Ok(Some(old)) => reporter.line(&format!(
            "atomdeploy: deploys unfrozen (frozen by {} at {}: \"{}\"); the next push deploys \
             (what was pushed meanwhile: `atomdeploy-hook replay`)",
            old.who, old.when, old.message
        )),
        _ => reporter.line(&format!(
            "atomdeploy: deploys unfrozen (removed the unreadable {})",
            path.display()
        )),
    }
    Ok(())
}

/// Replaces the file in one rename: a hook reads the old freeze or the new, never half of one.
fn write(layout: &Layout, freeze: &Freeze) -> Result<()> {
    let mut text = serde_json::to_string_pretty(freeze)?;
    text.push('\n');
    crate::state::builds::replace_file(&file(layout), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::report::Output;

    #[test]
    fn freeze_refuses_updates_and_unfreeze_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let reporter = Reporter::new(Output::detect(false));
        assert!(check(&layout).is_ok());
        freeze(&layout, "release freeze until Monday", &reporter).unwrap();
        let err = check(&layout).unwrap_err().to_string();
        assert!(err.starts_with("deploys are frozen"), "{err}");
        assert!(err.contains("release freeze until Monday"), "{err}");
        freeze(&layout, "until Tuesday", &reporter).unwrap();
        assert_eq!(read(&layout).unwrap().unwrap().message, "until Tuesday");
        // No temp file left beside it.
        let names: Vec<_> = std::fs::read_dir(&layout.state).unwrap().collect();
        assert_eq!(names.len(), 1);
        unfreeze(&layout, &reporter).unwrap();
        assert!(check(&layout).is_ok());
        assert!(freeze(&layout, "  ", &reporter).is_err());
        assert!(check(&layout).is_ok());
    }

    #[test]
    fn a_damaged_freeze_file_refuses_and_unfreeze_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(&layout.state).unwrap();
        std::fs::write(file(&layout), "{ not json").unwrap();
        assert!(check(&layout).is_err());
        unfreeze(&layout, &Reporter::new(Output::detect(false))).unwrap();
        assert!(check(&layout).is_ok());
    }
}
