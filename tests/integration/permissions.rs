//! `install --web-user`: shared/ given once to the web server's group, so that a php-fpm pool
//! running as www-data and a deploy user that is not root can both change what the other
//! wrote there; and a build the web server wrote into, which the deploy user cannot empty,
//! never fails a deploy.
//!
//! The deploy user is a real throwaway user (useradd, removed on drop); the pool is real
//! php-fpm running as www-data behind real nginx. Both need root: without it these tests say
//! SKIPPED.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::harness::users::{DeployUser, admin, is_root};
use crate::harness::web::WebServer;
use crate::harness::{BIN, DevClone, Push, Server, assert_success};

/// The app: reports its version, and writes or appends, as the pool's user, to a path under
/// the app's root (shared entries among them).
const INDEX: &str = r#"<?php
$root = dirname(__DIR__);
$path = $root . '/' . ($_GET['path'] ?? '');
switch ($_GET['op'] ?? '') {
case 'write':
    @mkdir(dirname($path), 0777, true);
    echo @file_put_contents($path, $_GET['text']) === false ? 'failed' : 'ok';
    break;
case 'append':
    echo @file_put_contents($path, $_GET['text'], FILE_APPEND) === false ? 'failed' : 'ok';
    break;
case 'cache':
    // What a framework's view cache does: a directory of its own, closed to others.
    $ok = @mkdir($path, 0755) && @file_put_contents("$path/compiled.php", '<?php') !== false;
    echo $ok ? 'ok' : 'failed';
    break;
default:
    echo 'version ' . trim(file_get_contents("$root/VERSION"));
}
"#;

/// A server whose root and repository belong to a fresh deploy user (as on a server that user
/// set up), its clone holding the app at `v1`.
fn server_for(user: &DeployUser, shared: &str, keep_builds: &str) -> (Server, DevClone) {
    let server = Server::builder()
        .config("composer", "false")
        .config("shared", shared)
        .config("keep_builds", keep_builds)
        .install();
    let clone = server.empty_clone("app");
    clone.write("public/index.php", INDEX);
    clone.write("VERSION", "v1\n");
    clone.write("cache/.gitkeep", "");
    clone.commit("v1");
    crate::harness::users::hand_over(&server, &clone, user.uid, user.gid);
    (server, clone)
}

/// `install --web-user www-data` as the deploy user.
fn install_as(server: &Server, user: &DeployUser, web_user: &str) -> Output {
    user.run(
        server
            .command(crate::harness::BIN)
            .arg("install")
            .arg("--repo")
            .arg(&server.repo)
            .arg("--root")
            .arg(&server.root)
            .args(["--web-user", web_user]),
    )
}

