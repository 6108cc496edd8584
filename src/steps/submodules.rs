//! A commit's submodules, checked out (recursively) into their directories of `application/`,
//! so that builds carry them (`git archive`-style exports drop them).
//!
//! Two phases. [`resolve`] runs before `application/` is touched: it reads `.gitmodules`,
//! refuses what git's fsck refuses there (a name with `..`, a path or URL that reads as an
//! option, transports that run commands), and fetches each submodule commit that its cache
//! lacks; a submodule that cannot be had fails the deploy with nothing changed. Then, after
//! the commit's own checkout, [`checkout_all`] checks each submodule's tree out into its
//! directory with `checkout.rs`, with an index of its own in the state folder: the same
//! hostile-path checks, the same handling of hand edits, links and interruptions. No `.git`
//! is ever made inside `application/`.
//!
//! State, under `.atomdeploy/modules/`: one bare repository per submodule URL, the cache
//! fetched into only when a needed commit is missing, and `checkouts/<id>.index`, one per
//! submodule directory (`<id>` hashes its path in `application/`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use git2::{ObjectType, Oid, Repository};

use crate::infra::child;
use crate::infra::report::{Reporter, seconds};
use crate::state::plan::Layout;
use crate::steps::checkout::{self, Checkout, Worktree, display};

/// Submodules of submodules deeper than this are refused: each level is a fetch, and a chain
/// of repositories naming each other would otherwise go on for as long as their histories.
const MAX_DEPTH: usize = 8;

/// One submodule of the commit, ready to be checked out.
pub(crate) struct Module {
    name: String,
    /// Its directory, relative to `application/`.
    path: PathBuf,
    commit: Oid,
    /// The bare repository that holds its commit.
    cache: PathBuf,
    children: Vec<Module>,
}

/// What resolving reads besides the repositories.
pub(crate) struct Fetching<'a> {
    pub(crate) layout: &'a Layout,
    /// Limit of one fetch.
    pub(crate) timeout: Duration,
    pub(crate) reporter: &'a Reporter,
}

/// The submodules of `commit` whose directories are in the app, every commit they need
/// fetched. `app_dir` is the directory of the repository deployed as the app (empty: all of
/// it): `.gitmodules` paths are relative to the repository's root, and a submodule outside
/// `app_dir` is no part of the app.
pub(crate) fn resolve(
    repo: &Repository,
    commit: Oid,
    app_dir: &Path,
    cx: &Fetching,
) -> Result<Vec<Module>> {
    // A tree libgit2 cannot read is the checkout's to refuse, with the path that breaks it.
    if repo.find_commit(commit).and_then(|c| c.tree()).is_err() {
        return Ok(Vec::new());
    }
    // A superproject's relative URLs are relative to its remote; this repository is that.
    let base = repo
        .path()
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    modules_of(repo, commit, &base, app_dir, Path::new(""), cx, 0)
}

/// The submodules of `commit` (of `repo`, whose URL is `base`) in `strip`, with their
/// directories placed under `under`.
fn modules_of(
    repo: &Repository,
    commit: Oid,
    base: &str,
    strip: &Path,
    under: &Path,
    cx: &Fetching,
    depth: usize,
) -> Result<Vec<Module>> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .with_context(|| format!("cannot read commit {commit}"))?;
    let entries =
        gitmodules(repo, &tree, cx.layout).with_context(|| format!("refusing commit {commit}"))?;
    let mut modules = Vec::new();
    for entry in entries {
        let Some(path) = &entry.path else { continue };
        // Only a gitlink at that path makes a submodule (git ignores other entries too).
        let Some(id) = tree
            .get_path(path)
            .ok()
            .filter(|e| e.kind() == Some(ObjectType::Commit))
            .map(|e| e.id())
        else {
            continue;
        };
        let Ok(inside) = path.strip_prefix(strip) else {
            continue;
        };
        let at = under.join(inside);
        let shown = format!(
            "submodule `{}` (path `{}`)",
            escaped(&entry.name),
            display(&at)
        );
        if modules.iter().any(|m: &Module| m.path == at) {
            bail!("{shown}: .gitmodules has two entries with that path");
        }
        if depth >= MAX_DEPTH {
            bail!("{shown} is nested more than {MAX_DEPTH} submodules deep");
        }
        let Some(url) = &entry.url else {
            bail!("{shown} has no url in .gitmodules");
        };
        let url = resolve_url(base, url).with_context(|| shown.clone())?;
        check_url(&url).with_context(|| shown.clone())?;
        let shown = format!("{shown} from {}", redacted(&url));
        let cache = cx.layout.state.join("modules").join(cache_name(&url));
        let sub = fetched(&cache, &url, id, &shown, cx)?;
        // Its paths are checked now, while application/ is as it was (its checkout checks
        // them again: a tree is cheap to read, a half-updated application/ is not).
        checkout::checked_tree(&sub, id, Path::new(""), None).with_context(|| shown.clone())?;
        let children = modules_of(&sub, id, &url, Path::new(""), &at, cx, depth + 1)
            .with_context(|| format!("in {shown} at {id}"))?;
        modules.push(Module {
            name: entry.name,
            path: at,
            commit: id,
            cache,
            children,
        });
    }
    Ok(modules)
}

