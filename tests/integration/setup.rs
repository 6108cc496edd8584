//! README.md's "Installing on a server", run as written on this machine: the blocks marked
//! `<!-- setup: … -->` are read from the README and run line by line with bash, as root, with
//! the README's users (`deploy`, `www-data`) and paths (`/srv/app`, `/srv/app.git`,
//! `/etc/nginx/sites-available/app`, `/etc/php/<version>/fpm/pool.d/app.conf`). The developer's
//! blocks push from a clone of the example app over a real sshd to `deploy@example.com`, and
//! fetch the page from nginx; doctor run as `deploy` must pass. Where this machine must differ
//! from a fresh server, the change is in [`CHANGES`], with its reason; nothing else is changed.
//!
//! The test changes the machine itself (a user, /srv, nginx's and php-fpm's configuration):
//! one run at a time (a file lock, across test processes too), refused where those names are
//! already taken by something it did not make, and undone when it ends, pass or panic.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::sshd::{SshClient, Sshd, host_addr};
use crate::harness::users::{DeployUser, is_root};
use crate::harness::web::{Group, free_port, living};
use crate::harness::{BIN, assert_success, copy_tree, exclusive, fixture, wait_until};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// The PHP version the README names; this machine's may differ (see [`CHANGES`]).
const README_PHP: &str = "8.2";

/// What the README makes on the server, undone by [`Machine`] (the PHP version's paths
/// follow this machine's).
const USER: &str = "deploy";
const DIRS: [&str; 2] = ["/srv/app", "/srv/app.git"];
const SITE: &str = "/etc/nginx/sites-available/app";
const SITE_LINK: &str = "/etc/nginx/sites-enabled/app";
const DEFAULT_SITE: &str = "/etc/nginx/sites-enabled/default";

/// Held while the test runs, by any test process on this machine.
const LOCK: &str = "/tmp/atomdeploy-readme-setup.lock";
/// Written before the first change, removed after the last undo: the default site's link as
/// it was, then what the README's lines made, each recorded by identity (a path's inode, the
/// user's uid and home) as soon as the line that made it ran. Only what it records is undone,
/// by a later run too when this one was killed: whatever took those names since is left.
const MARKER: &str = "/var/tmp/atomdeploy-readme-setup.made";

