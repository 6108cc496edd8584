//! Composer runs only as much as a commit needs, and the result is always what a full
//! `composer install` would make of that commit: also without a committed composer.lock, and
//! keeping the files the commit tracks under vendor/. A composer run that failed is named by
//! the next one, and composer gone from PATH fails the deploy changing nothing.

use crate::harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{DevClone, Server};

/// The class map composer wrote into the live build.
fn classmap(server: &Server) -> String {
    server.read_live("vendor/composer/autoload_classmap.php")
}

fn push_expecting(clone: &DevClone, composer_did: &str) -> harness::Push {
    let push = clone.push_main().success();
    // The step's closing line: `    composer 0.12s: install (first run)`.
    let line = push.step_line("composer");
    assert!(
        line.contains(composer_did),
        "expected composer to {composer_did:?}, got: {line}"
    );
    push
}

/// The class map a fresh `composer install` (the configured arguments) makes of `commit`.
fn fresh_classmap(server: &Server, commit: &str) -> String {
    let dir = fresh_install_of_archive(server, commit);
    fs::read_to_string(dir.join("vendor/composer/autoload_classmap.php")).unwrap()
}

/// `commit`'s files from `git archive` (no repository's metadata, as in application/), and
/// the configured `composer install` run there by hand, outside the hook.
fn fresh_install_of_archive(server: &Server, commit: &str) -> PathBuf {
    let dir = server.base().join(format!("fresh-{commit}"));
    fs::create_dir(&dir).unwrap();
    let archive = server.repo_git(&["archive", commit]);
    let mut tar = server
        .command("tar")
        .arg("-x")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive).unwrap();
    assert!(tar.wait().unwrap().success());
    let out = server
        .command("composer")
        // What the hook runs by default, from the crate itself rather than a copy of it.
        .args(atomdeploy_hook::config::DEFAULT_COMPOSER_ARGS)
        .current_dir(&dir)
        .output()
        .unwrap();
    harness::assert_success(&out, "composer install");
    dir
}

/// The root package's name and versions as composer recorded them in `app`'s
/// vendor/composer/installed.php (not its path, which names `app`).
fn root_package(server: &Server, app: &Path) -> String {
    let out = server
        .command("php")
        .arg("-r")
        .arg("$r = (require $argv[1])['root']; unset($r['install_path']); var_export($r);")
        .arg(app.join("vendor/composer/installed.php"))
        .output()
        .unwrap();
    harness::assert_success(&out, "php reading installed.php");
    String::from_utf8(out.stdout).unwrap()
}

/// The hook tells composer the root package's version rather than let it ask git, hg, fossil
/// and svn about a checkout none of them knows (a dozen processes a run): what composer
/// records is still what it finds out by itself in the same files, and a `version` in
/// composer.json still wins.
#[test]
fn the_root_package_version_is_the_one_composer_finds_by_itself() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let by_itself = root_package(&server, &fresh_install_of_archive(&server, &clone.head()));
    assert!(
        by_itself.contains("'pretty_version' => '1.0.0+no-version-set'"),
        "{by_itself}"
    );
    assert_eq!(root_package(&server, &server.latest()), by_itself);

    let manifest = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    let versioned = manifest.replacen('{', "{\n    \"version\": \"2.3.4\",", 1);
    clone
        .write("composer.json", &versioned)
        .commit("the app says its version");
    push_expecting(&clone, "install");
    let by_itself = root_package(&server, &fresh_install_of_archive(&server, &clone.head()));
    assert!(
        by_itself.contains("'pretty_version' => '2.3.4'"),
        "{by_itself}"
    );
    assert_eq!(root_package(&server, &server.latest()), by_itself);
}

