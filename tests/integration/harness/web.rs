//! Real nginx and php-fpm on 127.0.0.1, configured from the project's own webserver/ files,
//! serving `latest/public` of a test server.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait_until;

pub struct WebServer {
    pub port: u16,
    nginx: Group,
    fpm: Group,
    dir: PathBuf,
}

impl WebServer {
    /// Starts php-fpm and nginx for the deploy root `root`, their files in `dir`.
    #[track_caller]
    pub fn start(root: &Path, dir: &Path) -> WebServer {
        WebServer::start_edited(root, dir, &|pool| pool, &|site| site)
    }

    /// As [`WebServer::start`], php-fpm running as the shipped pool says: as www-data, the
    /// web server's user, not as the test's user. Needs root; the deploy root must be open to
    /// www-data (as [`super::users::let_in`] makes it).
    #[track_caller]
    pub fn start_as_shipped(root: &Path, dir: &Path) -> WebServer {
        WebServer::start_with(root, dir, true, &|pool| pool, &|site| site)
    }

    /// As [`WebServer::start`], with the pool and the server block changed by `pool` and
    /// `site` (given the shipped files as adapted to this test). php-fpm counts as started
    /// once it says it is ready, so that it may listen on TCP.
    #[track_caller]
    pub fn start_edited(
        root: &Path,
        dir: &Path,
        edit_pool: &dyn Fn(String) -> String,
        edit_site: &dyn Fn(String) -> String,
    ) -> WebServer {
        WebServer::start_with(root, dir, false, edit_pool, edit_site)
    }

