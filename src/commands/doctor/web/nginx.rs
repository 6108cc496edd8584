//! nginx: the server block(s) whose `root` is in this deploy root, and what their PHP
//! locations hand php-fpm.
//!
//! The configuration is what `nginx -T` prints (every file it really read, includes and all);
//! where nginx is not installed, or refuses the configuration, the files are read directly.
//! A deploy user's PATH lacks /usr/sbin, where Debian puts nginx, and `nginx -T` needs root
//! (it opens the pid and log files): run as that user, doctor finds nginx in /usr/sbin and
//! reads the files it may read, naming those it may not.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::FpmAddress;

use super::super::{Context, Finding};
use super::glob;

const CHECK: &str = "nginx";

/// What the server blocks serving this root hand to PHP.
pub(crate) struct Site {
    pub(crate) passes: Vec<Pass>,
}

/// One `fastcgi_pass` of a server block serving this root.
pub(crate) struct Pass {
    /// Where it connects; `None` when nginx only knows at request time (a variable).
    pub(crate) target: Option<FpmAddress>,
    pub(crate) raw: String,
    pub(crate) at: String,
    /// SCRIPT_FILENAME is built from `$realpath_root`: PHP is handed `builds/<name>/...`.
    pub(crate) resolved: bool,
}

/// One directive of nginx's configuration, includes expanded in place.
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
    at: String,
}

