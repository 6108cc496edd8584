//! Nothing lost, nothing let in: kill -9 at every step, a full disk, a killed lock holder,
//! rewritten histories and hostile trees. Each test checks the README's guarantees:
//!
//! 1. `latest` resolves to a complete build at every instant;
//! 2. nothing in shared/ is lost, overwritten or replaced;
//! 3. after any failure or crash the next deploy succeeds and leaves nothing behind;
//! 4. builds/ only ever holds complete builds.

use crate::harness;

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::tmpfs::Tmpfs;
use crate::harness::{DevClone, Server, tree_listing};

const SHARED: &[&str] = &[".env", "storage/sessions"];

/// A server with shared data a user wrote, and hooks in every step, so that every fault
/// point is on the path of a deploy.
fn busy_server() -> (Server, DevClone) {
    let server = Server::builder()
        .config("shared", "[.env, storage/sessions/]")
        .config("keep_builds", "2")
        .config("before_switch", "['true']")
        .config("after_switch", "['true']")
        .install();
    fs::write(server.root.join("shared/.env"), "APP_KEY=precious\n").unwrap();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    fs::write(
        server.latest().join("storage/sessions/sess_user"),
        "logged in",
    )
    .unwrap();
    (server, clone)
}

/// A commit that changes a dozen files, so that a checkout has steps to be killed in, and
/// composer.json, so that composer runs in full and has output to be killed in.
fn commit_many(clone: &DevClone, label: &str) -> String {
    clone.set_version(label);
    let json = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    let description = json
        .lines()
        .find(|l| l.contains("\"description\""))
        .unwrap()
        .to_string();
    clone.write(
        "composer.json",
        &json.replace(
            &description,
            &format!("    \"description\": \"deploy {label}\","),
        ),
    );
    for n in 0..12 {
        clone.write(
            format!("content/page{n}.txt"),
            &format!("{label} page {n}\n"),
        );
    }
    clone.commit(label)
}

fn shared_listing(server: &Server) -> Vec<(String, String)> {
    tree_listing(&server.root.join("shared"))
}

/// Kills at these points, in this order, on one server; after each, the next deploy must
/// succeed. `NAME@N` is the N-th time the point is reached (see src/fault.rs).
const DEPLOY_FAULTS: &[&str] = &[
    "locked",
    "checkout-file@1",
    "checkout-file@6",
    "checkout-file@12",
    "child-output@1",
    "child-output@3",
    "child-output@6",
    "snapshot-file@1",
    "snapshot-file@15",
    "snapshot-file@25",
    "shared-entry@1",
    "shared-entry@2",
    "snapshot-done",
    "published",
    "before_switch",
    "switch-linked",
    "switched",
    "after_switch",
    "finish",
];

/// Kills in the cleanup after the push (src/steps/cleanup.rs), which runs on after the hook
/// has exited: before it deletes anything, and after it deleted the first old build.
const CLEANUP_FAULTS: &[&str] = &["cleanup", "removing@2"];

/// Pushes `args` with `fault` armed and checks what must hold right after the kill: the kill
/// happened, builds/ holds only complete builds, `latest` is where it was (`before`) or a
/// build of `allowed`, and shared/ is as it was.
#[track_caller]
fn push_killed(
    server: &Server,
    clone: &DevClone,
    args: &[&str],
    fault: &str,
    allowed: &str,
    shared: &[(String, String)],
) {
    let before = server.live().unwrap();
    let push = clone.push_with_fault(args, fault);
    // git push itself was in the killed group: no exit code means the kill happened.
    assert_eq!(
        push.code, None,
        "{fault} was never reached:\n{}",
        push.stderr
    );
    server.assert_only_complete_builds(SHARED);
    let live = server.live().unwrap();
    assert!(
        live == before || server.live_revision() == allowed,
        "{fault}: latest -> {live}, neither {before} nor a build of {allowed}"
    );
    assert_eq!(shared_listing(server), shared, "{fault}: shared/ changed");
}

