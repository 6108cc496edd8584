//! One harness for the integration tests: a temporary server made by the real `install`, a
//! developer's clone, commits, real `git push`es, and assertions on what the server holds and
//! what the pusher saw.
//!
//! Every command runs in a cleared environment with pinned `GIT_*` variables and no system or
//! global git configuration, so the machine's settings cannot change what a test sees.

pub mod fake_host;
pub mod sshd;
pub mod tmpfs;
pub mod trees;
pub mod users;
pub mod web;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_atomdeploy-hook");

/// Where the example apps live.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A deploy server: a bare repository and a deploy root made by `atomdeploy-hook install`.
pub struct Server {
    _tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub root: PathBuf,
    pub env: TestEnv,
}

/// The deploy user's cache folder (XDG_CACHE_HOME), one for the whole run as one user's is for
/// all its deploy roots: composer's compiled code is kept there, compiled once rather than by
/// each test's first composer run (about 170 ms each).
pub fn suite_cache_home() -> PathBuf {
    std::env::temp_dir().join(format!(
        "atomdeploy-tests-cache-{}",
        nix::unistd::geteuid().as_raw()
    ))
}

/// The environment every command of a test runs in.
#[derive(Clone)]
pub struct TestEnv {
    base: PathBuf,
    /// PATH for everything the test runs, the hook included.
    path: String,
}

impl TestEnv {
    /// A command with the test environment: cleared, pinned git identity, no system or
    /// global git config, composer allowed to run scripts as root.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", &self.path)
            .env("HOME", self.base.join("home"))
            .env("LANG", "C.UTF-8")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("COMPOSER_HOME", self.base.join("composer-home"))
            .env("XDG_CACHE_HOME", suite_cache_home())
            // Tests run as root; without this composer silently skips scripts and plugins.
            .env("COMPOSER_ALLOW_SUPERUSER", "1")
            .stdin(Stdio::null());
        cmd
    }
}

impl TestEnv {
    /// Waits until no deploy of this test deletes old builds in the background (`atomdeploy-hook
    /// empty-trash`, which the hook leaves running with the deploy lock once the push has its
    /// answer): what a test checks after a push is then what the next deploy would find. A
    /// process is this test's by its HOME, as in [`Server::processes`]; the hook makes sure
    /// the process runs (and so shows its environment) before it exits.
    #[track_caller]
    pub fn wait_for_cleanups(&self) {
        wait_until(
            Duration::from_secs(120),
            || self.cleanups().is_empty(),
            || {
                format!(
                    "the cleanup after the push still runs: {:?}",
                    self.cleanups()
                )
            },
        );
    }

    /// The background cleanups of this test, by pid.
    pub fn cleanups(&self) -> Vec<i32> {
        use std::os::unix::ffi::OsStrExt;
        let home = [b"HOME=", self.base.join("home").as_os_str().as_bytes()].concat();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|b| *b == 0);
            let (program, command) = (args.next().unwrap_or_default(), args.next());
            if !program.ends_with(b"atomdeploy-hook") || command != Some(b"empty-trash".as_slice())
            {
                continue;
            }
            // Gone already, or a zombie (its environment reads empty): neither runs.
            let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|var| var == home.as_slice()) {
                found.push(pid);
            }
        }
        found
    }
}

#[must_use]
pub struct ServerBuilder {
    config: Vec<(String, String)>,
    path: Option<String>,
    branch: String,
    root: Option<PathBuf>,
}

impl ServerBuilder {
    /// Sets a top-level key of deploy.yml to a YAML value.
    pub fn config(mut self, key: &str, yaml: &str) -> Self {
        self.config.push((key.to_string(), yaml.to_string()));
        self
    }

    pub fn branch(mut self, branch: &str) -> Self {
        self.branch = branch.to_string();
        self
    }

