//! The front-end build step (`build:`) and `exclude:`, with the real node and npm against
//! fixtures/frontend-app (a local `file:` dependency: no network), through real pushes.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{DevClone, Push, Server, wait_until};

/// The recipe the README gives for a Vite app: `npm ci` only for a changed lockfile,
/// `npm run build` whenever a front-end input changed, node_modules/ kept out of builds.
const BUILD: &str = "{commands: [{run: npm ci --prefer-offline, inputs: [package.json, package-lock.json]}, \
                     npm run build], inputs: [package.json, package-lock.json, resources/, build.mjs]}";

pub(crate) fn frontend_server() -> (Server, DevClone) {
    let server = Server::builder()
        .config("build", BUILD)
        .config("exclude", "[node_modules/]")
        .install();
    let clone = server.clone_fixture("frontend-app");
    (server, clone)
}

fn application(server: &Server) -> PathBuf {
    server.root.join("application")
}

/// The asset the live page links to, `assets/app-<hash>.js`, as the PHP app prints it.
pub(crate) fn live_script(server: &Server) -> String {
    let page = server.page();
    let line = page
        .lines()
        .find_map(|l| l.strip_prefix("script: /build/"))
        .unwrap_or_else(|| panic!("no script line in {page}"));
    assert_ne!(
        line, "MISSING",
        "the live build has no public/build/manifest.json"
    );
    line.to_string()
}

/// The file `npm ci` would remove with the rest of node_modules/: its survival proves that
/// node_modules/ was not reinstalled.
fn mark_node_modules(server: &Server) -> PathBuf {
    let marker = application(server).join("node_modules/.survives-unless-reinstalled");
    fs::write(&marker, "x").unwrap();
    marker
}

/// The build step's line, e.g. `0.81s: 2 commands ran (first run)`.
fn build_line(push: &Push) -> String {
    push.step_line("build")
}

/// Asserts that the build step's line says `says`.
#[track_caller]
fn assert_build_line(push: &Push, says: &str) {
    let line = build_line(push);
    assert!(line.contains(says), "{line}");
}

/// The seconds a step line starts with (`0.81s: …` or `4.2ms: …`).
fn took(line: &str) -> Duration {
    let number = line.split(':').next().unwrap();
    match number.strip_suffix("ms") {
        Some(ms) => Duration::from_secs_f64(ms.parse::<f64>().unwrap() / 1000.0),
        None => Duration::from_secs_f64(number.trim_end_matches('s').parse().unwrap()),
    }
}