/// The push after a kill: it deploys `commit` and leaves nothing behind.
#[track_caller]
fn deploys_after_kill(
    server: &Server,
    clone: &DevClone,
    commit: &str,
    fault: &str,
    shared: &[(String, String)],
) {
    clone.push_main().success();
    assert_eq!(server.live_revision(), commit, "after {fault}");
    server.assert_nothing_left_behind_in(&format!("after {fault}"));
    server.assert_only_complete_builds(SHARED);
    // No stray build: one the killed deploy published but never switched to is gone, not
    // merely complete.
    for build in server.builds() {
        let record = server.root.join(format!(".atomdeploy/builds/{build}.json"));
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
        assert_ne!(
            meta["went_live"], false,
            "after {fault}: builds/{build} never went live and is still there"
        );
    }
    assert_eq!(
        shared_listing(server),
        shared,
        "after {fault}: shared/ changed"
    );
}

#[test]
fn kill_9_anywhere_in_a_deploy_breaks_nothing_and_the_next_deploy_succeeds() {
    let (server, clone) = busy_server();
    for (i, fault) in DEPLOY_FAULTS.iter().enumerate() {
        let shared = shared_listing(&server);
        let commit = commit_many(&clone, &format!("k{i}"));
        push_killed(&server, &clone, &["main"], fault, &commit, &shared);

        let commit = commit_many(&clone, &format!("r{i}"));
        deploys_after_kill(&server, &clone, &commit, fault, &shared);
        assert!(server.page().contains(&format!("r{i}")));
        let pending = server.root.join(".atomdeploy/checkout.pending").exists();
        assert!(
            !pending,
            "after {fault}: a checkout still marked as interrupted"
        );
    }
    // No file of any killed commit survives in application/ unless the live commit has it.
    let live = server.live_revision();
    let expected: Vec<PathBuf> = server.files_of(&live);
    for entry in fs::read_dir(server.root.join("application/content")).unwrap() {
        let name = Path::new("content").join(entry.unwrap().file_name());
        assert!(
            expected.contains(&name),
            "stray {} in application/",
            name.display()
        );
    }
    eprintln!(
        "{} kills across every deploy step: 0 broken states",
        DEPLOY_FAULTS.len()
    );
}

#[test]
fn kill_9_in_the_cleanup_after_the_push_touches_nothing_live_and_the_next_deploy_finishes_it() {
    let (server, clone) = busy_server();
    for (i, fault) in CLEANUP_FAULTS.iter().enumerate() {
        // Builds to delete at once, so that a kill can come between two of them.
        server.set_config("keep_builds", "4");
        for n in 0..3 {
            commit_many(&clone, &format!("c{i}-{n}"));
            clone.push_main().success();
        }
        server.set_config("keep_builds", "1");
        let shared = shared_listing(&server);
        let old = server.builds().len();
        let commit = commit_many(&clone, &format!("k{i}"));
        // The push has its answer before the cleanup starts: it succeeds, and only the
        // cleanup's own process (a group of its own) is killed.
        let push = clone.push_with_fault(&["main"], fault).success();
        assert!(push.remote_line("deployed ").is_some(), "{fault}");
        let trash = fs::read_dir(server.root.join(".atomdeploy/trash"))
            .map(|d| d.count())
            .unwrap_or(0);
        let left = if *fault == "cleanup" { old } else { old - 1 };
        assert_eq!(
            trash, left,
            "{fault}: what the killed cleanup left in the trash"
        );
        assert_eq!(server.live_revision(), commit, "{fault}");
        assert_eq!(server.builds(), [server.live().unwrap()], "{fault}");
        server.assert_only_complete_builds(SHARED);
        assert_eq!(shared_listing(&server), shared, "{fault}: shared/ changed");

        let commit = commit_many(&clone, &format!("r{i}"));
        deploys_after_kill(&server, &clone, &commit, fault, &shared);
        assert!(server.page().contains(&format!("r{i}")));
    }
}

/// Kills while composer's dump-autoload and the snapshot run side by side, in the health
/// check, and in the automatic rollback after a failed one. `true`: the commit fails its
/// health check.
const OVERLAP_AND_HEALTH_FAULTS: &[(&str, bool)] = &[
    ("child-output@1", false),
    ("snapshot-file@3", false),
    ("healthcheck", false),
    ("rollback-marked", true),
    ("switched@2", true),
];