    /// Puts the deploy root at `root` (on another filesystem, say) instead of in the temp dir.
    pub fn root(mut self, root: &Path) -> Self {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Replaces PATH for the test's commands and so for the hook.
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    #[track_caller]
    pub fn install(self) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("atomdeploy-test-")
            .tempdir()
            .unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let path = self.path.unwrap_or_else(|| std::env::var("PATH").unwrap());
        let env = TestEnv {
            base: base.clone(),
            path,
        };
        let server = Server {
            repo: base.join("app.git"),
            root: self.root.unwrap_or_else(|| base.join("srv")),
            _tmp: tmp,
            env,
        };
        fs::create_dir_all(base.join("home")).unwrap();
        let out = server.run_install(&server.repo, &["--branch", &self.branch]);
        assert_success(&out, "install");
        // git's receive-pack starts `git maintenance run --auto --detach` after each push; it
        // would outlive the push for a moment and be taken for a process a deploy left running.
        let autogc = server
            .command("git")
            .args(["config", "--file"])
            .arg(server.repo.join("config"))
            .args(["receive.autogc", "false"])
            .output()
            .unwrap();
        assert_success(&autogc, "git config receive.autogc false");
        for (key, value) in &self.config {
            server.set_config(key, value);
        }
        server
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: Vec::new(),
            path: None,
            branch: "main".into(),
            root: None,
        }
    }

    #[track_caller]
    pub fn install() -> Server {
        Server::builder().install()
    }

    /// `atomdeploy-hook install --repo REPO --root <this root> ARGS`, as an operator runs it
    /// (again).
    pub fn run_install(&self, repo: &Path, args: &[&str]) -> Output {
        self.command(BIN)
            .arg("install")
            .arg("--repo")
            .arg(repo)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn base(&self) -> PathBuf {
        self.env.base.clone()
    }

    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.env.command(program)
    }

    /// Runs a fix a finding printed (`chmod 640 /srv/app/shared/.env`), word for word (no
    /// shell: the paths of a test's root hold no space), and asserts it succeeded.
    #[track_caller]
    pub fn run_fix(&self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (program, args) = words.split_first().expect("an empty fix");
        let status = self.command(program).args(args).status().unwrap();
        assert!(status.success(), "`{line}` failed: {status}");
    }

    /// `git ARGS` in the server's bare repository; its output, once it succeeded.
    #[track_caller]
    pub fn repo_git(&self, args: &[&str]) -> Vec<u8> {
        let out = self
            .command("git")
            .arg("--git-dir")
            .arg(&self.repo)
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, &format!("git {}", args.join(" ")));
        out.stdout
    }

    /// Every path of `commit` in the bare repository, as git lists them.
    pub fn files_of(&self, commit: &str) -> Vec<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        self.repo_git(&["ls-tree", "-r", "-z", "--name-only", commit])
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
            .collect()
    }

    /// Panics unless `build` is complete: its REVISION names a commit every file of which is
    /// there (shared entries, linked instead, aside), and composer's autoloader is there when
    /// the commit has a composer.json.
    #[track_caller]
    pub fn assert_complete(&self, build: &str, shared: &[&str]) {
        let dir = self.build_path(build);
        let revision = fs::read_to_string(dir.join("REVISION"))
            .unwrap_or_else(|e| panic!("builds/{build} has no REVISION: {e}"));
        let files = self.files_of(revision.trim());
        assert!(
            !files.is_empty(),
            "builds/{build}: REVISION {revision} is not a commit"
        );
        for file in &files {
            if shared.iter().any(|s| file.starts_with(s)) {
                continue;
            }
            assert!(
                fs::symlink_metadata(dir.join(file)).is_ok(),
                "builds/{build} lacks {}",
                file.display()
            );
        }
        if files.iter().any(|f| f == Path::new("composer.json")) {
            assert!(
                dir.join("vendor/autoload.php").is_file(),
                "builds/{build} lacks vendor/autoload.php"
            );
        }
    }

    /// Invariants 1 and 4 of the README's guarantees: `latest` resolves to a complete build,
    /// and builds/ holds only complete builds.
    #[track_caller]
    pub fn assert_only_complete_builds(&self, shared: &[&str]) {
        let live = self.live().expect("latest points at a build");
        assert!(
            self.build_path(&live).is_dir(),
            "latest -> builds/{live}, which does not exist"
        );
        for build in self.builds() {
            self.assert_complete(&build, shared);
        }
    }

    /// Runs the binary against this server's root (and waits for the cleanup a `replay`
    /// leaves running, see [`TestEnv::wait_for_cleanups`]).
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command(BIN)
            .args(args)
            .arg("--root")
            .arg(&self.root)
            .output()
            .unwrap();
        self.env.wait_for_cleanups();
        out
    }

    /// Runs the binary against this server's root with its stdout a pipe whose reading end
    /// is closed before it starts (`atomdeploy-hook builds | head -1` once head has gone), so
    /// that every write meets the closed pipe.
    pub fn run_into_closed_pipe(&self, args: &[&str]) -> Output {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        self.command(BIN)
            .args(args)
            .arg("--root")
            .arg(&self.root)
            .stdout(writer)
            .output()
            .unwrap()
    }

    #[track_caller]
    pub fn leave_group(&self) {
        assert_success(&self.run(&["leave-group"]), "leave-group");
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("deploy.yml")
    }

    /// Sets (or adds) a top-level key of deploy.yml, keeping the rest of the file.
    pub fn set_config(&self, key: &str, yaml: &str) {
        let text = fs::read_to_string(self.config_path()).unwrap();
        let mut out = String::new();
        let mut skipping = false;
        let mut found = false;
        for line in text.lines() {
            let starts_key = !line.starts_with([' ', '#', '-']) && !line.is_empty();
            if starts_key {
                skipping = false;
            }
            if line.starts_with(&format!("{key}:")) {
                out.push_str(&format!("{key}: {yaml}\n"));
                skipping = true;
                found = true;
                continue;
            }
            if skipping && (line.starts_with(' ') || line.starts_with('-')) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if !found {
            out.push_str(&format!("{key}: {yaml}\n"));
        }
        fs::write(self.config_path(), out).unwrap();
    }

    /// A developer's clone holding a copy of `fixtures/<name>`, committed on the deploy branch,
    /// with `production` pointing at this server.
    #[track_caller]
    pub fn clone_fixture(&self, name: &str) -> DevClone {
        let clone = self.empty_clone(name);
        copy_tree(&fixture(name), &clone.path);
        clone.commit("initial version");
        clone
    }

    /// An empty repository on the deploy branch with the `production` remote.
    #[track_caller]
    pub fn empty_clone(&self, label: &str) -> DevClone {
        let path = unique_dir(&self.base(), &format!("clone-{label}"));
        let clone = DevClone {
            path,
            env: self.env.clone(),
        };
        clone.git(&["init", "-q", "-b", "main"]);
        clone.git(&["remote", "add", "production", self.repo.to_str().unwrap()]);
        clone.no_background_gc();
        clone
    }

    /// Another developer's clone of what the server's repository holds.
    #[track_caller]
    pub fn clone_repo(&self, label: &str) -> DevClone {
        let path = unique_dir(&self.base(), &format!("clone-{label}"));
        fs::remove_dir(&path).unwrap();
        let out = self
            .command("git")
            .args(["clone", "-q", "-o", "production"])
            .arg(&self.repo)
            .arg(&path)
            .output()
            .unwrap();
        assert_success(&out, "git clone");
        let clone = DevClone {
            path,
            env: self.env.clone(),
        };
        clone.no_background_gc();
        clone
    }

    pub fn latest(&self) -> PathBuf {
        self.root.join("latest")
    }

    /// The build `latest` points at, or None.
    pub fn live(&self) -> Option<String> {
        let target = fs::read_link(self.latest()).ok()?;
        assert!(
            target.is_relative(),
            "latest must be a relative symlink, is {target:?}"
        );
        assert_eq!(
            target.parent(),
            Some(Path::new("builds")),
            "latest -> {target:?}"
        );
        Some(target.file_name()?.to_str()?.to_string())
    }

    #[track_caller]
    pub fn live_revision(&self) -> String {
        self.read_live("REVISION").trim().to_string()
    }

    #[track_caller]
    pub fn read_live(&self, path: &str) -> String {
        fs::read_to_string(self.latest().join(path))
            .unwrap_or_else(|e| panic!("latest/{path}: {e}"))
    }

    /// Names in builds/, sorted.
    pub fn builds(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("builds"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    pub fn build_path(&self, name: &str) -> PathBuf {
        self.root.join("builds").join(name)
    }

    /// The head of a branch in the bare repository.
    #[track_caller]
    pub fn branch_head(&self, branch: &str) -> Option<String> {
        let out = self
            .command("git")
            .arg("--git-dir")
            .arg(&self.repo)
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    /// The example page as PHP renders it from `latest/public`.
    #[track_caller]
    pub fn page(&self) -> String {
        let out = self
            .command("php")
            .arg(self.latest().join("public/index.php"))
            .output()
            .unwrap();
        assert_success(&out, "php latest/public/index.php");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Entries of the state folder's temporary area: builds in the making that were left.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in ["tmp", "trash"] {
            if let Ok(entries) = fs::read_dir(self.root.join(".atomdeploy").join(dir)) {
                found.extend(
                    entries.map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy())),
                );
            }
        }
        for entry in fs::read_dir(&self.root).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".latest") {
                found.push(name);
            }
        }
        found
    }

    /// The deploy log, one JSON value a line.
    pub fn deploy_log(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.root.join(".atomdeploy/deploys.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Makes every deploy from now on stop in before_switch (holding the lock) until the gate
    /// opens.
    pub fn gate_deploys(&self) -> Gate {
        let gate = Gate {
            entered: self.base().join("gate-entered"),
            open: self.base().join("gate-open"),
        };
        self.set_config(
            "before_switch",
            &format!(
                "['touch {}; while [ ! -e {} ]; do sleep 0.01; done']",
                gate.entered.display(),
                gate.open.display()
            ),
        );
        gate
    }

    /// A snapshot of what a failed deploy must not change.
    pub fn state(&self) -> ServerState {
        ServerState {
            live: self.live(),
            builds: self.builds(),
            shared: tree_listing(&self.root.join("shared")),
        }
    }

    /// What a refused or failed deploy must leave: the live build, builds/ and shared/ as they
    /// were at `before`, and nothing of the attempt behind (see
    /// [`Server::assert_nothing_left_behind`]).
    #[track_caller]
    pub fn assert_unchanged_since(&self, before: &ServerState) {
        self.assert_unchanged_since_in(before, "");
    }

    /// [`Server::assert_unchanged_since`], its failure prefixed with `what` (the case of a loop).
    #[track_caller]
    pub fn assert_unchanged_since_in(&self, before: &ServerState, what: &str) {
        assert_eq!(&self.state(), before, "{what}: the server changed");
        self.assert_nothing_left_behind_in(what);
    }

    /// No build in the making (`.atomdeploy/tmp`), none being removed (`.atomdeploy/trash`),
    /// no `.latest.*` of an unfinished switch: what a deploy that ended, however it ended,
    /// must not leave.
    #[track_caller]
    pub fn assert_nothing_left_behind(&self) {
        self.assert_nothing_left_behind_in("");
    }

    /// Running processes that this test's commands started, at any depth, as "pid cmdline":
    /// those with this test's HOME in their environment, which the hook and what it runs
    /// inherit. Every other test, in this process or another, has a HOME of its own.
    pub fn processes(&self) -> Vec<String> {
        use std::os::unix::ffi::OsStrExt;
        // A cleanup after a push ends by itself (a host's, over ssh, is not its pusher's to
        // wait for): what is left is what still runs after it.
        self.env.wait_for_cleanups();
        let home = [b"HOME=", self.base().join("home").as_os_str().as_bytes()].concat();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name();
            if !name.as_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            // Gone already, or a zombie (its environment reads empty): neither runs.
            let Ok(environ) = fs::read(entry.path().join("environ")) else {
                continue;
            };
            if !environ.split(|b| *b == 0).any(|var| var == home.as_slice()) {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{} {}", name.to_string_lossy(), cmdline.trim()));
        }
        found
    }

    /// The ssh processes (ControlMasters) this server's hook started as a primary, as "pid
    /// cmdline": a master's process title overwrites its environment, so [`Server::processes`]
    /// cannot see it, and its title names a socket relative to the directory it runs in
    /// (`ssh: <pid>/<hash> [mux]`), so the directory it runs in is what finds it.
    pub fn ssh_masters(&self) -> Vec<String> {
        let dir = self.root.join(".atomdeploy/ssh");
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cwd) = fs::read_link(entry.path().join("cwd")) else {
                continue;
            };
            if !cwd.starts_with(&dir) {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("ssh") {
                found.push(format!(
                    "{} {}",
                    entry.file_name().to_string_lossy(),
                    cmdline.trim()
                ));
            }
        }
        found
    }

    /// [`Server::assert_nothing_left_behind`], its failure prefixed with `what`.
    #[track_caller]
    pub fn assert_nothing_left_behind_in(&self, what: &str) {
        // The trash is emptied after the push; a deploy has ended once that is over.
        self.env.wait_for_cleanups();
        assert_eq!(
            self.leftovers(),
            Vec::<String>::new(),
            "{what}: left behind in the deploy root"
        );
    }

    /// The number, from 1, of deploy.yml's first line that `is` accepts: where an error about
    /// it must point.
    #[track_caller]
    pub fn config_line(&self, is: impl Fn(&str) -> bool) -> usize {
        let text = fs::read_to_string(self.config_path()).unwrap();
        text.lines()
            .position(is)
            .expect("no such line in deploy.yml")
            + 1
    }

    /// `atomdeploy-hook builds --json`, which must succeed: a row a build.
    #[track_caller]
    pub fn builds_json(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["builds", "--json"]);
        assert_success(&out, "builds --json");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The pid the lock file names as its holder.
    pub fn lock_holder(&self) -> i32 {
        let text = fs::read_to_string(self.root.join(".atomdeploy/lock")).unwrap();
        let pid = serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
            .as_i64()
            .unwrap();
        i32::try_from(pid).unwrap()
    }
}

