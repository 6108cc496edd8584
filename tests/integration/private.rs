//! Private composer packages (credentials in the deploy root's auth.json, for composer
//! alone) and `app_dir:` (one directory of a monorepo deployed).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{self, DevClone, Server};

const USER: &str = "deploy-bot";
/// Distinctive, so that a copy of it anywhere in a build can be searched for.
const PASSWORD: &str = "pw-7f3a9c-never-in-a-build";

/// A private composer repository on 127.0.0.1: `packages.json` and one dist zip, both behind
/// HTTP basic auth. Stopped (its thread joined) when dropped.
struct PrivateRepo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Each request: its path and whether it carried the right credentials.
    requests: Arc<Mutex<Vec<(String, bool)>>>,
}

impl PrivateRepo {
    fn start(server: &Server) -> PrivateRepo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let zip = dist_zip(server);
        let packages = serde_json::json!({
            "packages": {
                "acme/secret": {
                    "1.0.0": {
                        "name": "acme/secret",
                        "version": "1.0.0",
                        "type": "library",
                        "dist": {"type": "zip", "url": format!("http://{addr}/dist/secret-1.0.0.zip")},
                        "autoload": {"psr-4": {"Acme\\Secret\\": "src/"}}
                    }
                }
            }
        })
        .to_string();
        let expected = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (Arc::clone(&stop), Arc::clone(&requests));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    serve(stream, &expected, &packages, &zip, &requests);
                }
            })
        };
        PrivateRepo {
            addr,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An auth.json holding the right credentials for this repository.
    fn auth_json(&self) -> String {
        serde_json::json!({
            "http-basic": {self.addr.to_string(): {"username": USER, "password": PASSWORD}}
        })
        .to_string()
    }

    /// How many requests for `path` came with the right credentials.
    fn authorized(&self, path: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|(p, ok)| p == path && *ok).count()
    }
}

