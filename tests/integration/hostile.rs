//! Hostile pushes: trees git can hold but no checkout may follow (`..`, `.git` and its
//! spellings, names with `/`, duplicate names, `.gitmodules` as a link), generated from a seed,
//! pushed in sequences with type changes in between, against a server whose deploy root sits
//! next to canaries. After every push: canaries and shared/ byte-identical, only complete
//! builds, nothing left behind, never a panic.
//!
//! `HOSTILE_SEED=N` runs that one sequence; `HOSTILE_SEQUENCES=N` runs seeds 1 to N instead
//! of 1 to 40, `HOSTILE_PUSHES=N` makes each sequence N pushes long instead of 6.

use crate::harness;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use crate::harness::trees::{self, Gen, HOSTILE, Hostile, Node, Objects, Rng, Tree, file};
use crate::harness::{DevClone, Push, Server, ServerState, tree_listing};

const SHARED: &[&str] = &[".env", "uploads"];

/// A server as an operator's older repository has it: receive.fsckObjects off, so the hook's
/// own checks are all that stands between a pushed tree and the disk.
struct World {
    server: Server,
    clone: DevClone,
    objects: Objects,
}

impl World {
    fn new() -> World {
        let server = Server::builder()
            .config("composer", "false")
            .config("shared", "[.env, uploads/]")
            .install();
        server.repo_git(&["config", "receive.fsckObjects", "false"]);
        let shared = server.root.join("shared");
        fs::write(shared.join(".env"), "APP_KEY=precious\n").unwrap();
        fs::create_dir(shared.join("uploads")).unwrap();
        fs::write(shared.join("uploads/user.jpg"), b"\xff\xd8 a user's photo").unwrap();
        let base = server.base();
        fs::create_dir_all(base.join("canary/sub")).unwrap();
        fs::write(base.join("canary/file"), "canary\n").unwrap();
        fs::write(base.join("canary/sub/deep"), "deep canary\n").unwrap();
        fs::write(base.join("canary-file"), "canary file\n").unwrap();
        std::os::unix::fs::symlink("canary", base.join("canary-link")).unwrap();
        let clone = server.empty_clone("hostile");
        let objects = Objects::in_clone(&clone);
        World {
            server,
            clone,
            objects,
        }
    }

    fn generator(&self, seed: u64) -> Gen {
        let base = self.server.base();
        let abs = |p: &str| base.join(p).as_os_str().as_bytes().to_vec();
        Gen {
            rng: Rng::new(seed),
            link_targets: vec![
                abs("canary"),
                abs("canary-link"),
                abs("canary/file"),
                b"../../canary".to_vec(),
                b"../../../canary-link".to_vec(),
                b"../../canary-file".to_vec(),
                b"../shared/.env".to_vec(),
                b"../../srv/shared/uploads".to_vec(),
                b"index.php".to_vec(),
                b"/".to_vec(),
            ],
            canary_names: vec![
                b"canary".to_vec(),
                b"canary-link".to_vec(),
                b"canary-file".to_vec(),
            ],
        }
    }

    /// Everything outside application/ and builds/ that no push may change: the canaries,
    /// shared/, and which entries the deploy root and its parent have.
    fn untouchable(&self) -> Vec<(String, String)> {
        let base = self.server.base();
        let mut out = tree_listing(&base.join("canary"));
        out.push((
            "canary-file".into(),
            fs::read_to_string(base.join("canary-file")).unwrap_or_else(|e| format!("{e}")),
        ));
        out.push((
            "canary-link".into(),
            fs::read_link(base.join("canary-link"))
                .map_or_else(|e| format!("{e}"), |t| t.display().to_string()),
        ));
        for dir in [&base, &self.server.root] {
            let mut names: Vec<(String, String)> = fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let kind = format!("{:?}", e.file_type().unwrap());
                    (e.path().display().to_string(), kind)
                })
                .filter(|(name, _)| !name.contains("/clone-"))
                .collect();
            names.sort();
            out.extend(names);
        }
        out.extend(tree_listing(&self.server.root.join("shared")));
        out
    }

    fn push(&self, commit: &str) -> Push {
        self.clone
            .push(&["-f", &format!("{commit}:refs/heads/main")])
    }
}

