//! What a build's vendor/ is made of when the commit carries no composer.lock, how composer's
//! next run names an unfinished one, rollbacks that survive `git gc` after a force push, and
//! `log` for failed attempts.

use crate::harness;

use std::fs;
use std::path::Path;

use crate::harness::{DevClone, Server};

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

/// The refs of the server's repository, as `git ls-remote` shows them to a client.
fn remote_refs(clone: &DevClone) -> String {
    clone.git(&["ls-remote", "production"])
}

/// Deploys the example app at `version`; returns the new build and its commit.
fn deploy(server: &Server, clone: &DevClone, version: &str) -> (String, String) {
    let commit = clone.deploy_version(version);
    (server.live().unwrap(), commit)
}

/// The builds' refs in the server's repository: `(build, commit)`, sorted.
fn build_refs(server: &Server) -> Vec<(String, String)> {
    let out = server.repo_git(&[
        "for-each-ref",
        "--format=%(refname) %(objectname)",
        "refs/atomdeploy/builds/",
    ]);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, commit) = l.split_once(' ').unwrap();
            let name = name.strip_prefix("refs/atomdeploy/builds/").unwrap();
            (name.to_string(), commit.to_string())
        })
        .collect()
}

fn builds_with_commits(server: &Server) -> Vec<(String, String)> {
    server
        .builds()
        .into_iter()
        .map(|b| {
            let commit = fs::read_to_string(server.build_path(&b).join("REVISION")).unwrap();
            (b, commit.trim().to_string())
        })
        .collect()
}

/// Amends the last commit to the example app at `version` and force-pushes it: the new
/// build's commit does not descend from the one before.
fn deploy_amended(server: &Server, clone: &DevClone, version: &str) -> (String, String) {
    clone.set_version(version);
    clone.git(&["add", "-A"]);
    clone.git(&["commit", "-q", "--amend", "-m", version]);
    clone.push(&["--force", "main"]).success();
    (server.live().unwrap(), clone.head())
}

/// Prunes every object no ref reaches, as `git gc` does once the reflogs have expired.
fn gc_now(server: &Server) {
    server.repo_git(&["reflog", "expire", "--expire=now", "--all"]);
    server.repo_git(&["gc", "--quiet", "--prune=now"]);
}

#[test]
fn push_rollback_still_works_after_a_force_push_and_git_gc() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let _a = deploy(&server, &clone, "A");
    let b = deploy_amended(&server, &clone, "B");
    let c = deploy_amended(&server, &clone, "C");

    // An unrelated history replaces the branch: only the rollback branch (at C) still reaches
    // a build's commit, and B's is in no history that C's has.
    let other = server.empty_clone("unrelated");
    harness::copy_tree(&harness::fixture("example-app"), &other.path);
    other.set_version("D");
    other.commit("unrelated history");
    other.push(&["--force", "main"]).success();
    assert!(server.page().contains("app D"));
    gc_now(&server);

    clone
        .push(&[":rollback"])
        .success()
        .stderr_lacks("warning:");
    assert_eq!(server.live(), Some(c.0.clone()));
    assert!(server.page().contains("app C"), "{}", server.page());
    // C, live now, is reachable from no branch either.
    gc_now(&server);
    clone
        .push(&[":rollback"])
        .success()
        .stderr_lacks("warning:");
    assert_eq!(server.live(), Some(b.0.clone()));
    assert!(server.page().contains("app B"), "{}", server.page());
    assert_eq!(server.live_revision(), b.1);
    assert_eq!(build_refs(&server), builds_with_commits(&server));

    // Clients never see, fetch or change the builds' refs.
    let listed = remote_refs(&clone);
    assert!(listed.contains("refs/heads/rollback"), "{listed}");
    assert!(!listed.contains("refs/atomdeploy"), "{listed}");
    let refused = clone.push(&[&format!("{}:refs/atomdeploy/builds/{}", c.1, b.0)]);
    assert_ne!(refused.code, Some(0), "{}", refused.stderr);
    assert_eq!(build_refs(&server), builds_with_commits(&server));

    // A build that cleanup removes takes its ref with it.
    server.set_config("keep_builds", "1");
    deploy(&server, &other, "E");
    assert_eq!(server.builds().len(), 1);
    assert_eq!(build_refs(&server), builds_with_commits(&server));
}

