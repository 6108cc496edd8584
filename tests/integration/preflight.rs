//! `preflight:` with real php-fpm (and nginx) on 127.0.0.1: a build that answers 500, a PHP
//! fatal error or nothing in time never goes live, and no request to the live site fails
//! meanwhile; a good build passes and goes live.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use crate::harness::web::{WebServer, get};
use crate::harness::{DevClone, Server, exclusive};
use crate::web::{APP_NAME, Load};

/// The example app deployed once (v1), with php-fpm and nginx serving it.
fn live_v1(server: &Server, edit_pool: &dyn Fn(String) -> String) -> (DevClone, String, WebServer) {
    let clone = server.clone_fixture("example-app");
    let v1 = clone.deploy_version("v1");
    let web = WebServer::start_edited(
        &server.root,
        &server.base().join("web"),
        edit_pool,
        &|site| site,
    );
    assert_serves(&web, "v1");
    (clone, v1, web)
}

/// The live site's home page answers 200 with `version`.
#[track_caller]
fn assert_serves(web: &WebServer, version: &str) {
    let (status, body) = get(&web.url("/"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("Hello from the example app {version}\n")),
        "{body}"
    );
}

/// `public/index.php` of the example app with `php` run first.
fn prepend_to_index(clone: &DevClone, php: &str) {
    let index = fs::read_to_string(crate::harness::fixture("example-app").join("public/index.php"))
        .unwrap();
    let rest = index.strip_prefix("<?php").unwrap();
    clone.write("public/index.php", &format!("<?php\n{php}\n{rest}"));
}

#[test]
fn a_build_that_answers_500_never_goes_live_and_the_push_names_the_url_and_its_answer() {
    let _heavy = exclusive();
    let server = Server::install();
    let (clone, v1, web) = live_v1(&server, &|pool| pool);
    server.set_config(
        "preflight",
        &format!(
            "{{fastcgi: '{}', urls: [/, '/health?deep=1']}}",
            web.fastcgi()
        ),
    );
    // Generated from the ways a PHP app fails: each URL of the list, each kind of failure.
    let failures = [
        (
            "throw new RuntimeException('the database is gone');",
            "500 Internal Server Error",
        ),
        (
            "undefined_function_of_the_new_build();",
            "500 Internal Server Error",
        ),
        (
            "http_response_code(503); echo \"down for maintenance\\n\"; exit;",
            "503 Service Unavailable",
        ),
    ];
    for (i, (php, answered)) in failures.iter().enumerate() {
        for url in ["/", "/health?deep=1"] {
            clone.set_version(&format!("v2-{i}"));
            // Only this URL fails: the others answer as before.
            prepend_to_index(
                &clone,
                &format!("if ($_SERVER['REQUEST_URI'] === '{url}') {{ {php} }}"),
            );
            clone.commit(&format!("breaks {url}"));
            let before = server.state();
            clone
                .push_main()
                .deploy_failed()
                .stderr_has("==> preflight")
                .stderr_has(&format!(
                    "preflight failed (the new build never went live): GET {url} answered {answered}"
                ))
                .stderr_has(if i == 2 { "down for maintenance" } else { "" });
            server.assert_unchanged_since_in(&before, php);
            assert_eq!(server.live_revision(), v1);
            assert_serves(&web, "v1");
        }
    }
    // What preflight sent reached PHP the way nginx sends it: the new build's real path.
    let log = fs::read_to_string(web.dir().join("php.log")).unwrap();
    assert!(
        log.contains("the database is gone in /")
            && log.contains("/builds/")
            && !log.contains("/latest/"),
        "{log}"
    );
    web.stop_leaving_nothing();
}

#[test]
fn a_good_build_passes_preflight_and_goes_live_while_opcache_keeps_the_live_build_apart() {
    let _heavy = exclusive();
    let server = Server::install();
    let (clone, _v1, web) = live_v1(&server, &|pool| pool);
    // Defaults to reset_opcache's pool and the home page.
    server.set_config("reset_opcache", &web.fastcgi());
    server.set_config("preflight", "{}");
    // Run after preflight compiled the new build's index.php into opcache
    // (validate_timestamps=0), before the switch: what the live site serves then.
    let seen = server.base().join("seen-before-the-switch");
    server.set_config(
        "release",
        &format!(
            "[\"php -r 'echo file_get_contents(\\\"{}\\\");' > {}\"]",
            web.url("/"),
            seen.display()
        ),
    );
    clone.set_version("v2");
    // The front controller itself differs: the very file opcache would mix up.
    prepend_to_index(&clone, "echo \"index of v2\\n\";");
    let v2 = clone.commit("v2");
    let push = clone.push_main().success();
    let line = push.step_line("preflight");
    assert!(
        line.contains(&format!(
            "/ 200 OK from the php-fpm pool at {}",
            web.fastcgi()
        )),
        "{line}"
    );
    let seen = fs::read_to_string(&seen).unwrap();
    assert!(
        seen.contains("Hello from the example app v1\n") && !seen.contains("index of v2"),
        "the live site served {seen:?} between preflight and the switch"
    );
    assert_eq!(server.live_revision(), v2);
    assert_serves(&web, "v2");
    assert!(get(&web.url("/")).1.starts_with("index of v2\n"));
    web.stop_clean();
}