/// One `[submodule "<name>"]` section of `.gitmodules`.
#[derive(Debug, Default, PartialEq)]
struct Entry {
    name: String,
    path: Option<PathBuf>,
    url: Option<String>,
}

/// The entries of the tree's `.gitmodules`, each checked as git's fsck checks them; none
/// without one. Read by git itself (`config --blob`, which follows no includes).
fn gitmodules(repo: &Repository, tree: &git2::Tree, layout: &Layout) -> Result<Vec<Entry>> {
    let Some(blob) = tree
        .get_name(".gitmodules")
        .filter(|e| e.kind() == Some(ObjectType::Blob) && e.filemode() != 0o120000)
        .map(|e| e.id())
    else {
        return Ok(Vec::new());
    };
    let out = child::command("git", &layout.state)
        .arg("--git-dir")
        .arg(repo.path())
        .args(["config", "--null", "--list", "--blob"])
        .arg(blob.to_string())
        .output()
        .context("cannot run `git config` to read .gitmodules")?;
    if !out.status.success() {
        bail!(
            "its .gitmodules cannot be read: {}",
            escaped(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    let entries = parse_config_list(&out.stdout)?;
    for entry in &entries {
        check_entry(entry)?;
    }
    Ok(entries)
}

/// `git config --null --list` output (`key\nvalue\0`…) as submodule entries, in the order of
/// their first key.
fn parse_config_list(list: &[u8]) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for item in list.split(|b| *b == 0).filter(|i| !i.is_empty()) {
        let (key, value) = match item.iter().position(|b| *b == b'\n') {
            Some(i) => (&item[..i], &item[i + 1..]),
            None => (item, &b""[..]),
        };
        let Some(rest) = key.strip_prefix(b"submodule.") else {
            continue;
        };
        let Some(dot) = rest.iter().rposition(|b| *b == b'.') else {
            continue;
        };
        let (name, var) = (&rest[..dot], &rest[dot + 1..]);
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                anyhow!(
                    "its .gitmodules has `{}`, which is not UTF-8",
                    String::from_utf8_lossy(key)
                )
            })
        };
        let name = text(name)?;
        let at = match entries.iter().position(|e| e.name == name) {
            Some(at) => at,
            None => {
                entries.push(Entry {
                    name,
                    ..Entry::default()
                });
                entries.len() - 1
            }
        };
        // The last value wins, as for git.
        match var {
            b"path" => entries[at].path = Some(PathBuf::from(OsStr::from_bytes(value))),
            b"url" => entries[at].url = Some(text(value)?),
            _ => {}
        }
    }
    Ok(entries)
}

/// What git's fsck refuses in `.gitmodules` (CVE-2018-11235, CVE-2018-17456), and what would
/// lead outside the app: checked for every entry, used or not, before anything is fetched.
fn check_entry(entry: &Entry) -> Result<()> {
    let name = &entry.name;
    if name.is_empty() || name.split(['/', '\\']).any(|part| part == "..") {
        bail!(
            "its .gitmodules names a submodule `{}`, which git refuses (a name with `..` \
             would lead its repository out of git's modules directory)",
            escaped(name)
        );
    }
    if let Some(path) = &entry.path {
        let bytes = path.as_os_str().as_bytes();
        if bytes.starts_with(b"-") || checkout::inside(Path::new("/"), path).is_none() {
            bail!(
                "its .gitmodules gives submodule `{}` the path `{}`, which is not a plain \
                 path inside the repository",
                escaped(name),
                display(path)
            );
        }
    }
    if let Some(url) = &entry.url
        && let Err(why) = dangerous_url(url)
    {
        bail!(
            "its .gitmodules gives submodule `{}` the url `{}`, which is refused: {why}",
            escaped(name),
            escaped(url)
        );
    }
    Ok(())
}

