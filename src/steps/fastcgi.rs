//! A FastCGI client for one request on one connection: how the hook talks to a php-fpm pool
//! itself, for `reset_opcache:` (steps/opcache.rs), doctor and `preflight:` (steps/preflight.rs).
//!
//! Written here (about 150 lines): the crates that exist are async (tokio) clients, far more
//! than one request on one connection needs.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::FpmAddress;

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
/// An answer is read into memory: a page that prints without end must not fill it.
const MAX_RESPONSE: usize = 64 << 20;

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
pub(crate) struct Response {
    /// The CGI response: headers, a blank line, the body.
    pub(crate) stdout: Vec<u8>,
    /// What PHP logged to FastCGI's stderr (errors, with `log_errors` to stderr).
    pub(crate) stderr: Vec<u8>,
    pub(crate) app_status: u32,
}

impl Response {
    /// The CGI response split into its status line (`Status:` header; none means `200 OK`)
    /// and its body.
    pub(crate) fn status_and_body(&self) -> (String, String) {
        let stdout = String::from_utf8_lossy(&self.stdout).replace("\r\n", "\n");
        let (head, body) = stdout.split_once("\n\n").unwrap_or(("", &stdout));
        let status = head
            .lines()
            .find_map(|l| l.strip_prefix("Status:"))
            .map(str::trim)
            .unwrap_or("200 OK")
            .to_string();
        (status, body.to_string())
    }
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
        if response.stdout.len() + response.stderr.len() + len > MAX_RESPONSE {
            bail!("the answer is longer than {} MB", MAX_RESPONSE >> 20);
        }
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

/// The time limit passed: said as "no answer within Ns" by [`request`], which knows N.
#[derive(Debug)]
struct NoAnswer;

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no answer in time")
    }
}

impl std::error::Error for NoAnswer {}

fn read_failed(err: io::Error, where_: &str) -> anyhow::Error {
    match err.kind() {
        // A read timeout shows as EAGAIN on Linux.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow::Error::new(NoAnswer),
        io::ErrorKind::UnexpectedEof => anyhow!("the connection ended {where_}"),
        _ => anyhow!("reading the answer failed {where_}: {err}"),
    }
}

/// Connects, sends one request and reads its answer, all before `deadline`; `limit` is the
/// time that deadline allowed, for the error that says it passed.
pub(crate) fn request(
    address: &FpmAddress,
    pairs: &[(String, String)],
    deadline: Instant,
    limit: Duration,
) -> Result<Response> {
    send(address, pairs, deadline).map_err(|err| {
        if err.is::<NoAnswer>() {
            anyhow!("no answer within {}s", limit.as_secs_f64())
        } else {
            err
        }
    })
}

fn send(address: &FpmAddress, pairs: &[(String, String)], deadline: Instant) -> Result<Response> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow::Error::new(NoAnswer))
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
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    // nix's errors are shown as std's are: "… (os error N)".
    let addr = match UnixAddr::new(path) {
        Err(nix::errno::Errno::ENAMETOOLONG) => {
            bail!("the socket path {} is too long", path.display())
        }
        addr => addr
            .map_err(io::Error::from)
            .with_context(|| format!("the socket path {}", path.display()))?,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
    .context("socket(2)")?;
    let stream = UnixStream::from(fd);
    stream.set_write_timeout(Some(limit))?;
    connect(stream.as_raw_fd(), &addr)
        .map_err(io::Error::from)
        .with_context(|| format!("connect to {}", path.display()))?;
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
    fn an_answer_without_end_is_cut_off_at_its_limit() {
        // Full STDOUT records, over and over, never an FCGI_END_REQUEST.
        let one = record(STDOUT, &[b'x'; MAX_CONTENT]);
        let mut endless = Cycle(one, 0);
        let err = read_response(&mut endless).unwrap_err();
        assert_eq!(err.to_string(), "the answer is longer than 64 MB");
    }

    /// A reader that repeats its bytes for ever.
    struct Cycle(Vec<u8>, usize);
    impl Read for Cycle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 = (self.1 + n) % self.0.len();
            Ok(n)
        }
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
}
