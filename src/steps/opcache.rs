//! `reset_opcache:`: right after a switch, the php-fpm pool itself is asked over FastCGI (the
//! way cachetool does it) to run `opcache_reset()`, so that a web server that hands PHP the
//! unresolved path (`$document_root`, Apache, shared hosts) serves the new build at once.
//!
//! Why a reset is enough, measured with PHP 8.2's php-fpm (`pm = static`, 4 workers,
//! `opcache.validate_timestamps=0`, nginx with `$document_root`): opcache keys the cached
//! scripts by the path PHP was given (`/srv/app/latest/public/index.php`), so without a reset
//! every worker serves the old build for ever. Each worker also keeps its own realpath cache
//! (`latest/public/index.php` → `builds/<old>/public/index.php`, for `realpath_cache_ttl`),
//! which no request to one worker can clear in another; but opcache itself empties every
//! worker's realpath cache at that worker's first request after a restart of the shared
//! cache (ZendAccelerator.c, `accel_activate`: "Reset in-process realpath cache"). What is
//! left is the moment in between: `opcache_reset()` only schedules the restart, which happens
//! at the start of a later request once no worker is inside one; until then the cache is off
//! and every worker compiles through its own stale realpath cache, serving the old build.
//! So the hook asks again until the pool says the restart happened, and says so when a long
//! request keeps it pending past the time limit.
//!
//! The FastCGI client is written here (about 150 lines): the crates that exist are async
//! (tokio) clients, far more than one request on one connection needs.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::config::FpmAddress;
use crate::infra::report::Reporter;
use crate::state::plan::Layout;
use crate::steps::{self, Summary};

/// The whole reset, connection, restart and all, never takes longer: it runs while the
/// deploy lock is held and the new build is live already.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Versioned: opcache (with `validate_timestamps=0`) would run a cached older script of the
/// same name after an upgrade of the hook.
const SCRIPT_NAME: &str = "opcache-reset-1.php";

/// Runs in the pool. `?reset` calls `opcache_reset()`; any request reports whether the
/// restart it scheduled is still pending. One marked JSON line, whatever else PHP prints
/// (a warning with `display_errors` on).
const SCRIPT: &str = r#"<?php
// Written by atomdeploy-hook (reset_opcache in deploy.yml); run by php-fpm over FastCGI.
$out = ['php' => PHP_VERSION, 'pid' => getmypid(), 'loaded' => function_exists('opcache_get_status')];
// Not opcache_get_status()['opcache_enabled']: that is false while a restart is pending.
$out['enabled'] = $out['loaded'] && filter_var(ini_get('opcache.enable'), FILTER_VALIDATE_BOOLEAN);
$out['restrict_api'] = (string) ini_get('opcache.restrict_api');
if ($out['enabled'] && ($_GET['do'] ?? '') === 'reset') {
    $out['reset'] = opcache_reset();
}
clearstatcache(true);
$status = $out['enabled'] ? opcache_get_status(false) : false;
$out['pending'] = is_array($status)
    && (!empty($status['restart_pending']) || !empty($status['restart_in_progress']));
echo "\nATOMDEPLOY-OPCACHE ", json_encode($out), "\n";
"#;

const MARKER: &str = "ATOMDEPLOY-OPCACHE ";

/// What the script reported.
#[derive(Debug, Deserialize)]
struct Report {
    php: String,
    loaded: bool,
    enabled: bool,
    restrict_api: String,
    reset: Option<bool>,
    #[serde(default)]
    pending: bool,
}

/// A reset that was done, or could not be done for a reason that is not an error.
pub struct Reset {
    pub address: FpmAddress,
    pub php: String,
    /// Pending past [`LIMIT`] (a long request in the pool), or opcache off in the pool.
    pub warning: Option<String>,
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "php-fpm pool at {} (PHP {})", self.address, self.php)
    }
}

impl Summary for Reset {}

/// The step after a switch: resets the pool's opcache and reports it. Returns the error that
/// makes the deploy (or rollback) end failed, with the build left live.
pub fn reset_step(
    layout: &Layout,
    address: &FpmAddress,
    reporter: &Reporter,
) -> Option<anyhow::Error> {
    let step = reporter.step("opcache reset");
    match reset(layout, address) {
        Ok(done) => {
            if let Some(warning) = &done.warning {
                reporter.warn(warning);
            }
            steps::close(reporter, step, Duration::ZERO, &done);
            None
        }
        Err(err) => Some(err.context("opcache reset failed")),
    }
}

