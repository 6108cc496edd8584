//! `keep_assets:`: the hashed files of the builds still on disk stay reachable in the new
//! build, so a page loaded before the switch still gets its chunks after it; only each build's
//! own files are carried (nothing accumulates), nothing of a bad build, and nothing is ever
//! read or written through a symlink.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::web::get;
use crate::harness::{self, DevClone, Push, Server, tree_listing};

const ASSETS: &str = "public/build/assets";

/// A server without composer (the commits are front-end files only) keeping public/build/assets/.
fn assets_server(config: &[(&str, &str)]) -> Server {
    let mut builder = Server::builder()
        .config("composer", "false")
        .config("keep_assets", "[public/build/assets/]");
    for (key, value) in config {
        builder = builder.config(key, value);
    }
    builder.install()
}

/// Commits `files` as the whole of public/build/assets/ (what `vite build` leaves), with
/// `version` in public/version.txt, and pushes.
fn push_assets(clone: &DevClone, version: &str, files: &[(&str, &str)]) -> Push {
    let dir = clone.path.join(ASSETS);
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&dir).unwrap(),
        Ok(_) => fs::remove_file(&dir).unwrap(),
        Err(_) => {}
    }
    clone.write("public/version.txt", &format!("{version}\n"));
    for (name, content) in files {
        clone.write(format!("{ASSETS}/{name}"), content);
    }
    clone.commit(version);
    clone.push_main()
}

/// Pushes, which must deploy; returns the new live build and what the pusher saw.
#[track_caller]
fn deploy_assets(
    server: &Server,
    clone: &DevClone,
    version: &str,
    files: &[(&str, &str)],
) -> (String, Push) {
    let push = push_assets(clone, version, files).success();
    let live = server.live().expect("a build is live");
    assert_eq!(
        server.read_live("public/version.txt"),
        format!("{version}\n")
    );
    (live, push)
}