impl Server {
    /// Makes the hook's processes that reach `point` (see src/infra/fault.rs `hold`) stop
    /// there until [`Hold::release`]; armed by [`Hold::var`] in a push's environment.
    pub fn hold_at(&self, point: &str) -> Hold {
        Hold {
            dir: unique_dir(&self.base(), "hold"),
            point: point.to_string(),
        }
    }

    /// Whether the deploy lock is free: taken and let go at once.
    pub fn lock_is_free(&self) -> bool {
        use fs2::FileExt;
        let file = fs::File::open(self.root.join(".atomdeploy/lock")).unwrap();
        file.try_lock_exclusive().is_ok()
    }
}

/// A process held at a named point; see [`Server::hold_at`].
pub struct Hold {
    dir: PathBuf,
    point: String,
}

impl Hold {
    /// The variable that arms the hold.
    pub fn var(&self) -> (&'static str, String) {
        (
            "ATOMDEPLOY_HOLD",
            format!("{}:{}", self.point, self.dir.display()),
        )
    }

    /// Waits until a process is held; returns its pid.
    #[track_caller]
    pub fn wait_held(&self) -> i32 {
        let held = self.dir.join(format!("{}.held", self.point));
        wait_until(
            Duration::from_secs(60),
            || held.exists(),
            || format!("nothing reached {}", self.point),
        );
        fs::read_to_string(&held).unwrap().parse().unwrap()
    }