    #[track_caller]
    fn start_with(
        root: &Path,
        dir: &Path,
        as_shipped: bool,
        edit_pool: &dyn Fn(String) -> String,
        edit_site: &dyn Fn(String) -> String,
    ) -> WebServer {
        fs::create_dir_all(dir).unwrap();
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("webserver");
        // SAFETY: geteuid(2) reads the process's own user id; it cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let user = whoami();
        let socket = dir.join("fpm.sock");

        // php-fpm: the shipped pool, with this machine's socket, and (unless `as_shipped`)
        // this machine's user: most tests deploy as root into a private temporary directory,
        // whose shared/ is root's. (The listen lines first: `group = www-data` is in one.)
        let pool = fs::read_to_string(project.join("php-fpm-pool.conf"))
            .unwrap()
            .replace(
                "listen = /run/php/app.sock",
                &format!("listen = {}", socket.display()),
            )
            .replace("listen.owner = www-data", &format!("listen.owner = {user}"))
            .replace("listen.group = www-data", "");
        assert!(
            pool.contains("\nuser = www-data\ngroup = www-data\n"),
            "the shipped pool runs as www-data"
        );
        if as_root {
            // Where the pool's PHP logs its diagnostics: whichever user the pool runs as
            // (www-data, or another a test gives it) must be able to write it.
            let log = dir.join("php.log");
            fs::write(&log, "").unwrap();
            fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        }
        let pool = if as_shipped {
            assert!(
                as_root,
                "php-fpm runs a pool as www-data only when started as root"
            );
            pool
        } else {
            pool.replace("user = www-data", &format!("user = {user}"))
                .replace(
                    "group = www-data",
                    &format!("group = {}", if as_root { "root" } else { &user }),
                )
        };
        let pool = edit_pool(pool);
        let fpm_conf = dir.join("php-fpm.conf");
        fs::write(
            &fpm_conf,
            format!(
                "[global]\npid = {}\nerror_log = {}\ndaemonize = no\n\n{pool}\n\
                 ; What a worker prints outside a request (a start-up warning) reaches fpm.log.\n\
                 catch_workers_output = yes\n",
                dir.join("fpm.pid").display(),
                dir.join("fpm.log").display()
            ),
        )
        .unwrap();
        let mut fpm = Command::new(find_fpm());
        fpm.arg("--nodaemonize").arg("--fpm-config").arg(&fpm_conf);
        if as_root {
            fpm.arg("--allow-to-run-as-root");
        }
        // The shipped opcache.ini, as the production php.ini would have it.
        for line in fs::read_to_string(project.join("opcache.ini"))
            .unwrap()
            .lines()
        {
            if !line.starts_with(';') && line.contains('=') {
                fpm.arg("-d").arg(line);
            }
        }
        // Stricter than Debian's php.ini (which leaves out E_DEPRECATED), and into a file of
        // this test's own: any diagnostic the shipped files cause shows in php.log.
        fpm.arg("-d")
            .arg("error_reporting=-1")
            .arg("-d")
            .arg("log_errors=1")
            .arg("-d")
            .arg(format!("error_log={}", dir.join("php.log").display()));
        let fpm = Group::spawn(fpm, "php-fpm (scripts/install-deps installs it)");
        wait_until(
            Duration::from_secs(20),
            || {
                socket.exists()
                    || fs::read_to_string(dir.join("fpm.log"))
                        .is_ok_and(|log| log.contains("ready to handle connections"))
            },
            || {
                format!(
                    "php-fpm did not start: {}",
                    fs::read_to_string(dir.join("fpm.log")).unwrap_or_default()
                )
            },
        );

        // nginx: the shipped server block, pointed at this root, port and socket.
        fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params"))
            .expect("nginx (scripts/install-deps installs it)");
        let temp = dir.join("nginx-temp");
        fs::create_dir_all(&temp).unwrap();
        let (port, nginx) = start_nginx(dir, &|port| {
            let site = fs::read_to_string(project.join("nginx-site.conf"))
                .unwrap()
                .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
                // Tests reach nginx on 127.0.0.1 alone.
                .replace("    listen [::]:80;\n", "")
                .replace(
                    "/srv/app/latest/public",
                    &root.join("latest/public").display().to_string(),
                )
                .replace(
                    "unix:/run/php/app.sock",
                    &format!("unix:{}", socket.display()),
                );
            assert!(
                site.contains("$realpath_root$fastcgi_script_name"),
                "the shipped block must use $realpath_root"
            );
            let site = edit_site(site);
            format!(
                "daemon off;\nworker_processes 2;\n{}pid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 512; }}\n\
             http {{\n access_log off;\n client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n fastcgi_temp_path {t}/fastcgi;\n \
             uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n keepalive_requests 100000;\n{site}\n}}\n",
                if as_root { "user root;\n" } else { "" },
                pid = dir.join("nginx.pid").display(),
                log = dir.join("nginx.log").display(),
                t = temp.display(),
            )
        });
        WebServer {
            port,
            nginx,
            fpm,
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Where php-fpm listens, as deploy.yml's `reset_opcache:` and `preflight.fastcgi` take it.
    pub fn fastcgi(&self) -> String {
        format!("unix:{}", self.dir.join("fpm.sock").display())
    }

    pub fn error_log(&self) -> String {
        ["nginx.log", "fpm.log", "php.log"]
            .iter()
            .map(|log| fs::read_to_string(self.dir.join(log)).unwrap_or_default())
            .collect()
    }

    /// Every diagnostic PHP, php-fpm or nginx logged: PHP's own log (any line), nginx's
    /// error log (warn and above, e.g. "FastCGI sent in stderr: PHP message: ...") and
    /// php-fpm's (anything but its NOTICEs about starting and stopping).
    pub fn diagnostics(&self) -> Vec<String> {
        let read = |log: &str| fs::read_to_string(self.dir.join(log)).unwrap_or_default();
        let mut found: Vec<String> = read("php.log").lines().map(str::to_string).collect();
        found.extend(read("nginx.log").lines().map(str::to_string));
        found.extend(
            read("fpm.log")
                .lines()
                .filter(|l| !l.contains("] NOTICE: "))
                .map(str::to_string),
        );
        found
    }

    /// The process groups of nginx and php-fpm: each runs in its own, workers included.
    pub fn process_groups(&self) -> [i32; 2] {
        [self.nginx.pgid(), self.fpm.pgid()]
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops nginx and php-fpm, masters and workers, and waits until they are gone.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // SIGQUIT: a graceful stop for both (nginx closes idle keep-alive connections at
        // once); then SIGKILL for whatever is left.
        self.nginx.stop(libc::SIGQUIT);
        self.fpm.stop(libc::SIGQUIT);
    }

    /// Stops the server; then no process of its groups, nor any naming its directory, may be
    /// left.
    #[track_caller]
    pub fn stop_leaving_nothing(self) {
        let groups = self.process_groups();
        let dir = self.dir.clone();
        self.stop();
        let mut left = living(&groups);
        left.extend(naming(&dir));
        assert_eq!(
            left,
            Vec::<String>::new(),
            "web server processes outlived the test"
        );
    }

    /// [`WebServer::stop_leaving_nothing`], once nothing made PHP, php-fpm or nginx log a
    /// diagnostic: a warning the shipped files cause is an error page for a framework app.
    #[track_caller]
    pub fn stop_clean(self) {
        let diagnostics = self.diagnostics();
        self.stop_leaving_nothing();
        assert_eq!(
            diagnostics,
            Vec::<String>::new(),
            "PHP, php-fpm or nginx logged diagnostics"
        );
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        // Also when the test panics: nothing may outlive it.
        self.shutdown();
    }
}

/// A server's master process, started as the leader of a new process group that its
/// workers inherit, so that the whole server can be signalled and watched as one.
pub struct Group {
    child: Child,
    stopped: bool,
}

impl Group {
    pub fn spawn(mut command: Command, what: &str) -> Group {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Should the thread that started it die without unwinding (the test process
        // SIGKILLed, an abort), the master gets SIGTERM and stops its workers itself.
        // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
        // async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Group {
            child: command.spawn().expect(what),
            stopped: false,
        }
    }

    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the master has exited; if so it is reaped, and the group is not signalled
    /// again (its id may be another's by then).
    pub fn reaped(&mut self) -> bool {
        let gone = !matches!(self.child.try_wait(), Ok(None));
        self.stopped |= gone;
        gone
    }

    /// Signals the group, then SIGKILLs it if any member is still alive after a bounded
    /// wait, then reaps the master. Never panics: it runs in Drop, during unwinding too.
    pub fn stop(&mut self, signal: i32) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // The master is not reaped before the end, so its pid, the group id, cannot be
        // reused: these signals reach no one but the group.
        let pgid = self.pgid();
        // First the master alone, which stops its workers in order; the whole group only
        // when the master is dead already, or with SIGKILL when the group outlives the wait.
        let target = if living(&[pgid])
            .iter()
            .any(|p| p.starts_with(&format!("{pgid} ")))
        {
            pgid
        } else {
            -pgid
        };
        for (target, signal) in [(target, signal), (-pgid, libc::SIGKILL)] {
            // SAFETY: kill(2) of the process group this harness started (or its master).
            unsafe { libc::kill(target, signal) };
            let until = Instant::now() + Duration::from_secs(10);
            while !living(&[pgid]).is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if living(&[pgid]).is_empty() {
                break;
            }
        }
        let _ = self.child.wait();
    }
}

/// Live processes (zombies do not count) whose process group is one of `pgids`, as
/// "pid cmdline".
pub fn living(pgids: &[i32]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // Gone between read_dir and here: not living.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if *state == "Z" || *state == "X" {
            continue;
        }
        if pgrp.parse::<i32>().is_ok_and(|g| pgids.contains(&g)) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{pid} {}", cmdline.trim()));
        }
    }
    found
}