/// The files below `build`'s public/build/assets and their contents.
fn assets_in(build: &Path) -> BTreeMap<String, String> {
    let dir = build.join(ASSETS);
    walkdir::WalkDir::new(&dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let name = e.path().strip_prefix(&dir).unwrap().display().to_string();
            (name, fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn the_previous_builds_chunks_stay_after_the_switch_and_the_new_build_wins_a_clash() {
    let server = assets_server(&[]);
    let clone = server.empty_clone("assets");
    let (v1, first) = deploy_assets(
        &server,
        &clone,
        "v1",
        &[
            ("app-aaa111.js", "v1 app"),
            ("vendor-ccc333.js", "v1 vendor"),
            ("manifest.json", "v1"),
        ],
    );
    assert!(
        first
            .step_line("keep_assets")
            .ends_with(": kept 0 asset files from 0 earlier builds"),
        "{}",
        first.stderr
    );
    let (v2, second) = deploy_assets(
        &server,
        &clone,
        "v2",
        &[
            ("app-bbb222.js", "v2 app"),
            ("lazy/page-ddd444.js", "v2 page"),
            ("manifest.json", "v2"),
        ],
    );
    assert!(
        second
            .step_line("keep_assets")
            .ends_with(": kept 2 asset files from 1 earlier builds"),
        "{}",
        second.stderr
    );
    assert_eq!(
        assets_in(&server.latest()),
        map(&[
            ("app-aaa111.js", "v1 app"),
            ("app-bbb222.js", "v2 app"),
            ("lazy/page-ddd444.js", "v2 page"),
            // Same name in both: the new build's bytes.
            ("manifest.json", "v2"),
            ("vendor-ccc333.js", "v1 vendor"),
        ])
    );
    // Hard-linked to v1's read-only copy, which is unchanged.
    let carried = server.build_path(&v2).join(ASSETS).join("app-aaa111.js");
    let original = server.build_path(&v1).join(ASSETS).join("app-aaa111.js");
    assert_eq!(inode(&carried), inode(&original));
    assert_eq!(
        fs::metadata(&carried).unwrap().permissions().mode() & 0o222,
        0
    );
    assert_eq!(
        assets_in(&server.build_path(&v1)),
        map(&[
            ("app-aaa111.js", "v1 app"),
            ("manifest.json", "v1"),
            ("vendor-ccc333.js", "v1 vendor")
        ])
    );

    // v3 brings app-aaa111.js back with other bytes: the commit's copy, not the carried one
    // (the link-mode snapshot does not take a carried file for v2's own).
    let (v3, _) = deploy_assets(&server, &clone, "v3", &[("app-aaa111.js", "v3 app")]);
    let latest = assets_in(&server.latest());
    assert_eq!(latest["app-aaa111.js"], "v3 app");
    assert_eq!(latest["app-bbb222.js"], "v2 app");
    assert_eq!(latest["manifest.json"], "v2");
    assert_ne!(
        inode(&server.build_path(&v3).join(ASSETS).join("app-aaa111.js")),
        inode(&original)
    );
    server.assert_only_complete_builds(&[]);
}

#[test]
fn a_build_rolled_back_by_its_health_check_lends_nothing() {
    let server = assets_server(&[(
        "healthcheck",
        "{command: 'test ! -e latest/public/sick', retries: 0}",
    )]);
    let clone = server.empty_clone("assets");
    let (v1, _) = deploy_assets(&server, &clone, "v1", &[("app-v1.js", "v1")]);

    clone.write("public/sick", "yes\n");
    push_assets(&clone, "v2", &[("app-v2.js", "v2")]).deploy_failed();
    assert_eq!(server.live(), Some(v1.clone()));
    let builds = server.builds();
    assert_eq!(
        builds.len(),
        2,
        "the bad build is still on disk: {builds:?}"
    );

    clone.remove("public/sick");
    let (_, push) = deploy_assets(&server, &clone, "v3", &[("app-v3.js", "v3")]);
    assert_eq!(
        assets_in(&server.latest()),
        map(&[("app-v1.js", "v1"), ("app-v3.js", "v3")])
    );
    assert!(
        push.step_line("keep_assets")
            .ends_with("from 1 earlier builds")
    );
}

#[test]
fn assets_do_not_accumulate_beyond_the_builds_on_disk() {
    let server = assets_server(&[("keep_builds", "3")]);
    let clone = server.empty_clone("assets");
    for n in 1..=8 {
        let own = format!("app-{n}.js");
        let (_, push) = deploy_assets(&server, &clone, &format!("v{n}"), &[(&own, "x")]);
        // The builds on disk when it was made: the three before it (keep_builds), then cleaned.
        let expected: Vec<String> = (n.max(4) - 3..=n).map(|k| format!("app-{k}.js")).collect();
        let got: Vec<String> = assets_in(&server.latest()).into_keys().collect();
        assert_eq!(got, expected, "after v{n}");
        let from = (n - 1).min(3);
        assert!(
            push.step_line("keep_assets").ends_with(&format!(
                "kept {from} asset files from {from} earlier builds"
            )),
            "v{n}: {}",
            push.stderr
        );
    }
    assert_eq!(server.builds().len(), 3);
    // The record of what each build carried goes with it.
    let records: Vec<_> = fs::read_dir(server.root.join(".atomdeploy/builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".carried"))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
}

#[test]
fn a_symlinked_assets_dir_in_a_commit_writes_nothing_outside_and_reads_nothing_through_it() {
    let server = assets_server(&[("shared", "[storage/]"), ("keep_builds", "6")]);
    let outside = server.base().join("outside");
    fs::create_dir(&outside).unwrap();
    let clone = server.empty_clone("assets");
    clone.write("storage/keep.txt", "user data\n");
    let (v1, _) = deploy_assets(&server, &clone, "v1", &[("app-v1.js", "v1")]);
    let shared = tree_listing(&server.root.join("shared"));

    for (version, target) in [
        ("v2", server.root.join("shared")),
        ("v3", outside.clone()),
        // builds/<name>/public/build/assets → <root>/shared
        ("v4", Path::new("../../../../shared").to_path_buf()),
    ] {
        let dir = clone.path.join(ASSETS);
        let _ = fs::remove_dir_all(&dir).or_else(|_| fs::remove_file(&dir));
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        clone.write("public/version.txt", &format!("{version}\n"));
        clone.commit(version);
        let push = clone.push_main().success();
        assert_eq!(
            tree_listing(&server.root.join("shared")),
            shared,
            "{version}"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{version}");
        let push =
            push.stderr_has("keep_assets: public/build/assets is a symlink in the new build");
        assert!(
            push.step_line("keep_assets")
                .ends_with("kept 0 asset files from 0 earlier builds"),
            "{}",
            push.stderr
        );
        assert_eq!(
            tree_listing(&server.root.join("shared")),
            shared,
            "{version}"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{version}");
    }

    // The live build's assets dir is that symlink now: nothing is read through it, while v1's
    // own files, still on disk, are carried.
    fs::write(outside.join("stolen.js"), "server file").unwrap();
    clone.git(&["rm", "-q", ASSETS]);
    let (_, push) = deploy_assets(&server, &clone, "v5", &[("app-v5.js", "v5")]);
    assert!(
        push.stderr
            .contains("is reached through a symlink or is no directory; nothing is taken from it"),
        "{}",
        push.stderr
    );
    assert_eq!(
        assets_in(&server.latest()),
        map(&[("app-v1.js", "v1"), ("app-v5.js", "v5")])
    );
    assert!(server.builds().contains(&v1));
    assert_eq!(tree_listing(&server.root.join("shared")), shared);
}

#[test]
fn snapshot_copy_carries_copies_that_share_nothing() {
    let server = assets_server(&[("snapshot", "copy")]);
    let clone = server.empty_clone("assets");
    let (v1, _) = deploy_assets(&server, &clone, "v1", &[("app-v1.js", "v1")]);
    let (v2, push) = deploy_assets(&server, &clone, "v2", &[("app-v2.js", "v2")]);
    assert_eq!(
        assets_in(&server.latest()),
        map(&[("app-v1.js", "v1"), ("app-v2.js", "v2")])
    );
    assert!(
        push.step_line("keep_assets")
            .ends_with("kept 1 asset files from 1 earlier builds (1 copied, 0.0 MB)"),
        "{}",
        push.stderr
    );
    let carried = server.build_path(&v2).join(ASSETS).join("app-v1.js");
    let original = server.build_path(&v1).join(ASSETS).join("app-v1.js");
    assert_ne!(inode(&carried), inode(&original));
    assert_eq!(
        fs::metadata(&carried).unwrap().permissions().mode() & 0o777,
        fs::metadata(&original).unwrap().permissions().mode() & 0o777,
    );
}

#[test]
fn a_replay_carries_the_assets_as_copies() {
    let server = assets_server(&[]);
    let clone = server.empty_clone("assets");
    let (v1, _) = deploy_assets(&server, &clone, "v1", &[("app-v1.js", "v1")]);
    let (v2, _) = deploy_assets(&server, &clone, "v2", &[("app-v2.js", "v2")]);
    let out = server.run(&["replay", &clone.head()]);
    harness::assert_success(&out, "replay");
    let replayed = server.live().unwrap();
    assert_ne!(replayed, v2);
    // v2's own and v1's: v2 carried app-v1.js and lends only its own.
    assert_eq!(
        assets_in(&server.latest()),
        map(&[("app-v1.js", "v1"), ("app-v2.js", "v2")])
    );
    let carried = server.build_path(&replayed).join(ASSETS).join("app-v1.js");
    let original = server.build_path(&v1).join(ASSETS).join("app-v1.js");
    assert_ne!(inode(&carried), inode(&original), "a replay links nothing");
    assert_eq!(
        fs::metadata(&carried).unwrap().permissions().mode() & 0o222,
        0
    );
}

#[test]
fn a_kept_dir_overlapping_a_shared_entry_is_refused_at_its_line() {
    let server = assets_server(&[("shared", "[storage/]")]);
    server.set_config(
        "keep_assets",
        "\n  - public/build/\n  - storage/app/public/",
    );
    let clone = server.empty_clone("assets");
    let before = server.state();
    let push = push_assets(&clone, "v1", &[("app-v1.js", "v1")]).deploy_failed();
    let config = server.config_path();
    let line = server.config_line(|l| l == "  - storage/app/public/");
    push.stderr_has(&format!(
        "{}:{line}:5: keep_assets[1]: keep_assets entry `storage/app/public` overlaps shared entry `storage/`",
        config.display()
    ));
    server.assert_unchanged_since(&before);
}

#[test]
fn kill_9_while_carrying_or_before_the_switch_leaves_no_half_build_and_no_stray_record() {
    let server = assets_server(&[]);
    let clone = server.empty_clone("assets");
    deploy_assets(
        &server,
        &clone,
        "v1",
        &[("a-1.js", "1"), ("b-1.js", "1"), ("c-1.js", "1")],
    );
    let (mut live, _) = deploy_assets(&server, &clone, "v2", &[("app-2.js", "2")]);
    let records = server.root.join(".atomdeploy/builds");
    // While the second file is carried; after the carried record is written but before the
    // build's own records; published but never switched to.
    for (i, fault) in ["keep-assets-file@2", "snapshot-done", "published"]
        .iter()
        .enumerate()
    {
        let before = server.state();
        clone.write(format!("{ASSETS}/killed-{i}.js"), "killed");
        clone.write("public/version.txt", &format!("killed {i}\n"));
        clone.commit(&format!("killed {i}"));
        let push = clone.push_with_fault(&["main"], fault);
        assert_eq!(
            push.code, None,
            "{fault} was never reached:\n{}",
            push.stderr
        );
        assert_eq!(server.live(), Some(live.clone()), "{fault}");
        server.assert_only_complete_builds(&[]);
        // The next build usually takes the killed one's name, overwriting a stray record;
        // one left by a deploy killed long ago must go too.
        for entry in fs::read_dir(&records).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(build) = name.strip_suffix(".carried")
                && !server.builds().iter().any(|b| b == build)
            {
                assert_eq!(*fault, "snapshot-done", "{name}");
                fs::rename(records.join(&name), records.join("20200101-000000.carried")).unwrap();
            }
        }

        let version = format!("after {i}");
        live = deploy_assets(&server, &clone, &version, &[("app-3.js", "3")]).0;
        server.assert_nothing_left_behind_in(fault);
        let mut expected = before.builds.clone();
        expected.push(live.clone());
        assert_eq!(server.builds(), expected, "{fault}: a stray build");
        // One record of what was carried per build made with keep_assets, none stray.
        let mut carried: Vec<String> = fs::read_dir(&records)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".carried").map(str::to_string)
            })
            .collect();
        carried.sort();
        assert_eq!(carried, expected, "{fault}");
        let got = assets_in(&server.latest());
        assert!(
            got.contains_key("a-1.js") && got.contains_key("app-2.js"),
            "{fault}: {got:?}"
        );
        assert!(
            !got.keys().any(|k| k.starts_with("killed")),
            "{fault}: {got:?}"
        );
    }
}

/// The chunk a page's `<script src=...>` names.
fn script_of(page: &str) -> String {
    let start = page.find("src=\"").expect("a script tag") + 5;
    page[start..][..page[start..].find('"').unwrap()].to_string()
}

#[test]
fn with_nginx_a_page_loaded_before_the_switch_still_gets_its_chunk_after_it() {
    let _heavy = harness::exclusive();
    let server = assets_server(&[]);
    let clone = server.empty_clone("assets");
    let page = |n: &str| {
        clone.write(
            "public/index.html",
            &format!("<script type=\"module\" src=\"/build/assets/app-{n}.js\"></script>\n"),
        );
    };
    page("1a2b3c");
    deploy_assets(
        &server,
        &clone,
        "v1",
        &[("app-1a2b3c.js", "console.log(1)")],
    );
    let web = harness::web::WebServer::start(&server.root, &server.base().join("web"));

    // A browser loads v1's page; v2 goes live before it asks for the chunk.
    let (status, loaded) = get(&web.url("/index.html"));
    assert_eq!(status, 200, "{}", web.error_log());
    let chunk = script_of(&loaded);
    page("4d5e6f");
    deploy_assets(
        &server,
        &clone,
        "v2",
        &[("app-4d5e6f.js", "console.log(2)")],
    );
    assert_eq!(get(&web.url(&chunk)), (200, "console.log(1)".to_string()));
    let (_, now) = get(&web.url("/index.html"));
    assert_eq!(
        get(&web.url(&script_of(&now))),
        (200, "console.log(2)".to_string())
    );

    // Without keep_assets the same switch breaks the page that was loaded before it.
    server.set_config("keep_assets", "[]");
    let (_, loaded) = get(&web.url("/index.html"));
    page("7a8b9c");
    deploy_assets(
        &server,
        &clone,
        "v3",
        &[("app-7a8b9c.js", "console.log(3)")],
    );
    assert_eq!(get(&web.url(&script_of(&loaded))).0, 404);

    let groups = web.process_groups();
    web.stop();
    assert_eq!(harness::web::living(&groups), Vec::<String>::new());
}
