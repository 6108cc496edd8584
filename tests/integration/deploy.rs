//! Push-to-deploy, end to end: real `install`, real `git push`, real composer.

use crate::harness;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::harness::trees::{self, Objects};
use crate::harness::{Server, is_executable};

#[test]
fn first_push_deploys_a_complete_build_and_makes_it_live() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let commit = clone.head();

    let push = clone.push_main().success();

    let live = server.live().expect("latest points at a build");
    assert_eq!(server.builds(), std::slice::from_ref(&live));
    assert_eq!(server.live_revision(), commit);
    assert!(server.latest().join("vendor/autoload.php").is_file());
    assert!(
        server
            .latest()
            .join("vendor/atomdeploy/greeting/src/Greeter.php")
            .is_file()
    );
    // The composer script ran, so scripts are not silently skipped.
    assert_eq!(server.read_live("composer-script-ran"), "yes\n");
    assert_eq!(
        server.page(),
        format!("Hello from the example app v1\nbuild: {commit}\npart: {commit}\n")
    );
    assert!(!server.latest().join(".git").exists());

    // What the pusher saw: each step with its duration, composer's own output, the summary.
    for step in ["checkout", "composer", "snapshot", "switch", "cleanup"] {
        assert!(
            push.stderr.contains(&format!("remote: ==> {step}")),
            "no {step} header:\n{}",
            push.stderr
        );
    }
    assert!(
        push.stderr.contains("remote:     post-install script ran"),
        "{}",
        push.stderr
    );
    let summary = push.remote_line("deployed ").expect("a summary line");
    let short = &commit[..7];
    assert!(
        summary.starts_with(&format!("deployed {short} as builds/{live} in ")),
        "{summary}"
    );
    // Where the time went, step by step.
    let breakdown = summary.split_once(" (").map(|(_, b)| b).unwrap_or_default();
    for step in [
        "checkout ",
        " · composer ",
        " · snapshot ",
        " · switch ",
        " · cleanup ",
    ] {
        assert!(breakdown.contains(step), "{step:?} missing from {summary}");
    }
    server.assert_nothing_left_behind();

    let log = server.deploy_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "deployed");
    assert_eq!(log[0]["commit"], commit.as_str());
    assert_eq!(log[0]["build"], live.as_str());
    assert_eq!(log[0]["ref"], "refs/heads/main");
    let steps: Vec<&str> = log[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["checkout", "composer", "snapshot", "switch", "cleanup"]
    );
}

#[test]
fn second_push_adds_changes_and_removes_files_and_leaves_the_old_build_alone() {
    for mode in ["link", "copy"] {
        second_push_in(mode);
    }
}

fn second_push_in(snapshot_mode: &str) {
    let server = Server::builder()
        .config("snapshot", snapshot_mode)
        .install();
    let clone = server.clone_fixture("example-app");
    clone
        .write("public/old.txt", "old\n")
        .write("public/robots.txt", "v1\n");
    let first = clone.commit("v1");
    clone.push_main().success();
    let first_build = server.live().unwrap();

    clone
        .set_version("v2")
        .write("public/robots.txt", "v2\n")
        .write("public/new.txt", "new\n")
        .remove("public/old.txt");
    let second = clone.commit("v2");
    clone.push_main().success();

    let second_build = server.live().unwrap();
    assert_ne!(first_build, second_build);
    assert_eq!(server.live_revision(), second);
    assert!(server.page().starts_with("Hello from the example app v2\n"));
    assert_eq!(server.read_live("public/robots.txt"), "v2\n");
    assert_eq!(server.read_live("public/new.txt"), "new\n");
    assert!(!server.latest().join("public/old.txt").exists());
    assert!(server.latest().join("vendor/autoload.php").is_file());

    // The previous build is untouched: a rollback target must be exactly what it was.
    let old = server.build_path(&first_build);
    assert_eq!(
        fs::read_to_string(old.join("REVISION")).unwrap().trim(),
        first
    );
    assert_eq!(
        fs::read_to_string(old.join("public/robots.txt")).unwrap(),
        "v1\n"
    );
    assert!(old.join("public/old.txt").is_file());
    assert!(!old.join("public/new.txt").exists());
    assert!(
        fs::read_to_string(old.join("src/Version.php"))
            .unwrap()
            .contains("'v1'")
    );
    // Copied builds share nothing with each other.
    if snapshot_mode == "copy" {
        use std::os::unix::fs::MetadataExt;
        let inode = |build: &str| {
            fs::metadata(server.build_path(build).join("public/index.php"))
                .unwrap()
                .ino()
        };
        assert_ne!(inode(&first_build), inode(&second_build));
    }
}

#[test]
fn a_push_that_moves_the_branch_back_to_the_live_commit_changes_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v1 = clone.head();
    clone.push_main().success();
    // v2 fails to deploy, so the branch is at v2 while v1 stays live.
    server.set_config("before_switch", "['exit 1']");
    clone.set_version("v2");
    clone.commit("v2");
    clone.push_main().deploy_failed();
    server.set_config("before_switch", "[]");
    let before = server.state();

    clone.git(&["reset", "-q", "--hard", &v1]);
    let push = clone.push(&["--force", "main"]).success();

    let live = server.live().unwrap();
    push.stderr_has(&format!(
        "remote: atomdeploy: {} is already live as builds/{live}; nothing to do",
        &v1[..7]
    ));
    server.assert_unchanged_since(&before);
    assert_eq!(server.deploy_log().last().unwrap()["outcome"], "unchanged");
}

#[test]
fn pushes_to_other_branches_and_tags_deploy_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.git(&["tag", "v1.0"]);
    clone.git(&["branch", "feature"]);

    let push = clone.push(&["feature", "v1.0"]).success();

    assert!(
        push.stderr
            .contains("remote: atomdeploy: refs/heads/feature is not the deploy branch"),
        "{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("remote: atomdeploy: refs/tags/v1.0 is not the deploy branch"),
        "{}",
        push.stderr
    );
    assert_eq!(server.live(), None);
    assert!(server.builds().is_empty());
    assert!(!server.root.join("application/composer.json").exists());
}

#[test]
fn several_refs_in_one_push_deploy_the_branch_once() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.git(&["tag", "v1.0"]);
    clone.git(&["branch", "feature"]);

    let push = clone.push(&["main", "feature", "v1.0"]).success();

    assert_eq!(
        push.stderr.matches("remote: deployed ").count(),
        1,
        "{}",
        push.stderr
    );
    assert_eq!(server.builds().len(), 1);
    assert_eq!(server.live_revision(), clone.head());
}

#[test]
fn deleting_the_deploy_branch_leaves_the_site_alone() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();

    // git itself refuses to delete the branch HEAD names (install points HEAD at it).
    let refused = clone.push(&[":main"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains("deletion of the current branch prohibited"),
        "{}",
        refused.stderr
    );
    server.assert_unchanged_since(&before);

    // Where an operator allows it, the hook sees the deletion and still leaves the site alone.
    server.repo_git(&["config", "receive.denyDeleteCurrent", "ignore"]);
    let push = clone.push(&[":main"]).success();

    assert!(
        push.stderr.contains(
            "remote: atomdeploy: refs/heads/main was deleted; the live build stays as it is"
        ),
        "{}",
        push.stderr
    );
    assert_eq!(server.branch_head("main"), None);
    server.assert_unchanged_since(&before);
    assert!(server.page().contains("v1"));
}

