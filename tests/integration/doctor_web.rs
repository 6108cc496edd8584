//! `atomdeploy-hook doctor`'s web-server checks against real nginx and php-fpm on 127.0.0.1,
//! configured from the shipped webserver/ files: the shipped set-up passes them, and each
//! set-up broken on purpose is caught with its fix, doctor changing nothing.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Output;

use crate::harness::users::{DeployUser, hand_over};
use crate::harness::web::WebServer;
use crate::harness::{BIN, Server, tree_listing};

/// The checks this module is about; the root's own checks may warn on a test machine.
const WEB_CHECKS: [&str; 5] = ["nginx", "php-fpm pool", "web access", "shared", "opcache"];

/// A server with v1 of the example app live and `uploads/` shared, set up as the shipped pool
/// expects: shared/ given to www-data (`install --web-user www-data`), the test's temporary
/// directory open to it as a server's /srv is.
fn deployed(config: &[(&str, &str)]) -> (Server, String) {
    let (server, build) = deployed_at(config, None);
    fs::set_permissions(server.base(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
    crate::harness::assert_success(&out, "install --web-user www-data");
    (server, build)
}

/// The example app's v1 deployed, the deploy root at `root` when given; shared/ left as the
/// deploy made it.
fn deployed_at(config: &[(&str, &str)], root: Option<&std::path::Path>) -> (Server, String) {
    let mut builder = Server::builder().config("shared", "[uploads/]");
    for (key, value) in config {
        builder = builder.config(key, value);
    }
    if let Some(root) = root {
        builder = builder.root(root);
    }
    let server = builder.install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let build = server.live().expect("a live build");
    (server, build)
}

fn web_dir(server: &Server) -> PathBuf {
    server.base().join("web")
}

/// nginx and php-fpm with the shipped files, the pool as www-data as shipped, then edited by
/// `pool` and `site`.
fn start(
    server: &Server,
    pool: &dyn Fn(String) -> String,
    site: &dyn Fn(String) -> String,
) -> WebServer {
    WebServer::start_edited(
        &server.root,
        &web_dir(server),
        &|text| pool(as_www_data(text)),
        site,
    )
}

fn unchanged(s: String) -> String {
    s
}

/// Started with the server block's root at `public` in place of `<root>/latest/public`.
fn start_serving(server: &Server, public: &str) -> WebServer {
    let root = root_of(server);
    start(server, &unchanged, &|site| {
        site.replace(&format!("{root}/latest/public"), public)
    })
}

/// Everything under the deploy root with its content and mode: what doctor must not change.
fn snapshot(server: &Server) -> Vec<(String, String, u32)> {
    tree_listing(&server.root)
        .into_iter()
        .map(|(path, what)| {
            let mode = fs::symlink_metadata(server.root.join(&path))
                .unwrap()
                .mode();
            (path, what, mode)
        })
        .collect()
}

/// `doctor --nginx-config <the test's nginx.conf> ARGS`, checking that it changed nothing.
fn doctor(server: &Server, args: &[&str]) -> Output {
    let before = snapshot(server);
    let conf = web_dir(server).join("nginx.conf").display().to_string();
    let mut all = vec!["doctor", "--nginx-config", &conf];
    all.extend(args);
    let out = server.run(&all);
    assert_eq!(snapshot(server), before, "doctor changed the deploy root");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// With the test's own pool file.
fn doctor_pool(server: &Server) -> Output {
    let pool = web_dir(server).join("php-fpm.conf").display().to_string();
    doctor(server, &["--fpm-pool", &pool])
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `check` at `level` containing `has`, and its fix.
#[track_caller]
fn finding(out: &Output, level: &str, check: &str, has: &str) -> (String, String) {
    let text = text(out);
    let lines: Vec<&str> = text.lines().collect();
    let start = format!("{level:<8} {check}: ");
    let Some(at) = lines
        .iter()
        .position(|l| l.starts_with(&start) && l.contains(has))
    else {
        panic!("no `{start}…{has}…` in:\n{text}");
    };
    let fix = lines
        .get(at + 1)
        .and_then(|l| l.strip_prefix("         fix: "))
        .unwrap_or("")
        .to_string();
    (lines[at].to_string(), fix)
}

/// A FAIL of `check` containing `has`, whose fix contains `fix`; doctor exits 1.
#[track_caller]
fn assert_fails(out: &Output, check: &str, has: &str, fix: &str) -> String {
    let (line, found) = finding(out, "FAIL", check, has);
    assert!(
        found.contains(fix),
        "fix `{found}` lacks `{fix}`\n{}",
        text(out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    line
}

/// No FAIL and no warning from the web checks.
#[track_caller]
fn assert_web_clean(out: &Output) {
    let text = text(out);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("warning"))
        .filter(|l| {
            WEB_CHECKS
                .iter()
                .any(|c| l[8..].trim_start().starts_with(&format!("{c}: ")))
        })
        .collect();
    assert_eq!(bad, Vec::<&str>::new(), "{text}");
}

/// The test's pool file copied into `<web>/pool.d/app.conf`, beside a pool `other` listening
/// on `other`: doctor must tell them apart by their `listen`.
fn pool_dir(server: &Server, other: &str) -> String {
    let dir = web_dir(server).join("pool.d");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(web_dir(server).join("php-fpm.conf"), dir.join("app.conf")).unwrap();
    fs::write(
        dir.join("other.conf"),
        format!("[other]\nuser = nobody\ngroup = nogroup\nlisten = {other}\n"),
    )
    .unwrap();
    dir.join("*.conf").display().to_string()
}

fn root_of(server: &Server) -> String {
    server.root.display().to_string()
}

#[test]
fn the_shipped_set_up_passes_every_web_check() {
    let (server, _) = deployed(&[]);
    let web = start(&server, &unchanged, &unchanged);
    let root = root_of(&server);
    let dir = web_dir(&server);
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    let has = [
        ("nginx", format!("has `root {root}/latest/public`")),
        (
            "nginx",
            "passes SCRIPT_FILENAME $realpath_root$fastcgi_script_name".into(),
        ),
        (
            "php-fpm pool",
            format!("pool `app` ({}/php-fpm.conf:", dir.display()),
        ),
        ("web access", "can reach and read the live build".into()),
        (
            "shared",
            format!("uploads/ ({root}/shared/uploads) is writable"),
        ),
        ("opcache", "opcache on, validate_timestamps=0".into()),
    ];
    for (check, text) in &has {
        finding(&out, "ok", check, text);
    }
    // Without --fpm-pool: the pool is the one of the directory whose listen nginx passes to.
    let pools = pool_dir(&server, "127.0.0.1:9");
    let out = doctor(&server, &["--fpm-pools", &pools]);
    assert_web_clean(&out);
    finding(
        &out,
        "ok",
        "php-fpm pool",
        &format!("pool `app` ({}/pool.d/app.conf:", dir.display()),
    );
    web.stop_leaving_nothing();
}

#[test]
fn a_server_block_serving_a_build_directory_fails() {
    let (server, build) = deployed(&[]);
    let root = root_of(&server);
    let web = start_serving(&server, &format!("{root}/builds/{build}/public"));
    let out = doctor_pool(&server);
    assert_fails(
        &out,
        "nginx",
        &format!("has `root {root}/builds/{build}/public`"),
        &format!("`root {root}/latest/public;`"),
    );
    assert!(text(&out).contains("a build directory, so the site keeps serving that one build"));
    web.stop_leaving_nothing();
}

#[test]
fn a_server_block_serving_application_fails() {
    let (server, _) = deployed(&[]);
    let root = root_of(&server);
    let web = start_serving(&server, &format!("{root}/application/public"));
    let line = assert_fails(
        &doctor_pool(&server),
        "nginx",
        &format!("has `root {root}/application/public`"),
        &format!("`root {root}/latest/public;`"),
    );
    assert!(line.contains("half-updated tree"), "{line}");
    web.stop_leaving_nothing();
}

fn document_root(site: String) -> String {
    site.replace(
        "SCRIPT_FILENAME $realpath_root$fastcgi_script_name",
        "SCRIPT_FILENAME $document_root$fastcgi_script_name",
    )
    .replace(
        "DOCUMENT_ROOT $realpath_root",
        "DOCUMENT_ROOT $document_root",
    )
}

#[test]
fn document_root_fails_without_reset_opcache_and_passes_with_it() {
    let (server, _) = deployed(&[]);
    let web = start(&server, &unchanged, &document_root);
    let out = doctor_pool(&server);
    assert_fails(
        &out,
        "nginx",
        "passes SCRIPT_FILENAME $document_root$fastcgi_script_name: PHP is handed the path \
         through `latest`",
        "reset_opcache: <the pool's listen>",
    );
    // The shipped opcache.ini's validate_timestamps=0, read from the running pool, makes it
    // for ever.
    assert_fails(
        &out,
        "opcache",
        "opcache.validate_timestamps=0 with paths through `latest`",
        "$realpath_root$fastcgi_script_name",
    );
    let socket = format!("unix:{}", web_dir(&server).join("fpm.sock").display());
    server.set_config("reset_opcache", &socket);
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    finding(
        &out,
        "ok",
        "nginx",
        &format!("resets the pool's opcache at {socket} after each switch"),
    );
    finding(
        &out,
        "ok",
        "opcache",
        "reset after each switch (reset_opcache)",
    );
    web.stop_leaving_nothing();
}

#[test]
fn a_restrict_api_that_leaves_out_the_reset_script_fails() {
    let (server, _) = deployed(&[]);
    let web = start(
        &server,
        &|pool| format!("{pool}\nphp_admin_value[opcache.restrict_api] = /var/www/\n"),
        &document_root,
    );
    let socket = format!("unix:{}", web_dir(&server).join("fpm.sock").display());
    server.set_config("reset_opcache", &socket);
    let line = assert_fails(
        &doctor_pool(&server),
        "opcache",
        "opcache.restrict_api is `/var/www/` in pool `app`",
        &format!(
            "set opcache.restrict_api empty, or to a prefix of {}/.atomdeploy",
            server.root.display()
        ),
    );
    assert!(line.contains("every deploy ends failed"), "{line}");
    web.stop_leaving_nothing();
}

#[test]
fn reset_opcache_at_another_pool_than_nginx_passes_to_fails() {
    let (server, _) = deployed(&[]);
    let web = start(&server, &unchanged, &document_root);
    let dir = web_dir(&server);
    let elsewhere = format!("unix:{}", dir.join("elsewhere.sock").display());
    server.set_config("reset_opcache", &elsewhere);
    assert_fails(
        &doctor_pool(&server),
        "opcache",
        &format!(
            "reset_opcache resets the pool at {elsewhere}, but the site is served by pool `app` \
             ({}/php-fpm.conf:",
            dir.display()
        ),
        &format!("`reset_opcache: unix:{}`", dir.join("fpm.sock").display()),
    );
    web.stop_leaving_nothing();
}

#[test]
fn no_server_block_for_the_root_fails() {
    let (server, _) = deployed(&[]);
    let root = root_of(&server);
    let elsewhere = server.base().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let web = start_serving(&server, &elsewhere.display().to_string());
    assert_fails(
        &doctor_pool(&server),
        "nginx",
        &format!(
            "no server block in {}/nginx.conf (as `nginx -T` prints it) has its root in \
             {root}/latest",
            web_dir(&server).display()
        ),
        &format!("`root {root}/latest/public;`"),
    );
    web.stop_leaving_nothing();
}

#[test]
fn a_missing_nginx_config_is_a_warning_and_skips_the_web_checks() {
    let (server, _) = deployed(&[]);
    let out = doctor(&server, &[]);
    let (_, fix) = finding(
        &out,
        "warning",
        "nginx",
        &format!(
            "{}/nginx.conf does not exist: nginx not checked",
            web_dir(&server).display()
        ),
    );
    assert!(fix.contains("--nginx-config FILE"), "{fix}");
    finding(&out, "warning", "php-fpm pool", "not checked");
}

#[test]
fn fastcgi_pass_to_a_socket_nothing_listens_on_fails() {
    let (server, _) = deployed(&[]);
    let dir = web_dir(&server);
    let gone = dir.join("gone.sock");
    let web = start(&server, &unchanged, &|site| {
        site.replace(
            &format!("unix:{}", dir.join("fpm.sock").display()),
            &format!("unix:{}", gone.display()),
        )
    });
    // The given pool file has no pool there.
    assert_fails(
        &doctor_pool(&server),
        "php-fpm pool",
        &format!(
            "no pool in {}/php-fpm.conf listens on unix:{}, where nginx passes PHP requests \
             (pools there: [app] unix:{}/fpm.sock)",
            dir.display(),
            gone.display(),
            dir.display()
        ),
        &format!("`listen = {}`", gone.display()),
    );
    // A pool file does, but php-fpm has not loaded it: no socket.
    let pools = pool_dir(&server, &gone.display().to_string());
    let out = doctor(&server, &["--fpm-pools", &pools]);
    assert_fails(
        &out,
        "php-fpm pool",
        &format!(
            "pool `other` ({}/pool.d/other.conf:1): the socket {} does not exist",
            dir.display(),
            gone.display()
        ),
        "systemctl reload php8.2-fpm",
    );
    // A socket left behind by a php-fpm that died: nothing accepts on it.
    drop(UnixListener::bind(&gone).unwrap());
    let out = doctor(&server, &["--fpm-pools", &pools]);
    assert_fails(
        &out,
        "php-fpm pool",
        &format!(
            "pool `other` ({}/pool.d/other.conf:1): cannot reach the php-fpm pool at unix:{}",
            dir.display(),
            gone.display()
        ),
        "systemctl reload php8.2-fpm",
    );
    assert!(text(&out).contains("Connection refused"), "{}", text(&out));
    web.stop_leaving_nothing();
}

fn as_www_data(pool: String) -> String {
    pool.replace("user = root", "user = www-data")
        .replace("group = root", "group = www-data")
}

#[test]
fn shared_owned_by_root_is_not_writable_by_a_www_data_pool() {
    let (server, _) = deployed_at(&[], None);
    // Whatever the test's temporary directory is, a server's /srv is open to all.
    fs::set_permissions(server.base(), fs::Permissions::from_mode(0o755)).unwrap();
    let uploads = server.root.join("shared/uploads");
    let meta = fs::metadata(&uploads).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o755));
    let web = start(&server, &unchanged, &unchanged);
    let out = doctor_pool(&server);
    let line = assert_fails(
        &out,
        "shared",
        "uploads/ is not writable by the pool's user www-data:www-data (uid 33",
        &format!(
            "`chgrp -R www-data {0} && chmod -R g+w {0}",
            uploads.display()
        ),
    );
    assert!(
        line.contains(&format!(
            "{} dir, mode 755 owner root:root",
            uploads.display()
        )),
        "{line}"
    );
    assert!(text(&out).contains("install --web-user www-data"));
    finding(
        &out,
        "ok",
        "php-fpm pool",
        "running as www-data:www-data (uid 33, gid 33)",
    );
    finding(
        &out,
        "ok",
        "web access",
        "can reach and read the live build",
    );
    // The fix it gives is enough.
    for command in [
        format!("chgrp -R www-data {}", uploads.display()),
        format!("chmod -R g+w {}", uploads.display()),
    ] {
        server.run_fix(&command);
    }
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    finding(&out, "ok", "shared", "uploads/ (");
    web.stop_leaving_nothing();
}

#[test]
fn a_root_under_a_directory_the_pool_cannot_enter_fails() {
    // A deploy user's home: /home/deploy is 0700 on many systems.
    let home = tempfile::Builder::new()
        .prefix("atomdeploy-home-")
        .tempdir()
        .unwrap();
    let base = fs::canonicalize(home.path()).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
    let (server, _) = deployed_at(&[], Some(&base.join("srv")));
    let web = start(&server, &unchanged, &unchanged);
    let line = assert_fails(
        &doctor_pool(&server),
        "web access",
        &format!(
            "www-data:www-data (uid 33, groups www-data) cannot enter {} dir, mode 700 owner \
             root:root",
            base.display()
        ),
        &format!("`chmod o+x {}`", base.display()),
    );
    assert!(line.contains("every request fails"), "{line}");
    web.stop_leaving_nothing();
}

#[test]
fn opcache_enable_in_the_pool_fails() {
    let (server, _) = deployed(&[]);
    let web = start(
        &server,
        &|pool| format!("{pool}\nphp_admin_value[opcache.enable] = 1\n"),
        &unchanged,
    );
    let line = assert_fails(
        &doctor_pool(&server),
        "opcache",
        &format!(
            "php_admin_value[opcache.enable] = 1 in pool `app` ({}/php-fpm.conf:",
            web_dir(&server).display()
        ),
        "remove the line",
    );
    assert!(
        line.contains("Zend OPcache can't be temporary enabled"),
        "{line}"
    );
    web.stop_leaving_nothing();
}

/// What php-fpm was started with (`-d opcache.validate_timestamps=0` from opcache.ini) is
/// overridden by the pool: doctor reports what the running pool says.
#[test]
fn opcache_settings_are_those_of_the_running_pool() {
    let (server, _) = deployed(&[]);
    let web = start(
        &server,
        &|pool| {
            format!(
                "{}\nphp_admin_value[opcache.validate_timestamps] = 1\n\
                 php_admin_value[opcache.revalidate_freq] = 60\n",
                pool.replace("php_admin_value[opcache.validate_timestamps] = 0", "")
            )
        },
        &document_root,
    );
    let out = doctor_pool(&server);
    let line = assert_fails(
        &out,
        "opcache",
        "opcache.revalidate_freq=60s with paths through `latest`",
        "$realpath_root",
    );
    assert!(line.contains("realpath_cache_ttl=600s"), "{line}");
    web.stop_leaving_nothing();
}

/// What a deploy user logged in over ssh runs: doctor with a login's PATH, which leaves out
/// /usr/sbin where Debian puts nginx, and without the root `nginx -T` needs to open its pid and
/// log files. doctor finds nginx all the same, reads the files itself, and names the one it may
/// not read with a warning rather than failing; the site it can read is checked as usual.
#[test]
fn doctor_as_the_deploy_user_finds_nginx_in_sbin_and_reads_what_it_may() {
    let Some(user) = DeployUser::create_as_root() else {
        return;
    };
    let server = Server::builder().config("shared", "[uploads/]").install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    hand_over(&server, &clone, user.uid, user.gid);
    let secret = web_dir(&server).join("secret.conf");
    fs::create_dir_all(web_dir(&server)).unwrap();
    fs::write(
        &secret,
        "# a file only root may read, as a key's or a password's\n",
    )
    .unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let web = start(
        &server,
        // The deploy user reaches the pool as a member of its socket's group would.
        &|pool| format!("{pool}\nlisten.mode = 0666\n"),
        &|site| format!("{site}\ninclude {};\n", secret.display()),
    );
    let conf = web_dir(&server).join("nginx.conf");
    let pool = web_dir(&server).join("php-fpm.conf");
    let out = user.run(
        server
            .command(BIN)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .arg("doctor")
            .arg("--root")
            .arg(&server.root)
            .arg("--nginx-config")
            .arg(&conf)
            .arg("--fpm-pool")
            .arg(&pool),
    );
    let said = text(&out);
    let (line, fix) = finding(
        &out,
        "warning",
        "nginx",
        &format!("cannot read {}", secret.display()),
    );
    assert!(
        line.contains("`/usr/sbin/nginx -T` needs root"),
        "{line}\n{said}"
    );
    assert!(fix.contains("run doctor as root"), "{fix}");
    finding(
        &out,
        "ok",
        "nginx",
        &format!("has `root {}/latest/public`", root_of(&server)),
    );
    assert!(!said.contains("not installed"), "{said}");
    let nginx_fails: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("FAIL     nginx"))
        .collect();
    assert_eq!(nginx_fails, Vec::<&str>::new(), "{said}");
    web.stop_leaving_nothing();
}

/// The set-up the shipped pool replaced: php-fpm running as the deploy user, who owns the
/// builds. Every page works, and PHP can write into every build.
#[test]
fn a_pool_running_as_the_deploy_user_fails() {
    let Some(user) = crate::harness::users::DeployUser::create_as_root() else {
        return;
    };
    let (server, _) = deployed_at(&[], None);
    let clone = server.empty_clone("unused");
    crate::harness::users::hand_over(&server, &clone, user.uid, user.gid);
    let name = user.name.clone();
    let web = start(
        &server,
        &|pool| {
            pool.replace("user = www-data", &format!("user = {name}"))
                .replace("group = www-data", &format!("group = {name}"))
        },
        &unchanged,
    );
    let out = doctor_pool(&server);
    let line = assert_fails(
        &out,
        "web access",
        &format!(
            "the pool's user {name}:{name} (uid {}, groups {name}) is the owner of {} (the \
             deploy user): PHP can write into every build",
            user.uid,
            server.root.display()
        ),
        "`user = www-data` and `group = www-data` in its pool file",
    );
    let (_, fix) = finding(&out, "FAIL", "web access", "PHP can write into every build");
    assert!(fix.contains("--web-user www-data"), "{fix}");
    assert!(line.contains("writable, e.g. "), "{line}");
    // Its pages work: nothing else is wrong.
    finding(
        &out,
        "ok",
        "web access",
        "can reach and read the live build",
    );
    web.stop_leaving_nothing();
}

/// The usual advice for a cache the app cannot write, `chmod 777`, in the live build: the pool
/// as www-data, but a directory of the build open to it.
#[test]
fn a_live_build_directory_the_pool_can_write_fails() {
    let (server, build) = deployed(&[]);
    let web = start(&server, &unchanged, &unchanged);
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    let build_dir = server.build_path(&build);
    let cache = build_dir.join("cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let line = assert_fails(
        &doctor_pool(&server),
        "web access",
        "can write 1 path(s) of the live build",
        &format!("`chmod -R go-w {}`", build_dir.display()),
    );
    assert!(
        line.contains(&format!(
            "{} dir, mode 777 owner root:root",
            cache.display()
        )),
        "{line}"
    );
    // The fix it gives is enough.
    server.run_fix(&format!("chmod -R go-w {}", build_dir.display()));
    assert_web_clean(&doctor_pool(&server));
    web.stop_leaving_nothing();
}

/// A deployed root whose shared/ holds the file `name` (written with `content` before the
/// first deploy), then given to www-data by `install --web-user www-data`.
fn shared_file_given_to_www_data(name: &str, content: &str) -> (Server, PathBuf) {
    let server = Server::builder()
        .config("shared", &format!("[uploads/, {name}]"))
        .install();
    fs::create_dir_all(server.root.join("shared")).unwrap();
    let file = server.root.join("shared").join(name);
    fs::write(&file, content).unwrap();
    server.clone_fixture("example-app").deploy_version("v1");
    fs::set_permissions(server.base(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = server.run_install(&server.repo, &["--web-user", "www-data"]);
    crate::harness::assert_success(&out, "install --web-user www-data");
    (server, file)
}

/// A shared file the pool only reads, a `.env`: 0640 for www-data's group (as install
/// --web-user leaves it) passes; 0600 fails, with the fix.
#[test]
fn a_shared_env_the_pool_cannot_read_fails() {
    let (server, env) = shared_file_given_to_www_data(".env", "APP_KEY=secret\n");
    let meta = fs::metadata(&env).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, 33));
    let web = start(&server, &unchanged, &unchanged);
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    finding(
        &out,
        "ok",
        "shared",
        &format!(".env ({}) is readable", env.display()),
    );

    fs::set_permissions(&env, fs::Permissions::from_mode(0o600)).unwrap();
    let line = assert_fails(
        &doctor_pool(&server),
        "shared",
        ".env is not readable by the pool's user www-data:www-data",
        &format!("`chgrp www-data {0} && chmod 640 {0}`", env.display()),
    );
    assert!(line.contains("mode 600 owner root:www-data"), "{line}");
    web.stop_leaving_nothing();
}

/// A shared file that is not a secret is there because the app writes it (an SQLite
/// database): install --web-user makes it 0664 for www-data's group, which passes; one the
/// pool can only read fails, as a shared directory it cannot write does.
#[test]
fn a_shared_database_the_pool_cannot_write_fails() {
    let (server, db) = shared_file_given_to_www_data("database.sqlite", "");
    let meta = fs::metadata(&db).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o664, 33));
    let web = start(&server, &unchanged, &unchanged);
    let out = doctor_pool(&server);
    assert_web_clean(&out);
    finding(
        &out,
        "ok",
        "shared",
        &format!("database.sqlite ({}) is writable", db.display()),
    );

    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    let line = assert_fails(
        &doctor_pool(&server),
        "shared",
        "database.sqlite is not writable by the pool's user www-data:www-data",
        &format!("`chgrp -R www-data {0} && chmod -R g+w {0}", db.display()),
    );
    assert!(line.contains("mode 644 owner root:www-data"), "{line}");
    web.stop_leaving_nothing();
}

