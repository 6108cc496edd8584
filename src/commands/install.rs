//! `atomdeploy-hook install`: a bare repository, its post-receive hook and a deploy root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::Repository;

use crate::infra::fsutil;
use crate::infra::perms::{self, WebUser};
use crate::infra::quote::{quote_if_needed, sh_quote};
use crate::receive::hook::file as hook_file;
use crate::state::control_branches;
use crate::state::control_branches::Branches;
use crate::state::plan::{Layout, Plan};

const HOOK_TEMPLATE: &str = include_str!("../../hooks/post-receive");
const CONFIG_TEMPLATE: &str = include_str!("../../deploy.yml");
/// Identifies a hook we wrote, so that reinstalling never replaces somebody else's hook.
pub(crate) const HOOK_MARKER: &str = "installed by `atomdeploy-hook install`";

pub(crate) struct Install<'a> {
    pub(crate) repo: &'a Path,
    pub(crate) root: &'a Path,
    pub(crate) branch: &'a str,
    pub(crate) url: Option<&'a str>,
    /// `--web-user`: give shared/ to this user's group (see [`share_with_web_user`]).
    pub(crate) web_user: Option<&'a str>,
}

/// Branches the hook gives a meaning of its own: `rollback` (kept at the rollback target,
/// deleting it rolls back) and `replay`, reserved for the same kind of use.
const RESERVED_BRANCHES: &[&str] = &["rollback", "replay"];

pub(crate) fn install(args: &Install) -> Result<()> {
    refuse_names(args)?;
    let remote_url = remote_url(args.url, args.repo)?;
    // Looked up before anything exists, so that a wrong name changes nothing.
    let web_user = args
        .web_user
        .map(|name| perms::prepare(args.root, &Layout::new(args.root).shared, name))
        .transpose()?;

    let _lock = lock_repository(args.repo)?;
    refuse_unwritable_parents(args)?;
    let repaired = refuse_other_repository(args.root, args.repo, args.branch)?;
    let place = place_root(args)?;
    fs::create_dir_all(args.root)
        .with_context(|| format!("cannot create {}", args.root.display()))?;
    let root = fs::canonicalize(args.root)?;
    let layout = Layout::new(&root);
    for dir in [
        &layout.application,
        &layout.builds,
        &layout.shared,
        &layout.state,
    ] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let repo_path = open_or_init_bare(args.repo, args.branch)?;
    crate::state::refs::hide_internal_refs(&Repository::open_bare(&repo_path)?)?;
    turn_on_fsck(&repo_path)?;
    let mut roots = place.others.clone();
    roots.insert(place.position.min(roots.len()), root.clone());
    write_hook(&repo_path, &roots)?;
    if place.record {
        control_branches::record_branches(&layout, &place.branches)?;
    }

    if let Some(text) = repaired {
        write_atomically(&layout.config_file, &text, 0o644)?;
        println!(
            "repaired {}: its branch was a reserved name; it is now `{}`",
            layout.config_file.display(),
            args.branch
        );
    } else if layout.config_file.exists() {
        println!("kept the existing {}", layout.config_file.display());
    } else {
        let text = config_text(&repo_path, args.branch)?;
        write_atomically(&layout.config_file, &text, 0o644)?;
        println!("wrote {}", layout.config_file.display());
    }
    // Whatever deploy.yml holds now, say at once if a push would fail on it.
    Plan::load(&root)?;
    if let Some((owner, count)) = crate::infra::owner::give_installed(&root, &repo_path)? {
        println!(
            "gave the {count} entries install made or rewrote to {owner}, the owner of {}, \
             whom pushes run as",
            root.display()
        );
    }
    if let Some(web) = &web_user {
        share_with_web_user(&layout, web)?;
    }
    if let Some(note) = web_user_note(&layout, &repo_path, web_user.as_ref()) {
        println!("{note}");
    }

    println!(
        "installed: pushes to {} deploy into {}",
        repo_path.display(),
        root.display()
    );
    print_roots(&repo_path, &roots, &place.branches);
    println!("on your machine, run:");
    println!("    git remote add production {remote_url}");
    println!("    git push production {}", args.branch);
    print_exit_status_setup(&repo_path)?;
    Ok(())
}