#[test]
fn a_configured_deploy_branch_is_the_one_that_deploys() {
    let server = Server::builder().branch("production").install();
    let clone = server.clone_fixture("example-app");
    clone
        .push_main()
        .success()
        .stderr_has("refs/heads/main is not the deploy branch (refs/heads/production)");
    assert_eq!(server.live(), None);

    clone.push(&["main:production"]).success();
    assert_eq!(server.live_revision(), clone.head());
}

#[test]
fn shared_entries_are_seeded_linked_and_survive_deploys() {
    let server = Server::builder()
        .config("shared", "[.env, storage/sessions/, public/uploads/]")
        .install();
    fs::write(server.root.join("shared/.env"), "APP_KEY=secret\n").unwrap();
    let clone = server.clone_fixture("example-app");
    clone.write("storage/sessions/seed", "from git\n");
    clone.commit("seed a session file");
    clone.push_main().success().stderr_has("==> shared");

    let live = server.latest();
    // Each shared path in the build is a relative link into shared/.
    assert_eq!(
        fs::read_link(live.join(".env")).unwrap(),
        Path::new("../../shared/.env")
    );
    assert_eq!(
        fs::read_link(live.join("storage/sessions")).unwrap(),
        Path::new("../../../shared/storage/sessions")
    );
    assert_eq!(
        fs::read_link(live.join("public/uploads")).unwrap(),
        Path::new("../../../shared/public/uploads")
    );
    assert_eq!(server.read_live(".env"), "APP_KEY=secret\n");
    // Seeded from the commit on the first deploy; created empty when the commit has nothing.
    assert_eq!(
        fs::read_to_string(server.root.join("shared/storage/sessions/seed")).unwrap(),
        "from git\n"
    );
    assert!(server.root.join("shared/public/uploads").is_dir());

    // Users write through the links.
    fs::write(live.join("public/uploads/avatar.png"), "png").unwrap();
    fs::write(live.join("storage/sessions/sess_1"), "user 1").unwrap();
    let shared_before = harness::tree_listing(&server.root.join("shared"));

    // A later commit with its own copy of a shared path does not replace what is in shared/.
    clone
        .write("storage/sessions/seed", "changed in git\n")
        .write(".env", "APP_KEY=from-git\n")
        .set_version("v2");
    clone.commit("v2");
    clone.push_main().success();

    assert!(server.page().contains("v2"));
    assert_eq!(
        harness::tree_listing(&server.root.join("shared")),
        shared_before
    );
    assert_eq!(server.read_live("public/uploads/avatar.png"), "png");
    assert_eq!(server.read_live("storage/sessions/sess_1"), "user 1");
    assert_eq!(server.read_live(".env"), "APP_KEY=secret\n");
}

#[test]
fn a_shared_file_missing_everywhere_fails_the_deploy_and_names_it() {
    let server = Server::builder().config("shared", "[.env]").install();
    let clone = server.clone_fixture("example-app");

    clone
        .push_main()
        .deploy_failed()
        .stderr_has("shared/.env does not exist");

    assert_eq!(server.live(), None);
    assert!(server.builds().is_empty());
    server.assert_nothing_left_behind();
}

#[test]
fn a_symlink_in_the_commit_at_a_shared_path_is_never_followed() {
    // The entry itself is a link in the commit.
    let server = Server::builder().config("shared", "[.env]").install();
    let clone = server.clone_fixture("example-app");
    std::os::unix::fs::symlink("/etc/passwd", clone.path.join(".env")).unwrap();
    clone.commit("hostile .env");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("the commit has a symlink at .env");
    assert!(
        harness::tree_listing(&server.root.join("shared")).is_empty(),
        "nothing may be read into shared/"
    );

    // A parent of the entry is a link in the commit; shared/ already has the entry.
    let server = Server::builder()
        .config("shared", "[storage/sessions/]")
        .install();
    fs::create_dir_all(server.root.join("shared/storage/sessions")).unwrap();
    fs::write(server.root.join("shared/storage/sessions/sess_1"), "user").unwrap();
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    let clone = server.clone_fixture("example-app");
    fs::remove_dir_all(clone.path.join("storage")).unwrap();
    std::os::unix::fs::symlink(&outside, clone.path.join("storage")).unwrap();
    clone.commit("hostile storage");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("the commit has a symlink at storage;");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    assert_eq!(
        fs::read_to_string(server.root.join("shared/storage/sessions/sess_1")).unwrap(),
        "user"
    );
    assert!(server.builds().is_empty());
}

#[test]
fn a_refused_shared_entry_leaves_shared_untouched() {
    // storage/ could be seeded, but .env cannot: nothing at all may move.
    let server = Server::builder()
        .config("shared", "[storage/, .env]")
        .install();
    let clone = server.clone_fixture("example-app");
    clone.write("storage/seed.txt", "from git\n");
    clone.commit("seed");

    clone
        .push_main()
        .deploy_failed()
        .stderr_has("shared/.env does not exist");

    assert!(harness::tree_listing(&server.root.join("shared")).is_empty());
}

#[test]
fn a_symlink_that_becomes_a_directory_never_writes_through_the_old_link() {
    let server = Server::builder().config("composer", "false").install();
    fs::create_dir(server.root.join("shared/uploads")).unwrap();
    fs::write(server.root.join("shared/uploads/avatar.png"), "USER DATA").unwrap();
    let clone = server.empty_clone("links");
    clone.write("public/index.php", "<?php echo 'links';\n");
    std::os::unix::fs::symlink("../../shared/uploads", clone.path.join("public/uploads")).unwrap();
    clone.commit("uploads is a link");
    clone.push_main().success();

    fs::remove_file(clone.path.join("public/uploads")).unwrap();
    clone.write("public/uploads/avatar.png", "placeholder from git");
    clone.commit("uploads is a directory");
    clone.push_main().success();

    assert_eq!(
        fs::read_to_string(server.root.join("shared/uploads/avatar.png")).unwrap(),
        "USER DATA"
    );
    let uploads = server.latest().join("public/uploads");
    assert!(
        fs::symlink_metadata(&uploads).unwrap().is_dir(),
        "a real directory, as in the commit"
    );
    assert_eq!(
        server.read_live("public/uploads/avatar.png"),
        "placeholder from git"
    );
}

#[test]
fn a_symlink_made_on_the_server_in_application_is_not_written_through() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("links");
    clone.write("public/index.php", "<?php echo 'links';\n");
    clone.commit("v1");
    clone.push_main().success();
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, server.root.join("application/public/assets")).unwrap();

    clone.write("public/assets/app.css", "body {}");
    clone.commit("assets");
    let push = clone.push_main().success();

    let warning = push
        .remote_line("warning: removed symlinks made on the server")
        .unwrap_or_else(|| panic!("no warning:\n{}", push.stderr));
    assert!(warning.contains("public/assets"), "{warning}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(server.read_live("public/assets/app.css"), "body {}");
}

