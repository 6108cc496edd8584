//! Running composer in `application/`, where `vendor/` persists between deploys, and only
//! as much of it as the commit needs.
//!
//! The rule: a build's `vendor/` and autoloader are always exactly what the configured
//! composer command would produce for its commit. A git tree diff against the commit composer
//! last ran for tells cheaply what changed:
//! - `composer.json`, `composer.lock`, a path repository, the configured arguments or
//!   `vendor/` itself (compared with a fingerprint taken after the last run) → `install`;
//! - only files under the root package's autoload paths → `dump-autoload` with the
//!   configured optimisation (the class map may have changed);
//! - nothing of that → composer is skipped.
//!
//! Files composer reads that the commit does not carry would make a build depend on what ran
//! before it in `application/`: an ignored `composer.lock` that an earlier run wrote, when
//! the commit has none, is removed before composer runs, as a fresh clone would not have it.
//! Without a lock in the commit, what composer installs depends on the repositories' state,
//! not only on the tree, so it is never skipped then.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::config::Composer;
use crate::infra::child;
use crate::infra::report::Reporter;
use crate::infra::users;
use crate::state::app_tree::{app_tree, changed_since};
use crate::state::builds::replace_file;
use crate::state::plan::Layout;
use crate::steps::Summary;

/// What composer did, for the step's line.
#[derive(Debug)]
pub(crate) enum Outcome {
    Install(&'static str),
    /// vendor/ is removed and installed afresh, for what composer would not notice (it
    /// trusts its installed.json): vendor/ changed by hand, a path package's files changed.
    Reinstall(&'static str),
    DumpAutoload,
    Skipped,
    NoComposerJson,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Install(why) => write!(f, "install ({why})"),
            Outcome::Reinstall(why) => write!(f, "install into an empty vendor/ ({why})"),
            Outcome::DumpAutoload => f.write_str("dump-autoload (autoload sources changed)"),
            Outcome::Skipped => f.write_str("skipped (its inputs and vendor/ are unchanged)"),
            Outcome::NoComposerJson => f.write_str("skipped (no composer.json)"),
        }
    }
}

impl Summary for Outcome {
    fn skipped(&self) -> bool {
        matches!(self, Outcome::Skipped | Outcome::NoComposerJson)
    }
}

/// What composer will do for a commit, and what it needs to know of the commit to do it:
/// decided before it runs, with the repository, so that the run itself needs none (it may
/// run on a thread of its own, where the deploy's repository cannot go).
pub(crate) struct Decision {
    pub(crate) outcome: Outcome,
    commit: Oid,
    /// Whether the commit's tree has composer.lock, and vendor/.
    has_lock: bool,
    has_vendor: bool,
    /// The files the commit itself tracks under vendor/ (paths from the app's root): a
    /// reinstall empties vendor/ of everything else, never of these.
    vendor_tracked: std::collections::HashSet<PathBuf>,
    /// The server's auth.json, for composer alone (see [`ServerAuth`]).
    auth: Option<ServerAuth>,
}

impl Decision {
    /// Gives composer the server's credentials, read (and checked) before the deploy
    /// changed anything.
    pub(crate) fn with_auth(mut self, auth: Option<ServerAuth>) -> Decision {
        self.auth = auth;
        self
    }
}

/// The contents of the deploy root's `auth.json` (beside deploy.yml, outside application/ and
/// so outside every build): composer's credentials for private repositories. Composer gets
/// them as `COMPOSER_AUTH`; no other program the deploy starts does (see
/// [`child::command`]).
pub(crate) struct ServerAuth(String);

/// Where the server's credentials for composer are kept.
pub(crate) fn server_auth_file(layout: &Layout) -> PathBuf {
    layout.root.join("auth.json")
}

impl ServerAuth {
    /// Reads the deploy root's auth.json, if there is one. Refused: a file other users can
    /// read or change (the credentials would be every local user's, PHP pools included:
    /// refused rather than warned about, since a warning on each push is easily scrolled
    /// past, and ssh refuses a readable key for the same reason), and one that is not a JSON
    /// object (composer would fail later, half-way through the deploy). The error never shows
    /// the file's contents.
    pub(crate) fn read(layout: &Layout) -> Result<Option<ServerAuth>> {
        use std::io::Read;
        let path = server_auth_file(layout);
        // Non-blocking: a FIFO put there must fail the check below, not hang the deploy.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        // The file that was opened, not whatever the path leads to by now.
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!(
                "{} is not a file; it must hold composer's credentials as JSON",
                path.display()
            );
        }
        if meta.mode() & 0o077 != 0 {
            anyhow::bail!(
                "{} holds composer's credentials but other users can read or change it (mode \
                 {:o}); run `chmod 600 {}` (nothing was deployed)",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            );
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(_)) => Ok(Some(ServerAuth(text))),
            Ok(_) => anyhow::bail!(
                "{} must be a JSON object, as composer's auth.json is \
                 ({{\"http-basic\": {{\"repo.example.com\": {{\"username\": …, \"password\": …}}}}}}); \
                 nothing was deployed",
                path.display()
            ),
            // serde_json's message is a position and what it expected, never the text.
            Err(e) => anyhow::bail!(
                "{} is not valid JSON ({e}); nothing was deployed",
                path.display()
            ),
        }
    }
}

