//! `reset_opcache:` with real nginx and php-fpm on 127.0.0.1, set up the way that needs it:
//! nginx hands PHP `$document_root` (the unresolved `latest/public`), opcache on with
//! `validate_timestamps=0`, and `pm = static` with several workers, each warmed with the old
//! build. Right after the push returns, every worker must serve the new build.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::web::WebServer;
use crate::harness::{DevClone, Server, exclusive, fixture};

const WORKERS: usize = 4;

/// Where php-fpm listens, and so where nginx passes requests and the hook resets.
enum Listen {
    Unix,
    Tcp(u16),
}

/// The shipped files changed into the set-up `reset_opcache:` is for: `$document_root`
/// instead of `$realpath_root`, and a fixed number of workers.
fn start_document_root_web(server: &Server, listen: &Listen) -> (WebServer, String) {
    let dir = server.base().join("web");
    let socket = dir.join("fpm.sock").display().to_string();
    let (fpm_listen, address) = match listen {
        Listen::Unix => (socket.clone(), format!("unix:{socket}")),
        Listen::Tcp(port) => (
            format!("127.0.0.1:{port}"),
            format!("tcp://127.0.0.1:{port}"),
        ),
    };
    let pool = |pool: String| {
        pool.replace("pm = dynamic", "pm = static")
            .replace(
                "pm.max_children = 16",
                &format!("pm.max_children = {WORKERS}"),
            )
            .replace(
                &format!("listen = {socket}"),
                &format!("listen = {fpm_listen}"),
            )
    };
    let site = |site: String| {
        site.replace(
            "fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;",
            "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;",
        )
        .replace(
            "fastcgi_param DOCUMENT_ROOT $realpath_root;",
            "fastcgi_param DOCUMENT_ROOT $document_root;",
        )
        .replace(
            &format!("fastcgi_pass unix:{socket};"),
            &format!(
                "fastcgi_pass {};",
                match listen {
                    Listen::Unix => format!("unix:{socket}"),
                    Listen::Tcp(_) => fpm_listen.clone(),
                }
            ),
        )
    };
    let web = WebServer::start_edited(&server.root, &dir, &pool, &site);
    let conf = fs::read_to_string(dir.join("nginx.conf")).unwrap();
    assert!(
        conf.contains("$document_root$fastcgi_script_name") && !conf.contains("$realpath_root$"),
        "{conf}"
    );
    (web, address)
}

/// The example app, its page also naming the php-fpm worker that rendered it.
fn clone_app(server: &Server) -> DevClone {
    let clone = server.clone_fixture("example-app");
    let index = fs::read_to_string(fixture("example-app").join("public/index.php")).unwrap();
    clone.write(
        "public/index.php",
        &format!("{index}echo 'worker: ', getmypid(), \"\\n\";\n"),
    );
    clone.commit("the page names its worker");
    clone
}

/// Requests the page until every worker has answered (at least `rounds` times each); returns
/// what each worker showed: its versions and builds.
fn serve(web: &WebServer, rounds: usize) -> BTreeMap<String, BTreeSet<String>> {
    let agent = crate::harness::web::agent();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    // A worker busy with a slow request answers once it is done.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < until {
        let mut response = agent.get(&web.url("/")).call().unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let line = |prefix: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in {body:?}"))
                .to_string()
        };
        let worker = line("worker: ");
        let build = line("build: ");
        assert_eq!(line("part: "), build, "one request, two builds: {body}");
        let shown = format!("{} {}", line("Hello from the example app "), &build[..7]);
        seen.entry(worker.clone()).or_default().insert(shown);
        *answers.entry(worker).or_default() += 1;
        if answers.len() == WORKERS && answers.values().all(|n| *n >= rounds) {
            return seen;
        }
    }
    panic!(
        "not every worker answered: {answers:?}\n{}",
        web.error_log()
    );
}

/// Every worker showed `version` of `commit`, and nothing else.
#[track_caller]
fn assert_all_serve(seen: &BTreeMap<String, BTreeSet<String>>, version: &str, commit: &str) {
    let want = BTreeSet::from([format!("{version} {}", &commit[..7])]);
    for (worker, shown) in seen {
        assert_eq!(shown, &want, "worker {worker}: {seen:?}");
    }
    assert_eq!(seen.len(), WORKERS, "{seen:?}");
}

/// Deploys v1 and warms every worker with it; returns v1's commit.
fn deploy_v1_and_warm(server: &Server, clone: &DevClone, web: &WebServer) -> String {
    let v1 = clone.deploy_version("v1");
    assert_eq!(server.live_revision(), v1);
    assert_all_serve(&serve(web, 3), "v1", &v1);
    v1
}