#[test]
fn a_revision_symlink_in_the_commit_cannot_redirect_the_write() {
    let server = Server::builder().config("shared", "[.env]").install();
    fs::write(server.root.join("shared/.env"), "APP_KEY=precious\n").unwrap();
    let clone = server.clone_fixture("example-app");
    std::os::unix::fs::symlink(server.root.join("shared/.env"), clone.path.join("REVISION"))
        .unwrap();
    let commit = clone.commit("hostile REVISION");

    clone
        .push_main()
        .success()
        .stderr_has("warning: the commit has its own REVISION");

    assert_eq!(
        fs::read_to_string(server.root.join("shared/.env")).unwrap(),
        "APP_KEY=precious\n"
    );
    assert!(
        !fs::symlink_metadata(server.latest().join("REVISION"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(server.live_revision(), commit);
}

#[test]
fn absolute_links_into_application_are_made_relative_in_the_build() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("links");
    clone
        .write("public/index.php", "<?php echo 'links';\n")
        .write("storage/app/public/logo.txt", "v1")
        // As Laravel's own .gitignore has it.
        .write(".gitignore", "/public/storage\n");
    clone.commit("v1");
    clone.push_main().success();
    // What `php artisan storage:link` makes: an absolute link into the working copy.
    let app = server.root.join("application");
    std::os::unix::fs::symlink(app.join("storage/app/public"), app.join("public/storage")).unwrap();

    clone.write("storage/app/public/logo.txt", "v2");
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.live().unwrap();
    clone.write("storage/app/public/logo.txt", "v3");
    clone.commit("v3");
    clone.push_main().success();

    // Each build serves its own files, not the working copy's.
    let link = server.build_path(&v2).join("public/storage");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../storage/app/public")
    );
    assert_eq!(fs::read_to_string(link.join("logo.txt")).unwrap(), "v2");
    assert_eq!(server.read_live("public/storage/logo.txt"), "v3");
}

#[test]
fn keep_builds_removes_the_oldest_builds() {
    let server = Server::builder().config("keep_builds", "2").install();
    let clone = server.clone_fixture("example-app");
    let mut all = Vec::new();
    for version in ["v1", "v2", "v3", "v4"] {
        clone.set_version(version);
        clone.commit(version);
        clone.push_main().success();
        all.push(server.live().unwrap());
    }
    assert_eq!(server.builds(), all[2..]);
    assert_eq!(server.live().as_ref(), all.last());
    assert!(server.page().contains("v4"));
    server.assert_nothing_left_behind();
}

#[test]
fn two_deploys_within_one_second_get_distinct_names() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("tiny");
    clone.write("public/index.php", "<?php echo 'tiny';\n");
    // Deploys of this app take milliseconds, so pairs of them land in one second; retry the
    // rare pair that straddles a second boundary.
    for attempt in 0..20 {
        clone.write("n.txt", &format!("{attempt}a"));
        clone.commit("a");
        clone.push_main().success();
        let a = server.live().unwrap();
        clone.write("n.txt", &format!("{attempt}b"));
        clone.commit("b");
        clone.push_main().success();
        let b = server.live().unwrap();
        if b.starts_with(&a[..15]) {
            let suffix = b[15..]
                .strip_prefix('-')
                .expect("a sequence suffix")
                .parse::<u32>()
                .unwrap();
            assert!(suffix >= 2, "{a} then {b}");
            assert_eq!(
                fs::read_to_string(server.build_path(&a).join("n.txt")).unwrap(),
                format!("{attempt}a")
            );
            assert_eq!(server.read_live("n.txt"), format!("{attempt}b"));
            return;
        }
    }
    panic!("no two deploys landed in one second in 20 tries");
}

#[test]
fn a_failing_composer_leaves_the_live_build_serving() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();

    // Require a package no repository has: composer install fails.
    clone.require_a_missing_package();
    clone.set_version("broken");
    clone.commit("broken composer.json");
    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.starts_with("error: composer failed: `composer install"),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert!(server.page().contains("v1"));
    assert_eq!(server.deploy_log().last().unwrap()["outcome"], "failed");
}

#[test]
fn a_failing_before_switch_command_aborts_the_deploy() {
    let server = Server::builder()
        .config(
            "before_switch",
            "['echo checking', 'echo broken >&2; exit 3']",
        )
        .install();
    let clone = server.clone_fixture("example-app");
    server.set_config("before_switch", "[]");
    clone.push_main().success();
    let before = server.state();
    server.set_config(
        "before_switch",
        "['echo checking', 'echo broken >&2; exit 3']",
    );

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();

    let push = push
        .stderr_has("remote:     checking")
        .stderr_has("remote:     broken");
    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("before_switch failed: `echo broken >&2; exit 3` failed with exit status 3"),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert!(server.page().contains("v1"));
}

#[test]
fn commands_run_in_the_new_build_without_the_hooks_git_variables() {
    // `git` in a deploy command must see the build, not the bare repository git set GIT_DIR to.
    let check = "test -z \"$GIT_DIR\" && test -z \"$GIT_QUARANTINE_PATH\" && git init -q probe && git -C probe rev-parse --is-inside-work-tree && pwd > where.txt";
    let server = Server::builder()
        .config("before_switch", &format!("['{check}']"))
        .config(
            "after_switch",
            "['echo \"$ATOMDEPLOY_BUILD\" > \"$ATOMDEPLOY_ROOT/after.txt\"']",
        )
        .install();
    let clone = server.clone_fixture("example-app");

    clone.push_main().success().stderr_has("remote:     true");

    let live = server.live().unwrap();
    let build = server.build_path(&live);
    assert_eq!(
        server.read_live("where.txt").trim(),
        build.to_str().unwrap()
    );
    assert_eq!(
        fs::read_to_string(server.root.join("after.txt"))
            .unwrap()
            .trim(),
        build.to_str().unwrap()
    );
    // The composer script refuses to run with GIT_DIR set; it ran.
    assert_eq!(server.read_live("composer-script-ran"), "yes\n");
}

#[test]
fn a_failing_after_switch_command_is_reported_but_the_build_stays_live() {
    let server = Server::builder()
        .config("after_switch", "['exit 7']")
        .install();
    let clone = server.clone_fixture("example-app");

    let push = clone.push(&["main"]);

    assert!(push.stderr.contains("remote: deployed "), "{}", push.stderr);
    // One error line, the last thing the pusher reads.
    assert_eq!(
        push.stderr.matches("remote: error:").count(),
        1,
        "{}",
        push.stderr
    );
    let hook_lines: Vec<&str> = push
        .stderr
        .lines()
        .filter(|l| l.starts_with("remote: "))
        .collect();
    let last = hook_lines.last().unwrap();
    assert!(
        last.starts_with("remote: error: after_switch failed; builds/")
            && last.contains("exit status 7"),
        "{last}"
    );
    assert_eq!(server.live_revision(), clone.head());
}

