//! A hostile review of issue #13 (doctor, install --web-user, environments): each test is an
//! attack that once broke something a user would notice.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::harness::{BIN, Server, assert_success};

/// Installs adding roots to one repository at the same moment (two operators, a config
/// management run) each read the hook's list of roots and write it back with their own added:
/// without a lock every install but the last one is lost from the hook, and two of them may
/// both take the repository's own `rollback`/`replay` branches.
#[test]
fn installs_adding_roots_at_once_lose_none() {
    let main = Server::install();
    let roots: Vec<(String, PathBuf)> = (0..6)
        .map(|i| (format!("env{i}"), main.base().join(format!("srv-env{i}"))))
        .collect();
    let running: Vec<_> = roots
        .iter()
        .map(|(branch, root)| {
            main.command(BIN)
                .arg("install")
                .arg("--repo")
                .arg(&main.repo)
                .arg("--root")
                .arg(root)
                .args(["--branch", branch])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in running {
        assert_success(&child.wait_with_output().unwrap(), "a concurrent install");
    }
    let hook = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    for (branch, root) in &roots {
        assert!(
            hook.contains(&format!("'{}'", root.display())),
            "{} lost from the hook: {hook}",
            root.display()
        );
        let own = fs::read_to_string(root.join(".atomdeploy/control-branches")).unwrap();
        assert_eq!(
            own,
            format!("rollback: rollback-{branch}\nreplay: replay-{branch}\n")
        );
    }
    assert!(hook.contains(&format!("--root '{}'", main.root.display())));
}

/// shared/ is where the web server (and whoever breaks into it) writes: `install --web-user`,
/// run as root, must change nothing outside it, whatever it finds there: a symlink to a
/// directory outside, a hard link to a file outside (chmod of one name is the chmod of all),
/// a FIFO (never opened), a socket, a name that is not UTF-8, a deep tree.
#[test]
fn web_user_changes_nothing_outside_shared_through_links() {
    let server = Server::install();
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    fs::write(&secret, "root's").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let before = |p: &PathBuf| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.mode(), m.uid(), m.gid())
    };
    let (secret_before, outside_before) = (before(&secret), before(&outside));

    let shared = server.root.join("shared");
    std::os::unix::fs::symlink(&outside, shared.join("evil")).unwrap();
    fs::hard_link(&secret, shared.join("linked")).unwrap();
    let fifo = std::ffi::CString::new(shared.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    drop(std::os::unix::net::UnixListener::bind(shared.join("sock")).unwrap());
    fs::write(
        shared.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        "x",
    )
    .unwrap();
    let mut deep = shared.join("deep");
    for _ in 0..600 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), "x").unwrap();

    let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_success(&out, "install --web-user");
    assert_eq!(
        before(&secret),
        secret_before,
        "the file outside shared/ changed"
    );
    assert_eq!(
        before(&outside),
        outside_before,
        "the directory outside changed"
    );
    assert!(
        said.contains("linked") && said.contains("other names"),
        "the hard-linked file left alone is named: {said}"
    );
    for name in ["fifo", "sock"] {
        assert_eq!(fs::symlink_metadata(shared.join(name)).unwrap().gid(), 33);
    }
    let name = shared.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    assert_eq!(fs::metadata(&name).unwrap().mode() & 0o070, 0o060);
    assert_eq!(fs::metadata(deep.join("f")).unwrap().gid(), 33);
}