/// Asks the pool at `address` to reset its opcache, then until its restart happened.
pub fn reset(layout: &Layout, address: &FpmAddress) -> Result<Reset> {
    let deadline = Instant::now() + LIMIT;
    let script = write_script(layout)?;
    let first = ask(address, &script, "do=reset", deadline)?;
    if !first.loaded || !first.enabled {
        return Ok(Reset {
            address: address.clone(),
            php: first.php,
            warning: Some(format!(
                "opcache is {} in the php-fpm pool at {address}: nothing to reset. Each worker's \
                 realpath cache may still map latest/ to the old build for realpath_cache_ttl \
                 seconds, unless the web server passes the resolved path ($realpath_root)",
                if first.loaded {
                    "disabled"
                } else {
                    "not loaded"
                }
            )),
        });
    }
    if first.reset != Some(true) {
        let why = if first.restrict_api.is_empty() {
            String::new()
        } else {
            format!(
                ": opcache.restrict_api is `{}`, and {} is outside it; set it empty or to a \
                 prefix of {}",
                first.restrict_api,
                script.display(),
                layout.state.display()
            )
        };
        bail!("opcache_reset() returned false in the php-fpm pool at {address}{why}");
    }
    let php = first.php;
    let mut pending = first.pending;
    let mut why = String::from("a request was running all along");
    while pending {
        // A poll needs a moment of its own; one begun at the deadline could only time out.
        if deadline.saturating_duration_since(Instant::now()) < Duration::from_millis(200) {
            return Ok(Reset {
                address: address.clone(),
                php,
                warning: Some(format!(
                    "the opcache restart in the php-fpm pool at {address} was still pending after \
                     {}s ({why}); until it happens the workers serve the old build",
                    LIMIT.as_secs()
                )),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        // The reset is scheduled already: a poll that fails (all workers busy) leaves it
        // unconfirmed, not undone.
        match ask(address, &script, "", deadline) {
            Ok(report) => pending = report.pending,
            Err(err) => why = format!("the pool did not answer: {err:#}"),
        }
    }
    Ok(Reset {
        address: address.clone(),
        php,
        warning: None,
    })
}

/// Writes the script where the pool can read it: under the deploy root, not in /tmp (a pool
/// with PrivateTmp, or another user's, would not see it there).
fn write_script(layout: &Layout) -> Result<PathBuf> {
    let path = layout.state.join(SCRIPT_NAME);
    if fs::read_to_string(&path).ok().as_deref() != Some(SCRIPT) {
        let tmp = layout
            .state
            .join(format!(".{SCRIPT_NAME}.{}", std::process::id()));
        fs::write(&tmp, SCRIPT)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// One request to the pool; its report, or why there is none.
fn ask(address: &FpmAddress, script: &Path, query: &str, deadline: Instant) -> Result<Report> {
    let json = run_script(address, script, query, MARKER, deadline)?;
    serde_json::from_str::<Report>(&json)
        .map_err(|e| anyhow!("the php-fpm pool at {address} reported `{json}`: {e}"))
}

/// Runs `script` in the pool at `address` (the way the reset does, so that doctor asks the
/// running pool for its real settings): the rest of the line of its output that starts with
/// `marker`. Fails, saying why, when the pool cannot be reached (the error's root cause is
/// the connection's) or answers without that line.
pub fn run_script(
    address: &FpmAddress,
    script: &Path,
    query: &str,
    marker: &str,
    deadline: Instant,
) -> Result<String> {
    let response = request(address, &params(script, query), deadline)
        .with_context(|| format!("cannot reach the php-fpm pool at {address}"))?;
    let stdout = String::from_utf8_lossy(&response.stdout);
    match stdout.lines().find_map(|line| line.strip_prefix(marker)) {
        Some(found) => Ok(found.to_string()),
        None => Err(no_report(address, script, &response)),
    }
}

/// The pool answered, but not with the script's report: say what it said, and why that may be.
fn no_report(address: &FpmAddress, script: &Path, response: &Response) -> anyhow::Error {
    let squeeze = |text: &str| {
        let text: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let text = text.join(" / ");
        match text.char_indices().nth(200) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    };
    // A CGI response: headers, a blank line, the body. Only the status matters of the headers.
    let stdout = String::from_utf8_lossy(&response.stdout).replace("\r\n", "\n");
    let (head, body) = stdout.split_once("\n\n").unwrap_or(("", &stdout));
    let status = head
        .lines()
        .find_map(|l| l.strip_prefix("Status: "))
        .unwrap_or("200 OK");
    let (body, stderr) = (
        squeeze(body),
        squeeze(&String::from_utf8_lossy(&response.stderr)),
    );
    let said = format!("{status} {body} {stderr}").to_ascii_lowercase();
    let unreadable = [
        "primary script unknown",
        "file not found",
        "no input file",
        "access denied",
        "permission denied",
        "unable to open primary script",
        "403",
        "404",
    ]
    .iter()
    .any(|s| said.contains(s));
    let mut message = format!(
        "the php-fpm pool at {address} did not run {} (it answered {status}: {}",
        script.display(),
        if body.is_empty() { "nothing" } else { &body },
    );
    if !stderr.is_empty() {
        message.push_str(&format!("; stderr: {stderr}"));
    }
    message.push(')');
    if unreadable {
        message.push_str(&format!(
            ": the pool's user must be able to enter every directory above the script (x \
             permission on {} and each parent) and read it; a chroot, open_basedir or \
             security.limit_extensions in the pool can refuse it too",
            script.parent().unwrap_or(script).display()
        ));
    }
    anyhow!(message)
}

fn params(script: &Path, query: &str) -> Vec<(String, String)> {
    let script = script.display().to_string();
    let dir = Path::new(&script)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let uri = format!("/{SCRIPT_NAME}");
    [
        ("GATEWAY_INTERFACE", "FastCGI/1.0"),
        ("SERVER_SOFTWARE", "atomdeploy-hook"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", &script),
        ("SCRIPT_NAME", &uri),
        ("REQUEST_URI", &format!("{uri}?{query}")),
        ("DOCUMENT_URI", &uri),
        ("DOCUMENT_ROOT", &dir),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", "0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_NAME", "localhost"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

// FastCGI 1.0 (https://fastcgi-archives.github.io/FastCGI_Specification.html).
const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;
/// Any record's content is at most this long (its length is 16 bits).
const MAX_CONTENT: usize = 0xffff;

/// A record: header, content, and padding to a multiple of 8 bytes as the spec recommends.
fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    assert!(
        content.len() <= MAX_CONTENT,
        "callers split content into records"
    );
    let padding = (8 - content.len() % 8) % 8;
    let mut out = Vec::with_capacity(8 + content.len() + padding);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
    out
}

/// A length in a name-value pair: one byte below 128, else four with the high bit set.
fn encode_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        encode_length(name.len(), &mut out);
        encode_length(value.len(), &mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Name-value pairs back from bytes (what the pool would read); `None` when malformed.
#[cfg(test)]
fn decode_pairs(mut bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    fn length(bytes: &mut &[u8]) -> Option<usize> {
        let first = *bytes.first()?;
        if first < 0x80 {
            *bytes = &bytes[1..];
            return Some(first as usize);
        }
        let four: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        *bytes = &bytes[4..];
        Some((u32::from_be_bytes(four) & 0x7fff_ffff) as usize)
    }
    let mut pairs = Vec::new();
    while !bytes.is_empty() {
        let (n, v) = (length(&mut bytes)?, length(&mut bytes)?);
        let name = bytes.get(..n)?.to_vec();
        let value = bytes.get(n..n + v)?.to_vec();
        bytes = &bytes[n + v..];
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The bytes of a whole request: begin, params (split into records, then an empty one to
/// end them), and an empty stdin.
fn encode_request(pairs: &[(String, String)]) -> Vec<u8> {
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    // flags 0: the pool closes the connection after the request.
    begin.extend_from_slice(&[0; 6]);
    let mut out = record(BEGIN_REQUEST, &begin);
    for chunk in encode_pairs(pairs).chunks(MAX_CONTENT) {
        out.extend(record(PARAMS, chunk));
    }
    out.extend(record(PARAMS, &[]));
    out.extend(record(STDIN, &[]));
    out
}

/// What the pool sent back.
#[derive(Debug, Default, PartialEq)]
struct Response {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    app_status: u32,
}

/// Reads records until FCGI_END_REQUEST.
fn read_response(stream: &mut impl Read) -> Result<Response> {
    let mut response = Response::default();
    loop {
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .map_err(|e| read_failed(e, "before the end of the request"))?;
        if header[0] != VERSION {
            bail!("not a FastCGI answer (version byte {})", header[0]);
        }
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut content = vec![0u8; len + header[6] as usize];
        stream
            .read_exact(&mut content)
            .map_err(|e| read_failed(e, "inside a record"))?;
        content.truncate(len);
        match header[1] {
            STDOUT => response.stdout.extend_from_slice(&content),
            STDERR => response.stderr.extend_from_slice(&content),
            END_REQUEST => {
                let body: [u8; 8] = content
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| anyhow!("a short FCGI_END_REQUEST record"))?;
                response.app_status = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                return match body[4] {
                    0 => Ok(response),
                    1 => Err(anyhow!("the pool refused the request (FCGI_CANT_MPX_CONN)")),
                    2 => Err(anyhow!("the pool is overloaded (FCGI_OVERLOADED)")),
                    3 => Err(anyhow!(
                        "the pool refused the responder role (FCGI_UNKNOWN_ROLE)"
                    )),
                    other => Err(anyhow!("the pool ended the request with status {other}")),
                };
            }
            // Other record types (management answers) are not asked for; skipped.
            _ => {}
        }
    }
}

fn read_failed(err: io::Error, where_: &str) -> anyhow::Error {
    match err.kind() {
        // A read timeout shows as EAGAIN on Linux.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            anyhow!("no answer within {}s", LIMIT.as_secs())
        }
        io::ErrorKind::UnexpectedEof => anyhow!("the connection ended {where_}"),
        _ => anyhow!("reading the answer failed {where_}: {err}"),
    }
}

/// Connects, sends one request and reads its answer, all before `deadline`.
fn request(
    address: &FpmAddress,
    pairs: &[(String, String)],
    deadline: Instant,
) -> Result<Response> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("no answer within {}s", LIMIT.as_secs()))
    };
    let request = encode_request(pairs);
    match address {
        FpmAddress::Unix(path) => {
            let mut stream = connect_unix(path, left()?)?;
            stream.set_write_timeout(Some(left()?))?;
            stream.write_all(&request)?;
            read_response(&mut Deadlined { stream, deadline })
        }
        FpmAddress::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {host}"))?
                .collect();
            let mut last = anyhow!("{host} resolves to no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, left()?) {
                    Ok(mut stream) => {
                        stream.set_write_timeout(Some(left()?))?;
                        stream.write_all(&request)?;
                        return read_response(&mut Deadlined { stream, deadline });
                    }
                    Err(e) => last = anyhow!("connect to {addr}: {e}"),
                }
            }
            Err(last)
        }
    }
}

/// A stream whose reads give up at `deadline` in all, not per read: a pool that trickles
/// bytes cannot hold the deploy.
struct Deadlined<S> {
    stream: S,
    deadline: Instant,
}

trait Timed: Read {
    fn set_timeout(&self, limit: Duration) -> io::Result<()>;
}
impl Timed for UnixStream {
    fn set_timeout(&self, limit: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(limit))
    }
}
impl Timed for TcpStream {
    fn set_timeout(&self, limit: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(limit))
    }
}

impl<S: Timed> Read for Deadlined<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the time limit passed"))?;
        self.stream.set_timeout(left)?;
        self.stream.read(buf)
    }
}