#[test]
fn a_command_that_leaves_a_process_in_the_background_does_not_hold_the_deploy() {
    // A worker started with `&` keeps the output pipe open as long as it runs.
    let pidfile = "$ATOMDEPLOY_ROOT/worker.pid";
    let server = Server::builder()
        .config(
            "after_switch",
            &format!("['sh -c \"echo \\$$ > {pidfile}; exec sleep 300\" &']"),
        )
        .install();
    let clone = server.clone_fixture("example-app");

    clone.push_main().success();

    // The push is over while the worker still runs: the deploy did not wait for it.
    let pid = fs::read_to_string(server.root.join("worker.pid"))
        .unwrap()
        .trim()
        .to_string();
    let alive = Path::new("/proc").join(&pid).exists();
    let _ = std::process::Command::new("kill").arg(&pid).status();
    assert!(alive, "the background worker should still be running");
}

#[test]
fn concurrent_pushes_wait_their_turn_and_the_branch_head_ends_live() {
    for pushers in [2, 4] {
        concurrent_pushes(pushers);
    }
}

/// One deploy is held inside before_switch while `pushers - 1` more pushes arrive; each must
/// wait for the lock, and once released the branch head must be what is live.
fn concurrent_pushes(pushers: usize) {
    let server = Server::install();
    let first = server.clone_fixture("example-app");
    first.push_main().success();
    let gate = server.gate_deploys();

    let clones: Vec<_> = (0..pushers)
        .map(|i| server.clone_repo(&format!("dev{i}")))
        .collect();
    let mut running = Vec::new();
    for (i, clone) in clones.iter().enumerate() {
        clone.set_version(&format!("dev{i}"));
        clone.commit(&format!("dev{i}"));
        let push = clone.spawn_push(&["--force", "main"]);
        if i == 0 {
            gate.wait_held(&push);
        } else {
            push.wait_for_output("waiting for the deploy lock, held by pid");
        }
        running.push(push);
    }
    gate.open();
    let pushes: Vec<_> = running.into_iter().map(|p| p.finish()).collect();

    for push in &pushes {
        assert_eq!(push.code, Some(0), "{}", push.stderr);
        assert!(!push.stderr.contains("remote: error:"), "{}", push.stderr);
    }
    for push in &pushes[1..] {
        assert!(
            push.stderr.contains("deploying"),
            "the holder's commit is named: {}",
            push.stderr
        );
    }
    let head = server.branch_head("main").unwrap();
    assert_eq!(head, clones.last().unwrap().head());
    assert_eq!(server.live_revision(), head);
    assert!(server.page().contains(&format!("dev{}", pushers - 1)));

    // Deploys never overlapped: each took the lock after the one before had finished.
    let log = server.deploy_log();
    for pair in log.windows(2) {
        assert!(
            pair[1]["locked_at"].as_str().unwrap() >= pair[0]["finished_at"].as_str().unwrap(),
            "overlapping deploys: {pair:?}"
        );
    }
    // The first push, the held one, then one deploy of the head; the other waiters found the
    // head live already.
    let deployed: Vec<_> = log.iter().filter(|e| e["outcome"] == "deployed").collect();
    assert_eq!(deployed.len(), 3, "{log:?}");
    assert_eq!(
        log.iter().filter(|e| e["outcome"] == "unchanged").count(),
        pushers - 2,
        "{log:?}"
    );
    assert_eq!(server.builds().len(), 3);
}

#[test]
fn a_deploy_that_waits_past_lock_timeout_gives_up_naming_the_holder() {
    let server = Server::builder().config("lock_timeout", "1").install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let gate = server.gate_deploys();
    clone.set_version("v2");
    let held_commit = clone.commit("v2");
    let held = clone.spawn_push(&["main"]);
    gate.wait_held(&held);
    let before = server.state();

    let other = server.clone_repo("other");
    other.set_version("v3");
    other.commit("v3");
    let push = other.push(&["--force", "main"]).deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    let holder = format!(
        "it is held by pid {} deploying {} since ",
        server.lock_holder(),
        &held_commit[..7]
    );
    assert!(
        error.starts_with("error: gave up waiting for the deploy lock after 1s; "),
        "{error}"
    );
    assert!(error.contains(&holder), "{error}\nexpected: {holder}");
    assert_eq!(server.state(), before);
    // The refused deploy is on record, with its error.
    let refused = server
        .deploy_log()
        .into_iter()
        .find(|e| e["outcome"] == "failed")
        .expect("a failed entry");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("gave up waiting for the deploy lock")
    );

    gate.open();
    held.finish().success();
    assert!(server.page().contains("v2"));
}