#[test]
fn internal_refs_are_hidden_for_existing_repositories_and_by_the_hook() {
    let server = Server::install();
    // Fetches see none of refs/atomdeploy; pushes may not touch the builds' refs (but may
    // create a group's refs, see group_host.rs).
    const HIDDEN: &str =
        "transfer.hiderefs refs/atomdeploy/builds\nuploadpack.hiderefs refs/atomdeploy\n";
    let hidden = || {
        let out = server
            .command("git")
            .arg("--git-dir")
            .arg(&server.repo)
            .args(["config", "--get-regexp", "hiderefs"])
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| format!("{l}\n"))
            .collect();
        lines.sort();
        lines.concat()
    };
    assert_eq!(hidden(), HIDDEN, "set by install");

    // A repository installed by an older version, which hid everything from pushes too, or
    // nothing at all: the hook sets it right, once.
    let clone = server.clone_fixture("example-app");
    for older in [Some("refs/atomdeploy"), None] {
        server.repo_git(&["config", "--unset-all", "uploadpack.hideRefs"]);
        server.repo_git(&["config", "--unset-all", "transfer.hideRefs"]);
        if let Some(value) = older {
            server.repo_git(&["config", "--add", "transfer.hideRefs", value]);
        }
        clone.deploy_version(&format!("v1 {older:?}"));
        assert_eq!(hidden(), HIDDEN, "{older:?}");
        clone.deploy_version(&format!("v2 {older:?}"));
        assert_eq!(hidden(), HIDDEN, "added once, not again");
        let listed = remote_refs(&clone);
        assert!(!listed.contains("refs/atomdeploy"), "{listed}");
    }
    assert!(build_refs(&server).len() >= 2);

    // Reinstalling over an existing repository sets it too (and only once).
    server.repo_git(&["config", "--unset-all", "transfer.hideRefs"]);
    server.repo_git(&["config", "--unset-all", "uploadpack.hideRefs"]);
    for _ in 0..2 {
        let out = server.run_install(&server.repo, &[]);
        harness::assert_success(&out, "install again");
    }
    assert_eq!(hidden(), HIDDEN);
}

#[test]
fn log_shows_any_attempt_builds_lists_failed_ones_included() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let (v1, _) = deploy(&server, &clone, "v1");

    server.set_config("before_switch", "['echo first failure; exit 4']");
    clone.set_version("v2");
    clone.commit("v2");
    clone.push_main().deploy_failed();
    server.set_config("before_switch", "['echo second failure; exit 5']");
    clone.set_version("v3");
    clone.commit("v3");
    clone.push_main().deploy_failed();

    let out = server.run(&["builds"]);
    harness::assert_success(&out, "builds");
    let table = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("    log: atomdeploy-hook log "))
        .collect();
    assert_eq!(ids.len(), 2, "one id per failed attempt:\n{table}");

    // Newest first: the second failure, then the first.
    for (id, said) in ids.iter().zip(["second failure", "first failure"]) {
        let out = server.run(&["log", id]);
        harness::assert_success(&out, &format!("log {id}"));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("    {said}")), "{text}");
        assert!(text.contains("error: before_switch failed"), "{text}");
    }
    // No argument: the latest attempt, failed or not.
    let out = server.run(&["log"]);
    harness::assert_success(&out, "log");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("    second failure")
    );
    // A build's name still shows its deploy.
    let out = server.run(&["log", &v1]);
    harness::assert_success(&out, "log BUILD");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(&format!("as builds/{v1}"))
    );

    // An id that names no attempt: a clear error.
    let out = server.run(&["log", "failed-2020-01-01T000000000000Z"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a failed attempt that `atomdeploy-hook builds` lists"),
        "{stderr}"
    );
}

/// A hook killed while libgit2 wrote a ref leaves `<ref>.lock`; every later write of that ref
/// would fail. The next deploy clears the ones that are surely stale and keeps the refs right.
#[test]
fn ref_locks_left_by_a_killed_hook_do_not_wedge_later_deploys() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    deploy(&server, &clone, "A");
    let (second, b) = deploy(&server, &clone, "B");

    let refs = server.repo.join("refs");
    fs::create_dir_all(refs.join("atomdeploy/builds")).unwrap();
    // git itself takes these locks for a moment too (a client's push, `git gc --auto`): only
    // an old one is stale. A fresh one is left alone.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let stale = |path: &Path| {
        fs::write(path, "").unwrap();
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    let ours = refs.join(format!("atomdeploy/builds/{second}.lock"));
    stale(&ours);
    let rollback = refs.join("heads/rollback.lock");
    stale(&rollback);
    let fresh = server.repo.join("packed-refs.lock");
    fs::write(&fresh, "").unwrap();

    clone.set_version("C");
    clone.commit("C");
    clone
        .push_main()
        .success()
        .stderr_has("rollback.lock, left by an interrupted deploy");
    let third = server.live().unwrap();
    assert!(!ours.exists() && !rollback.exists());
    assert!(fresh.exists(), "a fresh packed-refs.lock may be git's own");
    fs::remove_file(&fresh).unwrap();
    assert_eq!(build_refs(&server), builds_with_commits(&server));
    assert!(build_refs(&server).iter().any(|(b, _)| *b == third));
    assert_eq!(server.branch_head("rollback").as_deref(), Some(b.as_str()));
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