#[test]
fn without_reset_opcache_every_worker_keeps_serving_the_old_build() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    let (web, _) = start_document_root_web(&server, &Listen::Unix);
    deploy_v1_and_warm(&server, &clone, &web);
    let v2 = clone.deploy_version("v2");
    assert_eq!(server.live_revision(), v2);
    // latest/ is v2 on disk, yet opcache keeps v1 under the same path: the control that shows
    // the tests below can fail.
    let seen = serve(&web, 3);
    assert!(
        seen.values()
            .flatten()
            .all(|shown| shown.starts_with("v1 ")),
        "{seen:?}"
    );
    web.stop_clean();
}

#[test]
fn with_reset_opcache_every_worker_serves_the_new_build_right_after_the_push_and_the_rollback() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    let (web, address) = start_document_root_web(&server, &Listen::Unix);
    let v1 = deploy_v1_and_warm(&server, &clone, &web);
    server.set_config("reset_opcache", &address);

    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main().success();
    let line = push.step_line("opcache reset");
    assert!(
        line.contains(&format!("php-fpm pool at {address}")),
        "{line}"
    );
    assert_all_serve(&serve(&web, 3), "v2", &v2);

    // Going back is a switch too, and PHP must follow it.
    let push = clone.push(&[":rollback"]).success();
    let line = push.step_line("opcache reset");
    assert!(
        line.contains(&format!("php-fpm pool at {address} (PHP 8.")),
        "{line}"
    );
    assert_eq!(server.live_revision(), v1);
    assert_all_serve(&serve(&web, 3), "v1", &v1);

    // And `atomdeploy-hook rollback --to` on the server, forward again.
    let v2_build = server.builds().into_iter().max().unwrap();
    let out = server.run(&["rollback", "--to", &v2_build]);
    crate::harness::assert_success(&out, "rollback --to");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("opcache reset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_serve(&serve(&web, 3), "v2", &v2);
    web.stop_clean();
}

#[test]
fn the_tcp_form_resets_the_pool_too() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (web, address) = start_document_root_web(&server, &Listen::Tcp(port));
    assert_eq!(address, format!("tcp://127.0.0.1:{port}"));
    deploy_v1_and_warm(&server, &clone, &web);
    server.set_config("reset_opcache", &address);
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main().success();
    assert!(
        push.step_line("opcache reset")
            .contains(&format!("php-fpm pool at {address}")),
        "{}",
        push.stderr
    );
    assert_all_serve(&serve(&web, 3), "v2", &v2);
    web.stop_clean();
}

#[test]
fn a_wrong_socket_fails_the_push_clearly_and_the_new_build_stays_live() {
    let server = Server::install();
    let clone = clone_app(&server);
    let v1 = clone.deploy_version("v1");
    let socket = server.base().join("no-such-fpm.sock");
    server.set_config("reset_opcache", &format!("unix:{}", socket.display()));

    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main();
    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains(&format!(
            "opcache reset failed: cannot reach the php-fpm pool at unix:{}",
            socket.display()
        )) && error.contains("No such file or directory")
            && error.contains("is live, but PHP may still run the previous build's code"),
        "{error}"
    );
    assert!(
        push.stderr.contains("the deploy FAILED") && push.stderr.contains("remote: deployed "),
        "{}",
        push.stderr
    );
    // Not rolled back: the build is live, as after a failing after_switch.
    assert_eq!(server.live_revision(), v2);
    let last = server.deploy_log().pop().unwrap();
    assert_eq!(last["outcome"], "deployed", "{last}");

    // A rollback resets too, and says so when it cannot.
    let push = clone.push(&[":rollback"]);
    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains("opcache reset failed: cannot reach the php-fpm pool at unix:")
            && error.contains("is live, but PHP may still run the code of builds/"),
        "{error}"
    );
    assert_eq!(server.live_revision(), v1);
    server.assert_nothing_left_behind();
}

#[test]
fn a_pool_with_opcache_off_is_a_warning_not_a_failure() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    let dir = server.base().join("web");
    let socket = dir.join("fpm.sock");
    let web = WebServer::start_edited(
        &server.root,
        &dir,
        &|pool| format!("{pool}\nphp_admin_value[opcache.enable] = 0\n"),
        &|site| site,
    );
    server.set_config("reset_opcache", &format!("unix:{}", socket.display()));
    let push = clone.push_main().success();
    assert!(
        push.stderr.contains(&format!(
            "warning: opcache is disabled in the php-fpm pool at unix:{}",
            socket.display()
        )),
        "{}",
        push.stderr
    );
    assert!(push.stderr.contains("opcache reset"), "{}", push.stderr);
    let script = server.root.join(".atomdeploy/opcache-reset-1.php");
    assert_eq!(
        fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o644,
        "the pool's user must be able to read it"
    );
    assert!(Path::new(&script).is_file());
    web.stop_clean();
}