impl Directive {
    fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

pub(crate) fn check(context: &Context, out: &mut Vec<Finding>) -> Option<Site> {
    let file = context
        .options
        .nginx_config
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/nginx/nginx.conf"));
    // nginx reads a relative -c from its own prefix (/usr/share/nginx), not from here.
    let file = std::path::absolute(&file).unwrap_or(file);
    if !file.exists() {
        out.push(Finding::warn(
            CHECK,
            format!(
                "{} does not exist: nginx not checked (the root may be served by Apache or \
                 another web server)",
                file.display()
            ),
            "give nginx's main configuration file with --nginx-config FILE",
        ));
        return None;
    }
    let (source, how) = Source::load(&file);
    let (config, loops, too_deep) = read(&source, &file);
    let unreadable = source.unreadable();
    if !unreadable.is_empty() {
        out.push(unreadable_files(&unreadable, &how));
    }
    if let Some(at) = too_deep {
        out.push(Finding::warn(
            CHECK,
            format!(
                "blocks nested more than {DEEPEST} deep (from {at}) were not read: what they \
                 hold is not checked"
            ),
            "nest nginx's blocks as webserver/nginx-site.conf does, a few levels deep",
        ));
    }
    for looped in loops {
        out.push(Finding::fail(
            CHECK,
            format!(
                "{} includes itself (through the files it includes): nginx cannot load this \
                 configuration",
                looped.display()
            ),
            "remove the include that reaches back to it (a glob such as `include conf.d/*.conf;` \
             inside conf.d/ matches its own file)",
        ));
    }
    let servers = serving(&config, context);
    if servers.is_empty() {
        out.push(no_server(&file, &how, context, !unreadable.is_empty()));
        return None;
    }
    let upstreams = upstreams(&config);
    let mut passes = Vec::new();
    for server in servers {
        roots(server, context, out);
        for mut located in server_passes(server, &config, &upstreams) {
            located.pass.resolved = params(&located, context, out);
            passes.push(located.pass);
        }
    }
    if passes.is_empty() {
        out.push(Finding::warn(
            CHECK,
            "no location of the server block passes requests to php-fpm (no fastcgi_pass)",
            "add the `location ~ \\.php$` block of webserver/nginx-site.conf",
        ));
    }
    Some(Site { passes })
}

/// Files the configuration includes that this user may not read (doctor run as the deploy
/// user, the site's key or a password in a root-only file).
fn unreadable_files(files: &[String], how: &str) -> Finding {
    Finding::warn(
        CHECK,
        format!(
            "cannot read {} ({how}): what {} hold is not checked",
            files.join(", "),
            if files.len() == 1 {
                "it would"
            } else {
                "they would"
            }
        ),
        "run doctor as root (`sudo atomdeploy-hook doctor …`), or let this user read them",
    )
}

/// No server block serves this root: a FAIL, unless some files could not be read, where the
/// block may be.
fn no_server(file: &Path, how: &str, context: &Context, skipped_files: bool) -> Finding {
    let seen = format!(
        "no server block in {} ({how}) has its root in {}",
        file.display(),
        context.layout.latest.display()
    );
    let fix = format!(
        "add the server block of webserver/nginx-site.conf with `root {}/public;` \
         (and enable it), then `nginx -t && systemctl reload nginx`",
        context.layout.latest.display()
    );
    if skipped_files {
        Finding::warn(
            CHECK,
            format!("{seen} among the files this user can read"),
            fix,
        )
    } else {
        Finding::fail(
            CHECK,
            format!("{seen}: the site is not served from this deploy root"),
            fix,
        )
    }
}

/// Where the configuration's files come from: nginx's own dump, or the disk (with the files
/// that could not be read there, for a warning).
enum Source {
    Dump(BTreeMap<PathBuf, String>),
    Files(RefCell<BTreeSet<PathBuf>>),
}

/// Where nginx is when it is not on PATH: Debian installs it in /usr/sbin, which a
/// non-root user's PATH leaves out.
const SBIN: [&str; 2] = ["/usr/sbin/nginx", "/sbin/nginx"];

fn nginx_program() -> Option<PathBuf> {
    which::which("nginx").ok().or_else(|| {
        SBIN.iter().map(PathBuf::from).find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

impl Source {
    /// nginx's dump when it gives one; and how the configuration was read, for the findings.
    fn load(file: &Path) -> (Source, String) {
        let files = || Source::Files(RefCell::default());
        let Some(nginx) = nginx_program() else {
            return (
                files(),
                "read directly: nginx is not installed here".to_string(),
            );
        };
        let run = Command::new(&nginx).arg("-T").arg("-c").arg(file).output();
        match run {
            Ok(done) if done.status.success() => (
                Source::Dump(split_dump(&String::from_utf8_lossy(&done.stdout))),
                "as `nginx -T` prints it".to_string(),
            ),
            // Not root: nginx cannot open its pid or log files, whatever the configuration.
            Ok(done) if String::from_utf8_lossy(&done.stderr).contains("Permission denied") => (
                files(),
                format!(
                    "read directly: `{} -T` needs root to open its pid and log files",
                    nginx.display()
                ),
            ),
            Ok(done) => {
                let why = String::from_utf8_lossy(&done.stderr);
                let why = why.lines().find(|l| l.contains("emerg")).unwrap_or("");
                (
                    files(),
                    format!("read directly: `nginx -T` failed: {}", why.trim()),
                )
            }
            Err(_) => (
                files(),
                format!("read directly: {} does not run", nginx.display()),
            ),
        }
    }

    fn read(&self, path: &Path) -> Option<String> {
        match self {
            Source::Dump(files) => files.get(path).cloned(),
            Source::Files(unreadable) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(err) => {
                    if err.kind() == std::io::ErrorKind::PermissionDenied {
                        unreadable.borrow_mut().insert(path.to_path_buf());
                    }
                    None
                }
            },
        }
    }

    /// The files that were there but could not be read, for the warning.
    fn unreadable(&self) -> Vec<String> {
        match self {
            Source::Dump(_) => Vec::new(),
            Source::Files(unreadable) => unreadable
                .borrow()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }

    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        match self {
            Source::Dump(files) => files
                .keys()
                .filter(|path| {
                    let (a, b): (Vec<_>, Vec<_>) =
                        (path.components().collect(), pattern.components().collect());
                    a.len() == b.len()
                        && a.iter().zip(&b).all(|(a, b)| {
                            glob::matches(
                                &b.as_os_str().to_string_lossy(),
                                &a.as_os_str().to_string_lossy(),
                            )
                        })
                })
                .cloned()
                .collect(),
            Source::Files(_) => glob::expand(pattern),
        }
    }
}

/// `nginx -T`'s output: each file it read, after a `# configuration file PATH:` line.
fn split_dump(dump: &str) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut current: Option<(PathBuf, String)> = None;
    for line in dump.lines() {
        if let Some(path) = line
            .strip_prefix("# configuration file ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            files.extend(current.take());
            current = Some((PathBuf::from(path), String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    files.extend(current);
    files
}

/// The whole configuration from `file`, includes expanded (relative ones from the main
/// file's directory, as nginx does), and the files that include themselves (through others):
/// such an include is not followed, or a loop through a glob (`include conf.d/*.conf;` in a
/// file of conf.d/) would read files without end.
fn read(source: &Source, file: &Path) -> (Vec<Directive>, Vec<PathBuf>, Option<String>) {
    let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let includes = RefCell::new(Includes::default());
    let config = parse_file(source, &base, &[file.to_path_buf()], &includes, 0);
    let includes = includes.into_inner();
    (config, includes.loops, includes.too_deep)
}

/// Blocks nested deeper than this (in all files together) are not read: nginx's own
/// configurations nest a few levels, and reading on would overflow doctor's stack.
const DEEPEST: usize = 100;

/// Files read at most: files in a loop that a glob includes are each left out of their own
/// chain, but the others can still be read in every order (n! chains for n files).
const MOST_READS: usize = 10_000;

#[derive(Default)]
struct Includes {
    loops: Vec<PathBuf>,
    reads: usize,
    /// Where a block nested deeper than [`DEEPEST`] begins, if one does.
    too_deep: Option<String>,
}

fn parse_file(
    source: &Source,
    base: &Path,
    chain: &[PathBuf],
    includes: &RefCell<Includes>,
    nesting: usize,
) -> Vec<Directive> {
    let Some(file) = chain.last() else {
        return Vec::new();
    };
    let Some(text) = source.read(file) else {
        return Vec::new();
    };
    let tokens = tokenize(&text);
    let mut at = 0;
    let mut reader = Reader {
        source,
        base,
        chain,
        includes,
        nesting,
    };
    reader.block(&tokens, &mut at)
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semi,
    Open,
    Close,
}

/// nginx's lexer, as far as finding directives needs: words (quoted or not), `;`, `{`, `}`,
/// `#` comments; `${var}` stays inside its word.
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            ';' => tokens.push((Token::Semi, line)),
            '{' => tokens.push((Token::Open, line)),
            '}' => tokens.push((Token::Close, line)),
            '"' | '\'' => {
                let mut word = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => word.extend(chars.next()),
                        c if c == '"' || c == '\'' => break,
                        '\n' => {
                            line += 1;
                            word.push(c)
                        }
                        c => word.push(c),
                    }
                }
                tokens.push((Token::Word(word), line));
            }
            c => {
                let mut word = String::from(c);
                let mut variable = false;
                while let Some(&next) = chars.peek() {
                    let ends = match next {
                        '{' if word.ends_with('$') => {
                            variable = true;
                            false
                        }
                        '}' if variable => {
                            variable = false;
                            false
                        }
                        '{' | '}' | ';' => true,
                        c => c.is_whitespace(),
                    };
                    if ends {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    tokens
}

struct Reader<'a> {
    source: &'a Source,
    base: &'a Path,
    /// The file read, last, and those that included it.
    chain: &'a [PathBuf],
    includes: &'a RefCell<Includes>,
    /// How many blocks enclose the one being read.
    nesting: usize,
}

impl Reader<'_> {
    /// Directives up to the end of the block (or of the tokens).
    fn block(&mut self, tokens: &[(Token, usize)], at: &mut usize) -> Vec<Directive> {
        let mut out = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut line = 0;
        while let Some((token, l)) = tokens.get(*at) {
            *at += 1;
            match token {
                Token::Word(w) => {
                    if words.is_empty() {
                        line = *l;
                    }
                    words.push(w.clone());
                }
                Token::Semi => self.directive(std::mem::take(&mut words), None, line, &mut out),
                Token::Open if self.nesting >= DEEPEST => {
                    self.includes.borrow_mut().too_deep.get_or_insert_with(|| {
                        let file = self.chain.last().map(|f| f.display().to_string());
                        format!("{}:{l}", file.unwrap_or_default())
                    });
                    skip_block(tokens, at);
                    words.clear();
                }
                Token::Open => {
                    self.nesting += 1;
                    let inner = self.block(tokens, at);
                    self.nesting -= 1;
                    self.directive(std::mem::take(&mut words), Some(inner), line, &mut out);
                }
                Token::Close => break,
            }
        }
        out
    }

    fn directive(
        &mut self,
        words: Vec<String>,
        block: Option<Vec<Directive>>,
        line: usize,
        out: &mut Vec<Directive>,
    ) {
        let mut words = words.into_iter();
        let Some(name) = words.next() else {
            return;
        };
        let args: Vec<String> = words.collect();
        if name == "include" && block.is_none() && self.chain.len() <= 16 {
            if let Some(pattern) = args.first() {
                for file in self.source.expand(&self.base.join(pattern)) {
                    let mut includes = self.includes.borrow_mut();
                    if self.chain.contains(&file) {
                        if !includes.loops.contains(&file) {
                            includes.loops.push(file);
                        }
                        continue;
                    }
                    if includes.reads >= MOST_READS {
                        continue;
                    }
                    includes.reads += 1;
                    drop(includes);
                    let mut chain = self.chain.to_vec();
                    chain.push(file);
                    out.extend(parse_file(
                        self.source,
                        self.base,
                        &chain,
                        self.includes,
                        self.nesting,
                    ));
                }
            }
            return;
        }
        out.push(Directive {
            name,
            args,
            block,
            at: format!(
                "{}:{line}",
                self.chain
                    .last()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            ),
        });
    }
}

/// Past the `}` that closes the block just opened, without reading what it holds.
fn skip_block(tokens: &[(Token, usize)], at: &mut usize) {
    let mut open = 1usize;
    while let Some((token, _)) = tokens.get(*at) {
        *at += 1;
        match token {
            Token::Open => open += 1,
            Token::Close if open == 1 => return,
            Token::Close => open -= 1,
            _ => {}
        }
    }
}

/// What a `root` path is to this deploy root.
#[derive(Debug, PartialEq)]
enum Served {
    /// `latest/<rest>`.
    Live(PathBuf),
    Build,
    Application,
    Other,
}

fn classify(value: &str, context: &Context) -> Option<Served> {
    let value = Path::new(value.trim_end_matches('/'));
    let given = std::path::absolute(&context.options.root).unwrap_or_default();
    [&context.layout.root, &given].iter().find_map(|root| {
        let rest = value.strip_prefix(root).ok()?;
        let mut parts = rest.components();
        Some(
            match parts.next().map(|c| c.as_os_str().to_string_lossy()) {
                Some(first) if first == "latest" => Served::Live(parts.as_path().to_path_buf()),
                Some(first) if first == "builds" => Served::Build,
                Some(first) if first == "application" => Served::Application,
                _ => Served::Other,
            },
        )
    })
}

fn blocks<'a>(list: &'a [Directive], name: &'a str) -> impl Iterator<Item = &'a Directive> {
    list.iter()
        .filter(move |d| d.name == name && d.block.is_some())
}

/// The `server` blocks (of `http`) with a `root`, at any level, in this deploy root.
fn serving<'a>(config: &'a [Directive], context: &Context) -> Vec<&'a Directive> {
    blocks(config, "http")
        .flat_map(|http| blocks(http.children(), "server"))
        .filter(|server| {
            let mut found = false;
            walk(server.children(), &mut |d| {
                found |= d.name == "root"
                    && d.args
                        .first()
                        .is_some_and(|r| classify(r, context).is_some());
            });
            found
        })
        .collect()
}

/// Every directive in `list` and in the blocks within it.
fn walk<'a>(list: &'a [Directive], visit: &mut dyn FnMut(&'a Directive)) {
    for directive in list {
        visit(directive);
        walk(directive.children(), visit);
    }
}

fn label(server: &Directive) -> String {
    let arg = |name: &str| {
        server
            .children()
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.args.join(" "))
            .unwrap_or_else(|| "-".to_string())
    };
    format!(
        "server {} (listen {}, {})",
        arg("server_name"),
        arg("listen"),
        server.at
    )
}

/// A finding for each `root` of the server block in this deploy root.
fn roots(server: &Directive, context: &Context, out: &mut Vec<Finding>) {
    let live = format!("{}/public", context.layout.latest.display());
    let fix = format!(
        "`root {live};` in this server block (as webserver/nginx-site.conf), then `nginx -t && \
         systemctl reload nginx`"
    );
    let mut roots = Vec::new();
    walk(server.children(), &mut |d| {
        if d.name == "root" {
            roots.push(d);
        }
    });
    for root in roots {
        let Some(value) = root.args.first() else {
            continue;
        };
        let seen = format!("{} has `root {value}` ({})", label(server), root.at);
        out.push(match classify(value, context) {
            None => continue,
            Some(Served::Live(rest)) if rest.as_os_str().is_empty() => Finding::warn(
                CHECK,
                format!("{seen}: the whole build is public (deploy.yml, .env, vendor/)"),
                fix.clone(),
            ),
            Some(Served::Live(_)) => Finding::ok(CHECK, seen),
            Some(Served::Build) => Finding::fail(
                CHECK,
                format!(
                    "{seen}: a build directory, so the site keeps serving that one build after \
                     every deploy and rollback"
                ),
                fix.clone(),
            ),
            Some(Served::Application) => Finding::fail(
                CHECK,
                format!(
                    "{seen}: application/ is the checkout each deploy rewrites while composer \
                     runs in it, so requests see a half-updated tree"
                ),
                fix.clone(),
            ),
            Some(Served::Other) => Finding::fail(
                CHECK,
                format!("{seen}: not through `latest`, so it never switches to a new build"),
                fix.clone(),
            ),
        });
    }
}

/// A `fastcgi_pass` and the `fastcgi_param`s that go with it (nginx takes them from the
/// innermost level that has any).
struct Located<'a> {
    pass: Pass,
    params: Vec<&'a Directive>,
}