#[test]
fn odd_names_symlinks_and_executable_bits_are_kept_exactly() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("odd");
    clone.write("public/index.php", "<?php echo 'odd';\n");
    clone.write("name with spaces.txt", "spaces\n");
    clone.write("unicodé/ファイル.txt", "unicode\n");
    let non_utf8 = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    fs::write(clone.path.join(non_utf8), "bytes\n").unwrap();
    clone.write("bin/console", "#!/bin/sh\necho console\n");
    fs::set_permissions(
        clone.path.join("bin/console"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("name with spaces.txt", clone.path.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("unicodé", clone.path.join("link-to-dir")).unwrap();
    clone.commit("odd files");

    clone.push_main().success();

    let live = server.latest();
    assert_eq!(server.read_live("name with spaces.txt"), "spaces\n");
    assert_eq!(server.read_live("unicodé/ファイル.txt"), "unicode\n");
    assert_eq!(fs::read_to_string(live.join(non_utf8)).unwrap(), "bytes\n");
    assert!(is_executable(&live.join("bin/console")));
    assert!(!is_executable(&live.join("name with spaces.txt")));
    assert_eq!(
        fs::read_link(live.join("link-to-file")).unwrap(),
        Path::new("name with spaces.txt")
    );
    assert_eq!(
        fs::read_link(live.join("link-to-dir")).unwrap(),
        Path::new("unicodé")
    );

    // A mode change alone deploys too.
    fs::set_permissions(
        clone.path.join("bin/console"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    clone.commit("not executable any more");
    clone.push_main().success();
    assert!(!is_executable(&server.latest().join("bin/console")));
}

#[test]
fn edits_and_files_added_on_the_server_are_undone_and_reported() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let app = server.root.join("application");
    fs::write(app.join("public/index.php"), "<?php echo 'hacked';\n").unwrap();
    fs::write(app.join("public/extra.txt"), "untracked\n").unwrap();

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();

    let removed = push
        .remote_line("warning: removed files added on the server")
        .expect("a warning naming the added file");
    assert!(removed.contains("public/extra.txt"), "{removed}");
    let warning = push
        .remote_line("warning: overwrote")
        .expect("a warning naming the file");
    assert!(warning.contains("public/index.php"), "{warning}");
    assert!(server.page().starts_with("Hello from the example app v2"));
    // The working copy is the commit again: the added file is gone from it and from the
    // build, while what git ignores (vendor/) stays.
    assert!(!app.join("public/extra.txt").exists());
    assert!(!server.latest().join("public/extra.txt").exists());
    assert!(app.join("vendor/autoload.php").is_file());
}

/// A checkout reads again only the directories whose stat moved since the last one, and
/// trusts a directory's stat only once its times are a second older than that record (file
/// times are coarser than the clock). Without this wait every directory of these tests would
/// be read again anyway, and they could not fail.
fn outlast_the_racy_window() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[test]
fn files_added_by_hand_are_removed_wherever_they_are_and_however_hidden() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    outlast_the_racy_window();
    // A push that writes nothing leaves directories whose stat the next push trusts.
    clone.write("public/part.php", "<?php echo 'part 2';\n");
    clone.commit("part 2");
    clone.push_main().success();
    let app = server.root.join("application");
    let mut added = Vec::new();
    for (i, dir) in [
        "",
        "src",
        "lib/Legacy",
        "packages/greeting/src",
        "storage/sessions",
    ]
    .iter()
    .enumerate()
    {
        let file = Path::new(dir).join(format!("added-{i}.php"));
        fs::write(app.join(&file), "<?php // left on the server\n").unwrap();
        added.push(file);
    }
    // A whole directory, and a file whose directory's mtime is set back as it was (its ctime
    // cannot be).
    fs::create_dir_all(app.join("lib/Legacy/Extra/Deeper")).unwrap();
    fs::write(app.join("lib/Legacy/Extra/Deeper/x.php"), "<?php\n").unwrap();
    let before = fs::metadata(app.join("packages/greeting")).unwrap();
    fs::write(app.join("packages/greeting/hidden.php"), "<?php\n").unwrap();
    fs::File::open(app.join("packages/greeting"))
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    added.push("packages/greeting/hidden.php".into());

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();

    let removed = push
        .remote_line("warning: removed files added on the server")
        .expect("a warning naming the added files");
    for file in &added {
        assert!(
            !app.join(file).exists(),
            "{} is still there",
            file.display()
        );
        assert!(!server.latest().join(file).exists());
        assert!(removed.contains(&*file.to_string_lossy()), "{removed}");
    }
    assert!(removed.contains("lib/Legacy/Extra/"), "{removed}");
    assert!(!app.join("lib/Legacy/Extra").exists());
    assert!(app.join("vendor/autoload.php").is_file());
    assert!(server.page().starts_with("Hello from the example app v2"));
}

/// What the app writes beside its tracked files keeps its directories' modes in every build,
/// a directory its owner may not search among them: the snapshot places what is below it first.
#[test]
fn kept_directories_keep_their_modes_in_the_build_even_without_search_permission() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write(".gitignore", "/vendor/\n/composer-script-ran\n/cache/\n");
    clone.commit("a cache the app writes");
    clone.push_main().success();
    let app = server.root.join("application");
    let dirs = [
        ("cache/closed", 0o640),
        ("cache/closed/deeper", 0o600),
        ("cache/open", 0o710),
    ];
    for (dir, mode) in dirs {
        fs::create_dir_all(app.join(dir)).unwrap();
        fs::write(app.join(dir).join("data.txt"), dir).unwrap();
        fs::set_permissions(app.join(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
    // The first build with them copies them; the next links them from it.
    for version in ["v2", "v3"] {
        clone.set_version(version);
        clone.commit(version);
        clone.push_main().success();
        let live = server.latest();
        for (dir, mode) in dirs {
            let meta = fs::metadata(live.join(dir)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{version}: {dir}");
            assert_eq!(
                fs::read_to_string(live.join(dir).join("data.txt")).unwrap(),
                dir
            );
        }
    }
}

/// A directory git does not track survives a checkout when all it holds is ignored (logs the
/// app writes): a file added there by hand, or in a directory below it, goes all the same.
#[test]
fn files_added_by_hand_in_a_directory_of_ignored_files_are_removed_too() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write(".gitignore", "/vendor/\n/composer-script-ran\n*.log\n");
    clone.commit("logs are not the app's");
    clone.push_main().success();
    let app = server.root.join("application");
    // (src/ changes with every push; lib/ with none, so its stat is trusted throughout.)
    for dir in ["src/logs", "src/logs/old", "lib/cache"] {
        fs::create_dir_all(app.join(dir)).unwrap();
        fs::write(app.join(dir).join("app.log"), "a line\n").unwrap();
    }
    // A push that sees them kept, one that finds their stat settled, one that trusts it.
    for version in ["v2", "v3", "v4"] {
        clone.set_version(version);
        clone.commit(version);
        clone.push_main().success();
        outlast_the_racy_window();
    }
    let added = [
        "src/logs/evil.php",
        "src/logs/old/evil.php",
        "lib/cache/evil.php",
    ];
    for file in added {
        fs::write(app.join(file), "<?php // left on the server\n").unwrap();
    }
    clone.set_version("v5");
    clone.commit("v5");
    let push = clone.push_main().success();
    let removed = push
        .remote_line("warning: removed files added on the server")
        .expect("a warning naming the added files");
    for file in added {
        assert!(removed.contains(file), "{removed}");
        assert!(!app.join(file).exists(), "{file} is still there");
        assert!(!server.latest().join(file).exists());
    }
    assert!(
        app.join("src/logs/old/app.log").is_file(),
        "ignored files stay"
    );
}

/// The other two places ignore rules come from beside the commit: the repository's
/// `core.excludesFile` and deploy.yml's `exclude:`. A file they stop ignoring goes at once,
/// though its directory's stat says nothing changed.
#[test]
fn a_file_the_excludes_file_or_exclude_stop_ignoring_goes_at_once() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let excludes = server.base().join("excludes");
    fs::write(&excludes, "draft.txt\n").unwrap();
    let excludes_path = excludes.to_str().unwrap();
    server.repo_git(&["config", "core.excludesFile", excludes_path]);
    server.set_config("exclude", "[packages/greeting/drafts/]");
    clone.push_main().success();
    let app = server.root.join("application");
    fs::write(app.join("lib/Legacy/draft.txt"), "kept while ignored\n").unwrap();
    fs::create_dir(app.join("packages/greeting/drafts")).unwrap();
    fs::write(
        app.join("packages/greeting/drafts/x.txt"),
        "kept while excluded\n",
    )
    .unwrap();
    for version in ["v2", "v3"] {
        outlast_the_racy_window();
        clone.set_version(version);
        clone.commit(version);
        assert!(
            clone
                .push_main()
                .success()
                .remote_line("warning: removed")
                .is_none()
        );
    }
    // Each in a directory of its own, whose stat the record trusts when its rule goes.
    let goes = |version: &str, file: &str, named: &str| {
        assert!(app.join(file).is_file(), "{file}");
        clone.set_version(version);
        clone.commit(version);
        let push = clone.push_main().success();
        let removed = push
            .remote_line("warning: removed files added on the server")
            .expect("a warning naming the file no longer ignored");
        assert!(removed.contains(named), "{removed}");
        assert!(!app.join(file).exists(), "{file}");
        assert!(!server.latest().join(file).exists(), "{file}");
    };
    fs::write(&excludes, "").unwrap();
    goes("v4", "lib/Legacy/draft.txt", "lib/Legacy/draft.txt");
    server.set_config("exclude", "[]");
    // (The warning names a directory that goes whole.)
    goes(
        "v5",
        "packages/greeting/drafts/x.txt",
        "packages/greeting/drafts/",
    );
}

#[test]
fn a_file_the_ignore_rules_stop_ignoring_goes_like_any_file_added_by_hand() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write(
        ".gitignore",
        "/vendor/\n/composer-script-ran\n/lib/Legacy/cache.txt\n",
    );
    clone.commit("ignore the page cache");
    let exclude = server.repo.join("info/exclude");
    fs::create_dir_all(exclude.parent().unwrap()).unwrap();
    fs::write(&exclude, "notes.txt\n").unwrap();
    clone.push_main().success();
    let app = server.root.join("application");
    fs::write(app.join("lib/Legacy/notes.txt"), "the admin's notes\n").unwrap();
    fs::write(app.join("lib/Legacy/cache.txt"), "cached\n").unwrap();
    outlast_the_racy_window();
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();
    assert!(push.remote_line("warning: removed files").is_none());
    assert!(app.join("lib/Legacy/notes.txt").is_file());
    assert!(app.join("lib/Legacy/cache.txt").is_file());

    // The repository's own rules change: lib/Legacy/ is as it was.
    fs::write(&exclude, "").unwrap();
    clone.set_version("v3");
    clone.commit("v3");
    let push = clone.push_main().success();
    let removed = push
        .remote_line("warning: removed files added on the server")
        .expect("a warning naming the file no longer ignored");
    assert!(removed.contains("lib/Legacy/notes.txt"), "{removed}");
    assert!(!app.join("lib/Legacy/notes.txt").exists());
    assert!(app.join("lib/Legacy/cache.txt").is_file());

    // The commit's rules change. libgit2 decides with the rules the working copy had when
    // the checkout began, so the file goes with the push after, and nothing is trusted that
    // was decided under the old rules.
    outlast_the_racy_window();
    clone.write(".gitignore", "/vendor/\n/composer-script-ran\n");
    clone.commit("cache no longer ignored");
    let first = clone.push_main().success();
    clone.set_version("v4");
    clone.commit("v4");
    let second = clone.push_main().success();
    let removed = [first, second]
        .iter()
        .filter_map(|push| push.remote_line("warning: removed files added on the server"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(removed.contains("lib/Legacy/cache.txt"), "{removed}");
    assert!(!app.join("lib/Legacy/cache.txt").exists());
}

#[test]
fn without_composer_on_path_a_composer_app_fails_clearly() {
    let probe = Server::install();
    // A PATH with git only: the hook finds no composer.
    let bin = probe.base().join("only-git");
    fs::create_dir(&bin).unwrap();
    let git = which_git();
    std::os::unix::fs::symlink(&git, bin.join("git")).unwrap();
    let server = Server::builder().path(bin.to_str().unwrap()).install();
    let clone = server.clone_fixture("example-app");

    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("`composer` is not on the hook's PATH"),
        "{error}"
    );
    assert_eq!(server.live(), None);
    assert!(server.builds().is_empty());
    server.assert_nothing_left_behind();
}

fn which_git() -> std::path::PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join("git"))
        .find(|p| p.is_file())
        .expect("git on PATH")
}

#[test]
fn a_broken_deploy_yml_is_reported_with_its_position_and_changes_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    let config = fs::read_to_string(server.config_path()).unwrap();
    fs::write(server.config_path(), format!("{config}keep_bulds: 3\n")).unwrap();
    let line = config.lines().count() + 1;

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    let expected = format!(
        "error: {}:{line}:1: unknown field `keep_bulds`",
        server.config_path().display()
    );
    assert!(
        error.starts_with(&expected),
        "{error}\nexpected: {expected}"
    );
    server.assert_unchanged_since(&before);
}

