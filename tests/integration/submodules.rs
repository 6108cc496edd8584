//! Submodules: a commit's submodules (nested ones too) are checked out into application/ and
//! carried into builds, fetched from the URL `.gitmodules` gives, relative URLs taken from
//! the server's repository as git takes them from a superproject's remote. A submodule that
//! cannot be fetched fails the deploy naming it, with nothing changed; `.gitmodules` entries
//! git's fsck refuses (options as URLs, `ext::`, names with `..`) are refused and run nothing.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::trees::{self, Node, Objects};
use crate::harness::{DevClone, Push, Server, assert_success, tree_listing};

/// A repository a submodule comes from: a bare repository next to the server's (so that
/// `../<name>.git` reaches it from there and from the developer's clone alike) and a working
/// copy that pushes to it.
struct Upstream {
    bare: PathBuf,
    work: PathBuf,
}

/// `git ARGS` in `dir` with the test's environment, local file transport allowed (git refuses
/// it to submodules by default since 2.38.1); its stdout.
#[track_caller]
fn git(server: &Server, dir: &Path, args: &[&str]) -> String {
    let out = server
        .command("git")
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out, &format!("git {}", args.join(" ")));
    String::from_utf8(out.stdout).unwrap()
}

/// `git submodule add URL PATH` in the working copy `dir` (not committed).
#[track_caller]
fn submodule_add(server: &Server, dir: &Path, url: &str, path: &str) {
    git(server, dir, &["submodule", "add", "-q", url, path]);
}

/// Moves the submodule at `path` in `dir` to its repository's latest commit (not committed).
#[track_caller]
fn submodule_update(server: &Server, dir: &Path, path: &str) {
    git(
        server,
        dir,
        &["submodule", "update", "-q", "--remote", path],
    );
}

