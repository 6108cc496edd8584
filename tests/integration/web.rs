//! Zero downtime, proven with real nginx and php-fpm under load: requests never fail and
//! never mix two builds while deploys and rollbacks switch `latest` underneath them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::harness::web::{WebServer, get_with_header, living, naming};
use crate::harness::{Server, exclusive, wait_until};

const CLIENTS: usize = 4;
const DEPLOYS: usize = 30;
const ROLLBACKS: usize = 10;

/// One answer: when its request was sent and when the answer came, the version and build it
/// showed, and the backend that answered (a balancer's `X-Upstream`; empty without one).
pub(crate) struct Sample {
    pub(crate) sent: SystemTime,
    pub(crate) at: SystemTime,
    pub(crate) version: String,
    pub(crate) build: String,
    pub(crate) upstream: String,
}

#[derive(Default)]
pub(crate) struct Traffic {
    pub(crate) samples: Vec<Sample>,
    pub(crate) failures: Vec<String>,
}

impl Traffic {
    /// No request failed, and none mixed builds.
    #[track_caller]
    pub(crate) fn assert_none_failed(&self) {
        assert!(
            self.failures.is_empty(),
            "{} failed or mixed answers, e.g. {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }

    /// Every answer showed the version committed in the build it came from.
    #[track_caller]
    pub(crate) fn assert_versions_match(&self, versions: &HashMap<String, String>) {
        for sample in &self.samples {
            assert_eq!(
                versions.get(&sample.build),
                Some(&sample.version),
                "code of one build, REVISION of another"
            );
        }
    }
}

/// Keep-alive clients requesting one URL over and over, each answer recorded. Dropping it
/// stops them, in a panicking test too, so that none keeps hammering a stopped server.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<()>>,
    pub(crate) traffic: Arc<Mutex<Traffic>>,
}

impl Load {
    #[must_use]
    pub(crate) fn start(url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let clients = (0..clients)
            .map(|_| {
                let (url, stop, traffic) =
                    (url.to_string(), Arc::clone(&stop), Arc::clone(&traffic));
                std::thread::spawn(move || client(url, stop, traffic))
            })
            .collect();
        Load {
            stop,
            clients,
            traffic,
        }
    }

    /// Stops the clients and waits for them: what they saw.
    pub(crate) fn finish(mut self) -> Traffic {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients.drain(..) {
            client.join().unwrap();
        }
        std::mem::take(&mut *self.traffic.lock().unwrap())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What shared/.env holds; the page prints it.
pub(crate) const APP_NAME: &str = "zero-downtime";

/// Parses the framework fixture's page: `framework app VERSION`, then the build (REVISION) as
/// seen by the front controller, the app's src/ and the framework in vendor/, then the
/// APP_NAME read from .env.
pub(crate) fn parse(body: &str) -> Result<(String, String), String> {
    let mut lines = body.lines();
    let mut field = |prefix: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .ok_or_else(|| format!("no `{prefix}` line in {body:?}"))
    };
    let version = field("framework app ")?;
    let build = field("build: ")?;
    let app = field("app: ")?;
    let kernel = field("kernel: ")?;
    let env = field("env: ")?;
    if build != app || build != kernel {
        return Err(format!(
            "one request, several builds: front controller {build}, src/ {app}, vendor/ {kernel}"
        ));
    }
    if env != APP_NAME {
        return Err(format!("APP_NAME from shared/.env is {env:?}"));
    }
    Ok((version, build))
}

fn client(url: String, stop: Arc<AtomicBool>, traffic: Arc<Mutex<Traffic>>) {
    // One agent per thread: its connection is kept alive across requests and switches.
    let agent = crate::harness::web::agent();
    let started = Instant::now();
    // Bounded in time whatever happens to the test around it.
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
        let sent = SystemTime::now();
        let outcome = agent
            .get(&url)
            .call()
            .map_err(|e| e.to_string())
            .and_then(|mut response| {
                let status = response.status();
                let upstream = response
                    .headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("{status} from {upstream:?}: {body}"));
                }
                parse(&body).map(|(version, build)| (version, build, upstream))
            });
        let at = SystemTime::now();
        let mut traffic = traffic.lock().unwrap();
        match outcome {
            Ok((version, build, upstream)) => traffic.samples.push(Sample {
                sent,
                at,
                version,
                build,
                upstream,
            }),
            Err(failure) => traffic.failures.push(failure),
        }
    }
}

pub(crate) fn parse_time(text: &str) -> SystemTime {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    SystemTime::from(parsed)
}