#[test]
fn a_latest_that_is_a_real_directory_is_refused_and_kept() {
    let server = Server::install();
    fs::create_dir(server.latest()).unwrap();
    fs::write(server.latest().join("index.html"), "hand-made").unwrap();
    let clone = server.clone_fixture("example-app");

    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("is a real directory, not a symlink") && error.contains("mv "),
        "{error}"
    );
    assert_eq!(
        fs::read_to_string(server.latest().join("index.html")).unwrap(),
        "hand-made"
    );
    assert!(server.builds().is_empty());
}

#[test]
fn install_twice_is_harmless_and_keeps_config_and_refs() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    server.set_config("keep_builds", "3");
    let config = fs::read_to_string(server.config_path()).unwrap();

    let out = server.run_install(
        &server.repo,
        &[
            "--branch",
            "main",
            "--url",
            "deploy@example.com:/srv/app.git",
        ],
    );
    harness::assert_success(&out, "second install");

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("kept the existing"), "{stdout}");
    assert!(
        stdout.contains("git remote add production deploy@example.com:/srv/app.git"),
        "{stdout}"
    );
    assert_eq!(fs::read_to_string(server.config_path()).unwrap(), config);
    assert_eq!(server.branch_head("main"), Some(clone.head()));
    assert!(server.page().contains("v1"));
    // The hook still deploys.
    clone.deploy_version("v2");
    assert!(server.page().contains("v2"));
}

#[test]
fn install_refuses_to_point_a_deploy_root_at_another_repository() {
    let server = Server::install();
    let config = fs::read_to_string(server.config_path()).unwrap();
    let other = server.base().join("other.git");

    let out = server.run_install(&other, &[]);

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("edit its `repository:`"),
        "{stderr}"
    );
    assert!(!other.exists(), "nothing created");
    assert_eq!(fs::read_to_string(server.config_path()).unwrap(), config);
}

#[test]
fn a_hook_in_a_repository_that_deploy_yml_does_not_name_refuses_to_deploy() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // A copy of the repository (hook included) that deploy.yml knows nothing of.
    let copy = server.base().join("copy.git");
    harness::copy_tree(&server.repo, &copy);
    clone.git(&["remote", "add", "copy", copy.to_str().unwrap()]);

    let out = server
        .command("git")
        .args(["push", "copy", "main"])
        .current_dir(&clone.path)
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("remote: error: this hook runs for")
            && stderr.contains("fix its `repository:`"),
        "{stderr}"
    );
    assert_eq!(server.live(), None);
}

#[test]
fn install_refuses_a_bad_url_and_someone_elses_hook() {
    let server = Server::install();
    let run_install = |url: &str| server.run_install(&server.repo, &["--url", url]);
    let out = run_install("ssh://example.com");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "{out:?}"
    );

    let hook = server.repo.join("hooks/post-receive");
    fs::write(&hook, "#!/bin/sh\necho mine\n").unwrap();
    let out = run_install("deploy@example.com:/srv/app.git");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not written by atomdeploy-hook"),
        "{out:?}"
    );
    assert_eq!(fs::read_to_string(&hook).unwrap(), "#!/bin/sh\necho mine\n");
}