    pub fn release(&self) {
        fs::write(self.dir.join(format!("{}.open", self.point)), "").unwrap();
    }
}

impl Drop for Hold {
    /// A test that failed midway leaves no process held for ever.
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(format!("{}.open", self.point)), "");
    }
}

/// Holds deploys inside before_switch; see [`Server::gate_deploys`].
pub struct Gate {
    entered: PathBuf,
    open: PathBuf,
}

impl Gate {
    /// Waits until a deploy, started by `push`, is held at the gate.
    #[track_caller]
    pub fn wait_held(&self, push: &RunningPush) {
        wait_until(
            Duration::from_secs(60),
            || self.entered.exists(),
            || {
                format!(
                    "no deploy reached the gate; the pusher saw:\n{}",
                    push.seen()
                )
            },
        );
    }

    pub fn open(&self) {
        fs::write(&self.open, "").unwrap();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ServerState {
    pub live: Option<String>,
    pub builds: Vec<String>,
    pub shared: Vec<(String, String)>,
}

/// Every path under `dir` with its content (files) or target (links), sorted.
pub fn tree_listing(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = entry.file_type();
        let what = if ft.is_symlink() {
            format!("-> {}", fs::read_link(entry.path()).unwrap().display())
        } else if ft.is_file() {
            String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into_owned()
        } else {
            "/".to_string()
        };
        out.push((rel, what));
    }
    out
}

/// A developer's clone of the server's repository, the working copy pushes come from. (Not
/// `Clone`: that would shadow the std trait in every file that uses it.)
pub struct DevClone {
    pub path: PathBuf,
    env: TestEnv,
}

impl DevClone {
    /// Writes composer.lock for the clone's composer.json (`composer update --no-install`), as
    /// a developer does before committing a dependency change.
    #[track_caller]
    pub fn update_composer_lock(&self) -> &Self {
        let out = self
            .env
            .command("composer")
            .args([
                "update",
                "--no-install",
                "--no-interaction",
                "--no-audit",
                "--quiet",
            ])
            .current_dir(&self.path)
            .output()
            .unwrap();
        assert_success(&out, "composer update --no-install");
        self
    }

    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        let out = self
            .env
            .command("git")
            .args(args)
            .current_dir(&self.path)
            .output()
            .unwrap();
        assert_success(&out, &format!("git {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn write(&self, path: impl AsRef<Path>, content: &str) -> &Self {
        let full = self.path.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        fs::remove_file(self.path.join(path)).unwrap();
        self
    }

    /// Sets the example app's version string, the visible change of most tests.
    pub fn set_version(&self, version: &str) -> &Self {
        self.write(
            "src/Version.php",
            &format!("<?php\n\nnamespace App;\n\nfinal class Version\n{{\n    public const NAME = '{version}';\n}}\n"),
        )
    }

    /// Sets the version, commits and pushes it, which must deploy; returns the commit id.
    #[track_caller]
    pub fn deploy_version(&self, version: &str) -> String {
        self.set_version(version);
        let commit = self.commit(version);
        self.push_main().success();
        commit
    }

    /// Commits everything; returns the commit id.
    #[track_caller]
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    #[track_caller]
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `git push production <args>`, waiting for it.
    #[must_use = "assert on what the pusher saw"]
    pub fn push(&self, args: &[&str]) -> Push {
        let out = self.push_command(args).output().unwrap();
        self.pushed(&out)
    }

    /// What the pusher saw of a push that has ended, once the cleanup it left running is
    /// over too (see [`TestEnv::wait_for_cleanups`]).
    fn pushed(&self, out: &Output) -> Push {
        self.env.wait_for_cleanups();
        Push {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// [`DevClone::push_with_env`] that returns as soon as the push has ended, leaving the
    /// cleanup after it running: the one way to see it run.
    #[must_use = "assert on what the pusher saw"]
    pub fn push_leaving_cleanup(&self, args: &[&str], vars: &[(&str, &str)]) -> Push {
        let out = self
            .push_command(args)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        Push {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Makes `git push production` go through `atomdeploy-hook receive-pack`, as a developer
    /// would, so that its exit status is the deploy's.
    pub fn wrap(&self) {
        self.git(&[
            "config",
            "remote.production.receivepack",
            &format!("{BIN} receive-pack"),
        ]);
    }

    /// Makes `git push production` go through `atomdeploy-hook serve --group-primary`, as a
    /// group's primary pushes to a host that is a local path (git appends the path to the
    /// command), so that the server takes group operations from this clone.
    pub fn drive_as_primary(&self) {
        self.git(&[
            "config",
            "remote.production.receivepack",
            &self.primary_receive_pack(),
        ]);
    }

    /// Undoes [`DevClone::drive_as_primary`]: pushes go to git's own receive-pack again.
    pub fn push_directly(&self) {
        self.git(&["config", "--unset", "remote.production.receivepack"]);
    }

    fn primary_receive_pack(&self) -> String {
        let repo = self.git(&["remote", "get-url", "production"]);
        format!("{BIN} serve --repo '{}' --group-primary", repo.trim())
    }

    /// `git push production <args>` once as the group's primary pushes to a local host:
    /// `--receive-pack` through `serve --group-primary`, and the request in
    /// SSH_ORIGINAL_COMMAND as sshd would set it.
    #[must_use = "assert on what the pusher saw"]
    pub fn group_push(&self, args: &[&str]) -> Push {
        let repo = self.git(&["remote", "get-url", "production"]);
        let mut cmd = self.env.command("git");
        cmd.arg("push")
            .arg("--receive-pack")
            .arg(self.primary_receive_pack())
            .arg("production")
            .args(args)
            .env(
                "SSH_ORIGINAL_COMMAND",
                format!("git-receive-pack '{}'", repo.trim()),
            )
            .current_dir(&self.path);
        let out = cmd.output().unwrap();
        self.pushed(&out)
    }

    /// Runs a `git …` command line the hook printed, word for word (no shell: the printed
    /// commands quote nothing), in this clone; what its pusher saw.
    #[must_use = "assert on what the pusher saw"]
    #[track_caller]
    pub fn run_printed(&self, line: &str) -> Push {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"git"), "not a git command: {line}");
        let out = self
            .env
            .command("git")
            .args(&words[1..])
            .current_dir(&self.path)
            .output()
            .unwrap();
        self.pushed(&out)
    }

    /// `git push production main`.
    #[must_use = "assert on what the pusher saw"]
    pub fn push_main(&self) -> Push {
        self.push(&["main"])
    }

    /// Starts a push and returns while it runs; its output is collected as it comes.
    pub fn spawn_push(&self, args: &[&str]) -> RunningPush {
        self.spawn_push_with_env(args, &[])
    }

    /// [`DevClone::spawn_push`] with `vars` added to the environment.
    pub fn spawn_push_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> RunningPush {
        let mut child = self
            .push_command(args)
            .envs(vars.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&seen);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let mut text = String::from_utf8_lossy(&line.unwrap()).into_owned();
                text.push('\n');
                sink.lock().unwrap().push_str(&text);
            }
        });
        RunningPush {
            child,
            seen,
            reader: Some(reader),
            env: self.env.clone(),
        }
    }

