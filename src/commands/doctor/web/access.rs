//! What the pool's user can reach: every directory from / down to the live build's public/,
//! the live build's files, the state folder when `reset_opcache:` runs a script from it, and
//! each `shared:` entry, which the app writes into (a file entry, a `.env`, it only reads).
//! And what it must not: write into the live build. The pool runs as the web server's user,
//! not as the deploy user who owns the builds: a build stays what the deploy made, and what
//! PHP writes at run time goes to shared/.
//!
//! Run as root, doctor asks the kernel: a child process takes the pool's uid, gid and groups
//! and calls access(2) on each path, so ACLs, read-only mounts and the like count. Otherwise
//! access is worked out from the mode bits (and ACLs are not considered).

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::super::{Context, Finding};
use super::pool::{Ident, Pool};
use crate::infra::users::{group_or_gid, user_name};

const R: i32 = libc::R_OK;
const W: i32 = libc::W_OK;
const X: i32 = libc::X_OK;

/// What a path is checked for.
#[derive(Clone, Copy, PartialEq)]
enum Tag {
    /// A directory above the live build's public/.
    Traverse,
    Live,
    /// A path of the live build, checked for write: allowed is what fails.
    LiveWrite,
    /// The state folder, where `reset_opcache:` writes the script the pool runs.
    State,
    /// A directory on the way to a `shared:` entry, or the entry (and what it holds).
    Shared(usize),
}

struct Need {
    path: PathBuf,
    mode: i32,
    tag: Tag,
}

pub(crate) fn check(context: &Context, pool: Option<&Pool>, out: &mut Vec<Finding>) {
    let Some(ident) = pool.and_then(|p| p.ident.as_ref()) else {
        if pool.is_some() {
            out.push(Finding::warn(
                "shared",
                "not checked: the pool's user is not known",
                "give the pool file with --fpm-pool FILE; its `user` must exist on this system",
            ));
        }
        return;
    };
    let needs = needs(context);
    let (allowed, how) = match test(ident, &needs) {
        Ok(allowed) => allowed,
        Err(err) => {
            out.push(Finding::warn(
                "shared",
                format!("not checked: {err}"),
                "run doctor as root",
            ));
            return;
        }
    };
    let denied: Vec<&Need> = needs
        .iter()
        .zip(&allowed)
        .filter(|(n, ok)| !**ok && n.tag != Tag::LiveWrite)
        .map(|(n, _)| n)
        .collect();
    let who = format!(
        "the pool's user {}:{} (uid {}, groups {})",
        ident.user(),
        ident.group(),
        ident.uid,
        groups(ident)
    );
    live(context, &needs, &denied, &who, how, out);
    let writable: Vec<&Need> = needs
        .iter()
        .zip(&allowed)
        .filter(|(n, ok)| n.tag == Tag::LiveWrite && **ok)
        .map(|(n, _)| n)
        .collect();
    writes_builds(context, ident, &writable, &who, how, out);
    // A directory above the root that the user cannot enter refuses every shared/ entry
    // too: one finding says so, not one per entry.
    let above = |n: &&&Need| n.tag == Tag::Traverse && context.layout.root.starts_with(&n.path);
    if !denied.iter().any(|n| above(&n)) {
        shared(context, ident, &denied, &who, out);
    }
}