fn upstreams(config: &[Directive]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for http in blocks(config, "http") {
        for upstream in blocks(http.children(), "upstream") {
            let server = upstream.children().iter().find(|d| d.name == "server");
            if let (Some(name), Some(first)) =
                (upstream.args.first(), server.and_then(|s| s.args.first()))
            {
                found.insert(name.clone(), first.clone());
            }
        }
    }
    found
}

fn server_passes<'a>(
    server: &'a Directive,
    config: &'a [Directive],
    upstreams: &BTreeMap<String, String>,
) -> Vec<Located<'a>> {
    let http: Vec<&[Directive]> = blocks(config, "http").map(|h| h.children()).collect();
    let mut levels: Vec<&'a [Directive]> = http;
    levels.push(server.children());
    let mut found = Vec::new();
    locations(&mut levels, upstreams, &mut found);
    found
}

fn locations<'a>(
    levels: &mut Vec<&'a [Directive]>,
    upstreams: &BTreeMap<String, String>,
    found: &mut Vec<Located<'a>>,
) {
    let here = *levels.last().expect("a level");
    if let Some(pass) = here.iter().find(|d| d.name == "fastcgi_pass") {
        let params = levels
            .iter()
            .rev()
            .find(|level| level.iter().any(|d| d.name == "fastcgi_param"))
            .map(|level| level.iter().filter(|d| d.name == "fastcgi_param").collect())
            .unwrap_or_default();
        let raw = pass.args.first().cloned().unwrap_or_default();
        let target = upstreams.get(&raw).unwrap_or(&raw);
        found.push(Located {
            pass: Pass {
                target: address(target),
                raw: raw.clone(),
                at: pass.at.clone(),
                resolved: false,
            },
            params,
        });
    }
    for location in blocks(here, "location") {
        levels.push(location.children());
        locations(levels, upstreams, found);
        levels.pop();
    }
}

