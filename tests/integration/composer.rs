//! Composer runs only as much as a commit needs, and the result is always what a full
//! `composer install` would make of that commit.

use crate::harness;

use std::fs;

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
    fs::read_to_string(dir.join("vendor/composer/autoload_classmap.php")).unwrap()
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
    let package = clone.path.join("packages/greeting/composer.json");
    fs::write(
        &package,
        fs::read_to_string(&package)
            .unwrap()
            .replace("\"1.0.0\"", "\"1.0.1\""),
    )
    .unwrap();
    let out = server
        .command("composer")
        .args([
            "update",
            "--no-install",
            "--no-interaction",
            "atomdeploy/greeting",
        ])
        .current_dir(&clone.path)
        .output()
        .unwrap();
    harness::assert_success(&out, "composer update --no-install");
    clone.commit("greeting 1.0.1");
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
