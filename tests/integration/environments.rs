//! Environments: one bare repository serving several deploy roots (`main` → one root,
//! `staging` → another), each with its own deploy.yml, lock, builds, log and control
//! branches (`rollback-staging`, `replay-staging`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::harness::{BIN, Server, assert_success};

fn hook_text(server: &Server) -> String {
    fs::read_to_string(server.repo.join("hooks/post-receive")).unwrap()
}

/// `'…'` as install writes a path into the hook.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.to_str().unwrap().replace('\'', r"'\''"))
}

/// The version the live build of `server`'s root serves.
fn live_version(server: &Server) -> String {
    let text = server.read_live("src/Version.php");
    let start = text.find("NAME = '").expect("a version") + "NAME = '".len();
    text[start..].split('\'').next().unwrap().to_string()
}

/// A server whose repository deploys `main` into its root and `staging` into a second root,
/// at a path sh would split and unquote if the hook did not quote it.
fn two_roots() -> (Server, Server) {
    let main = Server::install();
    let staging = main.other_root(&main.base().join("srv it's \"staging\" $HOME `x`"));
    let out = staging.run_install(&main.repo, &["--branch", "staging"]);
    assert_success(&out, "install of the second root");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("`git push production :rollback-staging`")
            && stdout.contains("<commit>:refs/heads/replay-staging"),
        "{stdout}"
    );
    (main, staging)
}

fn log_len(server: &Server) -> usize {
    server.deploy_log().len()
}