/// What a refusal must look like: an `error:` line naming the commit and the path, nothing
/// deployed, the live build and builds/ as they were, no checkout marked as in progress, the
/// attempt logged as failed. An error line that does not name the commit and the path, or a
/// checkout left marked as in progress, is noted in `problems`: the sequence goes on, so that
/// what such a state does to the next pushes shows on disk.
#[track_caller]
fn assert_refused(
    world: &World,
    output: &str,
    commit: &str,
    path: &[u8],
    before: &ServerState,
    problems: &mut Vec<String>,
) {
    // Shown lossily, control characters escaped (a name must not forge a line of output).
    let shown: String = String::from_utf8_lossy(path)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let error = output
        .lines()
        .find(|l| l.contains("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{output}"));
    if !(error.contains(commit) && error.contains(&format!("`{shown}`"))) {
        problems.push(format!(
            "the error names neither {commit} nor `{shown}`: {error}"
        ));
    }
    assert!(!output.contains("deployed "), "said deployed:\n{output}");
    world
        .server
        .assert_unchanged_since_in(before, "a refused commit");
    if world
        .server
        .root
        .join(".atomdeploy/checkout.pending")
        .exists()
    {
        problems.push(format!(
            "{commit} was refused but marked as being checked out"
        ));
    }
    let log = world.server.deploy_log();
    let last = log.last().expect("the attempt is logged");
    assert_eq!(last["outcome"], "failed", "{last}");
    assert_eq!(last["commit"], commit, "{last}");
}

#[track_caller]
fn assert_untouched(world: &World, before: &[(String, String)]) {
    let now = world.untouchable();
    let gone: Vec<_> = before.iter().filter(|e| !now.contains(e)).collect();
    let new: Vec<_> = now.iter().filter(|e| !before.contains(e)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "a push reached outside application/ and builds/: gone {gone:?}, new or changed {new:?}"
    );
}

/// The files, links and gitlinks of `tree` are in the live build, each as the commit has it.
#[track_caller]
fn assert_live_is(server: &Server, tree: &Tree) {
    let live = server.build_path(&server.live().unwrap());
    for (path, node) in trees::leaves(tree) {
        let full = live.join(OsStr::from_bytes(&path));
        let shown = String::from_utf8_lossy(&path);
        let meta = fs::symlink_metadata(&full)
            .unwrap_or_else(|e| panic!("the live build lacks {shown:?}: {e}"));
        match node {
            Node::File { content, .. } => {
                assert!(meta.is_file(), "{shown:?} is not a file in the live build");
                assert_eq!(fs::read(&full).unwrap(), content, "{shown:?}");
            }
            Node::Link(target) => {
                assert!(meta.is_symlink(), "{shown:?} is not a symlink");
                assert_eq!(fs::read_link(&full).unwrap().as_os_str().as_bytes(), target);
            }
            Node::Gitlink(_) => {
                assert!(meta.is_dir(), "gitlink {shown:?} is not a directory");
                assert_eq!(fs::read_dir(&full).unwrap().count(), 0, "gitlink {shown:?}");
            }
            Node::Dir(_) => unreachable!(),
        }
    }
}

/// `tree` with every link replaced by a directory of files named like what the links point at
/// (the canaries, shared/'s files).
fn links_as_dirs(tree: &Tree) -> Tree {
    tree.iter()
        .map(|(name, node)| {
            let node = match node {
                Node::Link(_) => trees::dir(vec![
                    (b"file", file("interrupted\n")),
                    (b"deep", file("interrupted\n")),
                    (b"user.jpg", file("interrupted\n")),
                    (b".env", file("interrupted\n")),
                ]),
                Node::Dir(sub) => Node::Dir(links_as_dirs(sub)),
                other => other.clone(),
            };
            (name.clone(), node)
        })
        .collect()
}