/// A pool in the deploy user's group (`group = deploy`, to read builds closed to others),
/// and a deploy user with the umask 002 that README's Operating suggests for shared/: every
/// directory of the build is group-writable, so PHP can write into it though the pool is not
/// the deploy user. Doctor asks with the pool's groups, so it fails this too.
#[test]
fn a_pool_in_the_deploy_users_group_with_builds_made_under_umask_002_fails() {
    let Some(user) = crate::harness::users::DeployUser::create_as_root() else {
        return;
    };
    let server = Server::builder().config("shared", "[uploads/]").install();
    let clone = server.clone_fixture("example-app");
    crate::harness::users::hand_over(&server, &clone, user.uid, user.gid);
    clone.set_version("v1");
    clone.commit("v1");
    user.push_with_umask(&server, &clone, 0o002).success();
    let build = server.build_path(&server.live().expect("a live build"));
    let group_writable: Vec<String> = walkdir::WalkDir::new(&build)
        .into_iter()
        .flatten()
        .filter(|e| !e.path_is_symlink() && e.metadata().unwrap().mode() & 0o020 != 0)
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(
        !group_writable.is_empty(),
        "nothing in {} is group-writable",
        build.display()
    );
    let name = user.name.clone();
    let web = start(
        &server,
        &|pool| pool.replace("group = www-data", &format!("group = {name}")),
        &unchanged,
    );
    let line = assert_fails(
        &doctor_pool(&server),
        "web access",
        &format!("the pool's user www-data:{name}"),
        &format!("`chmod -R go-w {}`", build.display()),
    );
    assert!(line.contains("path(s) of the live build"), "{line}");
    web.stop_leaving_nothing();
}