/// Installs adding roots to one repository each read the hook's roots (and which root is
/// first) and write them back with their own: one at a time, or all roots but the last
/// writer's are lost. The lock is a flock on the folder holding the repository (which may not
/// exist yet): it leaves no file behind and the kernel frees it however install ends. When
/// that folder does not exist either, the nearest one that does is locked, and the folder
/// looked for again once the lock is held, in case the install that held it made it.
fn lock_repository(repo: &Path) -> Result<fs::File> {
    use fs2::FileExt;
    let repo = std::path::absolute(repo)?;
    let nearest = || {
        repo.ancestors()
            .skip(1)
            .find(|dir| dir.is_dir())
            .unwrap_or(Path::new("/"))
            .to_path_buf()
    };
    loop {
        let dir = nearest();
        let file =
            fs::File::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
        file.lock_exclusive()
            .with_context(|| format!("cannot lock {}", dir.display()))?;
        if nearest() == dir {
            return Ok(file);
        }
    }
}

/// Done once, here, not at each deploy: shared/ may hold many files, and a deploy runs as a
/// user that cannot change those the web server made. Deploys give the entries they add the
/// same treatment, read back from shared/ itself (see [`perms`]).
fn share_with_web_user(layout: &Layout, web: &WebUser) -> Result<()> {
    let done = perms::share(&layout.shared, web)?;
    println!(
        "gave {} (and the {} entries in it) to group `{}` ({}'s primary group): directories are setgid and \
         group-writable, so what the web server and the deploy user make there stays theirs to change",
        layout.shared.display(),
        done.entries.saturating_sub(1),
        web.group,
        web.name
    );
    for path in &done.linked {
        println!(
            "  left {} alone: it has other names (hard links), which may be outside {}, and \
             its mode and group are theirs too; if it is shared/'s own, give it the group \
             yourself (`chgrp {} FILE && chmod g+rw FILE`)",
            path.display(),
            layout.shared.display(),
            web.group
        );
    }
    if done.acls {
        println!(
            "  default ACLs (group rwx) make new files group-writable whatever the umask \
             (files the app chmods itself, as PHP's move_uploaded_file does, keep that mode)"
        );
    } else {
        println!(
            "  this filesystem has no POSIX ACLs: files are group-writable only when made with a \
             umask of 002; give php-fpm one (systemd: `UMask=0002` in a drop-in for its service, \
             php-fpm itself has no umask setting) and the deploy user too"
        );
    }
    Ok(())
}

/// A deploy user may not make directories in /srv: refused before anything is made, with the
/// command root runs to make them this user's, rather than a bare "Permission denied".
fn refuse_unwritable_parents(args: &Install) -> Result<()> {
    use nix::unistd::{AccessFlags, access};
    let missing: Vec<&Path> = [args.root, args.repo]
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_err())
        .collect();
    let blocked = missing.iter().find_map(|path| {
        let absolute = std::path::absolute(path).ok()?;
        let parent = absolute.ancestors().skip(1).find(|dir| dir.is_dir())?;
        access(parent, AccessFlags::W_OK | AccessFlags::X_OK)
            .is_err()
            .then(|| (path, parent.to_path_buf()))
    });
    let Some((path, parent)) = blocked else {
        return Ok(());
    };
    let user = crate::infra::users::user_or_uid(nix::unistd::geteuid().as_raw());
    let group = crate::infra::users::group_or_gid(nix::unistd::getegid().as_raw());
    let paths: Vec<String> = missing
        .iter()
        .map(|p| quote_if_needed(&p.to_string_lossy()))
        .collect();
    bail!(
        "cannot create {}: {} is not writable by {user}. As root, make {} for {user} first: \
         `sudo install -d -o {user} -g {group} {}`, then run install again as {user}",
        path.display(),
        parent.display(),
        if paths.len() == 1 { "it" } else { "them" },
        paths.join(" ")
    )
}

