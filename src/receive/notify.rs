//! `notify:` webhooks: after a deploy, rollback or failure is logged, one POST per URL,
//! built from the deploy log's entry.
//!
//! A notification never fails the attempt nor changes its exit status, and never holds the
//! pusher longer than [`TOTAL_BOUND`]: the URLs are told in parallel, each with
//! [`PER_URL_TIMEOUT`]. Each delivery (status or error, duration) is appended to
//! `.atomdeploy/notify.jsonl` and reported to the pusher in one line.
//!
//! A webhook's URL is its secret: every line about one shows it redacted (see
//! `NotifyUrl` in `config/notify.rs`) with its place in the `notify:` list (`#2`), which tells two
//! webhooks on one host apart without saying anything of their tokens.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{NotifyFormat, redacted_url};
use crate::infra::clock;
use crate::infra::report::Reporter;
use crate::state::history::{Entry, Outcome};
use crate::state::plan::Plan;

/// The whole of one URL's delivery: connect, send, answer.
pub(crate) const PER_URL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the pusher waits for all of them; a URL still unanswered by then is logged as
/// such and left behind (the process exits soon after, ending its thread).
pub(crate) const TOTAL_BOUND: Duration = Duration::from_secs(6);

/// Tells every `notify:` URL of `entry`, a finished attempt as the deploy log has it.
/// Attempts that changed nothing (`unchanged`) and a group host's own steps are not told:
/// the primary tells of the group's deploy once.
pub(crate) fn send(plan: &Plan, entry: &Entry, reporter: &Reporter) {
    let targets = &plan.config.notify;
    if targets.is_empty() || entry.group.is_some() {
        return;
    }
    if matches!(
        entry.outcome,
        Outcome::Unchanged | Outcome::Prepared | Outcome::Aborted
    ) {
        return;
    }
    let body = body(entry);
    let results = deliver(targets, &body, reporter);
    let mut log = String::new();
    for (n, (target, (result, took))) in (1..).zip(targets.iter().zip(results)) {
        let ms = took.as_millis();
        let url = &target.url;
        match &result {
            Ok(status) => reporter.line(&format!("notified #{n} {url} {status} in {ms}ms")),
            Err(e) => reporter.warn(&format!("notifying #{n} {url} failed: {e}")),
        }
        let line = json!({
            "at": clock::utc_now_rfc3339(),
            "target": n,
            "url": url.to_string(),
            "format": match target.format { NotifyFormat::Json => "json", NotifyFormat::Slack => "slack" },
            "commit": entry.commit,
            "outcome": body["outcome"],
            "status": result.as_ref().ok(),
            "error": result.as_ref().err(),
            "ms": ms,
        });
        log.push_str(&line.to_string());
        log.push('\n');
    }
    let path = plan.layout.state.join("notify.jsonl");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(log.as_bytes()));
    if let Err(e) = written {
        reporter.warn(&format!("could not write {}: {e}", path.display()));
    }
}

/// POSTs to every target at once, each in a thread of its own; what each answered and how
/// long it took, in the targets' order, waiting [`TOTAL_BOUND`] at most.
fn deliver(
    targets: &[crate::config::NotifyTarget],
    body: &Value,
    reporter: &Reporter,
) -> Vec<(Result<u16, String>, Duration)> {
    let (tx, rx) = mpsc::channel();
    for (i, target) in targets.iter().enumerate() {
        let tx = tx.clone();
        let payload = match target.format {
            NotifyFormat::Json => body.clone(),
            NotifyFormat::Slack => json!({ "text": summary(body) }),
        };
        let url = target.url.secret().to_string();
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let started = Instant::now();
                let result = post(&url, &payload);
                let _ = tx.send((i, result, started.elapsed()));
            });
        if let Err(e) = spawned {
            reporter.warn(&format!("notifying #{} {} failed: {e}", i + 1, target.url));
        }
    }
    drop(tx);
    let deadline = Instant::now() + TOTAL_BOUND;
    let mut results: Vec<Option<(Result<u16, String>, Duration)>> = vec![None; targets.len()];
    while results.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, result, took)) => results[i] = Some((result, took)),
            Err(_) => break,
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                (
                    Err(format!("no answer within {}s", TOTAL_BOUND.as_secs())),
                    TOTAL_BOUND,
                )
            })
        })
        .collect()
}

/// One POST; `Ok(status)` for a 2xx answer, anything else an error, told without the URL's
/// secret parts.
fn post(url: &str, payload: &Value) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PER_URL_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "atomdeploy-hook")
        .send(payload.to_string())
        .map_err(|e| match e {
            // ureq says only `timeout: global`: the pusher reads what it means.
            ureq::Error::Timeout(_) => {
                format!("timeout: no answer within {}s", PER_URL_TIMEOUT.as_secs())
            }
            // Some of ureq's errors quote the URL (`bad uri: … is missing host`).
            e => without_secrets(&e.to_string(), url),
        })?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}

/// `text` with `url` and each of its secret parts (userinfo, path, query) replaced: an error
/// that quotes the URL, whole or in parts, is shown as it would be without them.
fn without_secrets(text: &str, url: &str) -> String {
    let mut parts = vec![url.to_string()];
    if let Ok(uri) = url.parse::<ureq::http::Uri>() {
        if let Some((userinfo, _)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) {
            parts.push(userinfo.to_string());
            parts.extend(userinfo.split(':').map(str::to_string));
        }
        if let Some(path_and_query) = uri.path_and_query() {
            parts.push(path_and_query.as_str().to_string());
        }
        parts.extend(uri.query().map(str::to_string));
        parts.push(uri.path().to_string());
    }
    // Longest first, so that the whole URL goes before its parts; a part as short as `/`
    // (or empty) is no secret, and replacing it would garble the rest.
    parts.retain(|p| p.len() > 1);
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let shown = redacted_url(url);
    let mut text = text.to_string();
    for part in parts {
        let with = if part == url { shown.as_str() } else { "…" };
        text = text.replace(&part, with);
    }
    text
}