    /// `git push production <args>` with a fault armed in the hook (see src/fault.rs). The push
    /// runs in a process group of its own: the fault kills that whole group, as a dropped
    /// session would, and must not reach the test.
    #[must_use = "assert on what the pusher saw"]
    pub fn push_with_fault(&self, args: &[&str], fault: &str) -> Push {
        let mut cmd = self.push_command(args);
        cmd.env("ATOMDEPLOY_FAULT", fault).process_group(0);
        let out = cmd.output().unwrap();
        self.pushed(&out)
    }

    /// A commit that leaves many loose objects (the 50,000 files of faults.rs) makes git start
    /// `maintenance --detach` in the clone, which would outlive the test, burn the CPU of the
    /// tests that run alongside and race the removal of the temp dir.
    #[track_caller]
    fn no_background_gc(&self) {
        self.git(&["config", "maintenance.auto", "false"]);
        self.git(&["config", "gc.auto", "0"]);
    }

    fn push_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.command("git");
        cmd.arg("push")
            .arg("production")
            .args(args)
            .current_dir(&self.path);
        cmd
    }

    /// `git push production <args>` allowed at most `limit` open descriptors (RLIMIT_NOFILE,
    /// soft and hard, set by prlimit(1)), which the hook inherits and cannot raise.
    #[must_use = "assert on what the pusher saw"]
    pub fn push_with_open_file_limit(&self, limit: u32, args: &[&str]) -> Push {
        let out = self
            .env
            .command("prlimit")
            .arg(format!("--nofile={limit}"))
            .args(["--", "git", "push", "production"])
            .args(args)
            .current_dir(&self.path)
            .output()
            .unwrap();
        self.pushed(&out)
    }