#[test]
fn kill_9_while_composer_and_the_snapshot_overlap_and_in_the_health_check() {
    let (server, clone) = busy_server();
    server.set_config(
        "healthcheck",
        "{command: '! test -e latest/public/sick', retries: 0}",
    );
    let class = |name: &str| format!("<?php\n\nnamespace App;\n\nfinal class {name} {{}}\n");
    for (i, (fault, sick)) in OVERLAP_AND_HEALTH_FAULTS.iter().enumerate() {
        let shared = shared_listing(&server);
        // A class added under src/: composer dumps the autoloader while the rest is copied.
        clone.write(format!("src/K{i}.php"), &class(&format!("K{i}")));
        if *sick {
            clone.write("public/sick", "");
        }
        let commit = clone.commit(&format!("k{i}"));
        push_killed(&server, &clone, &["main"], fault, &commit, &shared);

        if *sick {
            clone.remove("public/sick");
        }
        clone.write(format!("src/R{i}.php"), &class(&format!("R{i}")));
        let commit = clone.commit(&format!("r{i}"));
        deploys_after_kill(&server, &clone, &commit, fault, &shared);
        let classmap = server.read_live("vendor/composer/autoload_classmap.php");
        assert!(classmap.contains(&format!("App\\\\R{i}")));
    }
    eprintln!(
        "{} kills with composer and the snapshot overlapping and in health checks: 0 broken states",
        OVERLAP_AND_HEALTH_FAULTS.len()
    );
}

const ROLLBACK_FAULTS: &[&str] = &[
    "rollback-locked",
    "rollback-marked",
    "switch-linked",
    "switched",
    "rollback-switched",
];

#[test]
fn kill_9_during_a_rollback_breaks_nothing() {
    let (server, clone) = busy_server();
    commit_many(&clone, "v2");
    clone.push_main().success();
    for (i, fault) in ROLLBACK_FAULTS.iter().enumerate() {
        let shared = shared_listing(&server);
        commit_many(&clone, &format!("k{i}"));
        clone.push_main().success();
        let target = clone.git(&["ls-remote", "production", "rollback"]);
        let target = target.split_whitespace().next().unwrap().to_string();
        // Either the rollback did not happen yet, or it went exactly to its target.
        push_killed(&server, &clone, &[":rollback"], fault, &target, &shared);

        // The next push deploys, cleans up, and puts the rollback branch back.
        let commit = commit_many(&clone, &format!("r{i}"));
        deploys_after_kill(&server, &clone, &commit, fault, &shared);
        let rollback = clone.git(&["ls-remote", "production", "rollback"]);
        assert!(!rollback.is_empty(), "after {fault}");
        clone
            .push(&[":rollback"])
            .success()
            .stderr_has("rolled back to builds/");
        server.assert_only_complete_builds(SHARED);
    }
    eprintln!(
        "{} kills across a rollback: 0 broken states",
        ROLLBACK_FAULTS.len()
    );
}

#[test]
fn a_lock_holder_killed_with_9_frees_the_lock_at_once() {
    let server = Server::builder().config("lock_timeout", "30").install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let gate = server.gate_deploys();
    commit_many(&clone, "held");
    let held = clone.spawn_push(&["main"]);
    gate.wait_held(&held);
    let holder = server.lock_holder();
    let other = server.clone_repo("other");
    let head = commit_many(&other, "next");
    let waiting = other.spawn_push(&["--force", "main"]);
    waiting.wait_for_output("waiting for the deploy lock");

    // SAFETY: kill(2) of the hook process that holds the lock.
    assert_eq!(unsafe { libc::kill(holder, libc::SIGKILL) }, 0);
    let _ = held.finish();
    gate.open();
    let push = waiting.finish().success();

    push.stderr_has("removed builds/")
        .stderr_has("left by an interrupted deploy");
    assert_eq!(server.live_revision(), head);
    server.assert_nothing_left_behind();
    server.assert_only_complete_builds(&[]);
}