/// `install --web-user www-data` as the deploy user: must succeed.
#[track_caller]
fn install_ok(server: &Server, user: &DeployUser) {
    let out = install_as(server, user, "www-data");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The deploy user, put in www-data's group, installed with `--web-user www-data` and
/// pushed v1.
#[track_caller]
fn deploying_with_www_data(user: &DeployUser, keep_builds: &str) -> (Server, DevClone) {
    admin(&["usermod", "-aG", "www-data", &user.name]);
    let (server, clone) = server_for(user, "[uploads/]", keep_builds);
    install_ok(&server, user);
    push_as(&server, &clone, user).success();
    (server, clone)
}

/// `git push <repository> HEAD:main` from `clone` as the deploy user.
fn push_as(server: &Server, clone: &DevClone, user: &DeployUser) -> Push {
    crate::harness::users::push_as(server, clone, |cmd| user.run(cmd))
}

/// php-fpm running as www-data, as shipped (and nginx), serving the server's `latest/public`.
fn www_data_pool(server: &Server) -> WebServer {
    WebServer::start_as_shipped(&server.root, &server.base().join("web"))
}

fn get(web: &WebServer, query: &str) -> String {
    let (status, body) = crate::harness::web::get(&web.url(&format!("/?{query}")));
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[test]
fn a_www_data_pool_and_the_deploy_user_each_change_what_the_other_wrote_in_shared() {
    if !is_root() {
        eprintln!("SKIPPED: making a deploy user and a www-data pool needs root");
        return;
    }
    let _heavy = crate::harness::exclusive();
    let user = DeployUser::create();
    let (server, clone) = server_for(&user, "[uploads/]", "5");

    // Not in www-data's group: refused with the fix, before anything changes.
    fs::create_dir_all(server.root.join("shared/uploads")).unwrap();
    std::os::unix::fs::lchown(
        server.root.join("shared/uploads"),
        Some(user.uid),
        Some(user.gid),
    )
    .unwrap();
    let before = server.state();
    let shared_mode = fs::metadata(server.root.join("shared")).unwrap().mode();
    let refused = install_as(&server, &user, "www-data");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains(&format!("usermod -aG www-data {}", user.name)),
        "{said}"
    );
    assert_eq!(server.state(), before);
    assert_eq!(
        fs::metadata(server.root.join("shared")).unwrap().mode(),
        shared_mode
    );

    admin(&["usermod", "-aG", "www-data", &user.name]);
    install_ok(&server, &user);
    push_as(&server, &clone, &user).success();
    let web = www_data_pool(&server);
    assert_eq!(get(&web, ""), "version v1");

    // The web server writes uploads (a directory of its own among them) through a request.
    assert_eq!(get(&web, "op=write&path=uploads/2026/a.txt&text=web"), "ok");
    assert_eq!(get(&web, "op=write&path=uploads/b.txt&text=web"), "ok");
    let uploads = server.root.join("shared/uploads");
    assert_eq!(fs::metadata(uploads.join("2026/a.txt")).unwrap().uid(), 33);
    // The deploy user changes and deletes them, and makes files of its own (umask 022)...
    user.sh(
        &uploads,
        "echo deploy >> 2026/a.txt && rm b.txt && echo deploy > 2026/c.txt && echo deploy > d.txt",
    );
    // ...which the web server can change in turn.
    assert_eq!(get(&web, "op=append&path=uploads/d.txt&text=-web"), "ok");
    assert_eq!(
        get(&web, "op=append&path=uploads/2026/c.txt&text=-web"),
        "ok"
    );
    // Installing again, over the web server's files, changes nothing and complains of nothing.
    install_ok(&server, &user);

    // The next deploy keeps them, and an entry it adds to shared/ (seeded from the commit)
    // gets the same treatment.
    clone.write("VERSION", "v2\n");
    clone.write("logs/.gitkeep", "");
    clone.commit("v2");
    server.set_config("shared", "[uploads/, logs/]");
    push_as(&server, &clone, &user).success();
    assert_eq!(get(&web, ""), "version v2");
    assert_eq!(
        fs::read_to_string(uploads.join("2026/a.txt")).unwrap(),
        "webdeploy\n"
    );
    assert_eq!(
        fs::read_to_string(uploads.join("d.txt")).unwrap(),
        "deploy\n-web"
    );
    assert!(!uploads.join("b.txt").exists());
    assert_eq!(get(&web, "op=write&path=logs/app.log&text=web"), "ok");
    user.sh(&server.root.join("shared/logs"), "echo deploy >> app.log");

    // Builds stay the deploy user's, readable (not writable) by the pool, though the push
    // ran with a umask of 077.
    let live = server.build_path(&server.live().unwrap());
    let index = fs::metadata(live.join("public/index.php")).unwrap();
    assert_eq!(index.uid(), user.uid);
    assert_eq!(index.mode() & 0o004, 0o004, "others read the build");
    assert_eq!(get(&web, "op=write&path=public/x.php&text=x"), "failed");
    web.stop_leaving_nothing();
    assert_eq!(server.processes(), Vec::<String>::new());
}

#[test]
fn a_directory_the_web_server_made_in_a_build_never_fails_a_deploy() {
    if !is_root() {
        eprintln!("SKIPPED: making a deploy user and a www-data pool needs root");
        return;
    }
    let _heavy = crate::harness::exclusive();
    let user = DeployUser::create();
    let (server, clone) = deploying_with_www_data(&user, "1");
    let v1 = server.live().unwrap();
    // The usual advice for a cache the app cannot write: `chmod 777`. The pool then makes a
    // directory of its own in the build, which the deploy user cannot empty.
    fs::set_permissions(
        server.build_path(&v1).join("cache"),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let web = www_data_pool(&server);
    assert_eq!(get(&web, "op=cache&path=cache/views"), "ok");
    web.stop_leaving_nothing();

    let deploy = |version: &str| {
        clone.write("VERSION", &format!("{version}\n"));
        clone.commit(version);
        let push = push_as(&server, &clone, &user).success();
        assert_eq!(server.read_live("VERSION"), format!("{version}\n"));
        server.assert_only_complete_builds(&["uploads"]);
        assert_eq!(server.builds(), [server.live().unwrap()], "keep_builds: 1");
        push
    };
    // keep_builds: 1 removes v1: it leaves builds/ whole, in one rename, and stays in the
    // trash with a warning that names the directory and the fix. Its files are deleted after
    // the push: the warning is in the deploy's output, which `log` shows.
    deploy("v2");
    let log = server.run(&["log"]);
    crate::harness::assert_success(&log, "log");
    let log = String::from_utf8(log.stdout).unwrap();
    let warning = log
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        warning.contains("its cache/views belongs to www-data (mode 755)")
            && warning.contains("sudo rm -rf"),
        "{warning}"
    );
    let trash = server.root.join(".atomdeploy/trash");
    assert_eq!(fs::read_dir(&trash).unwrap().count(), 1);
    assert!(!server.build_path(&v1).exists());
    // The next deploy tries again, warns again, and succeeds.
    let push = deploy("v3");
    assert!(
        push.stderr.contains("its cache/views belongs to www-data"),
        "{}",
        push.stderr
    );

    // Once the operator fixed it, the next deploy deletes it.
    let parked: Vec<PathBuf> = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for entry in walkdir::WalkDir::new(&parked[0]) {
        std::os::unix::fs::lchown(entry.unwrap().path(), Some(user.uid), None).unwrap();
    }
    let push = deploy("v4");
    assert!(!push.stderr.contains("warning:"), "{}", push.stderr);
    server.assert_nothing_left_behind();
    assert_eq!(server.processes(), Vec::<String>::new());
}

#[test]
fn a_deploy_user_that_left_the_group_is_refused_before_shared_changes() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let (server, clone) = deploying_with_www_data(&user, "5");
    admin(&["gpasswd", "--delete", &user.name, "www-data"]);

    // A new entry, seeded from the commit, could not be given to www-data's group.
    clone.write("logs/.gitkeep", "");
    clone.commit("v2");
    server.set_config("shared", "[uploads/, logs/]");
    let before = server.state();
    let push = push_as(&server, &clone, &user);
    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains("belongs to group `www-data` (install --web-user)")
            && error.contains(&format!("usermod -aG www-data {}", user.name)),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert!(!server.root.join("shared/logs").exists());
}

