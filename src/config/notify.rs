//! `notify:`: the webhooks told of each deploy, and the care their URLs need. A webhook's URL
//! is its password, so it never shows whole: not in [`NotifyUrl`]'s Display or Debug, not in
//! a refusal of deploy.yml that quotes it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// One `notify:` entry: where to POST, and the body's shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyTarget {
    #[serde(deserialize_with = "notify_url")]
    pub(crate) url: NotifyUrl,
    #[serde(default)]
    pub(crate) format: NotifyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NotifyFormat {
    /// The deploy log's facts as a JSON object.
    #[default]
    Json,
    /// `{"text": "<one line>"}`, what a Slack incoming webhook takes.
    Slack,
}

/// Checked inside the visitor, so that the error points at the URL itself.
fn notify_url<'de, D: Deserializer<'de>>(d: D) -> Result<NotifyUrl, D::Error> {
    struct UrlVisitor;
    impl Visitor<'_> for UrlVisitor {
        type Value = NotifyUrl;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an http:// or https:// URL")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<NotifyUrl, E> {
            check_notify_url(text).map_err(E::custom)?;
            Ok(NotifyUrl(text.to_string()))
        }
    }
    d.deserialize_str(UrlVisitor)
}

/// A `notify:` URL. A webhook's URL is its password (Slack's token is its path; others carry
/// one in the query, or as `user:pass@`): whoever reads it can post in its name. So it shows,
/// in Display and Debug alike, only as [`redacted_url`] gives it, whatever prints it (the
/// pusher's lines, notify.jsonl, a warning); [`NotifyUrl::secret`] is for sending to it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NotifyUrl(String);

impl NotifyUrl {
    /// The whole URL, secret parts and all: only to send to, never to show.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&redacted_url(&self.0))
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NotifyUrl({})", redacted_url(&self.0))
    }
}

/// What may be shown of a URL that can carry a secret in its userinfo, path or query:
/// `scheme://host[:port]/…`, the same shape whatever the path (an empty one included, so
/// that the shape tells nothing either). Parsed by the http crate, the parser ureq sends
/// with; what it cannot parse shows its scheme at most.
pub(crate) fn redacted_url(text: &str) -> String {
    if let Ok(uri) = text.parse::<ureq::http::Uri>()
        && let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority())
        && !authority.host().is_empty()
    {
        let port = authority
            .port_u16()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        return format!("{scheme}://{}{port}/…", authority.host());
    }
    match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://…")
        }
        _ => "…".to_string(),
    }
}

/// Its errors show the URL redacted: a refused URL may still hold a good secret (a typo in
/// the scheme, say), and the error reaches the pusher.
fn check_notify_url(text: &str) -> Result<(), String> {
    let shown = redacted_url(text);
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("notify url `{shown}` must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("notify url `{shown}` needs a host, and no spaces"));
    }
    // ureq's own parser is the one that will send it: what it refuses is refused here.
    text.parse::<ureq::http::Uri>()
        .map_err(|e| format!("notify url `{shown}` is not a URL: {e}"))?;
    Ok(())
}

/// serde quotes a value it could not take (`invalid type: string "…", expected struct
/// NotifyTarget`): a webhook URL written in the wrong shape under `notify:` would reach the
/// pusher whole, secret and all. Every string under `notify:` but a plain word (a key, a
/// format's name: nothing secret, and what such an error is about) shows redacted instead;
/// `strings` are every string under `notify:`, as the raw document gives them.
pub(super) fn without_secrets(message: &str, mut strings: Vec<String>) -> String {
    strings.retain(|s| {
        !s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    // Longest first: a URL goes whole before a shorter string inside it could split it.
    strings.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut message = message.to_string();
    for s in strings {
        let shown = redacted_url(&s);
        // As serde quotes it: escaped the way Rust's Debug escapes a str.
        let quoted = format!("{s:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        message = message.replace(&s, &shown).replace(escaped, &shown);
    }
    message
}