/// How a README line is changed to run here.
enum Change {
    /// Not run.
    Skip,
    /// `from` in the line becomes the value [`Run::value`] gives `to`.
    Replace(&'static str, Value),
    /// The whole line is replaced by what the test does in its place.
    Instead(Value),
}

#[derive(Clone, Copy, Debug)]
enum Value {
    /// The binary `cargo test` built.
    Binary,
    /// A directory first in every PATH the README's lines run with.
    BinDir,
    /// A temporary directory standing for the package's examples.
    Examples,
    /// The site's edit: `listen 80;` becomes `listen 127.0.0.1:<free port>;`, and
    /// `listen [::]:80;` the same port on `[::1]`.
    EditSite,
    /// This machine's PHP version.
    Php,
}

/// Every change made to the README's lines, and why. Besides these, what the lines run finds
/// stand-ins first in PATH or in the environment (see [`Run::environment`]): `sudo` (this
/// machine has none and the test is root: `sudo -u USER` is `runuser -u USER`, a fresh session
/// with USER's groups, with sudo's secure_path), `systemctl` (no systemd here: the test starts,
/// reloads and restarts nginx and php-fpm itself, as their parent), and `example.com`, the
/// server's name, which the developer's ssh (an ssh config's Host alias, through
/// GIT_SSH_COMMAND) and curl (CURL_HOME's `connect-to`) reach on the test's own sshd and nginx.
/// The developer's ssh knows the server's host key beforehand: the first push on a real
/// machine asks to confirm it (answer after checking the key's fingerprint with the server's
/// administrator), which a test cannot type.
const CHANGES: &[(&str, Change, &str)] = &[
    (
        "sudo apt install ./atomdeploy-hook_",
        Change::Skip,
        "the package alternative: the .deb is tested by scripts/check-package; the from-source \
         block runs instead",
    ),
    (
        "sudo apt install git php-cli composer nginx php-fpm build-essential",
        Change::Skip,
        "no network: scripts/install-deps installed them on this machine (and the C compiler \
         is there: `cargo test` built the binary with it)",
    ),
    (
        "cargo build --release",
        Change::Skip,
        "`cargo test` built the binary already (debug)",
    ),
    (
        "target/release/atomdeploy-hook",
        Change::Replace("target/release/atomdeploy-hook", Value::Binary),
        "the binary `cargo test` built",
    ),
    (
        "/usr/local/bin/",
        Change::Replace("/usr/local/bin/", Value::BinDir),
        "the test does not write into /usr/local/bin: a directory of its own, first in PATH",
    ),
    (
        "/usr/share/doc/atomdeploy-hook/examples",
        Change::Replace("/usr/share/doc/atomdeploy-hook/examples", Value::Examples),
        "the test does not write into /usr/share/doc: the from-source block installs the \
         examples into a temporary directory, which the later lines copy from",
    ),
    (
        "sudoedit /etc/nginx/sites-available/app",
        Change::Instead(Value::EditSite),
        "the edit step: server_name stays example.com; `listen 80` becomes 127.0.0.1 and a free \
         port, `listen [::]:80` ::1 and that port, so that the test takes no port of the \
         machine's",
    ),
    (
        "8.2",
        Change::Replace(README_PHP, Value::Php),
        "only where this machine's PHP is not the README's (Debian 12's) 8.2",
    ),
];

/// A fenced block of the README marked `<!-- setup: KIND -->`.
struct Block {
    kind: String,
    /// Its commands, continuation lines joined; comments and blank lines left out.
    lines: Vec<String>,
}

fn marked_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .strip_prefix("<!-- setup: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.by_ref().find(|l| !l.trim().is_empty());
        assert_eq!(
            fence,
            Some("```sh"),
            "`{line}` is not followed by a sh block"
        );
        let mut commands = Vec::new();
        let mut pending = String::new();
        for text in lines.by_ref().take_while(|l| *l != "```") {
            let text = text.trim();
            if pending.is_empty() && (text.is_empty() || text.starts_with('#')) {
                continue;
            }
            match text.strip_suffix('\\') {
                Some(part) => pending.push_str(part),
                None => {
                    pending.push_str(text);
                    commands.push(std::mem::take(&mut pending));
                }
            }
        }
        blocks.push(Block {
            kind: kind.to_string(),
            lines: commands,
        });
    }
    blocks
}

/// The machine as the README leaves it, undone on drop: nginx and php-fpm stopped and
/// reaped, sshd stopped, the user, /srv/app*, the site, the pool and opcache.ini removed,
/// Debian's default site enabled again if it was.
struct Machine {
    php: String,
    nginx: Option<Group>,
    fpm: Option<Group>,
    sshd: Option<Sshd>,
    _lock: fs::File,
}

impl Machine {
    /// The lock, and the README's names free: a leftover of this test's own is undone first;
    /// anything else there is refused.
    fn take(php: &str) -> Machine {
        use fs2::FileExt;
        let lock = fs::File::create(LOCK).unwrap();
        lock.lock_exclusive().unwrap();
        if Path::new(MARKER).exists() {
            undo(php, &read_marker());
        }
        let taken: Vec<String> = made_paths(php)
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .chain(user_exists().then(|| format!("the user `{USER}`")))
            .collect();
        assert!(
            taken.is_empty(),
            "refusing to run: {} exist(s), and this test did not make them (not recorded in \
             {MARKER}). It sets up a server as README.md says, with these very names: run it \
             on a machine of its own, not on one that serves",
            taken.join(", ")
        );
        refuse_what_cannot_be_undone(php);
        let default_site = fs::read_link(DEFAULT_SITE).ok();
        fs::write(
            MARKER,
            format!(
                "{}\n",
                default_site.map_or(String::new(), |t| t.display().to_string())
            ),
        )
        .unwrap();
        Machine {
            php: php.to_string(),
            nginx: None,
            fpm: None,
            sshd: None,
            _lock: lock,
        }
    }

    /// Adds to the marker what of the README's names exists now and is not in it yet: made
    /// by the line that just ran, since the names were free when the test began.
    fn record(&self) {
        let marker = read_marker();
        let mut added = String::new();
        for made in identities(&self.php) {
            if !marker.lines().skip(1).any(|l| l == made) {
                added.push_str(&format!("{made}\n"));
            }
        }
        if !added.is_empty() {
            let mut file = fs::OpenOptions::new().append(true).open(MARKER).unwrap();
            std::io::Write::write_all(&mut file, added.as_bytes()).unwrap();
            file.sync_all().unwrap();
        }
    }

