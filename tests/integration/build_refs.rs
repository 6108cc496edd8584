//! Every build keeps its commit through a ref of its own under refs/atomdeploy/builds: a
//! rollback still works after a force push and `git gc`, clients see none of these refs nor may
//! push to them, and a ref lock left by a killed hook does not wedge the deploys after it.

use crate::harness;

use std::fs;
use std::path::Path;

use crate::harness::{DevClone, Server};

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