/// `fastcgi_pass`'s address (`unix:/path`, `host:port`) as the hook names pools.
pub(crate) fn address(text: &str) -> Option<FpmAddress> {
    if text.contains('$') {
        return None;
    }
    if let Some(path) = text.strip_prefix("unix:") {
        return Some(FpmAddress::Unix(PathBuf::from(path)));
    }
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(FpmAddress::Tcp {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

/// The last value given to the parameter `name` (php-fpm keeps the last of repeated ones).
fn param<'a>(params: &[&'a Directive], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|d| d.args.first().map(String::as_str) == Some(name))
        .and_then(|d| d.args.get(1))
        .map(String::as_str)
}

/// Whether PHP is handed the build's own path, and what that means without `reset_opcache`.
/// Returns whether PHP is handed the build's own path.
fn params(located: &Located, context: &Context, out: &mut Vec<Finding>) -> bool {
    let pass = &located.pass;
    let reset = context
        .plan
        .as_ref()
        .and_then(|p| p.config.reset_opcache.as_ref());
    let script = param(&located.params, "SCRIPT_FILENAME");
    let document = param(&located.params, "DOCUMENT_ROOT");
    let where_ = format!("the PHP location ({}, fastcgi_pass {})", pass.at, pass.raw);
    let fix = "`fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;` and \
               `fastcgi_param DOCUMENT_ROOT $realpath_root;` after `include fastcgi_params;` \
               (as webserver/nginx-site.conf), or `reset_opcache: <the pool's listen>` in \
               deploy.yml";
    let Some(script) = script else {
        out.push(Finding::fail(
            CHECK,
            format!("{where_} sets no SCRIPT_FILENAME: php-fpm cannot find the script"),
            fix,
        ));
        return false;
    };
    let resolved = script.contains("$realpath_root");
    out.push(if resolved {
        Finding::ok(CHECK, format!("{where_} passes SCRIPT_FILENAME {script}"))
    } else if let Some(reset) = reset {
        Finding::ok(
            CHECK,
            format!(
                "{where_} passes SCRIPT_FILENAME {script} (through `latest`), and deploy.yml \
                 resets the pool's opcache at {reset} after each switch"
            ),
        )
    } else {
        Finding::fail(
            CHECK,
            format!(
                "{where_} passes SCRIPT_FILENAME {script}: PHP is handed the path through \
                 `latest`, the same for every build, and opcache and PHP's realpath cache keep \
                 serving the old build after each switch (reset_opcache is not set)"
            ),
            fix,
        )
    });
    if resolved && reset.is_none() && document.is_some_and(|d| !d.contains("$realpath_root")) {
        out.push(Finding::warn(
            CHECK,
            format!(
                "{where_} passes DOCUMENT_ROOT {}: code that includes files from \
                 $_SERVER['DOCUMENT_ROOT'] reads them through `latest` and may get the old build",
                document.unwrap_or_default()
            ),
            "`fastcgi_param DOCUMENT_ROOT $realpath_root;` after `include fastcgi_params;`",
        ));
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lexer_keeps_quoted_words_regex_braces_and_variables() {
        let tokens =
            tokenize("location ~ \\.php$ { # c\n fastcgi_param A \"x y\";\n set $a ${b}; }\n");
        let words: Vec<String> = tokens
            .iter()
            .map(|(t, _)| match t {
                Token::Word(w) => w.clone(),
                Token::Semi => ";".into(),
                Token::Open => "{".into(),
                Token::Close => "}".into(),
            })
            .collect();
        assert_eq!(
            words,
            [
                "location",
                "~",
                "\\.php$",
                "{",
                "fastcgi_param",
                "A",
                "x y",
                ";",
                "set",
                "$a",
                "${b}",
                ";",
                "}"
            ]
        );
    }

    #[test]
    fn fastcgi_pass_addresses() {
        assert_eq!(
            address("unix:/run/php/app.sock"),
            Some(FpmAddress::Unix("/run/php/app.sock".into()))
        );
        assert_eq!(
            address("127.0.0.1:9000"),
            Some(FpmAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            })
        );
        assert_eq!(address("$backend"), None);
        assert_eq!(address("php"), None);
    }
}