    /// What a `systemctl` line asked for, done as systemd would (its units' ExecReload).
    fn systemctl(&mut self, request: &str, site_port: u16) {
        let fpm_unit = format!("php{}-fpm", self.php);
        match request.split_whitespace().collect::<Vec<_>>()[..] {
            ["reload", "nginx"] => match &self.nginx {
                // Not running yet: without systemd nothing started it.
                None => {
                    let mut nginx = Command::new("nginx");
                    nginx.args(["-g", "daemon off;"]);
                    self.nginx = Some(Group::spawn(nginx, "nginx"));
                }
                Some(_) => {
                    let out = Command::new("nginx")
                        .args(["-s", "reload"])
                        .output()
                        .unwrap();
                    assert_success(&out, "nginx -s reload");
                }
            },
            ["restart", unit] if unit == fpm_unit => {
                if let Some(mut fpm) = self.fpm.take() {
                    fpm.stop(libc::SIGQUIT);
                }
                let mut fpm = Command::new(format!("/usr/sbin/php-fpm{}", self.php));
                fpm.arg("--nodaemonize");
                self.fpm = Some(Group::spawn(fpm, "php-fpm"));
                wait_until(
                    Duration::from_secs(20),
                    || std::os::unix::net::UnixStream::connect("/run/php/app.sock").is_ok(),
                    || "php-fpm's pool `app` does not listen on /run/php/app.sock".to_string(),
                );
            }
            _ => panic!(
                "the README asks `systemctl {request}`; the test knows `reload nginx` and \
                 `restart {fpm_unit}`"
            ),
        }
        if self.nginx.is_some() {
            wait_until(
                Duration::from_secs(20),
                || std::net::TcpStream::connect(("127.0.0.1", site_port)).is_ok(),
                || format!("nginx does not listen on 127.0.0.1:{site_port}"),
            );
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let mut left = Vec::new();
        for (name, group) in [("nginx", self.nginx.take()), ("php-fpm", self.fpm.take())] {
            if let Some(mut group) = group {
                let pgid = group.pgid();
                group.stop(libc::SIGQUIT);
                left.extend(living(&[pgid]).into_iter().map(|p| format!("{name}: {p}")));
            }
        }
        // Its sessions first (the hook, composer), so that the user can be deleted.
        drop(self.sshd.take());
        left.extend(users_processes());
        self.record();
        undo(&self.php, &read_marker());
        if !std::thread::panicking() {
            assert_eq!(left, Vec::<String>::new(), "processes outlived the test");
            let still: Vec<PathBuf> = made_paths(&self.php)
                .into_iter()
                .filter(|p| p.symlink_metadata().is_ok())
                .collect();
            assert!(still.is_empty(), "not removed: {still:?}");
            assert!(!user_exists(), "the user `{USER}` is still there");
        }
    }
}

/// Refuses a machine where the README's lines would change what the test cannot put back:
/// Debian's default site kept as a file, not a link (the README's `rm` deletes it, and only a
/// link is put back), or an nginx or php-fpm of the machine's running (the test's own, started
/// from the same configuration, would take over their pid files and remove them on leaving).
fn refuse_what_cannot_be_undone(php: &str) {
    let default_is_a_file = fs::symlink_metadata(DEFAULT_SITE).is_ok_and(|m| !m.is_symlink());
    assert!(
        !default_is_a_file,
        "refusing to run: {DEFAULT_SITE} is a file, not a link to sites-available, and the \
         README's `rm` would delete it for good"
    );
    for pid_file in [
        "/run/nginx.pid".to_string(),
        format!("/run/php/php{php}-fpm.pid"),
    ] {
        let pid = fs::read_to_string(&pid_file).unwrap_or_default();
        let pid = pid.trim();
        assert!(
            pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists(),
            "refusing to run: the machine's own server runs ({pid_file}: {pid}); the test \
             starts nginx and php-fpm from the same configuration and pid files"
        );
    }
}

/// Everything the README's lines make outside the user's home.
fn made_paths(php: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = DIRS.iter().map(PathBuf::from).collect();
    paths.extend([SITE, SITE_LINK].map(PathBuf::from));
    paths.push(format!("/etc/php/{php}/fpm/pool.d/app.conf").into());
    paths.push(format!("/etc/php/{php}/fpm/conf.d/99-atomdeploy.ini").into());
    paths
}

fn read_marker() -> String {
    fs::read_to_string(MARKER).unwrap_or_default()
}

/// What of the README's names exists, one line each: "path PATH DEV:INO", "user UID HOME-INO".
fn identities(php: &str) -> Vec<String> {
    let mut found: Vec<String> = made_paths(php)
        .into_iter()
        .filter_map(|p| identity(&p))
        .collect();
    if let Some(uid) = uid_of(USER) {
        let home = fs::symlink_metadata(format!("/home/{USER}"))
            .map_or("none".to_string(), |m| format!("{}:{}", m.dev(), m.ino()));
        found.push(format!("user {uid} {home}"));
    }
    found
}

fn identity(path: &Path) -> Option<String> {
    let meta = path.symlink_metadata().ok()?;
    Some(format!(
        "path {} {}:{}",
        path.display(),
        meta.dev(),
        meta.ino()
    ))
}

/// Undoes what `marker` records that is still the same thing (see [`MARKER`]), then removes
/// the marker. The default site's link (its first line) is put back.
fn undo(php: &str, marker: &str) {
    let mut lines = marker.lines();
    let default_site = lines.next().unwrap_or_default();
    let recorded: Vec<&str> = lines.collect();
    let ours = identities(php)
        .into_iter()
        .filter(|made| recorded.contains(&made.as_str()));
    for made in ours {
        if made.starts_with("user ") {
            // -r: its home and mail spool too.
            let _ = Command::new("userdel").args(["-r", USER]).output();
            continue;
        }
        let path = Path::new(made.split(' ').nth(1).unwrap_or_default());
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).unwrap(),
            Ok(_) => fs::remove_file(path).unwrap(),
            Err(_) => {}
        }
    }
    if !default_site.is_empty() && fs::symlink_metadata(DEFAULT_SITE).is_err() {
        std::os::unix::fs::symlink(default_site, DEFAULT_SITE).unwrap();
    }
    let _ = fs::remove_file(MARKER);
}