#[test]
fn composer_that_never_finishes_is_killed_at_its_timeout() {
    let server = Server::builder()
        .config("composer", "{timeout: 3}")
        .install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();

    // A composer script that floods its output and never ends.
    let json = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    let endless = r#""@php -r \"while (true) { echo 'atomdeploy-endless ', str_repeat('x', 80), PHP_EOL; }\"""#;
    clone.write(
        "composer.json",
        &json.replace(r#""@php bin/post-install.php""#, endless),
    );
    clone.commit("endless script");
    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains("composer failed")
            && error.contains("did not finish within 3s and was killed"),
        "{error}"
    );
    let shown = push.stderr.matches("atomdeploy-endless").count();
    assert!((100..=5000).contains(&shown), "{shown} lines shown");
    assert!(
        push.stderr
            .contains("more lines of output from `composer install"),
        "no note of the cut"
    );
    server.assert_unchanged_since(&before);
    // The script was killed with composer, not left running.
    let left: Vec<String> = server
        .processes()
        .into_iter()
        .filter(|p| p.contains("atomdeploy-endless"))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

#[test]
fn link_mode_shares_unchanged_files_read_only_and_never_shared_entries() {
    use std::os::unix::fs::MetadataExt;
    let server = Server::builder()
        .config("snapshot", "link")
        .config("keep_builds", "2")
        .install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let first = server.live().unwrap();
    // shared: added once a build exists, so its seed comes from files that could be linked.
    server.set_config("shared", "[storage/sessions/]");
    clone
        .write("storage/sessions/seed", "seeded\n")
        .set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();
    let second = server.live().unwrap();

    let line = push
        .stderr
        .lines()
        .find(|l| l.contains("files linked to the live build"))
        .expect("a snapshot line");
    assert!(line.contains(" copied"), "{line}");
    let old = server.build_path(&first);
    let new = server.build_path(&second);
    let same = |p: &str| {
        fs::metadata(old.join(p)).unwrap().ino() == fs::metadata(new.join(p)).unwrap().ino()
    };
    assert!(same("public/index.php"), "an unchanged file is shared");
    assert!(
        same("vendor/autoload.php"),
        "vendor/ is shared when composer left it alone"
    );
    assert!(!same("src/Version.php"), "a changed file is not");
    assert!(
        fs::read_to_string(old.join("src/Version.php"))
            .unwrap()
            .contains("'v1'"),
        "the old build keeps its own"
    );
    for p in ["public/index.php", "src/Version.php", "vendor/autoload.php"] {
        let mode = fs::metadata(new.join(p)).unwrap().mode();
        assert_eq!(
            mode & 0o222,
            0,
            "{p} is writable ({mode:o}) in a build that shares files"
        );
    }
    // What went into shared/ is the user's own file: not shared with a build, writable. That
    // holds for a file the live build had too (.gitkeep), which link mode would have linked.
    for seeded in ["seed", ".gitkeep"] {
        let seeded = server.root.join("shared/storage/sessions").join(seeded);
        let meta = fs::metadata(&seeded).unwrap();
        assert_eq!(meta.nlink(), 1, "{}", seeded.display());
        assert_ne!(meta.mode() & 0o200, 0);
    }
    assert_ne!(
        fs::metadata(old.join("storage/sessions/.gitkeep"))
            .unwrap()
            .ino(),
        fs::metadata(server.root.join("shared/storage/sessions/.gitkeep"))
            .unwrap()
            .ino()
    );

    // Read-only builds are still removed by cleanup.
    for v in ["v3", "v4"] {
        clone.set_version(v);
        clone.commit(v);
        clone.push_main().success();
    }
    assert_eq!(server.builds().len(), 2);
    assert!(!old.exists());
    assert!(server.page().contains("v4"));
}

/// A deploy that failed for a reason on the server (here a missing file its before_switch
/// checks) is retried with the commands the failure summary prints, run as printed: pushing
/// the branch again would change nothing (git answers "Everything up-to-date"), and
/// `<commit>:replay` is no command git accepts while the server has no `replay` branch.
#[test]
fn the_retry_commands_of_a_failed_push_deploy_as_printed() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let fixed = server.base().join("fixed");
    server.set_config(
        "before_switch",
        &format!("['test -e {} || exit 4']", fixed.display()),
    );
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    let on_server = push.printed_commands("after a fix on the server: ");
    let again = push.printed_commands("or deploy a commit again: ");
    assert_eq!((on_server.len(), again.len()), (1, 1), "{}", push.stderr);
    assert!(again[0].contains(&v2[..7]), "{}", again[0]);
    assert!(
        clone.push_main().stderr.contains("Everything up-to-date"),
        "the trap the advice avoids"
    );

    fs::write(&fixed, "").unwrap();
    for line in [&on_server[0], &again[0]] {
        let builds = server.builds().len();
        let push = clone.run_printed(line).success();
        assert!(
            push.stderr.contains("remote: deployed "),
            "{line}:\n{}",
            push.stderr
        );
        assert_eq!(server.live_revision(), v2, "{line}");
        assert_eq!(server.builds().len(), builds + 1, "{line}: a new build");
    }
}

/// A first deploy writes application/ with a parallel checkout of its own: what it writes
/// must be the commit as git has it, and its index must know every file as written, or the
/// next push would read every file again (or miss an edit).
#[test]
fn a_first_checkout_is_the_commit_as_git_has_it_and_its_index_knows_every_file() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("fresh");
    for n in 0..400 {
        clone.write(
            format!("src/Part{}/Sub{}/File{n}.php", n % 7, n % 3),
            &format!("<?php // file {n}\n"),
        );
    }
    clone.write("public/index.php", "<?php echo 'fresh';\n");
    clone.write("empty.txt", "");
    clone.write("big.txt", &"0123456789abcdef\n".repeat(200_000));
    clone.write("crlf.txt", "kept\r\nas is\r\n");
    clone.write("bin/console", "#!/bin/sh\necho console\n");
    fs::set_permissions(
        clone.path.join("bin/console"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../src/Part1", clone.path.join("public/part")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", clone.path.join("dangling")).unwrap();
    clone.commit("many files");

    clone.push_main().success();

    let app = server.root.join("application");
    let expected = server.base().join("archive");
    fs::create_dir(&expected).unwrap();
    let archive = server
        .command("sh")
        .args(["-c", "git archive HEAD | tar -x -C \"$1\"", "sh"])
        .arg(&expected)
        .current_dir(&clone.path)
        .output()
        .unwrap();
    assert!(archive.status.success(), "{archive:?}");
    assert_eq!(
        harness::tree_listing(&app),
        harness::tree_listing(&expected)
    );
    assert!(is_executable(&app.join("bin/console")));
    assert!(!is_executable(&app.join("public/index.php")));
    let mode = |path: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(app.join(path)).unwrap().permissions(),
        ) & 0o7777
    };
    assert_eq!((mode("bin/console"), mode("empty.txt")), (0o755, 0o644));

    // git compares each file's lstat with the index: none may differ.
    let stat_dirty = server
        .command("git")
        .args(["diff-files", "--name-only"])
        .env("GIT_DIR", &server.repo)
        .env("GIT_WORK_TREE", &app)
        .env(
            "GIT_INDEX_FILE",
            server.root.join(".atomdeploy/application.index"),
        )
        .output()
        .unwrap();
    assert!(stat_dirty.status.success(), "{stat_dirty:?}");
    assert_eq!(String::from_utf8_lossy(&stat_dirty.stdout), "");

    clone.write("src/Part0/Sub0/File0.php", "<?php // changed\n");
    clone.commit("one file");
    let push = clone.push_main().success();
    assert!(
        push.stderr.contains("407 files, 1 written, 0 removed"),
        "{}",
        push.stderr
    );
    assert!(push.remote_line("warning:").is_none(), "{}", push.stderr);
    assert_eq!(
        server.read_live("src/Part0/Sub0/File0.php"),
        "<?php // changed\n"
    );
}

