//! `preflight:`: before the switch, the new build's pages are requested straight from the
//! php-fpm pool over FastCGI, as nginx would pass them once the build is live. A build that
//! answers 500 (or a PHP fatal error, or nothing in time) fails the deploy while the live
//! build still serves every request: the health check after the switch would catch it only
//! once users had seen the 500s for as long as the check and the rollback take.
//!
//! Each URL goes where the shipped nginx site (webserver/nginx-site.conf) would send it:
//! `try_files $uri /index.php$is_args$args`, then `SCRIPT_FILENAME` =
//! `$realpath_root$fastcgi_script_name`. The document root is the new build's real path
//! (builds/<new>/public), never `latest/`: opcache and the realpath cache key scripts by
//! path, so what the pool compiles here is cached under the new build's paths, which the live
//! site does not use until the switch (and then finds warm).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::{FpmAddress, Preflight};
use crate::infra::report::Reporter;
use crate::steps::fastcgi::{self, Response};
use crate::steps::{self, Summary};

/// The web root inside a build, as the shipped nginx site has it (`latest/public`).
const PUBLIC: &str = "public";
/// The front controller `try_files` falls back to.
const FRONT_CONTROLLER: &str = "/index.php";
/// How many lines of a failing answer the push shows.
const SHOWN_LINES: usize = 5;

/// Every URL answered below 500, without a PHP fatal error.
struct Passed {
    address: FpmAddress,
    answers: Vec<(String, String)>,
}

impl fmt::Display for Passed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(url, status)| format!("{url} {status}"))
            .collect();
        write!(
            f,
            "{} from the php-fpm pool at {}",
            answers.join(", "),
            self.address
        )
    }
}

impl Summary for Passed {}

/// The step: requests every URL with `build_dir` as the build to serve. An error (which
/// names the URL and what it answered) means the build must not go live.
pub(crate) fn step(settings: &Preflight, build_dir: &Path, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("preflight");
    let passed =
        check(settings, build_dir).context("preflight failed (the new build never went live)")?;
    steps::close(reporter, step, Duration::ZERO, &passed);
    Ok(())
}

fn check(settings: &Preflight, build_dir: &Path) -> Result<Passed> {
    let root = build_dir.join(PUBLIC);
    // The real path, as `$realpath_root` is: builds/<name> may be reached through a symlink.
    let root = root.canonicalize().with_context(|| {
        format!(
            "the build has no {PUBLIC}/ directory ({}), the web root the shipped nginx site \
             serves",
            root.display()
        )
    })?;
    let mut answers = Vec::new();
    for url in &settings.urls {
        let params = params(&root, url);
        let deadline = Instant::now() + settings.timeout;
        let response = fastcgi::request(&settings.fastcgi, &params, deadline, settings.timeout)
            .with_context(|| format!("GET {url} to the php-fpm pool at {}", settings.fastcgi))?;
        answers.push((url.clone(), judge(url, &response)?));
    }
    Ok(Passed {
        address: settings.fastcgi.clone(),
        answers,
    })
}

