//! A build is its commit: what happens to other builds, to shared/ or to application/'s
//! ignored files never reaches a new build, and `builds` tells what the builds take on disk.

use crate::harness;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::{DevClone, Server};

/// Every file and link of `commit`, as git has them, checked out afresh into a temp dir.
fn fresh_checkout(server: &Server, commit: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tar = server.repo_git(&["archive", "--format=tar", commit]);
    let mut untar = server
        .command("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    untar.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(untar.wait().unwrap().success());
    dir
}

/// Panics unless every file of the build's commit (shared entries aside) has the commit's
/// content there, and every file of its vendor/ is what composer left in application/.
#[track_caller]
fn assert_build_is_its_commit(server: &Server, build: &str, shared: &[&str]) {
    let dir = server.build_path(build);
    let commit = fs::read_to_string(dir.join("REVISION")).unwrap();
    let fresh = fresh_checkout(server, commit.trim());
    let app = server.root.join("application");
    let compare = |from: &Path, relative: &Path| {
        let built = dir.join(relative);
        let meta = fs::symlink_metadata(from).unwrap();
        if meta.file_type().is_symlink() {
            assert_eq!(fs::read_link(&built).ok(), fs::read_link(from).ok());
        } else if meta.is_file() {
            assert!(
                fs::read(&built).ok() == fs::read(from).ok(),
                "builds/{build}/{} is not the commit's ({}):\n{:?}",
                relative.display(),
                from.display(),
                String::from_utf8_lossy(&fs::read(&built).unwrap_or_default())
            );
        }
    };
    for entry in walkdir::WalkDir::new(fresh.path()).min_depth(1) {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(fresh.path()).unwrap();
        if shared.iter().any(|s| relative.starts_with(s)) {
            continue;
        }
        compare(entry.path(), relative);
    }
    if app.join("vendor").is_dir() {
        for entry in walkdir::WalkDir::new(app.join("vendor")) {
            let entry = entry.unwrap();
            compare(entry.path(), entry.path().strip_prefix(&app).unwrap());
        }
    }
}

/// Writes into a file of a build in place, the way a process that ignores its read-only
/// mode does (as root, or after `chmod u+w`).
fn write_in_place(path: &Path, how: usize) {
    let mut file = match how % 3 {
        0 => fs::OpenOptions::new().append(true).open(path).unwrap(),
        1 => {
            let mode = fs::metadata(path).unwrap().mode();
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200)).unwrap();
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .unwrap()
        }
        // Same size: only the content and the times change.
        _ => fs::OpenOptions::new().write(true).open(path).unwrap(),
    };
    let len = fs::metadata(path).unwrap().len() as usize;
    let text = match how % 3 {
        2 => "X".repeat(len.max(1)),
        _ => "<?php die('written in place');\n".to_string(),
    };
    file.write_all(text.as_bytes()).unwrap();
}

fn live_file(server: &Server, path: &str) -> PathBuf {
    server.latest().join(path)
}

/// A directory of the live build swapped for a symlink (to anywhere: shared/, another
/// disk) is not looked through: nothing below it is linked into the next build, which has
/// its own copies.
#[test]
fn nothing_is_linked_through_a_symlink_in_the_live_builds_tree() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let live = server.build_path(&server.live().unwrap());
    let elsewhere = server.base().join("elsewhere-lib");
    fs::rename(live.join("lib"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, live.join("lib")).unwrap();

    clone.set_version("v2");
    clone.commit("v2");
    clone.push_main().success();
    let second = server.live().unwrap();
    assert_build_is_its_commit(&server, &second, &[]);
    let helper = "Legacy/Helper.php";
    let ours = fs::metadata(server.build_path(&second).join("lib").join(helper)).unwrap();
    let theirs = fs::metadata(elsewhere.join(helper)).unwrap();
    assert_ne!(ours.ino(), theirs.ino(), "linked through the symlink");
    assert_eq!(theirs.nlink(), 1);
}