#[test]
fn the_build_step_runs_only_as_much_as_each_commit_needs() {
    let (server, clone) = frontend_server();

    // First deploy: both commands; the build has the assets and no node_modules/.
    let push = clone.push_main().success();
    assert_build_line(&push, "2 commands ran (first run)");
    let push = push
        .stderr_has("$ npm ci --prefer-offline")
        .stderr_has("$ npm run build");
    let ran_took = took(&build_line(&push));
    let ran_deploy = push.remote_line("deployed ").unwrap();
    let first = live_script(&server);
    let live = server.latest();
    assert!(live.join("public/build").join(&first).is_file());
    assert!(live.join("public/build/manifest.json").is_file());
    assert!(
        !live.join("node_modules").exists(),
        "excluded node_modules/ was copied into the build"
    );
    assert!(application(&server).join("node_modules/mini-lib").exists());
    let manifest = server
        .root
        .join(".atomdeploy/builds")
        .join(format!("{}.files", server.live().unwrap()));
    let manifest = fs::read(&manifest).unwrap();
    assert!(
        !manifest.windows(12).any(|w| w == b"node_modules"),
        "node_modules in the build's manifest"
    );
    let marker = mark_node_modules(&server);

    // PHP only: skipped, and the new build still has the assets.
    clone.set_version("v2");
    clone.commit("php only");
    let push = clone.push_main().success();
    let line = build_line(&push);
    assert!(
        line.contains("skipped (no input changed since ")
            && line.contains("package.json, package-lock.json, resources, build.mjs"),
        "{line}"
    );
    let push = push.stderr_has("build skipped").stderr_lacks("$ npm");
    let skipped_took = took(&build_line(&push));
    let skipped_deploy = push.remote_line("deployed ").unwrap();
    assert!(server.page().contains("v2"));
    assert_eq!(live_script(&server), first);
    assert!(server.latest().join("public/build").join(&first).is_file());
    assert!(marker.exists());

    // A front-end source: `npm run build` again, `npm ci` not (node_modules/ kept). With a
    // class added, composer runs dump-autoload, which alone would overlap the snapshot: the
    // snapshot must still wait for the build's output.
    clone.write("resources/js/app.js", "console.log('front-end v2');\n");
    clone.write(
        "src/Added.php",
        "<?php\n\nnamespace App;\n\nfinal class Added {}\n",
    );
    clone.commit("front-end change");
    let push = clone.push_main().success();
    assert_build_line(
        &push,
        "1 command ran (resources/js/app.js changed); skipped `npm ci --prefer-offline` (package.json, package-lock.json unchanged since ",
    );
    let rebuilt_deploy = push.remote_line("deployed ").unwrap();
    assert!(push.step_line("composer").contains("dump-autoload"));
    push.stderr_has("$ npm run build").stderr_lacks("$ npm ci");
    assert!(marker.exists(), "node_modules/ was reinstalled");
    let second = live_script(&server);
    assert_ne!(second, first);
    let built = fs::read_to_string(server.latest().join("public/build").join(&second)).unwrap();
    assert!(
        built.contains("front-end v2") && built.contains("mini-lib"),
        "{built}"
    );
    assert!(!server.latest().join("public/build").join(&first).exists());

    // The lockfile: `npm ci` again, which empties node_modules/.
    for file in ["package.json", "package-lock.json"] {
        let text = fs::read_to_string(clone.path.join(file)).unwrap();
        clone.write(
            file,
            &text.replacen("\"version\": \"1.0.0\"", "\"version\": \"1.0.1\"", 2),
        );
    }
    clone.commit("lockfile change");
    let push = clone.push_main().success();
    assert_build_line(&push, "2 commands ran (package");
    push.stderr_has("$ npm ci --prefer-offline");
    assert!(!marker.exists(), "npm ci did not run");
    assert_eq!(live_script(&server), second);
    server.assert_only_complete_builds(&[]);

    // A changed configuration runs every command: an added command might undo `npm ci`.
    let marker = mark_node_modules(&server);
    server.set_config(
        "build",
        &BUILD.replace("npm run build]", "npm run build, 'true']"),
    );
    clone.set_version("v3");
    clone.commit("php only, new build config");
    let push = clone.push_main().success();
    assert_build_line(
        &push,
        "3 commands ran (its commands or inputs changed; every command runs)",
    );
    assert!(!marker.exists(), "npm ci did not run");

    // `replay` makes a build from scratch: every command runs, whatever the records say.
    let marker = mark_node_modules(&server);
    let push = clone.push(&["main:replay"]).success();
    assert_build_line(&push, "3 commands ran (replay: every command runs)");
    assert!(!marker.exists(), "npm ci did not run for the replay");
    assert_eq!(live_script(&server), second);

    eprintln!("build step: ran in {ran_took:.2?}, skipped in {skipped_took:.2?}");
    eprintln!("{ran_deploy}\n{skipped_deploy}\n{rebuilt_deploy}");
}

#[test]
fn a_failing_build_fails_the_push_and_leaves_the_live_build_untouched() {
    let (server, clone) = frontend_server();
    clone.push_main().success();
    let before = server.state();
    let live = live_script(&server);

    clone.write(
        "build.mjs",
        "console.error('syntax error in app.js'); process.exit(3);\n",
    );
    clone.set_version("v2");
    clone.commit("broken build");
    let push = clone.push_main().deploy_failed();
    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.starts_with("error: build failed: `npm run build` failed with exit status 3"),
        "{error}"
    );
    push.stderr_has("syntax error in app.js");
    server.assert_unchanged_since(&before);
    assert_eq!(live_script(&server), live);
    assert!(server.page().contains("v1"));
    let log = server.deploy_log();
    let last = log.last().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert!(
        last["error"].as_str().unwrap().contains("build failed"),
        "{last}"
    );

    // Fixed: the step runs again, whatever the tree diff says, and says why: the last run
    // finished, with an error.
    clone.git(&["checkout", "HEAD~1", "--", "build.mjs"]);
    clone.commit("build fixed");
    let push = clone.push_main().success();
    assert_build_line(
        &push,
        "(the last run failed: `npm run build` failed with exit status 3)",
    );
    assert!(server.page().contains("v2"));
    assert_eq!(live_script(&server), live);
}