#[test]
fn composer_runs_only_as_much_as_each_commit_needs() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let _ = push_expecting(&clone, "install (first run)");
    assert!(classmap(&server).contains("'Legacy_Helper' => $baseDir . '/lib/Legacy/Helper.php'"));

    // Content only: nothing composer reads changed.
    clone.write("public/robots.txt", "User-agent: *\n");
    clone.commit("content");
    let _ = push_expecting(&clone, "skipped (its inputs and vendor/ are unchanged)");
    assert!(server.latest().join("vendor/autoload.php").is_file());
    assert!(server.page().contains("v1"));

    // A class added under PSR-4: the optimised class map must list it.
    clone.write(
        "src/Added.php",
        "<?php\n\nnamespace App;\n\nfinal class Added {}\n",
    );
    clone.commit("psr-4 class added");
    let push = push_expecting(&clone, "dump-autoload (autoload sources changed)");
    // The autoloader is all dump-autoload writes: the rest was copied while it ran.
    push.stderr_has("of it while composer ran");
    assert!(
        classmap(&server).contains("'App\\\\Added' => $baseDir . '/src/Added.php'"),
        "{}",
        classmap(&server)
    );

    // Under a classmap path: added, moved, removed.
    clone.write("lib/Legacy/Extra.php", "<?php\n\nclass Legacy_Extra {}\n");
    clone.commit("classmap class added");
    let _ = push_expecting(&clone, "dump-autoload");
    assert!(classmap(&server).contains("'Legacy_Extra' => $baseDir . '/lib/Legacy/Extra.php'"));
    clone.git(&["mv", "lib/Legacy/Extra.php", "lib/Moved.php"]);
    clone.commit("classmap class moved");
    let _ = push_expecting(&clone, "dump-autoload");
    assert!(
        classmap(&server).contains("'Legacy_Extra' => $baseDir . '/lib/Moved.php'"),
        "{}",
        classmap(&server)
    );
    clone.remove("lib/Moved.php");
    clone.commit("classmap class removed");
    let _ = push_expecting(&clone, "dump-autoload");
    assert!(!classmap(&server).contains("Legacy_Extra"));
    let commit = clone.head();
    assert_eq!(
        classmap(&server),
        fresh_classmap(&server, &commit),
        "the same as a full install would make"
    );

    // vendor/ damaged by hand in application/: a full install repairs it.
    let app = server.root.join("application");
    fs::remove_file(app.join("vendor/atomdeploy/greeting/src/Greeter.php")).unwrap();
    clone.write("public/robots.txt", "User-agent: none\n");
    clone.commit("content again");
    push_expecting(
        &clone,
        "install into an empty vendor/ (vendor/ was changed since composer last ran)",
    );
    assert!(
        server
            .latest()
            .join("vendor/atomdeploy/greeting/src/Greeter.php")
            .is_file()
    );
    assert!(server.page().contains("Hello from the example app"));

    // A new composer.lock: a full install, with the new version in vendor/.
    release_greeting(&clone, "1.0.1");
    let _ = push_expecting(&clone, "install (composer.json or composer.lock changed)");
    assert!(
        server
            .read_live("vendor/composer/installed.json")
            .contains("\"version\": \"1.0.1\"")
    );
}

#[test]
fn changed_composer_arguments_mean_a_full_install() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config(
        "composer",
        "{args: [install, --no-dev, --no-interaction, --classmap-authoritative]}",
    );
    clone.write("public/robots.txt", "x\n");
    clone.commit("content");
    let _ = push_expecting(&clone, "install (composer arguments changed)");
    assert!(
        server
            .read_live("vendor/composer/autoload_real.php")
            .contains("setClassMapAuthoritative(true)")
    );
}

#[test]
fn the_summary_says_when_composer_was_skipped() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    clone.write("public/robots.txt", "x\n");
    clone.commit("content");
    let push = clone.push_main().success();
    let summary = push.remote_line("deployed ").unwrap();
    assert!(
        summary.contains("(checkout ") && summary.contains(" · composer skipped · snapshot "),
        "{summary}"
    );
}

#[test]
fn changed_files_of_a_path_package_reach_vendor() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    // The package's code changes, its composer.json and the lock do not: composer install
    // alone would keep the old copy in vendor/.
    let greeter = clone.path.join("packages/greeting/src/Greeter.php");
    fs::write(
        &greeter,
        fs::read_to_string(&greeter)
            .unwrap()
            .replace("Hello from", "Howdy from"),
    )
    .unwrap();
    clone.commit("greeting says howdy");
    let _ = push_expecting(
        &clone,
        "install into an empty vendor/ (a path repository changed)",
    );
    assert!(
        server.page().starts_with("Howdy from the example app"),
        "{}",
        server.page()
    );
}

