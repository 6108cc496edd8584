//! The bare repository: its post-receive hook must run this root's deploys, and git must
//! check the objects pushed into it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::commands::doctor::Finding;
use crate::commands::install::HOOK_MARKER;
use crate::receive::hook::file::{Invocation, invocations};
use crate::state::plan::Plan;

use super::{install_fix, shell_path};

pub(crate) fn check(plan: &Plan, out: &mut Vec<Finding>) {
    let path = &plan.config.repository;
    match Repository::open_bare(path) {
        Ok(repo) => {
            out.push(hook(plan, &repo));
            out.push(fsck(&repo));
        }
        Err(err) => {
            out.push(Finding::fail(
                "hook",
                format!(
                    "the repository deploy.yml names, {}, is not a bare git repository: {}",
                    path.display(),
                    err.message()
                ),
                install_fix(plan),
            ));
            out.push(Finding::warn(
                "fsck",
                "not checked: no repository",
                install_fix(plan),
            ));
        }
    }
}

/// Where git looks for the hook: `core.hooksPath` when set (relative to the repository),
/// `hooks/` otherwise.
fn hook_path(repo: &Repository) -> PathBuf {
    let dir = repo
        .config()
        .and_then(|c| c.get_path("core.hooksPath"))
        .map(|p| repo.path().join(p))
        .unwrap_or_else(|_| repo.path().join("hooks"));
    dir.join("post-receive")
}

fn hook(plan: &Plan, repo: &Repository) -> Finding {
    let path = hook_path(repo);
    let fail = |message: String| Finding::fail("hook", message, install_fix(plan));
    let meta = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return fail(format!("{} is not a file", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!(
                "{} is missing: pushes are stored but never deployed",
                path.display()
            ));
        }
        Err(err) => return fail(format!("cannot read {}: {err}", path.display())),
    };
    if meta.permissions().mode() & 0o100 == 0 {
        return Finding::fail(
            "hook",
            format!(
                "{} is not executable by its owner: git skips it, pushes are stored but never \
                 deployed",
                path.display()
            ),
            format!("chmod u+x {}", shell_path(&path)),
        );
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => return fail(format!("cannot read {}: {err}", path.display())),
    };
    let calls = invocations(&text);
    let Some(binary) = calls_for(&calls, &plan.layout.root, repo.path()) else {
        let roots: Vec<String> = calls
            .iter()
            .flat_map(|c| c.roots.iter().map(|r| r.display().to_string()))
            .collect();
        return fail(format!(
            "{} does not deploy into {} (it names {}): pushes deploy elsewhere or nowhere",
            path.display(),
            plan.layout.root.display(),
            if roots.is_empty() {
                "no `post-receive --root`".to_string()
            } else {
                roots.join(", ")
            }
        ));
    };
    if !is_executable_file(&binary) {
        return fail(format!(
            "{} runs {}, which is missing or not executable: every push fails to deploy",
            path.display(),
            binary.display()
        ));
    }
    if !text.contains(HOOK_MARKER) {
        // A hook of the operator's own that calls ours is allowed (install says so).
        return Finding::ok(
            "hook",
            format!(
                "{} (not written by install) runs {} post-receive for {}",
                path.display(),
                binary.display(),
                plan.layout.root.display()
            ),
        );
    }
    Finding::ok(
        "hook",
        format!(
            "{} runs {} for {}",
            path.display(),
            binary.display(),
            plan.layout.root.display()
        ),
    )
}

fn fsck(repo: &Repository) -> Finding {
    let config = repo.config();
    // git falls back on transfer.fsckObjects when receive.fsckObjects is unset.
    let on = config.as_ref().ok().and_then(|c| {
        c.get_bool("receive.fsckObjects")
            .or_else(|_| c.get_bool("transfer.fsckObjects"))
            .ok()
    });
    // Without the trailing `/` libgit2 gives a repository's path, as the operator wrote it.
    let repo_path: PathBuf = repo.path().components().collect();
    if on == Some(true) {
        return Finding::ok(
            "fsck",
            format!("receive.fsckObjects is on in {}", repo_path.display()),
        );
    }
    Finding::fail(
        "fsck",
        format!(
            "receive.fsckObjects is {} in {}: git stores pushed objects without checking them \
             (trees with `..` or `.git` paths among them); the deploy then refuses them late",
            if on.is_none() { "unset" } else { "off" },
            repo_path.join("config").display()
        ),
        format!(
            "git --git-dir {} config receive.fsckObjects true",
            shell_path(&repo_path)
        ),
    )
}

/// The program of the hook's invocation that names `root` (by its canonical path) among its
/// `--root` arguments; one hook may serve several roots. git runs a bare repository's hook in
/// the repository (`cwd`), with its PATH: relative paths are taken from there, a bare name
/// from PATH.
fn calls_for(calls: &[Invocation], root: &Path, cwd: &Path) -> Option<PathBuf> {
    let call = calls.iter().find(|c| {
        c.roots
            .iter()
            .any(|r| std::fs::canonicalize(cwd.join(r)).is_ok_and(|r| r == root))
    })?;
    let program = &call.program;
    Some(if program.components().count() == 1 {
        which::which(program).unwrap_or_else(|_| program.clone())
    } else {
        cwd.join(program)
    })
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