#[test]
fn a_write_into_a_live_build_never_reaches_a_later_build_or_a_replay() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let first = server.live().unwrap();
    // PHP running as root rewrites files of the live build: the mode does not stop it.
    write_in_place(&live_file(&server, "public/index.php"), 0);
    write_in_place(&live_file(&server, "public/part.php"), 1);
    write_in_place(&live_file(&server, "vendor/autoload.php"), 2);

    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().success();
    let second = server.live().unwrap();
    assert_build_is_its_commit(&server, &second, &[]);
    // Whoever deploys learns that something writes into builds/.
    push.stderr_has("of the live build changed after it was deployed");
    assert!(server.page().contains("v2"), "{}", server.page());
    // The files the new build copied afresh are read-only again and its own.
    let index = fs::metadata(live_file(&server, "public/index.php")).unwrap();
    assert_eq!(index.mode() & 0o222, 0);
    assert_eq!(index.nlink(), 1);
    assert!(
        fs::read_to_string(server.build_path(&first).join("public/index.php"))
            .unwrap()
            .contains("written in place"),
        "the old build keeps what was written into it"
    );

    // A writer that puts the size and modification time back escapes the check of an
    // ordinary deploy; `replay` links nothing and makes the commit afresh all the same.
    let part = live_file(&server, "public/part.php");
    let before = fs::metadata(&part).unwrap();
    write_in_place(&part, 2);
    let file = fs::File::options().write(true).open(&part).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    fs::set_permissions(&part, before.permissions()).unwrap();
    let out = server.run(&["replay"]);
    harness::assert_success(&out, "replay");
    let replayed = server.live().unwrap();
    assert_ne!(replayed, second);
    assert_build_is_its_commit(&server, &replayed, &[]);
    assert_eq!(
        fs::metadata(live_file(&server, "public/part.php"))
            .unwrap()
            .nlink(),
        1,
        "a replay shares nothing"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replay: nothing linked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hostile: several deploys, each after in-place writes of every kind into files of the live
/// build (some shared with every older build), in files the next commit keeps as they are.
#[test]
fn in_place_writes_across_many_files_and_builds_never_reach_a_new_build() {
    let server = Server::builder().config("keep_builds", "3").install();
    let clone = server.clone_fixture("example-app");
    for n in 0..12 {
        clone.write(format!("public/page{n}.php"), &format!("<?php echo {n};\n"));
    }
    clone.commit("pages");
    clone.push_main().success();
    let mut linked_seen = false;
    for round in 0..5usize {
        // A different handful of files each round, by every kind of write.
        for k in 0..4 {
            let n = (round * 5 + k * 3) % 12;
            write_in_place(
                &live_file(&server, &format!("public/page{n}.php")),
                round + k,
            );
        }
        if round % 2 == 1 {
            write_in_place(&live_file(&server, "lib/Legacy/Helper.php"), round);
        }
        clone.set_version(&format!("r{round}"));
        clone.commit(&format!("round {round}"));
        let push = clone.push_main().success();
        let build = server.live().unwrap();
        assert_build_is_its_commit(&server, &build, &[]);
        assert!(server.page().contains(&format!("r{round}")));
        let line = push.remote_line("    snapshot").expect("a snapshot line");
        linked_seen |= !line.contains(" 0 files linked");
    }
    assert!(linked_seen, "files nobody wrote are still linked");

    // An older build, written into while it was not live, then rolled back to: the next build
    // is made from it and must not take what was written.
    let builds = server.builds();
    let target = &builds[builds.len() - 2];
    for n in [1, 6, 11] {
        let path = server
            .build_path(target)
            .join(format!("public/page{n}.php"));
        write_in_place(&path, n);
    }
    harness::assert_success(&server.run(&["rollback"]), "rollback");
    assert_eq!(server.live().as_ref(), Some(target));
    clone.set_version("after-rollback");
    clone.commit("after rollback");
    clone.push_main().success();
    assert_build_is_its_commit(&server, &server.live().unwrap(), &[]);
}

#[test]
fn a_shared_entry_taken_out_of_deploy_yml_never_brings_shared_data_into_a_build() {
    let server = Server::builder().config("shared", "[storage/]").install();
    let clone = server.clone_fixture("example-app");
    clone.write("storage/.gitignore", "*.cache\n");
    clone.write("storage/logs/.gitignore", "*.log\n");
    clone.commit("storage ignores its content");
    clone.push_main().success();
    let shared = server.root.join("shared/storage");
    assert!(shared.join(".gitignore").is_file(), "seeded");
    // The site's users' data, in shared/ and in the seeded files themselves.
    fs::write(shared.join("user-upload.txt"), "private\n").unwrap();
    fs::write(shared.join(".gitignore"), "edited on the server\n").unwrap();
    fs::write(shared.join("sessions/.gitkeep"), "session data\n").unwrap();
    let before = harness::tree_listing(&server.root.join("shared"));

    // storage/ is no longer shared: the next build must have the commit's storage/.
    server.set_config("shared", "[]");
    clone.deploy_version("v2");
    let build = server.build_path(&server.live().unwrap());
    assert!(
        fs::symlink_metadata(build.join("storage"))
            .unwrap()
            .is_dir()
    );
    assert_build_is_its_commit(&server, &server.live().unwrap(), &[]);
    // Edited on the server or not (a later write would change the build all the same).
    for file in [".gitignore", "sessions/.gitkeep", "logs/.gitignore"] {
        let built = fs::metadata(build.join("storage").join(file)).unwrap();
        let user = fs::metadata(shared.join(file)).unwrap();
        assert_ne!(
            built.ino(),
            user.ino(),
            "storage/{file} of the build is the users' file in shared/"
        );
    }
    assert!(!build.join("storage/user-upload.txt").exists());
    // What users write to shared/ from now on stays out of the build, and shared/ is as it was.
    fs::write(shared.join(".gitignore"), "written later\n").unwrap();
    assert_eq!(
        fs::read_to_string(build.join("storage/.gitignore")).unwrap(),
        "*.cache\n"
    );
    fs::write(shared.join(".gitignore"), "edited on the server\n").unwrap();
    assert_eq!(harness::tree_listing(&server.root.join("shared")), before);

    // And back: shared again, then a deploy that keeps the entry. shared/ is kept as it is.
    server.set_config("shared", "[storage/]");
    clone.deploy_version("v3");
    assert_eq!(harness::tree_listing(&server.root.join("shared")), before);
}

#[test]
fn nested_git_directories_and_gitfiles_never_reach_a_build() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.write(".gitignore", "/vendor/\n/composer-script-ran\n/cache/\n");
    clone.commit("cache/ is ignored");
    clone.push_main().success();
    // A clone made on the server in an ignored directory, and a gitfile (a worktree's or a
    // submodule's) deeper down.
    let app = server.root.join("application");
    let git = |dir: &Path| {
        fs::create_dir_all(dir).unwrap();
        let out = server
            .command("git")
            .args(["init", "-q"])
            .current_dir(dir)
            .output()
            .unwrap();
        harness::assert_success(&out, "git init");
        fs::write(dir.join("tracked.php"), "<?php\n").unwrap();
    };
    git(&app.join("cache/clone"));
    fs::create_dir_all(app.join("cache/worktree")).unwrap();
    fs::write(app.join("cache/worktree/.git"), "gitdir: /elsewhere/.git\n").unwrap();

    clone.deploy_version("v2");
    let build = server.build_path(&server.live().unwrap());
    let found: Vec<_> = walkdir::WalkDir::new(&build)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() == ".git")
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(found.is_empty(), "{found:?}");
    // The rest of those directories is copied as any ignored file is.
    assert!(build.join("cache/clone/tracked.php").is_file());
    assert!(build.join("cache/worktree").is_dir());
    assert!(server.page().contains("v2"));
}