/// The user the shipped php-fpm pool runs as.
const SHIPPED_WEB_USER: &str = "www-data";

/// One line when the set-up install leaves is not the one the shipped pool expects (php-fpm as
/// www-data, another user than the deploy user, shared/ given to its group): `--web-user`
/// naming the deploy user itself, whose pool could write into every build; or no
/// `--web-user` where www-data exists and shared/ was never given to it, so the app could not
/// write its shared entries.
fn web_user_note(layout: &Layout, repo: &Path, web: Option<&WebUser>) -> Option<String> {
    let owner = crate::infra::owner::owner_of(&layout.root)?;
    let install = format!(
        "`atomdeploy-hook install --repo {} --root {} --web-user {SHIPPED_WEB_USER}`",
        quote_if_needed(&repo.to_string_lossy()),
        quote_if_needed(&layout.root.to_string_lossy())
    );
    if let Some(web) = web {
        return (web.uid == owner).then(|| {
            format!(
                "note: `{}` owns {}, so a php-fpm pool running as it can write into every \
                 build; run the pool as the web server's user (`user = {SHIPPED_WEB_USER}`, \
                 as webserver/php-fpm-pool.conf does) and give shared/ to it: {install}",
                web.name,
                layout.root.display()
            )
        });
    }
    let shared = fs::metadata(&layout.shared).ok()?;
    let given = shared.mode() & libc::S_ISGID != 0;
    let (web_uid, _) = crate::infra::users::by_name(SHIPPED_WEB_USER)?;
    if given || web_uid == owner {
        return None;
    }
    // Root needs no group to change what the web server makes.
    let first = if owner == 0 {
        String::new()
    } else {
        let deploy = crate::infra::users::user_or_uid(owner);
        format!("once `usermod -aG {SHIPPED_WEB_USER} {deploy}`, ")
    };
    Some(format!(
        "note: {} is not given to {SHIPPED_WEB_USER}, the user the shipped php-fpm pool runs \
         as: the app could not write its shared entries (uploads, sessions, logs); {first}run \
         {install}",
        layout.shared.display()
    ))
}

/// Refuses, before anything exists, a branch or a path that the hook and deploy.yml could not
/// name as given.
fn refuse_names(args: &Install) -> Result<()> {
    if !git2::Reference::is_valid_name(&format!("refs/heads/{}", args.branch)) {
        bail!("`{}` is not a valid branch name", args.branch);
    }
    // Refused before anything exists: a repository whose HEAD and deploy.yml name a reserved
    // branch cannot deploy at all.
    if RESERVED_BRANCHES.contains(&args.branch) {
        bail!(
            "`{}` is reserved: atomdeploy-hook keeps a `rollback` branch at the rollback target \
             (deleting it rolls back), and `replay` is kept for its own use too; choose another --branch",
            args.branch
        );
    }
    // The hook names the root in a line of sh, deploy.yml the repository in YAML: a path that
    // is not UTF-8 would be written with U+FFFD in place of its bytes (another path), one with
    // a line break would cut the line that the next install reads the roots back from.
    for (what, path) in [("--root", args.root), ("--repo", args.repo)] {
        if path.to_str().is_none_or(|p| p.contains(['\n', '\r'])) {
            bail!(
                "{what} {}: the hook and deploy.yml name it in a line of text, so it must be UTF-8 \
                 and hold no line break; rename it",
                path.display()
            );
        }
    }
    Ok(())
}