/// The status of a good answer, or why the answer fails the build.
fn judge(url: &str, response: &Response) -> Result<String> {
    let (status, body) = response.status_and_body();
    let body = without_tags(&body);
    let stderr = String::from_utf8_lossy(&response.stderr);
    let code: u16 = status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("GET {url} answered a malformed status `{status}`"))?;
    let fatal = [body.as_str(), &stderr]
        .iter()
        .flat_map(|text| text.lines())
        .any(|l| l.contains("PHP Fatal error") || l.contains("Fatal error:"));
    if code < 500 && !fatal {
        return Ok(status);
    }
    let mut lines: Vec<String> = stderr
        .lines()
        .chain(body.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(SHOWN_LINES)
        .map(|l| match l.char_indices().nth(300) {
            Some((at, _)) => format!("{}…", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    if lines.is_empty() {
        lines.push("(no output: see the pool's PHP error log)".into());
    }
    let what = if code >= 500 {
        format!("answered {status}")
    } else {
        format!("answered {status} with a PHP fatal error")
    };
    // The first line stands alone: the failure summary shows it by itself.
    bail!("GET {url} {what}\n  {}", lines.join("\n  "))
}

/// The body as text: PHP's `html_errors` wraps `Fatal error` in `<b>`.
fn without_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut inside = false;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' if inside => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// The FastCGI params nginx would send for `url` (the shipped site, with `fastcgi_params`):
/// a `.php` path runs that script (nginx's `.php` location: a missing one is a 404),
/// anything else the front controller.
fn params(root: &Path, url: &str) -> Vec<(String, String)> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let script = if path.ends_with(".php") {
        path
    } else {
        FRONT_CONTROLLER
    };
    let root_text = root.display().to_string();
    [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", script),
        ("REQUEST_URI", url),
        ("DOCUMENT_URI", script),
        ("DOCUMENT_ROOT", &root_text),
        ("SCRIPT_FILENAME", &format!("{root_text}{script}")),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "atomdeploy-hook"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "0"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        // php-cgi built with force-cgi-redirect wants it, as nginx's fastcgi_params says.
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "atomdeploy-hook preflight"),
        ("HTTP_ACCEPT", "*/*"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(stdout: &str, stderr: &str) -> Response {
        Response {
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            app_status: 0,
        }
    }

    #[test]
    fn a_status_of_500_or_more_or_a_fatal_error_fails_and_is_shown() {
        let ok = response("Content-type: text/html\r\n\r\nhello", "");
        assert_eq!(judge("/", &ok).unwrap(), "200 OK");
        let not_found = response("Status: 404 Not Found\r\n\r\nnope", "");
        assert_eq!(judge("/x", &not_found).unwrap(), "404 Not Found");
        let unavailable = response("Status: 503 Service Unavailable\r\n\r\ndown\n", "");
        let err = judge("/health", &unavailable).unwrap_err().to_string();
        assert_eq!(err, "GET /health answered 503 Service Unavailable\n  down");
        let fatal = response(
            "Content-type: text/html\r\n\r\n<br />\n<b>Fatal error</b>:  Uncaught Exception: boom",
            "",
        );
        let err = judge("/", &fatal).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "GET / answered 200 OK with a PHP fatal error\n  Fatal error:  Uncaught"
            ),
            "{err}"
        );
        let logged = response(
            "Status: 500 Internal Server Error\r\n\r\n",
            "PHP Fatal error:  Uncaught Error: Call to undefined function nope()",
        );
        let err = judge("/", &logged).unwrap_err().to_string();
        assert!(
            err.contains("\n  PHP Fatal error:  Uncaught Error"),
            "{err}"
        );
        let silent = response("Status: 500 Internal Server Error\r\n\r\n", "");
        let err = judge("/", &silent).unwrap_err().to_string();
        assert!(err.contains("no output"), "{err}");
    }

    #[test]
    fn a_url_goes_to_the_front_controller_of_the_build_as_nginx_would_send_it() {
        let dir = std::env::temp_dir().join(format!("preflight-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let get = |url: &str, key: &str| {
            params(&dir, url)
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap()
        };
        let root = dir.display().to_string();
        assert_eq!(
            get("/health?deep=1", "SCRIPT_FILENAME"),
            format!("{root}/index.php")
        );
        assert_eq!(get("/health?deep=1", "QUERY_STRING"), "deep=1");
        assert_eq!(get("/health?deep=1", "REQUEST_URI"), "/health?deep=1");
        assert_eq!(get("/health?deep=1", "DOCUMENT_ROOT"), root);
        assert_eq!(
            get("/status.php", "SCRIPT_FILENAME"),
            format!("{root}/status.php")
        );
        assert_eq!(get("/", "SCRIPT_NAME"), "/index.php");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