impl Upstream {
    /// `<base>/<name>.git`, with one commit of `files`.
    #[track_caller]
    fn new(server: &Server, name: &str, files: &[(&str, &str)]) -> Upstream {
        let base = server.base();
        let bare = base.join(format!("{name}.git"));
        let work = base.join(format!("{name}-work"));
        git(
            server,
            &base,
            &["init", "-q", "-b", "main", "--bare", bare.to_str().unwrap()],
        );
        git(
            server,
            &base,
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        git(
            server,
            &work,
            &["remote", "add", "origin", bare.to_str().unwrap()],
        );
        let upstream = Upstream { bare, work };
        upstream.commit(server, files, &[]);
        upstream
    }

    /// Writes `files`, removes `gone`, commits and pushes; returns the commit.
    #[track_caller]
    fn commit(&self, server: &Server, files: &[(&str, &str)], gone: &[&str]) -> String {
        for (path, content) in files {
            let full = self.work.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        for path in gone {
            fs::remove_file(self.work.join(path)).unwrap();
        }
        git(server, &self.work, &["add", "-A"]);
        git(server, &self.work, &["commit", "-q", "-m", "change"]);
        git(server, &self.work, &["push", "-q", "origin", "main"]);
        git(server, &self.work, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    }
}

fn server() -> Server {
    Server::builder().config("composer", "false").install()
}

/// An app with an index.php, committed.
#[track_caller]
fn app(server: &Server) -> DevClone {
    let clone = server.empty_clone("app");
    clone.write("index.php", "<?php echo 'app';\n");
    clone.commit("app");
    clone
}

/// Every path under `dir` with its content, `.git` entries included (they must not be there).
fn listing(dir: &Path) -> Vec<(String, String)> {
    tree_listing(dir)
}

/// Paths only, for what a directory holds.
fn names(dir: &Path) -> Vec<String> {
    listing(dir).into_iter().map(|(p, _)| p).collect()
}

#[track_caller]
fn assert_no_git_inside(dir: &Path) {
    let gits: Vec<String> = names(dir)
        .into_iter()
        .filter(|p| p.split('/').any(|part| part == ".git"))
        .collect();
    assert_eq!(gits, Vec::<String>::new(), "a .git in {}", dir.display());
}

/// The submodule's files, nested submodules included, are in the build; a new submodule
/// commit deploys its new content (and not its removed files); a deploy that needs no new
/// commit fetches nothing; removing the submodule removes its files.
#[test]
fn submodules_are_checked_out_recursively_and_follow_their_commits() {
    let server = server();
    let deep = Upstream::new(&server, "deep", &[("deep.txt", "deep 1\n")]);
    let lib = Upstream::new(
        &server,
        "lib",
        &[("src/Lib.php", "<?php // lib 1\n"), ("old.txt", "old\n")],
    );
    // lib's own submodule, relative to lib's URL.
    submodule_add(&server, &lib.work, "../deep.git", "vendor/deep");
    git(&server, &lib.work, &["commit", "-q", "-m", "deep"]);
    git(&server, &lib.work, &["push", "-q", "origin", "main"]);

    let clone = app(&server);
    submodule_add(&server, &clone.path, "../lib.git", "lib");
    clone.commit("add lib");
    let push = clone.push_main().success();
    let live = server.latest();
    assert_eq!(server.read_live("lib/src/Lib.php"), "<?php // lib 1\n");
    assert_eq!(server.read_live("lib/vendor/deep/deep.txt"), "deep 1\n");
    assert_no_git_inside(&live);
    assert_no_git_inside(&server.root.join("application"));
    // One line per fetch, naming it, with its time.
    let fetched = push
        .stderr
        .lines()
        .filter(|l| l.contains("fetched submodule"))
        .count();
    assert_eq!(fetched, 2, "{}", push.stderr);
    assert!(
        push.stderr.contains(&format!(
            "fetched submodule `lib` (path `lib`) from {}",
            lib.bare.display()
        )),
        "{}",
        push.stderr
    );
    assert!(push.step_line("checkout").contains("(2 submodules)"));
    // Nothing of the submodules' checkouts reads as edits or files added by hand.
    push.stderr_lacks("warning:");

    // The app changes, the submodule does not: nothing is fetched, none of its files is
    // written again (each would be copied into the build instead of linked).
    let written = |path: &str| {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(server.root.join("application").join(path)).unwrap();
        (meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    let files = ["lib/src/Lib.php", "lib/vendor/deep/deep.txt"];
    let before: Vec<_> = files.iter().map(|f| written(f)).collect();
    clone.write("index.php", "<?php echo 'app 2';\n");
    clone.commit("app 2");
    let push = clone
        .push_main()
        .success()
        .stderr_lacks("fetched submodule")
        .stderr_lacks("warning:");
    assert!(
        push.step_line("checkout").contains("1 written"),
        "{}",
        push.stderr
    );
    let after: Vec<_> = files.iter().map(|f| written(f)).collect();
    assert_eq!(
        before, after,
        "unchanged submodule files were written again"
    );
    assert_eq!(server.read_live("lib/vendor/deep/deep.txt"), "deep 1\n");

    // A new commit of lib (a file changed, one removed, one added) and of deep under it.
    deep.commit(&server, &[("deep.txt", "deep 2\n")], &[]);
    submodule_update(&server, &lib.work, "vendor/deep");
    lib.commit(
        &server,
        &[("src/Lib.php", "<?php // lib 2\n"), ("new.txt", "new\n")],
        &["old.txt"],
    );
    submodule_update(&server, &clone.path, "lib");
    clone.commit("lib 2");
    clone
        .push_main()
        .success()
        .stderr_has("fetched submodule `lib`");
    assert_eq!(server.read_live("lib/src/Lib.php"), "<?php // lib 2\n");
    assert_eq!(server.read_live("lib/new.txt"), "new\n");
    assert_eq!(server.read_live("lib/vendor/deep/deep.txt"), "deep 2\n");
    assert!(
        !live.join("lib/old.txt").exists(),
        "a file lib removed is in the build"
    );
    assert!(!server.root.join("application/lib/old.txt").exists());

    // Going back to the first commit of lib needs no fetch: the cache has it.
    let first = server.builds()[0].clone();
    let first_rev = fs::read_to_string(server.build_path(&first).join("REVISION")).unwrap();
    let out = server.run(&["replay", first_rev.trim()]);
    assert_success(&out, "replay");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fetched"));
    assert_eq!(server.read_live("lib/old.txt"), "old\n");
    assert_eq!(server.read_live("lib/vendor/deep/deep.txt"), "deep 1\n");

    // Removed: its files go, from application/ and the build.
    git(&server, &clone.path, &["rm", "-q", "lib"]);
    clone.commit("no lib");
    clone.push_main().success();
    assert!(
        !live.join("lib").exists(),
        "a removed submodule is in the build"
    );
    assert!(!server.root.join("application/lib").exists());
    assert_eq!(
        names(&server.root.join(".atomdeploy/modules/checkouts")),
        Vec::<String>::new(),
        "the removed submodules' indexes are left"
    );
}

/// A submodule's path becomes a directory of the app's own files, a file, and a submodule
/// again, in every order: each build has exactly what its commit has there, no error.
#[test]
fn a_gitlink_becomes_a_directory_or_a_file_and_back() {
    let server = server();
    let _lib = Upstream::new(
        &server,
        "lib",
        &[("a.txt", "from lib\n"), ("sub/b.txt", "b\n")],
    );
    let clone = app(&server);
    let as_submodule = |clone: &DevClone| {
        git(
            &server,
            &clone.path,
            &["submodule", "add", "-q", "--force", "../lib.git", "lib"],
        );
        clone.commit("lib as a submodule");
        clone.push_main().success();
        assert_eq!(
            names(&server.latest().join("lib")),
            ["a.txt", "sub", "sub/b.txt"]
        );
    };
    let unlink = |clone: &DevClone| {
        // (git rm also takes its section out of .gitmodules.)
        git(&server, &clone.path, &["rm", "-q", "lib"]);
        let _ = fs::remove_dir_all(clone.path.join(".git/modules/lib"));
    };
    as_submodule(&clone);

    // → a directory of regular files (one of them with a name the submodule has too).
    unlink(&clone);
    clone.write("lib/a.txt", "the app's own\n");
    clone.write("lib/own.txt", "own\n");
    clone.commit("lib as a directory");
    clone.push_main().success();
    for dir in [
        server.latest().join("lib"),
        server.root.join("application/lib"),
    ] {
        assert_eq!(
            listing(&dir),
            [
                ("a.txt".to_string(), "the app's own\n".to_string()),
                ("own.txt".to_string(), "own\n".to_string())
            ],
            "{}",
            dir.display()
        );
    }

    // → a submodule again.
    git(&server, &clone.path, &["rm", "-q", "-r", "lib"]);
    clone.commit("no lib directory");
    as_submodule(&clone);
    assert!(!server.root.join("application/lib/own.txt").exists());

    // → a file, and back.
    unlink(&clone);
    clone.write("lib", "now a file\n");
    clone.commit("lib as a file");
    clone.push_main().success();
    assert_eq!(server.read_live("lib"), "now a file\n");
    assert_eq!(
        fs::read_to_string(server.root.join("application/lib")).unwrap(),
        "now a file\n"
    );
    clone.remove("lib");
    clone.commit("no lib file");
    as_submodule(&clone);
    server.assert_only_complete_builds(&[]);
}

/// The submodule's repository is gone when a deploy needs a commit it lacks: the deploy fails
/// naming the submodule and its URL, before application/ is touched; the live build stays.
/// The next deploy, once the repository is back, goes through.
#[test]
fn an_unreachable_submodule_fails_the_deploy_naming_its_url() {
    let server = server();
    let lib = Upstream::new(&server, "lib", &[("a.txt", "1\n")]);
    let clone = app(&server);
    submodule_add(&server, &clone.path, "../lib.git", "lib");
    clone.commit("lib 1");
    clone.push_main().success();

    lib.commit(&server, &[("a.txt", "2\n")], &[]);
    submodule_update(&server, &clone.path, "lib");
    clone.write("index.php", "<?php echo 'app 2';\n");
    clone.commit("lib 2");
    let moved = server.base().join("lib-moved.git");
    fs::rename(&lib.bare, &moved).unwrap();
    let before = server.state();
    let app_before = listing(&server.root.join("application"));
    let push = clone.push_main().deploy_failed();
    let error = error_line(&push);
    assert!(
        error.contains("submodule `lib` (path `lib`)")
            && error.contains(lib.bare.to_str().unwrap()),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert_eq!(server.read_live("lib/a.txt"), "1\n");
    assert_eq!(
        listing(&server.root.join("application")),
        app_before,
        "application/ was changed by a deploy that failed"
    );
    assert!(!server.root.join(".atomdeploy/checkout.pending").exists());

    fs::rename(&moved, &lib.bare).unwrap();
    clone.push(&["main:replay"]).success();
    assert_eq!(server.read_live("lib/a.txt"), "2\n");
    assert_eq!(server.read_live("index.php"), "<?php echo 'app 2';\n");
}

/// A submodule commit that was never pushed to its repository: a clear error saying so.
#[test]
fn a_submodule_commit_missing_from_its_repository_is_a_clear_error() {
    let server = server();
    let _lib = Upstream::new(&server, "lib", &[("a.txt", "1\n")]);
    let clone = app(&server);
    submodule_add(&server, &clone.path, "../lib.git", "lib");
    clone.commit("lib 1");
    clone.push_main().success();
    // Committed in the developer's submodule checkout, never pushed.
    let inner = clone.path.join("lib");
    fs::write(inner.join("a.txt"), "unpushed\n").unwrap();
    git(&server, &inner, &["commit", "-q", "-am", "unpushed"]);
    let missing = git(&server, &inner, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    clone.commit("points at an unpushed commit");
    let before = server.state();
    let push = clone.push_main().deploy_failed();
    let error = error_line(&push);
    assert!(
        error.contains(&format!("commit {missing} is not in that repository"))
            && error.contains("submodule `lib`"),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    assert_eq!(server.read_live("lib/a.txt"), "1\n");
}

/// The hook's `error:` line (git's own output may say `error:` too).
#[track_caller]
/// Commits `gitmodules` and a gitlink at `lib` to `target`, with no directory behind it (not
/// `git add -A`, which would drop a gitlink that has none).
fn commit_gitlink(
    server: &Server,
    clone: &DevClone,
    gitmodules: &str,
    target: &str,
    message: &str,
) {
    clone.write(".gitmodules", gitmodules);
    git(server, &clone.path, &["add", ".gitmodules"]);
    let cacheinfo = format!("160000,{target},lib");
    let index = ["update-index", "--add", "--cacheinfo", &cacheinfo];
    git(server, &clone.path, &index);
    git(server, &clone.path, &["commit", "-q", "-m", message]);
}

fn error_line(push: &Push) -> String {
    push.stderr
        .lines()
        .find(|l| l.starts_with("remote: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", push.stderr))
        .to_string()
}

/// `.gitmodules` entries that git's fsck refuses (with receive.fsckObjects off, as on an older
/// repository, so that the hook's own checks are all that stands in the way): URLs that read
/// as options or run a command through a transport, names with `..`, paths leaving the app.
/// Each is refused with an error naming it, runs nothing (the canary the command would make
/// is never made), and changes nothing.
#[test]
fn hostile_gitmodules_entries_are_refused_and_run_nothing() {
    let server = server();
    server.repo_git(&["config", "receive.fsckObjects", "false"]);
    let lib = Upstream::new(&server, "lib", &[("a.txt", "1\n")]);
    let lib_head = git(&server, &lib.work, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let clone = app(&server);
    clone.push_main().success();
    let canary = server.base().join("pwned");
    let touch = canary.to_str().unwrap();
    let cases: Vec<(String, String, String, &str)> = vec![
        (
            "lib".into(),
            "lib".into(),
            format!("--upload-pack=touch {touch}"),
            "would be read as an option",
        ),
        (
            "lib".into(),
            "lib".into(),
            format!("ext::sh -c touch% {touch}"),
            "runs a program",
        ),
        ("lib".into(), "lib".into(), "fd::0".into(), "runs a program"),
        (
            "../../../escape".into(),
            "lib".into(),
            "../lib.git".into(),
            "`../../../escape`",
        ),
        (
            "lib".into(),
            "../outside".into(),
            "../lib.git".into(),
            "`../outside`",
        ),
        ("lib".into(), "-lib".into(), "../lib.git".into(), "`-lib`"),
    ];
    for (name, path, url, says) in cases {
        let gitmodules = format!("[submodule \"{name}\"]\n\tpath = {path}\n\turl = {url}\n");
        // The gitlink the entry would fill, where a tree can hold it.
        commit_gitlink(&server, &clone, &gitmodules, &lib_head, "hostile");
        let commit = clone.head();
        let before = server.state();
        let app_before = listing(&server.root.join("application"));
        let push = clone.push(&["-f", "main"]).deploy_failed();
        let error = error_line(&push);
        assert!(
            error.contains(&format!("refusing commit {commit}")) && error.contains(says),
            "{gitmodules}: {error}"
        );
        assert!(!canary.exists(), "{gitmodules}: the command ran");
        server.assert_unchanged_since(&before);
        assert_eq!(listing(&server.root.join("application")), app_before);
        assert!(
            !server.root.join(".atomdeploy/modules").exists(),
            "{gitmodules}: something was fetched"
        );
        git(&server, &clone.path, &["rm", "-q", "--cached", "lib"]);
        clone.remove(".gitmodules");
        clone.commit("clean");
    }
    // And the same URLs with install's default: git itself refuses those it knows at push time.
    assert!(!canary.exists());
}

/// A symlink made on the server where a submodule goes is removed, never written through.
#[test]
fn a_symlink_where_a_submodule_goes_is_not_written_through() {
    let server = server();
    let _lib = Upstream::new(&server, "lib", &[("a.txt", "from lib\n")]);
    let clone = app(&server);
    submodule_add(&server, &clone.path, "../lib.git", "lib");
    clone.commit("lib");
    clone.push_main().success();
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    let app_lib = server.root.join("application/lib");
    fs::remove_dir_all(&app_lib).unwrap();
    std::os::unix::fs::symlink(&outside, &app_lib).unwrap();
    clone.write("index.php", "<?php echo 2;\n");
    clone.commit("app 2");
    clone.push_main().success();
    assert_eq!(
        names(&outside),
        Vec::<String>::new(),
        "written through a symlink"
    );
    assert_eq!(server.read_live("lib/a.txt"), "from lib\n");
    assert!(fs::symlink_metadata(&app_lib).unwrap().is_dir());
}

/// The example app's path package comes from a submodule (`packages/`): composer installs it
/// from the submodule's files, and a new submodule commit that changes the package reaches
/// vendor/ (the tree diff composer's decision reads shows only `packages` changed).
#[test]
fn a_path_package_in_a_submodule_reaches_vendor_when_the_submodule_changes() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let greeter = "greeting/src/Greeter.php";
    let original = fs::read_to_string(clone.path.join("packages").join(greeter)).unwrap();
    let packages = Upstream::new(
        &server,
        "packages",
        &[
            (greeter, &original),
            (
                "greeting/composer.json",
                &fs::read_to_string(clone.path.join("packages/greeting/composer.json")).unwrap(),
            ),
        ],
    );
    git(&server, &clone.path, &["rm", "-q", "-r", "packages"]);
    submodule_add(&server, &clone.path, "../packages.git", "packages");
    clone.commit("packages as a submodule");
    clone.push_main().success();
    assert!(server.page().starts_with("Hello from the example app"));

    packages.commit(
        &server,
        &[(greeter, &original.replace("Hello from", "Howdy from"))],
        &[],
    );
    submodule_update(&server, &clone.path, "packages");
    clone.commit("greeting says howdy");
    let push = clone.push_main().success();
    let line = push.step_line("composer");
    assert!(line.contains("a path repository changed"), "{line}");
    assert!(
        server.page().starts_with("Howdy from the example app"),
        "{}",
        server.page()
    );
}

/// A submodule commit whose tree climbs out with `..` (its repository took it, fsck off) is
/// refused before application/ is touched, naming the submodule and the path; nothing
/// outside is written.
#[test]
fn a_submodule_whose_tree_climbs_out_is_refused_before_anything_changes() {
    let server = server();
    let base = server.base();
    let canary = base.join("canary-file");
    fs::write(&canary, "canary\n").unwrap();
    let bare = base.join("lib.git");
    git(
        &server,
        &base,
        &["init", "-q", "-b", "main", "--bare", bare.to_str().unwrap()],
    );
    let lib = server.empty_clone("lib");
    let mut objects = Objects::in_clone(&lib);
    // application/lib/../../.. is the directory that holds the canary.
    let mut node = trees::dir(vec![(b"canary-file", trees::file("overwritten\n"))]);
    for _ in 0..2 {
        node = Node::Dir(vec![(b"..".to_vec(), node)]);
    }
    let hostile = objects.commit(&trees::tree(vec![(b"..", node)]), "climbs out");
    git(
        &server,
        &lib.path,
        &[
            "push",
            "-q",
            bare.to_str().unwrap(),
            &format!("{hostile}:refs/heads/main"),
        ],
    );

    let clone = app(&server);
    clone.push_main().success();
    let gitmodules = "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n";
    commit_gitlink(&server, &clone, gitmodules, &hostile, "hostile submodule");
    let before = server.state();
    let app_before = listing(&server.root.join("application"));
    let push = clone.push_main().deploy_failed();
    let error = error_line(&push);
    assert!(
        error.contains("submodule `lib` (path `lib`)")
            && error.contains(&format!("refusing commit {hostile}"))
            && error.contains("`..`"),
        "{error}"
    );
    assert_eq!(fs::read_to_string(&canary).unwrap(), "canary\n");
    server.assert_unchanged_since(&before);
    assert_eq!(listing(&server.root.join("application")), app_before);
}

/// A submodule host that accepts the connection and never answers: the fetch is killed at
/// `command_timeout`, with everything it started, and the deploy fails naming the URL.
#[test]
fn a_fetch_that_hangs_is_killed_at_command_timeout() {
    let server = server();
    server.set_config("command_timeout", "1");
    // The kernel completes connections to a listening socket that never accepts them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("git://{}/lib.git", listener.local_addr().unwrap());
    let clone = app(&server);
    clone.push_main().success();
    let gitmodules = format!("[submodule \"lib\"]\n\tpath = lib\n\turl = {url}\n");
    let commit = clone.head();
    commit_gitlink(&server, &clone, &gitmodules, &commit, "hanging submodule");
    let before = server.state();
    let started = std::time::Instant::now();
    let push = clone.push_main().deploy_failed();
    let error = error_line(&push);
    assert!(
        error.contains(&url) && error.contains("did not finish within 1s"),
        "{error}"
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    server.assert_unchanged_since(&before);
    let left: Vec<String> = server
        .processes()
        .into_iter()
        // (Only the fetch: git's own `maintenance --detach` after a push may be running.)
        .filter(|p| p.contains("fetch"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "left running");
    drop(listener);
}