#[test]
fn each_root_deploys_its_own_branch_rolls_back_and_replays_alone() {
    let (main, staging) = two_roots();
    assert!(
        hook_text(&main).contains(&format!(
            "post-receive --root {} --root {}\n",
            quoted(&main.root),
            quoted(&staging.root)
        )),
        "{}",
        hook_text(&main)
    );

    // main deploys only the first root.
    let clone = main.clone_fixture("example-app");
    clone.set_version("main-1");
    clone.commit("main-1");
    clone.push_main().success();
    assert_eq!(live_version(&main), "main-1");
    assert_eq!(staging.live(), None);
    assert!(staging.builds().is_empty());

    // staging deploys only the second root; the first one's builds, log and lock untouched.
    let main_state = main.state();
    let main_log = log_len(&main);
    let lock = main.root.join(".atomdeploy/lock");
    let lock_before = fs::metadata(&lock).unwrap().modified().unwrap();
    clone.git(&["checkout", "-q", "-b", "staging"]);
    clone.set_version("staging-1");
    clone.commit("staging-1");
    let push = clone.push(&["staging"]).success();
    assert_eq!(live_version(&staging), "staging-1");
    staging.assert_only_complete_builds(&[]);
    main.assert_unchanged_since(&main_state);
    assert_eq!(log_len(&main), main_log);
    assert_eq!(
        fs::metadata(&lock).unwrap().modified().unwrap(),
        lock_before
    );
    assert!(
        push.remote_line(&format!("atomdeploy: ==== {}", staging.root.display()))
            .is_some(),
        "{}",
        push.stderr
    );
    assert_eq!(log_len(&staging), 1);

    // One push of both branches deploys both, each block of output under its root's name.
    clone.set_version("staging-2");
    clone.commit("staging-2");
    clone.git(&["checkout", "-q", "main"]);
    clone.set_version("main-2");
    clone.commit("main-2");
    let push = clone.push(&["main", "staging"]).success();
    assert_eq!(live_version(&main), "main-2");
    assert_eq!(live_version(&staging), "staging-2");
    let heading = |root: &Path| {
        let line = format!("remote: atomdeploy: ==== {}", root.display());
        push.stderr
            .find(&line)
            .unwrap_or_else(|| panic!("no {line:?} in:\n{}", push.stderr))
    };
    assert!(heading(&main.root) < heading(&staging.root));
    assert_eq!(
        push.stderr.matches("remote: deployed ").count(),
        2,
        "{}",
        push.stderr
    );

    // Each root's rollback branch sits at its own rollback target.
    let first_staging = staging.build_path(&staging.builds()[0]);
    let first_staging_commit = fs::read_to_string(first_staging.join("REVISION")).unwrap();
    assert_eq!(
        main.branch_head("rollback-staging").as_deref(),
        Some(first_staging_commit.trim())
    );
    let first_main_commit =
        fs::read_to_string(main.build_path(&main.builds()[0]).join("REVISION")).unwrap();
    assert_eq!(
        main.branch_head("rollback").as_deref(),
        Some(first_main_commit.trim())
    );

    // Each root keeps the commits of its own builds (same-named builds in both roots), and
    // the first root's deploys leave the second's refs alone.
    let refs_of = |prefix: &str| -> Vec<String> {
        let out = main.repo_git(&["for-each-ref", "--format=%(refname)", prefix]);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let staging_refs = refs_of("refs/atomdeploy/builds/rollback-staging/");
    assert_eq!(
        staging_refs.len(),
        staging.builds().len(),
        "{staging_refs:?}"
    );
    let main_refs = refs_of("refs/atomdeploy/builds/").len() - staging_refs.len();
    assert_eq!(main_refs, main.builds().len());

    // `:rollback-staging` rolls back the second root only.
    let main_state = main.state();
    clone.push(&[":rollback-staging"]).success();
    assert_eq!(live_version(&staging), "staging-1");
    main.assert_unchanged_since(&main_state);
    assert_eq!(live_version(&main), "main-2");

    // `:rollback` is still the first root's, and leaves the second alone.
    let staging_state = staging.state();
    clone.push(&[":rollback"]).success();
    assert_eq!(live_version(&main), "main-1");
    staging.assert_unchanged_since(&staging_state);
    assert_eq!(
        refs_of("refs/atomdeploy/builds/rollback-staging/"),
        staging_refs
    );

    // `<commit>:replay-staging` makes a new build of the second root only, and is deleted.
    let staging_builds = staging.builds();
    let main_state = main.state();
    clone
        .push(&["staging:replay-staging"])
        .success()
        .stderr_lacks(" is not the deploy branch");
    let replayed = staging.live().unwrap();
    assert!(
        !staging_builds.contains(&replayed),
        "{replayed} is not a new build"
    );
    assert_eq!(live_version(&staging), "staging-2");
    assert_eq!(main.branch_head("replay-staging"), None);
    main.assert_unchanged_since(&main_state);
    assert!(
        staging
            .deploy_log()
            .iter()
            .any(|e| e.to_string().contains("refs/heads/replay-staging")),
        "{:?}",
        staging.deploy_log()
    );

    // The CLI's rollback of the second root keeps its own branch (none older is left: it
    // goes), and leaves the first root's alone.
    let main_rollback = main.branch_head("rollback");
    let out = staging.run(&["rollback"]);
    assert_success(&out, "atomdeploy-hook rollback --root <staging>");
    assert_eq!(live_version(&staging), "staging-1");
    assert_eq!(main.branch_head("rollback-staging"), None);
    assert_eq!(main.branch_head("rollback"), main_rollback);
}

#[test]
fn a_broken_root_fails_only_the_pushes_for_it_and_the_wrapper_says_so() {
    let (main, staging) = two_roots();
    let clone = main.clone_fixture("example-app");
    clone.wrap();
    clone.git(&["branch", "staging"]);
    let text = fs::read_to_string(staging.config_path()).unwrap();
    staging.set_config("keep_builds", "many");
    let staging_config = staging.config_path();
    let line = staging.config_line(|l| l == "keep_builds: many");
    let located = format!("{}:{line}:14", staging_config.display());

    // Both at once: the first root deploys, the second's error is shown, the push fails.
    let push = clone.push(&["main", "staging"]);
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    assert!(
        push.stderr.contains(&located),
        "{located} not in:\n{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("the push was received, but its deploy failed")
            && push.stderr.contains(&staging.root.display().to_string()),
        "{}",
        push.stderr
    );
    assert!(main.live().is_some());
    assert_eq!(staging.live(), None);

    // main alone: deploys, and the wrapper exits 0 whatever the other root's state.
    clone.set_version("main-2");
    clone.commit("main-2");
    clone.push_main().success();
    assert_eq!(live_version(&main), "main-2");

    // staging alone: fails with the file:line:column, nothing of the first root touched.
    let main_state = main.state();
    clone.git(&["checkout", "-q", "staging"]);
    clone.set_version("staging-2");
    clone.commit("staging-2");
    let push = clone.push(&["staging"]);
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    assert!(push.stderr.contains(&located), "{}", push.stderr);
    main.assert_unchanged_since(&main_state);

    // Fixed, the next push of it deploys.
    fs::write(&staging_config, text).unwrap();
    clone.set_version("staging-3");
    clone.commit("staging-3");
    clone.push(&["staging"]).success();
    assert_eq!(live_version(&staging), "staging-3");

    // deploy.yml gone: a push of main still deploys the first root; a branch no readable root
    // claims may be the missing one's, so that push says why it cannot tell.
    fs::remove_file(&staging_config).unwrap();
    clone.git(&["checkout", "-q", "main"]);
    clone.set_version("main-3");
    clone.commit("main-3");
    clone.push_main().success();
    assert_eq!(live_version(&main), "main-3");
    clone.git(&["branch", "feature"]);
    let push = clone.push(&["feature"]);
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    assert!(
        push.stderr
            .contains(&format!("cannot read {}", staging_config.display())),
        "{}",
        push.stderr
    );
    assert_eq!(live_version(&staging), "staging-3");
}

#[test]
fn install_refuses_clashing_branches_and_keeps_every_root_in_the_hook() {
    let main = Server::install();
    let hook = hook_text(&main);

    // A second root for the branch the first one deploys: refused, nothing written.
    let other = main.other_root(&main.base().join("srv-other"));
    let out = other.run_install(&main.repo, &["--branch", "main"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&main.root.display().to_string())
            && stderr.contains("deploys the branch `main` already"),
        "{stderr}"
    );
    assert_eq!(hook_text(&main), hook);
    assert!(!other.root.exists());

    // The reserved names, and a branch of the repository a new root would take for its own.
    let clone = main.clone_fixture("example-app");
    clone.git(&["branch", "rollback-qa"]);
    clone.git(&["branch", "feature"]);
    clone
        .push(&["rollback-qa"])
        .success()
        .stderr_has("refs/heads/rollback-qa is not the deploy branch");
    for (branch, why) in [
        ("rollback", "reserved"),
        ("replay", "reserved"),
        ("qa", "has a branch `rollback-qa`"),
    ] {
        let out = other.run_install(&main.repo, &["--branch", branch]);
        assert!(!out.status.success(), "--branch {branch}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "--branch {branch}: {stderr}");
        assert_eq!(hook_text(&main), hook, "--branch {branch}");
        assert!(!other.root.exists(), "--branch {branch}");
    }

    // A second root, then a third whose branch is the second's control branch.
    let staging = main.other_root(&main.base().join("srv-staging"));
    assert_success(
        &staging.run_install(&main.repo, &["--branch", "staging"]),
        "install staging",
    );
    let both = hook_text(&main);
    for branch in ["rollback-staging", "replay-staging", "staging"] {
        let out = other.run_install(&main.repo, &["--branch", branch]);
        assert!(!out.status.success(), "--branch {branch}");
        assert_eq!(hook_text(&main), both, "--branch {branch}");
    }

    // Reinstalling either root keeps both, in their order.
    assert_success(
        &main.run_install(&main.repo, &["--branch", "main"]),
        "reinstall main",
    );
    assert_eq!(hook_text(&main), both);
    assert_success(
        &staging.run_install(&main.repo, &["--branch", "staging"]),
        "reinstall staging",
    );
    assert_eq!(hook_text(&main), both);
    assert!(
        both.contains(&format!(
            "--root {} --root {}\n",
            quoted(&main.root),
            quoted(&staging.root)
        )),
        "{both}"
    );

    // A branch no root deploys: said once, not once per root.
    let push = clone.push(&["feature"]).success();
    assert_eq!(
        push.stderr
            .matches("refs/heads/feature is not the deploy branch")
            .count(),
        1,
        "{}",
        push.stderr
    );
    assert_eq!(main.live(), None);
    assert_eq!(staging.live(), None);

    // A hook of ours whose roots cannot be read any more is not rewritten with one root.
    // (An odd number of quotes: sh would not run it either.)
    let edited = both.replacen(" post-receive --root ", " post-receive --root '", 1);
    fs::write(main.repo.join("hooks/post-receive"), &edited).unwrap();
    let out = other.run_install(&main.repo, &["--branch", "qa2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot tell which roots"),
        "{out:?}"
    );
    assert_eq!(hook_text(&main), edited);
    assert!(!other.root.exists());
}

#[test]
fn a_group_operation_is_refused_by_a_repository_with_several_roots() {
    let (main, staging) = two_roots();
    let clone = main.clone_fixture("example-app");
    let push = clone.push(&["main:refs/atomdeploy/group/g1/status"]);
    let error = push.remote_line("error: ").unwrap_or_default();
    assert!(
        error.contains("a host of a group (`hosts:`) needs a repository of its own"),
        "{}",
        push.stderr
    );
    let left = main.repo_git(&["for-each-ref", "refs/atomdeploy/group/"]);
    assert!(left.is_empty(), "{}", String::from_utf8_lossy(&left));
    assert_eq!(main.live(), None);
    assert_eq!(staging.live(), None);
}

/// A group operation is refused by a repository with several roots, so the branches pushed
/// along with it, each root's own, must not move either: a deploy branch that moved without a
/// deploy would make the next push of the same commit deploy nothing.
#[test]
fn a_group_operation_pushed_with_each_roots_branches_moves_none_of_them() {
    let (main, staging) = two_roots();
    let clone = main.clone_fixture("example-app");
    clone.push(&["main", "main:staging"]).success();
    // A second deploy, so that each root has a rollback branch to delete.
    clone.set_version("v1.1");
    clone.commit("v1.1");
    clone.push(&["main", "main:staging"]).success();
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let refs = || String::from_utf8(main.repo_git(&["for-each-ref"])).unwrap();
    let before = (refs(), main.state(), staging.state());
    let group = format!("{v2}:refs/atomdeploy/group/g1/status");
    let spec = [
        "main",
        "main:staging",
        "main:replay",
        "main:replay-staging",
        ":rollback-staging",
        group.as_str(),
    ];
    for push in [clone.push(&spec), clone.group_push(&spec)] {
        let error = push.remote_line("error: ").unwrap_or_default();
        assert!(
            error.contains("needs a repository of its own"),
            "{}",
            push.stderr
        );
        assert_eq!(
            (refs(), main.state(), staging.state()),
            before,
            "{}",
            push.stderr
        );
    }
}

/// The roots listed in a hook, as sh hands them to the program: proof that the quoting holds
/// for paths sh would otherwise split or expand.
#[test]
fn the_hook_hands_every_root_to_the_program_unchanged() {
    let (main, staging) = two_roots();
    let hook = hook_text(&main);
    let exec = hook.lines().find(|l| l.starts_with("exec ")).unwrap();
    let (_, args) = exec.split_once(" post-receive ").unwrap();
    let out = main
        .command("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {args}"))
        .output()
        .unwrap();
    assert_success(&out, "sh");
    let words: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|w| *w != "--root")
        .map(PathBuf::from)
        .collect();
    assert_eq!(words, [main.root.clone(), staging.root.clone()]);
}