/// Live processes whose command line names `dir`: what a server of this test started,
/// wherever its process group is.
pub fn naming(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(cmdline) = fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.contains(&dir) {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                cmdline.trim()
            ));
        }
    }
    found
}

fn find_fpm() -> PathBuf {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/sbin")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("php-fpm")
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("php-fpm in /usr/sbin (scripts/install-deps installs it)")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx run in `dir` with the configuration `conf` makes for a free port, once it has bound
/// it: it writes its pid file then, so that an answer on the port is its own. The port was
/// free when asked for, but another test of this process may take it before nginx binds it:
/// then nginx exits at once and is started again on another one.
#[track_caller]
fn start_nginx(dir: &Path, conf: &dyn Fn(u16) -> String) -> (u16, Group) {
    let log = || fs::read_to_string(dir.join("nginx.log")).unwrap_or_default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let nginx_conf = dir.join("nginx.conf");
        fs::write(&nginx_conf, conf(port)).unwrap();
        let mut command = Command::new("nginx");
        command.arg("-p").arg(dir).arg("-c").arg(&nginx_conf);
        let mut nginx = Group::spawn(command, "nginx (scripts/install-deps installs it)");
        let mut exited = false;
        wait_until(
            Duration::from_secs(20),
            || {
                exited = nginx.reaped();
                exited
                    || (dir.join("nginx.pid").exists()
                        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            },
            || format!("nginx did not start: {}", log()),
        );
        if !exited {
            return (port, nginx);
        }
        assert!(
            attempt < 5 && log().contains("Address already in use"),
            "nginx did not start: {}",
            log()
        );
        // Its complaint about the port is not one the shipped files caused.
        fs::remove_file(dir.join("nginx.log")).unwrap();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A third nginx in front of several [`WebServer`]s, as a load balancer: round robin over
/// `upstream` backends, each answer carrying the backend in `X-Upstream`.
pub struct Balancer {
    pub port: u16,
    nginx: Group,
    dir: PathBuf,
}

impl Balancer {
    #[track_caller]
    pub fn start(dir: &Path, backends: &[u16]) -> Balancer {
        fs::create_dir_all(dir.join("temp")).unwrap();
        let servers: String = backends
            .iter()
            .map(|port| format!("  server 127.0.0.1:{port};\n"))
            .collect();
        // SAFETY: geteuid(2) reads the process's own user id; it cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let (port, nginx) = start_nginx(dir, &|port| {
            format!(
                "daemon off;\nworker_processes 2;\n{user}pid {d}/nginx.pid;\nerror_log {d}/nginx.log warn;\n\
                 events {{ worker_connections 512; }}\nhttp {{\n access_log off;\n \
                 client_body_temp_path {d}/temp/body;\n proxy_temp_path {d}/temp/proxy;\n \
                 fastcgi_temp_path {d}/temp/fastcgi;\n uwsgi_temp_path {d}/temp/uwsgi;\n \
                 scgi_temp_path {d}/temp/scgi;\n keepalive_requests 100000;\n \
                 upstream app {{\n{servers}  keepalive 16;\n }}\n \
                 server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://app;\n   \
                 proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n   \
                 add_header X-Upstream $upstream_addr always;\n  }}\n }}\n}}\n",
                user = if as_root { "user root;\n" } else { "" },
                d = dir.display(),
            )
        });
        Balancer {
            port,
            nginx,
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log: a backend refused or cut off shows here.
    pub fn diagnostics(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("nginx.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn process_group(&self) -> i32 {
        self.nginx.pgid()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stop(mut self) {
        self.nginx.stop(libc::SIGQUIT);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.nginx.stop(libc::SIGQUIT);
    }
}

/// An HTTP client for the test's servers: no proxy, every status an answer (not an error),
/// 10 s at most a request.
#[must_use]
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// GET `url`: its status and body.
pub fn get(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// GET `url`: its status, the value of its header `header` (if it has one) and its body.
pub fn get_with_header(url: &str, header: &str) -> (u16, Option<String>, String) {
    let mut response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    let value = response
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_string());
    (status, value, response.body_mut().read_to_string().unwrap())
}