#[test]
fn a_full_disk_fails_the_deploy_clearly_and_the_next_one_that_fits_succeeds() {
    let Some(disk) = Tmpfs::mount("size=24m") else {
        return;
    };
    let server = Server::builder()
        .root(&disk.path.join("srv"))
        .config("shared", "[storage/sessions/]")
        .install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    fs::write(
        server.latest().join("storage/sessions/sess_user"),
        "logged in",
    )
    .unwrap();
    let before = server.state();
    // What is free once the first deploy (and composer's compiled-code cache) took its share.
    let free = fs2::available_space(&disk.path).unwrap() as usize;

    // A file that fits in application/, but not a second time in a build: the snapshot fails.
    // Then one that does not even fit in application/: the checkout fails.
    for (share, failed_in) in [(0.6, "snapshot failed"), (1.2, "checkout failed")] {
        clone.write("public/video.bin", "");
        fs::write(
            clone.path.join("public/video.bin"),
            noise((free as f64 * share) as usize),
        )
        .unwrap();
        clone.set_version("too big");
        clone.commit("too big");
        let push = clone.push_main().deploy_failed();

        let error = push.remote_line("error: ").unwrap();
        assert!(error.starts_with("error: the disk is full"), "{error}");
        assert!(error.contains(failed_in), "{error}");
        assert!(error.contains("No space left on device"), "{error}");
        server.assert_unchanged_since(&before);
        assert!(server.page().contains("v1"));
    }

    clone.remove("public/video.bin");
    clone.deploy_version("fits");
    assert!(server.page().contains("fits"));
    assert_eq!(server.read_live("storage/sessions/sess_user"), "logged in");
    drop(server);
}

#[test]
fn a_disk_that_fills_up_right_at_the_switch_never_takes_the_live_build_away() {
    let Some(disk) = Tmpfs::mount("size=20m") else {
        return;
    };
    let server = Server::builder()
        .root(&disk.path.join("srv"))
        .config("composer", "false")
        .install();
    let clone = server.empty_clone("fill");
    clone.write("public/index.php", "<?php echo 'v1';\n");
    clone.commit("v1");
    clone.push_main().success();
    // The last thing before the switch fills the disk: what the switch writes after its
    // rename (the build's record) cannot be written.
    server.set_config(
        "before_switch",
        "['dd if=/dev/zero of=\"$ATOMDEPLOY_ROOT/filler\" bs=1M count=100 2>/dev/null || true']",
    );
    clone.write("public/index.php", "<?php echo 'v2';\n");
    let v2 = clone.commit("v2");

    let push = clone.push_main();

    // Whatever else it says, latest points at a build that exists and is complete.
    let live = server.live().expect("latest points at a build");
    assert!(
        server.build_path(&live).is_dir(),
        "latest -> builds/{live}, which is gone:\n{}",
        push.stderr
    );
    server.assert_complete(&live, &[]);
    assert_eq!(server.live_revision(), v2, "{}", push.stderr);
    fs::remove_file(server.root.join("filler")).unwrap();
    server.set_config("before_switch", "[]");
    clone.write("public/index.php", "<?php echo 'v3';\n");
    clone.commit("v3");
    clone.push_main().success();
    server.assert_only_complete_builds(&[]);
}

/// Bytes that do not compress, so that sizes on disk are what they say.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn force_pushes_and_unrelated_histories_deploy_the_branch_as_pushed() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write("public/old.txt", "old\n");
    clone.commit("v1");
    clone.push_main().success();

    // History rewritten: the amended commit deploys.
    clone.set_version("amended");
    clone.git(&["add", "-A"]);
    clone.git(&["commit", "-q", "--amend", "-m", "amended"]);
    clone.push(&["--force", "main"]).success();
    assert_eq!(server.live_revision(), clone.head());
    assert!(server.page().contains("amended"));

    // A history with nothing in common: every file of the old one goes.
    clone.git(&["checkout", "-q", "--orphan", "fresh"]);
    clone.git(&["rm", "-rq", "--cached", "."]);
    for entry in fs::read_dir(&clone.path).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != ".git" {
            if path.is_dir() {
                fs::remove_dir_all(&path).unwrap()
            } else {
                fs::remove_file(&path).unwrap()
            }
        }
    }
    clone.write("public/index.php", "<?php echo 'a new start';\n");
    let fresh = clone.commit("a new start");
    clone.push(&["--force", "fresh:main"]).success();

    assert_eq!(server.live_revision(), fresh);
    assert!(!server.latest().join("public/old.txt").exists());
    assert!(!server.latest().join("composer.json").exists());
    assert!(
        !server.latest().join("vendor").exists(),
        "composer's vendor/ of the old history"
    );
    assert!(!server.root.join("application/public/old.txt").exists());
}