/// Why composer runs in full when the commit has no composer.lock.
const NO_LOCK: &str = "the commit has no composer.lock";

/// What the last successful run was for, kept in the state folder.
#[derive(Serialize, Deserialize, PartialEq)]
struct LastRun {
    commit: String,
    args: Vec<String>,
    /// [`fingerprint`] of vendor/ after the run, as 16 hex digits. (Versions before it was
    /// fixed wrote `vendor`, a number from std's `DefaultHasher`, whose output the standard
    /// library may change in any release: such a record is not compared, see [`Recorded`].)
    vendor_xxh3: String,
}

/// The record of the last run, as found in the state folder.
enum Recorded {
    Run(LastRun),
    /// Written by a version whose vendor/ fingerprint cannot be computed any more: what it
    /// says of vendor/ is unknown, so composer installs once and the record is rewritten.
    Older,
}

impl Recorded {
    fn read(layout: &Layout) -> Option<Recorded> {
        let bytes = std::fs::read(state_file(layout)).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if value.get("vendor_xxh3").is_some() {
            serde_json::from_value(value).ok().map(Recorded::Run)
        } else if value.get("vendor").is_some() {
            Some(Recorded::Older)
        } else {
            None
        }
    }
}

fn state_file(layout: &Layout) -> PathBuf {
    layout.state.join("composer.json")
}

/// What application/vendor/ holds now, as [`fingerprint`] sums it up: taken by the caller, who
/// may have it taken while it does something else (every entry's `lstat`: 35 ms at 12,000
/// files).
pub(crate) struct VendorPrint(String);

pub(crate) fn vendor_print(layout: &Layout) -> VendorPrint {
    VendorPrint(fingerprint(&layout.application.join("vendor")))
}

/// What composer's run for a commit will write, decided before it runs, `vendor` taken
/// after the checkout. Every tree read is the app's ([`app_tree`] with `app_dir`), the one
/// application/ holds.
pub(crate) fn decide_for(
    repo: &Repository,
    commit: Oid,
    app_dir: &Path,
    layout: &Layout,
    composer: &Composer,
    vendor: VendorPrint,
) -> Result<Decision> {
    let app = App { repo, app_dir };
    let outcome = outcome_for(&app, commit, layout, composer, vendor)?;
    // Only a reinstall needs them: no tree walk on the deploys that skip composer.
    let vendor_tracked = match outcome {
        Outcome::Reinstall(_) => tracked_under(&app, commit, "vendor")?,
        _ => Default::default(),
    };
    Ok(Decision {
        outcome,
        commit,
        has_lock: app.has(commit, LOCK)?,
        has_vendor: app.has(commit, "vendor")?,
        vendor_tracked,
        auth: None,
    })
}

/// The repository, and which directory of each commit is the app.
struct App<'a> {
    repo: &'a Repository,
    app_dir: &'a Path,
}

impl App<'_> {
    fn tree(&self, commit: Oid) -> Result<git2::Tree<'_>> {
        app_tree(self.repo, commit, self.app_dir)
    }

    /// Whether the app's tree of `commit` has `path` (a file or a directory).
    fn has(&self, commit: Oid, path: &str) -> Result<bool> {
        Ok(self.tree(commit)?.get_path(Path::new(path)).is_ok())
    }
}

/// Forgets composer's last run, as when it never ran: application/ is being emptied (see
/// checkout's `app_dir` change), vendor/ with it.
pub(crate) fn forget_last_run(layout: &Layout) -> Result<()> {
    crate::state::builds::remove_file_if_present(&state_file(layout))?;
    crate::state::builds::remove_file_if_present(&unfinished_marker(layout))
}

/// Every file (and link) the commit tracks under `dir`.
fn tracked_under(app: &App, commit: Oid, dir: &str) -> Result<std::collections::HashSet<PathBuf>> {
    let mut found = std::collections::HashSet::new();
    let tree = app.tree(commit)?;
    let Ok(entry) = tree.get_path(Path::new(dir)) else {
        return Ok(found);
    };
    let Ok(sub) = app.repo.find_tree(entry.id()) else {
        return Ok(found);
    };
    sub.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            let mut path = PathBuf::from(dir);
            path.push(parent);
            path.push(std::ffi::OsStr::from_bytes(entry.name_bytes()));
            found.insert(path);
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(found)
}

