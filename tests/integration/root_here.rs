//! `--root` defaults to the deploy root that holds the current directory: an operator in
//! `application/` or a build's `public/` need not name it. Nowhere in a root, the error names
//! `--root` and `$ATOMDEPLOY_ROOT` and nothing runs.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::harness::{BIN, Server, assert_success};

/// `atomdeploy-hook <args>` run in `dir`, with neither `--root` nor `$ATOMDEPLOY_ROOT`.
fn run_in(server: &Server, dir: &Path, args: &[&str]) -> Output {
    server
        .command(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn builds_finds_the_root_from_within_it_and_nowhere_else() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // A commit may carry a deploy.yml of its own: a build holding one is still not the root.
    clone.write("deploy.yml", "branch: main\n");
    clone.commit("a deploy.yml in the app");
    clone.push_main().success();
    clone.deploy_version("v2");
    let live = server.live().unwrap();
    let expected = server.run(&["builds", "--json"]);
    assert_success(&expected, "builds --root");
    let public = server.root.join("builds").join(&live).join("public");
    assert!(public.join("../deploy.yml").is_file());

    for dir in [
        server.root.clone(),
        server.root.join("application"),
        server.root.join("application/src"),
        public,
        server.root.join("latest/public"),
        server.root.join(".atomdeploy"),
    ] {
        let out = run_in(&server, &dir, &["builds", "--json"]);
        assert_success(&out, &format!("builds in {}", dir.display()));
        assert_eq!(out.stdout, expected.stdout, "in {}", dir.display());
    }

    // What the bash completion offers after `rollback --to`: the builds, newest first.
    let out = run_in(&server, &server.root.join("latest"), &["builds", "--names"]);
    assert_success(&out, "builds --names");
    let mut newest_first = server.builds();
    newest_first.reverse();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        newest_first
    );

    for dir in [Path::new("/"), &server.base(), &server.repo] {
        let out = run_in(&server, dir, &["builds"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "in {}: {stderr}", dir.display());
        assert!(
            stderr
                .starts_with("error: the deploy root is needed: --root DIR (or $ATOMDEPLOY_ROOT)"),
            "in {}: {stderr}",
            dir.display()
        );
        assert!(out.stdout.is_empty(), "in {}", dir.display());
    }
}

/// `--root` and `$ATOMDEPLOY_ROOT` still win over the current directory, and a command that
/// writes (`rollback`) acts on the root it stands in.
#[test]
fn a_root_given_wins_and_rollback_acts_on_the_root_it_stands_in() {
    let server = Server::install();
    let other = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let first = server.live().unwrap();
    clone.deploy_version("v2");
    let inside = server.root.join("application");

    let out = server
        .command(BIN)
        .args(["builds", "--json", "--root"])
        .arg(&other.root)
        .current_dir(&inside)
        .output()
        .unwrap();
    assert_success(&out, "builds --root other");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = server
        .command(BIN)
        .args(["builds", "--json"])
        .env("ATOMDEPLOY_ROOT", &other.root)
        .current_dir(&inside)
        .output()
        .unwrap();
    assert_success(&out, "builds with ATOMDEPLOY_ROOT");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    let live_public = fs::canonicalize(server.root.join("latest/public")).unwrap();
    assert_success(&run_in(&server, &live_public, &["rollback"]), "rollback");
    assert_eq!(server.live().unwrap(), first);
}