/// Runs one seeded sequence; its steps are written to `log` as they happen.
fn run_sequence(
    seed: u64,
    pushes: usize,
    log: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> (usize, usize, usize) {
    let mut world = World::new();
    let mut generator = world.generator(seed);
    let mut in_server = Objects::in_server(&world.server);
    let mut untouchable = Vec::new();
    let (mut refused, mut deployed, mut tampered) = (0, 0, 0);
    let mut live: Tree = Vec::new();
    for step in 0..pushes {
        let mut changes = Vec::new();
        let mut tree = if step == 0 {
            generator.tree()
        } else {
            generator.mutate(&live, &mut changes)
        };
        // The first push makes a live build for the hostile ones to leave alone.
        let hostile = (step > 0 && generator.rng.chance(60)).then(|| *generator.rng.pick(HOSTILE));
        let mut refused_path = None;
        if let Some(what) = hostile {
            let (t, path) = generator.inject(&tree, what);
            tree = t;
            refused_path = Some(path);
        }
        let message = format!("seed {seed} step {step}");
        let unpushable = hostile == Some(Hostile::Empty);
        let commit = if unpushable {
            in_server.commit(&tree, &message)
        } else {
            world.objects.commit(&tree, &message)
        };
        log.push(format!(
            "push {step}: {commit} {}{}",
            if changes.is_empty() {
                "new tree".to_string()
            } else {
                changes.join(", ")
            },
            match (&hostile, &refused_path) {
                (Some(what), Some(path)) =>
                    format!(" + {what:?} at {:?}", String::from_utf8_lossy(path)),
                _ => String::new(),
            }
        ));
        // Sometimes someone on the server replaces a directory of application/ with a link
        // to a canary: the next deploy must remove it, not write through it.
        let live_dirs: Vec<_> = trees::dirs(&live).into_iter().skip(1).collect();
        if !live_dirs.is_empty() && generator.rng.chance(25) {
            let at = generator.rng.pick(&live_dirs).join(&b'/');
            let app = world.server.root.join("application");
            let full = app.join(OsStr::from_bytes(&at));
            // Only a real directory of application/ (an earlier link may stand above it).
            let real = fs::canonicalize(&full).is_ok_and(|c| c == full);
            if real {
                tampered += 1;
                fs::remove_dir_all(&full).unwrap();
                std::os::unix::fs::symlink(world.server.base().join("canary"), &full).unwrap();
            }
            log.push(format!(
                "  (on the server: application/{:?} replaced by a link to the canary: {real})",
                String::from_utf8_lossy(&at)
            ));
        }
        // Sometimes the last checkout was killed half-way, through a commit that had real
        // directories (holding names the canaries and shared/ have) where this one has links:
        // what is left of it must be removed in application/, never through those links.
        if refused_path.is_none() && generator.rng.chance(30) {
            let interrupted = in_server.commit(&links_as_dirs(&tree), "interrupted");
            fs::write(
                world.server.root.join(".atomdeploy/checkout.pending"),
                format!("{interrupted}\n"),
            )
            .unwrap();
            log.push(format!("  (a checkout of {interrupted} was interrupted)"));
        }
        let before = world.server.state();
        let push = if unpushable {
            Push {
                code: Some(0),
                stderr: String::new(),
            }
        } else {
            world.push(&commit)
        };
        assert!(
            !push.stderr.contains("panicked"),
            "the hook panicked:\n{}",
            push.stderr
        );
        // What matters most first: nothing outside was touched, the builds are whole.
        if step == 0 {
            untouchable = world.untouchable();
        }
        assert_untouched(&world, &untouchable);
        world.server.assert_only_complete_builds(SHARED);
        world.server.assert_nothing_left_behind();
        match &refused_path {
            Some(path) => {
                if !unpushable {
                    assert_refused(&world, &push.stderr, &commit, path, &before, problems);
                }
                // `replay` refuses it the same way.
                let out = world.server.run(&["replay", &commit]);
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(
                    !out.status.success(),
                    "replay deployed a commit it must refuse:\n{text}"
                );
                assert!(!text.contains("panicked"), "replay panicked:\n{text}");
                assert_untouched(&world, &untouchable);
                assert_refused(&world, &text, &commit, path, &before, problems);
                refused += 1;
            }
            None => {
                let push = push.success();
                assert!(push.stderr.contains("remote: deployed "), "{}", push.stderr);
                assert_eq!(world.server.live_revision(), commit);
                assert_live_is(&world.server, &tree);
                live = tree;
                deployed += 1;
            }
        }
    }
    // After all that, an ordinary commit deploys.
    let ordinary = trees::tree(vec![
        (b"index.php", file("<?php echo 'ordinary';\n")),
        (b"public", trees::dir(vec![(b"app.css", file("body {}\n"))])),
    ]);
    let commit = world.objects.commit(&ordinary, "ordinary");
    log.push(format!("ordinary push: {commit}"));
    world.push(&commit).success();
    assert_eq!(world.server.live_revision(), commit);
    assert_live_is(&world.server, &ordinary);
    assert_untouched(&world, &untouchable);
    world.server.assert_only_complete_builds(SHARED);
    (refused, deployed + 1, tampered)
}

#[test]
fn generated_hostile_trees_never_reach_outside_the_build() {
    let seeds: Vec<u64> = match std::env::var("HOSTILE_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => {
            let n = std::env::var("HOSTILE_SEQUENCES").map_or(40, |n| n.parse().unwrap());
            (1..=n).collect()
        }
    };
    let pushes = std::env::var("HOSTILE_PUSHES").map_or(6, |n| n.parse().unwrap());
    let started = Instant::now();
    let (mut refused, mut deployed, mut tampered) = (0, 0, 0);
    // Every seed runs, so that one run shows every way the code fails, each reproducible.
    let mut failed: Vec<String> = Vec::new();
    for seed in &seeds {
        let mut log = Vec::new();
        let mut problems = Vec::new();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let counts = run_sequence(*seed, pushes, &mut log, &mut problems);
            assert_eq!(
                problems,
                Vec::<String>::new(),
                "refusals that do not say what they refuse"
            );
            counts
        }));
        match run {
            Ok((r, d, t)) => {
                refused += r;
                deployed += d;
                tampered += t;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                eprintln!(
                    "sequence with seed {seed} failed (rerun: HOSTILE_SEED={seed} cargo test --test hostile generated); its pushes:\n  {}",
                    log.join("\n  ")
                );
                let first_line = message.lines().next().unwrap_or_default();
                failed.push(format!("seed {seed}: {first_line}"));
            }
        }
    }
    eprintln!(
        "{} sequences, {} pushes: {refused} refused (each also replayed), {deployed} deployed, \
         {tampered} directories of application/ replaced by links on the server, in {:.1}s",
        seeds.len(),
        refused + deployed,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} sequences failed:\n{}",
        failed.len(),
        seeds.len(),
        failed.join("\n")
    );
}