    /// `git push production <args>` with `vars` added to the environment, which the hook
    /// inherits (as it would from an operator's shell or an SSH `SetEnv`).
    #[must_use = "assert on what the pusher saw"]
    pub fn push_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Push {
        let mut cmd = self.push_command(args);
        cmd.envs(vars.iter().copied());
        let out = cmd.output().unwrap();
        self.pushed(&out)
    }

    /// Makes composer.json require a package no repository has, so that `composer install`
    /// fails (not yet committed).
    pub fn require_a_missing_package(&self) {
        let json = fs::read_to_string(self.path.join("composer.json")).unwrap();
        self.write(
            "composer.json",
            &json.replace(
                "\"atomdeploy/greeting\": \"^1.0\"",
                "\"atomdeploy/greeting\": \"^1.0\", \"atomdeploy/missing\": \"^9\"",
            ),
        );
    }
}

/// What the pusher saw.
#[derive(Debug)]
pub struct Push {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Push {
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "push failed:\n{}", self.stderr);
        assert!(
            !self.stderr.contains("remote: error:"),
            "push reported an error:\n{}",
            self.stderr
        );
        self
    }

    /// A push git accepted but whose deploy failed: the hook's `error:` line reached the pusher.
    #[track_caller]
    pub fn deploy_failed(self) -> Self {
        assert!(
            self.stderr.contains("remote: error: "),
            "no error line:\n{}",
            self.stderr
        );
        assert!(
            !self.stderr.contains("remote: deployed "),
            "said deployed:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "expected {text:?} in:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(self, text: &str) -> Self {
        assert!(
            !self.stderr.contains(text),
            "did not expect {text:?} in:\n{}",
            self.stderr
        );
        self
    }

    /// The closing line of a step, without its indent and name: for `composer`, say,
    /// `0.12s: install (first run)`.
    #[track_caller]
    pub fn step_line(&self, step: &str) -> String {
        let prefix = format!("    {step} ");
        self.remote_line(&prefix)
            .map(|l| l[prefix.len()..].to_string())
            .unwrap_or_else(|| panic!("no {step} line:\n{}", self.stderr))
    }

    /// The commands in backticks on the hook's lines that contain `label`, e.g. the retry
    /// advice of a failed push's summary.
    pub fn printed_commands(&self, label: &str) -> Vec<String> {
        self.stderr
            .lines()
            .filter(|l| l.contains(label))
            .filter_map(|l| l.split('`').nth(1))
            .filter(|c| c.starts_with("git "))
            .map(str::to_string)
            .collect()
    }

    /// The line from the hook that starts with `prefix` (without git's `remote: `).
    pub fn remote_line(&self, prefix: &str) -> Option<String> {
        // Through the receive-pack wrapper, its own `error: ` may land at the start of a
        // `remote:` line: two processes write to one stderr.
        self.stderr
            .lines()
            .filter_map(|l| {
                l.strip_prefix("error: ")
                    .unwrap_or(l)
                    .strip_prefix("remote: ")
            })
            .map(|l| l.trim_end())
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    }
}

pub struct RunningPush {
    child: Child,
    seen: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    env: TestEnv,
}

impl RunningPush {
    /// Waits until the pusher has seen `text` (the push still running), failing after a minute.
    #[track_caller]
    pub fn wait_for_output(&self, text: &str) {
        wait_until(
            Duration::from_secs(60),
            || self.seen.lock().unwrap().contains(text),
            || {
                format!(
                    "{text:?} never showed; so far:\n{}",
                    self.seen.lock().unwrap()
                )
            },
        );
    }

    /// What the pusher has seen so far.
    pub fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Whether the push is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn finish(mut self) -> Push {
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        self.env.wait_for_cleanups();
        let stderr = self.seen.lock().unwrap().clone();
        Push {
            code: status.code(),
            stderr,
        }
    }
}

/// Polls `done` until it holds; a test's way to wait for another process without guessing
/// how long it takes.
#[track_caller]
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{}", why());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique_dir(base: &Path, prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(base)
        .unwrap()
        .keep()
}