fn groups(ident: &Ident) -> String {
    let mut all = vec![ident.gid];
    all.extend(ident.groups.iter().filter(|g| **g != ident.gid));
    all.iter()
        .map(|g| group_or_gid(*g))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every path to check, in order: ancestors before what they hold.
fn needs(context: &Context) -> Vec<Need> {
    let layout = &context.layout;
    let mut needs = Vec::new();
    if let Ok(build) = fs::canonicalize(&layout.latest) {
        let public = build.join("public");
        let public = if public.is_dir() {
            public
        } else {
            build.clone()
        };
        for dir in ancestors(&public, Path::new("/")) {
            needs.push(need(dir, X, Tag::Traverse));
        }
        for entry in walkdir::WalkDir::new(&build).into_iter().flatten() {
            let kind = entry.file_type();
            if kind.is_symlink() {
                continue; // shared/ entries, checked below
            }
            let mode = if kind.is_dir() { R | X } else { R };
            needs.push(need(entry.path().to_path_buf(), W, Tag::LiveWrite));
            needs.push(need(entry.into_path(), mode, Tag::Live));
        }
    }
    let resets = context
        .plan
        .as_ref()
        .is_some_and(|p| p.config.reset_opcache.is_some());
    if resets {
        needs.push(need(layout.state.clone(), X, Tag::State));
    }
    let entries = context.plan.as_ref().map(|p| p.config.shared.as_slice());
    for (i, entry) in entries.unwrap_or_default().iter().enumerate() {
        let path = layout.shared.join(&entry.path);
        for dir in ancestors(&path, &layout.root).into_iter().skip(1) {
            needs.push(need(dir, X, Tag::Shared(i)));
        }
        if path.is_dir() {
            for dir in walkdir::WalkDir::new(&path).into_iter().flatten() {
                if dir.file_type().is_dir() {
                    needs.push(need(dir.into_path(), W | X, Tag::Shared(i)));
                }
            }
        } else if path.exists() {
            // A secret (a `.env`, 0640 for the web server's group) is the app's to read; any
            // other shared file is there because the app writes it (an SQLite database), and
            // install --web-user makes it so.
            let mode = if is_secret(&path) { R } else { R | W };
            needs.push(need(path, mode, Tag::Shared(i)));
        }
    }
    needs
}

fn is_secret(path: &Path) -> bool {
    path.file_name()
        .is_some_and(crate::infra::perms::is_secret_name)
}

fn need(path: PathBuf, mode: i32, tag: Tag) -> Need {
    Need { path, mode, tag }
}

/// The directories from `top` down to `path`'s parent.
fn ancestors(path: &Path, top: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(top))
        .map(Path::to_path_buf)
        .collect();
    dirs.reverse();
    dirs
}

/// Whether `ident` has each access; and how that was found out.
fn test(ident: &Ident, needs: &[Need]) -> Result<(Vec<bool>, &'static str), String> {
    if nix::unistd::geteuid().is_root() {
        return as_user(ident, needs).map(|a| (a, "tested as that user"));
    }
    Ok((
        needs.iter().map(|n| by_mode(ident, n)).collect(),
        "from the mode bits; ACLs not considered",
    ))
}

/// From the permission bits, as the kernel would decide without ACLs.
fn by_mode(ident: &Ident, need: &Need) -> bool {
    let Ok(meta) = fs::metadata(&need.path) else {
        return false;
    };
    let mode = meta.mode();
    if ident.uid == 0 {
        return need.mode & X == 0 || meta.is_dir() || mode & 0o111 != 0;
    }
    let bits = if meta.uid() == ident.uid {
        mode >> 6
    } else if meta.gid() == ident.gid || ident.groups.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & need.mode as u32 == need.mode as u32
}

/// access(2) of each path in a child process that became the pool's user; one byte per
/// path back through a pipe.
fn as_user(ident: &Ident, needs: &[Need]) -> Result<Vec<bool>, String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{AccessFlags, ForkResult, Gid};
    // Everything the child uses is made before fork(2): after it, only system calls.
    let paths: Vec<CString> = needs
        .iter()
        .map(|n| CString::new(n.path.as_os_str().as_bytes()).unwrap_or_default())
        .collect();
    let modes: Vec<AccessFlags> = needs
        .iter()
        .map(|n| AccessFlags::from_bits_truncate(n.mode))
        .collect();
    let groups: Vec<Gid> = ident.groups.iter().copied().map(Gid::from_raw).collect();
    let mut answers = vec![0u8; needs.len()];
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", std::io::Error::from(e)))?;
    // SAFETY: doctor runs no other thread; the child below calls only async-signal-safe
    // system calls on memory allocated before the fork, then _exit(2).
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(read_end);
            let code = answer_as(ident, &groups, &paths, &modes, &mut answers, write_end);
            // SAFETY: _exit(2), not exit(3): the child must not run the parent's exit
            // handlers nor flush buffers it shares with the parent.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(err) => return Err(format!("fork: {}", std::io::Error::from(err))),
    };
    // The write end belongs to the child now: closed here, the read below ends with it.
    drop(write_end);
    let mut got = Vec::new();
    let read = fs::File::from(read_end).read_to_end(&mut got);
    let status = waitpid(pid, None);
    if read.is_err() || got.len() != needs.len() || status != Ok(WaitStatus::Exited(pid, 0)) {
        let status = match status {
            Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
            Ok(other) => format!("{other:?}"),
            Err(err) => std::io::Error::from(err).to_string(),
        };
        return Err(format!(
            "could not take the user {} to test access ({status})",
            ident.uid
        ));
    }
    Ok(got.into_iter().map(|b| b == 1).collect())
}