/// With several roots: which they are, and this root's own branches.
fn print_roots(repo_path: &Path, roots: &[PathBuf], branches: &Branches) {
    if roots.len() < 2 {
        return;
    }
    println!(
        "{} serves {} deploy roots: {}",
        repo_path.display(),
        roots.len(),
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "this root's own branches: deploy `{}`, roll back with `git push production :{}`, \
         deploy a commit again with `git push production <commit>:refs/heads/{}`",
        branches.deploy, branches.rollback, branches.replay
    );
}

/// git ignores a post-receive hook's exit status: these are the two ways to make
/// `git push` exit non-zero when its deploy failed.
fn print_exit_status_setup(repo: &Path) -> Result<()> {
    let binary = std::env::current_exe().context("cannot find atomdeploy-hook's own path")?;
    let binary = quote_if_needed(&binary.to_string_lossy());
    let repo = quote_if_needed(&repo.to_string_lossy());
    println!("to make `git push` exit non-zero when its deploy fails, either:");
    println!("  - on each developer's machine (or CI), once per clone:");
    println!("    git config remote.production.receivepack \"{binary} receive-pack\"");
    println!(
        "  - or for everyone, on this server: start the deploy key's line in authorized_keys with"
    );
    println!(
        "    command=\"{binary} serve --repo {repo}\",no-pty,no-port-forwarding,no-X11-forwarding,no-agent-forwarding ssh-ed25519 AAAA…"
    );
    // A host takes group operations through this line only (see receive/group/trust.rs).
    println!(
        "if this server is a host of a group (the primary's deploy.yml lists it in `hosts:`), the \
         primary's key gets this line instead, and developers' keys plain `serve` or nothing:"
    );
    println!(
        "    restrict,command=\"{binary} serve --repo {repo} --group-primary\" ssh-ed25519 AAAA… deploy@primary"
    );
    Ok(())
}

/// Where the root goes among the roots the repository's hook names already (environments:
/// see `receive/hook/several.rs`), and its branches.
struct Placement {
    /// The other roots, in the hook's order.
    others: Vec<PathBuf>,
    /// The root's place among them: where it was, or last.
    position: usize,
    branches: Branches,
    /// Whether its branches are to be recorded (a root new to a repository that has others).
    record: bool,
}

/// Reads the roots the hook names, and refuses, before anything is written, a root whose
/// branches would clash with another root's: one branch deployed by two roots, or a branch
/// that is another root's `rollback…`/`replay…`.
fn place_root(args: &Install) -> Result<Placement> {
    let hook = args.repo.join("hooks").join("post-receive");
    let listed = match fs::read_to_string(&hook) {
        Ok(text) if text.contains(HOOK_MARKER) => hook_file::hook_roots(&text)
            // Rewriting it with this root alone would drop the others without a word.
            .with_context(|| {
                format!(
                    "cannot tell which roots {} names (its `exec … --root DIR` line was \
                     edited?); restore that line and install again",
                    hook.display()
                )
            })?,
        // Not ours (refused later, as before) or none yet.
        _ => Vec::new(),
    };
    let at = listed
        .iter()
        .position(|r| crate::config::same_path(r, args.root));
    let others: Vec<PathBuf> = listed
        .iter()
        .filter(|r| !crate::config::same_path(r, args.root))
        .cloned()
        .collect();
    let position = at.unwrap_or(others.len());
    let layout = Layout::new(args.root);
    // The branch it will deploy: an existing deploy.yml is kept, so it is that one's.
    let deploy = fs::read_to_string(&layout.config_file)
        .ok()
        .and_then(|text| crate::config::parse(&text, &layout.config_file, args.root).ok())
        .map_or_else(|| args.branch.to_string(), |c| c.branch);
    let recorded = layout.state.join("control-branches").exists();
    let (branches, record) = if recorded {
        (control_branches::branches(&layout, &deploy)?, false)
    } else if position == 0 {
        (Branches::first(&deploy), false)
    } else {
        (control_branches::further_root(&deploy), true)
    };
    refuse_clashes(&others, &branches)?;
    if record && let Ok(repo) = Repository::open_bare(args.repo) {
        refuse_blocked_branches(&repo, args.repo, &branches)?;
    }
    Ok(Placement {
        others,
        position,
        branches,
        record,
    })
}