fn user_exists() -> bool {
    Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success()
}

/// Live processes of the README's user, as "pid cmdline".
fn users_processes() -> Vec<String> {
    let Some(uid) = uid_of(USER) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let zombie = fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        });
        if meta.uid() == uid
            && !zombie
            && entry.file_name().to_string_lossy().parse::<u32>().is_ok()
        {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// This machine's PHP version: the one php-fpm is installed for.
fn php_version() -> String {
    let mut found: Vec<String> = fs::read_dir("/etc/php")
        .expect("php (scripts/install-deps installs it)")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| Path::new(&format!("/usr/sbin/php-fpm{v}")).exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("php-fpm (scripts/install-deps installs it)")
}

/// Where the README's lines run, and with what.
struct Run {
    dir: PathBuf,
    php: String,
    site_port: u16,
}

impl Run {
    fn value(&self, value: Value) -> String {
        match value {
            Value::Binary => BIN.to_string(),
            Value::BinDir => format!("{}/", self.bin_dir().display()),
            Value::Examples => self.dir.join("examples").display().to_string(),
            Value::EditSite => format!(
                "sed -i -e 's/^    listen 80;$/    listen 127.0.0.1:{0}; # the test/' \
                 -e 's/^    listen \\[::\\]:80;$/    listen [::1]:{0}; # the test/' {SITE} \
                 && grep -q 127.0.0.1 {SITE}",
                self.site_port
            ),
            Value::Php => self.php.clone(),
        }
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// `line` as it runs here, or `None` when it is skipped ([`CHANGES`]).
    fn changed(&self, line: &str) -> Option<String> {
        let mut line = line.to_string();
        for (has, change, _why) in CHANGES {
            if !line.contains(has) {
                continue;
            }
            match change {
                Change::Skip => return None,
                Change::Instead(value) => return Some(self.value(*value)),
                Change::Replace(from, value) => line = line.replace(from, &self.value(*value)),
            }
        }
        Some(line)
    }

    /// The stand-ins first in PATH: `sudo` and `systemctl` (see [`CHANGES`]).
    fn stand_ins(&self) {
        let bin = self.bin_dir();
        fs::create_dir_all(&bin).unwrap();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display()
        );
        let scripts = [
            (
                "sudo",
                format!(
                    "#!/bin/sh\n# sudo for root on a machine without it, with sudo's secure_path.\n\
                     PATH='{path}'\nexport PATH\n\
                     if [ \"$1\" = -u ]; then user=$2; shift 2; exec runuser -u \"$user\" -- env PATH=\"$PATH\" \"$@\"; fi\n\
                     exec \"$@\"\n"
                ),
            ),
            (
                "systemctl",
                format!(
                    "#!/bin/sh\n# No systemd here: the test does what was asked once the line ran.\n\
                     echo \"$*\" >> '{}'\n",
                    self.requests().display()
                ),
            ),
        ];
        for (name, text) in scripts {
            fs::write(bin.join(name), text).unwrap();
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn requests(&self) -> PathBuf {
        self.dir.join("systemctl-requests")
    }

    /// The administrator's shell on the server: root, the stand-ins first in PATH.
    fn server(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("bash");
        cmd.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.bin_dir().display()
                ),
            )
            .env("HOME", self.dir.join("admin"))
            .env("LANG", "C.UTF-8")
            .current_dir(dir);
        cmd
    }

    /// The developer's shell, in the app's repository: `example.com` is the test's sshd and
    /// nginx, reached through an ssh config and curl's own configuration.
    fn developer(&self, sshd: &Sshd, client: &SshClient) -> Command {
        let home = self.dir.join("developer");
        fs::create_dir_all(home.join("curl")).unwrap();
        let config = home.join("ssh_config");
        fs::write(
            &config,
            format!(
                "Host example.com\n  HostName {}\n  Port {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {}\n  \
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
                 LogLevel ERROR\n",
                sshd.addr,
                sshd.port,
                client.key.display(),
                client.known_hosts.display()
            ),
        )
        .unwrap();
        fs::write(
            home.join("curl/.curlrc"),
            format!(
                "connect-to = example.com:80:127.0.0.1:{}\nsilent\nshow-error\nfail\nmax-time = 10\n",
                self.site_port
            ),
        )
        .unwrap();
        let mut cmd = Command::new("bash");
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("LANG", "C.UTF-8")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", format!("ssh -F {}", config.display()))
            .env("CURL_HOME", home.join("curl"))
            .current_dir(self.dir.join("app"));
        cmd
    }
}

/// Runs `line` with bash (`-e -o pipefail`) through `shell`; it must succeed.
#[track_caller]
fn run_line(mut shell: Command, line: &str, readme_line: &str) -> Output {
    let out = shell
        .args(["-e", "-o", "pipefail", "-c", line])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Shown when the test fails: every line as it ran, and what it printed.
    eprintln!(
        "$ {line}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "README.md's `{readme_line}` (run as `{line}`) failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The developer's repository: the example app, committed on main.
fn developer_repository(dir: &Path) -> String {
    copy_tree(&fixture("example-app"), dir);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                "user.name=Alice",
                "-c",
                "user.email=alice@example.com",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert_success(&out, &format!("git {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "the example app"]);
    git(&["rev-parse", "HEAD"])
}

#[test]
fn the_readme_server_setup_serves_the_first_page_verbatim() {
    if !is_root() {
        eprintln!("SKIPPED: setting up a server as the README says needs root");
        return;
    }
    let _heavy = exclusive();
    let php = php_version();
    let mut machine = Machine::take(&php);
    let tmp = tempfile::tempdir().unwrap();
    // The binary and the examples are in it, which `deploy` and `www-data` read.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let run = Run {
        dir: tmp.path().to_path_buf(),
        php: php.clone(),
        site_port: free_port(),
    };
    run.stand_ins();
    for dir in ["admin", "app"] {
        fs::create_dir_all(run.dir.join(dir)).unwrap();
    }
    // The administrator's home, where the server's lines run, is closed to other users as
    // Debian 12's adduser makes it: `sudo -u deploy …` starts there.
    fs::set_permissions(run.dir.join("admin"), fs::Permissions::from_mode(0o700)).unwrap();
    let head = developer_repository(&run.dir.join("app"));
    // The developer's key pair, its public half copied to the server as the README says.
    let client = SshClient::new(&run.dir.join("developer/.ssh"));
    fs::copy(client.public_key(), run.dir.join("admin/alice.pub")).unwrap();
    // A stock sshd's way with keys: the user's own authorized_keys, modes checked, a locked
    // account refused; sessions with a login's PATH.
    let sshd = Sshd::builder(&run.dir.join("sshd"))
        .addr(host_addr(180))
        .users_own_keys()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games")
        .start();
    client.trust(&sshd);

    let readme = fs::read_to_string(README).unwrap();
    let blocks = marked_blocks(&readme);
    let kinds: Vec<&str> = blocks.iter().map(|b| b.kind.as_str()).collect();
    for kind in ["server, package", "server, source", "server", "developer"] {
        assert!(
            kinds.contains(&kind),
            "no `<!-- setup: {kind} -->` block in README.md"
        );
    }
    let mut printed = String::new();
    let mut page = None;
    for block in &blocks {
        for line in &block.lines {
            let Some(changed) = run.changed(line) else {
                continue;
            };
            assert!(
                block.kind != "server, package",
                "`{line}` in the package block is not in CHANGES: the test would not run it"
            );
            let out = match block.kind.as_str() {
                "developer" => run_line(run.developer(&sshd, &client), &changed, line),
                "server, source" => run_line(
                    run.server(Path::new(env!("CARGO_MANIFEST_DIR"))),
                    &changed,
                    line,
                ),
                "server" => run_line(run.server(&run.dir.join("admin")), &changed, line),
                other => panic!("`<!-- setup: {other} -->`: which machine is that?"),
            };
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if line.contains(" install --repo ") {
                printed = stdout.clone();
            }
            if line.starts_with("curl ") {
                page = Some(stdout);
            }
            machine.record();
            let requests = fs::read_to_string(run.requests()).unwrap_or_default();
            let _ = fs::remove_file(run.requests());
            for request in requests.lines() {
                machine.systemctl(request, run.site_port);
            }
        }
    }
    machine.sshd = Some(sshd);

    // What install told the developer to run is what the README's developer block runs.
    let developer: Vec<&String> = blocks
        .iter()
        .filter(|b| b.kind == "developer")
        .flat_map(|b| &b.lines)
        .collect();
    for said in ["git remote add production", "git push production"] {
        let printed_line = printed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(said))
            .unwrap_or_else(|| panic!("install printed no `{said}…`:\n{printed}"));
        assert!(
            developer.iter().any(|l| l.as_str() == printed_line),
            "install printed `{printed_line}`; the README's developer block differs"
        );
    }
    let page = page.expect("the README's developer block fetches no page with curl");
    assert!(page.contains("Hello from the example app v1"), "{page}");
    assert!(page.contains(&format!("build: {head}")), "{page}");
    // The server's name may resolve to its IPv6 address first: the app answers there too.
    let v6 = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-H",
            "Host: example.com",
        ])
        .arg(format!("http://[::1]:{}/", run.site_port))
        .output()
        .unwrap();
    let v6_page = String::from_utf8_lossy(&v6.stdout);
    assert!(
        v6.status.success() && v6_page.contains(&format!("build: {head}")),
        "the app is not served over IPv6 ({}): {v6_page}{}",
        v6.status,
        String::from_utf8_lossy(&v6.stderr)
    );
    // The site listens on a port of the test's (CHANGES), where Debian's default site never
    // competes; on the server both want port 80, and a request not naming example.com (by the
    // server's address, say) would get Debian's page. So nginx's own configuration must hold
    // no other server on port 80 once the README's lines ran.
    let others = other_servers_on_port_80();
    assert!(
        others.is_empty(),
        "besides the app's site, nginx serves port 80 with {others:?}: Debian's default site \
         would answer requests that do not name the server"
    );
}

/// `listen` directives on port 80 in nginx's configuration (as `nginx -T` prints it), outside
/// the README's site, as "file: line".
fn other_servers_on_port_80() -> Vec<String> {
    let out = Command::new("nginx").arg("-T").output().unwrap();
    assert_success(&out, "nginx -T");
    let mut file = String::new();
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line
            .strip_prefix("# configuration file ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            file = name.to_string();
            continue;
        }
        let Some(address) = line.trim().strip_prefix("listen ") else {
            continue;
        };
        let address = address.split([' ', ';']).next().unwrap_or_default();
        // `80`, `[::]:80`, `127.0.0.1:80`; an address without a port is port 80 too.
        let port = address.rsplit(':').next().unwrap_or_default();
        let is_80 = port == "80" || (port.parse::<u16>().is_err() && !address.starts_with("unix:"));
        if is_80 && file != SITE_LINK && file != SITE {
            found.push(format!("{file}: {}", line.trim()));
        }
    }
    found
}