/// The child's part of [`as_user`], between fork(2) and _exit(2), so system calls only:
/// becomes the pool's user, asks access(2) about each path and sends the answers to `out`.
/// Returns the child's exit code.
fn answer_as(
    ident: &Ident,
    groups: &[nix::unistd::Gid],
    paths: &[CString],
    modes: &[nix::unistd::AccessFlags],
    answers: &mut [u8],
    out: std::os::fd::OwnedFd,
) -> i32 {
    use nix::unistd::{Gid, Uid, access, setgid, setgroups, setuid, write};
    if setgroups(groups).is_err()
        || setgid(Gid::from_raw(ident.gid)).is_err()
        || setuid(Uid::from_raw(ident.uid)).is_err()
    {
        return 2;
    }
    for ((answer, path), mode) in answers.iter_mut().zip(paths).zip(modes) {
        *answer = u8::from(access(path.as_c_str(), *mode).is_ok());
    }
    let mut sent = 0;
    while sent < answers.len() {
        match write(&out, &answers[sent..]) {
            Ok(n) if n > 0 => sent += n,
            _ => return 3,
        }
    }
    0
}

/// `drwx------ root:root`, for a message.
fn describe(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(meta) => format!(
            "{} {}, mode {:o} owner {}:{}",
            path.display(),
            if meta.is_dir() { "dir" } else { "file" },
            meta.mode() & 0o7777,
            user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string()),
            group_or_gid(meta.gid())
        ),
        Err(err) => format!("{}: {err}", path.display()),
    }
}

fn live(
    context: &Context,
    needs: &[Need],
    denied: &[&Need],
    who: &str,
    how: &str,
    out: &mut Vec<Finding>,
) {
    let check = "web access";
    let of = |tag: Tag| denied.iter().filter(move |n| n.tag == tag);
    if let Some(blocked) = of(Tag::Traverse).next() {
        out.push(Finding::fail(
            check,
            format!(
                "{who} cannot enter {} ({how}), on the way to the live build: every request \
                 fails (File not found)",
                describe(&blocked.path)
            ),
            format!(
                "`chmod o+x {0}` (or give it the pool's group and `chmod g+x {0}`), or move the \
                 deploy root out of it (e.g. to /srv)",
                blocked.path.display()
            ),
        ));
    } else if of(Tag::Live).next().is_some() {
        let examples: Vec<String> = of(Tag::Live).take(3).map(|n| describe(&n.path)).collect();
        out.push(Finding::fail(
            check,
            format!(
                "{who} cannot read {} path(s) of the live build ({how}), e.g. {}",
                of(Tag::Live).count(),
                examples.join("; ")
            ),
            "make the deploy user's files world-readable (umask 022: files 0644, directories \
             0755), then deploy again",
        ));
    } else if needs.iter().any(|n| n.tag == Tag::Live) {
        out.push(Finding::ok(
            check,
            format!(
                "{who} can reach and read the live build {} ({how})",
                fs::canonicalize(&context.layout.latest)
                    .unwrap_or_default()
                    .display()
            ),
        ));
    }
    if let Some(state) = of(Tag::State).next() {
        out.push(Finding::fail(
            check,
            format!(
                "{who} cannot enter {} ({how}): reset_opcache's script there cannot run, and \
                 every deploy ends failed",
                describe(&state.path)
            ),
            format!("`chmod o+x {}`", state.path.display()),
        ));
    }
}

