//! The checks of a new build against this server's web stack: `healthcheck:` (after the
//! switch), `preflight:` (requests to php-fpm before it), and the php-fpm address both
//! preflight and `reset_opcache:` take.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::limits::{
    HEALTHCHECK_INTERVAL, HEALTHCHECK_RETRIES, HEALTHCHECK_TIMEOUT, PREFLIGHT_TIMEOUT,
};
use super::{Refusal, Spot};

/// `preflight:`. Split between the two sides of a group's fingerprint: `urls` and `timeout`
/// are the app's (every server must check the same pages, or one server could switch to a
/// build another would have refused), while `fastcgi` is where this server's own pool
/// listens, which differs from server to server just like `reset_opcache:`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Preflight {
    /// `preflight.fastcgi`, or `reset_opcache:` when it is not given.
    pub(crate) fastcgi: FpmAddress,
    /// Paths (with any query) as a browser would request them; each starts with `/`.
    pub(crate) urls: Vec<String>,
    /// Limit of each request, connection included.
    pub(crate) timeout: Duration,
}

/// Checked after the switch; a build that fails it is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Healthcheck {
    pub(crate) probe: Probe,
    /// Further attempts after a failed one.
    pub(crate) retries: u32,
    /// Pause between attempts.
    pub(crate) interval: Duration,
    /// Limit of one attempt.
    pub(crate) timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probe {
    /// `sh -c` in the deploy root; healthy when it exits 0.
    Command(String),
    /// An HTTP GET; healthy when it answers 2xx.
    Url(String),
}

pub(super) fn healthcheck<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Healthcheck>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawHealthcheck {
        command: Option<String>,
        url: Option<String>,
        #[serde(default = "default_retries", deserialize_with = "retries")]
        retries: u32,
        #[serde(default = "default_interval", deserialize_with = "interval")]
        interval: Duration,
        #[serde(default = "default_timeout", deserialize_with = "timeout")]
        timeout: Duration,
    }
    fn default_retries() -> u32 {
        2
    }
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        HEALTHCHECK_RETRIES.whole(d).map(|n| n as u32)
    }
    fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HEALTHCHECK_INTERVAL.duration(d)
    }
    fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HEALTHCHECK_TIMEOUT.duration(d)
    }
    let Some(raw) = Option::<RawHealthcheck>::deserialize(d)? else {
        return Ok(None);
    };
    let probe = match (raw.command, raw.url) {
        (Some(command), None) if !command.trim().is_empty() => Probe::Command(command),
        (None, Some(url)) if url.starts_with("http://") => Probe::Url(url),
        (None, Some(url)) => {
            return Err(de::Error::custom(format!(
                "healthcheck.url `{url}` must be plain http:// (check the server's own web server)"
            )));
        }
        _ => {
            return Err(de::Error::custom(
                "healthcheck needs exactly one of `command` (non-empty) or `url`",
            ));
        }
    };
    Ok(Some(Healthcheck {
        probe,
        retries: raw.retries,
        interval: raw.interval,
        timeout: raw.timeout,
    }))
}

/// Where a php-fpm pool listens: `unix:/run/php/app.sock` or `tcp://127.0.0.1:9000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FpmAddress {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for FpmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FpmAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            FpmAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl FpmAddress {
    fn parse(text: &str) -> Result<FpmAddress, String> {
        let want = "must be `unix:/absolute/path.sock` or `tcp://host:port`, \
                    the `listen` of the php-fpm pool";
        if let Some(path) = text.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{want}; got `{text}`: the socket path must be absolute"
                ));
            }
            // sun_path holds 108 bytes with the terminating NUL.
            if path.as_os_str().len() > 107 || path.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(format!(
                    "{want}; got `{text}`: not a usable socket path (at most 107 bytes)"
                ));
            }
            return Ok(FpmAddress::Unix(path.to_path_buf()));
        }
        let Some(rest) = text.strip_prefix("tcp://") else {
            return Err(format!("{want}; got `{text}`"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return Err(format!("{want}; got `{text}`: the port is missing")),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => {
                return Err(format!(
                    "{want}; got `{text}`: not an IPv6 address in brackets"
                ));
            }
            None => host,
        };
        let host_ok = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            return Err(format!(
                "{want}; got `{text}`: `{host}` is not a host name or address"
            ));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(FpmAddress::Tcp {
                host: host.to_string(),
                port,
            }),
            _ => Err(format!("{want}; got `{text}`: the port must be 1 to 65535")),
        }
    }
}