#[test]
fn a_missing_deploy_yml_is_a_clear_error_that_changes_nothing() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    fs::remove_file(server.config_path()).unwrap();

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();

    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains(&format!("cannot read {}", server.config_path().display())),
        "{error}"
    );
    server.assert_unchanged_since(&before);
}

#[test]
fn push_options_and_the_hooks_git_variables_never_reach_commands() {
    let server = Server::builder()
        .config("before_switch", "['env > \"$ATOMDEPLOY_ROOT/env.txt\"']")
        .install();
    server.repo_git(&["config", "receive.advertisePushOptions", "true"]);
    let marker = server.base().join("pwned");
    let clone = server.clone_fixture("example-app");

    clone
        .push(&[
            "-o",
            &format!("$(touch {})", marker.display()),
            "-o",
            "ci.skip",
            "main",
        ])
        .success();

    let env = fs::read_to_string(server.root.join("env.txt")).unwrap();
    let git_vars: Vec<&str> = env.lines().filter(|l| l.starts_with("GIT_")).collect();
    // Only the test's own pinned identity may be there; nothing git set for the hook.
    for var in &git_vars {
        let name = var.split('=').next().unwrap();
        assert!(
            [
                "GIT_CONFIG_NOSYSTEM",
                "GIT_CONFIG_GLOBAL",
                "GIT_AUTHOR_NAME",
                "GIT_AUTHOR_EMAIL",
                "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL",
                "GIT_TERMINAL_PROMPT"
            ]
            .contains(&name),
            "{var} reached a deploy command"
        );
    }
    assert!(!marker.exists(), "a push option was executed");
}

/// Descriptors the push (and so the hook) may hold open in [`a_huge_odd_tree_is_kept_exactly`]:
/// the usual default soft limit, well under the tree's file count.
const HUGE_TREE_OPEN_FILES: u32 = 1024;
/// Directories of files in that tree, and files in each.
const HUGE_TREE_DIRS: usize = 50;
const HUGE_TREE_FILES_PER_DIR: usize = 100;

/// Every kind of entry a copy could get wrong, each past a limit a deploy meets on the way:
/// several times more files than the push may hold descriptors open (so one kept per file or
/// directory fails it, however high the machine's own limit), in 50 directories filled side by
/// side; a file many times larger than the buffers between the push and the build (pipes,
/// git's and libgit2's streams); a path 100 directories deep; a 250-byte name (NAME_MAX is
/// 255); an executable bit; a symlink. More of them proves nothing more: 50,000 files and a
/// 200 MB file took minutes of the suite's time.
#[test]
fn a_huge_odd_tree_is_kept_exactly() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("huge");
    clone.write("public/index.php", "<?php echo 'huge';\n");
    for d in 0..HUGE_TREE_DIRS {
        for f in 0..HUGE_TREE_FILES_PER_DIR {
            clone.write(format!("src/d{d}/f{f}.php"), &format!("<?php // {d}/{f}\n"));
        }
    }
    let deep: PathBuf = std::iter::repeat_n("deep", 100).collect();
    clone.write(deep.join("bottom.txt"), "down here\n");
    let long = "l".repeat(250);
    clone.write(format!("{long}.txt"), "long name\n");
    fs::write(clone.path.join("big.bin"), noise(32 * 1024 * 1024)).unwrap();
    clone.write("bin/tool", "#!/bin/sh\n");
    fs::set_permissions(
        clone.path.join("bin/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../big.bin", clone.path.join("bin/big-link")).unwrap();
    clone.commit("huge");

    clone
        .push_with_open_file_limit(HUGE_TREE_OPEN_FILES, &["main"])
        .success();

    let build = server.latest();
    let mut compared = 0;
    for entry in walkdir::WalkDir::new(&clone.path)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(&clone.path).unwrap();
        let ours = fs::symlink_metadata(build.join(relative))
            .unwrap_or_else(|_| panic!("missing {}", relative.display()));
        let theirs = entry.path().symlink_metadata().unwrap();
        assert_eq!(
            ours.file_type().is_symlink(),
            theirs.file_type().is_symlink(),
            "{}",
            relative.display()
        );
        if theirs.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(build.join(relative)).unwrap(),
                fs::read_link(entry.path()).unwrap()
            );
        } else if theirs.is_file() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(ours.len(), theirs.len(), "{}", relative.display());
            assert_eq!(
                ours.permissions().mode() & 0o111 != 0,
                theirs.permissions().mode() & 0o111 != 0,
                "{}",
                relative.display()
            );
            assert!(
                fs::read(build.join(relative)).unwrap() == fs::read(entry.path()).unwrap(),
                "{} differs",
                relative.display()
            );
            compared += 1;
        }
    }
    const { assert!(HUGE_TREE_DIRS * HUGE_TREE_FILES_PER_DIR > 4 * HUGE_TREE_OPEN_FILES as usize) };
    assert_eq!(compared, HUGE_TREE_DIRS * HUGE_TREE_FILES_PER_DIR + 5);
}

