//! Sharing `shared/` with the web server's user, done once (`install --web-user`), and what
//! a deploy does to keep it so.
//!
//! `shared/` and everything in it gets the web user's primary group, directories get the
//! setgid bit (what is made in them inherits the group) and group write, and, where the
//! filesystem has POSIX ACLs, a default ACL giving the owning group rwx, so that files made
//! in them are group-writable whatever the creator's umask. Deploys read that state back from
//! shared/ itself (its setgid bit, its group, its default ACL) and give new entries the same:
//! the filesystem is the one record, so nothing in deploy.yml can disagree with it.
//!
//! ACLs are written as the kernel's `system.posix_acl_default` attribute (what `setfacl -d`
//! writes), so neither the `acl` package nor libacl is needed.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode};
use nix::unistd::{Gid, geteuid};

use super::at::{c_path, names, open_at, open_dir_at, stat_at, stat_fd};
use super::users::{by_name as user_by_name, group_or_gid, user_name, user_or_uid};

/// The user php-fpm's pool runs as, and its primary group.
#[derive(Debug, Clone)]
pub(crate) struct WebUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) group: String,
}

impl WebUser {
    /// Looks `name` up in the user database; touches nothing.
    pub(crate) fn resolve(name: &str) -> Result<WebUser> {
        let Some((uid, gid)) = user_by_name(name) else {
            bail!(
                "--web-user: there is no user `{name}` on this server (`getent passwd {name}` \
                 finds none); give the user php-fpm's pool runs as (`user =` in its pool file, \
                 www-data on Debian)"
            );
        };
        let group = group_or_gid(gid);
        Ok(WebUser {
            name: name.to_string(),
            uid,
            gid,
            group,
        })
    }
}

/// Lets the web server, another user, read what this process makes: a build's files come
/// from the checkout, composer and the snapshot, each made under the session's umask, and a
/// hardened server's 077 (or 027, the web server not in the deploy user's group) would make
/// every build unreadable to php-fpm. Only the group's and others' read and search bits are
/// given back; write stays as the umask says.
pub fn let_the_web_server_read() {
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old & Mode::from_bits_truncate(0o022));
}

/// What [`share`] did, for install's output.
pub(crate) struct Shared {
    pub(crate) entries: usize,
    pub(crate) acls: bool,
    /// Files left alone because they have other names (see [`share`]).
    pub(crate) linked: Vec<PathBuf>,
}

/// Looks `name` up and checks everything that could stop [`share`] half-way (the deploy
/// user, who owns `root` or will, not in the group; files of other users in `shared` when not
/// root), before anything is changed.
pub(crate) fn prepare(root: &Path, shared: &Path, name: &str) -> Result<WebUser> {
    let web = WebUser::resolve(name)?;
    let deploy_uid = fs::metadata(root).map_or(geteuid().as_raw(), |m| m.uid());
    check_membership(deploy_uid, &web)?;
    if shared.exists() {
        check_changeable(&walk(shared)?, &web)?;
    }
    Ok(web)
}

/// Gives `shared` (and all it holds) to `web`'s group: setgid, group-writable directories,
/// group-writable files, default ACLs where the filesystem has them. `web` comes from
/// [`prepare`].
///
/// A file with more than one name (a hard link) is left alone: a mode and a group belong to
/// the file, not to a name, and its other names may be outside shared/ (the web server can
/// link any file it may write, and this runs as root). Its path is returned for install to say.
pub(crate) fn share(shared: &Path, web: &WebUser) -> Result<Shared> {
    check_changeable(&walk(shared)?, web)?;
    let mut tree = Tree {
        gid: web.gid,
        acls: true,
        linked: Some(Vec::new()),
        entries: 0,
    };
    tree.treat(shared, true)?;
    Ok(Shared {
        entries: tree.entries,
        acls: tree.acls,
        linked: tree.linked.unwrap_or_default(),
    })
}

/// Called by a deploy on a path it just made in shared/ (an entry seeded or created, with the
/// directories made above it): if shared/ was shared with the web user, `path` gets the same
/// treatment. Otherwise nothing happens.
pub(crate) fn treat_new(shared: &Path, path: &Path) -> Result<()> {
    let meta = fs::metadata(shared)?;
    if meta.mode() & libc::S_ISGID == 0 {
        return Ok(());
    }
    let mut tree = Tree {
        gid: meta.gid(),
        acls: default_acl_of(shared).is_some(),
        linked: None,
        entries: 0,
    };
    tree.treat(path, false)
        .with_context(|| format!("cannot give {} to shared/'s group", path.display()))
}