/// The JSON body: the log entry's facts (the commit's subject and author and who pushed
/// among them) and this server's name.
fn body(entry: &Entry) -> Value {
    let outcome = serde_json::to_value(entry.outcome).unwrap_or(Value::Null);
    let event = if entry.from.is_some() || entry.outcome == Outcome::RolledBack {
        "rollback"
    } else {
        "deploy"
    };
    json!({
        "event": event,
        "outcome": outcome,
        "commit": entry.commit,
        "subject": entry.subject,
        "author": entry.author,
        "pusher": entry.pusher,
        "ref": entry.refname,
        "build": entry.build,
        "from": entry.from,
        "error": entry.error,
        "server": hostname(),
        "hosts": entry.hosts,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "seconds": entry.seconds,
        "steps": entry.steps,
        "switch_spread_ms": entry.switch_spread_ms,
    })
}

/// The one line of a Slack message. Every value in it is escaped for Slack
/// ([`slack_escaped`]): the subject, the author and an error's text are the pusher's to
/// write, and the rest costs nothing to escape too.
fn summary(body: &Value) -> String {
    let s = |k: &str| slack_escaped(body[k].as_str().unwrap_or(""));
    let commit = s("commit");
    let short = &commit[..commit.len().min(7)];
    let mut line = format!("atomdeploy on {}: {} {short}", s("server"), s("outcome"));
    if !s("subject").is_empty() {
        line.push_str(&format!(" \"{}\"", s("subject")));
    }
    if !s("author").is_empty() {
        line.push_str(&format!(" by {}", s("author")));
    }
    if !s("build").is_empty() {
        line.push_str(&format!(" (builds/{})", s("build")));
    }
    line.push_str(&format!(
        " in {:.1}s",
        body["seconds"].as_f64().unwrap_or(0.0)
    ));
    if let Some(hosts) = body["hosts"].as_array().filter(|h| !h.is_empty()) {
        line.push_str(&format!(" on {} more host(s)", hosts.len()));
    }
    if !s("error").is_empty() {
        let error = s("error");
        line.push_str(&format!(": {}", error.lines().next().unwrap_or("")));
    }
    line
}

/// Slack reads `<…>` in a message's text as a mention or a link (`<!channel>` pings everyone,
/// `<http://x|y>` shows `y` and leads to `x`) and `&…;` as an entity; escaped as its docs ask,
/// text shows as it was typed.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// https is compiled in (Slack's webhooks are https): a plain-HTTP listener fails the TLS
    /// handshake, rather than the URL being refused for want of TLS.
    #[test]
    fn https_is_spoken() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let answer = std::thread::spawn(move || {
            let (mut stream, _) = socket.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
        });
        let err = post(&format!("https://127.0.0.1:{port}/"), &json!({})).unwrap_err();
        answer.join().unwrap();
        // rustls's own complaint about a peer that does not speak TLS.
        assert!(err.contains("InvalidContentType"), "{err}");
    }

    /// ureq quotes a URL it cannot send to (`bad uri: //u:pw@h/secret is missing scheme`);
    /// the error that reaches the pusher and notify.jsonl does not.
    #[test]
    fn an_http_error_does_not_repeat_the_url() {
        let err = post("//hookuser:hookpw@127.0.0.1/secret-path", &json!({})).unwrap_err();
        assert!(err.contains("missing scheme"), "{err}");
        for secret in ["hookuser", "hookpw", "secret-path"] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }
    }

    #[test]
    fn secrets_are_taken_out_of_any_text_whole_or_in_parts() {
        let url = "https://u1:p1@hooks.example:8443/services/T/B/tok?token=q1&x=y";
        let text = format!(
            "could not send to {url}: u1 p1 /services/T/B/tok token=q1&x=y, said hooks.example"
        );
        let shown = without_secrets(&text, url);
        for secret in ["u1", "p1", "/services/T/B/tok", "token=q1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://hooks.example:8443/…"), "{shown}");
        assert!(shown.ends_with("said hooks.example"), "{shown}");
    }

    /// Every string made of three of the pieces a pusher could use to ping or to link (the
    /// empty one among them), escaped: nothing Slack reads as markup is left, and unescaping
    /// gives the text back.
    #[test]
    fn slack_text_shows_every_hostile_combination_as_typed() {
        let pieces = [
            "<!channel>",
            "<!here>",
            "<!everyone>",
            "<@U123>",
            "<#C123|general>",
            "<http://x|y>",
            "&",
            "&lt;",
            "&amp;gt;",
            "<",
            ">",
            " ",
            "",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let typed = format!("{a}{b}{c}");
                    let escaped = slack_escaped(&typed);
                    assert!(!escaped.contains(['<', '>']), "{typed:?}: {escaped:?}");
                    let entities = escaped.match_indices('&').all(|(i, _)| {
                        ["&amp;", "&lt;", "&gt;"]
                            .iter()
                            .any(|e| escaped[i..].starts_with(e))
                    });
                    assert!(entities, "{typed:?}: {escaped:?}");
                    let back = escaped
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&");
                    assert_eq!(back, typed);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, pieces.len().pow(3));
    }
}