/// Composer writes every file of a package it installs anew. The build links to the live
/// build's copy only the files whose bytes are the same, and copies every other: files of
/// generated sizes around the comparison's 16 KiB reads, each changed (or not) by one byte at
/// a generated place, its size kept, so that only the bytes tell.
#[test]
fn a_reinstalled_package_shares_only_the_files_whose_bytes_did_not_change() {
    use std::os::unix::fs::MetadataExt;
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let mut rng = harness::trees::Rng::new(0x5a3e);
    let sizes = [
        0, 1, 2, 100, 4095, 4096, 16383, 16384, 16385, 32768, 40000, 70001,
    ];
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        for variant in 0..4 {
            let bytes: Vec<u8> = (0..*size).map(|_| rng.next() as u8).collect();
            files.push((format!("data/f{i}-{variant}.bin"), bytes));
        }
    }
    let write = |files: &[(String, Vec<u8>)]| {
        for (name, bytes) in files {
            let path = clone.path.join("packages/greeting").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    };
    write(&files);
    clone.commit("greeting with data");
    clone.push_main().success();
    let first = server.build_path(&server.live().unwrap());

    let mut changed = Vec::new();
    for (name, bytes) in &mut files {
        if bytes.is_empty() || rng.chance(50) {
            continue;
        }
        let places = [0, bytes.len() - 1, 16383, 16384, rng.below(bytes.len())];
        let at = *rng.pick(&places);
        if at < bytes.len() {
            bytes[at] ^= 1 << rng.below(8);
            changed.push(name.clone());
        }
    }
    assert!(changed.len() > 10, "{changed:?}");
    write(&files);
    // A new version in the lock: composer removes the package and writes it anew.
    release_greeting(&clone, "1.0.1");
    let push = push_expecting(&clone, "install (composer.json or composer.lock changed)");
    let second = server.build_path(&server.live().unwrap());
    let same = files.len() - changed.len();
    assert!(
        push.stderr.contains("written anew with the same bytes"),
        "{}",
        push.stderr
    );
    for (name, bytes) in &files {
        let vendored = Path::new("vendor/atomdeploy/greeting").join(name);
        assert_eq!(&fs::read(second.join(&vendored)).unwrap(), bytes, "{name}");
        let shared = fs::metadata(first.join(&vendored)).unwrap().ino()
            == fs::metadata(second.join(&vendored)).unwrap().ino();
        assert_eq!(shared, !changed.contains(name), "{name} ({same} the same)");
    }
    // The package's composer.json changed (its version): copied. The app runs.
    let package = Path::new("vendor/atomdeploy/greeting/composer.json");
    assert_ne!(
        fs::metadata(first.join(package)).unwrap().ino(),
        fs::metadata(second.join(package)).unwrap().ino()
    );
    assert!(
        server.page().starts_with("Hello from the example app"),
        "{}",
        server.page()
    );

    // The next build links them by the record alone: nothing is compared again.
    clone.set_version("v3");
    clone.commit("v3");
    let push = clone.push_main().success();
    assert!(!push.stderr.contains("written anew"), "{}", push.stderr);
    let third = server.build_path(&server.live().unwrap());
    assert_ne!(third, second);
    for (name, _) in &files {
        let vendored = Path::new("vendor/atomdeploy/greeting").join(name);
        assert_eq!(
            fs::metadata(second.join(&vendored)).unwrap().ino(),
            fs::metadata(third.join(&vendored)).unwrap().ino(),
            "{name}"
        );
    }
}

/// A file whose bytes are the same but whose mode is not must not take the live build's
/// copy, mode and all.
#[test]
fn a_file_whose_mode_alone_changed_is_copied_with_its_new_mode() {
    use std::os::unix::fs::MetadataExt;
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let first = server.build_path(&server.live().unwrap());
    let script = "bin/post-install.php";
    let mode = |build: &Path| fs::metadata(build.join(script)).unwrap().mode() & 0o777;
    assert_eq!(mode(&first), 0o444);
    fs::set_permissions(clone.path.join(script), fs::Permissions::from_mode(0o755)).unwrap();
    clone.commit("the script is executable");
    clone.push_main().success();
    let second = server.build_path(&server.live().unwrap());
    assert_eq!(mode(&second), 0o555, "the new mode, read-only");
    assert_eq!(mode(&first), 0o444, "the live build's copy was not changed");
    assert_eq!(
        fs::read(first.join(script)).unwrap(),
        fs::read(second.join(script)).unwrap()
    );
}

#[test]
fn arguments_dump_autoload_cannot_repeat_mean_a_full_install_every_time() {
    let server = Server::builder()
        .config(
            "composer",
            "{args: [install, --no-dev, --no-interaction, -o, --ignore-platform-reqs]}",
        )
        .install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    clone.write(
        "src/Added.php",
        "<?php\n\nnamespace App;\n\nfinal class Added {}\n",
    );
    clone.commit("class added");
    let _ = push_expecting(&clone, "install (custom arguments)");
    assert!(classmap(&server).contains("App\\\\Added"));
}

/// The configured (default) composer arguments, from the crate itself rather than a copy.
const COMPOSER_INSTALL: &[&str] = atomdeploy_hook::config::DEFAULT_COMPOSER_ARGS;

/// The closing line of the composer step: `0.12s: install (first run)`, say.
#[track_caller]
fn composer_line(push: &harness::Push) -> String {
    push.step_line("composer")
}