fn outcome_for(
    app: &App,
    commit: Oid,
    layout: &Layout,
    composer: &Composer,
    vendor: VendorPrint,
) -> Result<Outcome> {
    let composer_json = layout.application.join("composer.json");
    if !composer_json.is_file() {
        return Ok(Outcome::NoComposerJson);
    }
    if !app.app_dir.as_os_str().is_empty() {
        // Only app_dir is checked out: a path repository beside it (`../shared-lib`, common
        // in monorepos) is not there, and composer would fail on it far less clearly.
        let inputs = Inputs::read(&composer_json)?;
        if let Some(outside) = inputs.packages.iter().find(|p| {
            p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        }) {
            anyhow::bail!(
                "composer.json has a path repository at `{}`, outside app_dir `{}/`; only \
                 app_dir is deployed: move the package inside it, or deploy the whole \
                 repository",
                outside.display(),
                app.app_dir.display()
            );
        }
    }
    Ok(match &Recorded::read(layout) {
        _ if !incremental_safe(&composer.args) => Outcome::Install("custom arguments"),
        None if unfinished_marker(layout).exists() => Outcome::Install(
            // A marker its failure was added to: the run finished, with an error.
            if last_run_failed(&unfinished_marker(layout)) {
                "the last run failed"
            } else {
                "the last run did not finish"
            },
        ),
        None => Outcome::Install("first run"),
        Some(Recorded::Older) => Outcome::Install("recorded by an older version"),
        Some(Recorded::Run(last)) => match decide(app, last, commit, layout, composer, vendor)? {
            // The tree diff cannot tell whether composer would resolve differently today.
            Outcome::Skipped | Outcome::DumpAutoload if !app.has(commit, LOCK)? => {
                Outcome::Install(NO_LOCK)
            }
            outcome => outcome,
        },
    })
}

const LOCK: &str = "composer.lock";

/// Present from just before composer starts until its run is recorded: a run that failed or
/// was killed leaves it, so the next one can say why it installs.
fn unfinished_marker(layout: &Layout) -> PathBuf {
    layout.state.join("composer.unfinished")
}

/// Adds to a step's marker (see [`unfinished_marker`], and the build step's) that its run
/// ended with an error, so that the next run says so: a marker without it was left by a run
/// that was killed, or by a hook that died.
pub(crate) fn mark_failed(marker: &Path, err: &anyhow::Error) {
    let why = format!("{err:#}");
    let why = why.lines().next().unwrap_or("");
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(marker) {
        use std::io::Write;
        let _ = write!(file, "\nfailed: {why}");
    }
}

/// What [`mark_failed`] added to `marker`: why its last run failed, if it did.
pub(crate) fn failure_in(marker: &Path) -> Option<String> {
    let text = std::fs::read_to_string(marker).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("failed: "))
        .map(str::to_string)
}

fn last_run_failed(marker: &Path) -> bool {
    failure_in(marker).is_some()
}

