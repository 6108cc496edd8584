//! `secrets`: a file in shared/ named like a secret (`.env`, `.env.*`, `auth.json`) that every
//! user of the server can read. A deploy seeds such files 0640; one the operator made with a
//! umask of 022 is 0644, and any account on the server (another site's PHP, a shell user) can
//! read the app's keys and passwords.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::commands::doctor::Finding;
use crate::infra::perms::{is_secret_name, secret_mode};
use crate::state::plan::{Layout, Plan};

use super::shell_path;

const CHECK: &str = "secrets";

pub(crate) fn check(layout: &Layout, plan: Option<&Plan>, out: &mut Vec<Finding>) {
    for path in candidates(layout, plan) {
        // A symlink is the operator's (a secret kept elsewhere): its target is not shared/'s.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o004 == 0 {
            out.push(Finding::ok(
                CHECK,
                format!(
                    "{} is not readable by others (mode {mode:o})",
                    path.display()
                ),
            ));
            continue;
        }
        out.push(Finding::warn(
            CHECK,
            format!(
                "{} is readable by every user of the server (mode {mode:o}): the secrets in it \
                 are too",
                path.display()
            ),
            format!(
                "`chmod {:o} {}` (the group, the web server's with install --web-user, keeps \
                 reading it)",
                secret_mode(mode),
                shell_path(&path)
            ),
        ));
    }
}

/// The files named like secrets directly in shared/, and the `shared:` file entries named so
/// (`config/.env`, say), each once. Not the whole tree: uploads may be huge.
fn candidates(layout: &Layout, plan: Option<&Plan>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(&layout.shared)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_secret_name(&e.file_name()))
        .map(|e| e.path())
        .collect();
    let entries = plan.map(|p| p.config.shared.as_slice()).unwrap_or_default();
    for entry in entries {
        let named = entry.path.file_name().is_some_and(is_secret_name);
        let path = layout.shared.join(&entry.path);
        if named && !entry.is_dir && !found.contains(&path) {
            found.push(path);
        }
    }
    found.sort();
    found
}