#[test]
fn a_page_that_answers_nothing_within_the_timeout_fails_the_push() {
    let _heavy = exclusive();
    let server = Server::install();
    // The pool ends the sleeping request itself, so that stopping it need not wait.
    let (clone, v1, web) = live_v1(&server, &|pool| {
        format!("{pool}\nrequest_terminate_timeout = 3s\n")
    });
    server.set_config(
        "preflight",
        &format!("{{fastcgi: '{}', timeout: 1}}", web.fastcgi()),
    );
    prepend_to_index(&clone, "sleep(30);");
    clone.commit("a slow page");
    let before = server.state();
    let started = std::time::Instant::now();
    clone.push_main().deploy_failed().stderr_has(&format!(
        "GET / to the php-fpm pool at {}: no answer within 1s",
        web.fastcgi()
    ));
    assert!(started.elapsed() < Duration::from_secs(20));
    server.assert_unchanged_since(&before);
    assert_eq!(server.live_revision(), v1);
    assert_serves(&web, "v1");
    web.stop_leaving_nothing();
}

#[test]
fn under_load_a_push_of_a_fatal_error_fails_no_request() {
    let _heavy = exclusive();
    let server = Server::builder().config("shared", "[.env]").install();
    fs::create_dir_all(server.root.join("shared")).unwrap();
    fs::write(
        server.root.join("shared/.env"),
        format!("APP_NAME={APP_NAME}\n"),
    )
    .unwrap();
    // The framework's front controller, strict as in production: every request is checked.
    let clone = server.clone_fixture("framework");
    clone.set_version("good");
    let good = clone.commit("good");
    clone.push_main().success();
    let web = WebServer::start(&server.root, &server.base().join("web"));
    server.set_config(
        "preflight",
        &format!("{{fastcgi: '{}', urls: [/]}}", web.fastcgi()),
    );
    let load = Load::start(&web.url("/"), 4);
    crate::harness::wait_until(
        Duration::from_secs(30),
        || load.traffic.lock().unwrap().samples.len() >= 20,
        || format!("no answers under load: {}", web.error_log()),
    );
    let index = fs::read_to_string(clone.path.join("public/index.php")).unwrap();
    clone.write(
        "public/index.php",
        &index.replace(
            "declare(strict_types=1);",
            "declare(strict_types=1);\n\nfunction fail(): void {}",
        ),
    );
    clone.set_version("fatal");
    clone.commit("a fatal error: fail() declared twice");
    clone
        .push_main()
        .deploy_failed()
        .stderr_has("preflight failed (the new build never went live): GET / answered 500");
    let traffic = load.finish();
    traffic.assert_none_failed();
    assert!(traffic.samples.len() >= 20);
    let versions = HashMap::from([(good.clone(), "good".to_string())]);
    traffic.assert_versions_match(&versions);
    assert_eq!(server.live_revision(), good);
    // The pool was asked, and the live build answered every request.
    let (status, body) = get(&web.url("/"));
    assert_eq!(
        (status, body.lines().next()),
        (200, Some("framework app good"))
    );
    web.stop_leaving_nothing();
}

#[test]
fn a_host_whose_preflight_fails_stops_every_switch() {
    let _heavy = exclusive();
    let g = crate::group::Group::with_app(1, |primary| primary.clone_fixture("example-app"));
    g.clone.deploy_version("v1");
    let v1 = g.clone.head();
    // Each server asks its own pool: the same urls, a fastcgi of its own.
    let webs: Vec<WebServer> = g
        .servers()
        .map(|server| {
            let web = WebServer::start(&server.root, &server.base().join("web"));
            server.set_config(
                "preflight",
                &format!("{{fastcgi: '{}', urls: [/health]}}", web.fastcgi()),
            );
            web
        })
        .collect();
    // The new build fails on web2 alone (a marker in its deploy root, three levels above
    // builds/<name>/public/).
    clone_breaks_where_marked(&g.clone);
    fs::write(g.hosts[0].root.join("preflight-fails"), "").unwrap();
    let before = g.state();
    let push = g
        .clone
        .push_main()
        .deploy_failed()
        .stderr_has("web2: ")
        .stderr_has("preflight failed (the new build never went live): GET /health answered 500")
        .stderr_lacks("switched 2 servers");
    let errors = crate::group::errors(&push);
    assert!(errors.contains("web2: "), "{errors}");
    g.assert_unchanged_since(&before);
    g.assert_all_live_on(&v1);
    for web in &webs {
        assert_serves(web, "v1");
    }
    // Without the marker the same commit passes everywhere and goes live together.
    fs::remove_file(g.hosts[0].root.join("preflight-fails")).unwrap();
    g.clone
        .push(&["HEAD:replay"])
        .success()
        .stderr_has("==> preflight");
    let v2 = g.clone.head();
    g.assert_all_live_on(&v2);
    for web in webs {
        assert_serves(&web, "v2");
        web.stop_leaving_nothing();
    }
}

/// Commits v2, whose pages answer 500 on a server whose deploy root holds `preflight-fails`.
fn clone_breaks_where_marked(clone: &DevClone) {
    clone.set_version("v2");
    prepend_to_index(
        clone,
        "if (file_exists(dirname(__DIR__, 3) . '/preflight-fails')) { http_response_code(500); exit; }",
    );
    clone.commit("v2, failing where marked");
}

#[test]
fn a_pool_that_cannot_be_reached_fails_the_push_before_anything_changes() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    let v1 = clone.deploy_version("v1");
    let socket = server.base().join("nobody-listens.sock");
    server.set_config(
        "preflight",
        &format!("{{fastcgi: 'unix:{}'}}", socket.display()),
    );
    clone.set_version("v2");
    clone.commit("v2");
    let before = server.state();
    clone.push_main().deploy_failed().stderr_has(&format!(
        "preflight failed (the new build never went live): GET / to the php-fpm pool at unix:{}: \
         connect to {}",
        socket.display(),
        socket.display()
    ));
    server.assert_unchanged_since(&before);
    assert_eq!(server.live_revision(), v1);
}