/// Refuses branches that clash with another root's: one branch deployed by two roots, or a
/// branch that is another root's `rollback…`/`replay…`.
fn refuse_clashes(others: &[PathBuf], branches: &Branches) -> Result<()> {
    for other in others {
        let theirs = match Plan::load(other)
            .and_then(|plan| control_branches::branches(&plan.layout, &plan.config.branch))
        {
            Ok(theirs) => theirs,
            Err(err) => {
                println!(
                    "warning: the hook's root {} has no deploy.yml that can be read ({err:#}); \
                     its branches are not checked against this root's",
                    other.display()
                );
                continue;
            }
        };
        if theirs.deploy == branches.deploy {
            bail!(
                "{} deploys the branch `{}` already: two roots deploying one branch would both \
                 deploy every push of it; choose another --branch",
                other.display(),
                branches.deploy
            );
        }
        if theirs.claims(format!("refs/heads/{}", branches.deploy).as_bytes()) {
            bail!(
                "`{}` is {}'s own branch (`rollback…` and `replay…` control a root); \
                 choose another --branch",
                branches.deploy,
                other.display()
            );
        }
        for own in [&branches.rollback, &branches.replay] {
            if theirs.claims(format!("refs/heads/{own}").as_bytes()) {
                bail!(
                    "this root's control branch `{own}` is a branch of {} already; \
                     choose another --branch",
                    other.display()
                );
            }
        }
    }
    Ok(())
}

/// Refuses a root new to a repository that has others when its control branches exist
/// already, or cannot be made.
fn refuse_blocked_branches(repo: &Repository, repo_path: &Path, branches: &Branches) -> Result<()> {
    for own in [&branches.rollback, &branches.replay] {
        // git keeps a ref as a file named after it: `rollback-x` cannot be made while
        // `rollback-x/y` exists (nor below a branch `rollback-x` when it has a `/`).
        let blocking = repo
            .references_glob(&format!("refs/heads/{own}/*"))?
            .flatten()
            .find_map(|r| r.name().ok().map(str::to_string))
            .or_else(|| {
                Path::new(own.as_str())
                    .ancestors()
                    .skip(1)
                    .filter(|a| !a.as_os_str().is_empty())
                    .map(|a| format!("refs/heads/{}", a.display()))
                    .find(|name| repo.find_reference(name).is_ok())
            });
        if let Some(name) = blocking {
            bail!(
                "{} has {name}, which keeps this root's control branch `{own}` from being \
                 made (a ref cannot be both a branch and a folder of branches); rename \
                 that branch or choose another --branch",
                repo_path.display()
            );
        }
        if repo.find_reference(&format!("refs/heads/{own}")).is_ok() {
            bail!(
                "{} has a branch `{own}`, which this root would take for its own (it keeps \
                 `{}` at its rollback target and deploys what is pushed to `{}`); \
                 rename that branch or choose another --branch",
                repo_path.display(),
                branches.rollback,
                branches.replay
            );
        }
    }
    Ok(())
}