#[test]
fn install_with_an_unknown_web_user_is_refused_and_changes_nothing() {
    let server = Server::install();
    fs::create_dir_all(server.root.join("shared/uploads")).unwrap();
    let before = server.state();
    let mode = |p: &str| fs::metadata(server.root.join(p)).unwrap().mode();
    let modes = (mode("shared"), mode("shared/uploads"));
    let hook = fs::read(server.repo.join("hooks/post-receive")).unwrap();
    let out = server.run_install(&server.repo, &["--web-user", "nosuchuser"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("there is no user `nosuchuser` on this server"),
        "{said}"
    );
    assert_eq!(server.state(), before);
    assert_eq!((mode("shared"), mode("shared/uploads")), modes);
    assert_eq!(
        fs::read(server.repo.join("hooks/post-receive")).unwrap(),
        hook
    );

    // A root that does not exist yet is not made either.
    let fresh = server.base().join("fresh");
    let out = server
        .command(crate::harness::BIN)
        .arg("install")
        .arg("--repo")
        .arg(server.base().join("fresh.git"))
        .arg("--root")
        .arg(&fresh)
        .args(["--web-user", "nosuchuser"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!fresh.exists() && !server.base().join("fresh.git").exists());
}

/// A ramfs mounted for one test (a filesystem without extended attributes, so without ACLs),
/// unmounted when dropped.
struct Ramfs(PathBuf);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn without_acls_shared_is_still_setgid_and_group_writable_and_install_says_what_is_missing() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a ramfs (a filesystem without ACLs) needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t ramfs");
    let ramfs = Ramfs(dir.path().to_path_buf());
    let server = Server::builder().root(&ramfs.0.join("srv")).install();
    fs::create_dir_all(server.root.join("shared/uploads/2026")).unwrap();
    fs::write(server.root.join("shared/uploads/2026/a.txt"), "a").unwrap();
    let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("this filesystem has no POSIX ACLs").count(),
        1,
        "said once: {said}"
    );
    assert!(said.contains("UMask=0002"), "{said}");
    for (path, mode) in [
        ("shared", 0o2775),
        ("shared/uploads", 0o2775),
        ("shared/uploads/2026", 0o2775),
        ("shared/uploads/2026/a.txt", 0o664),
    ] {
        let meta = fs::metadata(server.root.join(path)).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (mode, 33), "{path}");
    }
    drop(server);
}

/// The app of the secret tests: shows a value from the shared .env, as a framework's Dotenv
/// would read it.
const ENV_INDEX: &str = r#"<?php
$env = parse_ini_file(dirname(__DIR__) . '/.env');
echo $env === false ? 'no .env' : 'greeting: ' . $env['GREETING'];
"#;

