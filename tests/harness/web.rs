//! Real nginx and php-fpm on 127.0.0.1, configured from the project's own webserver/ files,
//! serving `latest/public` of a test server.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub struct WebServer {
    pub port: u16,
    nginx: Child,
    fpm: Child,
    dir: PathBuf,
}

impl WebServer {
    /// Starts php-fpm and nginx for the deploy root `root`, their files in `dir`.
    #[track_caller]
    pub fn start(root: &Path, dir: &Path) -> WebServer {
        fs::create_dir_all(dir).unwrap();
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("webserver");
        let as_root = unsafe { libc::geteuid() } == 0;
        let user = whoami();
        let socket = dir.join("fpm.sock");

        // php-fpm: the shipped pool, with this machine's user and socket.
        let pool = fs::read_to_string(project.join("php-fpm-pool.conf"))
            .unwrap()
            .replace("user = deploy", &format!("user = {user}"))
            .replace(
                "group = deploy",
                &format!("group = {}", if as_root { "root" } else { &user }),
            )
            .replace(
                "listen = /run/php/app.sock",
                &format!("listen = {}", socket.display()),
            )
            .replace("listen.owner = www-data", &format!("listen.owner = {user}"))
            .replace("listen.group = www-data", "");
        let fpm_conf = dir.join("php-fpm.conf");
        fs::write(
            &fpm_conf,
            format!(
                "[global]\npid = {}\nerror_log = {}\ndaemonize = no\n\n{pool}",
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
        let fpm = fpm
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-fpm (scripts/install-deps installs it)");
        wait_until(
            Duration::from_secs(20),
            || socket.exists(),
            || {
                format!(
                    "php-fpm did not start: {}",
                    fs::read_to_string(dir.join("fpm.log")).unwrap_or_default()
                )
            },
        );

        // nginx: the shipped server block, pointed at this root, port and socket.
        let port = free_port();
        let site = fs::read_to_string(project.join("nginx-site.conf"))
            .unwrap()
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
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
        fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params"))
            .expect("nginx (scripts/install-deps installs it)");
        let temp = dir.join("nginx-temp");
        fs::create_dir_all(&temp).unwrap();
        let conf = format!(
            "daemon off;\nworker_processes 2;\n{}pid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 512; }}\n\
             http {{\n access_log off;\n client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n fastcgi_temp_path {t}/fastcgi;\n \
             uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n keepalive_requests 100000;\n{site}\n}}\n",
            if as_root { "user root;\n" } else { "" },
            pid = dir.join("nginx.pid").display(),
            log = dir.join("nginx.log").display(),
            t = temp.display(),
        );
        let nginx_conf = dir.join("nginx.conf");
        fs::write(&nginx_conf, conf).unwrap();
        let nginx = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&nginx_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        wait_until(
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || {
                format!(
                    "nginx did not start: {}",
                    fs::read_to_string(dir.join("nginx.log")).unwrap_or_default()
                )
            },
        );
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

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("nginx.log")).unwrap_or_default()
            + &fs::read_to_string(self.dir.join("fpm.log")).unwrap_or_default()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        // SIGQUIT: a graceful stop for both; then make sure.
        for child in [&mut self.nginx, &mut self.fpm] {
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
        }
        for child in [&mut self.nginx, &mut self.fpm] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