/// An existing deploy.yml that deploys another repository would make pushes to `repo` deploy
/// that other one: refuse before anything is written.
///
/// A deploy.yml whose only fault is a reserved branch (what `install --branch rollback` left
/// before such names were refused) is repaired instead: returned with `branch` in place, to
/// be written once the rest is installed.
fn refuse_other_repository(root: &Path, repo: &Path, branch: &str) -> Result<Option<String>> {
    let config_file = Layout::new(root).config_file;
    let Ok(text) = fs::read_to_string(&config_file) else {
        return Ok(None);
    };
    let root = fs::canonicalize(root)?;
    let (config, repaired) = match crate::config::parse(&text, &config_file, &root) {
        Ok(config) => (config, None),
        Err(err) => {
            let Some(fixed) = with_branch_replaced(&text, branch) else {
                return Err(err);
            };
            let config = crate::config::parse(&fixed, &config_file, &root).map_err(|_| err)?;
            (config, Some(fixed))
        }
    };
    if !crate::config::same_path(&config.repository, repo) {
        bail!(
            "{} deploys {}, not {}; edit its `repository:` or install with --repo {}",
            config_file.display(),
            config.repository.display(),
            repo.display(),
            config.repository.display()
        );
    }
    Ok(repaired)
}

/// `text` with its top-level `branch:` line set to `branch`, if that line names a reserved
/// branch.
fn with_branch_replaced(text: &str, branch: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let value = line.strip_prefix("branch:").map(|v| {
            let v = v.split('#').next().unwrap_or_default().trim();
            v.trim_matches(|c| c == '"' || c == '\'')
        });
        match value {
            Some(value) if RESERVED_BRANCHES.contains(&value) => {
                out.push_str(&format!(
                    "branch: {}",
                    crate::config::yaml_scalar(branch).ok()?
                ));
                found = true;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    found.then_some(out)
}

/// With receive.fsckObjects git checks every object of a push and refuses trees with paths
/// like `..` or `.git` before they are stored; the hook checks them again (a repository
/// installed before, or an operator turning it off).
fn turn_on_fsck(repo_path: &Path) -> Result<()> {
    let repo = Repository::open_bare(repo_path)?;
    let mut config = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    config
        .set_bool("receive.fsckObjects", true)
        .with_context(|| format!("cannot set receive.fsckObjects in {}", repo_path.display()))?;
    println!(
        "set receive.fsckObjects=true in {}: git refuses pushed objects fsck finds broken, \
         trees with paths like `..` or `.git` among them (an old history fsck only warns \
         about can be let in with `git config receive.fsck.<msg-id> ignore`)",
        repo_path.join("config").display()
    );
    Ok(())
}

/// The URL developers add as a remote: `--url` if given (ssh `user@host:path`, `ssh://…`),
/// otherwise the repository's own path, both checked by gix-url.
fn remote_url(url: Option<&str>, repo: &Path) -> Result<String> {
    let text = match url {
        Some(url) => url.to_string(),
        None => std::path::absolute(repo)?.to_string_lossy().into_owned(),
    };
    let parsed = gix_url::parse(text.as_bytes())
        .with_context(|| format!("`{text}` is not a URL git can push to"))?;
    if url.is_some() && parsed.path.is_empty() {
        bail!("`{text}` names no repository path");
    }
    Ok(parsed.to_bstring().to_string())
}

fn open_or_init_bare(path: &Path, branch: &str) -> Result<PathBuf> {
    let exists = path.exists();
    if exists {
        match Repository::open_bare(path) {
            Ok(repo) => {
                repair_head(&repo, branch)?;
                return Ok(fs::canonicalize(repo.path())?);
            }
            Err(_) if fs::read_dir(path)?.next().is_some() => {
                bail!(
                    "{} exists and is not a bare git repository; choose another --repo",
                    path.display()
                )
            }
            Err(_) => {}
        }
    }
    // HEAD names the deploy branch, so that `git clone` of the server checks it out.
    let repo = Repository::init_opts(
        path,
        git2::RepositoryInitOptions::new()
            .bare(true)
            .initial_head(branch),
    )
    .with_context(|| format!("cannot create a bare repository at {}", path.display()))?;
    Ok(fs::canonicalize(repo.path())?)
}

/// A HEAD on a reserved branch (left by `install --branch rollback` before such names were
/// refused) makes `git clone` of the server check out the rollback target: point it at the
/// deploy branch.
fn repair_head(repo: &Repository, branch: &str) -> Result<()> {
    let Ok(head) = repo.find_reference("HEAD") else {
        return Ok(());
    };
    let Ok(Some(target)) = head.symbolic_target() else {
        return Ok(());
    };
    if RESERVED_BRANCHES
        .iter()
        .any(|r| target == format!("refs/heads/{r}"))
    {
        repo.set_head(&format!("refs/heads/{branch}"))
            .context("cannot point HEAD at the deploy branch")?;
        println!("pointed HEAD, which named {target}, at refs/heads/{branch}");
    }
    Ok(())
}

/// Writes the hook naming `roots`, each one quoted for sh as `--root '<path>'`.
fn write_hook(repo: &Path, roots: &[PathBuf]) -> Result<()> {
    let hook = repo.join("hooks").join("post-receive");
    if let Ok(existing) = fs::read_to_string(&hook)
        && !existing.contains(HOOK_MARKER)
    {
        bail!(
            "{} exists and was not written by atomdeploy-hook; move it aside (or call it from a hook of your own) and install again",
            hook.display()
        );
    }
    let binary = std::env::current_exe()
        .and_then(fs::canonicalize)
        .context("cannot find the path of this program")?;
    let text = HOOK_TEMPLATE
        .replace("@ATOMDEPLOY_BIN@", &sh_quote(&binary.to_string_lossy()))
        .replace(
            "@ATOMDEPLOY_ROOT@",
            &roots
                .iter()
                .map(|root| sh_quote(&root.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" --root "),
        );
    fs::create_dir_all(hook.parent().expect("hook has a parent"))?;
    write_atomically(&hook, &text, 0o755)
}

/// The documented template with `repository` and `branch` filled in.
fn config_text(repo: &Path, branch: &str) -> Result<String> {
    let scalar = crate::config::yaml_scalar;
    let mut out = String::new();
    for line in CONFIG_TEMPLATE.lines() {
        if line.starts_with("repository:") {
            out.push_str(&format!("repository: {}", scalar(&repo.to_string_lossy())?));
        } else if line.starts_with("branch:") {
            out.push_str(&format!("branch: {}", scalar(branch)?));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    fsutil::write_atomically(path, Some(mode), |out| out.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_and_paths_are_accepted() {
        assert_eq!(
            remote_url(Some("deploy@example.com:/srv/app.git"), Path::new("x")).unwrap(),
            "deploy@example.com:/srv/app.git"
        );
        assert_eq!(
            remote_url(Some("ssh://deploy@example.com/srv/app.git"), Path::new("x")).unwrap(),
            "ssh://deploy@example.com/srv/app.git"
        );
        assert_eq!(
            remote_url(None, Path::new("/srv/app.git")).unwrap(),
            "/srv/app.git"
        );
    }

    #[test]
    fn a_url_without_a_path_is_refused() {
        assert!(remote_url(Some("ssh://example.com"), Path::new("x")).is_err());
    }

    #[test]
    fn the_template_becomes_a_valid_config() {
        let text = config_text(Path::new("/srv/my app.git"), "production").unwrap();
        let config =
            crate::config::parse(&text, Path::new("deploy.yml"), Path::new("/srv")).unwrap();
        assert_eq!(config.repository, Path::new("/srv/my app.git"));
        assert_eq!(config.branch, "production");
    }

    #[test]
    fn only_a_reserved_branch_line_is_replaced() {
        let text = "repository: /srv/app.git\nbranch: rollback # old\nkeep_builds: 3\n";
        assert_eq!(
            with_branch_replaced(text, "main").unwrap(),
            "repository: /srv/app.git\nbranch: main\nkeep_builds: 3\n"
        );
        assert!(with_branch_replaced("branch: 'replay'\n", "main").is_some());
        assert!(with_branch_replaced("branch: production\n", "main").is_none());
        assert!(with_branch_replaced("  branch: rollback\n", "main").is_none());
    }
}
