//! A group of web servers: `hosts:` (the git URLs the primary pushes to), `hosts_at_once:`,
//! `host_timeout:` and `switch_window:`. A host is a URL handed to `git push`, so nothing in
//! it may read as an option to git or ssh.

use std::path::Path;

use serde::Deserialize;
use serde::de::Deserializer;

use super::limits::{HOST_TIMEOUT, HOSTS_AT_ONCE, SWITCH_WINDOW};
use super::paths::same_path;
use super::visit::Checked;
use super::{Refusal, Spot};

pub(super) fn default_hosts_at_once() -> usize {
    4
}
pub(super) fn default_host_timeout() -> u64 {
    1800
}
pub(super) fn hosts_at_once<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    HOSTS_AT_ONCE.whole(d).map(|n| n as usize)
}
pub(super) fn host_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    HOST_TIMEOUT.whole(d)
}
pub(super) fn default_switch_window() -> u64 {
    30
}
pub(super) fn switch_window<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    SWITCH_WINDOW.whole(d)
}

/// Checks one `hosts:` entry on its own: a URL `git push` reaches over ssh or a local path,
/// and nothing in it that ssh or git could take for an option (`-oProxyCommand=…` as a host
/// runs a command on the primary).
pub(crate) fn check_host_url(text: &str) -> Result<gix_url::Url, String> {
    if text.trim().is_empty() {
        return Err("a host must not be empty".into());
    }
    if text.starts_with('-') {
        return Err(format!("host `{text}` starts with `-`, like an option"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "host `{}` holds spaces or control characters",
            text.escape_debug()
        ));
    }
    let url = gix_url::parse(text.as_bytes())
        .map_err(|e| format!("host `{text}` is not a git URL: {e}"))?;
    match url.scheme {
        gix_url::Scheme::Ssh | gix_url::Scheme::File => {}
        _ => {
            return Err(format!(
                "host `{text}` must be reached over ssh (`user@host:/path`, `ssh://…`) or be a \
                 local path"
            ));
        }
    }
    let optionish = |part: Option<&str>| part.is_some_and(|p| p.starts_with('-'));
    if optionish(url.user()) || optionish(url.host()) || url.path.starts_with(b"-") {
        return Err(format!(
            "host `{text}` has a part that starts with `-`, like an option"
        ));
    }
    if url.password().is_some() {
        return Err(format!(
            "host `{text}` holds a password; the primary reaches hosts with its ssh key"
        ));
    }
    if url.path.is_empty() || url.path_is_root() {
        return Err(format!("host `{text}` names no repository path"));
    }
    Ok(url)
}

/// One `hosts:` entry, checked on its own where it stands.
struct HostEntry(String);

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("the git URL of another web server", |text| {
            check_host_url(text)?;
            Ok(HostEntry(text.to_string()))
        }))
    }
}

pub(super) fn host_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = Option::<Vec<HostEntry>>::deserialize(d)?;
    Ok(hosts.unwrap_or_default().into_iter().map(|h| h.0).collect())
}

/// The pass after reading: a host listed twice, in two spellings or one, is refused where
/// the second stands.
pub(super) fn listed_twice(hosts: &[String]) -> Option<Refusal> {
    let urls: Vec<_> = hosts.iter().map(|h| check_host_url(h).ok()).collect();
    for (later, url) in urls.iter().enumerate() {
        let Some(url) = url else { continue };
        let first = urls[..later]
            .iter()
            .position(|u| u.as_ref().is_some_and(|u| same_host(u, url)));
        if let Some(first) = first {
            return Some(Refusal::at_path(
                Spot::Entry("hosts", later),
                format!(
                    "host `{}` is listed twice (as `{}` too)",
                    hosts[later], hosts[first]
                ),
            ));
        }
    }
    None
}

/// Two spellings of one repository (`web2:/srv/app.git`, `ssh://web2/srv/app.git`).
fn same_host(a: &gix_url::Url, b: &gix_url::Url) -> bool {
    a.scheme == b.scheme
        && a.user() == b.user()
        && a.host() == b.host()
        && a.port_or_default() == b.port_or_default()
        && a.path.strip_suffix(b"/").unwrap_or(&a.path)
            == b.path.strip_suffix(b"/").unwrap_or(&b.path)
}

/// Local paths made absolute (against the deploy root, like `repository:`), and none of them
/// the primary's own repository: a push to itself would deploy into its own lock.
pub(super) fn resolve(
    root: &Path,
    repository: &Path,
    hosts: Vec<String>,
) -> Result<Vec<String>, Refusal> {
    let mut resolved = Vec::with_capacity(hosts.len());
    for (index, host) in hosts.into_iter().enumerate() {
        let spot = Spot::Entry("hosts", index);
        let url = check_host_url(&host).map_err(|e| Refusal::at_path(spot, e))?;
        if url.scheme != gix_url::Scheme::File {
            resolved.push(host);
            continue;
        }
        let path = root.join(Path::new(&*url.path.to_string()));
        if same_path(&path, repository) {
            return Err(Refusal::at(
                spot,
                format!(
                    "host `{host}` is this server's own repository ({}); list the other web \
                     servers only",
                    repository.display()
                ),
            ));
        }
        resolved.push(path.to_string_lossy().into_owned());
    }
    Ok(resolved)
}