#[test]
fn a_build_killed_half_way_runs_again_what_did_not_finish() {
    let (server, clone) = frontend_server();
    clone.push_main().success();
    let before = server.state();

    // Killed (the pusher's whole process group, as a dropped session) as `npm run build`
    // starts, `npm ci` for the new lockfile having finished.
    for file in ["package.json", "package-lock.json"] {
        let text = fs::read_to_string(clone.path.join(file)).unwrap();
        clone.write(
            file,
            &text.replacen("\"version\": \"1.0.0\"", "\"version\": \"1.0.1\"", 2),
        );
    }
    clone.commit("lockfile change");
    let killed = clone.push_with_fault(&["main"], "build@2");
    assert!(killed.stderr.contains("$ npm ci"), "{}", killed.stderr);
    assert!(
        !killed.stderr.contains("$ npm run build"),
        "{}",
        killed.stderr
    );
    assert_eq!(server.state().live, before.live);
    assert_eq!(server.state().builds, before.builds);
    let marker = mark_node_modules(&server);

    // Next deploy: the step runs because it did not finish; `npm ci`, which did, is skipped.
    clone.set_version("v2");
    clone.commit("php only");
    let push = clone.push_main().success();
    assert_build_line(
        &push,
        "1 command ran (the last run did not finish); skipped `npm ci",
    );
    assert!(marker.exists(), "node_modules/ was reinstalled");
    assert!(server.page().contains("v2"));
    live_script(&server);
    server.assert_only_complete_builds(&[]);
    server.assert_nothing_left_behind();

    // Killed as `npm ci` starts: its earlier success no longer counts, so it runs again.
    for file in ["package.json", "package-lock.json"] {
        let text = fs::read_to_string(clone.path.join(file)).unwrap();
        clone.write(
            file,
            &text.replacen("\"version\": \"1.0.1\"", "\"version\": \"1.0.2\"", 2),
        );
    }
    clone.commit("lockfile again");
    let killed = clone.push_with_fault(&["main"], "build@1");
    assert!(!killed.stderr.contains("$ npm"), "{}", killed.stderr);
    clone.git(&["revert", "--no-edit", "HEAD"]);
    let push = clone.push_main().success();
    assert_build_line(&push, "2 commands ran (the last run did not finish)");
}

/// A build command that hangs while the commit has `resources/hang`, ignoring SIGTERM, with a
/// child of its own.
const HANG: &str = "test -f resources/hang && { trap '' TERM; sleep 600.321 & wait; }; true";

#[test]
fn a_build_command_past_its_timeout_is_killed_with_its_children_and_runs_next_time() {
    let server = Server::builder()
        .config(
            "build",
            &format!(
                "{{commands: [\"{HANG}\", npm ci --prefer-offline, npm run build], inputs: [resources/], timeout: 8}}"
            ),
        )
        .install();
    let clone = server.clone_fixture("frontend-app");
    clone.push_main().success();
    let before = server.state();

    clone.write("resources/hang", "");
    clone.commit("hangs");
    let push = clone.push_main().deploy_failed();
    let error = push.remote_line("error: ").unwrap();
    assert!(
        error.contains(&format!(
            "build failed: `{HANG}` did not finish within 8s and was killed"
        )),
        "{error}"
    );
    server.assert_unchanged_since(&before);
    wait_until(
        Duration::from_secs(5),
        || !server.processes().iter().any(|p| p.contains("600.321")),
        || format!("still running: {:?}", server.processes()),
    );

    // resources/ is as it was at the last successful run: only the unfinished run says that
    // application/ may not hold that run's output.
    clone.git(&["rm", "-q", "resources/hang"]);
    clone.set_version("v2");
    clone.commit("no longer hangs");
    let push = clone.push_main().success();
    assert_build_line(
        &push,
        &format!("3 commands ran (the last run failed: `{HANG}` did not finish within 8s"),
    );
    assert!(server.page().contains("v2"));
    live_script(&server);
}