/// Refuses, before a deploy adds anything to shared/, when what it adds could not be given to
/// shared/'s group (the deploy user left it since install): nothing in shared/ is touched.
pub(crate) fn check_can_add(shared: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(shared) else {
        return Ok(());
    };
    let me = geteuid().as_raw();
    if meta.mode() & libc::S_ISGID == 0 || me == 0 || process_groups().contains(&meta.gid()) {
        return Ok(());
    }
    let group = group_or_gid(meta.gid());
    let me = user_or_uid(me);
    bail!(
        "{} belongs to group `{group}` (install --web-user), which `{me}` is not in: what this \
         deploy adds there could not be given to it; add it (`usermod -aG {group} {me}`) and \
         log in again",
        shared.display()
    )
}

/// Every path at and under `top`, parents first, symlinks listed but never followed.
fn walk(top: &Path) -> Result<Vec<PathBuf>> {
    walkdir::WalkDir::new(top)
        .into_iter()
        .map(|e| {
            e.map(walkdir::DirEntry::into_path)
                .with_context(|| format!("cannot read {}", top.display()))
        })
        .collect()
}

/// A tree being given to `gid`, through file descriptors: each directory is opened (never
/// through a symlink) and what it holds is reached from that descriptor, each file changed
/// through its own. shared/ is the web server's to write: a directory it swaps for a symlink
/// to one outside, while this runs as root, is then a symlink to leave alone, never a way
/// out of shared/.
struct Tree {
    gid: u32,
    /// Whether default ACLs are (still) in use: `false` once the filesystem refused one.
    acls: bool,
    /// Where files with other names go, left alone ([`share`]); None to treat them too.
    linked: Option<Vec<PathBuf>>,
    entries: usize,
}

impl Tree {
    /// `path` and all below it, reached through symlinks above it. `path` itself is followed
    /// when `follow`: shared/ may be a symlink the operator made to a data volume, but what a
    /// deploy just made in shared/ is no symlink unless the web server swapped it for one.
    fn treat(&mut self, path: &Path, follow: bool) -> Result<()> {
        let top = c_path(path)?;
        let flags = if follow {
            OFlag::O_DIRECTORY
        } else {
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW
        };
        match open_at(AT_FDCWD, &top, flags) {
            Ok(fd) => {
                self.entries += 1;
                self.opened(fd, libc::S_IFDIR, path)
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                let parent = parent.unwrap_or(Path::new("."));
                let dir = open_at(AT_FDCWD, &c_path(parent)?, OFlag::O_DIRECTORY)
                    .with_context(|| format!("cannot open {}", parent.display()))?;
                let name = path.file_name().unwrap_or(path.as_os_str());
                self.at(dir.as_fd(), &c_path(Path::new(name))?, path)
            }
            Err(err) => Err(err).with_context(|| format!("cannot open {}", path.display())),
        }
    }