#[test]
fn deploys_and_rollbacks_under_load_never_fail_a_request_nor_mix_builds() {
    let _heavy = exclusive();
    let server = Server::builder()
        .config("keep_builds", "3")
        .config("shared", "[.env]")
        .install();
    std::fs::create_dir_all(server.root.join("shared")).unwrap();
    std::fs::write(
        server.root.join("shared/.env"),
        format!("# made on the server, as for any framework app\nAPP_NAME={APP_NAME}\n"),
    )
    .unwrap();
    // Its front controller answers 500 to any PHP diagnostic, as frameworks do in production.
    let clone = server.clone_fixture("framework");
    let mut versions: HashMap<String, String> = HashMap::new();
    clone.set_version("d0");
    versions.insert(clone.commit("d0"), "d0".into());
    clone.push_main().success();
    let web = WebServer::start(&server.root, &server.base().join("web"));

    let load = Load::start(&web.url("/"), CLIENTS);
    let started = Instant::now();
    let traffic_from = SystemTime::now();

    // Waits until the clients have been answered by `build`, which is live now.
    let wait_served = |build: &str| {
        wait_until(
            Duration::from_secs(30),
            || {
                load.traffic
                    .lock()
                    .unwrap()
                    .samples
                    .iter()
                    .rev()
                    .take(50)
                    .any(|s| s.build == build)
            },
            || format!("{build} was never served; errors:\n{}", web.error_log()),
        )
    };
    wait_served(&server.live_revision());
    let mut rollbacks = 0;
    for i in 1..=DEPLOYS {
        let version = format!("d{i}");
        clone.set_version(&version);
        versions.insert(clone.commit(&version), version);
        clone.push_main().success();
        wait_served(&server.live_revision());
        if i % 3 == 0 && rollbacks < ROLLBACKS {
            clone
                .push(&[":rollback"])
                .success()
                .stderr_has("rolled back to builds/");
            rollbacks += 1;
            wait_served(&server.live_revision());
        }
    }
    let traffic = load.finish();
    let elapsed = started.elapsed();

    traffic.assert_none_failed();
    traffic.assert_versions_match(&versions);
    let served: HashSet<&str> = traffic.samples.iter().map(|s| s.build.as_str()).collect();
    for build in versions.keys() {
        assert!(
            served.contains(build.as_str()),
            "{build} was deployed but never served"
        );
    }
    assert_eq!(rollbacks, ROLLBACKS);

    // From each switch to the first answer from the build switched to.
    let mut longest = Duration::ZERO;
    let mut switches = 0;
    for entry in server.deploy_log() {
        let (Some(at), Some(commit)) = (entry["switched_at"].as_str(), entry["commit"].as_str())
        else {
            continue;
        };
        let switched = parse_time(at);
        if switched < traffic_from {
            continue; // the first deploy, before the web server started
        }
        if let Some(first) = traffic
            .samples
            .iter()
            .find(|s| s.at >= switched && s.build == commit)
        {
            longest = longest.max(first.at.duration_since(switched).unwrap_or_default());
            switches += 1;
        }
    }
    let requests = traffic.samples.len();
    let failed = traffic.failures.len();
    eprintln!(
        "zero downtime: {requests} requests from {CLIENTS} keep-alive clients in {:.1}s ({:.0} req/s), \
         {DEPLOYS} deploys and {rollbacks} rollbacks, {failed} failed or mixed, {} builds served; \
         longest switch-to-first-answer {:.1} ms over {switches} switches",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        served.len(),
        longest.as_secs_f64() * 1000.0
    );
    assert_eq!(
        switches,
        DEPLOYS + ROLLBACKS,
        "a switch whose build was never served after it"
    );

    // Nothing at all for PHP, php-fpm or nginx to complain about: a warning the shipped
    // files cause is an error page for a framework app.
    web.stop_clean();
}

/// Nothing nginx or php-fpm of this test, master or worker, is running any more.
fn assert_no_process_left(groups: &[i32], dir: &Path) {
    let mut left = living(groups);
    left.extend(naming(dir));
    assert_eq!(
        left,
        Vec::<String>::new(),
        "web server processes outlived the test"
    );
}

#[test]
fn a_panicking_test_leaves_no_nginx_or_php_fpm_process_behind() {
    let _heavy = exclusive();
    let server = Server::install();
    let dir = server.base().join("web");
    let mut groups = [0; 2];
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let web = WebServer::start(&server.root, &dir);
        groups = web.process_groups();
        // Workers are up beside each master, and so would be orphaned by a careless stop.
        for group in groups {
            wait_until(
                Duration::from_secs(20),
                || living(&[group]).len() > 1,
                || format!("no workers in group {group}: {:?}", living(&[group])),
            );
        }
        panic!("the test fails while the web server runs");
    }));
    assert!(unwound.is_err());
    assert_ne!(groups, [0; 2]);
    assert_no_process_left(&groups, &dir);
}

#[test]
fn hashed_assets_are_cached_for_a_year_and_nothing_else_is() {
    let _heavy = exclusive();
    // The front-end app: its build step writes public/build/assets/app-<hash>.js, as Vite does,
    // and its page names that file.
    let (server, clone) = crate::build::frontend_server();
    clone.push_main().success();
    let asset = crate::build::live_script(&server);
    let web = WebServer::start(&server.root, &server.base().join("web"));
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";

    let (status, cache, body) =
        get_with_header(&web.url(&format!("/build/{asset}")), "cache-control");
    assert_eq!(
        (status, cache.as_deref()),
        (200, Some(IMMUTABLE)),
        "{}",
        web.error_log()
    );
    assert_eq!(body, server.read_live(&format!("public/build/{asset}")));

    // The page, from index.php, and a static file whose name carries no hash: asked for anew.
    let (status, cache, page) = get_with_header(&web.url("/"), "cache-control");
    assert_eq!((status, cache), (200, None));
    assert!(page.contains(&format!("script: /build/{asset}")), "{page}");
    let (status, cache, _) = get_with_header(&web.url("/build/manifest.json"), "cache-control");
    assert_eq!((status, cache), (200, None));

    // An asset that is not there is a 404 from nginx, not a page from the front controller.
    let missing = asset.replace("app-", "app-0");
    let (status, cache, body) =
        get_with_header(&web.url(&format!("/build/{missing}")), "cache-control");
    assert_eq!((status, cache), (404, None));
    assert!(!body.contains("the front-end app"), "{body}");

    assert_eq!(web.diagnostics(), Vec::<String>::new());

    // The dot-file deny still comes first below /build/assets/ (nginx logs the refusal).
    let hidden = server.latest().join("public/build/assets/.secret");
    std::fs::write(&hidden, "not for the web").unwrap();
    let (status, _, body) = get_with_header(&web.url("/build/assets/.secret"), "cache-control");
    assert_eq!(status, 403, "{body}");

    web.stop_leaving_nothing();
}