/// `preflight:` as written; its `fastcgi` may still come from `reset_opcache:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    #[serde(default, deserialize_with = "preflight_address")]
    fastcgi: Option<FpmAddress>,
    #[serde(
        default = "default_preflight_urls",
        deserialize_with = "preflight_urls"
    )]
    urls: Vec<String>,
    #[serde(
        default = "default_preflight_timeout",
        deserialize_with = "preflight_timeout"
    )]
    timeout: Duration,
}

fn default_preflight_urls() -> Vec<String> {
    vec!["/".into()]
}
fn default_preflight_timeout() -> Duration {
    Duration::from_secs(10)
}
fn preflight_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    PREFLIGHT_TIMEOUT.duration(d)
}

pub(super) fn read_preflight<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RawPreflight>, D::Error> {
    Option::<RawPreflight>::deserialize(d)
}

/// `fastcgi:` takes what php-fpm's `listen` and nginx's `fastcgi_pass` take (`host:port`),
/// besides `reset_opcache:`'s `tcp://host:port` and `unix:/path`.
fn preflight_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FpmAddress>, D::Error> {
    let text = String::deserialize(d)?;
    if text.starts_with("unix:") || text.starts_with("tcp://") {
        // Its own reason (a relative or too long socket path, a port out of range).
        return FpmAddress::parse(&text)
            .map(Some)
            .map_err(de::Error::custom);
    }
    let bare = match text.contains(':') && !text.contains('/') {
        true => FpmAddress::parse(&format!("tcp://{text}")).ok(),
        false => None,
    };
    bare.map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "must be `unix:/absolute/path.sock` or `host:port` (the `listen` of the php-fpm \
             pool); got `{text}`"
        ))
    })
}

fn preflight_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(d)?;
    if urls.is_empty() {
        return Err(de::Error::custom(
            "needs at least one URL (leave `preflight:` out to check nothing)",
        ));
    }
    for url in &urls {
        // The path as the browser sends it to nginx: the host is this server's own, and a
        // space or a fragment would never reach PHP as written.
        let bad = !url.starts_with('/')
            || url.starts_with("//")
            || url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '#')
            // nginx resolves `.` and `..` before choosing the script; the hook does not.
            || url
                .split('?')
                .next()
                .unwrap_or_default()
                .split('/')
                .any(|segment| segment == "." || segment == "..");
        if bad {
            return Err(de::Error::custom(format!(
                "`{url}` must be a path starting with `/` (with a query if need be, no host, \
                 no spaces, no `#`, no `.` or `..`), as in `/health?deep=1`"
            )));
        }
    }
    Ok(urls)
}

pub(super) fn fpm_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FpmAddress>, D::Error> {
    // Checked in a visitor, so that serde_yaml places the error at the value.
    struct AddressVisitor;
    impl<'de> Visitor<'de> for AddressVisitor {
        type Value = Option<FpmAddress>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("`unix:/absolute/path.sock` or `tcp://host:port`")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            FpmAddress::parse(text).map(Some).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(AddressVisitor)
}

/// The pass after reading: `preflight.fastcgi` left out takes `reset_opcache:`, and with
/// neither the refusal points at the `preflight:` key.
pub(super) fn preflight(
    raw: Option<RawPreflight>,
    reset_opcache: Option<&FpmAddress>,
) -> Result<Option<Preflight>, Refusal> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let fastcgi = raw
        .fastcgi
        .or_else(|| reset_opcache.cloned())
        .ok_or_else(|| {
            Refusal::at_path(
                Spot::Key("preflight"),
                "needs `fastcgi:`, the `listen` of the php-fpm pool (`unix:/run/php/app.sock` or \
             `127.0.0.1:9000`), since there is no `reset_opcache:` to take it from",
            )
        })?;
    Ok(Some(Preflight {
        fastcgi,
        urls: raw.urls,
        timeout: raw.timeout,
    }))
}