impl Drop for PrivateRepo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// Answers one request (and closes the connection): 401 without the credentials.
fn serve(
    mut stream: TcpStream,
    expected: &str,
    packages: &str,
    zip: &[u8],
    requests: &Mutex<Vec<(String, bool)>>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let authorized = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("authorization") && value.trim() == expected
        })
    });
    requests.lock().unwrap().push((path.clone(), authorized));
    let (status, kind, body): (&str, &str, &[u8]) = match (authorized, path.as_str()) {
        (false, _) => ("401 Unauthorized", "text/plain", b"credentials needed\n"),
        (true, "/packages.json") => ("200 OK", "application/json", packages.as_bytes()),
        (true, "/dist/secret-1.0.0.zip") => ("200 OK", "application/zip", zip),
        (true, _) => ("404 Not Found", "text/plain", b"no such file\n"),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !authorized {
        response.push_str("WWW-Authenticate: Basic realm=\"private packages\"\r\n");
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(body);
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The package's dist: a zip made by python3's zipfile.
fn dist_zip(server: &Server) -> Vec<u8> {
    let path = server.base().join("secret-1.0.0.zip");
    let script = "import sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
        \x20   z.writestr('secret/composer.json', '{\"name\": \"acme/secret\", \"autoload\": {\"psr-4\": {\"Acme\\\\\\\\Secret\\\\\\\\\": \"src/\"}}}')\n\
        \x20   z.writestr('secret/src/Vault.php', '<?php\\nnamespace Acme\\\\Secret;\\nfinal class Vault { public const NAME = \"private vault\"; }\\n')\n";
    let out = server
        .command("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    harness::assert_success(&out, "python3 zipfile");
    fs::read(path).unwrap()
}

/// An app that requires the private package (no lock: composer asks the repository on every
/// deploy, as an app does whose lock changed).
fn private_app(server: &Server, repo: &PrivateRepo) -> DevClone {
    let clone = server.empty_clone("private");
    let composer = serde_json::json!({
        "name": "test/private-app",
        "require": {"acme/secret": "^1.0"},
        "repositories": [{"type": "composer", "url": repo.url()}, {"packagist.org": false}],
        "config": {"secure-http": false}
    });
    clone
        .write("composer.json", &composer.to_string())
        .write(
            "public/index.php",
            "<?php\nrequire __DIR__ . '/../vendor/autoload.php';\necho \\Acme\\Secret\\Vault::NAME, \"\\n\";\n",
        );
    clone.commit("private package");
    clone
}

fn write_server_auth(server: &Server, text: &str, mode: u32) -> PathBuf {
    let path = server.root.join("auth.json");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Every path under `dir` (links not followed) whose name is `auth.json` or whose contents
/// hold the password.
fn credentials_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.unwrap();
        let holds = entry.file_type().is_file()
            && fs::read(entry.path())
                .unwrap()
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes());
        if entry.file_name() == "auth.json" || holds {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

/// What each deploy command wrote of `$COMPOSER_AUTH`.
fn seen_by_commands(server: &Server) -> Vec<(String, String)> {
    ["before_switch", "after_switch", "healthcheck"]
        .iter()
        .map(|what| {
            let file = server.base().join(format!("{what}.env"));
            let seen = fs::read_to_string(&file).unwrap_or_else(|_| "(not run)".into());
            let _ = fs::remove_file(&file);
            (what.to_string(), seen.trim().to_string())
        })
        .collect()
}

fn commands_see_no_credentials(server: &Server) {
    let none: Vec<_> = ["before_switch", "after_switch", "healthcheck"]
        .iter()
        .map(|w| (w.to_string(), "none".to_string()))
        .collect();
    assert_eq!(seen_by_commands(server), none);
}

#[test]
fn a_private_package_installs_with_the_servers_auth_json_given_to_composer_alone() {
    let server = Server::install();
    let repo = PrivateRepo::start(&server);
    let base = server.base();
    let record = |what: &str| {
        format!(
            "[\"echo ${{COMPOSER_AUTH:-none}} > {}\"]",
            base.join(format!("{what}.env")).display()
        )
    };
    server.set_config("before_switch", &record("before_switch"));
    server.set_config("after_switch", &record("after_switch"));
    server.set_config(
        "healthcheck",
        &format!(
            "{{command: 'echo ${{COMPOSER_AUTH:-none}} > {}'}}",
            base.join("healthcheck.env").display()
        ),
    );
    let auth = write_server_auth(&server, &repo.auth_json(), 0o600);
    let clone = private_app(&server, &repo);

    // The hook's own environment has credentials too: composer may use them, nothing else.
    let push = clone
        .push_with_env(&["main"], &[("COMPOSER_AUTH", &repo.auth_json())])
        .success();
    assert!(push.step_line("composer").contains("install"), "{push:?}");
    assert_eq!(server.page(), "private vault\n");
    assert!(repo.authorized("/packages.json") >= 1);
    assert_eq!(repo.authorized("/dist/secret-1.0.0.zip"), 1);
    commands_see_no_credentials(&server);
    let first = server.live().unwrap();

    // Without the server's auth.json, composer cannot reach the repository: its own error
    // reaches the pusher and the live build stays. (Its cache would answer instead.)
    fs::remove_file(&auth).unwrap();
    fs::remove_dir_all(base.join("composer-home/cache")).unwrap();
    clone.write("README", "second\n");
    clone.commit("second");
    let before = server.state();
    let push = clone.push_main().deploy_failed();
    let push = push.stderr_has("composer failed");
    assert!(
        push.stderr.contains("URL required authentication") && push.stderr.contains("401"),
        "no auth error from composer:\n{}",
        push.stderr
    );
    server.assert_unchanged_since(&before);
    assert_eq!(server.live().as_deref(), Some(first.as_str()));
    assert_eq!(seen_by_commands(&server)[0].1, "(not run)");

    // Only the hook's COMPOSER_AUTH: composer gets it, the commands still do not.
    clone.write("README", "third\n");
    clone.commit("third");
    let push = clone
        .push_with_env(&["main"], &[("COMPOSER_AUTH", &repo.auth_json())])
        .success();
    assert!(push.step_line("composer").contains("install"));
    commands_see_no_credentials(&server);

    // A committed auth.json: deployed without it, and the pusher is told to remove it.
    write_server_auth(&server, &repo.auth_json(), 0o600);
    clone.write("auth.json", &repo.auth_json());
    clone.commit("credentials committed by mistake");
    let push = clone.push_main().success();
    push.stderr_has("the commit has an auth.json")
        .stderr_has("rotate the credentials");
    assert!(server.root.join("application/auth.json").is_file());
    assert_eq!(server.page(), "private vault\n");
    commands_see_no_credentials(&server);

    for build in server.builds() {
        assert_eq!(
            credentials_in(&server.build_path(&build)),
            Vec::<String>::new(),
            "credentials in builds/{build}"
        );
    }
    assert_eq!(server.builds().len(), 3);
}

#[test]
fn an_unsafe_or_broken_server_auth_json_refuses_the_deploy_before_anything_changes() {
    let server = Server::install();
    let repo = PrivateRepo::start(&server);
    let auth = write_server_auth(&server, &repo.auth_json(), 0o600);
    let clone = private_app(&server, &repo);
    clone.push_main().success();

    let application = || harness::tree_listing(&server.root.join("application"));
    for (text, mode, says) in [
        (
            repo.auth_json(),
            0o644,
            format!("run `chmod 600 {}`", auth.display()),
        ),
        (
            repo.auth_json(),
            0o640,
            format!("run `chmod 600 {}`", auth.display()),
        ),
        (
            repo.auth_json(),
            0o602,
            "other users can read or change it".into(),
        ),
        (
            "{\"http-basic\": {".to_string(),
            0o600,
            "is not valid JSON".into(),
        ),
        ("[]".to_string(), 0o600, "must be a JSON object".into()),
    ] {
        write_server_auth(&server, &text, mode);
        clone.write("README", &says);
        clone.commit(&says);
        let (before, checked_out) = (server.state(), application());
        let push = clone.push_main().deploy_failed().stderr_has(&says);
        // Nothing of the file's contents is shown.
        push.stderr_lacks(PASSWORD).stderr_lacks(USER);
        server.assert_unchanged_since_in(&before, &says);
        assert_eq!(application(), checked_out, "{says}: application/ changed");
    }
    // A FIFO, which a plain open would wait on for ever.
    fs::remove_file(&auth).unwrap();
    let made = server.command("mkfifo").arg(&auth).output().unwrap();
    harness::assert_success(&made, "mkfifo");
    fs::set_permissions(&auth, fs::Permissions::from_mode(0o600)).unwrap();
    clone.write("README", "fifo\n");
    clone.commit("fifo");
    let before = server.state();
    let push = clone.push_main().deploy_failed();
    push.stderr_has("is not a file");
    server.assert_unchanged_since(&before);
    fs::remove_file(&auth).unwrap();

    write_server_auth(&server, &repo.auth_json(), 0o600);
    clone.push_main().success();
}

/// A monorepo: the example app under backend/, a front end beside it.
fn monorepo(server: &Server) -> DevClone {
    let clone = server.empty_clone("monorepo");
    harness::copy_tree(
        &harness::fixture("example-app"),
        &clone.path.join("backend"),
    );
    let ignore = clone.path.join("backend/.gitignore");
    let ignored = fs::read_to_string(&ignore).unwrap() + "/node_modules/\n";
    fs::write(ignore, ignored).unwrap();
    clone
        .write("frontend/package.json", "{\"name\": \"front\"}\n")
        .write("frontend/src/app.js", "console.log('v1');\n")
        .write("frontend/.gitignore", "/node_modules/\n")
        .write("README.md", "monorepo\n");
    clone.commit("monorepo");
    clone
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const BACKEND: &[&str] = &[
    ".gitignore",
    "REVISION",
    "bin",
    "composer-script-ran",
    "composer.json",
    "composer.lock",
    "lib",
    "packages",
    "public",
    "src",
    "storage",
    "vendor",
];

#[test]
fn app_dir_deploys_one_directory_and_composer_skips_changes_outside_it() {
    let server = Server::builder().config("app_dir", "backend/").install();
    let clone = monorepo(&server);
    let push = clone.push_main().success();
    assert!(push.step_line("composer").contains("install (first run)"));
    assert_eq!(top_level(&server.latest()), BACKEND);
    assert!(
        server.page().contains("the example app"),
        "{}",
        server.page()
    );
    // The path package inside backend/ was installed from there.
    assert!(server.latest().join("vendor/atomdeploy/greeting").is_dir());
    let first = server.live().unwrap();

    // A change outside backend/: a new build of the same app, composer skipped.
    clone.write("frontend/src/app.js", "console.log('v2');\n");
    let commit = clone.commit("front end only");
    let push = clone.push_main().success();
    assert!(
        push.step_line("composer")
            .contains("skipped (its inputs and vendor/ are unchanged)"),
        "{}",
        push.stderr
    );
    assert_ne!(server.live().unwrap(), first);
    assert_eq!(server.live_revision(), commit);
    assert_eq!(top_level(&server.latest()), BACKEND);

    // A change to the path package under backend/ is seen.
    clone.write(
        "backend/packages/greeting/src/Extra.php",
        "<?php\nnamespace Atomdeploy\\Greeting;\nfinal class Extra {}\n",
    );
    clone.commit("path package changed");
    let push = clone.push_main().success();
    assert!(
        push.step_line("composer")
            .contains("a path repository changed"),
        "{}",
        push.stderr
    );
    assert!(
        server
            .latest()
            .join("vendor/atomdeploy/greeting/src/Extra.php")
            .is_file()
    );
}

/// Puts something other than a directory (or nothing) at backend/ in a clone.
type MakeBackend = fn(&DevClone);

#[test]
fn a_commit_without_the_app_dir_is_refused_naming_commit_and_path() {
    let server = Server::builder().config("app_dir", "backend").install();
    let clone = monorepo(&server);
    clone.push_main().success();
    let application = harness::tree_listing(&server.root.join("application"));

    // backend/ gone, then a file, then a symlink in its place.
    let cases: [(&str, MakeBackend); 3] = [
        ("has nothing at `backend`", |_| {}),
        ("has a file at `backend`", |c| {
            c.write("backend", "not a directory\n");
        }),
        ("has a symlink at `backend`", |c| {
            std::os::unix::fs::symlink("frontend", c.path.join("backend")).unwrap();
        }),
    ];
    for (says, make) in cases {
        clone.git(&["rm", "-rq", "--ignore-unmatch", "backend"]);
        let _ = fs::remove_dir_all(clone.path.join("backend"));
        let _ = fs::remove_file(clone.path.join("backend"));
        make(&clone);
        let commit = clone.commit(says);
        let before = server.state();
        clone
            .push_main()
            .deploy_failed()
            .stderr_has(&format!("commit {commit} {says}"))
            .stderr_has("app_dir");
        server.assert_unchanged_since_in(&before, says);
        assert_eq!(
            harness::tree_listing(&server.root.join("application")),
            application,
            "{says}: application/ changed"
        );
    }

    // A path repository beside app_dir, which is not deployed.
    clone.git(&["rm", "-rq", "--ignore-unmatch", "backend"]);
    let _ = fs::remove_file(clone.path.join("backend"));
    harness::copy_tree(
        &harness::fixture("example-app"),
        &clone.path.join("backend"),
    );
    let json = clone.path.join("backend/composer.json");
    let text = fs::read_to_string(&json)
        .unwrap()
        .replace("\"packages/greeting\"", "\"../libs/greeting\"");
    fs::write(json, text).unwrap();
    clone.commit("path repository outside app_dir");
    let before = server.state();
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("path repository at `../libs/greeting`, outside app_dir `backend/`");
    server.assert_unchanged_since(&before);
}

#[test]
fn changing_app_dir_checks_application_out_afresh() {
    let server = Server::builder().config("app_dir", "backend/").install();
    let clone = monorepo(&server);
    clone.push_main().success();
    // What a build step leaves in application/, ignored there by the back end's .gitignore,
    // and by the front end's: kept, it would go into the front end's builds.
    fs::create_dir(server.root.join("application/node_modules")).unwrap();
    fs::write(server.root.join("application/node_modules/x.js"), "back\n").unwrap();

    server.set_config("app_dir", "frontend");
    clone.write("frontend/src/app.js", "console.log('v2');\n");
    let commit = clone.commit("front end");
    let push = clone.push_main().success();
    let push = push.stderr_has("app_dir changed from `backend/` to `frontend/`");
    assert!(
        push.step_line("composer")
            .contains("skipped (no composer.json)")
    );
    assert_eq!(
        top_level(&server.latest()),
        [".gitignore", "REVISION", "package.json", "src"]
    );
    assert_eq!(
        top_level(&server.root.join("application")),
        [".gitignore", "package.json", "src"]
    );
    assert_eq!(server.live_revision(), commit);

    // The front end's own node_modules/ is not the whole repository's.
    fs::create_dir(server.root.join("application/node_modules")).unwrap();
    fs::write(server.root.join("application/node_modules/x.js"), "front\n").unwrap();
    server.set_config("app_dir", ".");
    clone.write("README.md", "whole\n");
    clone.commit("whole repository");
    let push = clone.push_main().success();
    push.stderr_has("app_dir changed from `frontend/` to the whole commit");
    assert_eq!(
        top_level(&server.latest()),
        ["README.md", "REVISION", "backend", "frontend"]
    );
    assert!(!server.latest().join("node_modules").exists());
    assert!(!server.latest().join("frontend/node_modules").exists());

    // And back: composer installs afresh for the app it now runs on.
    server.set_config("app_dir", "backend");
    clone.write("README.md", "back\n");
    clone.commit("back end again");
    let push = clone.push_main().success();
    assert!(
        push.step_line("composer").contains("install (first run)"),
        "{}",
        push.stderr
    );
    assert_eq!(top_level(&server.latest()), BACKEND);
    assert!(!server.latest().join("node_modules").exists());
    assert!(server.page().contains("the example app"));
}

#[test]
fn a_deploy_killed_while_app_dir_changes_leaves_the_next_one_to_finish_the_change() {
    for fault in ["removing", "checkout-file@2"] {
        let server = Server::builder().config("app_dir", "backend").install();
        let clone = monorepo(&server);
        clone.push_main().success();
        let live = server.live();
        fs::create_dir(server.root.join("application/node_modules")).unwrap();
        fs::write(server.root.join("application/node_modules/x.js"), "back\n").unwrap();

        server.set_config("app_dir", "frontend");
        clone.write("frontend/src/app.js", "console.log('killed');\n");
        clone.commit("killed");
        let push = clone.push_with_fault(&["main"], fault);
        assert!(!push.stderr.contains("remote: deployed "), "{fault}");
        assert_eq!(server.live(), live, "{fault}: the live build changed");

        clone.write("frontend/src/app.js", "console.log('next');\n");
        let commit = clone.commit("next");
        let push = clone.push_main().success();
        assert_eq!(server.live_revision(), commit, "{fault}");
        assert_eq!(
            top_level(&server.latest()),
            [".gitignore", "REVISION", "package.json", "src"],
            "{fault}: {}",
            push.stderr
        );
        server.assert_nothing_left_behind_in(fault);
    }
}
