//! Hosts left out of the group's deploys for an emergency (`atomdeploy-hook hosts exclude`),
//! kept in `.atomdeploy/hosts-excluded.json` with who left them out, when and why.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::infra::clock;
use crate::state::builds;
use crate::state::plan::Layout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Exclusion {
    /// As deploy.yml lists it (local paths made absolute).
    pub(crate) url: String,
    pub(crate) when: String,
    pub(crate) who: String,
    pub(crate) why: String,
}

impl Exclusion {
    /// Shown in every deploy while the exclusion lasts.
    pub(crate) fn warning(&self) -> String {
        format!(
            "deploying without {} (excluded {} by {}: {})",
            self.url, self.when, self.who, self.why
        )
    }
}

fn file(layout: &Layout) -> PathBuf {
    layout.state.join("hosts-excluded.json")
}

/// The exclusions in effect; none when the file is missing. A file that cannot be read is an
/// error: deploying to a host someone meant to leave out would be worse than not deploying.
pub(crate) fn read(layout: &Layout) -> Result<Vec<Exclusion>> {
    let path = file(layout);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a list of exclusions", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the file in one rename, so that a deploy reading it sees the old list or the new.
pub(crate) fn write(layout: &Layout, exclusions: &[Exclusion]) -> Result<()> {
    let path = file(layout);
    if exclusions.is_empty() {
        return builds::remove_file_if_present(&path);
    }
    let mut text = serde_json::to_string_pretty(exclusions)?;
    text.push('\n');
    builds::replace_file(&path, text.as_bytes())
}

/// Reads the list, changes it with `change` and writes it back, holding a lock of its own
/// (`hosts-excluded.lock`) meanwhile, so that two `hosts exclude`/`include` at once cannot
/// lose one another's change. Not the deploy lock: a deploy stuck on a dead host holds that
/// for up to `host_timeout`, and leaving the host out is what the operator needs then.
pub(crate) fn update<T>(
    layout: &Layout,
    change: impl FnOnce(&mut Vec<Exclusion>) -> Result<T>,
) -> Result<T> {
    use fs2::FileExt;
    let path = layout.state.join("hosts-excluded.lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Held for a read and a write: never long.
    lock.lock_exclusive()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let mut list = read(layout)?;
    let out = change(&mut list)?;
    write(layout, &list)?;
    Ok(out)
}

/// Who ran the command: the login name, and the ssh client's address when there is one.
pub(crate) fn who() -> String {
    let user = crate::state::history::operator();
    match std::env::var("SSH_CLIENT") {
        Ok(client) => match client.split_whitespace().next() {
            Some(address) => format!("{user} from {address}"),
            None => user,
        },
        Err(_) => user,
    }
}

pub(crate) fn now() -> String {
    clock::utc_now_rfc3339()
}
