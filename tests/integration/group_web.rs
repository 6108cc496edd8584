//! Zero downtime for a group, with real nginx and php-fpm: a primary and one host,
//! each behind its own nginx and php-fpm, and a third nginx balancing between them. Under load
//! through the balancer, group deploys and rollbacks never fail a request, and no answer ever
//! comes from a build that is not the group's current or previous one.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::users::is_root;
use crate::harness::web::{Balancer, WebServer, living, naming};
use crate::harness::{Server, exclusive, wait_until};
use crate::web::{APP_NAME, Load, Sample, parse_time};

const CLIENTS: usize = 4;
const DEPLOYS: usize = 10;
const ROLLBACKS: usize = 3;

/// One push to the primary: from when it started to when it returned, after which the whole
/// group serves `commit`.
struct Switch {
    started: SystemTime,
    ended: SystemTime,
    commit: String,
}

/// Why `sample` may not have been served, if so. Commit `switches[j]` goes live during push j
/// and is switched away from during push j+1: a request may be answered by it only if it was
/// in flight at some instant between the start of push j and the end of push j+1. So while a
/// push runs, the commits allowed are the group's current one and the one being switched to;
/// an older one, or one that never went live on the group, is not.
fn misserved(sample: &Sample, switches: &[Switch]) -> Option<String> {
    let allowed = switches.iter().enumerate().any(|(j, switch)| {
        let gone = switches.get(j + 1).map(|next| next.ended);
        switch.commit == sample.build
            && sample.at >= switch.started
            && gone.is_none_or(|gone| sample.sent <= gone)
    });
    (!allowed).then(|| {
        let during = switches
            .iter()
            .rposition(|s| s.started <= sample.sent)
            .unwrap_or(0);
        let push = &switches[during];
        if sample.sent > push.ended {
            format!(
                "{} answered with {} after push {during}, the group on {}",
                sample.upstream, sample.build, push.commit
            )
        } else {
            format!(
                "{} answered with {} during push {during}, the group on {} switching to {}",
                sample.upstream,
                sample.build,
                switches[during.saturating_sub(1)].commit,
                push.commit
            )
        }
    })
}

fn install(hosts: &str) -> Server {
    let mut builder = Server::builder()
        .config("keep_builds", "3")
        .config("shared", "[.env]");
    if !hosts.is_empty() {
        builder = builder.config("hosts", hosts);
    }
    let server = builder.install();
    std::fs::create_dir_all(server.root.join("shared")).unwrap();
    std::fs::write(
        server.root.join("shared/.env"),
        format!("APP_NAME={APP_NAME}\n"),
    )
    .unwrap();
    server
}