/// Refuses URLs that make git run something or read an option, whatever the entry.
fn dangerous_url(url: &str) -> Result<(), &'static str> {
    if url.starts_with('-') {
        return Err("it would be read as an option");
    }
    if url.chars().any(char::is_control) {
        return Err("it holds a control character");
    }
    // `<transport>::<address>` runs git-remote-<transport>; `ext::` runs any command.
    if let Some((transport, _)) = url.split_once("::")
        && !transport.is_empty()
        && transport
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    {
        return Err("a `<transport>::` URL runs a program (ext::, fd:: and remote helpers)");
    }
    Ok(())
}

/// The URL a fetch may use: a local path, or file, ssh, git, http(s), scp-style ssh.
fn check_url(url: &str) -> Result<()> {
    dangerous_url(url).map_err(|why| anyhow!("url `{}` is refused: {why}", escaped(url)))?;
    if url.starts_with('/') {
        return Ok(());
    }
    let host_ok = |host: &str| !host.is_empty() && !host.starts_with('-');
    if let Some((scheme, rest)) = url.split_once("://") {
        let host = rest.split('/').next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let ok = match scheme {
            "file" => true,
            "ssh" | "git+ssh" | "ssh+git" | "git" | "http" | "https" => host_ok(host),
            _ => false,
        };
        if ok {
            return Ok(());
        }
    } else if let Some((host, _)) = url.split_once(':')
        && !host.contains('/')
    {
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host_ok(host) {
            return Ok(());
        }
    }
    bail!(
        "url `{}` is not one submodules are fetched from (an absolute path, ./ or ../ \
         relative to the repository, file://, ssh://, git://, http(s)://, or host:path)",
        escaped(&redacted(url))
    )
}

/// `url` taken from `base` as git takes a submodule's relative URL from its superproject's
/// remote: each `../` drops a part of the base, `./` none. Other URLs stand as they are.
fn resolve_url(base: &str, url: &str) -> Result<String> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_string());
    }
    let mut base = base.trim_end_matches('/').to_string();
    let mut rest = url;
    let mut separator = '/';
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            let Some(cut) = base.rfind(['/', ':']) else {
                bail!("url `{url}` climbs above {base}");
            };
            separator = if base[cut..].starts_with(':') {
                ':'
            } else {
                '/'
            };
            base.truncate(cut);
        } else {
            break;
        }
    }
    if base.is_empty() && separator == '/' {
        return Ok(format!("/{rest}"));
    }
    Ok(format!("{base}{separator}{rest}"))
}

/// A file name for the cache of `url`: readable, and unique by a hash of the whole URL.
fn cache_name(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("");
    let readable: String = last
        .trim_end_matches(".git")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let hash = Oid::hash_object(ObjectType::Blob, url.as_bytes())
        .map(|id| id.to_string())
        .unwrap_or_default();
    format!("{readable}-{}.git", &hash[..12.min(hash.len())])
}

/// The cache of `url`, once it holds `commit`: fetched into only when it lacks it.
fn fetched(cache: &Path, url: &str, commit: Oid, shown: &str, cx: &Fetching) -> Result<Repository> {
    let open = || Repository::open_bare(cache);
    let repo = match open() {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("cannot create {}", cache.display()))?;
            Repository::init_bare(cache)
                .with_context(|| format!("cannot create {}", cache.display()))?
        }
    };
    if repo.find_commit(commit).is_ok() {
        return Ok(repo);
    }
    drop(repo);
    let started = Instant::now();
    // Branches and tags first, as `git submodule update` does; then the commit by its id,
    // which servers that allow it send even when no branch has it any more.
    fetch(
        cache,
        url,
        &[
            "+refs/heads/*:refs/heads/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ],
        &format!("fetching {shown}"),
        cx,
    )?;
    let mut repo = open()?;
    if repo.find_commit(commit).is_err() {
        drop(repo);
        fetch(
            cache,
            url,
            &[format!("+{commit}:refs/atomdeploy/{commit}")],
            "`git fetch` by id",
            cx,
        )
        .map_err(|e| anyhow!("{shown}: commit {commit} is not in that repository ({e:#})"))?;
        repo = open()?;
        if repo.find_commit(commit).is_err() {
            bail!("{shown}: commit {commit} is not in that repository");
        }
    }
    cx.reporter.child_line(&format!(
        "fetched {shown} in {}",
        seconds(started.elapsed())
    ));
    Ok(repo)
}