/// Copies a fixture (files, links, modes), without what composer made in it.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in walkdir::WalkDir::new(from)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != "vendor")
    {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).unwrap().permissions().mode() & 0o111 != 0
}

/// Taken by the few tests that must not overlap one another now that every test shares one
/// process: the two that run nginx and php-fpm (a dozen processes, one of them under load)
/// and the one that traces every syscall of a deploy. Everything else runs alongside them.
/// Not the 200 MB tree of faults.rs: it runs for a minute or more, and the trace test,
/// started right after it in name order, would hold one of the test threads idle meanwhile.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // A test that failed while holding it poisoned it; the next may run all the same.
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`wait_until`] that says whether `done` came to hold instead of failing; for a `Drop`.
pub fn wait_until_quietly(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

impl Server {
    /// Another deploy root of this server's repository (environments, see
    /// tests/integration/environments.rs): the same repository and environment, `root`
    /// instead, not installed yet (`run_install` on it does).
    pub fn other_root(&self, root: &Path) -> Server {
        Server {
            _tmp: tempfile::tempdir().unwrap(),
            repo: self.repo.clone(),
            root: root.to_path_buf(),
            env: self.env.clone(),
        }
    }
}

/// The `state` of `build` in `builds --json`'s rows.
#[track_caller]
pub fn build_state(rows: &[serde_json::Value], build: &str) -> String {
    rows.iter()
        .find(|r| r["name"] == build)
        .unwrap_or_else(|| panic!("{build} not listed"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

impl Server {
    /// Rewrites the hook `install` wrote as `script`, in which `{hook}` stands for the
    /// installed command (without its `exec`): how a test runs one host of a group in a
    /// session of its own, arms a fault in it alone, or makes it say what a broken hook would.
    /// The installed hook is kept beside it, each call wrapping that one.
    pub fn wrap_hook(&self, script: &str) {
        let hook = self.repo.join("hooks/post-receive");
        let kept = self.repo.join("hooks/post-receive.installed");
        if !kept.exists() {
            fs::copy(&hook, &kept).unwrap();
        }
        let text = fs::read_to_string(&kept).unwrap();
        let command = text
            .lines()
            .find_map(|line| line.strip_prefix("exec "))
            .unwrap_or_else(|| panic!("no exec line in the hook:\n{text}"));
        fs::write(
            &hook,
            format!("#!/bin/sh\n{}\n", script.replace("{hook}", command)),
        )
        .unwrap();
    }
}
