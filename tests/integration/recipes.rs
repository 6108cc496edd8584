//! The README's recipes, each deployed exactly as printed: the test reads the recipe from
//! `fixtures/recipes/<name>.deploy.yml`, the file the README shows, so the two cannot drift.
//! The apps are framework-LIKE fixtures (the tests have no network to install Laravel or
//! Symfony): their `artisan` and `bin/console` do what the real ones do where a deploy notices
//! — which files they write, with which paths, where, and their exit status.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::users::DeployUser;
use crate::harness::web::{WebServer, get};
use crate::harness::{DevClone, Server, fixture};

/// The recipe's text, as the README prints it.
fn recipe(name: &str) -> String {
    let path = fixture("recipes").join(format!("{name}.deploy.yml"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A server whose deploy.yml is the recipe, with only the repository's path changed.
#[track_caller]
fn server_with_recipe(name: &str) -> Server {
    server_with_deploy_yml(name, &recipe(name))
}

/// A server whose deploy.yml is `text` (the recipe `name`, maybe edited), with the repository's
/// path changed.
#[track_caller]
fn server_with_deploy_yml(name: &str, text: &str) -> Server {
    let server = Server::install();
    let line = "repository: /srv/app.git\n";
    assert!(text.contains(line), "the {name} recipe names /srv/app.git");
    let text = text.replace(line, &format!("repository: {}\n", server.repo.display()));
    fs::write(server.config_path(), text).unwrap();
    server
}

fn shared(server: &Server, path: &str) -> PathBuf {
    server.root.join("shared").join(path)
}

/// What shared/.env holds for the Laravel app: APP_KEY set, as `php artisan key:generate` would.
const LARAVEL_ENV: &str = "APP_NAME=\"Recipe Shop\"\nAPP_ENV=production\nAPP_KEY=base64:c2VjcmV0LWtleS1vZi10aGUtcmVjaXBlLXRlc3Q=\n";

/// The Laravel-like app deployed once through the recipe, shared/.env made beforehand as the
/// recipe says.
#[track_caller]
fn laravel_v1() -> (Server, DevClone) {
    let server = server_with_recipe("laravel");
    fs::create_dir_all(server.root.join("shared")).unwrap();
    fs::write(shared(&server, ".env"), LARAVEL_ENV).unwrap();
    let clone = server.clone_fixture("laravel-app");
    clone.push_main().success();
    (server, clone)
}

/// The migrations table of the JSON database in shared storage: (name, batch) in order.
fn migrations(server: &Server) -> Vec<(String, u64)> {
    let path = shared(server, "storage/app/database.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let db: serde_json::Value = serde_json::from_str(&text).unwrap();
    db["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["migration"].as_str().unwrap().to_string(),
                m["batch"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn migration(name: &str, body: &str) -> (String, String) {
    (
        format!("database/migrations/{name}.php"),
        format!(
            "<?php\n\nreturn new class {{\n    public function up(array &$tables): void\n    {{\n        {body}\n    }}\n}};\n"
        ),
    )
}

/// The files of Laravel's file cache in shared storage (queue:restart's marker among them).
fn cache_files(server: &Server) -> Vec<(PathBuf, String)> {
    let dir = shared(server, "storage/framework/cache/data");
    walkdir::WalkDir::new(&dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file() && e.file_name() != ".gitignore")
        .map(|e| {
            let text = fs::read_to_string(e.path()).unwrap();
            (e.path().to_path_buf(), text)
        })
        .collect()
}

/// The one value queue:restart stored: `9999999999` (forever) then PHP's `i:<unix time>;`.
#[track_caller]
fn queue_restart_time(server: &Server) -> i64 {
    let files = cache_files(server);
    assert_eq!(files.len(), 1, "one cache entry: {files:?}");
    let text = &files[0].1;
    text.strip_prefix("9999999999i:")
        .and_then(|t| t.strip_suffix(';'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a queue:restart marker: {text:?}"))
}

/// When `latest` was last flipped, in whole seconds (the switch makes a fresh symlink).
fn switched_at(server: &Server) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(server.latest()).unwrap().mtime()
}

/// `base_path` as config:cache wrote it into a build's bootstrap/cache/config.php.
#[track_caller]
fn cached_base_path(build: &Path) -> String {
    let path = build.join("bootstrap/cache/config.php");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text
        .find("'base_path' => '")
        .expect("base_path in the cached config")
        + 16;
    text[start..][..text[start..].find('\'').unwrap()].to_string()
}

/// The URL of the app's script as Laravel's @vite() prints it, from the build's Vite manifest.
#[track_caller]
fn vite_script(build: &Path) -> String {
    let manifest = build.join("public/build/manifest.json");
    let text =
        fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    format!(
        "/build/{}",
        manifest["resources/js/app.js"]["file"].as_str().unwrap()
    )
}

/// The file sessions in shared storage (what the front controller wrote, one per request).
fn session_files(server: &Server) -> std::collections::BTreeSet<String> {
    fs::read_dir(shared(server, "storage/framework/sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".gitignore")
        .collect()
}

fn page_lines(server: &Server) -> Vec<String> {
    server.page().lines().map(str::to_string).collect()
}

#[test]
fn laravel_recipe_caches_config_in_the_build_migrates_once_and_restarts_queues() {
    let (server, clone) = laravel_v1();
    let v1 = server.live().unwrap();
    let v1_dir = server.build_path(&v1);

    // composer's post-autoload-dump really ran (`@php artisan package:discover`), in
    // application/, and the build has its output.
    let packages = fs::read_to_string(v1_dir.join("bootstrap/cache/packages.php")).unwrap();
    assert!(
        packages.contains("Lara\\\\QueueServiceProvider"),
        "{packages}"
    );
    // config:cache ran in the build, with the build's own path; never in application/.
    assert_eq!(cached_base_path(&v1_dir), v1_dir.display().to_string());
    assert!(
        !server
            .root
            .join("application/bootstrap/cache/config.php")
            .exists()
    );
    assert_eq!(
        migrations(&server),
        [("2024_01_01_000000_create_users_table".to_string(), 1)]
    );
    let restarted = queue_restart_time(&server);
    assert!(
        restarted >= switched_at(&server),
        "queue:restart before the switch"
    );
    // The build step (Vite) ran in application/; its output is in the build, node_modules/
    // (excluded) is not.
    let script = vite_script(&v1_dir);
    assert!(
        v1_dir.join("public").join(&script[1..]).is_file(),
        "{script}"
    );
    assert!(
        server
            .root
            .join("application/node_modules/asset-hash")
            .exists()
    );
    assert!(!v1_dir.join("node_modules").exists());
    assert_eq!(
        page_lines(&server),
        [
            "laravel app v1".to_string(),
            "name: Recipe Shop".into(),
            format!("base: {}", v1_dir.display()),
            "config: cached".into(),
            "providers: Lara\\QueueServiceProvider".into(),
            format!("script: {script}"),
        ]
    );

    // What users stored between deploys, and an operator's edit of .env.
    fs::write(
        shared(&server, "storage/app/public/avatar.png"),
        "an upload",
    )
    .unwrap();
    let env = LARAVEL_ENV.replace("Recipe Shop", "Recipe Shop Renamed");
    fs::write(shared(&server, ".env"), &env).unwrap();
    // The configuration is cached: .env is read again only by the next config:cache.
    assert_eq!(page_lines(&server)[1], "name: Recipe Shop");
    let sessions = session_files(&server);
    assert_eq!(sessions.len(), 2, "the pages' sessions, in shared/");
    for (path, _) in cache_files(&server) {
        fs::remove_file(path).unwrap();
    }

    let (path, text) = migration(
        "2024_02_01_000000_create_posts_table",
        "$tables['posts'] = ['columns' => ['id', 'title'], 'rows' => []];",
    );
    clone.write(&path, &text);
    clone.write(
        "resources/views/welcome.php",
        "<?php\n\nreturn 'laravel app v2';\n",
    );
    clone.write("resources/js/app.js", "console.log('laravel app v2');\n");
    clone.commit("v2: posts");
    let push = clone.push_main().success();
    let v2 = server.live().unwrap();
    let v2_dir = server.build_path(&v2);
    assert_ne!(v1, v2);

    // Each migration ran once: v1's is not run again, v2's ran in a batch of its own.
    assert_eq!(
        migrations(&server),
        [
            ("2024_01_01_000000_create_users_table".to_string(), 1),
            ("2024_02_01_000000_create_posts_table".to_string(), 2),
        ]
    );
    let push = push
        .stderr_has("2024_02_01_000000_create_posts_table .... DONE")
        .stderr_lacks("2024_01_01_000000_create_users_table .... DONE");
    // Each build's cache holds its own path: v1 can be rolled back to as it is.
    assert_eq!(cached_base_path(&v2_dir), v2_dir.display().to_string());
    assert_eq!(cached_base_path(&v1_dir), v1_dir.display().to_string());
    // composer had nothing to do; the output of its earlier script is in the build all the same.
    assert!(v2_dir.join("bootstrap/cache/packages.php").is_file());
    // queue:restart ran again, after this switch.
    assert!(queue_restart_time(&server) >= switched_at(&server));
    let switch = push.stderr.find("==> switch").unwrap();
    let restart = push.stderr.find("$ php artisan queue:restart").unwrap();
    assert!(
        switch < restart,
        "queue:restart before the switch:\n{}",
        push.stderr
    );

    // resources/ changed: Vite ran again (npm ci did not: the lockfile is the same), and the
    // new script has a new name; v1 keeps its own.
    assert!(
        push.step_line("build").contains("skipped `npm ci"),
        "{}",
        push.step_line("build")
    );
    let script2 = vite_script(&v2_dir);
    assert_ne!(script, script2);
    assert!(v1_dir.join("public").join(&script[1..]).is_file());
    // keep_assets: a page of v1 loaded before the switch still finds its script in v2.
    assert!(v2_dir.join("public").join(&script[1..]).is_file());
    let page = page_lines(&server);
    assert_eq!(
        page[..3],
        [
            "laravel app v2".to_string(),
            "name: Recipe Shop Renamed".into(),
            format!("base: {}", v2_dir.display()),
        ]
    );
    assert_eq!(page[5], format!("script: {script2}"));
    // shared/ survived: the upload, the operator's .env, v1's sessions.
    assert_eq!(
        fs::read_to_string(server.latest().join("public/storage/avatar.png")).unwrap(),
        "an upload"
    );
    assert_eq!(fs::read_to_string(shared(&server, ".env")).unwrap(), env);
    let now = session_files(&server);
    assert!(now.is_superset(&sessions), "v1's sessions lost: {now:?}");
    assert_eq!(now.len(), sessions.len() + 1, "v2's session added");

    // .env edited again: the README's way to have it read is a replay of the live commit,
    // a fresh build whose config:cache reads it. No migration runs again.
    fs::write(
        shared(&server, ".env"),
        LARAVEL_ENV.replace("Recipe Shop", "Replayed"),
    )
    .unwrap();
    clone.push(&["main:replay"]).success();
    let v3 = server.live().unwrap();
    assert!(v3 != v1 && v3 != v2, "replay makes a new build");
    assert_eq!(page_lines(&server)[1], "name: Replayed");
    assert_eq!(migrations(&server).len(), 2);
    server.assert_only_complete_builds(&[".env", "storage"]);
}

#[test]
fn a_failing_migration_fails_the_push_and_the_old_build_keeps_serving() {
    let (server, clone) = laravel_v1();
    let v1 = server.live().unwrap();
    let db = shared(&server, "storage/app/database.json");
    let before = fs::read(&db).unwrap();
    for (path, _) in cache_files(&server) {
        fs::remove_file(path).unwrap();
    }

    let broken = migration(
        "2024_03_01_000000_alter_users_table",
        "throw new RuntimeException(\"SQLSTATE[42S21]: Column already exists: 1060 Duplicate column name 'email'\");",
    );
    clone.write(&broken.0, &broken.1);
    clone.write(
        "resources/views/welcome.php",
        "<?php\n\nreturn 'laravel app v2';\n",
    );
    clone.commit("v2: a migration that fails");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("Duplicate column name")
        .stderr_has("release failed: `php artisan migrate --force` failed");
    // Nothing changed: the old build serves, alone in builds/; the migrations table is as it
    // was, byte for byte; after_switch (queue:restart) never ran.
    assert_eq!(server.live().unwrap(), v1);
    assert_eq!(server.builds(), std::slice::from_ref(&v1));
    assert_eq!(fs::read(&db).unwrap(), before);
    assert!(cache_files(&server).is_empty(), "queue:restart ran");
    assert_eq!(page_lines(&server)[0], "laravel app v1");

    // The trade-off the recipe states: a migration that ran before the failing one stays
    // applied (MySQL cannot roll DDL back) while the old code serves.
    let good = migration(
        "2024_02_01_000000_create_posts_table",
        "$tables['posts'] = ['columns' => ['id'], 'rows' => []];",
    );
    clone.write(&good.0, &good.1);
    clone.commit("v3: posts, and the migration that still fails");
    clone.push_main().deploy_failed();
    assert_eq!(server.live().unwrap(), v1);
    assert_eq!(page_lines(&server)[0], "laravel app v1");
    let applied = [
        ("2024_01_01_000000_create_users_table".to_string(), 1),
        ("2024_02_01_000000_create_posts_table".to_string(), 2),
    ];
    assert_eq!(migrations(&server), applied);

    // Fixed: the next push runs only what has not run yet.
    let fixed = migration(
        "2024_03_01_000000_alter_users_table",
        "$tables['users']['columns'][] = 'avatar';",
    );
    clone.write(&fixed.0, &fixed.1);
    clone.commit("v4: the migration fixed");
    clone.push_main().success();
    let mut expected = applied.to_vec();
    expected.push(("2024_03_01_000000_alter_users_table".to_string(), 3));
    assert_eq!(migrations(&server), expected);
    assert_eq!(page_lines(&server)[0], "laravel app v2");
    assert!(queue_restart_time(&server) >= switched_at(&server));
    server.assert_only_complete_builds(&[".env", "storage"]);
}

/// What shared/.env.local holds for the Symfony app on the server.
const SYMFONY_ENV_LOCAL: &str = "APP_ENV=prod\nAPP_SECRET=4f1b2c3d5e6f7a8b9c0d\n";

#[track_caller]
fn symfony_v1() -> (Server, DevClone) {
    let server = server_with_recipe("symfony");
    fs::create_dir_all(server.root.join("shared")).unwrap();
    fs::write(shared(&server, ".env.local"), SYMFONY_ENV_LOCAL).unwrap();
    let clone = server.clone_fixture("symfony-app");
    clone.push_main().success();
    (server, clone)
}

fn set_greeting(clone: &DevClone, greeting: &str) {
    clone.write(
        "config/services.php",
        &format!(
            "<?php\n\nreturn [\n    'app.greeting' => '{greeting}',\n    'app.log_file' => '%kernel.logs_dir%/%kernel.environment%.log',\n];\n"
        ),
    );
}

/// The lines of shared/var/log/prod.log: one per request the front controller answered.
fn prod_log(server: &Server) -> usize {
    fs::read_to_string(shared(server, "var/log/prod.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[track_caller]
fn assert_symfony_page(server: &Server, greeting: &str, build: &Path) {
    assert_eq!(
        page_lines(server),
        [
            greeting.to_string(),
            "env: prod debug: false".into(),
            format!("project: {}", build.display()),
            format!(
                "cache: {}/var/cache/prod/App_KernelProdContainer.php",
                build.display()
            ),
        ]
    );
}

#[test]
fn symfony_recipe_compiles_the_prod_container_in_the_build_and_keeps_logs() {
    let (server, clone) = symfony_v1();
    let v1 = server.build_path(&server.live().unwrap());
    // The prod container was compiled in the build, with the build's paths, by before_switch.
    let container = v1.join("var/cache/prod/App_KernelProdContainer.php");
    let text = fs::read_to_string(&container).unwrap();
    assert!(text.contains(&format!("'{}'", v1.display())), "{text}");
    // --no-scripts: nothing ran in application/ (in the dev environment, it would fail);
    // assets:install ran in the build.
    assert!(!server.root.join("application/var").exists());
    assert!(!server.root.join("application/public/bundles").exists());
    assert!(v1.join("public/bundles/framework/framework.css").is_file());
    assert!(
        fs::symlink_metadata(v1.join("var/log"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_symfony_page(&server, "symfony app v1", &v1);
    assert_eq!(prod_log(&server), 1);

    set_greeting(&clone, "symfony app v2");
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.build_path(&server.live().unwrap());
    assert_ne!(v1, v2);
    assert_symfony_page(&server, "symfony app v2", &v2);
    // The log and .env.local outlived v1's build; v1 keeps its own container to roll back to.
    assert_eq!(prod_log(&server), 2);
    assert_eq!(
        fs::read_to_string(shared(&server, ".env.local")).unwrap(),
        SYMFONY_ENV_LOCAL
    );
    let text = fs::read_to_string(&container).unwrap();
    assert!(text.contains("symfony app v1"), "{text}");
    server.assert_only_complete_builds(&[".env.local", "var/log", "var/pools"]);
}

/// Without debug, Symfony keeps any container it finds. One that a command run in
/// application/ left in var/cache/prod/ is copied into the next build with the rest of
/// application/'s ignored files: `cache:warmup` alone would serve it, with the old
/// configuration and application/'s paths. The recipe's `cache:clear` compiles afresh.
#[test]
fn a_prod_container_left_in_application_is_never_served_by_a_later_build() {
    let (server, clone) = symfony_v1();
    let application = server.root.join("application");
    let out = server
        .command("php")
        .args(["bin/console", "cache:warmup"])
        .env("APP_ENV", "prod")
        .current_dir(&application)
        .output()
        .unwrap();
    crate::harness::assert_success(&out, "bin/console cache:warmup in application/");
    assert!(
        application
            .join("var/cache/prod/App_KernelProdContainer.php")
            .is_file()
    );

    set_greeting(&clone, "symfony app v2");
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.build_path(&server.live().unwrap());
    assert_symfony_page(&server, "symfony app v2", &v2);
}

#[test]
fn plain_php_recipe_keeps_sessions_and_rolls_back_a_build_that_does_not_run() {
    let server = server_with_recipe("plain-php");
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let v1 = server.live().unwrap();
    // The composer script (post-install-cmd) ran, and its output is in the build.
    assert!(server.build_path(&v1).join("composer-script-ran").is_file());
    fs::write(shared(&server, "storage/sessions/sess_abc"), "user|i:7;").unwrap();
    assert!(server.page().contains("build: "));

    clone.deploy_version("2.0.0");
    let v2 = server.live().unwrap();
    assert_ne!(v1, v2);
    assert!(
        server.page().contains("the example app 2.0.0"),
        "{}",
        server.page()
    );
    assert_eq!(
        fs::read_to_string(server.latest().join("storage/sessions/sess_abc")).unwrap(),
        "user|i:7;"
    );

    // A build whose front controller dies: the health check puts v2 back, the push fails.
    clone.write(
        "public/index.php",
        "<?php\n\nrequire __DIR__ . '/../vendor/autoload.php';\nnew App\\Missing();\n",
    );
    clone.commit("v3: broken");
    clone
        .push_main()
        .stderr_has("health check failed")
        .stderr_has(&format!("rolled back to builds/{v2}"));
    assert_eq!(server.live().unwrap(), v2);
    assert!(server.page().contains("the example app 2.0.0"));
    assert_eq!(
        fs::read_to_string(shared(&server, "storage/sessions/sess_abc")).unwrap(),
        "user|i:7;"
    );
}

/// The Laravel recipe served by the shipped nginx block and php-fpm pool: the cached
/// configuration of each build is what php-fpm runs, with no PHP diagnostic.
#[test]
fn laravel_recipe_served_by_nginx_and_php_fpm() {
    let _heavy = crate::harness::exclusive();
    let (server, clone) = laravel_v1();
    let v1 = server.build_path(&server.live().unwrap());
    let web = crate::harness::web::WebServer::start(&server.root, &server.base().join("web"));
    let (status, body) = get(&web.url("/"));
    assert_eq!(status, 200, "{body}\n{}", web.error_log());
    assert!(
        body.starts_with(&format!(
            "laravel app v1\nname: Recipe Shop\nbase: {}\nconfig: cached\n",
            v1.display()
        )),
        "{body}"
    );
    // The script Vite built, under the name the page gives it.
    let script = vite_script(&v1);
    assert!(body.contains(&format!("script: {script}\n")), "{body}");
    assert_eq!(
        get(&web.url(&script)),
        (200, "console.log('laravel app v1');\n".into())
    );
    // An upload in shared storage, through storage:link's public/storage.
    fs::write(
        shared(&server, "storage/app/public/avatar.png"),
        "an upload",
    )
    .unwrap();
    assert_eq!(
        get(&web.url("/storage/avatar.png")),
        (200, "an upload".into())
    );

    clone.write(
        "resources/views/welcome.php",
        "<?php\n\nreturn 'laravel app v2';\n",
    );
    clone.write("resources/js/app.js", "console.log('laravel app v2');\n");
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.build_path(&server.live().unwrap());
    let expected = format!(
        "laravel app v2\nname: Recipe Shop\nbase: {}\n",
        v2.display()
    );
    crate::harness::wait_until(
        std::time::Duration::from_secs(10),
        || {
            let (status, body) = get(&web.url("/"));
            status == 200 && body.starts_with(&expected)
        },
        || {
            format!(
                "v2 never served: {:?}\n{}",
                get(&web.url("/")),
                web.error_log()
            )
        },
    );
    // A page of v1 loaded before the switch still gets its script after it (keep_assets).
    assert_eq!(
        get(&web.url(&script)),
        (200, "console.log('laravel app v1');\n".into())
    );
    let diagnostics = web.diagnostics();
    web.stop();
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
}

/// The user the deploy runs as in [`laravel_recipe_works_for_a_deploy_user_with_read_only_builds`].
const NOBODY: u32 = 65534;

/// `git push <repository> HEAD:main` from `clone` as the deploy user.
#[track_caller]
fn push_as_deploy_user(server: &Server, clone: &DevClone) -> String {
    use std::os::unix::process::CommandExt;
    let push = crate::harness::users::push_as(server, clone, |cmd| {
        cmd.uid(NOBODY).gid(NOBODY).output().unwrap()
    });
    let stderr = push.stderr;
    assert!(
        push.code == Some(0) && stderr.contains("remote: deployed ") && !stderr.contains("error:"),
        "push as the deploy user failed:\n{stderr}"
    );
    stderr
}

/// Root writes through a file's mode; the deploy user does not. In `snapshot: link` mode every
/// file of a build is read-only, and most are hard links shared with the build before: the
/// recipe's commands must create files (config:cache unlinks and writes afresh, as Laravel's
/// does), never rewrite one of the build's in place.
#[test]
fn laravel_recipe_works_for_a_deploy_user_with_read_only_builds() {
    // SAFETY: geteuid(2) reads the process's own user id; it cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: becoming the deploy user needs root");
        return;
    }
    let server = server_with_recipe("laravel");
    fs::create_dir_all(server.root.join("shared")).unwrap();
    fs::write(shared(&server, ".env"), LARAVEL_ENV).unwrap();
    let clone = server.clone_fixture("laravel-app");
    crate::harness::users::hand_over(&server, &clone, NOBODY, NOBODY);
    push_as_deploy_user(&server, &clone);
    let v1 = server.build_path(&server.live().unwrap());

    clone.write(
        "resources/views/welcome.php",
        "<?php\n\nreturn 'laravel app v2';\n",
    );
    let (path, text) = migration(
        "2024_02_01_000000_create_posts_table",
        "$tables['posts'] = ['columns' => ['id'], 'rows' => []];",
    );
    clone.write(&path, &text);
    clone.commit("v2");
    let pushed = push_as_deploy_user(&server, &clone);
    let v2 = server.build_path(&server.live().unwrap());
    assert_ne!(v1, v2);
    assert!(
        pushed.contains(" files linked to the live build"),
        "{pushed}"
    );

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let artisan = fs::metadata(v2.join("artisan")).unwrap();
    assert_eq!(
        artisan.permissions().mode() & 0o222,
        0,
        "artisan is read-only"
    );
    assert_eq!(
        artisan.ino(),
        fs::metadata(v1.join("artisan")).unwrap().ino(),
        "artisan is shared with v1"
    );
    let config = fs::metadata(v2.join("bootstrap/cache/config.php")).unwrap();
    assert_eq!(config.uid(), NOBODY);
    assert_eq!(cached_base_path(&v2), v2.display().to_string());
    assert_eq!(cached_base_path(&v1), v1.display().to_string());
    assert_eq!(migrations(&server).len(), 2);
    assert_eq!(page_lines(&server)[0], "laravel app v2");
}

/// docs/recipes.md prints each recipe verbatim, in a yaml block: the text these tests deploy is
/// the text users copy.
#[test]
fn the_readme_prints_each_recipe_exactly_as_deployed() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recipes.md");
    let page = fs::read_to_string(&page).unwrap();
    for name in ["laravel", "symfony", "slim", "plain-php"] {
        let block = format!("```yaml\n{}```\n", recipe(name));
        assert!(
            page.contains(&block),
            "docs/recipes.md must print fixtures/recipes/{name}.deploy.yml as is:\n{block}"
        );
    }
}

/// Vite runs before the build exists, so a front-end build that fails stops the deploy before
/// any migration touches the shared database.
#[test]
fn a_failing_vite_build_fails_the_push_before_any_migration_runs() {
    let (server, clone) = laravel_v1();
    let v1 = server.live().unwrap();
    let before = fs::read(shared(&server, "storage/app/database.json")).unwrap();
    let (path, text) = migration(
        "2024_02_01_000000_create_posts_table",
        "$tables['posts'] = ['columns' => ['id'], 'rows' => []];",
    );
    clone.write(&path, &text);
    clone.remove("resources/js/app.js");
    clone.commit("v2: the entry point is gone");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("build failed")
        .stderr_has("resources/js/app.js")
        .stderr_lacks("$ php artisan migrate --force");
    assert_eq!(server.builds(), std::slice::from_ref(&v1));
    assert_eq!(
        fs::read(shared(&server, "storage/app/database.json")).unwrap(),
        before
    );
    assert_eq!(page_lines(&server)[0], "laravel app v1");
}

/// `php artisan config:cache` run by hand in application/ (debugging on the server) leaves a
/// cache with application/'s paths there, which the snapshot copies into the next build with
/// the other ignored files. The recipe's config:cache replaces it in the build: the page never
/// reads application/, which the next deploy rewrites.
#[test]
fn a_config_cache_left_in_application_is_replaced_in_the_next_build() {
    let (server, clone) = laravel_v1();
    let application = server.root.join("application");
    let out = server
        .command("php")
        .args(["artisan", "config:cache"])
        .current_dir(&application)
        .output()
        .unwrap();
    crate::harness::assert_success(&out, "php artisan config:cache in application/");
    assert_eq!(
        cached_base_path(&application),
        application.display().to_string()
    );

    clone.write(
        "resources/views/welcome.php",
        "<?php\n\nreturn 'laravel app v2';\n",
    );
    clone.commit("v2");
    clone.push_main().success();
    let v2 = server.build_path(&server.live().unwrap());
    assert_eq!(cached_base_path(&v2), v2.display().to_string());
    assert_eq!(
        page_lines(&server)[..3],
        [
            "laravel app v2".to_string(),
            "name: Recipe Shop".into(),
            format!("base: {}", v2.display()),
        ]
    );
}

/// The web server's user in the shipped pool.
const WWW_DATA: u32 = 33;

/// Everything under builds/, each path with its owner, inode and modification time to the
/// nanosecond: what a request must never change.
fn builds_listing(server: &Server) -> Vec<(String, u32, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let builds = server.root.join("builds");
    walkdir::WalkDir::new(&builds)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let path = e
                .path()
                .strip_prefix(&builds)
                .unwrap()
                .display()
                .to_string();
            (
                path,
                meta.uid(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
            )
        })
        .collect()
}

/// Nothing in builds/ belongs to the web server's user.
#[track_caller]
fn assert_no_build_file_of_www_data(server: &Server) {
    let owned: Vec<String> = builds_listing(server)
        .into_iter()
        .filter(|(_, uid, ..)| *uid == WWW_DATA)
        .map(|(path, ..)| path)
        .collect();
    assert_eq!(owned, Vec::<String>::new(), "www-data wrote into builds/");
}

/// The owner of a file, and its lines.
#[track_caller]
fn owner_and_lines(path: &Path) -> (u32, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let owner = fs::metadata(path).unwrap().uid();
    (owner, text.lines().map(str::to_string).collect())
}

/// `GET /` from `web`: must answer 200; its body.
#[track_caller]
fn get_page(web: &WebServer) -> String {
    let (status, body) = get(&web.url("/"));
    assert_eq!(status, 200, "{body}\n{}", web.error_log());
    body
}

/// A server deploying `fixture` with `deploy_yml` as the shipped pool expects it: a real deploy
/// user (not root) in www-data's group, `install --web-user www-data`, v1 pushed by that
/// user. `before` runs first, on the root as the operator prepares it.
#[track_caller]
fn deployed_for_www_data(
    user: &DeployUser,
    name: &str,
    deploy_yml: &str,
    fixture: &str,
    before: impl FnOnce(&Server),
) -> (Server, DevClone) {
    let server = server_with_deploy_yml(name, deploy_yml);
    before(&server);
    let clone = server.clone_fixture(fixture);
    user.set_up_with_www_data(&server, &clone);
    user.push(&server, &clone).success();
    (server, clone)
}

fn slim_page(build: &Path, greeting: &str) -> String {
    format!(
        "{greeting}\nroot: {b}\ncontainer: {b}/var/cache/CompiledContainer.php\nlog: {b}/logs/app.log\n",
        b = build.display()
    )
}

/// The Slim recipe as the shipped pool runs it: php-fpm as www-data reads a build the deploy
/// user made and compiled the container in, and writes only its log, in shared/.
#[test]
fn slim_recipe_served_by_a_www_data_pool_writes_nothing_into_builds() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let (server, clone) = deployed_for_www_data(&user, "slim", &recipe("slim"), "slim-app", |_| {});
    let v1 = server.build_path(&server.live().unwrap());
    // before_switch compiled PHP-DI's container in the build, as the deploy user, with the
    // build's own paths.
    let (owner, lines) = owner_and_lines(&v1.join("var/cache/CompiledContainer.php"));
    assert_eq!(owner, user.uid);
    assert!(
        lines
            .concat()
            .contains(&format!("'{}/logs/app.log'", v1.display())),
        "{lines:?}"
    );

    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    for _ in 0..3 {
        assert_eq!(get_page(&web), slim_page(&v1, "slim app v1"));
    }
    assert_eq!(
        builds_listing(&server),
        untouched,
        "a request changed builds/"
    );
    // Monolog's log is in shared/, made by the pool's user, one line a request.
    let (owner, lines) = owner_and_lines(&shared(&server, "logs/app.log"));
    assert_eq!(owner, WWW_DATA);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("slim-app.INFO: Home page viewed"))
    );

    let settings = fs::read_to_string(clone.path.join("app/settings.php")).unwrap();
    clone.write(
        "app/settings.php",
        &settings.replace("slim app v1", "slim app v2"),
    );
    clone.commit("v2");
    user.push(&server, &clone).success();
    let v2 = server.build_path(&server.live().unwrap());
    assert_ne!(v1, v2);
    let untouched = builds_listing(&server);
    assert_eq!(get_page(&web), slim_page(&v2, "slim app v2"));
    assert_eq!(
        builds_listing(&server),
        untouched,
        "a request changed builds/"
    );
    assert_no_build_file_of_www_data(&server);
    assert_eq!(owner_and_lines(&shared(&server, "logs/app.log")).1.len(), 4);
    web.stop_clean();
}

/// The recipe's before_switch is what makes a read-only build work: without it the first
/// request compiles the container, as www-data, into a build it cannot write, and every page
/// answers 500.
#[test]
fn slim_without_compiling_the_container_at_deploy_answers_500() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let text = recipe("slim");
    let step = "before_switch:\n  - php bin/compile-container.php\n";
    assert!(text.contains(step), "the recipe compiles the container");
    let (server, _clone) =
        deployed_for_www_data(&user, "slim", &text.replace(step, ""), "slim-app", |_| {});
    let v1 = server.build_path(&server.live().unwrap());
    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    let (status, body) = get(&web.url("/"));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!(
            "Compilation directory does not exist and cannot be created: {}/var/cache",
            v1.display()
        )),
        "{body}"
    );
    assert_eq!(builds_listing(&server), untouched);
    web.stop_leaving_nothing();
}

/// The Symfony recipe as the shipped pool runs it: the container compiled by before_switch,
/// the log and cache.app's items written by www-data into shared/, never into the build.
#[test]
fn symfony_recipe_served_by_a_www_data_pool_writes_nothing_into_builds() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let (server, _clone) = deployed_for_www_data(
        &user,
        "symfony",
        &recipe("symfony"),
        "symfony-app",
        write_env_local,
    );
    let v1 = server.build_path(&server.live().unwrap());
    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    for _ in 0..2 {
        let page = get_page(&web);
        assert!(
            page.starts_with(&format!(
                "symfony app v1\nenv: prod debug: false\nproject: {}\n",
                v1.display()
            )),
            "{page}"
        );
    }
    assert_eq!(
        builds_listing(&server),
        untouched,
        "a request changed builds/"
    );
    assert_no_build_file_of_www_data(&server);
    let (owner, lines) = owner_and_lines(&shared(&server, "var/log/prod.log"));
    assert_eq!(owner, WWW_DATA);
    assert_eq!(lines.len(), 2, "one line a request, no warning: {lines:?}");
    // cache.app's item, saved once by the first request, read by the second.
    let items: Vec<PathBuf> = walkdir::WalkDir::new(shared(&server, "var/pools"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        owner_and_lines(&items[0]),
        (WWW_DATA, vec!["symfony app v1".to_string()])
    );
    web.stop_clean();
}

/// Symfony's default puts cache.app in var/cache/prod/pools/ of the build: as www-data every
/// save fails, which Symfony only logs. The recipe's `framework.cache.directory` is what
/// makes it work.
#[test]
fn symfony_cache_pools_left_in_the_build_fail_to_save_under_a_www_data_pool() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let server = server_with_recipe("symfony");
    write_env_local(&server);
    let clone = server.clone_fixture("symfony-app");
    clone.remove("config/packages/cache.php");
    clone.commit("cache.app at Symfony's default");
    user.set_up_with_www_data(&server, &clone);
    user.push(&server, &clone).success();
    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    get_page(&web);
    get_page(&web);
    assert_eq!(builds_listing(&server), untouched);
    let (_, lines) = owner_and_lines(&shared(&server, "var/log/prod.log"));
    let failed = lines
        .iter()
        .filter(|l| l.contains("cache.WARNING: Failed to save key \"home.greeting\""))
        .count();
    assert_eq!(failed, 2, "{lines:?}");
    web.stop_leaving_nothing();
}

/// shared/.env.local as the operator makes it: readable by the web server's group only.
fn write_env_local(server: &Server) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(server.root.join("shared")).unwrap();
    let path = shared(server, ".env.local");
    fs::write(&path, SYMFONY_ENV_LOCAL).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
}

/// The Laravel recipe as the shipped pool runs it: config cached in the build by the deploy
/// user, sessions written by www-data into shared storage/, nothing into the build.
#[test]
fn laravel_recipe_served_by_a_www_data_pool_writes_nothing_into_builds() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let (server, _clone) = deployed_for_www_data(
        &user,
        "laravel",
        &recipe("laravel"),
        "laravel-app",
        |server| {
            fs::create_dir_all(server.root.join("shared")).unwrap();
            fs::write(shared(server, ".env"), LARAVEL_ENV).unwrap();
        },
    );
    let v1 = server.build_path(&server.live().unwrap());
    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    for _ in 0..2 {
        let page = get_page(&web);
        let expected = format!(
            "laravel app v1\nname: Recipe Shop\nbase: {}\nconfig: cached\n",
            v1.display()
        );
        assert!(page.starts_with(&expected), "{page}");
    }
    assert_eq!(
        builds_listing(&server),
        untouched,
        "a request changed builds/"
    );
    assert_no_build_file_of_www_data(&server);
    let sessions = session_files(&server);
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for name in sessions {
        let path = shared(&server, "storage/framework/sessions").join(name);
        assert_eq!(owner_and_lines(&path).0, WWW_DATA);
    }
    web.stop_clean();
}

/// The plain PHP recipe as the shipped pool runs it: its health check (the PHP CLI, as the
/// deploy user) and the pool's requests leave the build as the deploy made it.
#[test]
fn plain_php_recipe_served_by_a_www_data_pool_writes_nothing_into_builds() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let _heavy = crate::harness::exclusive();
    let (server, _clone) = deployed_for_www_data(
        &user,
        "plain-php",
        &recipe("plain-php"),
        "example-app",
        |_| {},
    );
    let web = WebServer::start_as_shipped(&server.root, &server.base().join("web"));
    let untouched = builds_listing(&server);
    let page = get_page(&web);
    assert!(page.starts_with("Hello from the example app"), "{page}");
    assert_eq!(
        builds_listing(&server),
        untouched,
        "a request changed builds/"
    );
    assert_no_build_file_of_www_data(&server);
    web.stop_clean();
}