/// connect(2) to a unix socket, bounded: a pool whose backlog is full would otherwise block
/// it indefinitely. (On Linux SO_SNDTIMEO bounds a unix-socket connect; std sets options
/// only after connecting.)
fn connect_unix(path: &Path, limit: Duration) -> Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        bail!("the socket path {} is too long", path.display());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket(2)");
    }
    // SAFETY: fd is a new socket owned by no one else; UnixStream takes it over and closes it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    stream.set_write_timeout(Some(limit))?;
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(err).with_context(|| format!("connect to {}", path.display()));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn short_lengths_take_one_byte_long_ones_four_with_the_high_bit() {
        let long = "x".repeat(128);
        let value = "v".repeat(300);
        let bytes = encode_pairs(&pairs(&[("A", "bc"), (&long, &value)]));
        assert_eq!(&bytes[..5], &[1, 2, b'A', b'b', b'c']);
        assert_eq!(&bytes[5..9], &[0x80, 0, 0, 128]);
        assert_eq!(&bytes[9..13], &[0x80, 0, 0x01, 0x2c]);
        assert_eq!(bytes.len(), 5 + 8 + 128 + 300);
        // 127 is still the short form.
        let edge = encode_pairs(&pairs(&[(&"n".repeat(127), "")]));
        assert_eq!(&edge[..2], &[127, 0]);
        let decoded = decode_pairs(&bytes).unwrap();
        assert_eq!(decoded[1], (long.into_bytes(), value.into_bytes()));
        assert_eq!(decode_pairs(&[0x80, 0, 0]), None, "truncated length");
        assert_eq!(decode_pairs(&[3, 0, b'a']), None, "truncated name");
    }

    #[test]
    fn a_request_is_begin_params_in_records_and_empty_stdin() {
        let big = "p".repeat(70_000);
        let list = pairs(&[("SCRIPT_FILENAME", "/srv/app/x.php"), ("BIG", &big)]);
        let bytes = encode_request(&list);
        let mut records = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], VERSION);
            assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), REQUEST_ID);
            let len = u16::from_be_bytes([rest[4], rest[5]]) as usize;
            let pad = rest[6] as usize;
            assert_eq!((8 + len + pad) % 8, 0, "records are padded to 8 bytes");
            records.push((rest[1], rest[8..8 + len].to_vec()));
            rest = &rest[8 + len + pad..];
        }
        let kinds: Vec<u8> = records.iter().map(|r| r.0).collect();
        assert_eq!(kinds, [BEGIN_REQUEST, PARAMS, PARAMS, PARAMS, STDIN]);
        assert_eq!(
            records[0].1,
            [0, 1, 0, 0, 0, 0, 0, 0],
            "responder, no keep-alive"
        );
        assert_eq!(records[1].1.len(), MAX_CONTENT);
        assert!(records[3].1.is_empty() && records[4].1.is_empty());
        let params: Vec<u8> = [records[1].1.clone(), records[2].1.clone()].concat();
        let decoded = decode_pairs(&params).unwrap();
        assert_eq!(decoded[0].1, b"/srv/app/x.php");
        assert_eq!(decoded[1].1.len(), 70_000);
    }

    #[test]
    fn a_response_is_read_until_end_request() {
        let mut bytes = record(STDOUT, b"Content-type: text/html\r\n\r\nhel");
        bytes.extend(record(STDERR, b"PHP Warning"));
        bytes.extend(record(STDOUT, b"lo"));
        bytes.extend(record(END_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 0]));
        bytes.extend(record(STDOUT, b"after the end: never read"));
        let response = read_response(&mut &bytes[..]).unwrap();
        assert_eq!(response.stdout, b"Content-type: text/html\r\n\r\nhello");
        assert_eq!(response.stderr, b"PHP Warning");
        assert_eq!(response.app_status, 7);

        let overloaded = record(END_REQUEST, &[0, 0, 0, 0, 2, 0, 0, 0]);
        let err = read_response(&mut &overloaded[..]).unwrap_err();
        assert!(format!("{err}").contains("FCGI_OVERLOADED"), "{err}");
        let cut = &record(STDOUT, b"partial")[..10];
        assert!(read_response(&mut &cut[..]).is_err());
        assert!(read_response(&mut &b"HTTP/1.1 200 OK\r\n"[..]).is_err());
    }

    #[test]
    fn an_unreadable_script_is_explained() {
        let response = Response {
            stdout: b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n"
                .to_vec(),
            stderr: b"Primary script unknown".to_vec(),
            app_status: 0,
        };
        let address = FpmAddress::Unix("/run/php/app.sock".into());
        let err = no_report(&address, Path::new("/srv/app/.atomdeploy/x.php"), &response);
        let text = format!("{err}");
        assert_eq!(
            text,
            "the php-fpm pool at unix:/run/php/app.sock did not run /srv/app/.atomdeploy/x.php \
             (it answered 404 Not Found: File not found.; stderr: Primary script unknown): the \
             pool's user must be able to enter every directory above the script (x permission \
             on /srv/app/.atomdeploy and each parent) and read it; a chroot, open_basedir or \
             security.limit_extensions in the pool can refuse it too"
        );
        // A PHP error is shown as it is, with no hint about permissions.
        let fatal = Response {
            stdout: b"Status: 500 Internal Server Error\r\nContent-type: text/html\r\n\r\n"
                .to_vec(),
            stderr: b"PHP Fatal error:  Allowed memory size exhausted\n".to_vec(),
            app_status: 255,
        };
        let text = format!("{}", no_report(&address, Path::new("/x.php"), &fatal));
        assert!(
            text.ends_with(
                "(it answered 500 Internal Server Error: nothing; stderr: PHP Fatal error:  \
                 Allowed memory size exhausted)"
            ),
            "{text}"
        );
    }
}