/// `composer install --prefer-source` of a git repository leaves vendor/<package>/.git.
#[test]
fn a_composer_source_install_does_not_bring_its_clone_into_the_build() {
    let server = Server::builder()
        .config(
            "composer",
            "{args: [install, --prefer-source, --no-interaction, --no-progress]}",
        )
        .install();
    // The package, in a git repository of its own that composer clones.
    let package = server.empty_clone("package");
    package.write(
        "composer.json",
        r#"{"name": "atomdeploy/source-pkg", "autoload": {"psr-4": {"Pkg\\": "src/"}}}"#,
    );
    package.write("src/Thing.php", "<?php\nnamespace Pkg;\nclass Thing {}\n");
    package.commit("package");
    package.git(&["tag", "v1.0.0"]);

    let clone = server.empty_clone("app");
    clone.write(
        "composer.json",
        &format!(
            r#"{{"require": {{"atomdeploy/source-pkg": "^1.0"}},
               "repositories": [{{"packagist.org": false}},
                                {{"type": "vcs", "url": "{}"}}]}}"#,
            package.path.display()
        ),
    );
    clone.write(".gitignore", "/vendor/\n");
    clone.write("public/index.php", "<?php echo 'source';\n");
    clone.update_composer_lock();
    clone.commit("app");
    clone.push_main().success();
    let app = server.root.join("application");
    assert!(
        app.join("vendor/atomdeploy/source-pkg/.git").is_dir(),
        "composer made a source install"
    );
    let build = server.build_path(&server.live().unwrap());
    assert!(
        build
            .join("vendor/atomdeploy/source-pkg/src/Thing.php")
            .is_file()
    );
    assert!(!build.join("vendor/atomdeploy/source-pkg/.git").exists());
}

fn du(args: &[&str], path: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    harness::assert_success(&out, "du");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn push_versions(clone: &DevClone, versions: &[&str]) {
    for v in versions {
        clone.deploy_version(v);
    }
}

#[test]
fn builds_sizes_add_up_to_what_builds_take_on_disk() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    // Big enough that sharing it or not shows: 2 MB nobody changes.
    let big: String = (0..40_000).map(|i| format!("{i:049}\n")).collect();
    clone.write("public/big.txt", &big);
    clone.commit("big");
    clone.push_main().success();
    push_versions(&clone, &["v2", "v3", "v4"]);

    let rows = server.builds_json();
    assert_eq!(rows.len(), 4);
    let builds_dir = server.root.join("builds");
    let on_disk = du(&[], &builds_dir);
    let sum: u64 = rows.iter().map(|r| r["disk_bytes"].as_u64().unwrap()).sum();
    // du also counts builds/ itself.
    let slack = 16 * 1024;
    assert!(
        sum <= on_disk && on_disk - sum <= slack,
        "the builds' disk_bytes add up to {sum}, du -s builds/ says {on_disk}: {rows:#?}"
    );
    // The newest build holds every file it shares; the older ones add only what they changed.
    assert!(rows[0]["disk_bytes"].as_u64().unwrap() > 2_000_000);
    for row in &rows[1..] {
        assert!(row["disk_bytes"].as_u64().unwrap() < 500_000, "{row:#}");
    }
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let apparent = du(&["--apparent-size"], &builds_dir.join(name));
        assert_eq!(row["apparent_bytes"].as_u64().unwrap(), apparent, "{name}");
    }

    let out = server.run(&["builds"]);
    harness::assert_success(&out, "builds");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("DISK"), "{table}");
    assert!(table.contains("APPARENT"), "{table}");
    assert!(table.contains("builds/ takes"), "{table}");
}