/// vendor/composer/installed.json as a fresh clone of `commit` gets it from the configured
/// `composer install`.
fn fresh_installed(server: &Server, commit: &str) -> serde_json::Value {
    let dir = server.base().join(format!("fresh-{commit}"));
    let out = server
        .command("git")
        .args(["clone", "-q"])
        .arg(&server.repo)
        .arg(&dir)
        .output()
        .unwrap();
    harness::assert_success(&out, "git clone");
    let out = server
        .command("git")
        .args(["checkout", "-q", "--detach", commit])
        .current_dir(&dir)
        .output()
        .unwrap();
    harness::assert_success(&out, "git checkout");
    let out = server
        .command("composer")
        .args(COMPOSER_INSTALL)
        .current_dir(&dir)
        .output()
        .unwrap();
    harness::assert_success(&out, "composer install in a fresh clone");
    installed(&dir)
}

fn installed(app: &Path) -> serde_json::Value {
    let path = app.join("vendor/composer/installed.json");
    serde_json::from_slice(&fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))).unwrap()
}

/// `name version` of each installed package.
fn packages(installed: &serde_json::Value) -> Vec<String> {
    installed["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Pushes, and checks that the live build's vendor/ is what a fresh clone would install.
#[track_caller]
fn push_and_compare(server: &Server, clone: &DevClone, expected: &[&str]) -> harness::Push {
    let push = clone.push_main().success();
    let live = installed(&server.latest());
    assert_eq!(packages(&live), expected, "{}", push.stderr);
    assert_eq!(
        live,
        fresh_installed(server, &clone.head()),
        "the live build's vendor/ differs from a fresh clone's"
    );
    push
}

fn alpha_manifest(version: &str) -> String {
    format!(
        r#"{{
    "name": "atomdeploy/alpha",
    "version": "{version}",
    "type": "library",
    "license": "MIT",
    "autoload": {{"psr-4": {{"Atomdeploy\\Alpha\\": "src/"}}}}
}}
"#
    )
}

/// The app's composer.json requiring `require` (a JSON object's members).
fn app_manifest(require: &str) -> String {
    format!(
        r#"{{
    "name": "atomdeploy/unlocked-app",
    "type": "project",
    "license": "MIT",
    "require": {{{require}}},
    "repositories": [
        {{"packagist.org": false}},
        {{"type": "path", "url": "packages/*", "options": {{"symlink": false}}}}
    ]
}}
"#
    )
}

