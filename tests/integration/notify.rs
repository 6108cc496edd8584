//! `notify:` webhooks, told through a real HTTP listener on 127.0.0.1: a deploy, a failure and
//! a rollback each POST once; slack's body, with what the pusher wrote escaped; a listener that
//! never answers bounds the push without failing it; a bad URL is refused where it stands; a
//! URL's secrets (userinfo, path, query) show nowhere, whatever happened.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{BIN, Push, Server};

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

    /// The URL as every line about it shows it: scheme, host and port.
    fn shown(&self) -> String {
        format!("http://127.0.0.1:{}/…", self.port)
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
        .remote_line(&format!("notified #1 {} 204 in ", listener.shown()))
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
    assert_eq!(log[0]["url"], listener.shown());
    assert_eq!(log[0]["target"], 1);
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
        push.remote_line(&format!("notified #1 {} 204 in ", listener.shown()))
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
        .remote_line(&format!(
            "warning: notifying #1 {} failed: ",
            silent.shown()
        ))
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
        error.contains("notify url `ftp://127.0.0.1/…` must start with http:// or https://"),
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

/// A string no file holds by chance: `label` and 16 random hex digits.
fn secret(label: &str) -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(label);
    format!("{label}{random:016x}")
}

/// The parts of a webhook URL that are its password, and the URL that carries them all.
struct SecretUrl {
    url: String,
    secrets: Vec<String>,
}

impl SecretUrl {
    fn on_port(port: u16) -> SecretUrl {
        let secrets: Vec<String> = ["hookuser", "hookpass", "hookpath", "hooktoken"]
            .into_iter()
            .map(secret)
            .collect();
        let [user, pass, path, token] = &secrets[..] else {
            unreachable!()
        };
        SecretUrl {
            url: format!("http://{user}:{pass}@127.0.0.1:{port}/services/{path}?token={token}"),
            secrets,
        }
    }
}

/// Every file under `dir` (symlinks not followed) that holds `needle`, but `except`.
fn files_holding(dir: &Path, needle: &str, except: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file() && e.path() != except)
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn a_webhooks_secrets_show_nowhere_after_a_deploy_a_rollback_and_a_failure() {
    let listener = Listener::start(false);
    let told = SecretUrl::on_port(listener.port);
    // A port nobody listens on: refused, the dead webhook's warning.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = SecretUrl::on_port(dead_port);
    let server = Server::install();
    server.set_config(
        "notify",
        &format!("[{{url: '{}'}}, {{url: '{}'}}]", told.url, dead.url),
    );
    let clone = server.clone_fixture("example-app");
    let mut pushes: Vec<Push> = Vec::new();
    for version in ["v1", "v2"] {
        clone.set_version(version);
        clone.commit(version);
        pushes.push(clone.push_main().success());
    }
    pushes.push(clone.push(&[":rollback"]).success());
    server.set_config("before_switch", r#"["echo broken-on-purpose >&2; exit 3"]"#);
    clone.set_version("v3");
    clone.commit("v3");
    pushes.push(clone.push_main().deploy_failed());
    let outcomes: Vec<_> = server
        .deploy_log()
        .iter()
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        ["deployed", "deployed", "rolled back", "failed"],
        "{outcomes:?}"
    );

    // Still told, secrets and all: redacting the lines did not touch what is sent.
    let got = listener.received();
    assert_eq!(got.len(), 4);
    let [user, pass, path, token] = &told.secrets[..] else {
        unreachable!()
    };
    for request in &got {
        let head = &request.head;
        assert!(
            head.starts_with(&format!("POST /services/{path}?token={token} HTTP/1.1")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("authorization: basic "),
            "ureq sends {user}:{pass} as basic auth: {head}"
        );
    }

    // Nowhere a person reads, nor any file but deploy.yml: the pushes' output (the lines about
    // each delivery, the failure's), `log`, `builds`, notify.jsonl, deploys.jsonl, transcripts.
    let mut shown_to_people: Vec<(String, String)> = pushes
        .iter()
        .map(|p| ("a push".to_string(), p.stderr.clone()))
        .collect();
    for args in [&["log"][..], &["builds"], &["builds", "--json"]] {
        let out = server.run(args);
        crate::harness::assert_success(&out, &args.join(" "));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        shown_to_people.push((args.join(" "), text));
    }
    let config = server.config_path();
    for secret in told.secrets.iter().chain(&dead.secrets) {
        for (what, text) in &shown_to_people {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} in {what}:\n{text}"
            );
        }
        // Found where it is written: the search would find it anywhere else.
        assert_eq!(
            files_holding(&server.root, secret, Path::new("")),
            [config.as_path()]
        );
        let found = files_holding(&server.base(), secret, &config);
        assert!(found.is_empty(), "{secret} in {found:?}");
    }

    // Each delivery told, redacted, with its place in the list to tell the two apart.
    let (shown, dead_shown) = (listener.shown(), format!("http://127.0.0.1:{dead_port}/…"));
    for push in &pushes {
        assert!(
            push.remote_line(&format!("notified #1 {shown} 204 in "))
                .is_some(),
            "{}",
            push.stderr
        );
        assert!(
            push.remote_line(&format!("warning: notifying #2 {dead_shown} failed: "))
                .is_some(),
            "{}",
            push.stderr
        );
    }
    let log = notify_log(&server);
    assert_eq!(log.len(), 8, "{log:?}");
    for pair in log.chunks(2) {
        assert_eq!(
            (&pair[0]["target"], &pair[0]["url"]),
            (&1.into(), &shown.clone().into())
        );
        assert_eq!(
            (&pair[1]["target"], &pair[1]["url"]),
            (&2.into(), &dead_shown.clone().into())
        );
        assert!(pair[1]["error"].is_string(), "{}", pair[1]);
    }
}