/// Every kind of hostile entry at least once, so that a change in the generator's odds can
/// never leave one out.
#[test]
fn every_hostile_kind_is_refused() {
    let mut world = World::new();
    let mut generator = world.generator(7);
    let base = generator.tree();
    let commit = world.objects.commit(&base, "base");
    world.push(&commit).success();
    let untouchable = world.untouchable();
    let mut cases: Vec<(Hostile, Tree, Vec<u8>)> = Vec::new();
    for &what in HOSTILE {
        let (t, p) = generator.inject(&base, what);
        cases.push((what, t, p));
    }
    for &name in trees::DOT_GITS {
        let mut t = base.clone();
        t.push((name.to_vec(), file("gitdir: /\n")));
        cases.push((Hostile::DotGit, t, name.to_vec()));
    }
    let mut in_server = Objects::in_server(&world.server);
    for (what, tree, path) in cases {
        let before = world.server.state();
        let (commit, output) = if what == Hostile::Empty {
            let commit = in_server.commit(&tree, "empty name");
            let out = world.server.run(&["replay", &commit]);
            (commit, String::from_utf8_lossy(&out.stderr).into_owned())
        } else {
            let commit = world.objects.commit(&tree, &format!("{what:?}"));
            (commit.clone(), world.push(&commit).stderr)
        };
        assert!(!output.contains("panicked"), "the hook panicked:\n{output}");
        assert_untouched(&world, &untouchable);
        let mut problems = Vec::new();
        assert_refused(&world, &output, &commit, &path, &before, &mut problems);
        assert_eq!(problems, Vec::<String>::new());
    }
}