/// A request that runs until `hold_ms` after `latest` moves: opcache restarts only once no
/// worker is inside a request, and until then every worker compiles through its own realpath
/// cache, which still maps `latest/` to the old build.
fn slow_request_across_the_switch(
    web: &WebServer,
    started: &Path,
    hold_ms: u64,
) -> std::thread::JoinHandle<String> {
    let url = web.url(&format!(
        "/slow.php?hold_ms={hold_ms}&started={}",
        started.display()
    ));
    let handle = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut response = agent.get(&url).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    });
    crate::harness::wait_until(
        Duration::from_secs(20),
        || started.exists(),
        || "the slow request never started".into(),
    );
    handle
}

#[test]
fn a_request_running_across_the_switch_is_waited_for_and_past_the_limit_reported() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    clone.write(
        "public/slow.php",
        "<?php\n// Runs until latest/ moves, then hold_ms longer.\n\
         touch($_GET['started']);\n\
         $root = dirname(__DIR__, 3);\n\
         $start = readlink(\"$root/latest\");\n\
         $until = microtime(true) + 60;\n\
         while (readlink(\"$root/latest\") === $start && microtime(true) < $until) {\n    usleep(10000);\n}\n\
         usleep((int) $_GET['hold_ms'] * 1000);\n\
         echo \"slow done \", getmypid(), \"\\n\";\n",
    );
    clone.commit("a slow page");
    let (web, address) = start_document_root_web(&server, &Listen::Unix);
    deploy_v1_and_warm(&server, &clone, &web);
    server.set_config("reset_opcache", &address);

    // Ends 1 s after the switch: the hook waits for the restart, so the push returns only
    // once every worker will compile afresh.
    let started = server.base().join("slow-1");
    let slow = slow_request_across_the_switch(&web, &started, 1000);
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main().success().stderr_lacks("pending");
    // It waited for the slow request to end, about 1 s after the switch.
    let line = push.step_line("opcache reset");
    let took: f64 = line
        .split_once("s: ")
        .and_then(|(took, _)| took.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(took >= 0.5, "{line}");
    assert_all_serve(&serve(&web, 3), "v2", &v2);
    let slow_said = slow.join().unwrap();
    assert!(slow_said.starts_with("slow done "), "{slow_said}");

    // Ends 7 s after the switch, past the hook's limit: the push says what is going on.
    let started = server.base().join("slow-2");
    let slow = slow_request_across_the_switch(&web, &started, 7000);
    clone.set_version("v3");
    let v3 = clone.commit("v3");
    let push2 = clone.push_main().success();
    assert!(
        push2.stderr.contains(&format!(
            "warning: the opcache restart in the php-fpm pool at {address} was still pending after 5s"
        )),
        "{}",
        push2.stderr
    );
    let slow_said = slow.join().unwrap();
    assert!(slow_said.starts_with("slow done "), "{slow_said}");
    assert_all_serve(&serve(&web, 3), "v3", &v3);
    web.stop_clean();
}

#[test]
fn a_pool_user_that_cannot_reach_the_script_is_told_what_to_fix() {
    let _heavy = exclusive();
    let server = Server::install();
    let clone = clone_app(&server);
    clone.deploy_version("v1");
    // A pool running as nobody cannot enter a state folder that is root's and 0700, as a
    // www-data pool cannot enter a deploy user's 0700 home.
    fs::set_permissions(
        server.root.join(".atomdeploy"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let dir = server.base().join("web");
    let socket = dir.join("fpm.sock");
    let web = WebServer::start_edited(
        &server.root,
        &dir,
        &|pool| {
            pool.replace("user = root", "user = nobody")
                .replace("group = root", "group = nogroup")
        },
        &|site| site,
    );
    server.set_config("reset_opcache", &format!("unix:{}", socket.display()));
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let push = clone.push_main();
    let error = push.remote_line("error: ").expect("an error line");
    let script = server.root.join(".atomdeploy/opcache-reset-1.php");
    assert!(
        error.contains(&format!(
            "opcache reset failed: the php-fpm pool at unix:{} did not run {} (it answered 404 Not Found: File not found.; stderr: Primary script unknown)",
            socket.display(),
            script.display()
        )) && error.contains("the pool's user must be able to enter every directory above the script"),
        "{error}"
    );
    assert_eq!(server.live_revision(), v2);
    web.stop_leaving_nothing();
}

#[test]
fn a_pool_that_never_answers_holds_the_deploy_five_seconds_at_most() {
    let server = Server::install();
    let clone = clone_app(&server);
    clone.deploy_version("v1");
    // Connections complete in the kernel's backlog, and nothing ever answers them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    server.set_config("reset_opcache", &format!("tcp://127.0.0.1:{port}"));
    clone.set_version("v2");
    let v2 = clone.commit("v2");
    let started = std::time::Instant::now();
    let push = clone.push_main();
    let took = started.elapsed();
    let error = push.remote_line("error: ").expect("an error line");
    assert!(
        error.contains(&format!(
            "opcache reset failed: cannot reach the php-fpm pool at tcp://127.0.0.1:{port}: "
        )) && error.contains("5s"),
        "{error}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(server.live_revision(), v2);
    drop(silent);
}