/// A clone with a `.env` and a `config/auth.json` committed (what `shared:` seeds from), and
/// a file of another name beside them.
fn clone_with_secrets(server: &Server) -> DevClone {
    let clone = server.empty_clone("app");
    clone.write("public/index.php", ENV_INDEX);
    clone.write(".env", "GREETING=hello from .env\n");
    clone.write("config/auth.json", "{\"http-basic\": {}}\n");
    clone.write("config/app.php", "<?php\n");
    clone.commit("v1");
    clone
}

fn mode_and_group(path: &std::path::Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.gid())
}

#[test]
fn secrets_seeded_into_shared_are_0640_for_the_web_servers_group_whatever_the_umask() {
    if !is_root() {
        eprintln!("SKIPPED: making a deploy user and a www-data pool needs root");
        return;
    }
    let _heavy = crate::harness::exclusive();
    for umask in [0o077, 0o022] {
        let user = DeployUser::create();
        admin(&["usermod", "-aG", "www-data", &user.name]);
        let server = Server::builder()
            .config("composer", "false")
            .config("shared", "[.env, config/]")
            .install();
        let clone = clone_with_secrets(&server);
        crate::harness::users::hand_over(&server, &clone, user.uid, user.gid);
        install_ok(&server, &user);
        user.push_with_umask(&server, &clone, umask).success();
        let shared = server.root.join("shared");
        for secret in [".env", "config/auth.json"] {
            assert_eq!(
                mode_and_group(&shared.join(secret)),
                (0o640, 33),
                "{secret}, umask {umask:03o}"
            );
        }
        // Only secrets: the rest of what was seeded is as install --web-user makes it.
        assert_eq!(
            mode_and_group(&shared.join("config/app.php")).0 & 0o064,
            0o064
        );
        // The pool, www-data, still reads it through its group.
        let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
        assert_eq!(get(&web, ""), "greeting: hello from .env");
        web.stop_clean();
    }
}

/// Doctor's lines of `check`: (level, message, fix).
fn doctor_lines(server: &Server, check: &str) -> Vec<(String, String, String)> {
    let out = server.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let start = format!(" {check}: ");
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.starts_with(' ') && l.contains(&start))
        .map(|(i, l)| {
            let (level, message) = l.split_once(&start).unwrap();
            let fix = lines
                .get(i + 1)
                .and_then(|f| f.trim_start().strip_prefix("fix: "))
                .unwrap_or("");
            (
                level.trim().to_string(),
                message.to_string(),
                fix.to_string(),
            )
        })
        .collect()
}

#[test]
fn a_seeded_secret_is_closed_to_others_and_doctor_warns_when_one_is_not() {
    // Root deploys with the test's umask; shared/ not given to a web user.
    let server = Server::builder()
        .config("composer", "false")
        .config("shared", "[.env, config/]")
        .install();
    let clone = clone_with_secrets(&server);
    clone.push_main().success();
    let env = server.root.join("shared/.env");
    assert_eq!(mode_and_group(&env).0, 0o640);
    let said = doctor_lines(&server, "secrets");
    assert!(
        said.iter().all(|(level, ..)| level == "ok") && !said.is_empty(),
        "{said:?}"
    );

    // The operator wrote it again with a umask of 022.
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    let said = doctor_lines(&server, "secrets");
    let warned: Vec<_> = said
        .iter()
        .filter(|(level, ..)| level == "warning")
        .collect();
    assert_eq!(warned.len(), 1, "{said:?}");
    let (_, message, fix) = warned[0];
    assert!(
        message.contains(&format!(
            "{} is readable by every user of the server (mode 644)",
            env.display()
        )),
        "{message}"
    );
    let chmod = format!("chmod 640 {}", env.display());
    assert!(fix.contains(&format!("`{chmod}`")), "{fix}");
    // The fix it gives is enough.
    server.run_fix(&chmod);
    let said = doctor_lines(&server, "secrets");
    assert!(said.iter().all(|(level, ..)| level == "ok"), "{said:?}");
}