/// The only paths composer's run writes, when they are known, so that a snapshot may copy
/// everything else while it runs:
/// - `dump-autoload`: the autoloader, `vendor/autoload.php` and `vendor/composer/`;
/// - `install` from the commit's composer.lock, with arguments that change nothing else:
///   `vendor/`.
///
/// Known only when nothing but composer's own code runs: no composer.json script on an event
/// the run fires, no plugin (installed, coming with the lock, or installed globally for the
/// user the hook runs as: any of them may write anywhere), and vendor/ (with its bin/) where
/// composer puts it by default.
pub(crate) fn writes_only(
    decision: &Decision,
    args: &[String],
    app: &Path,
) -> Option<Vec<PathBuf>> {
    let (fires, written): (fn(&str) -> bool, _) = match decision.outcome {
        Outcome::DumpAutoload => (
            fired_by_dump_autoload,
            vec![
                PathBuf::from("vendor/autoload.php"),
                PathBuf::from("vendor/composer"),
            ],
        ),
        // Without a lock, install writes composer.lock too.
        Outcome::Install(_) | Outcome::Reinstall(_)
            if decision.has_lock && incremental_safe(args) =>
        {
            (fired_by_install, vec![PathBuf::from("vendor")])
        }
        _ => return None,
    };
    let json = read_json(&app.join("composer.json"))?;
    let scripts_run = !args.iter().any(|a| a == "--no-scripts");
    let scripts = json["scripts"].as_object();
    if scripts_run && scripts.is_some_and(|s| s.keys().any(|event| fires(event))) {
        return None;
    }
    let config = &json["config"];
    if !config["vendor-dir"].is_null() || !config["bin-dir"].is_null() {
        return None;
    }
    // Each changes where composer reads or writes, whatever composer.json says.
    if ["COMPOSER", "COMPOSER_VENDOR_DIR", "COMPOSER_BIN_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let installed = app.join("vendor/composer/installed.json");
    let lists = match decision.outcome {
        // dump-autoload loads the plugins vendor/ has; install those too, and the lock's.
        Outcome::DumpAutoload => vec![read_json(&installed)?],
        _ => {
            let mut lists = vec![read_json(&app.join(LOCK))?];
            // No vendor/ yet (a first run, a reinstall): no plugin installed either.
            if installed.exists() {
                lists.push(read_json(&installed)?);
            }
            lists
        }
    };
    if lists.iter().any(has_plugin) || global_plugins() {
        return None;
    }
    Some(written)
}

/// The events a `dump-autoload` fires that a composer.json script may listen to: its own, and
/// those of every command.
fn fired_by_dump_autoload(event: &str) -> bool {
    matches!(
        event,
        "pre-autoload-dump" | "post-autoload-dump" | "init" | "command" | "pre-command-run"
    )
}

/// Every event an `install` may fire (composer's command, installer, package and plugin
/// events, and any it adds later under the same names).
fn fired_by_install(event: &str) -> bool {
    event.starts_with("pre-") || event.starts_with("post-") || matches!(event, "init" | "command")
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether a composer.lock or installed.json lists a plugin. (installed.json is a list in
/// composer 1's format, an object with `packages` in composer 2's.)
fn has_plugin(list: &serde_json::Value) -> bool {
    let plugin = |p: &serde_json::Value| {
        matches!(
            p["type"].as_str(),
            Some("composer-plugin" | "composer-installer")
        )
    };
    let packages = [&list["packages"], &list["packages-dev"], list];
    packages
        .iter()
        .filter_map(|l| l.as_array())
        .any(|l| l.iter().any(plugin))
}

/// Whether composer's home for this user (where `composer global require` installs) holds a
/// plugin, which composer loads for every project. Every directory composer may take as its
/// home is looked at (`COMPOSER_HOME`, else `$XDG_CONFIG_HOME/composer` or
/// `~/.config/composer`, and `~/.composer`).
fn global_plugins() -> bool {
    let homes = [
        std::env::var_os("COMPOSER_HOME").map(PathBuf::from),
        users::xdg_dir("XDG_CONFIG_HOME", ".config").map(|x| x.join("composer")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".composer")),
    ];
    homes.iter().flatten().any(|dir| {
        let installed = dir.join("vendor/composer/installed.json");
        // One that cannot be read is taken for one with a plugin.
        installed.exists() && read_json(&installed).is_none_or(|list| has_plugin(&list))
    })
}

/// Runs what `decision` says (see [`decide_for`]).
pub(crate) fn run(
    decision: Decision,
    layout: &Layout,
    composer: &Composer,
    reporter: &Reporter,
) -> Result<Outcome> {
    let Decision {
        outcome,
        commit,
        has_lock,
        has_vendor,
        vendor_tracked,
        auth,
    } = decision;
    let app = &layout.application;
    let state_file = state_file(layout);
    let args = match outcome {
        Outcome::Install(_) | Outcome::Reinstall(_) => composer.args.clone(),
        Outcome::DumpAutoload => dump_autoload_args(&composer.args),
        Outcome::NoComposerJson => {
            // A vendor/ (and lock) composer made for an earlier commit is not this commit's
            // (unless the commit itself has one, which checkout keeps).
            let recorded = std::fs::remove_file(&state_file).is_ok();
            let unfinished = std::fs::remove_file(unfinished_marker(layout)).is_ok();
            if recorded || unfinished {
                if !has_vendor {
                    remove_dir_if_present(&app.join("vendor"))?;
                }
                remove_stale_lock(has_lock, app)?;
            }
            return Ok(outcome);
        }
        Outcome::Skipped => return Ok(outcome),
    };
    let program = which::which("composer").context(
        "the app has a composer.json but `composer` is not on the hook's PATH \
         (install it, e.g. `apt-get install composer`, or set `composer: false` in deploy.yml)",
    )?;
    if remove_stale_lock(has_lock, app)? {
        reporter.line(
            "    notice: the commit has no composer.lock, so every deploy resolves versions afresh \
             and runs composer install; commit composer.lock for repeatable builds",
        );
    }
    // From here on vendor/ may no longer be what the record says; until the run is recorded,
    // the marker says it did not finish.
    std::fs::write(unfinished_marker(layout), commit.to_string())
        .context("cannot record that composer is starting")?;
    let _ = std::fs::remove_file(&state_file);
    if matches!(outcome, Outcome::Reinstall(_)) {
        if vendor_tracked.is_empty() {
            remove_dir_if_present(&app.join("vendor"))?;
        } else {
            // The commit's own files there (a vendor/.htaccess, a patched class) are the
            // checkout's, just written; composer would not make them again.
            empty_but_tracked(app, &app.join("vendor"), &vendor_tracked)?;
        }
    }
    let mut cmd = child::command(&program, app);
    cmd.args(&args);
    answer_what_composer_would_guess(&mut cmd);
    keep_composers_compiled_code(&mut cmd, layout, reporter);
    // child::command gives no program COMPOSER_AUTH; composer alone gets the credentials:
    // the server's auth.json, or else the hook's own COMPOSER_AUTH, if it has one.
    if let Some(credentials) = auth
        .map(|ServerAuth(text)| std::ffi::OsString::from(text))
        .or_else(|| std::env::var_os(child::COMPOSER_AUTH))
    {
        cmd.env(child::COMPOSER_AUTH, credentials);
    }
    let what = format!("`composer {}`", args.join(" "));
    child::run_limited(cmd, &what, Some(composer.timeout), reporter)
        .inspect_err(|err| mark_failed(&unfinished_marker(layout), err))?;
    let record = LastRun {
        commit: commit.to_string(),
        args: composer.args.clone(),
        vendor_xxh3: fingerprint(&app.join("vendor")),
    };
    std::fs::write(&state_file, serde_json::to_vec(&record)?)
        .context("cannot record the composer run")?;
    let _ = std::fs::remove_file(unfinished_marker(layout));
    Ok(outcome)
}

/// Tells composer what it would otherwise start about twenty processes to learn, each time, for
/// the answer given here (about 80 ms of a 150 ms run that has nothing to install):
/// - the root package's version, when composer.json has none: composer asks git, hg, fossil
///   and svn in turn, each through `sh -c`, about `application/`, which is a checkout without
///   any repository's metadata, and settles on `1.0.0+no-version-set`. A `version` in
///   composer.json still wins: composer reads the variable only without one.
/// - the terminal's size: Symfony Console runs `stty` through `sh` twice, which fails on the
///   hook's pipes and leaves 80 columns and 50 lines.
///
/// A value the hook's own environment sets is kept.
fn answer_what_composer_would_guess(cmd: &mut std::process::Command) {
    for (key, value) in [
        ("COMPOSER_ROOT_VERSION", "1.0.0+no-version-set"),
        ("COLUMNS", "80"),
        ("LINES", "50"),
    ] {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
}

/// The ini file composer's PHP gets, and the blacklist it names: the deploy root's own.
fn php_dir(layout: &Layout) -> PathBuf {
    layout.state.join("php")
}

/// Where composer's compiled code is kept: the deploy user's cache
/// (`$XDG_CACHE_HOME/atomdeploy/php-opcache`, else `~/.cache/atomdeploy/php-opcache`), shared by
/// every deploy root it deploys, since composer's files are the same for all: compiled once
/// per machine and composer version, not once per deploy root. A directory that is not the
/// user's own, or that others may write to, is never used (what is in it runs as composer):
/// then, and without a home, the deploy root's state folder holds it.
fn compiled_code_cache(layout: &Layout) -> Result<PathBuf> {
    if let Some(shared) =
        users::xdg_dir("XDG_CACHE_HOME", ".cache").map(|b| b.join("atomdeploy").join("php-opcache"))
        && private_dir(&shared).is_ok()
    {
        return Ok(shared);
    }
    let own = php_dir(layout).join("cache");
    private_dir(&own)?;
    Ok(own)
}

/// Makes `dir` (mode 0700) if missing, and checks that it is a directory of this user's that
/// nobody else may write to.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is not a directory of this user's that only it may write to",
            dir.display()
        );
    }
    Ok(())
}