/// A `checkout.pending` left by an older version, naming a commit whose tree climbs out with
/// `..` (it was written before the checkout that failed on it): the next deploys neither
/// panic nor remove anything its paths name.
#[test]
fn a_leftover_pending_checkout_of_a_hostile_commit_is_ignored_with_a_warning() {
    let mut world = World::new();
    let ok = world.objects.commit(
        &trees::tree(vec![
            (b"index.php", file("<?php echo 1;\n")),
            (b"public", trees::dir(vec![(b"a.css", file("a\n"))])),
        ]),
        "ok",
    );
    world.push(&ok).success();
    let untouchable = world.untouchable();
    for climb in [
        &b"public/../../../canary-file"[..],
        b"../../canary/file",
        b"../shared/.env",
    ] {
        // `..` first, or under public/, down to a file that exists outside application/.
        let mut node = file("x\n");
        let parts: Vec<&[u8]> = climb.split(|b| *b == b'/').collect();
        for name in parts[1..].iter().rev() {
            node = trees::dir(vec![(name, node)]);
        }
        let hostile = trees::tree(vec![(b"index.php", file("<?php\n")), (parts[0], node)]);
        let commit = world.objects.commit(&hostile, "climbs out");
        // Into the repository (the hook refuses it), then marked as an interrupted checkout.
        world.push(&commit).deploy_failed();
        fs::write(
            world.server.root.join(".atomdeploy/checkout.pending"),
            &commit,
        )
        .unwrap();

        let next = world.objects.commit(
            &trees::tree(vec![
                (b"index.php", file("<?php echo 2;\n")),
                (b"public", trees::dir(vec![(b"a.css", file("a\n"))])),
            ]),
            "innocent",
        );
        let push = world.push(&next);
        assert!(
            !push.stderr.contains("panicked"),
            "the hook panicked:\n{}",
            push.stderr
        );
        assert_untouched(&world, &untouchable);
        push.success()
            .stderr_has(&format!("warning: ignoring the files of {commit}"));
        assert_eq!(world.server.live_revision(), next);
        world.server.assert_only_complete_builds(SHARED);
        // And `replay` of the live commit with the mark left again.
        fs::write(
            world.server.root.join(".atomdeploy/checkout.pending"),
            &commit,
        )
        .unwrap();
        let out = world.server.run(&["replay"]);
        harness::assert_success(&out, "replay");
        assert_untouched(&world, &untouchable);
    }
}

/// With install's default, receive.fsckObjects, git itself refuses the tree before the hook
/// runs, and the server does not change.
#[test]
fn with_installs_default_git_refuses_a_dotdot_tree_at_push_time() {
    let server = Server::builder().config("composer", "false").install();
    assert_eq!(
        String::from_utf8(server.repo_git(&["config", "receive.fsckObjects"])).unwrap(),
        "true\n"
    );
    let clone = server.empty_clone("fsck");
    let mut objects = Objects::in_clone(&clone);
    let good = objects.commit(&trees::tree(vec![(b"index.php", file("ok\n"))]), "good");
    clone
        .push(&["-f", &format!("{good}:refs/heads/main")])
        .success();
    let before = server.state();
    let bad = objects.commit(
        &trees::tree(vec![
            (b"index.php", file("ok\n")),
            (
                b"public",
                trees::dir(vec![(b"..", trees::dir(vec![(b"x", file("x\n"))]))]),
            ),
        ]),
        "bad",
    );
    let push = clone.push(&["-f", &format!("{bad}:refs/heads/main")]);
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    assert!(push.stderr.contains("hasDotdot"), "{}", push.stderr);
    assert!(
        !push.stderr.contains("atomdeploy: deploying"),
        "{}",
        push.stderr
    );
    assert_eq!(server.branch_head("main").as_deref(), Some(good.as_str()));
    server.assert_unchanged_since(&before);
}