#[test]
fn without_a_committed_lock_vendor_is_what_a_fresh_clone_installs() {
    let server = Server::install();
    let clone = server.clone_fixture("unlocked-app");
    assert!(
        clone.git(&["ls-files", "composer.lock"]).is_empty(),
        "the fixture must not commit its lock"
    );
    let push = push_and_compare(
        &server,
        &clone,
        &["atomdeploy/alpha 1.0.0", "atomdeploy/beta 1.0.0"],
    );
    push.stderr_has("remote:     notice: the commit has no composer.lock");
    assert!(
        server.root.join("application/composer.lock").is_file(),
        "composer wrote a lock that git ignores: the case this test is about"
    );

    // A new version of a package and a requirement only it satisfies. A lock left from the
    // last run would pin 1.0.0 and composer would refuse (exit 4).
    clone.write("packages/alpha/composer.json", &alpha_manifest("2.0.0"));
    clone.write(
        "composer.json",
        &app_manifest(r#""atomdeploy/alpha": "^2.0", "atomdeploy/beta": "^1.0""#),
    );
    clone.commit("alpha 2");
    push_and_compare(
        &server,
        &clone,
        &["atomdeploy/alpha 2.0.0", "atomdeploy/beta 1.0.0"],
    );

    // A package no longer required: gone from vendor/, not kept by an old lock.
    clone.write(
        "composer.json",
        &app_manifest(r#""atomdeploy/alpha": "^2.0""#),
    );
    fs::remove_dir_all(clone.path.join("packages/beta")).unwrap();
    clone.commit("beta removed");
    push_and_compare(&server, &clone, &["atomdeploy/alpha 2.0.0"]);
    assert!(!server.latest().join("vendor/atomdeploy/beta").exists());

    // Nothing composer reads changed, but without a lock composer is never skipped: what it
    // resolves depends on the repositories, not only on the tree.
    clone.write("public/robots.txt", "User-agent: *\n");
    clone.commit("content");
    let push = push_and_compare(&server, &clone, &["atomdeploy/alpha 2.0.0"]);
    assert_eq!(
        composer_line(&push).split_once(": ").unwrap().1,
        "install (the commit has no composer.lock)"
    );

    // Committing the lock brings the incremental runs back, and the notice goes.
    let app = server.root.join("application");
    fs::copy(app.join("composer.lock"), clone.path.join("composer.lock")).unwrap();
    clone.git(&["add", "-f", "composer.lock"]);
    clone.commit("lock committed");
    let push = push_and_compare(&server, &clone, &["atomdeploy/alpha 2.0.0"]);
    let push = push.stderr_lacks("notice: the commit has no composer.lock");
    assert!(composer_line(&push).contains("install (composer.json or composer.lock changed)"));
    clone.write("public/robots.txt", "User-agent: none\n");
    clone.commit("content again");
    let push = push_and_compare(&server, &clone, &["atomdeploy/alpha 2.0.0"]);
    assert!(composer_line(&push).contains("skipped"), "{}", push.stderr);
}

#[test]
fn a_composer_run_that_failed_is_named_by_the_next_one() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let good = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    clone.write(
        "composer.json",
        &good.replace(
            r#""post-install-cmd": ["@php bin/post-install.php"]"#,
            r#""post-install-cmd": ["@php bin/post-install.php", "exit 3"]"#,
        ),
    );
    clone.commit("a failing composer script");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("error: composer failed");

    clone.write("composer.json", &good);
    clone.commit("script fixed");
    let push = clone.push_main().success();
    assert!(
        composer_line(&push).ends_with(": install (the last run failed)"),
        "{}",
        push.stderr
    );
    // Once a run finished, the next one is incremental again.
    clone.write("public/robots.txt", "x\n");
    clone.commit("content");
    let push = clone.push_main().success();
    assert!(composer_line(&push).contains("skipped"), "{}", push.stderr);
}

/// An app whose .gitignore says nothing of composer's output (many do not have one at all):
/// vendor/ and the lock composer writes are composer's, not files added by hand. Neither is
/// removed by the next checkout (which would mean a full install on every deploy) nor reported.
#[test]
fn composer_output_the_app_does_not_ignore_is_neither_removed_nor_reported() {
    let server = Server::install();
    let clone = server.clone_fixture("unlocked-app");
    clone.remove(".gitignore");
    clone.commit("no .gitignore");
    clone.push_main().success();

    clone.write("public/robots.txt", "User-agent: *\n");
    clone.commit("content");
    let push = clone
        .push_main()
        .success()
        .stderr_lacks("removed files added on the server");
    assert_eq!(
        composer_line(&push).split_once(": ").unwrap().1,
        "install (the commit has no composer.lock)",
        "vendor/ was kept: no install into an empty vendor/"
    );

    // With the lock committed and nothing composer reads changed, composer is skipped: vendor/
    // survived the checkout.
    let app = server.root.join("application");
    fs::copy(app.join("composer.lock"), clone.path.join("composer.lock")).unwrap();
    clone.commit("lock committed");
    clone.push_main().success();
    clone.write("public/robots.txt", "User-agent: none\n");
    clone.commit("content again");
    let push = clone
        .push_main()
        .success()
        .stderr_lacks("removed files added on the server");
    assert!(composer_line(&push).contains("skipped"), "{}", push.stderr);
    server.assert_only_complete_builds(&[]);
}

/// A commit may track files under vendor/ (an Apache `vendor/.htaccess`, a patched class).
/// A reinstall into an empty vendor/ (here: vendor/ changed by hand on the server) empties it
/// of composer's files, never of the commit's own, which composer would not make again.
#[test]
fn a_reinstall_keeps_the_files_the_commit_tracks_under_vendor() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write("vendor/.htaccess", "Require all denied\n");
    clone.git(&["add", "-f", "vendor/.htaccess"]);
    clone.commit("vendor/.htaccess tracked");
    clone.push_main().success();
    assert!(server.latest().join("vendor/.htaccess").is_file());

    let app = server.root.join("application");
    fs::write(app.join("vendor/added-by-hand.php"), "<?php\n").unwrap();
    clone.write("public/robots.txt", "User-agent: *\n");
    clone.commit("content");
    let push = clone.push_main().success();
    assert!(
        composer_line(&push).contains("install into an empty vendor/"),
        "{}",
        push.stderr
    );
    assert_eq!(
        fs::read_to_string(server.latest().join("vendor/.htaccess")).unwrap(),
        "Require all denied\n"
    );
    assert!(!server.latest().join("vendor/added-by-hand.php").exists());
    server.assert_only_complete_builds(&[]);

    // And the next deploy sees nothing edited on the server.
    clone.write("public/robots.txt", "User-agent: none\n");
    clone.commit("content again");
    clone
        .push_main()
        .success()
        .stderr_lacks("overwrote edits made on the server");
    assert!(server.latest().join("vendor/.htaccess").is_file());
}

/// Where `program` is on the test's own PATH.
fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} on PATH"))
}