/// `include conf.d/*.conf;` inside a file of conf.d/ is a loop nginx itself dies of (it
/// segfaults): doctor read each of n such files in every order (n!·16 levels) and never
/// finished. It must say which file includes itself, and end.
#[test]
fn doctor_names_an_nginx_include_loop_and_ends() {
    let server = Server::install();
    let conf = server.base().join("nginx");
    fs::create_dir_all(conf.join("conf.d")).unwrap();
    for i in 0..8 {
        fs::write(
            conf.join(format!("conf.d/{i}.conf")),
            format!("include {}/conf.d/*.conf;\n", conf.display()),
        )
        .unwrap();
    }
    fs::write(
        conf.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{ include {}/conf.d/*.conf; server {{ listen 80; root {}/latest/public; }} }}\n",
            conf.display(),
            server.root.display()
        ),
    )
    .unwrap();
    let mut child = server
        .command(BIN)
        .arg("doctor")
        .arg("--root")
        .arg(&server.root)
        .arg("--nginx-config")
        .arg(conf.join("nginx.conf"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("doctor still reading nginx's includes after a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "FAIL     nginx: {}/conf.d/0.conf includes itself",
            conf.display()
        )),
        "{said}"
    );
    assert!(!out.status.success());
}

/// A pool listening on 127.0.0.1:9000 is not reached at [::1]:9000 (two sockets): doctor took
/// them for one pool and then blamed php-fpm for not running; it must say no pool listens
/// there, and name the listen php-fpm understands for IPv6 (`[::1]:9000`, not `::1:9000`).
#[test]
fn doctor_tells_an_ipv4_pool_from_an_ipv6_fastcgi_pass() {
    let server = Server::install();
    let dir = server.base().join("web");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("app.conf"),
        "[app]\nuser = www-data\ngroup = www-data\nlisten = 127.0.0.1:9000\n",
    )
    .unwrap();
    fs::write(
        dir.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{ server {{ listen 80; root {}/latest/public;\n\
             location ~ \\.php$ {{ fastcgi_pass [::1]:9000; }} }} }}\n",
            server.root.display()
        ),
    )
    .unwrap();
    let out = server
        .command(BIN)
        .arg("doctor")
        .arg("--root")
        .arg(&server.root)
        .arg("--nginx-config")
        .arg(dir.join("nginx.conf"))
        .arg("--fpm-pools")
        .arg(dir.join("*.conf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("FAIL     php-fpm pool: no pool in"), "{said}");
    assert!(said.contains("`listen = [::1]:9000`"), "{said}");
}

/// A further root's rollback branch is `rollback-<branch>`; git cannot make it while a branch
/// `rollback-<branch>/…` exists (a ref is a file, and that name is a folder): install took the
/// root, and then each deploy only warned that the rollback branch could not be kept, so
/// `git push production :rollback-staging` had nothing to delete. Refused at install, nothing
/// changed.
#[test]
fn a_branch_in_the_way_of_a_further_roots_rollback_branch_is_refused_at_install() {
    let main = Server::install();
    let clone = main.clone_fixture("example-app");
    clone.commit("v1");
    clone
        .push(&["HEAD:refs/heads/rollback-staging/old"])
        .success();
    let staging = main.other_root(&main.base().join("srv-staging"));
    let hook_before = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    let out = staging.run_install(&main.repo, &["--branch", "staging"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("refs/heads/rollback-staging/old") && said.contains("`rollback-staging`"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap(),
        hook_before
    );
    assert!(!staging.root.exists());
}

/// The hook names each root in a line of sh: a root whose path is not UTF-8 was written with
/// U+FFFD for its bytes (every push then failed on a root that does not exist), and one with a
/// line break cut the line the next install reads the roots from. Refused, nothing made.
#[test]
fn a_root_path_the_hook_cannot_name_is_refused_at_install() {
    let main = Server::install();
    let hook_before = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    for name in [&b"srv-caf\xe9"[..], b"srv\nstaging"] {
        let root = main.base().join(std::ffi::OsStr::from_bytes(name));
        let out = main
            .other_root(&root)
            .run_install(&main.repo, &["--branch", "staging"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains("must be UTF-8 and hold no line break"),
            "{said}"
        );
        assert!(!root.exists());
        assert_eq!(
            fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap(),
            hook_before
        );
    }
}

/// The web user writes in shared/ while root runs `install --web-user` over it: when it swaps
/// a directory for a symlink to one outside, after install listed shared/ and before it got
/// to that directory's files, install must not follow it. strace stops install right after its
/// first change of a group (shared/'s own) and the swap happens then, deterministically.
#[test]
fn web_user_follows_no_directory_swapped_for_a_symlink_while_it_runs() {
    let server = Server::install();
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("b"), "root's").unwrap();
    fs::set_permissions(outside.join("b"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(outside.join("b")).unwrap();
    let shared = server.root.join("shared");
    fs::create_dir(shared.join("a")).unwrap();
    fs::write(shared.join("a/b"), "the app's").unwrap();

    let mut strace = server
        .command("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "trace=lchown,fchown,fchownat"])
        .args(["-e", "inject=lchown,fchown,fchownat:signal=SIGSTOP:when=1"])
        .arg(BIN)
        .arg("install")
        .arg("--repo")
        .arg(&server.repo)
        .arg("--root")
        .arg(&server.root)
        .args(["--web-user", "www-data"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut swapped = false;
    // Once shared/ has its new group, install is past that lchown and, stopped by the signal
    // strace gives it there, runs no code of its own until SIGCONT: the swap lands between
    // its listing of shared/ and its changes below it, every time.
    while strace.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "install never ended");
        if !swapped && fs::metadata(&shared).unwrap().gid() == 33 {
            fs::remove_dir_all(shared.join("a")).unwrap();
            std::os::unix::fs::symlink(&outside, shared.join("a")).unwrap();
            swapped = true;
        }
        if swapped {
            let children = fs::read_to_string(format!(
                "/proc/{}/task/{}/children",
                strace.id(),
                strace.id()
            ))
            .unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: signals the install process this test started.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = strace.wait_with_output().unwrap();
    assert!(swapped, "install never changed a group");
    assert_success(&out, "install --web-user under strace");
    let after = fs::metadata(outside.join("b")).unwrap();
    assert_eq!(
        (after.mode(), after.gid()),
        (before.mode(), before.gid()),
        "install changed a file outside shared/ through the swapped directory"
    );
}

/// shared/ as a symlink the operator made to a data volume is still what install --web-user
/// gives to the web user's group (only links found inside shared/ are left alone).
#[test]
fn web_user_treats_a_shared_folder_that_is_a_symlink_to_a_volume() {
    let server = Server::install();
    let volume = server.base().join("volume");
    fs::create_dir_all(volume.join("uploads")).unwrap();
    fs::write(volume.join("uploads/a.txt"), "a").unwrap();
    let shared = server.root.join("shared");
    fs::remove_dir(&shared).unwrap();
    std::os::unix::fs::symlink(&volume, &shared).unwrap();
    let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
    assert_success(&out, "install --web-user");
    for (path, mode) in [("", 0o2070), ("uploads", 0o2070), ("uploads/a.txt", 0o060)] {
        let meta = fs::metadata(volume.join(path)).unwrap();
        assert_eq!(
            (meta.mode() & mode, meta.gid()),
            (mode, 33),
            "volume/{path}"
        );
    }
}

/// An nginx configuration nested 100,000 blocks deep (nginx -T refuses it, so doctor reads the
/// file itself) overflowed doctor's stack: it aborted instead of reporting. It must end with
/// findings, saying what it did not read.
#[test]
fn doctor_survives_an_nginx_configuration_nested_without_end() {
    let server = Server::install();
    let conf = server.base().join("deep.conf");
    let depth = 100_000;
    fs::write(
        &conf,
        format!(
            "events {{}}\nhttp {{ {}{} }}\n",
            "location / { ".repeat(depth),
            "}".repeat(depth)
        ),
    )
    .unwrap();
    let out = server.run(&["doctor", "--nginx-config", conf.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("blocks nested more than 100 deep"), "{said}");
}
/// `--nginx-config` given relative to where doctor runs: nginx -T read it relative to its own
/// prefix (/usr/share/nginx), failed, and doctor said so, or read another file if one was there.
#[test]
fn doctor_hands_nginx_the_configuration_it_was_given() {
    let server = Server::install();
    let dir = server.base().join("web");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("nginx.conf"), "events {}\nhttp { }\n").unwrap();
    let out = server
        .command(BIN)
        .args(["doctor", "--nginx-config", "web/nginx.conf", "--root"])
        .arg(&server.root)
        .current_dir(server.base())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("(as `nginx -T` prints it)"), "{said}");
}

/// A replay pushed to a root whose deploy.yml is broken fails; the replay branch must go all
/// the same (as after any replay), or the same `git push production <commit>:replay-staging`
/// once deploy.yml is mended is "Everything up-to-date" and deploys nothing.
#[test]
fn a_replay_refused_for_a_broken_deploy_yml_can_be_pushed_again() {
    let main = Server::install();
    let staging = main.other_root(&main.base().join("srv-staging"));
    assert_success(
        &staging.run_install(&main.repo, &["--branch", "staging"]),
        "install of the second root",
    );
    let commit = replay_refused_then_pushed_again(&main, &staging, "replay-staging", || {
        assert_eq!(staging.live(), None);
    });
    assert_eq!(staging.live_revision(), commit);
    assert_eq!(main.live(), None);
}

/// Breaks `root`'s deploy.yml, pushes a new commit of the example app to `replay_branch`
/// (refused, naming the bad key; then `refused` checks what it left), mends deploy.yml and
/// pushes the same again, which must deploy. Returns the commit.
fn replay_refused_then_pushed_again(
    repo: &Server,
    root: &Server,
    replay_branch: &str,
    refused: impl FnOnce(),
) -> String {
    let good = fs::read_to_string(root.config_path()).unwrap();
    fs::write(root.config_path(), format!("{good}no_such_key: 1\n")).unwrap();
    let clone = repo.clone_fixture("example-app");
    clone.set_version("replayed");
    let commit = clone.commit("replayed");
    let refspec = format!("HEAD:refs/heads/{replay_branch}");
    clone
        .push(&[&refspec])
        .deploy_failed()
        .stderr_has("no_such_key");
    refused();

    fs::write(root.config_path(), &good).unwrap();
    clone.push(&[&refspec]).success();
    commit
}

/// Without root, install --web-user reaches each file through a descriptor it opens: a file of
/// the deploy user's own that it may not read (mode 0200: a drop box) is still its own to
/// chmod, and must not fail the install. Here www-data is both the deploy user and the web one.
#[test]
fn web_user_as_its_owner_changes_an_unreadable_file_of_its_own() {
    let server = Server::install();
    let base = server.base();
    let shared = server.root.join("shared");
    fs::write(shared.join("dropbox"), "x").unwrap();
    fs::set_permissions(shared.join("dropbox"), fs::Permissions::from_mode(0o200)).unwrap();
    for dir in [server.repo.clone(), server.root.clone(), base.join("home")] {
        for entry in walkdir::WalkDir::new(dir) {
            std::os::unix::fs::lchown(entry.unwrap().path(), Some(33), Some(33)).unwrap();
        }
    }
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    let out = server
        .command("setpriv")
        .args(["--reuid=33", "--regid=33", "--init-groups", "--"])
        .arg(BIN)
        .arg("install")
        .arg("--repo")
        .arg(&server.repo)
        .arg("--root")
        .arg(&server.root)
        .args(["--web-user", "www-data"])
        .output()
        .unwrap();
    assert_success(&out, "install --web-user as www-data");
    let meta = fs::symlink_metadata(shared.join("dropbox")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o260);
}

/// The same for a repository's only root: its `replay` branch goes even when deploy.yml
/// cannot load, so the push deploys once deploy.yml is mended.
#[test]
fn a_replay_refused_for_a_broken_deploy_yml_of_the_only_root_can_be_pushed_again() {
    let server = Server::install();
    let commit = replay_refused_then_pushed_again(&server, &server, "replay", || {});
    assert_eq!(server.live_revision(), commit);
}