    fn at(&mut self, dir: BorrowedFd, name: &CStr, path: &Path) -> Result<()> {
        let meta = match stat_at(dir, name) {
            Ok(meta) => meta,
            // Deleted by the web server since its directory was read.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        self.entries += 1;
        let kind = meta.st_mode & libc::S_IFMT;
        let opened = match kind {
            libc::S_IFDIR => open_dir_at(dir, name),
            libc::S_IFREG => open_at(dir, name, OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK),
            // Its target is what matters, and a link into shared/ is listed on its own.
            libc::S_IFLNK => return Ok(()),
            // FIFOs, sockets, devices: not opened (that could block or do something).
            _ => return self.special(dir, name, &meta, path),
        };
        match opened {
            Ok(fd) => self.opened(fd, kind, path),
            // Swapped for a symlink since: left alone, as one.
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => Ok(()),
            // A file of one's own that one may not read (mode 0200, say) is still one's own
            // to chmod: by name, never through a symlink.
            Err(err) if err.raw_os_error() == Some(libc::EACCES) && kind == libc::S_IFREG => {
                if meta.st_nlink > 1
                    && let Some(linked) = &mut self.linked
                {
                    linked.push(path.to_path_buf());
                    return Ok(());
                }
                self.special(dir, name, &meta, path)
            }
            Err(err) => Err(err).with_context(|| format!("cannot open {}", path.display())),
        }
    }

    /// A directory or file opened as `fd`, found to be of `kind`.
    fn opened(&mut self, fd: OwnedFd, kind: u32, path: &Path) -> Result<()> {
        let meta =
            stat_fd(fd.as_fd()).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.st_mode & libc::S_IFMT != kind {
            return Ok(());
        }
        if kind == libc::S_IFREG
            && meta.st_nlink > 1
            && let Some(linked) = &mut self.linked
        {
            linked.push(path.to_path_buf());
            return Ok(());
        }
        self.change(fd.as_fd(), &meta, path)?;
        if kind == libc::S_IFDIR {
            for entry in
                names(fd.as_fd()).with_context(|| format!("cannot read {}", path.display()))?
            {
                let shown = path.join(std::ffi::OsStr::from_bytes(entry.as_bytes()));
                self.at(fd.as_fd(), &entry, &shown)?;
            }
        }
        Ok(())
    }

    /// The group, then the mode (chown clears setgid on some filesystems), then a directory's
    /// default ACL. Only what must change is changed, so that install runs again over the web
    /// server's files (which only it and root may chmod) without a complaint.
    fn change(&mut self, fd: BorrowedFd, meta: &libc::stat, path: &Path) -> Result<()> {
        let is_dir = meta.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let cleared = meta.st_gid != self.gid;
        if cleared {
            nix::unistd::fchown(fd, None, Some(Gid::from_raw(self.gid)))
                .map_err(io::Error::from)
                .with_context(|| format!("cannot change the group of {}", path.display()))?;
        }
        let wanted = wanted_mode(meta.st_mode, is_dir, path);
        if cleared || meta.st_mode & 0o7777 != wanted {
            nix::sys::stat::fchmod(fd, mode(wanted))
                .map_err(io::Error::from)
                .with_context(|| format!("cannot change the mode of {}", path.display()))?;
        }
        if is_dir && self.acls && default_acl_of_fd(fd).is_none() {
            match set_default_acl(fd, wanted) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => self.acls = false,
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot set the default ACL of {}", path.display())
                    });
                }
            }
        }
        Ok(())
    }

    /// What cannot be opened without effects (or at all): changed by name, never through a
    /// symlink.
    fn special(
        &mut self,
        dir: BorrowedFd,
        name: &CStr,
        meta: &libc::stat,
        path: &Path,
    ) -> Result<()> {
        let cleared = meta.st_gid != self.gid;
        if cleared {
            nix::unistd::fchownat(
                dir,
                name,
                None,
                Some(Gid::from_raw(self.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from)
            .with_context(|| format!("cannot change the group of {}", path.display()))?;
        }
        let wanted = wanted_mode(meta.st_mode, false, path);
        if cleared || meta.st_mode & 0o7777 != wanted {
            chmod_no_follow(dir, name, wanted)
                .with_context(|| format!("cannot change the mode of {}", path.display()))?;
        }
        Ok(())
    }
}

/// What a path in shared/ gets: setgid and the group's rwx for a directory, the group's rw
/// for a file; a file named like a secret, the group's read only and nothing for others.
fn wanted_mode(mode: u32, is_dir: bool, path: &Path) -> u32 {
    if !is_dir && path.file_name().is_some_and(is_secret_name) {
        return secret_mode(mode);
    }
    let added = if is_dir { libc::S_ISGID | 0o070 } else { 0o060 };
    (mode | added) & 0o7777
}

/// `mode` as a build's file keeps it: a build that shares its files with others (link mode)
/// makes each read-only, so that writing one in place fails instead of changing them all.
pub(crate) fn without_write_bits(mode: u32, read_only: bool) -> u32 {
    if read_only { mode & !0o222 } else { mode }
}

/// Whether a file's name says it holds secrets: `.env` and `.env.<anything>` (Laravel's,
/// Symfony's `.env.local`), composer's `auth.json`.
pub(crate) fn is_secret_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_bytes();
    name == b".env" || name.starts_with(b".env.") || name == b"auth.json"
}

/// The mode of a file named like a secret: the owner's bits, read for the group (shared/'s:
/// the web server's with --web-user, whose PHP reads it), nothing for others. 0644 → 0640.
pub(crate) fn secret_mode(mode: u32) -> u32 {
    (mode | 0o040) & !0o027 & 0o7777
}