#[test]
fn the_build_is_flushed_before_latest_moves_and_latest_is_flushed_after() {
    let _heavy = harness::exclusive();
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let trace = server.base().join("trace.txt");

    // strace follows the real syscalls of a deploy (`replay`, the same pipeline as a push).
    let out = server
        .command("strace")
        .args([
            "-f",
            "-qq",
            "-y", // descriptors with their paths: the fsync must be of the deploy root
            "-e",
            "trace=syncfs,fsync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(harness::BIN)
        .args(["replay", "--root"])
        .arg(&server.root)
        .output()
        .expect("strace is installed by scripts/install-deps");
    harness::assert_success(&out, "strace atomdeploy-hook replay");

    let calls: Vec<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let root_fd = format!("<{}>)", server.root.display());
    let flip = calls
        .iter()
        .position(|c| c.contains("rename") && c.contains(".latest.") && c.contains("/latest\""))
        .unwrap_or_else(|| panic!("no rename onto latest in:\n{}", calls.join("\n")));
    assert!(
        calls[..flip]
            .iter()
            .any(|c| c.contains("syncfs(") && c.ends_with("= 0")),
        "no syncfs before the flip:\n{}",
        calls.join("\n")
    );
    assert!(
        calls[flip..]
            .iter()
            .any(|c| c.contains("fsync(") && c.contains(&root_fd) && c.ends_with("= 0")),
        "no fsync of the root after the flip:\n{}",
        calls.join("\n")
    );
}

/// A first deploy's checkout (application/ empty, written in parallel) killed half-way: the
/// next push finishes it, and nothing of the killed commit that the next one lacks is left.
#[test]
fn kill_9_in_a_first_checkout_leaves_nothing_the_next_push_does_not_deploy() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("first");
    clone.write("public/index.php", "<?php echo 'first';\n");
    for n in 0..40 {
        clone.write(format!("content/first{n}.txt"), &format!("first {n}\n"));
    }
    clone.commit("first");
    let push = clone.push_with_fault(&["main"], "checkout-file@20");
    assert_eq!(
        push.code, None,
        "the fault was never reached:\n{}",
        push.stderr
    );
    assert_eq!(server.live(), None);
    assert!(server.builds().is_empty(), "{:?}", server.builds());

    for n in 0..40 {
        clone.remove(&format!("content/first{n}.txt"));
        clone.write(format!("content/second{n}.txt"), &format!("second {n}\n"));
    }
    clone.write("public/index.php", "<?php echo 'second';\n");
    let commit = clone.commit("second");
    clone.push_main().success();

    assert_eq!(server.live_revision(), commit);
    server.assert_nothing_left_behind();
    let app = server.root.join("application");
    let mut expected: Vec<PathBuf> = server.files_of(&commit);
    expected.sort();
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(&app)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(&app).unwrap().to_path_buf())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(server.read_live("content/second7.txt"), "second 7\n");
    assert!(!server.root.join(".atomdeploy/checkout.pending").exists());
}