/// Each root has its own lock: a deploy of one held mid-way does not hold up the other's.
#[test]
fn a_deploy_held_in_one_root_does_not_hold_up_the_other() {
    let (main, staging) = two_roots();
    let clone = main.clone_fixture("example-app");
    clone.git(&["branch", "staging"]);
    let gate = main.gate_deploys();
    let held = clone.spawn_push(&["main"]);
    gate.wait_held(&held);
    let other = clone.push(&["staging"]);
    let (staging_live, main_live) = (staging.live(), main.live());
    // Opened before any assertion: a panic must not leave the held hook waiting forever.
    gate.open();
    let held = held.finish();
    other.success();
    assert!(staging_live.is_some());
    assert_eq!(main_live, None);
    held.success();
    assert!(main.live().is_some());
}

/// A further root's control branches have the same trap as the first root's: a tag pushed as
/// `replay-staging` (or as `rollback-staging` while it has nothing to roll back to) would be
/// created as a tag. The hook deletes it, deploys nothing in either root and fails the push
/// with the command that works, which then deploys the second root only.
#[test]
fn a_tag_pushed_as_a_further_roots_control_branch_is_deleted_and_refused() {
    let (main, staging) = two_roots();
    let clone = main.clone_fixture("example-app");
    clone.wrap();
    clone.push_main().success();
    clone.git(&["checkout", "-q", "-b", "staging"]);
    clone.set_version("staging-1");
    let commit = clone.commit("staging-1");
    clone.push(&["staging"]).success();
    clone.git(&["tag", "-a", "s1", "-m", "staging 1", &commit]);
    for (pushed, tag) in [
        ("s1:rollback-staging", "refs/tags/rollback-staging"),
        ("s1:replay-staging", "refs/tags/replay-staging"),
    ] {
        let (main_state, staging_state) = (main.state(), staging.state());
        let push = clone.push(&[pushed]);
        assert_eq!(push.code, Some(1), "{pushed}: {}", push.stderr);
        assert!(
            push.remote_line(&format!("error: this push made a tag, {tag}"))
                .is_some(),
            "{pushed}: {}",
            push.stderr
        );
        let tags = String::from_utf8(main.repo_git(&["tag", "--list"])).unwrap();
        assert_eq!(tags, "", "{pushed} left a tag behind");
        main.assert_unchanged_since(&main_state);
        staging.assert_unchanged_since(&staging_state);
    }
    let push = clone.push(&["s1:replay-staging"]);
    let printed = push.printed_commands("error: this push made a tag");
    assert!(
        printed[0].ends_with(&format!("{}:refs/heads/replay-staging", &commit[..7])),
        "{printed:?}"
    );
    let staging_builds = staging.builds().len();
    let main_state = main.state();
    clone.run_printed(&printed[0]).success();
    assert_eq!(staging.builds().len(), staging_builds + 1);
    main.assert_unchanged_since(&main_state);
}

