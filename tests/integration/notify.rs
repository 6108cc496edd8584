//! `notify:` webhooks, told through a real HTTP listener on 127.0.0.1: a deploy, a failure and
//! a rollback each POST once; slack's body; a listener that never answers bounds the push
//! without failing it; a bad URL is refused where it stands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{BIN, Server};

/// A request as the listener read it.
struct Request {
    head: String,
    body: serde_json::Value,
}

/// An HTTP server on 127.0.0.1 in a thread: answers each POST with 204, or, when `silent`,
/// reads it and never answers. Stopped (its thread joined) when dropped.
struct Listener {
    url: String,
    requests: mpsc::Receiver<Request>,
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(silent: bool) -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let (tx, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // Held open, unanswered, until the listener stops.
            let mut held = Vec::new();
            for stream in socket.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                let _ = tx.send(request);
                if silent {
                    held.push(stream);
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        Listener {
            url: format!("http://127.0.0.1:{port}/deploys"),
            requests,
            stop,
            port,
            thread: Some(thread),
        }
    }

    /// Every request received so far (all were, once the push returned).
    fn received(&self) -> Vec<Request> {
        self.requests.try_iter().collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept up to see the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        head,
        body: serde_json::from_slice(&body).ok()?,
    })
}

fn notify_log(server: &Server) -> Vec<serde_json::Value> {
    std::fs::read_to_string(server.root.join(".atomdeploy/notify.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_deploy_posts_its_commit_and_outcome_once_and_the_delivery_is_logged() {
    let listener = Listener::start(false);
    let server = Server::install();
    server.set_config("notify", &format!("[{{url: '{}'}}]", listener.url));
    let clone = server.clone_fixture("example-app");
    clone.set_version("v1");
    let v1 = clone.commit("the first version");
    let push = clone.push_main().success();
    let line = push
        .remote_line(&format!("notified {} 204 in ", listener.url))
        .unwrap_or_else(|| panic!("no notified line:\n{}", push.stderr));
    assert!(line.ends_with("ms"), "{line}");

    let got = listener.received();
    assert_eq!(got.len(), 1, "one POST per deploy");
    let request = &got[0];
    assert!(
        request.head.starts_with("POST /deploys HTTP/1.1"),
        "{}",
        request.head
    );
    assert!(
        request
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        request.head
    );
    let body = &request.body;
    assert_eq!(body["event"], "deploy", "{body}");
    assert_eq!(body["outcome"], "deployed", "{body}");
    assert_eq!(body["commit"], v1.as_str(), "{body}");
    assert_eq!(body["subject"], "the first version", "{body}");
    assert!(body["author"].as_str().unwrap().contains('@'), "{body}");
    assert_eq!(body["build"].as_str(), server.live().as_deref(), "{body}");
    assert!(body["seconds"].as_f64().unwrap() > 0.0, "{body}");
    assert!(!body["steps"].as_array().unwrap().is_empty(), "{body}");
    // Built from the logged entry: the same facts as deploys.jsonl.
    let logged = server.deploy_log().last().unwrap().clone();
    assert_eq!(body["finished_at"], logged["finished_at"], "{body}");

    let log = notify_log(&server);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["url"], listener.url.as_str());
    assert_eq!(log[0]["status"], 204);
    assert_eq!(log[0]["outcome"], "deployed");
    assert!(log[0]["ms"].is_u64(), "{}", log[0]);

    // A push that finds its commit live changes nothing and tells no one.
    clone.push_main().success();
    assert!(listener.received().is_empty());
}

#[test]
fn a_failed_deploy_posts_failed_with_its_error_and_keeps_its_exit_status() {
    let listener = Listener::start(false);
    let server = Server::install();
    server.set_config("notify", &format!("[{{url: '{}'}}]", listener.url));
    server.set_config("before_switch", r#"["echo broken-on-purpose >&2; exit 3"]"#);
    let clone = server.clone_fixture("example-app");
    // Through the wrapper, the push's exit status is the deploy's: still 1.
    clone.git(&[
        "config",
        "remote.production.receivepack",
        &format!("{BIN} receive-pack"),
    ]);
    let push = clone.push_main().deploy_failed();
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    assert!(
        push.remote_line(&format!("notified {} 204 in ", listener.url))
            .is_some(),
        "{}",
        push.stderr
    );
    let got = listener.received();
    assert_eq!(got.len(), 1);
    let body = &got[0].body;
    assert_eq!(body["outcome"], "failed", "{body}");
    assert_eq!(body["commit"], clone.head().as_str(), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("before_switch"),
        "{body}"
    );
    assert_eq!(server.live(), None);
}

#[test]
fn a_rollback_posts_once_and_slack_gets_a_one_line_text() {
    let json = Listener::start(false);
    let slack = Listener::start(false);
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.deploy_version("v1");
    let v1 = server.live().unwrap();
    clone.deploy_version("v2");
    let v2 = server.live().unwrap();
    server.set_config(
        "notify",
        &format!(
            "[{{url: '{}'}}, {{url: '{}', format: slack}}]",
            json.url, slack.url
        ),
    );
    clone.push(&[":rollback"]).success();
    assert_eq!(server.live().as_deref(), Some(v1.as_str()));

    let got = json.received();
    assert_eq!(got.len(), 1);
    let body = &got[0].body;
    assert_eq!(body["event"], "rollback", "{body}");
    assert_eq!(body["outcome"], "rolled back", "{body}");
    assert_eq!(body["build"], v1.as_str(), "{body}");
    assert_eq!(body["from"], v2.as_str(), "{body}");

    let got = slack.received();
    assert_eq!(got.len(), 1);
    let body = &got[0].body;
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 1, "slack takes only text: {body}");
    let text = body["text"].as_str().unwrap();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    assert!(text.contains(&format!("builds/{v1}")), "{text}");
    assert_eq!(notify_log(&server).len(), 2);
}

#[test]
fn a_listener_that_never_answers_bounds_the_push_which_still_deploys() {
    let silent = Listener::start(true);
    let server = Server::install();
    server.set_config("notify", &format!("[{{url: '{}'}}]", silent.url));
    let clone = server.clone_fixture("example-app");
    clone.set_version("v1");
    let v1 = clone.commit("v1");
    let started = std::time::Instant::now();
    let push = clone.push_main().success();
    // Printed, not asserted (a loaded machine is slow): the bound is 5 s per URL.
    eprintln!(
        "the push to a silent webhook took {:.2?}",
        started.elapsed()
    );
    assert_eq!(push.code, Some(0));
    assert_eq!(server.live_revision(), v1);
    let warning = push
        .remote_line(&format!("warning: notifying {} failed: ", silent.url))
        .unwrap_or_else(|| panic!("no warning:\n{}", push.stderr));
    assert!(
        warning.ends_with("timeout: no answer within 5s"),
        "{warning}"
    );
    assert_eq!(silent.received().len(), 1, "the request was sent");
    let log = notify_log(&server);
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0]["status"].is_null(), "{}", log[0]);
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timeout"),
        "{}",
        log[0]
    );
}