/// Guarantee 7, with a build live: deploy.rs's missing-composer test pushes to an empty root,
/// where "changes nothing" cannot show. Here composer leaves the hook's PATH after a deploy;
/// the next push must fail naming it and leave the live build, builds/ and shared/ as they
/// were, with nothing of the attempt behind. (application/, the working checkout, does hold
/// the new commit: composer is looked for after the checkout.)
#[test]
fn composer_gone_from_path_fails_the_next_deploy_and_changes_nothing() {
    let probe = Server::install();
    let bin = probe.base().join("tools");
    fs::create_dir(&bin).unwrap();
    // composer is a PHP script run through `env php`: php must be on the PATH too.
    for program in ["git", "php", "composer"] {
        std::os::unix::fs::symlink(which(program), bin.join(program)).unwrap();
    }
    let server = Server::builder()
        .path(bin.to_str().unwrap())
        .config("shared", "[.env]")
        .install();
    fs::write(server.root.join("shared/.env"), "APP_KEY=precious\n").unwrap();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();

    fs::remove_file(bin.join("composer")).unwrap();
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("`composer` is not on the hook's PATH"),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert_eq!(
        fs::read_to_string(server.root.join("shared/.env")).unwrap(),
        "APP_KEY=precious\n"
    );
}

/// Sets the greeting package's version to `version` and rewrites composer.lock for it, as
/// `composer update` on a developer's machine would.
fn release_greeting(clone: &DevClone, version: &str) {
    let package = clone.path.join("packages/greeting/composer.json");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&package).unwrap()).unwrap();
    let old = json["version"].as_str().unwrap().to_string();
    clone.write(
        "packages/greeting/composer.json",
        &fs::read_to_string(&package)
            .unwrap()
            .replace(&format!("\"{old}\""), &format!("\"{version}\"")),
    );
    clone.update_composer_lock();
    clone.commit(&format!("greeting {version}"));
}

/// Releases greeting `version` and pushes it: composer installs it, and nothing of the app was
/// copied while composer ran.
fn release_copied_after_composer(clone: &DevClone, version: &str) {
    release_greeting(clone, version);
    let push = push_expecting(clone, "install (composer.json or composer.lock changed)");
    assert!(
        !push.stderr.contains("while composer ran"),
        "{}",
        push.stderr
    );
}

const WRITER_PLUGIN: &str = r#"<?php

namespace Atomdeploy\Writer;

use Composer\Composer;
use Composer\EventDispatcher\EventSubscriberInterface;
use Composer\IO\IOInterface;
use Composer\Plugin\PluginInterface;
use Composer\Script\ScriptEvents;

// Writes outside vendor/ at the end of every install, as framework plugins do.
final class Plugin implements PluginInterface, EventSubscriberInterface
{
    public function activate(Composer $composer, IOInterface $io): void {}
    public function deactivate(Composer $composer, IOInterface $io): void {}
    public function uninstall(Composer $composer, IOInterface $io): void {}

    public static function getSubscribedEvents(): array
    {
        return [ScriptEvents::POST_INSTALL_CMD => 'write'];
    }

    public function write(): void
    {
        $greeting = json_decode(file_get_contents('packages/greeting/composer.json'));
        file_put_contents('by-plugin.txt', $greeting->version);
    }
}
"#;

#[test]
fn an_install_copies_the_app_while_composer_runs_unless_a_script_or_plugin_may_write_in_it() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let json_path = clone.path.join("composer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("scripts");
    let write_json = |json: &serde_json::Value| {
        clone.write(
            "composer.json",
            &serde_json::to_string_pretty(json).unwrap(),
        );
    };
    write_json(&json);
    clone.commit("no composer scripts");
    let _ = push_expecting(&clone, "install (first run)");

    // Only composer runs: it writes nothing but vendor/, and the rest is copied meanwhile.
    release_greeting(&clone, "1.0.1");
    let push = push_expecting(&clone, "install (composer.json or composer.lock changed)");
    push.stderr_has("of it while composer ran");
    assert!(
        server
            .read_live("vendor/composer/installed.json")
            .contains("\"version\": \"1.0.1\"")
    );
    assert!(server.page().contains("Hello from the example app"));

    // A script on an install event writes beside vendor/: nothing is copied before it ran.
    json["scripts"] = serde_json::json!({
        "post-install-cmd": [
            "@php -r \"file_put_contents('by-script.txt', json_decode(file_get_contents('packages/greeting/composer.json'))->version);\""
        ]
    });
    write_json(&json);
    clone.commit("a script that writes the greeting's version");
    release_copied_after_composer(&clone, "1.0.2");
    assert_eq!(server.read_live("by-script.txt"), "1.0.2");

    // A plugin, first coming with the lock, then installed: the same.
    json.as_object_mut().unwrap().remove("scripts");
    json["require"]["atomdeploy/writer"] = "^1.0".into();
    json["repositories"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "path", "url": "packages/writer", "options": {"symlink": false}}));
    json["config"]["allow-plugins"] = serde_json::json!({"atomdeploy/writer": true});
    write_json(&json);
    clone.write(
        "packages/writer/composer.json",
        r#"{
    "name": "atomdeploy/writer",
    "version": "1.0.0",
    "type": "composer-plugin",
    "require": {"composer-plugin-api": "^2.0"},
    "autoload": {"psr-4": {"Atomdeploy\\Writer\\": "src/"}},
    "extra": {"class": "Atomdeploy\\Writer\\Plugin"}
}
"#,
    );
    clone.write("packages/writer/src/Plugin.php", WRITER_PLUGIN);
    release_copied_after_composer(&clone, "1.0.3");
    assert_eq!(server.read_live("by-plugin.txt"), "1.0.3");
    release_copied_after_composer(&clone, "1.0.4");
    assert_eq!(server.read_live("by-plugin.txt"), "1.0.4");

    // The same plugin installed globally for the user the hook runs as, and gone from the app
    // (the app still allows it: composer refuses to start with an installed plugin it does
    // not allow).
    let writer = clone.path.join("packages/writer");
    let repository =
        serde_json::json!({"type": "path", "url": writer, "options": {"symlink": false}});
    for args in [
        vec!["config", "repositories.packagist.org", "false"],
        vec!["config", "repositories.writer", &repository.to_string()],
        vec!["config", "allow-plugins.atomdeploy/writer", "true"],
        vec![
            "require",
            "--no-interaction",
            "--no-audit",
            "atomdeploy/writer",
        ],
    ] {
        let out = server
            .command("composer")
            .arg("global")
            .args(&args)
            .output()
            .unwrap();
        harness::assert_success(&out, &format!("composer global {}", args.join(" ")));
    }
    json["require"]
        .as_object_mut()
        .unwrap()
        .remove("atomdeploy/writer");
    json["repositories"].as_array_mut().unwrap().pop();
    write_json(&json);
    release_greeting(&clone, "1.0.5");
    let _ = push_expecting(&clone, "install (composer.json or composer.lock changed)");
    assert!(!server.latest().join("vendor/atomdeploy/writer").exists());
    release_copied_after_composer(&clone, "1.0.6");
    assert_eq!(server.read_live("by-plugin.txt"), "1.0.6");
}