/// Called by a deploy on an entry of the new build it is about to seed shared/ with: every
/// file there named like a secret ([`is_secret_name`]) gets [`secret_mode`], whatever umask
/// the checkout ran with (the deploy's own gives everyone read). The snapshot copies shared
/// entries, never links them to the live build's; should a file still have other names, it is
/// replaced by a copy of its own all the same, since a mode belongs to every name of a file.
/// Symlinks are neither followed nor changed.
pub(crate) fn protect_secrets(path: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
        if !entry.file_type().is_file() || !is_secret_name(entry.file_name()) {
            continue;
        }
        let file = entry.path();
        let meta = fs::symlink_metadata(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let wanted = secret_mode(meta.mode());
        if meta.nlink() > 1 {
            copy_with_mode(file, wanted)?;
        } else if meta.mode() & 0o7777 != wanted {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(file, fs::Permissions::from_mode(wanted))
                .with_context(|| format!("cannot change the mode of {}", file.display()))?;
        }
    }
    Ok(())
}

/// Replaces `file` by a copy of its own with mode `bits`, in one rename.
fn copy_with_mode(file: &Path, bits: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".atomdeploy-secret-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(bits))
        .with_context(|| format!("cannot change the mode of {}", temp.path().display()))?;
    let mut from =
        fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    io::copy(&mut from, &mut temp.as_file())
        .with_context(|| format!("cannot copy {}", file.display()))?;
    temp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as libc::mode_t)
}

/// The deploy user writes what the web user made only through the group; refused before
/// anything changes when it is not in it.
fn check_membership(deploy_uid: u32, web: &WebUser) -> Result<()> {
    if deploy_uid == 0 || deploy_uid == web.uid {
        return Ok(());
    }
    let Some(deploy) = user_name(deploy_uid) else {
        bail!("the deploy root belongs to uid {deploy_uid}, which has no user name");
    };
    if !groups_of(&deploy).contains(&web.gid) {
        bail!(
            "the deploy user `{deploy}` (who owns the deploy root) is not in `{}`, {}'s group: \
             it could not change what the web server writes in shared/. Add it \
             (`usermod -aG {} {deploy}`), log in again and run install again",
            web.group,
            web.name,
            web.group
        );
    }
    if geteuid().as_raw() != 0 && !process_groups().contains(&web.gid) {
        bail!(
            "`{deploy}` is in `{}`, but this session is not yet (the group was added after it \
             began): log in again (or run `newgrp {}`) and run install again",
            web.group,
            web.group
        );
    }
    Ok(())
}

/// Without root only one's own files can be given a mode: refused up front, naming one.
fn check_changeable(entries: &[PathBuf], web: &WebUser) -> Result<()> {
    let me = geteuid().as_raw();
    if me == 0 {
        return Ok(());
    }
    let foreign: Vec<_> = entries
        .iter()
        .filter_map(|p| Some((p, fs::symlink_metadata(p).ok()?)))
        .filter(|(_, m)| !m.file_type().is_symlink() && m.uid() != me)
        .filter(|(p, m)| {
            m.gid() != web.gid || m.mode() & 0o7777 != wanted_mode(m.mode(), m.is_dir(), p)
        })
        .collect();
    if let Some((path, meta)) = foreign.first() {
        bail!(
            "{} entries in shared/ belong to other users and cannot be changed by this one, \
             e.g. {} ({}); run install --web-user as root",
            foreign.len(),
            path.display(),
            user_or_uid(meta.uid())
        );
    }
    Ok(())
}

/// chmod of `name` in `dir` itself, never of what a symlink put in its place points at.
fn chmod_no_follow(dir: BorrowedFd, name: &CStr, bits: u32) -> io::Result<()> {
    let Err(err) = nix::sys::stat::fchmodat(dir, name, mode(bits), FchmodatFlags::NoFollowSymlink)
    else {
        return Ok(());
    };
    let err = io::Error::from(err);
    // glibc before fchmodat2 does this through /proc/self/fd and says EOPNOTSUPP without /proc
    // (a chroot): a plain chmod then, of what is still not a symlink.
    if err.raw_os_error() == Some(libc::EOPNOTSUPP)
        && stat_at(dir, name)?.st_mode & libc::S_IFMT != libc::S_IFLNK
    {
        return Ok(nix::sys::stat::fchmodat(
            dir,
            name,
            mode(bits),
            FchmodatFlags::FollowSymlink,
        )?);
    }
    Err(err)
}