/// `install` run as the deploy user before root made its directories: refused before anything
/// is made, with the command that makes them (which then lets install through), not a bare
/// "Permission denied".
#[test]
fn install_where_the_user_may_not_create_says_what_root_runs() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let srv = tempfile::tempdir().unwrap();
    fs::set_permissions(srv.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (root, repo) = (srv.path().join("app"), srv.path().join("app.git"));
    let install = || {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .arg("install")
            .arg("--repo")
            .arg(&repo)
            .arg("--root")
            .arg(&root)
            .args(["--branch", "main"])
            .current_dir(srv.path());
        user.run(&mut cmd)
    };
    let out = install();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let fix = format!(
        "sudo install -d -o {0} -g {0} {1} {2}",
        user.name,
        root.display(),
        repo.display()
    );
    assert!(
        stderr.starts_with(&format!(
            "error: cannot create {}: {} is not writable by {}",
            root.display(),
            srv.path().display(),
            user.name
        )) && stderr.contains(&format!("`{fix}`")),
        "{stderr}"
    );
    assert_eq!(
        fs::read_dir(srv.path()).unwrap().count(),
        0,
        "install made something"
    );
    // The command it names is the fix (`sudo` aside: the test is root).
    let args: Vec<&str> = fix.split(' ').skip(1).collect();
    assert_success(
        &Command::new(args[0]).args(&args[1..]).output().unwrap(),
        &fix,
    );
    let out = install();
    assert_success(&out, "install once root made the directories");
}