/// Lets composer's PHP keep its own compiled code between deploys (opcache's file cache) instead
/// of compiling composer's 300 files on every run: about 70 ms of a 600 ms `dump-autoload` at
/// 14,000 files, 65 ms of an `install` with nothing to install (one run that fills the cache
/// costs about 170 ms more, once per user: see [`compiled_code_cache`]). Through
/// PHP_INI_SCAN_DIR, which keeps the system's ini files and adds one from the state folder, so
/// that it works however `composer` starts PHP (Debian's script, a phar).
///
/// Nothing under the deploy root is ever cached (opcache's blacklist): the app's code, and
/// vendor/'s that composer scripts and plugins run, change between deploys, and opcache would
/// tell a changed file only by its modification time. What is cached (composer itself, global
/// plugins) is checked against its modification time on every load, as PHP does for a web
/// server. The variable reaches what composer starts too, with the same blacklist.
///
/// Left out when the hook's environment sets PHP_INI_SCAN_DIR (it is the admin's), and when
/// a path cannot be written safely in an ini file. A cache that cannot be written costs only
/// the time it would save; so does a PHP without opcache, which ignores the settings.
fn keep_composers_compiled_code(
    cmd: &mut std::process::Command,
    layout: &Layout,
    reporter: &Reporter,
) {
    if std::env::var_os("PHP_INI_SCAN_DIR").is_some() {
        return;
    }
    match write_composers_ini(layout) {
        Ok(Some(dir)) => {
            // An empty entry is PHP's own scan directory: the system's ini files still load.
            let mut scan = std::ffi::OsString::from(":");
            scan.push(dir.as_os_str());
            cmd.env("PHP_INI_SCAN_DIR", scan);
        }
        Ok(None) => {}
        Err(err) => reporter.warn(&format!(
            "composer runs without its compiled-code cache: {err:#}"
        )),
    }
}