const ACL_DEFAULT: &CStr = c"system.posix_acl_default";
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// `setfacl -d -m u::rwx,g::rwx,o::<dir's own>`: what is made in `dir` is writable by its
/// owner and by the group, whatever the creator's umask (which a default ACL replaces).
fn set_default_acl(dir: BorrowedFd, mode: u32) -> io::Result<()> {
    let mut value = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm) in [
        (ACL_USER_OBJ, 0o7),
        (ACL_GROUP_OBJ, 0o7),
        (ACL_OTHER, (mode & 0o7) as u16),
    ] {
        value.extend(tag.to_le_bytes());
        value.extend(perm.to_le_bytes());
        value.extend(ACL_UNDEFINED_ID.to_le_bytes());
    }
    // SAFETY: both pointers are valid for the lengths given; the kernel copies the value.
    check(unsafe {
        libc::fsetxattr(
            dir.as_raw_fd(),
            ACL_DEFAULT.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn default_acl_of_fd(dir: BorrowedFd) -> Option<Vec<u8>> {
    // SAFETY: the buffer is valid for its length; the kernel writes at most that much.
    read_xattr(|buf, len| unsafe {
        libc::fgetxattr(dir.as_raw_fd(), ACL_DEFAULT.as_ptr(), buf, len)
    })
}

/// The raw default ACL of `dir`, if it has one.
pub(crate) fn default_acl_of(dir: &Path) -> Option<Vec<u8>> {
    let path = c_path(dir).ok()?;
    // SAFETY: the buffer is valid for its length; the kernel writes at most that much.
    read_xattr(|buf, len| unsafe { libc::lgetxattr(path.as_ptr(), ACL_DEFAULT.as_ptr(), buf, len) })
}

/// An extended attribute's value, read by `get` into a buffer it is handed (pointer, length);
/// None when it has none (or it does not fit: a default ACL of ours is a few entries).
fn read_xattr(get: impl FnOnce(*mut libc::c_void, usize) -> isize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = get(buf.as_mut_ptr().cast(), buf.len());
    (n > 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// Every group the user database gives `user` (primary and supplementary).
fn groups_of(user: &str) -> Vec<u32> {
    let Some((_, primary)) = user_by_name(user) else {
        return Vec::new();
    };
    // Past the system's group limit the primary group is still certain.
    super::users::groups_of(user, primary).unwrap_or_else(|| vec![primary])
}

/// The groups this process has now (effective and supplementary).
fn process_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.push(nix::unistd::getegid().as_raw());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_a_clear_error() {
        let err = WebUser::resolve("no-such-user-here")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("there is no user `no-such-user-here`"),
            "{err}"
        );
    }

    #[test]
    fn root_resolves_to_uid_and_gid_zero() {
        let root = WebUser::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn files_named_like_secrets_are_closed_to_others_and_read_only_to_the_group() {
        for name in [".env", ".env.local", ".env.prod.local", "auth.json"] {
            assert!(is_secret_name(name.as_ref()), "{name}");
            assert_eq!(
                wanted_mode(0o100644, false, Path::new(name)),
                0o640,
                "{name}"
            );
        }
        for name in [
            "env",
            "x.env",
            ".environment",
            "auth.json.dist",
            "index.php",
        ] {
            assert!(!is_secret_name(name.as_ref()), "{name}");
            assert_eq!(wanted_mode(0o100644, false, Path::new(name)), 0o664);
        }
        for (mode, secret) in [
            (0o644, 0o640),
            (0o600, 0o640),
            (0o666, 0o640),
            (0o755, 0o750),
        ] {
            assert_eq!(secret_mode(mode), secret, "{mode:o}");
        }
        // A directory named like one is a directory like any other.
        assert_eq!(wanted_mode(0o040755, true, Path::new(".env")), 0o2775);
    }

    #[test]
    fn a_seeded_secret_linked_to_a_build_gets_a_copy_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build.env");
        let shared = dir.path().join("config");
        fs::create_dir(&shared).unwrap();
        fs::write(&build, "APP_KEY=x\n").unwrap();
        fs::set_permissions(&build, fs::Permissions::from_mode(0o644)).unwrap();
        fs::hard_link(&build, shared.join(".env")).unwrap();
        fs::write(shared.join("app.php"), "<?php").unwrap();
        let other = fs::metadata(shared.join("app.php")).unwrap().mode();
        protect_secrets(&shared).unwrap();
        let meta = fs::metadata(shared.join(".env")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.nlink()), (0o640, 1));
        assert_eq!(
            fs::read_to_string(shared.join(".env")).unwrap(),
            "APP_KEY=x\n"
        );
        assert_eq!(fs::metadata(&build).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(fs::metadata(shared.join("app.php")).unwrap().mode(), other);
    }
}
