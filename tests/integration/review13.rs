//! A hostile review of issue #13 (doctor, install --web-user, environments): each test is an
//! attack that once broke something a user would notice.

use std::fs;
use std::path::PathBuf;

use crate::harness::{BIN, Server, assert_success};

/// Installs adding roots to one repository at the same moment (two operators, a config
/// management run) each read the hook's list of roots and write it back with their own added:
/// without a lock every install but the last one is lost from the hook, and two of them may
/// both take the repository's own `rollback`/`replay` branches.
#[test]
fn installs_adding_roots_at_once_lose_none() {
    let main = Server::install();
    let roots: Vec<(String, PathBuf)> = (0..6)
        .map(|i| (format!("env{i}"), main.base().join(format!("srv-env{i}"))))
        .collect();
    let running: Vec<_> = roots
        .iter()
        .map(|(branch, root)| {
            main.command(BIN)
                .arg("install")
                .arg("--repo")
                .arg(&main.repo)
                .arg("--root")
                .arg(root)
                .args(["--branch", branch])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in running {
        assert_success(&child.wait_with_output().unwrap(), "a concurrent install");
    }
    let hook = fs::read_to_string(main.repo.join("hooks/post-receive")).unwrap();
    for (branch, root) in &roots {
        assert!(
            hook.contains(&format!("'{}'", root.display())),
            "{} lost from the hook: {hook}",
            root.display()
        );
        let own = fs::read_to_string(root.join(".atomdeploy/control-branches")).unwrap();
        assert_eq!(
            own,
            format!("rollback: rollback-{branch}\nreplay: replay-{branch}\n")
        );
    }
    assert!(hook.contains(&format!("--root '{}'", main.root.display())));
}