/// The pool can write into the live build: it runs as the deploy user who owns the builds
/// (or as root), or a path there was opened to it (`chmod 777`).
fn writes_builds(
    context: &Context,
    ident: &Ident,
    writable: &[&Need],
    who: &str,
    how: &str,
    out: &mut Vec<Finding>,
) {
    let check = "web access";
    let Some(first) = writable.first() else {
        return;
    };
    let root = &context.layout.root;
    let owner = crate::infra::owner::owner_of(root);
    let install = format!(
        "`atomdeploy-hook install --repo <repository> --root {} --web-user www-data` (after \
         `usermod -aG www-data <deploy user>`), so that it writes shared/",
        root.display()
    );
    if owner == Some(ident.uid) || ident.uid == 0 {
        let owner = if ident.uid == 0 {
            "root".to_string()
        } else {
            format!("the owner of {} (the deploy user)", root.display())
        };
        out.push(Finding::fail(
            check,
            format!(
                "{who} is {owner}: PHP can write into every build ({} path(s) of the live build \
                 writable, e.g. {}); a build no longer is what the deploy made, and what the app \
                 writes there is lost at the next deploy",
                writable.len(),
                describe(&first.path)
            ),
            format!(
                "run the pool as the web server's user: `user = www-data` and `group = www-data` \
                 in its pool file (webserver/php-fpm-pool.conf), then {install}"
            ),
        ));
        return;
    }
    let examples: Vec<String> = writable.iter().take(3).map(|n| describe(&n.path)).collect();
    out.push(Finding::fail(
        check,
        format!(
            "{who} can write {} path(s) of the live build ({how}), e.g. {}: what the app \
             writes there is lost at the next deploy, and cleanup cannot remove it",
            writable.len(),
            examples.join("; ")
        ),
        format!(
            "`chmod -R go-w {}`, and keep the pool's `user = www-data`: what the app writes \
             belongs in a `shared:` entry, given to www-data by {install}",
            fs::canonicalize(&context.layout.latest)
                .unwrap_or_default()
                .display()
        ),
    ));
}

fn shared(context: &Context, ident: &Ident, denied: &[&Need], who: &str, out: &mut Vec<Finding>) {
    let entries = context.plan.as_ref().map(|p| p.config.shared.as_slice());
    for (i, entry) in entries.unwrap_or_default().iter().enumerate() {
        let path = context.layout.shared.join(&entry.path);
        let blocked: Vec<&&Need> = denied.iter().filter(|n| n.tag == Tag::Shared(i)).collect();
        let Some(first) = blocked.first() else {
            out.push(Finding::ok(
                "shared",
                if path.is_file() && is_secret(&path) {
                    format!("{entry} ({}) is readable by {who}", path.display())
                } else if path.exists() {
                    format!("{entry} ({}) is writable by {who}", path.display())
                } else {
                    format!("{entry} is not in shared/ yet: the next deploy creates it")
                },
            ));
            continue;
        };
        let group = ident.group();
        if first.mode == R {
            out.push(Finding::fail(
                "shared",
                format!(
                    "{entry} is not readable by {who}: {}: every request that needs it fails",
                    describe(&first.path)
                ),
                format!(
                    "`chgrp {group} {p} && chmod 640 {p}`, or `atomdeploy-hook install \
                     --web-user {}`",
                    ident.user(),
                    p = path.display()
                ),
            ));
            continue;
        }
        out.push(Finding::fail(
            "shared",
            format!(
                "{entry} is not writable by {who}: {} ({} path(s) refused): what the app stores \
                 there (uploads, sessions, caches) fails",
                describe(&first.path),
                blocked.len()
            ),
            format!(
                "`chgrp -R {group} {p} && chmod -R g+w {p} && find {p} -type d -exec chmod g+s \
                 {{}} +` (directories keep the group for new files), or `atomdeploy-hook install \
                 --web-user {}`",
                ident.user(),
                p = path.display()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_bits_decide_by_owner_then_group_then_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o751)).unwrap();
        // As root, an owner that is not root (for whom the bits would not count).
        if fs::metadata(&path).unwrap().uid() == 0 {
            std::os::unix::fs::chown(&path, Some(4321), Some(4321)).unwrap();
        }
        let meta = fs::metadata(&path).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let (stranger, strangers) = (uid.wrapping_add(4242), gid.wrapping_add(4242));
        let may = |ident: Ident, mode| by_mode(&ident, &need(path.clone(), mode, Tag::Shared(0)));
        let owner = || Ident {
            uid,
            gid: strangers,
            groups: vec![],
        };
        let member = || Ident {
            uid: stranger,
            gid: strangers,
            groups: vec![gid],
        };
        let other = || Ident {
            uid: stranger,
            gid: strangers,
            groups: vec![],
        };
        assert!(may(owner(), W | X));
        assert!(may(member(), R | X));
        assert!(!may(member(), W | X));
        assert!(may(other(), X));
        assert!(!may(other(), R));
        // The owner's bits count for the owner even when the group's would allow more.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o070)).unwrap();
        assert!(!may(
            Ident {
                uid,
                gid,
                groups: vec![]
            },
            X
        ));
        let root = Ident {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(may(root, W | X));
    }
}