fn canary_dir(server: &Server) -> PathBuf {
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    outside
}

/// The write-through guard compares paths as bytes: a link made on the server at a name
/// that is not UTF-8 is removed like any other.
#[test]
fn a_symlink_made_on_the_server_at_a_non_utf8_name_is_not_written_through() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("bytes");
    let mut objects = Objects::in_clone(&clone);
    // d\xff/f stays the same: only the comparison with the working copy finds the link.
    let v = |index: &str| {
        trees::tree(vec![
            (b"index.php", file(index)),
            (b"d\xff", trees::dir(vec![(b"f", file("f\n"))])),
        ])
    };
    let c1 = objects.commit(&v("<?php echo 1;\n"), "v1");
    clone
        .push(&["-f", &format!("{c1}:refs/heads/main")])
        .success();
    let outside = canary_dir(&server);
    let app_dir = server
        .root
        .join("application")
        .join(OsStr::from_bytes(b"d\xff"));
    fs::remove_dir_all(&app_dir).unwrap();
    std::os::unix::fs::symlink(&outside, &app_dir).unwrap();

    let c2 = objects.commit(&v("<?php echo 2;\n"), "v2");
    let push = clone
        .push(&["-f", &format!("{c2}:refs/heads/main")])
        .success();

    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "written through"
    );
    assert!(
        push.stderr
            .contains("warning: removed symlinks made on the server"),
        "{}",
        push.stderr
    );
    let live = server.latest().join(OsStr::from_bytes(b"d\xff/f"));
    assert_eq!(fs::read_to_string(live).unwrap(), "f\n");
}

/// libgit2's lock of the checkout index, left by a checkout that was killed, is removed
/// under the deploy lock (which proves nobody else uses it) instead of failing every deploy.
#[test]
fn a_leftover_index_lock_does_not_wedge_deploys() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("lock");
    clone.write("index.php", "<?php echo 1;\n");
    clone.commit("v1");
    clone.push_main().success();
    let lock = server.root.join(".atomdeploy/application.index.lock");
    fs::write(&lock, "half an index").unwrap();

    clone.write("index.php", "<?php echo 2;\n");
    clone.commit("v2");
    clone
        .push_main()
        .success()
        .stderr_has("warning: removed .atomdeploy/application.index.lock");
    assert_eq!(server.read_live("index.php"), "<?php echo 2;\n");
    assert!(!lock.exists());
}

/// A checkout index that is garbage, or cut short, is replaced: every file is checked out
/// again, and files the commit no longer has are gone.
#[test]
fn a_corrupt_checkout_index_is_rebuilt() {
    for (label, damage) in [
        (
            "garbage",
            &(|_: &[u8]| b"this is not an index".to_vec()) as &dyn Fn(&[u8]) -> Vec<u8>,
        ),
        ("truncated", &|index: &[u8]| {
            index[..index.len() / 2].to_vec()
        }),
    ] {
        let server = Server::builder().config("composer", "false").install();
        let clone = server.empty_clone(label);
        clone.write("index.php", "<?php echo 1;\n");
        clone.write("old.php", "<?php // gone in v2\n");
        clone.commit("v1");
        clone.push_main().success();
        let index = server.root.join(".atomdeploy/application.index");
        fs::write(&index, damage(&fs::read(&index).unwrap())).unwrap();

        clone.remove("old.php");
        clone.write("index.php", "<?php echo 2;\n");
        clone.commit("v2");
        let push = clone.push_main().success();
        assert!(
            push.stderr.contains("warning: ") && push.stderr.contains("application.index"),
            "{label}: no warning:\n{}",
            push.stderr
        );
        assert_eq!(server.read_live("index.php"), "<?php echo 2;\n", "{label}");
        assert!(!server.latest().join("old.php").exists(), "{label}");
        assert!(!server.root.join("application/old.php").exists(), "{label}");
        // And the index is good again: the next deploy needs no rebuild.
        clone.write("index.php", "<?php echo 3;\n");
        clone.commit("v3");
        clone
            .push_main()
            .success()
            .stderr_lacks("application.index");
    }
}

