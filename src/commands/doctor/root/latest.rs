//! `latest`: a relative symlink to a complete build in `builds/`, as the switch leaves it; and
//! a freeze in effect.

use crate::commands::doctor::Finding;
use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::freeze;
use crate::state::plan::Layout;

use super::shell_path;

pub(crate) fn check(layout: &Layout, out: &mut Vec<Finding>) {
    let finding = match std::fs::symlink_metadata(&layout.latest) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => missing(layout),
        Err(err) => Finding::fail(
            "latest",
            format!("cannot read {}: {err}", layout.latest.display()),
            format!("ls -ld {}", shell_path(&layout.latest)),
        ),
        Ok(meta) if !meta.file_type().is_symlink() => Finding::fail(
            "latest",
            format!(
                "{} is a {}, not a symlink: it is no build, and every deploy refuses to \
                 replace it (it might hold someone's files)",
                layout.latest.display(),
                if meta.is_dir() { "directory" } else { "file" }
            ),
            move_aside_fix(layout),
        ),
        Ok(_) => link(layout),
    };
    out.push(finding);
    if let Some(live) = builds::live(layout)
        && builds::is_bad(layout, &live)
    {
        out.push(Finding::warn(
            "latest",
            format!(
                "the live build, builds/{live}, is marked bad (rolled back from, or it failed its \
                 health check): a rollback will not come back to it"
            ),
            format!(
                "push a fixed commit, or `atomdeploy-hook rollback --root {}`",
                shell_path(&layout.root)
            ),
        ));
    }
}

/// No `latest`: before the first deploy, as it should be; after one, the site is down.
fn missing(layout: &Layout) -> Finding {
    let count = builds::list(layout).map(|b| b.len()).unwrap_or(0);
    if count == 0 {
        return Finding::warn(
            "latest",
            format!("{} does not exist: no deploy yet", layout.latest.display()),
            "push the deploy branch (`git push production main`, or your branch)",
        );
    }
    Finding::fail(
        "latest",
        format!(
            "{} is missing although builds/ holds {count} build(s): nothing is served",
            layout.latest.display()
        ),
        switch_fix(layout),
    )
}

/// `latest` is a symlink: where to, and is that a complete build.
fn link(layout: &Layout) -> Finding {
    let target = std::fs::read_link(&layout.latest).unwrap_or_default();
    let shown = format!("{} -> {}", layout.latest.display(), target.display());
    let fail = |why: String| Finding::fail("latest", format!("{shown}: {why}"), switch_fix(layout));
    let Ok(resolved) = std::fs::canonicalize(layout.root.join(&target)) else {
        return fail("which does not exist: every request fails".into());
    };
    if resolved.starts_with(&layout.state) {
        return fail(format!(
            "{} is in the state folder (a build in the making or being removed), not in \
             builds/: the next deploy removes it",
            resolved.display()
        ));
    }
    let name = resolved
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(BuildName::parse);
    let Some(name) = name.filter(|_| resolved.parent() == Some(layout.builds.as_path())) else {
        return fail(format!(
            "{} is not a build in {}",
            resolved.display(),
            layout.builds.display()
        ));
    };
    if builds::read_meta(layout, &name).is_none() || builds::revision(layout, &name).is_none() {
        return Finding::warn(
            "latest",
            format!(
                "{shown}: builds/{name} has no record in {} or no REVISION: not made by a deploy \
                 here; `builds`, rollback and cleanup know nothing of what it holds",
                layout.meta_dir().display()
            ),
            "push the deploy branch to make a build of its own",
        );
    }
    if target.is_absolute() {
        return Finding::warn(
            "latest",
            format!(
                "{shown} is absolute: it breaks when the root is moved or seen through a bind \
                 mount or chroot (php-fpm's, a container's)"
            ),
            relink_fix(layout, &name),
        );
    }
    Finding::ok("latest", format!("{shown}, a complete build"))
}

/// The one-rename way to point `latest` at a build (what a deploy's switch does), never
/// leaving a moment without it.
fn relink_fix(layout: &Layout, name: &BuildName) -> String {
    format!(
        "cd {} && ln -s builds/{name} .latest.fix && mv -T .latest.fix latest",
        shell_path(&layout.root)
    )
}

/// [`relink_fix`] to the newest good recorded build, if there is one.
fn switch_fix(layout: &Layout) -> String {
    match newest_good(layout) {
        Some(name) => relink_fix(layout, &name),
        None => "push the deploy branch to make a build".into(),
    }
}

/// A directory or file in the way of the link: moved aside (kept, it may hold what someone
/// put there), then the link made.
fn move_aside_fix(layout: &Layout) -> String {
    let root = shell_path(&layout.root);
    match newest_good(layout) {
        Some(name) => {
            format!("cd {root} && mv latest latest.before-atomdeploy && ln -s builds/{name} latest")
        }
        None => {
            format!("cd {root} && mv latest latest.before-atomdeploy, then push the deploy branch")
        }
    }
}

fn newest_good(layout: &Layout) -> Option<BuildName> {
    builds::list(layout).ok()?.into_iter().rev().find(|b| {
        builds::read_meta(layout, b).is_some_and(|m| !m.bad) && layout.build_dir(b).is_dir()
    })
}

/// A freeze works as meant, but whoever runs doctor may not know of it.
pub(crate) fn freeze(layout: &Layout, out: &mut Vec<Finding>) {
    match freeze::read(layout) {
        Ok(None) => {}
        Ok(Some(f)) => out.push(Finding::warn(
            "freeze",
            format!(
                "deploys are frozen: \"{}\" (frozen by {} at {}); pushes are kept, not deployed",
                f.message, f.who, f.when
            ),
            format!(
                "atomdeploy-hook unfreeze --root {}",
                shell_path(&layout.root)
            ),
        )),
        Err(err) => out.push(Finding::fail(
            "freeze",
            format!("{err:#}: every deploy is refused"),
            format!(
                "atomdeploy-hook unfreeze --root {}",
                shell_path(&layout.root)
            ),
        )),
    }
}