/// Writes the ini file (and the blacklist it names) that turns the cache on, and returns its
/// folder; nothing when a path cannot be written safely in an ini file.
fn write_composers_ini(layout: &Layout) -> Result<Option<PathBuf>> {
    let dir = php_dir(layout);
    let blacklist = dir.join("blacklist.txt");
    let cache = compiled_code_cache(layout)?;
    let mut roots = vec![layout.root.clone()];
    if let Ok(real) = layout.root.canonicalize()
        && real != layout.root
    {
        roots.push(real);
    }
    roots.extend(outside_path_packages(layout, &roots));
    // Written in an ini file's double quotes (where `$` and `{` expand) or one per line.
    let plain = |p: &Path| {
        p.to_str()
            .is_some_and(|s| !s.contains(['"', '$', '{', '}', '\\', '\n', '\r', ';']))
    };
    if !roots.iter().chain([&cache, &blacklist]).all(|p| plain(p)) {
        return Ok(None);
    }
    let ini = format!(
        "; Written by atomdeploy-hook for the composer it runs (see the deploy guide).\n\
         opcache.enable_cli=1\n\
         opcache.file_cache=\"{}\"\n\
         opcache.file_cache_only=1\n\
         opcache.validate_timestamps=1\n\
         opcache.blacklist_filename=\"{}\"\n\
         opcache.preload=\n",
        cache.display(),
        blacklist.display()
    );
    let listed: String = roots
        .iter()
        .map(|r| format!("{}/\n", r.display()))
        .collect();
    write_if_changed(&blacklist, &listed)?;
    write_if_changed(&dir.join("atomdeploy.ini"), &ini)?;
    Ok(Some(dir))
}

/// The `path` repositories of application/'s composer.json that lie outside the deploy root
/// (`/srv/libs/billing`, `../../shared`): with `symlink: true`, vendor/ reaches their code
/// there, and a plugin or script composer runs may load it. They change between deploys like
/// the app, so they are blacklisted too. (A glob stays a glob: opcache's blacklist reads `*`.)
fn outside_path_packages(layout: &Layout, roots: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(inputs) = Inputs::read(&layout.application.join("composer.json")) else {
        return Vec::new();
    };
    inputs
        .packages
        .iter()
        .map(|p| resolved(&layout.application.join(p)))
        .filter(|p| !roots.iter().any(|r| p.starts_with(r)))
        .collect()
}

/// `path` with its symlinks and `..` resolved up to its first glob component (`packages/*`),
/// which is kept as written; lexically where the path does not exist (yet).
fn resolved(path: &Path) -> PathBuf {
    let glob = path
        .components()
        .position(|c| c.as_os_str().as_bytes().contains(&b'*'));
    let split = glob.unwrap_or(usize::MAX);
    let base: PathBuf = path.components().take(split).collect();
    let rest: PathBuf = path.components().skip(split).collect();
    let base = base.canonicalize().unwrap_or_else(|_| {
        base.components().fold(PathBuf::new(), |mut out, c| {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c),
            }
            out
        })
    });
    base.join(rest)
}

/// [`replace_file`], skipped when the file already holds `text` (it does on every run but the
/// first).
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    replace_file(path, text.as_bytes())
}

/// When the commit carries no composer.lock, removes the one in `application/` (an earlier
/// run wrote it; ignored, checkout keeps it) so that composer resolves from composer.json as
/// on a fresh clone instead of installing an old resolution. Returns whether the commit has
/// no lock.
fn remove_stale_lock(has_lock: bool, app: &Path) -> Result<bool> {
    if has_lock {
        return Ok(false);
    }
    let lock = app.join(LOCK);
    match std::fs::remove_file(&lock) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the stale {}", lock.display()))
        }
        _ => Ok(true),
    }
}

fn decide(
    git: &App,
    last: &LastRun,
    commit: Oid,
    layout: &Layout,
    composer: &Composer,
    vendor: VendorPrint,
) -> Result<Outcome> {
    let app = &layout.application;
    if last.args != composer.args {
        return Ok(Outcome::Install("composer arguments changed"));
    }
    if vendor.0 != last.vendor_xxh3 {
        return Ok(Outcome::Reinstall(
            "vendor/ was changed since composer last ran",
        ));
    }
    let Some(changed) = changed_since(git.repo, &last.commit, commit, git.app_dir)? else {
        return Ok(Outcome::Install("the last commit composer ran for is gone"));
    };
    let inputs = Inputs::read(&app.join("composer.json"))?;
    // A submodule shows as one changed path, its directory: a path package or autoload
    // directory inside it changed when the directory holding it did.
    let touches = |p: &Path, dir: &Path| p.starts_with(dir) || dir.starts_with(p);
    if changed
        .iter()
        .any(|p| p == Path::new("composer.json") || p == Path::new("composer.lock"))
    {
        return Ok(Outcome::Install("composer.json or composer.lock changed"));
    }
    if changed
        .iter()
        .any(|p| inputs.packages.iter().any(|dir| touches(p, dir)))
    {
        // composer install trusts the lock's reference of a path package and would keep the
        // old copy in vendor/: only a fresh install picks up its changed files.
        return Ok(Outcome::Reinstall("a path repository changed"));
    }
    if changed
        .iter()
        .any(|p| inputs.autoload.iter().any(|dir| touches(p, dir)))
    {
        return Ok(Outcome::DumpAutoload);
    }
    Ok(Outcome::Skipped)
}