/// Slack's text as typed: what `&lt;`, `&gt;` and `&amp;` stand for.
fn unescaped(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn slack_text_escapes_what_the_pusher_wrote_and_json_keeps_it_verbatim() {
    // What pings a channel or a person, links elsewhere, or is already an entity.
    let pieces = [
        "<!channel>",
        "<!here>",
        "<@U123>",
        "<http://x|y>",
        "&",
        "&lt;",
        "<!subteam^S1>",
        ">",
    ];
    // Each a rotation of all of them, joined three ways: every piece at the start, the end and
    // next to every kind of neighbour across the three.
    let subjects: Vec<String> = ["", " ", "x"]
        .iter()
        .enumerate()
        .map(|(i, glue)| {
            let n = pieces.len();
            (0..n)
                .map(|k| pieces[(k + 3 * i) % n])
                .collect::<Vec<_>>()
                .join(glue)
        })
        .collect();
    let json = Listener::start(false);
    let slack = Listener::start(false);
    let server = Server::install();
    server.set_config(
        "notify",
        &format!(
            "[{{url: '{}'}}, {{url: '{}', format: slack}}]",
            json.url, slack.url
        ),
    );
    let clone = server.clone_fixture("example-app");
    // git refuses `<` and `>` in a name (and the server's fsck a commit written by hand with
    // them): entities are what an author can slip in.
    let author = "&lt;!channel&gt; &amp; & co <pusher@example.com>";
    for (i, subject) in subjects.iter().enumerate() {
        clone.set_version(&format!("v{i}"));
        clone.git(&["add", "-A"]);
        clone.git(&["commit", "-q", "--author", author, "-m", subject]);
        clone.push_main().success();
    }
    // An error that quotes what the pusher can write.
    server.set_config(
        "before_switch",
        &format!("[\"echo '{}' >&2; exit 3\"]", subjects[0]),
    );
    clone.set_version("broken");
    clone.commit(&subjects[2]);
    clone.push_main().deploy_failed();

    let bodies: Vec<_> = json.received().into_iter().map(|r| r.body).collect();
    let texts: Vec<String> = slack
        .received()
        .into_iter()
        .map(|r| r.body["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((bodies.len(), texts.len()), (4, 4));
    assert_eq!(bodies[1]["author"], author, "{}", bodies[1]);
    assert!(
        bodies[3]["error"].as_str().unwrap().contains(&subjects[0]),
        "{}",
        bodies[3]
    );
    for (i, (body, text)) in bodies.iter().zip(&texts).enumerate() {
        // The JSON body is the log's facts, verbatim: escaping is its receiver's to do.
        assert_eq!(body["subject"], subjects[i.min(2)].as_str(), "{body}");
        assert!(!text.contains(['<', '>']), "markup left in {text:?}");
        let entities = text.match_indices('&').all(|(at, _)| {
            ["&amp;", "&lt;", "&gt;"]
                .iter()
                .any(|e| text[at..].starts_with(e))
        });
        assert!(entities, "a bare & in {text:?}");
        let typed = unescaped(text);
        for key in ["subject", "author"] {
            let value = body[key].as_str().unwrap();
            assert!(
                typed.contains(value),
                "{key} {value:?} not shown in {text:?}"
            );
        }
        if let Some(error) = body["error"].as_str() {
            let first = error.lines().next().unwrap();
            assert!(typed.contains(first), "{first:?} not shown in {text:?}");
        }
    }
}

/// deploy.yml's errors quote what they refuse: a webhook URL in one (a wrong scheme, a bare
/// string where `{url: …}` belongs) shows redacted, still at its line and column.
#[test]
fn a_refused_notify_entry_is_quoted_without_its_secrets() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    let before = server.state();
    let SecretUrl { url, secrets } = SecretUrl::on_port(9);
    let wrong_scheme = url.replacen("http:", "ftp:", 1);
    for (yaml, message) in [
        (
            format!("\n  - url: '{wrong_scheme}'"),
            "10: notify[0].url: notify url `ftp://127.0.0.1:9/…` must start with http://",
        ),
        (
            format!("\n  - '{url}'"),
            "5: notify[0]: invalid type: string \"http://127.0.0.1:9/…\", expected struct",
        ),
    ] {
        server.set_config("notify", &yaml);
        clone.set_version("v2");
        clone.commit("v2");
        let push = clone.push_main().deploy_failed();
        let error = push.remote_line("error: ").unwrap();
        let at = format!(
            "{}:{}:{message}",
            server.config_path().display(),
            server.config_line(|l| l.contains(secrets[0].as_str()))
        );
        assert!(error.contains(&at), "{error} lacks {at}");
        for secret in &secrets {
            assert!(
                !push.stderr.contains(secret.as_str()),
                "{secret} in {}",
                push.stderr
            );
        }
        server.assert_unchanged_since(&before);
    }
}