/// install's one-line notes when what it leaves is not what the shipped pool (www-data)
/// expects: no `--web-user` where www-data exists, or a `--web-user` that owns the root.
#[test]
fn install_notes_a_shared_dir_not_given_to_www_data_and_a_web_user_that_owns_the_root() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let (server, _clone) = server_for(&user, "[uploads/]", "5");
    let notes = |out: &Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("note: "))
            .map(str::to_string)
            .collect()
    };
    // Without --web-user: shared/ is not www-data's, and the note says how to make it so.
    let said = notes(&user.install(&server, &[]));
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains(&format!(
            "{}/shared is not given to www-data, the user the shipped php-fpm pool runs as",
            server.root.display()
        )) && said[0].contains(&format!("usermod -aG www-data {}", user.name))
            && said[0].contains(&format!(
                "atomdeploy-hook install --repo {} --root {} --web-user www-data",
                server.repo.display(),
                server.root.display()
            )),
        "{said:?}"
    );
    // --web-user naming the deploy user itself: its pool could write every build.
    let said = notes(&user.install(&server, &["--web-user", &user.name]));
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains(&format!(
            "`{}` owns {}, so a php-fpm pool running as it can write into every build",
            user.name,
            server.root.display()
        )) && said[0].contains("`user = www-data`"),
        "{said:?}"
    );
    // The model: nothing to say, then or after.
    admin(&["usermod", "-aG", "www-data", &user.name]);
    assert_eq!(
        notes(&install_as(&server, &user, "www-data")),
        Vec::<String>::new()
    );
    assert_eq!(notes(&user.install(&server, &[])), Vec::<String>::new());
}

/// `snapshot: link` links a file unchanged since the live build to the live build's copy, but
/// never a shared entry: a `.env` that becomes one in a later deploy is closed to others in
/// shared/ without changing the live build's copy, which serves until the switch.
#[test]
fn a_secret_shared_in_a_later_deploy_leaves_the_earlier_builds_copy_as_it_was() {
    let server = Server::builder()
        .config("composer", "false")
        .config("shared", "[config/]")
        .install();
    let clone = clone_with_secrets(&server);
    clone.push_main().success();
    let v1 = server.build_path(&server.live().unwrap());
    let before = mode_and_group(&v1.join(".env")).0;
    assert_eq!(before & 0o004, 0o004, "the build's .env is readable by all");

    server.set_config("shared", "[config/, .env]");
    clone.write("VERSION", "v2\n");
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.build_path(&server.live().unwrap());
    assert_ne!(v1, v2);
    let shared = server.root.join("shared/.env");
    assert_eq!(mode_and_group(&shared).0, 0o640);
    assert_eq!(
        fs::read_to_string(&shared).unwrap(),
        "GREETING=hello from .env\n"
    );
    let earlier = fs::metadata(v1.join(".env")).unwrap();
    assert_eq!(earlier.mode() & 0o7777, before, "v1's .env was changed");
    assert_ne!(earlier.ino(), fs::metadata(&shared).unwrap().ino());
}

/// The operator keeps the secret elsewhere and links it: shared/.env is a symlink to a file
/// outside shared/. Neither a deploy, nor install --web-user, nor doctor changes that file
/// through the link; it is the operator's, mode and group as they made them.
#[test]
fn a_secret_linked_from_elsewhere_is_never_changed_through_the_link() {
    let server = Server::builder()
        .config("composer", "false")
        .config("shared", "[.env, config/]")
        .install();
    let elsewhere = server.base().join("secrets");
    fs::create_dir_all(&elsewhere).unwrap();
    let target = elsewhere.join("app.env");
    fs::write(&target, "APP_KEY=kept-elsewhere\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o604)).unwrap();
    fs::create_dir_all(server.root.join("shared")).unwrap();
    std::os::unix::fs::symlink(&target, server.root.join("shared/.env")).unwrap();
    let before = mode_and_group(&target);
    clone_with_secrets(&server).push_main().success();
    assert_eq!(mode_and_group(&target), before, "a deploy changed it");
    if crate::harness::users::is_root() {
        let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
        crate::harness::assert_success(&out, "install --web-user www-data");
        assert_eq!(mode_and_group(&target), before, "install changed it");
    }
    doctor_lines(&server, "secrets");
    assert_eq!(mode_and_group(&target), before, "doctor changed it");
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "APP_KEY=kept-elsewhere\n"
    );
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
        .args(install_for_www_data(&server))
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
        .args(install_for_www_data(&server))
        .output()
        .unwrap();
    assert_success(&out, "install --web-user as www-data");
    let meta = fs::symlink_metadata(shared.join("dropbox")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o260);
}

/// The binary and its arguments installing `server`'s repository and root with www-data as
/// the web user, for a command that runs it under another program (strace, setpriv).
fn install_for_www_data(server: &Server) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![BIN.into(), "install".into(), "--repo".into()];
    args.extend([
        server.repo.clone().into(),
        "--root".into(),
        server.root.clone().into(),
    ]);
    args.extend(["--web-user".into(), "www-data".into()]);
    args
}