/// The paths of the root package that composer's output depends on.
struct Inputs {
    /// Autoload paths (psr-4, psr-0, classmap, files; dev ones too, to be safe).
    autoload: Vec<PathBuf>,
    /// Directories of `path` repositories.
    packages: Vec<PathBuf>,
}

impl Inputs {
    fn read(composer_json: &Path) -> Result<Inputs> {
        let text = std::fs::read_to_string(composer_json)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", composer_json.display()))?;
        let mut autoload = Vec::new();
        for section in ["autoload", "autoload-dev"] {
            for kind in ["psr-4", "psr-0", "classmap", "files"] {
                collect_paths(&json[section][kind], &mut autoload);
            }
        }
        let mut packages = Vec::new();
        if let Some(repositories) = json["repositories"].as_array() {
            for repository in repositories.iter().filter(|r| r["type"] == "path") {
                collect_paths(&repository["url"], &mut packages);
            }
        }
        Ok(Inputs { autoload, packages })
    }
}

/// Paths in an autoload value: a string, a list, or a map of namespace to either.
fn collect_paths(value: &serde_json::Value, out: &mut Vec<PathBuf>) {
    match value {
        serde_json::Value::String(path) => {
            // Globs (`packages/*`) count from their fixed part.
            let fixed = path.split(['*', '?', '[']).next().unwrap_or("");
            let clean = fixed.trim_start_matches("./").trim_end_matches('/');
            out.push(PathBuf::from(clean)); // "" is the whole app: any change counts
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_paths(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}

/// Arguments of `composer install` whose effect on the autoloader `dump-autoload` knows how
/// to repeat (or that have none). With any other (`--ignore-platform-reqs`, say, which also
/// changes the platform check the autoloader does), composer always runs in full.
const INCREMENTAL_SAFE_ARGS: &[&str] = &[
    "--no-dev",
    "--prefer-dist",
    "--prefer-source",
    "--no-interaction",
    "-n",
    "--optimize-autoloader",
    "-o",
    "--classmap-authoritative",
    "-a",
    "--apcu-autoloader",
    "--no-progress",
    "--no-scripts",
    "--quiet",
    "-q",
    "--ansi",
    "--no-ansi",
    "--no-suggest",
    "--no-audit",
];

fn incremental_safe(args: &[String]) -> bool {
    args.first().map(String::as_str) == Some("install")
        && args[1..]
            .iter()
            .all(|a| INCREMENTAL_SAFE_ARGS.contains(&a.as_str()))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Removes everything under `dir` but the paths in `keep` (relative to `app`), and the
/// directories left empty. Never follows a symlink.
fn empty_but_tracked(
    app: &Path,
    dir: &Path,
    keep: &std::collections::HashSet<PathBuf>,
) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .contents_first(true)
        .follow_links(false)
    {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("cannot read vendor/"),
        };
        let relative = entry.path().strip_prefix(app).unwrap_or(entry.path());
        let removed = if entry.file_type().is_dir() {
            match std::fs::remove_dir(entry.path()) {
                // Holds a tracked file.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
                other => other,
            }
        } else if keep.contains(relative) {
            Ok(())
        } else {
            std::fs::remove_file(entry.path())
        };
        removed.with_context(|| format!("cannot remove {}", entry.path().display()))?;
    }
    Ok(())
}

/// `dump-autoload` with the optimisation the configured install would apply.
fn dump_autoload_args(install_args: &[String]) -> Vec<String> {
    let mut args = vec!["dump-autoload".to_string(), "--no-interaction".to_string()];
    for arg in install_args {
        let mapped = match arg.as_str() {
            "--optimize-autoloader" | "-o" => "--optimize",
            "--classmap-authoritative" | "-a" => "--classmap-authoritative",
            "--apcu-autoloader" => "--apcu",
            "--no-dev" => "--no-dev",
            "--no-scripts" => "--no-scripts",
            _ => continue,
        };
        args.push(mapped.to_string());
    }
    args
}

/// A fingerprint of everything in `vendor/`: names, sizes, modes and modification times. A
/// file changed, added or removed by hand changes it.
///
/// It is stored, and compared by the next version of the hook too, so it must not depend on
/// the toolchain: XXH3-64 (seed 0, a specified algorithm with a fixed output) of, for each
/// entry in file-name order, its path below `vendor/` as bytes, a 0 byte, then, when its
/// metadata can be read, size (u64), mode (u32), mtime seconds (i64) and nanoseconds (i64),
/// little-endian. Written as 16 lowercase hex digits.
fn fingerprint(vendor: &Path) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for entry in walkdir::WalkDir::new(vendor)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        let relative = entry.path().strip_prefix(vendor).unwrap_or(entry.path());
        hasher.update(relative.as_os_str().as_bytes());
        hasher.update(&[0]);
        if let Ok(meta) = entry.metadata() {
            hasher.update(&meta.len().to_le_bytes());
            hasher.update(&meta.mode().to_le_bytes());
            hasher.update(&meta.mtime().to_le_bytes());
            hasher.update(&meta.mtime_nsec().to_le_bytes());
        }
    }
    format!("{:016x}", hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_repository_resolves_up_to_its_glob() {
        // Lexically where nothing exists, `..` included; the glob and what follows as written.
        assert_eq!(
            resolved(Path::new("/nonexistent-atomdeploy/app/../../libs/*/src")),
            PathBuf::from("/libs/*/src")
        );
        assert_eq!(
            resolved(Path::new("/nonexistent-atomdeploy/app/./lib")),
            PathBuf::from("/nonexistent-atomdeploy/app/lib")
        );
    }

    #[test]
    fn dump_autoload_keeps_the_configured_optimisation() {
        let args: Vec<String> = crate::config::DEFAULT_COMPOSER_ARGS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            dump_autoload_args(&args),
            [
                "dump-autoload",
                "--no-interaction",
                "--no-dev",
                "--optimize"
            ]
        );
        let args = ["install".to_string(), "-a".to_string()];
        assert_eq!(
            dump_autoload_args(&args),
            [
                "dump-autoload",
                "--no-interaction",
                "--classmap-authoritative"
            ]
        );
    }

    /// The value is stored and compared across versions of the hook: a change of algorithm
    /// (or of what it reads) must be a decision, with a way to read the old records.
    #[test]
    fn the_vendor_fingerprint_is_a_fixed_function_of_the_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let vendor = dir.path().join("vendor");
        std::fs::create_dir_all(vendor.join("pkg")).unwrap();
        std::fs::write(vendor.join("pkg/a.php"), "<?php\n").unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        for (path, mode) in [("pkg/a.php", 0o100644), ("pkg", 0o40755), ("", 0o40755)] {
            let path = vendor.join(path);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::File::open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let dir_len = std::fs::metadata(&vendor).unwrap().len();
        let mut expected = xxhash_rust::xxh3::Xxh3::new();
        for (path, len, mode) in [
            ("", dir_len, 0o40755u32),
            ("pkg", dir_len, 0o40755),
            ("pkg/a.php", 6, 0o100644),
        ] {
            expected.update(path.as_bytes());
            expected.update(&[0]);
            expected.update(&len.to_le_bytes());
            expected.update(&mode.to_le_bytes());
            expected.update(&1_700_000_000i64.to_le_bytes());
            expected.update(&5i64.to_le_bytes());
        }
        assert_eq!(fingerprint(&vendor), format!("{:016x}", expected.digest()));
        // XXH3-64's own test vector: the empty input, seed 0.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06800538d394c2);
    }

    #[test]
    fn a_record_of_an_older_version_is_never_compared() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(&layout.state).unwrap();
        let old = r#"{"commit":"0123456789012345678901234567890123456789","args":["install"],"vendor":1234}"#;
        std::fs::write(state_file(&layout), old).unwrap();
        assert!(matches!(Recorded::read(&layout), Some(Recorded::Older)));
        std::fs::create_dir_all(&layout.application).unwrap();
        std::fs::write(layout.application.join("composer.json"), "{}").unwrap();
        let composer = Composer {
            args: crate::config::DEFAULT_COMPOSER_ARGS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout: std::time::Duration::from_secs(60),
        };
        let repo = Repository::init_bare(dir.path().join("repo.git")).unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let who = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = repo.commit(None, &who, &who, "empty", &tree, &[]).unwrap();
        let vendor = vendor_print(&layout);
        let decision =
            decide_for(&repo, commit, Path::new(""), &layout, &composer, vendor).unwrap();
        assert!(matches!(
            decision.outcome,
            Outcome::Install("recorded by an older version")
        ));
        let new = r#"{"commit":"0123456789012345678901234567890123456789","args":["install"],"vendor_xxh3":"00000000000004d2"}"#;
        std::fs::write(state_file(&layout), new).unwrap();
        assert!(
            matches!(Recorded::read(&layout), Some(Recorded::Run(r)) if r.vendor_xxh3 == "00000000000004d2")
        );
        std::fs::write(state_file(&layout), "{").unwrap();
        assert!(Recorded::read(&layout).is_none());
    }

    #[test]
    fn autoload_paths_are_read_from_every_form() {
        let json = serde_json::json!({
            "autoload": {"psr-4": {"App\\": "src/", "Lib\\": ["lib/a", "./lib/b/"]}, "classmap": ["legacy/"], "files": ["helpers.php"]},
            "autoload-dev": {"psr-4": {"Tests\\": "tests/"}},
            "repositories": [{"type": "path", "url": "packages/*"}, {"packagist.org": false}]
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("composer.json"), json.to_string()).unwrap();
        let inputs = Inputs::read(&dir.path().join("composer.json")).unwrap();
        let autoload: Vec<_> = inputs
            .autoload
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect();
        assert_eq!(
            autoload,
            ["src", "lib/a", "lib/b", "legacy", "helpers.php", "tests"]
        );
        assert_eq!(inputs.packages, [PathBuf::from("packages")]);
    }
}