/// A submodule entry that goes away, or becomes a file, leaves nothing of itself behind.
#[test]
fn a_gitlink_removed_or_replaced_by_a_file_leaves_no_directory() {
    let server = Server::builder().config("composer", "false").install();
    let clone = server.empty_clone("gitlink");
    let mut objects = Objects::in_clone(&clone);
    let mut push = |tree: &Tree| {
        let commit = objects.commit(tree, "step");
        clone
            .push(&["-f", &format!("{commit}:refs/heads/main")])
            .success();
    };
    let index = || (b"index.php".as_slice(), file("<?php\n"));
    push(&trees::tree(vec![
        index(),
        (b"lib", Node::Gitlink([7; 20])),
        (b"vendorlib", Node::Gitlink([8; 20])),
    ]));
    assert!(server.latest().join("lib").is_dir());

    push(&trees::tree(vec![
        index(),
        (b"vendorlib", file("now a file\n")),
    ]));
    let app = server.root.join("application");
    assert!(
        !app.join("lib").exists(),
        "a removed gitlink left application/lib"
    );
    assert!(
        !server.latest().join("lib").exists(),
        "a removed gitlink is in the build"
    );
    assert_eq!(
        fs::read_to_string(server.latest().join("vendorlib")).unwrap(),
        "now a file\n"
    );
    assert_eq!(
        fs::read_to_string(app.join("vendorlib")).unwrap(),
        "now a file\n"
    );
}

/// `rollback` (and `replay`) are names the hook gives meaning to: install refuses them
/// before it creates anything.
#[test]
fn install_refuses_reserved_branch_names_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    for branch in ["rollback", "replay"] {
        let repo = tmp.path().join(format!("{branch}.git"));
        let root = tmp.path().join(format!("{branch}-root"));
        let out = std::process::Command::new(harness::BIN)
            .args(["install", "--branch", branch, "--repo"])
            .arg(&repo)
            .arg("--root")
            .arg(&root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{branch}: installed");
        assert!(
            stderr.contains(&format!("`{branch}`")) && stderr.contains("reserved"),
            "{stderr}"
        );
        assert!(
            !repo.exists() && !root.exists(),
            "{branch}: created something"
        );
    }
}

/// A root that an older `install --branch rollback` left (HEAD on `rollback`, a deploy.yml
/// no deploy can load) is repaired by installing again with a valid branch.
#[test]
fn install_repairs_a_root_left_by_install_branch_rollback() {
    let server = Server::install();
    // What the old install left: the template with `branch: rollback`, HEAD on rollback.
    let config = fs::read_to_string(server.config_path()).unwrap();
    let old = config.replace("\nbranch: main\n", "\nbranch: rollback\n");
    assert_ne!(old, config);
    fs::write(server.config_path(), &old).unwrap();
    server.repo_git(&["symbolic-ref", "HEAD", "refs/heads/rollback"]);

    let out = server.run_install(&server.repo, &["--branch", "main"]);
    harness::assert_success(&out, "install --branch main");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("receive.fsckObjects"), "{stdout}");
    assert_eq!(fs::read_to_string(server.config_path()).unwrap(), config);
    assert_eq!(
        String::from_utf8(server.repo_git(&["symbolic-ref", "HEAD"])).unwrap(),
        "refs/heads/main\n"
    );
    assert_eq!(
        String::from_utf8(server.repo_git(&["config", "receive.fsckObjects"])).unwrap(),
        "true\n"
    );
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    assert_eq!(server.live_revision(), clone.head());
}