#[test]
fn a_bad_notify_url_is_refused_at_its_line_and_column_and_nothing_deploys() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    server.set_config("notify", "\n  - url: ftp://127.0.0.1/deploys");
    clone.set_version("v2");
    clone.commit("v2");
    let push = clone.push_main().deploy_failed();
    let error = push.remote_line("error: ").unwrap();
    let at = format!(
        "{}:{}:10:",
        server.config_path().display(),
        server.config_line(|l| l.contains("ftp://"))
    );
    assert!(error.contains(&at), "{error} lacks {at}");
    assert!(
        error.contains("notify url `ftp://127.0.0.1/deploys` must start with http:// or https://"),
        "{error}"
    );
    server.assert_unchanged_since(&before);
}

#[test]
fn a_push_queued_behind_a_deploy_does_not_wait_for_its_webhook() {
    let silent = Listener::start(true);
    let server = Server::install();
    server.set_config("notify", &format!("[{{url: '{}'}}]", silent.url));
    let clone = server.clone_fixture("example-app");
    clone.set_version("v1");
    clone.commit("v1");
    let first = clone.spawn_push(&["main"]);
    // The first deploy is over and its hook is waiting on the silent webhook (up to 5 s).
    let told = silent
        .requests
        .recv_timeout(Duration::from_secs(60))
        .expect("the first deploy told the webhook");
    assert_eq!(told.body["outcome"], "deployed", "{}", told.body);
    let other = server.clone_repo("other");
    other.set_version("v2");
    let v2 = other.commit("v2");
    let second = other.push_main().success();
    assert_eq!(server.live_revision(), v2);
    // Deterministic, whatever the machine's speed: the lock was free when the second deploy
    // asked for it, because the first hook let go before telling the webhook.
    second.stderr_lacks("waiting for the deploy lock");
    let first = first.finish();
    assert_eq!(first.code, Some(0), "{}", first.stderr);
}