/// The source of every file opcache compiled into `cache` (`<cache>/<PHP's build id><source
/// path>.bin`).
fn compiled_sources(cache: &Path) -> Vec<String> {
    walkdir::WalkDir::new(cache)
        .min_depth(2)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let inside = e.path().strip_prefix(cache).unwrap();
            let source: PathBuf = inside.components().skip(1).collect();
            let source = format!("/{}", source.display());
            source.strip_suffix(".bin").unwrap().to_string()
        })
        .collect()
}

#[test]
fn composer_keeps_its_own_code_compiled_but_never_the_apps() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // A composer script that runs the app's own PHP inside composer's process, as
    // framework installers do: code opcache must never keep, for a file rewritten within the
    // same second would look unchanged to it.
    clone.write(
        "src/Installer.php",
        "<?php\n\nnamespace App;\n\nfinal class Installer\n{\n    public static function run(): void\n    {\n        file_put_contents('installer-ran', 'v1');\n    }\n}\n",
    );
    let json = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    clone.write(
        "composer.json",
        &json.replace(
            r#""post-install-cmd": ["@php bin/post-install.php"]"#,
            r#""post-install-cmd": ["@php bin/post-install.php", "App\\Installer::run"]"#,
        ),
    );
    clone.commit("an installer class run inside composer");
    clone.push_main().success();
    assert_eq!(server.read_live("installer-ran"), "v1");

    // An hour later, composer runs again (opcache never keeps a file younger than 2 s, and
    // every file of a fresh checkout is): the app's files that composer loads are old enough
    // now, and must still not be kept.
    let app = server.root.join("application");
    // (vendor/ aside: changed by hand, it would be installed afresh.)
    let out = std::process::Command::new("find")
        .arg(&app)
        .args(["-path", "*/vendor", "-prune", "-o"])
        .args(["-exec", "touch", "-h", "-d", "1 hour ago", "{}", "+"])
        .output()
        .unwrap();
    harness::assert_success(&out, "touch");
    clone.write("composer.json", &json.replace(
        r#""post-install-cmd": ["@php bin/post-install.php"]"#,
        r#""post-install-cmd": ["@php bin/post-install.php", "App\\Installer::run", "@php -r \"echo 'again';\""]"#,
    ));
    clone.commit("one more script");
    push_expecting(&clone, "install (composer.json or composer.lock changed)");
    // The deploy user's cache, shared by its deploy roots (here by the whole test run).
    let cache = harness::suite_cache_home().join("atomdeploy/php-opcache");
    let compiled = compiled_sources(&cache);
    assert!(
        compiled.iter().any(|p| p.contains("/Composer/")),
        "composer's own code is kept compiled: {compiled:?}"
    );
    let root = server.root.canonicalize().unwrap();
    let under_root: Vec<_> = compiled
        .iter()
        .filter(|p| Path::new(p).starts_with(&root))
        .collect();
    assert!(
        under_root.is_empty(),
        "nothing under the deploy root is: {under_root:?}"
    );

    // The installer changes, composer runs again with the cache warm: the new code runs.
    let installer = fs::read_to_string(clone.path.join("src/Installer.php")).unwrap();
    clone.write("src/Installer.php", &installer.replace("'v1'", "'v2'"));
    clone.write("composer.json", &json.replace(
        r#""post-install-cmd": ["@php bin/post-install.php"]"#,
        r#""post-install-cmd": ["@php bin/post-install.php", "App\\Installer::run", "@php -r \"echo 'v2';\""]"#,
    ));
    clone.commit("installer v2");
    push_expecting(&clone, "install (composer.json or composer.lock changed)");
    assert_eq!(server.read_live("installer-ran"), "v2");
}