#[test]
fn group_deploys_and_rollbacks_behind_a_balancer_serve_only_the_current_or_previous_build() {
    let _heavy = exclusive();
    let host = install("");
    // A named link, so that the host's lines read `web2: …`.
    let link = host.base().join("web2.git");
    std::os::unix::fs::symlink(&host.repo, &link).unwrap();
    let primary = install(&format!("[{}]", link.display()));
    let clone = primary.clone_fixture("framework");
    let mut versions: HashMap<String, String> = HashMap::new();
    clone.set_version("d0");
    versions.insert(clone.commit("d0"), "d0".into());
    clone.push_main().success();
    let first = primary.live_revision();
    assert_eq!(host.live_revision(), first);

    // Each server's pool as shipped, as www-data: the group's builds are served by a user that
    // can read them and write none (as root, the only user that can start such a pool).
    let serve = |server: &Server| {
        if is_root() {
            std::fs::set_permissions(server.base(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            WebServer::start_as_shipped(&server.root, &server.base().join("web"))
        } else {
            WebServer::start(&server.root, &server.base().join("web"))
        }
    };
    let web1 = serve(&primary);
    let web2 = serve(&host);
    let balancer = Balancer::start(&primary.base().join("balancer"), &[web1.port, web2.port]);
    let backends = [
        format!("127.0.0.1:{}", web1.port),
        format!("127.0.0.1:{}", web2.port),
    ];

    let load = Load::start(&balancer.url("/"), CLIENTS);
    let started = Instant::now();
    let traffic_from = SystemTime::now();

    // Waits until both backends have answered with `build`, which the whole group runs now.
    let wait_served = |build: &str| {
        wait_until(
            Duration::from_secs(30),
            || {
                let traffic = load.traffic.lock().unwrap();
                let recent: Vec<&Sample> = traffic.samples.iter().rev().take(100).collect();
                backends
                    .iter()
                    .all(|b| recent.iter().any(|s| s.build == build && &s.upstream == b))
            },
            || {
                format!(
                    "{build} was not served by both backends; errors:\n{}{}",
                    web1.error_log(),
                    web2.error_log()
                )
            },
        )
    };
    let mut switches = vec![Switch {
        started: SystemTime::UNIX_EPOCH,
        ended: SystemTime::UNIX_EPOCH,
        commit: first.clone(),
    }];
    wait_served(&first);
    let mut push = |args: &[&str], rollback: bool| {
        let started = SystemTime::now();
        let push = clone.push(args).success();
        let ended = SystemTime::now();
        if rollback {
            push.stderr_has("rolled back to builds/");
        }
        let commit = primary.live_revision();
        assert_eq!(
            host.live_revision(),
            commit,
            "the host is not on the group's commit"
        );
        switches.push(Switch {
            started,
            ended,
            commit: commit.clone(),
        });
        wait_served(&commit);
    };
    let mut rollbacks = 0;
    for i in 1..=DEPLOYS {
        let version = format!("d{i}");
        clone.set_version(&version);
        versions.insert(clone.commit(&version), version);
        push(&["main"], false);
        if i % 3 == 0 && rollbacks < ROLLBACKS {
            push(&[":rollback"], true);
            rollbacks += 1;
        }
    }
    let traffic = load.finish();
    let elapsed = started.elapsed();

    traffic.assert_none_failed();
    let misserved: Vec<String> = traffic
        .samples
        .iter()
        .filter_map(|s| misserved(s, &switches))
        .collect();
    assert!(
        misserved.is_empty(),
        "{} answers from a build not the group's current or previous one, e.g. {:?}",
        misserved.len(),
        &misserved[..misserved.len().min(5)]
    );
    traffic.assert_versions_match(&versions);
    let mut per_backend: HashMap<&str, usize> = HashMap::new();
    for sample in &traffic.samples {
        *per_backend.entry(sample.upstream.as_str()).or_default() += 1;
    }
    let served: HashSet<&str> = traffic.samples.iter().map(|s| s.build.as_str()).collect();
    assert_eq!(rollbacks, ROLLBACKS);

    // The spread each group switch reported: max - min of every server's rename(2) instant.
    let mut spreads: Vec<f64> = primary
        .deploy_log()
        .iter()
        .filter(|e| {
            e["switched_at"]
                .as_str()
                .is_some_and(|at| parse_time(at) >= traffic_from)
        })
        .filter_map(|e| e["switch_spread_ms"].as_f64())
        .collect();
    assert_eq!(
        spreads.len(),
        DEPLOYS + ROLLBACKS,
        "a group switch without its spread in deploys.jsonl"
    );
    spreads.sort_by(f64::total_cmp);
    let requests = traffic.samples.len();
    eprintln!(
        "group zero downtime: {requests} requests through the balancer from {CLIENTS} keep-alive \
         clients in {:.1}s ({:.0} req/s), per backend {per_backend:?}, {DEPLOYS} group deploys \
         and {rollbacks} rollbacks, 0 failed, {} builds served; switch spread median {:.2} ms, \
         max {:.2} ms",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        served.len(),
        spreads[spreads.len() / 2],
        spreads[spreads.len() - 1],
    );

    let mut groups: Vec<i32> = web1.process_groups().to_vec();
    groups.extend(web2.process_groups());
    groups.push(balancer.process_group());
    let dirs: Vec<PathBuf> = vec![
        web1.dir().to_path_buf(),
        web2.dir().to_path_buf(),
        balancer.dir().to_path_buf(),
    ];
    let mut diagnostics = web1.diagnostics();
    diagnostics.extend(web2.diagnostics());
    diagnostics.extend(balancer.diagnostics());
    balancer.stop();
    web1.stop();
    web2.stop();
    assert_eq!(
        diagnostics,
        Vec::<String>::new(),
        "PHP, php-fpm or nginx logged diagnostics"
    );
    let mut left = living(&groups);
    for dir in &dirs {
        left.extend(naming(dir));
    }
    assert_eq!(
        left,
        Vec::<String>::new(),
        "web server processes outlived the test"
    );
}