/// `include conf.d/*.conf;` inside a file of conf.d/ is a loop nginx itself dies of (it
/// segfaults): doctor read each of n such files in every order (n!·16 levels) and never
/// finished. It must say which file includes itself, and end.
#[test]
fn doctor_names_an_nginx_include_loop_and_ends() {
    let server = Server::install();
    let conf = server.base().join("nginx");
    fs::create_dir_all(conf.join("conf.d")).unwrap();
    for i in 0..8 {
        fs::write(
            conf.join(format!("conf.d/{i}.conf")),
            format!("include {}/conf.d/*.conf;\n", conf.display()),
        )
        .unwrap();
    }
    fs::write(
        conf.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{ include {}/conf.d/*.conf; server {{ listen 80; root {}/latest/public; }} }}\n",
            conf.display(),
            server.root.display()
        ),
    )
    .unwrap();
    let mut child = server
        .command(BIN)
        .arg("doctor")
        .arg("--root")
        .arg(&server.root)
        .arg("--nginx-config")
        .arg(conf.join("nginx.conf"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("doctor still reading nginx's includes after a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "FAIL     nginx: {}/conf.d/0.conf includes itself",
            conf.display()
        )),
        "{said}"
    );
    assert!(!out.status.success());
}

/// A pool listening on 127.0.0.1:9000 is not reached at [::1]:9000 (two sockets): doctor took
/// them for one pool and then blamed php-fpm for not running; it must say no pool listens
/// there, and name the listen php-fpm understands for IPv6 (`[::1]:9000`, not `::1:9000`).
#[test]
fn doctor_tells_an_ipv4_pool_from_an_ipv6_fastcgi_pass() {
    let server = Server::install();
    let dir = server.base().join("web");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("app.conf"),
        "[app]\nuser = www-data\ngroup = www-data\nlisten = 127.0.0.1:9000\n",
    )
    .unwrap();
    fs::write(
        dir.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{ server {{ listen 80; root {}/latest/public;\n\
             location ~ \\.php$ {{ fastcgi_pass [::1]:9000; }} }} }}\n",
            server.root.display()
        ),
    )
    .unwrap();
    let out = server
        .command(BIN)
        .arg("doctor")
        .arg("--root")
        .arg(&server.root)
        .arg("--nginx-config")
        .arg(dir.join("nginx.conf"))
        .arg("--fpm-pools")
        .arg(dir.join("*.conf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("FAIL     php-fpm pool: no pool in"), "{said}");
    assert!(said.contains("`listen = [::1]:9000`"), "{said}");
}

/// An nginx configuration nested 100,000 blocks deep (nginx -T refuses it, so doctor reads the
/// file itself) overflowed doctor's stack: it aborted instead of reporting. It must end with
/// findings, saying what it did not read.
#[test]
fn doctor_survives_an_nginx_configuration_nested_without_end() {
    let server = Server::install();
    let conf = server.base().join("deep.conf");
    let depth = 100_000;
    fs::write(
        &conf,
        format!(
            "events {{}}\nhttp {{ {}{} }}\n",
            "location / { ".repeat(depth),
            "}".repeat(depth)
        ),
    )
    .unwrap();
    let out = server.run(&["doctor", "--nginx-config", conf.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("blocks nested more than 100 deep"), "{said}");
}

/// `--nginx-config` given relative to where doctor runs: nginx -T read it relative to its own
/// prefix (/usr/share/nginx), failed, and doctor said so, or read another file if one was there.
#[test]
fn doctor_hands_nginx_the_configuration_it_was_given() {
    let server = Server::install();
    let dir = server.base().join("web");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("nginx.conf"), "events {}\nhttp { }\n").unwrap();
    let out = server
        .command(BIN)
        .args(["doctor", "--nginx-config", "web/nginx.conf", "--root"])
        .arg(&server.root)
        .current_dir(server.base())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("(as `nginx -T` prints it)"), "{said}");
}