/// A run killed before it recorded anything leaves its marker; someone then makes
/// /srv/app.git of their own. The next run must refuse, not take the name for its leftover.
#[test]
fn a_leftover_marker_never_removes_what_the_run_did_not_record() {
    if !is_root() {
        eprintln!("SKIPPED: the README set-up's names are the machine's: needs root");
        return;
    }
    let _heavy = exclusive();
    let php = php_version();
    let theirs = Path::new(DIRS[1]);
    if theirs.symlink_metadata().is_ok()
        || Path::new(MARKER).exists()
        || !Path::new("/srv").is_dir()
    {
        eprintln!(
            "SKIPPED: {} or {MARKER} exists, or /srv does not",
            theirs.display()
        );
        return;
    }
    {
        use fs2::FileExt;
        let lock = fs::File::create(LOCK).unwrap();
        lock.lock_exclusive().unwrap();
        fs::write(MARKER, "\n").unwrap();
    }
    fs::create_dir(theirs).unwrap();
    fs::write(theirs.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    let taken = std::panic::catch_unwind(|| Machine::take(&php));
    let kept = theirs.join("HEAD").exists();
    let _ = fs::remove_dir_all(theirs);
    let _ = fs::remove_file(MARKER);
    assert!(
        kept,
        "a leftover marker removed {}, which it never recorded",
        theirs.display()
    );
    let refusal = taken
        .err()
        .and_then(|e| e.downcast::<String>().ok())
        .expect("the run went ahead with the name taken");
    assert!(
        refusal.contains("refusing to run: /srv/app.git exist(s)"),
        "{refusal}"
    );
}

/// A machine whose default site is a file of its own (not Debian's link): the README's `rm`
/// would delete it, and the test could not put it back. Refused, the file kept.
#[test]
fn a_default_site_that_is_a_file_is_refused_not_deleted() {
    if !is_root() {
        eprintln!("SKIPPED: the README set-up's names are the machine's: needs root");
        return;
    }
    let _heavy = exclusive();
    let php = php_version();
    let Ok(link) = fs::read_link(DEFAULT_SITE) else {
        eprintln!("SKIPPED: {DEFAULT_SITE} is not a link here");
        return;
    };
    let text = fs::read(Path::new(DEFAULT_SITE)).unwrap();
    fs::remove_file(DEFAULT_SITE).unwrap();
    fs::write(DEFAULT_SITE, &text).unwrap();
    let taken = std::panic::catch_unwind(|| Machine::take(&php));
    let kept = fs::symlink_metadata(DEFAULT_SITE).is_ok_and(|m| m.is_file());
    let _ = fs::remove_file(DEFAULT_SITE);
    std::os::unix::fs::symlink(&link, DEFAULT_SITE).unwrap();
    assert!(kept, "{DEFAULT_SITE}, a file, is gone");
    let refusal = taken
        .err()
        .and_then(|e| e.downcast::<String>().ok())
        .expect("the run went ahead, to delete the default site");
    assert!(refusal.contains("is a file, not a link"), "{refusal}");
}