/// Outputs that git neither tracks nor ignores are removed by the next checkout: the step
/// cannot be skipped then, or the build would lack them.
#[test]
fn build_output_the_app_does_not_ignore_is_rebuilt_after_the_checkout_removes_it() {
    let (server, clone) = frontend_server();
    // Only vendor/ ignored: node_modules/ is kept by `exclude:`, public/build/ by nothing.
    clone.write(".gitignore", "/vendor/\n");
    clone.commit("ignores less");
    let push = clone.push_main().success();
    assert!(build_line(&push).contains("first run"));
    let first = live_script(&server);

    clone.set_version("v2");
    clone.commit("php only");
    let push = clone.push_main().success();
    let warning = push
        .remote_line("warning: removed files added on the server")
        .expect("the checkout's warning");
    assert!(warning.contains("public/build/"), "{warning}");
    assert!(!warning.contains("node_modules"), "{warning}");
    assert_build_line(
        &push,
        "2 commands ran (the checkout removed or rewrote files in application/",
    );
    assert_eq!(live_script(&server), first);
    assert!(server.latest().join("public/build").join(&first).is_file());
    assert!(!server.latest().join("node_modules").exists());

    // The checkout removes the output, then the deploy fails before the build step (composer
    // cannot read composer.json): the next deploy, whose checkout removes nothing more, must
    // still rebuild.
    let composer_json = fs::read_to_string(clone.path.join("composer.json")).unwrap();
    clone.write("composer.json", "{ not json");
    clone.set_version("v3");
    clone.commit("broken composer.json");
    let push = clone.push_main().deploy_failed();
    assert!(
        push.remote_line("warning: removed files added on the server")
            .is_some()
    );
    assert!(!push.stderr.contains("==> build"), "{}", push.stderr);
    clone.write("composer.json", &composer_json);
    clone.commit("composer.json fixed");
    let push = clone.push_main().success();
    assert!(push.remote_line("warning: removed files").is_none());
    assert_build_line(&push, "2 commands ran (first run)");
    assert!(server.page().contains("v3"));
    assert_eq!(live_script(&server), first);
}

#[test]
fn bad_build_and_exclude_settings_are_refused_at_their_position_and_change_nothing() {
    let (server, clone) = frontend_server();
    clone.push_main().success();
    let before = server.state();
    let original = fs::read_to_string(server.config_path()).unwrap();
    for (key, yaml, at, says) in [
        (
            "build",
            "{commands: [npm run build], inputs: [resources/, ../secrets]}",
            "../secrets",
            "build input `../secrets` contains `..`",
        ),
        (
            "build",
            "{commands: [npm run build], inputs: [/srv/app/resources]}",
            "/srv/app/resources",
            "build input `/srv/app/resources` is absolute",
        ),
        (
            "build",
            "{commands: [npm run build], timeout: 86401}",
            "86401",
            "build.timeout: must be a whole number of seconds from 1 to 86400 (24 hours); got 86401",
        ),
        (
            "build",
            "{commands: [npm ci, '  ']}",
            "'  '",
            "a build command must not be empty",
        ),
        (
            "exclude",
            "[node_modules/, storage/framework/cache/]",
            "storage/framework/cache/",
            "exclude entry `storage/framework/cache/` overlaps shared entry `storage/`",
        ),
    ] {
        server.set_config("shared", "[storage/]");
        server.set_config(key, yaml);
        clone.commit(&format!("{key}: {yaml}"));
        let text = fs::read_to_string(server.config_path()).unwrap();
        let (n, line) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.starts_with(&format!("{key}:")))
            .unwrap();
        let column = line.find(at).unwrap() + 1;
        let push = clone.push_main().deploy_failed();
        let error = push.remote_line("error: ").unwrap();
        let position = format!("{}:{}:{column}: ", server.config_path().display(), n + 1);
        assert!(
            error.starts_with(&format!("error: {position}")) && error.contains(says),
            "{yaml}: want {position} and {says:?} in {error}"
        );
        assert!(!push.stderr.contains("panicked"), "{}", push.stderr);
        server.assert_unchanged_since_in(&before, yaml);
        fs::write(server.config_path(), &original).unwrap();
    }
    clone.set_version("v2");
    clone.commit("with a sound deploy.yml");
    clone.push_main().success();
    assert!(server.page().contains("v2"));
}

#[test]
fn an_input_the_commit_does_not_have_is_warned_about() {
    let server = Server::builder()
        .config(
            "build",
            "{commands: [{run: npm ci, inputs: [package-lock.json, yarn.lock]}, npm run build], inputs: [resource/, package.json]}",
        )
        .install();
    let clone = server.clone_fixture("frontend-app");
    let push = clone.push_main().success();
    for input in ["resource", "yarn.lock"] {
        assert!(
            push.remote_line(&format!(
                "warning: build input `{input}` is not in the commit"
            ))
            .is_some(),
            "{}",
            push.stderr
        );
    }
    assert!(
        push.remote_line("warning: build input `package.json`")
            .is_none()
    );
    live_script(&server);
}
