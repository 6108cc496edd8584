//! Promises of README.md's Guarantees that no other module's test would catch being broken.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::Server;

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