/// Installs adding roots to one repository at the same moment (two operators, a config
/// management run) each read the hook's list of roots and write it back with their own added:
/// without a lock every install but the last one is lost from the hook, and two of them may
/// both take the repository's own `rollback`/`replay` branches.
#[test]
fn installs_adding_roots_at_once_lose_none() {
    let main = Server::install();
    let roots: Vec<(String, PathBuf)> = (0..6)
        .map(|i| (format!("env{i}"), main.base().join(format!("srv-env{i}"))))
        .collect();
    let running: Vec<_> = roots
        .iter()
        .map(|(branch, root)| {
            main.command(BIN)
                .arg("install")
                .arg("--repo")
                .arg(&main.repo)
                .arg("--root")
                .arg(root)
                .args(["--branch", branch])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in running {
        assert_success(&child.wait_with_output().unwrap(), "a concurrent install");
    }
    let hook = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    for (branch, root) in &roots {
        assert!(
            hook.contains(&format!("'{}'", root.display())),
            "{} lost from the hook: {hook}",
            root.display()
        );
        let own = fs::read_to_string(root.join(".atomdeploy/control-branches")).unwrap();
        assert_eq!(
            own,
            format!("rollback: rollback-{branch}\nreplay: replay-{branch}\n")
        );
    }
    assert!(hook.contains(&format!("--root '{}'", main.root.display())));
}

/// A further root's rollback branch is `rollback-<branch>`; git cannot make it while a branch
/// `rollback-<branch>/…` exists (a ref is a file, and that name is a folder): install took the
/// root, and then each deploy only warned that the rollback branch could not be kept, so
/// `git push production :rollback-staging` had nothing to delete. Refused at install, nothing
/// changed.
#[test]
fn a_branch_in_the_way_of_a_further_roots_rollback_branch_is_refused_at_install() {
    let main = Server::install();
    let clone = main.clone_fixture("example-app");
    clone.commit("v1");
    clone
        .push(&["HEAD:refs/heads/rollback-staging/old"])
        .success();
    let staging = main.other_root(&main.base().join("srv-staging"));
    let hook_before = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    let out = staging.run_install(&main.repo, &["--branch", "staging"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("refs/heads/rollback-staging/old") && said.contains("`rollback-staging`"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap(),
        hook_before
    );
    assert!(!staging.root.exists());
}

/// The hook names each root in a line of sh: a root whose path is not UTF-8 was written with
/// U+FFFD for its bytes (every push then failed on a root that does not exist), and one with a
/// line break cut the line the next install reads the roots from. Refused, nothing made.
#[test]
fn a_root_path_the_hook_cannot_name_is_refused_at_install() {
    let main = Server::install();
    let hook_before = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    for name in [&b"srv-caf\xe9"[..], b"srv\nstaging"] {
        let root = main.base().join(std::ffi::OsStr::from_bytes(name));
        let out = main
            .other_root(&root)
            .run_install(&main.repo, &["--branch", "staging"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains("must be UTF-8 and hold no line break"),
            "{said}"
        );
        assert!(!root.exists());
        assert_eq!(
            fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap(),
            hook_before
        );
    }
}
