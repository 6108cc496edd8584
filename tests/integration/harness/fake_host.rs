//! Hosts of a group that are no atomdeploy servers, for what a broken or compromised host may
//! do to the primary: a bare repository whose post-receive hook is a script the test writes (a
//! host that floods, one that prints control characters), and a TCP listener that accepts
//! every connection and never says a word (a host whose sshd hangs, a black hole).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// `<dir>/<name>.git`, a bare repository whose post-receive hook is `hook` (a shell script,
/// run for every push the primary makes to it).
pub fn scripted_host(dir: &Path, name: &str, hook: &str) -> PathBuf {
    let repo = dir.join(format!("{name}.git"));
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    super::assert_success(&out, "git init --bare");
    let path = repo.join("hooks/post-receive");
    fs::write(&path, format!("#!/bin/sh\n{hook}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    repo
}

/// A TCP listener on `addr` that accepts and keeps every connection open without sending a
/// byte: ssh to it waits for the server's banner. Stops on drop.
pub struct SilentListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentListener {
    pub fn start(ip: Ipv4Addr) -> SilentListener {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            // Drop wakes the accept with a connection of its own once the flag is set.
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    held.push(stream);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        SilentListener {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// An ssh URL of a repository on it, as deploy.yml would list a host.
    pub fn url(&self) -> String {
        format!(
            "ssh://root@{}:{}/srv/app.git",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
