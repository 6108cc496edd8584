//! A deploy root's control branches: `rollback` and `replay` can mean one root only, so they
//! stay its repository's first root's (nothing changes for a repository with one root) and
//! each root added later (environments: see `receive/hook/several.rs`) gets `rollback-<branch>` and
//! `replay-<branch>`, recorded by `install` in its state folder, where the CLI's
//! `rollback --root` finds them without the hook.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::config::{REPLAY_BRANCH, ROLLBACK_BRANCH};
use crate::state::plan::Layout;

/// The branches that mean something to one deploy root: the one it deploys, and the two it
/// controls (see `receive/hook/several.rs`: a repository's first root has `rollback` and `replay`,
/// each further root `rollback-<branch>` and `replay-<branch>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Branches {
    pub(crate) deploy: String,
    pub(crate) rollback: String,
    pub(crate) replay: String,
}

impl Branches {
    /// A repository's first (or only) root's: `rollback` and `replay`.
    pub(crate) fn first(deploy: &str) -> Branches {
        Branches {
            deploy: deploy.to_string(),
            rollback: ROLLBACK_BRANCH.to_string(),
            replay: REPLAY_BRANCH.to_string(),
        }
    }

    /// Whether `refname` is one of these three branches (deleted or not), or a tag named
    /// like a control branch (the hook deletes such a tag and refuses the push).
    pub(crate) fn claims(&self, refname: &[u8]) -> bool {
        [&self.deploy, &self.rollback, &self.replay]
            .iter()
            .any(|b| refname == format!("refs/heads/{b}").as_bytes())
            || self.is_control_tag(refname)
    }

    /// `refs/tags/rollback` or `refs/tags/replay` (or a further root's names): what git makes
    /// of `git push production v1.0:replay`, since a tag as the source makes the new remote
    /// ref a tag.
    pub(crate) fn is_control_tag(&self, refname: &[u8]) -> bool {
        [&self.rollback, &self.replay]
            .iter()
            .any(|b| !b.is_empty() && refname == format!("refs/tags/{b}").as_bytes())
    }
}

/// In a root's state folder: its own control branches, when it is not its repository's first
/// root. Two lines, `rollback: <name>` and `replay: <name>`.
const CONTROL_FILE: &str = "control-branches";

fn control_file(layout: &Layout) -> PathBuf {
    layout.state.join(CONTROL_FILE)
}

/// The branches of the root at `layout`, which deploys `deploy`.
pub(crate) fn branches(layout: &Layout, deploy: &str) -> Result<Branches> {
    let file = control_file(layout);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Branches::first(deploy));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut branches = Branches {
        deploy: deploy.to_string(),
        rollback: String::new(),
        replay: String::new(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, name) = line.split_once(':').unwrap_or((line, ""));
        let name = name.trim();
        let slot = match key.trim() {
            "rollback" => &mut branches.rollback,
            "replay" => &mut branches.replay,
            _ => bail!(
                "{}: `{line}` is not `rollback: <branch>` or `replay: <branch>`",
                file.display()
            ),
        };
        if !git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
            bail!("{}: `{name}` is not a valid branch name", file.display());
        }
        *slot = name.to_string();
    }
    if branches.rollback.is_empty() || branches.replay.is_empty() {
        bail!(
            "{} must name both a rollback and a replay branch",
            file.display()
        );
    }
    Ok(branches)
}

/// The control branches a root added to a repository that has others gets.
pub(crate) fn further_root(deploy: &str) -> Branches {
    Branches {
        deploy: deploy.to_string(),
        rollback: format!("{}-{deploy}", crate::config::ROLLBACK_BRANCH),
        replay: format!("{}-{deploy}", crate::config::REPLAY_BRANCH),
    }
}

/// Records `branches` as the root's own, in `.atomdeploy/control-branches`.
pub(crate) fn record_branches(layout: &Layout, branches: &Branches) -> Result<()> {
    let text = format!(
        "rollback: {}\nreplay: {}\n",
        branches.rollback, branches.replay
    );
    crate::state::builds::replace_file(&control_file(layout), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_further_root_gets_branches_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(branches(&layout, "main").unwrap(), Branches::first("main"));
        record_branches(&layout, &further_root("staging")).unwrap();
        let own = branches(&layout, "staging").unwrap();
        assert_eq!(
            (own.rollback.as_str(), own.replay.as_str()),
            ("rollback-staging", "replay-staging")
        );
        fs::write(control_file(&layout), "rollback: a..b\nreplay: x\n").unwrap();
        assert!(branches(&layout, "staging").is_err());
    }
}