/// `git fetch` of `refspecs` from `url` into `cache`: with the deploy user's ssh keys and git
/// configuration, as a developer's fetch, but never asking for a password, with only the
/// transports [`check_url`] lets through, and killed with what it started after the timeout.
fn fetch(cache: &Path, url: &str, refspecs: &[String], what: &str, cx: &Fetching) -> Result<()> {
    let mut cmd = child::command("git", &cx.layout.state);
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .arg("--git-dir")
        .arg(cache);
    for setting in [
        "protocol.allow=never",
        "protocol.file.allow=always",
        "protocol.git.allow=always",
        "protocol.ssh.allow=always",
        "protocol.http.allow=always",
        "protocol.https.allow=always",
        // Nothing left running after the deploy.
        "gc.auto=0",
        "maintenance.auto=false",
    ] {
        cmd.arg("-c").arg(setting);
    }
    cmd.args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
        "--",
        url,
    ])
    .args(refspecs);
    child::run_limited(cmd, what, Some(cx.timeout), cx.reporter)
}

/// Checks every submodule out into its directory of `application/`, after the commit's own
/// checkout made (or kept) that directory; their counts and warnings go into `result`.
pub(crate) fn checkout_all(
    modules: &[Module],
    layout: &Layout,
    result: &mut Checkout,
    reporter: &Reporter,
) -> Result<()> {
    let checkouts = layout.submodule_indexes();
    let mut used = Vec::new();
    if !modules.is_empty() {
        std::fs::create_dir_all(&checkouts)
            .with_context(|| format!("cannot create {}", checkouts.display()))?;
    }
    checkout_each(modules, layout, &checkouts, result, &mut used, reporter)?;
    // The index of a directory that is no submodule any more would, were it one again, say
    // its files are there when they are gone.
    if let Ok(entries) = std::fs::read_dir(&checkouts) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let id = name.to_string_lossy();
            let id = id.split('.').next().unwrap_or_default();
            if !used.iter().any(|u| u == id) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn checkout_each(
    modules: &[Module],
    layout: &Layout,
    checkouts: &Path,
    result: &mut Checkout,
    used: &mut Vec<String>,
    reporter: &Reporter,
) -> Result<()> {
    for module in modules {
        let shown = format!(
            "submodule `{}` (path `{}`)",
            escaped(&module.name),
            display(&module.path)
        );
        let id =
            Oid::hash_object(ObjectType::Blob, module.path.as_os_str().as_bytes())?.to_string();
        let index = checkouts.join(format!("{id}.index"));
        let (dir, fresh) = real_dir(&layout.application, &module.path, reporter)
            .with_context(|| format!("cannot check {shown} out"))?;
        if fresh {
            // Nothing of it is there, whatever an index left from before says.
            let _ = std::fs::remove_file(&index);
        }
        let wt = Worktree {
            dir,
            pending: checkouts.join(format!("{id}.pending")),
            shown_index: format!(".atomdeploy/modules/checkouts/{id}.index"),
            index,
        };
        used.push(id);
        let repo = Repository::open_bare(&module.cache)
            .with_context(|| format!("cannot open {}", module.cache.display()))?;
        // libgit2 compares application/ with HEAD's tree: the deployed branch's head for
        // the app, an unborn branch (so every file rewritten) for a cache left as it is.
        repo.set_head_detached(module.commit)
            .with_context(|| format!("cannot update {}", module.cache.display()))?;
        let done = checkout::checkout_worktree(
            &repo,
            module.commit,
            Path::new(""),
            &wt,
            false,
            &[],
            reporter,
        )
        .with_context(|| format!("cannot check {shown} out"))?;
        result.absorb(&module.path, done);
        checkout_each(&module.children, layout, checkouts, result, used, reporter)?;
    }
    Ok(())
}

/// The submodule's directory in `app`, made a real directory: never one reached through a
/// symlink, which the checkout would write through. Returns it, and whether it was empty.
fn real_dir(app: &Path, path: &Path, reporter: &Reporter) -> Result<(PathBuf, bool)> {
    let full = checkout::inside_real(app, path)
        .ok_or_else(|| anyhow!("a directory above it in application/ is not a real directory"))?;
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if meta.is_dir() => {
            let empty = std::fs::read_dir(&full)
                .with_context(|| format!("cannot read {}", full.display()))?
                .next()
                .is_none();
            return Ok((full, empty));
        }
        Ok(_) => {
            reporter.warn(&format!(
                "removed application/{}, made on the server where the commit has a submodule",
                display(path)
            ));
            std::fs::remove_file(&full)
                .with_context(|| format!("cannot remove {}", full.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", full.display())),
    }
    std::fs::create_dir(&full).with_context(|| format!("cannot create {}", full.display()))?;
    Ok((full, true))
}

/// Control characters escaped, so that a name cannot forge lines of output.
fn escaped(text: &str) -> String {
    display(Path::new(text))
}

/// `url` without the password of its user part (`https://user:token@host/`), for the
/// pusher and the deploy log.
fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((user, _)) = authority.rsplit_once('@')
            && let Some((name, _)) = user.split_once(':')
        {
            let host = &rest[user.len()..];
            return format!("{scheme}://{name}:***{host}");
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_as_git_resolves_them() {
        let cases = [
            ("/srv/app.git", "../lib.git", "/srv/lib.git"),
            ("/srv/app.git/", "../lib.git", "/srv/lib.git"),
            ("/srv/app.git", "./lib.git", "/srv/app.git/lib.git"),
            ("/srv/app.git", "../../x/lib.git", "/x/lib.git"),
            ("/app.git", "../lib.git", "/lib.git"),
            ("ssh://h/srv/app.git", "../lib.git", "ssh://h/srv/lib.git"),
            ("git@h:org/app.git", "../lib.git", "git@h:org/lib.git"),
            ("git@h:app.git", "../lib.git", "git@h:lib.git"),
            ("/srv/app.git", "/abs/lib.git", "/abs/lib.git"),
            ("/srv/app.git", "https://h/lib.git", "https://h/lib.git"),
        ];
        for (base, url, want) in cases {
            assert_eq!(resolve_url(base, url).unwrap(), want, "{base} + {url}");
        }
    }

    #[test]
    fn urls_that_run_programs_or_read_as_options_are_refused() {
        for url in [
            "--upload-pack=touch /tmp/pwned",
            "-oProxyCommand=x",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "foo::bar",
            "ssh://-oProxyCommand=x/y",
            "ssh://user@-oProxyCommand=x/y",
            "-h:x",
            "a\nb",
            "lib.git",
            "weird://h/x",
            "",
        ] {
            assert!(check_url(url).is_err(), "{url:?}");
        }
        for url in [
            "/srv/lib.git",
            "file:///srv/lib.git",
            "ssh://git@h/lib.git",
            "git@github.com:org/lib.git",
            "https://h/lib.git",
            "git://h/lib.git",
        ] {
            check_url(url).unwrap_or_else(|e| panic!("{url}: {e:#}"));
        }
    }

    #[test]
    fn entries_git_refuses_are_refused() {
        let entry = |name: &str, path: &str, url: &str| Entry {
            name: name.into(),
            path: Some(path.into()),
            url: Some(url.into()),
        };
        for bad in [
            entry("../x", "lib", "/x"),
            entry("a/../../x", "lib", "/x"),
            entry("a\\..\\x", "lib", "/x"),
            entry("", "lib", "/x"),
            entry("lib", "../outside", "/x"),
            entry("lib", "a/../../b", "/x"),
            entry("lib", "/abs", "/x"),
            entry("lib", "-lib", "/x"),
            entry("lib", "a/.git/b", "/x"),
            entry("lib", "lib", "--upload-pack=x"),
        ] {
            assert!(check_entry(&bad).is_err(), "{bad:?}");
        }
        check_entry(&entry("lib.x/y", "vendor/lib", "../lib.git")).unwrap();
    }

    #[test]
    fn config_lists_become_entries() {
        let list = b"core.x\ny\0submodule.a.b.path\nlib\0submodule.a.b.url\n../l.git\0\
                     submodule.c.url\n/c\0submodule.a.b.path\nlib2\0";
        let entries = parse_config_list(list).unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    name: "a.b".into(),
                    path: Some("lib2".into()),
                    url: Some("../l.git".into())
                },
                Entry {
                    name: "c".into(),
                    path: None,
                    url: Some("/c".into())
                }
            ]
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("https://me:s3cret@h/x.git"),
            "https://me:***@h/x.git"
        );
        assert_eq!(redacted("https://me@h/x.git"), "https://me@h/x.git");
        assert_eq!(redacted("/srv/x.git"), "/srv/x.git");
    }
}