/// What libgit2 converts on the way out (gitattributes, `core.autocrlf`) is converted on a
/// first deploy too: the parallel checkout writes blobs as they are, so it stands aside.
#[test]
fn a_first_checkout_converts_line_endings_where_any_attributes_or_autocrlf_say_so() {
    for how in [
        "gitattributes",
        "autocrlf",
        "info/attributes",
        "core.attributesFile",
        "~/.config/git/attributes",
    ] {
        let server = Server::builder().config("composer", "false").install();
        let clone = server.empty_clone(&how.replace(['/', '~'], "-"));
        clone.write("public/index.php", "<?php echo 'eol';\n");
        clone.write("notes/a.txt", "one\ntwo\n");
        let rule = "*.txt text eol=crlf\n";
        match how {
            "gitattributes" => {
                clone.write("notes/.gitattributes", rule);
            }
            "autocrlf" => {
                server.repo_git(&["config", "core.autocrlf", "true"]);
            }
            "info/attributes" => {
                fs::create_dir_all(server.repo.join("info")).unwrap();
                fs::write(server.repo.join("info/attributes"), rule).unwrap();
            }
            "~/.config/git/attributes" => {
                // The hook's HOME is the test's (harness TestEnv).
                let dir = server.base().join("home/.config/git");
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("attributes"), rule).unwrap();
            }
            _ => {
                let file = server.base().join("attributes");
                fs::write(&file, rule).unwrap();
                server.repo_git(&["config", "core.attributesFile", file.to_str().unwrap()]);
            }
        }
        clone.commit(how);
        clone.push_main().success();
        assert_eq!(
            fs::read_to_string(server.root.join("application/notes/a.txt")).unwrap(),
            "one\r\ntwo\r\n",
            "{how}"
        );
        assert_eq!(server.read_live("notes/a.txt"), "one\r\ntwo\r\n", "{how}");
    }
}

/// A tree of very old git may hold a file as `100664`, which fsck lets through: a first
/// deploy writes it as an ordinary file, and the next push finds it unchanged.
#[test]
fn a_first_checkout_takes_old_gits_group_writable_mode_as_a_plain_file() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("legacy");
    let mut objects = Objects::in_clone(&clone);
    let legacy = objects.blob(b"old git\n");
    let public = objects.tree(&trees::tree(vec![(
        b"index.php",
        trees::file("<?php echo 'legacy';\n"),
    )]));
    // Written raw: git mktree would make the mode 100644.
    let tree = objects.raw_tree(&[
        ("100664", b"legacy.txt", legacy),
        ("40000", b"public", public),
    ]);
    let commit = objects.commit_tree(&tree, "legacy mode");
    // (ls-tree would show the mode as git reads it, 100644; the object keeps 100664.)
    let raw = server
        .command("git")
        .args(["cat-file", "tree", &trees::hex(&tree)])
        .current_dir(&clone.path)
        .output()
        .unwrap();
    assert!(raw.stdout.starts_with(b"100664 legacy.txt\0"), "{raw:?}");
    clone.git(&["update-ref", "refs/heads/main", &commit]);

    clone.push_main().success();
    assert_eq!(server.read_live("legacy.txt"), "old git\n");
    let app = server.root.join("application");
    assert!(!is_executable(&app.join("legacy.txt")));
    clone.git(&["reset", "-q", "--hard"]);
    clone.write("public/index.php", "<?php echo 'next';\n");
    clone.commit("next");
    let push = clone.push_main().success();
    assert!(
        push.stderr.contains("2 files, 1 written, 0 removed"),
        "{}",
        push.stderr
    );
    assert!(push.remote_line("warning:").is_none(), "{}", push.stderr);
}

/// Tracked files are compared with what the last checkout wrote by their stat data first: an
/// edit that keeps the size and puts the modification time back, or only flips the executable
/// bit, must still be found, undone and reported.
#[test]
fn edits_that_keep_a_files_size_and_time_are_still_undone_and_reported() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let app = server.root.join("application");
    let index_php = app.join("public/index.php");
    let original = fs::read(&index_php).unwrap();
    let modified = fs::metadata(&index_php).unwrap().modified().unwrap();
    let mut same_size = original.clone();
    let last = same_size.len() - 2;
    same_size[last] = if same_size[last] == b'#' { b'%' } else { b'#' };
    fs::write(&index_php, &same_size).unwrap();
    fs::File::options()
        .write(true)
        .open(&index_php)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    assert_eq!(
        fs::metadata(&index_php).unwrap().modified().unwrap(),
        modified
    );
    let composer_json = app.join("composer.json");
    fs::set_permissions(
        &composer_json,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    clone.write("README.md", "v2\n");
    clone.commit("v2");
    let push = clone.push_main().success();

    let warning = push
        .remote_line("warning: overwrote")
        .expect("a warning naming the edited files");
    assert!(
        warning.contains("public/index.php") && warning.contains("composer.json"),
        "{warning}"
    );
    assert_eq!(fs::read(&index_php).unwrap(), original);
    assert!(!is_executable(&composer_json));
    assert_eq!(
        fs::read(server.latest().join("public/index.php")).unwrap(),
        original
    );
}

/// A repository set to `core.symlinks=false` gets a commit's symlinks written as small files
/// of their target, as libgit2 writes them; a first checkout does the same.
#[test]
fn a_first_checkout_writes_links_as_files_where_core_symlinks_is_false() {
    let server = Server::builder().config("composer", "false").install();
    server.repo_git(&["config", "core.symlinks", "false"]);
    let clone = server.empty_clone("nolinks");
    clone.write("public/index.php", "<?php echo 'links';\n");
    std::os::unix::fs::symlink("index.php", clone.path.join("public/link.php")).unwrap();
    clone.commit("a link");
    clone.push_main().success();
    let link = server.root.join("application/public/link.php");
    assert!(fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(fs::read_to_string(&link).unwrap(), "index.php");
}

/// A tracked directory moved aside on the server and replaced by a symlink to where it went:
/// every file below it is still the same file (inode, times), so only the symlink tells. The
/// next checkout must remove the link and write the directory again, never through the link.
#[test]
fn a_tracked_directory_swapped_for_a_link_to_itself_is_put_back() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("swap");
    clone.write("public/index.php", "<?php echo 'swap';\n");
    clone.write("public/css/app.css", "body {}\n");
    clone.commit("v1");
    clone.push_main().success();
    // A push that writes its index well after public/'s files were written: within one
    // timer tick of it they would be "racily clean", looked at whatever their stat says.
    clone.write("README.md", "v1\n");
    clone.commit("v1 readme");
    clone.push_main().success();
    let public = server.root.join("application/public");
    let aside = server.root.join("application/public-aside");
    fs::rename(&public, &aside).unwrap();
    std::os::unix::fs::symlink("public-aside", &public).unwrap();

    clone.write("README.md", "v2\n");
    clone.commit("v2");
    let push = clone.push_main().success();

    let warning = push
        .remote_line("warning: removed symlinks made on the server")
        .unwrap_or_else(|| panic!("no warning:\n{}", push.stderr));
    assert!(warning.contains("public"), "{warning}");
    assert!(fs::symlink_metadata(&public).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(public.join("css/app.css")).unwrap(),
        "body {}\n"
    );
    assert!(!server.latest().join("public-aside").exists());
    assert!(
        fs::symlink_metadata(server.latest().join("public"))
            .unwrap()
            .is_dir()
    );
}