#[test]
fn a_compiled_code_cache_others_may_write_to_is_never_used() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // Whatever is in the cache runs as composer: one anybody may write to would let anybody
    // run code as the deploy user.
    let open = server.root.parent().unwrap().join("open-cache");
    let shared = open.join("atomdeploy/php-opcache");
    fs::create_dir_all(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let cache_home = open.to_str().unwrap();
    clone
        .push_with_env(&["main"], &[("XDG_CACHE_HOME", cache_home)])
        .success();
    assert!(server.page().contains("Hello from the example app"));
    assert_eq!(
        fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing kept in it"
    );
    let ini = fs::read_to_string(server.root.join(".atomdeploy/php/atomdeploy.ini")).unwrap();
    let own = server.root.join(".atomdeploy/php/cache");
    assert!(
        ini.contains(&format!("opcache.file_cache=\"{}\"", own.display())),
        "the deploy root's own cache instead: {ini}"
    );
    assert!(!compiled_sources(&own).is_empty());
}

#[test]
fn a_php_ini_scan_dir_the_admin_set_is_left_as_it_is() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // ":" is PHP's own scan directory and nothing else: the admin's choice, kept whole.
    let push = clone.push_with_env(&["main"], &[("PHP_INI_SCAN_DIR", ":")]);
    push.success();
    assert!(server.page().contains("Hello from the example app"));
    assert!(
        !server.root.join(".atomdeploy/php").exists(),
        "no ini file of atomdeploy's was written, so none was given to composer"
    );
}

#[test]
fn a_path_package_outside_the_deploy_root_is_never_kept_compiled_either() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // A package beside the deploy root, linked into vendor/ (`symlink: true`), whose class a
    // composer script runs inside composer: it changes between deploys like the app.
    let libs = server.root.parent().unwrap().join("libs/hooks");
    fs::create_dir_all(libs.join("src")).unwrap();
    fs::write(
        libs.join("composer.json"),
        r#"{"name": "atomdeploy/hooks", "version": "1.0.0",
            "autoload": {"psr-4": {"Hooks\\": "src/"}}}"#,
    )
    .unwrap();
    fs::write(
        libs.join("src/Installer.php"),
        "<?php\n\nnamespace Hooks;\n\nfinal class Installer\n{\n    public static function run(): void\n    {\n        file_put_contents('hooks-ran', 'yes');\n    }\n}\n",
    )
    .unwrap();
    let path = clone.path.join("composer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    json["require"]["atomdeploy/hooks"] = "^1.0".into();
    json["repositories"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "path", "url": libs, "options": {"symlink": true}}));
    json["scripts"]["post-install-cmd"] = serde_json::json!(["Hooks\\Installer::run"]);
    clone.write(
        "composer.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    clone.update_composer_lock();
    clone.commit("hooks from beside the deploy root");
    clone.push_main().success();
    assert_eq!(server.read_live("hooks-ran"), "yes");

    // An hour later (opcache keeps no file younger than 2 s), composer runs again.
    let out = std::process::Command::new("touch")
        .args(["-h", "-d", "1 hour ago"])
        .arg(libs.join("src/Installer.php"))
        .output()
        .unwrap();
    harness::assert_success(&out, "touch");
    json["scripts"]["post-install-cmd"] =
        serde_json::json!(["Hooks\\Installer::run", "@php -r \"echo 'again';\""]);
    clone.write(
        "composer.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    clone.update_composer_lock();
    clone.commit("one more script");
    push_expecting(&clone, "install (composer.json or composer.lock changed)");
    let libs = libs.canonicalize().unwrap();
    let kept: Vec<_> =
        compiled_sources(&harness::suite_cache_home().join("atomdeploy/php-opcache"))
            .into_iter()
            .filter(|p| Path::new(p).starts_with(&libs))
            .collect();
    assert!(kept.is_empty(), "kept compiled: {kept:?}");
}
