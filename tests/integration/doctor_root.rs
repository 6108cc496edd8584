//! `atomdeploy-hook doctor`'s checks of the deploy root (hook, fsck, deploy.yml, tools, disk,
//! latest, freeze): silent on a healthy root, and each one catching a set-up broken on
//! purpose, with its fix, without changing anything.
//!
//! The web checks (php-fpm, nginx, opcache) depend on this machine's server set-up; these
//! tests look only at the lines of the root's checks.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use atomdeploy_hook::receive::group::Line;

use crate::harness::tmpfs::Tmpfs;
use crate::harness::{BIN, Server, assert_success};

/// The root's checks: a healthy root has an `ok` line for each and nothing else from them.
const ROOT_CHECKS: &[&str] = &[
    "deploy.yml",
    "hook",
    "fsck",
    "tools",
    "disk",
    "latest",
    "owner",
];

/// What doctor printed: each finding's level, check, message and fix.
struct Report {
    out: Output,
    findings: Vec<(String, String, String, String)>,
}

impl Report {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
            + &String::from_utf8_lossy(&self.out.stderr)
    }

    fn of(&self, check: &str) -> Vec<&(String, String, String, String)> {
        self.findings.iter().filter(|f| f.1 == check).collect()
    }

    /// The one finding of `check` at `level` whose message has `seen`; its fix must have
    /// `fix`. Returns the message.
    #[track_caller]
    fn has(&self, level: &str, check: &str, seen: &str, fix: &str) -> String {
        let found = self
            .of(check)
            .into_iter()
            .find(|f| f.0 == level && f.2.contains(seen));
        let Some(found) = found else {
            panic!(
                "no `{level} {check}: …{seen}…` line; doctor printed:\n{}",
                self.text()
            )
        };
        assert!(
            found.3.contains(fix),
            "the fix of `{check}` should say `{fix}`; doctor printed:\n{}",
            self.text()
        );
        found.2.clone()
    }

    /// A finding of one of the root's checks broke a deploy or a request: exit non-zero.
    #[track_caller]
    fn failed(&self) {
        assert!(
            !self.out.status.success(),
            "doctor should exit non-zero on a FAIL; it printed:\n{}",
            self.text()
        );
    }
}

fn parse(out: Output) -> Report {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut findings: Vec<(String, String, String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(fix) = line.trim_start().strip_prefix("fix:")
            && line.starts_with(' ')
        {
            if let Some(last) = findings.last_mut() {
                last.3 = fix.trim().to_string();
            }
            continue;
        }
        if line.starts_with(' ') {
            if let Some(last) = findings.last_mut() {
                last.3.push('\n');
                last.3.push_str(line.trim());
            }
            continue;
        }
        let Some((level, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((check, message)) = rest.trim_start().split_once(": ") else {
            continue;
        };
        findings.push((
            level.to_string(),
            check.to_string(),
            message.to_string(),
            String::new(),
        ));
    }
    Report { out, findings }
}

fn doctor(server: &Server) -> Report {
    parse(server.run(&["doctor", "--nginx-config", "/nonexistent"]))
}

fn deployed() -> Server {
    let server = Server::install();
    server.clone_fixture("example-app").push_main().success();
    server
}

/// Every path of the root and of the repository with its mode and its content or target:
/// doctor must leave all of it as it was.
fn everything(server: &Server) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for dir in [&server.root, &server.repo] {
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let what = if meta.file_type().is_symlink() {
                fs::read_link(entry.path()).unwrap().display().to_string()
            } else if meta.is_file() {
                String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into_owned()
            } else {
                String::new()
            };
            out.push((entry.path().display().to_string(), meta.mode(), what));
        }
    }
    out
}

/// Runs doctor on a broken root and checks that it changed nothing there.
#[track_caller]
fn doctor_unchanged(server: &Server) -> Report {
    let before = everything(server);
    let report = doctor(server);
    assert!(
        everything(server) == before,
        "doctor changed the root or the repository"
    );
    report
}

fn hook(server: &Server) -> PathBuf {
    server.repo.join("hooks").join("post-receive")
}

#[test]
fn a_healthy_root_passes_every_root_check() {
    let server = deployed();
    let before = server.state();
    let report = doctor(&server);
    server.assert_unchanged_since(&before);
    for check in ROOT_CHECKS {
        let findings = report.of(check);
        assert!(
            !findings.is_empty(),
            "no `{check}` line; doctor printed:\n{}",
            report.text()
        );
        for f in findings {
            assert_eq!(
                f.0,
                "ok",
                "`{check}` on a healthy root; doctor printed:\n{}",
                report.text()
            );
        }
    }
    assert!(report.of("freeze").is_empty(), "{}", report.text());
    report.has("ok", "tools", "php: ", "");
    report.has("ok", "tools", "composer: ", "");
}

#[test]
fn a_missing_hook_fails() {
    let server = deployed();
    fs::remove_file(hook(&server)).unwrap();
    let report = doctor_unchanged(&server);
    let message = report.has(
        "FAIL",
        "hook",
        "is missing",
        &format!("atomdeploy-hook install --repo {}", server.repo.display()),
    );
    assert!(message.contains(&hook(&server).display().to_string()));
    report.failed();
}

#[test]
fn a_hook_git_cannot_run_fails() {
    let server = deployed();
    fs::set_permissions(hook(&server), fs::Permissions::from_mode(0o644)).unwrap();
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "hook",
        "not executable",
        &format!("chmod u+x {}", hook(&server).display()),
    );
    report.failed();
}

#[test]
fn a_hook_for_another_root_fails() {
    let server = deployed();
    let root = server.root.display().to_string();
    let text = fs::read_to_string(hook(&server)).unwrap();
    assert!(text.contains(&root), "{text}");
    fs::write(hook(&server), text.replace(&root, "/srv/another-app")).unwrap();
    let report = doctor_unchanged(&server);
    let message = report.has(
        "FAIL",
        "hook",
        "does not deploy into",
        "atomdeploy-hook install",
    );
    assert!(message.contains("/srv/another-app"), "{message}");
    report.failed();
}

#[test]
fn a_hook_serving_several_roots_passes_for_each() {
    let server = deployed();
    let text = fs::read_to_string(hook(&server)).unwrap();
    let text = text.replace(" --root ", " --root /srv/staging --root ");
    fs::write(hook(&server), text).unwrap();
    let report = doctor_unchanged(&server);
    report.has("ok", "hook", "runs", "");
}

#[test]
fn a_hook_whose_program_is_gone_fails() {
    let server = deployed();
    let text = fs::read_to_string(hook(&server)).unwrap();
    let binary = fs::canonicalize(BIN).unwrap().display().to_string();
    assert!(text.contains(&binary), "{text}");
    fs::write(
        hook(&server),
        text.replace(&binary, "/opt/gone/atomdeploy-hook"),
    )
    .unwrap();
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "hook",
        "/opt/gone/atomdeploy-hook, which is missing",
        "atomdeploy-hook install",
    );
    report.failed();
}

#[test]
fn fsck_objects_off_fails() {
    let server = deployed();
    server.repo_git(&["config", "receive.fsckObjects", "false"]);
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "fsck",
        "receive.fsckObjects is off",
        &format!(
            "git --git-dir {} config receive.fsckObjects true",
            server.repo.display()
        ),
    );
    report.failed();
}

#[test]
fn a_broken_deploy_yml_fails_at_its_place_and_skips_what_needs_it() {
    let server = deployed();
    server.set_config("keep_builds", "many");
    let report = doctor_unchanged(&server);
    let message = report.has("FAIL", "deploy.yml", "keep_builds", "correct it");
    let place = format!("{}:", server.config_path().display());
    let at = message
        .find(&place)
        .unwrap_or_else(|| panic!("no file:line:column in {message}"));
    let rest = &message[at + place.len()..];
    let (line, rest) = rest.split_once(':').unwrap();
    let (column, _) = rest.split_once(':').unwrap();
    assert!(
        line.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(),
        "no line:column in {message}"
    );
    for check in ["hook", "fsck", "tools", "disk"] {
        report.has("warning", check, "not checked", "correct deploy.yml");
    }
    report.has("ok", "latest", "a complete build", "");
    report.failed();
}

/// A directory of links to the programs doctor may look for, but `composer`.
fn path_without_composer(server: &Server) -> PathBuf {
    let dir = server.base().join("bin-no-composer");
    fs::create_dir(&dir).unwrap();
    for program in ["php", "sh", "git"] {
        let found = which::which(program).unwrap();
        symlink(found, dir.join(program)).unwrap();
    }
    dir
}

#[test]
fn composer_missing_from_path_fails() {
    let server = deployed();
    let dir = path_without_composer(&server);
    let before = everything(&server);
    let out = server
        .command(BIN)
        .env("PATH", &dir)
        .args(["doctor", "--nginx-config", "/nonexistent", "--root"])
        .arg(&server.root)
        .output()
        .unwrap();
    assert!(everything(&server) == before, "doctor changed the root");
    let report = parse(out);
    report.has(
        "FAIL",
        "tools",
        "`composer` is not in PATH",
        "apt-get install composer",
    );
    report.has("ok", "tools", "php: ", "");
    report.failed();
}

#[test]
fn a_build_step_whose_program_is_missing_fails() {
    let server = deployed();
    server.set_config(
        "build",
        "{commands: ['NODE_ENV=production bundle-assets-xyz --minify', 'sh -c true']}",
    );
    let report = doctor_unchanged(&server);
    let message = report.has(
        "FAIL",
        "tools",
        "`bundle-assets-xyz` is not in PATH",
        "apt-get install bundle-assets-xyz",
    );
    assert!(message.contains("NODE_ENV=production bundle-assets-xyz --minify"));
    report.has("ok", "tools", "sh (build: `sh -c true`)", "");
    report.failed();
}

fn statvfs(dir: &Path) -> libc::statvfs {
    // SAFETY: statvfs is a plain struct of integers, valid when zeroed.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is NUL-terminated and stat outlives the call.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
    stat
}

/// Fills the filesystem of `dir` but for `leave` bytes.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let stat = statvfs(dir);
    let free = stat.f_bavail * stat.f_frsize;
    let filler = dir.join("filler");
    // Allocated, not sparse: tmpfs counts only the pages a file holds.
    let out = std::process::Command::new("fallocate")
        .args(["-l", &(free - leave).to_string()])
        .arg(&filler)
        .output()
        .unwrap();
    assert_success(&out, "fallocate");
    filler
}

/// The example app deployed to a root on `tmpfs`, a disk the test can fill.
fn example_app_on(tmpfs: &Tmpfs) -> Server {
    let server = Server::builder().root(&tmpfs.path.join("srv")).install();
    server.clone_fixture("example-app").push_main().success();
    server
}

/// doctor on a disk a deploy would not fit: a FAIL naming what it needs at least, the command
/// that shows the disk, exit status 1, and the root unchanged.
#[track_caller]
fn assert_disk_check_fails(server: &Server, says: &str) {
    let report = doctor_unchanged(server);
    let message = report.has(
        "FAIL",
        "disk",
        says,
        &format!("df -h -i {}", server.root.join("builds").display()),
    );
    assert!(message.contains("at least"), "{message}");
    report.failed();
}

#[test]
fn a_nearly_full_disk_fails() {
    let Some(tmpfs) = Tmpfs::mount("size=96m") else {
        return;
    };
    let server = example_app_on(&tmpfs);
    let healthy = doctor(&server);
    healthy.has("ok", "disk", "free", "");

    let filler = fill(&tmpfs.path, 4 << 20);
    assert_disk_check_fails(&server, "the next deploy is likely to fail");
    fs::remove_file(filler).unwrap();
}

/// Replaces `latest` with `make`'s result, in place of the link the deploy made.
fn replace_latest(server: &Server, make: impl FnOnce(&Path)) -> String {
    let live = server.live().expect("a deploy went live");
    fs::remove_file(server.latest()).unwrap();
    make(&server.latest());
    live
}

#[test]
fn an_absolute_latest_warns() {
    let server = deployed();
    let live = replace_latest(&server, |latest| {
        let target = latest.parent().unwrap().join("builds");
        let name = fs::read_dir(&target).unwrap().next().unwrap().unwrap();
        symlink(name.path(), latest).unwrap();
    });
    let report = doctor_unchanged(&server);
    report.has(
        "warning",
        "latest",
        "is absolute",
        &format!("ln -s builds/{live} .latest.fix && mv -T .latest.fix latest"),
    );
}

#[test]
fn a_latest_directory_fails() {
    let server = deployed();
    let live = replace_latest(&server, |latest| fs::create_dir(latest).unwrap());
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "latest",
        "is a directory, not a symlink",
        &format!("mv latest latest.before-atomdeploy && ln -s builds/{live} latest"),
    );
    report.failed();
}

#[test]
fn a_latest_to_a_missing_build_fails() {
    let server = deployed();
    let live = replace_latest(&server, |latest| {
        symlink("builds/20200101-000000", latest).unwrap()
    });
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "latest",
        "builds/20200101-000000: which does not exist",
        &format!("ln -s builds/{live} .latest.fix"),
    );
    report.failed();
}

#[test]
fn a_latest_into_the_state_folder_fails() {
    let server = deployed();
    let tmp = server.root.join(".atomdeploy/tmp/20260101-000000");
    fs::create_dir_all(&tmp).unwrap();
    let live = replace_latest(&server, |latest| {
        symlink(".atomdeploy/tmp/20260101-000000", latest).unwrap()
    });
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "latest",
        "is in the state folder",
        &format!("ln -s builds/{live} .latest.fix"),
    );
    report.failed();
}

#[test]
fn a_missing_latest_fails_once_builds_exist_and_warns_before() {
    let server = Server::install();
    let report = doctor_unchanged(&server);
    report.has(
        "warning",
        "latest",
        "no deploy yet",
        "push the deploy branch",
    );

    server.clone_fixture("example-app").push_main().success();
    let live = server.live().unwrap();
    fs::remove_file(server.latest()).unwrap();
    let report = doctor_unchanged(&server);
    report.has(
        "FAIL",
        "latest",
        "is missing although builds/ holds 1 build(s)",
        &format!("ln -s builds/{live} .latest.fix"),
    );
    report.failed();
}

#[test]
fn a_bad_live_build_and_a_freeze_warn() {
    let server = deployed();
    let live = server.live().unwrap();
    let meta = server.root.join(format!(".atomdeploy/builds/{live}.json"));
    let text = fs::read_to_string(&meta).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["bad"] = true.into();
    fs::write(&meta, record.to_string()).unwrap();
    let out = server.run(&["freeze", "--message", "release on Monday"]);
    assert_success(&out, "freeze");
    let report = doctor_unchanged(&server);
    report.has(
        "warning",
        "latest",
        &format!("builds/{live}, is marked bad"),
        "atomdeploy-hook rollback",
    );
    report.has(
        "warning",
        "freeze",
        "\"release on Monday\"",
        "atomdeploy-hook unfreeze",
    );
}

#[test]
fn a_filesystem_out_of_inodes_fails() {
    let Some(tmpfs) = Tmpfs::mount("size=96m,nr_inodes=1000") else {
        return;
    };
    let server = example_app_on(&tmpfs);
    doctor(&server).has("ok", "disk", "inodes free", "");

    // Space to spare, but hardly an inode: a build's directories alone need more.
    let many = tmpfs.path.join("many");
    fs::create_dir(&many).unwrap();
    let left = statvfs(&tmpfs.path).f_favail;
    for i in 0..left - 2 {
        fs::File::create(many.join(i.to_string())).unwrap();
    }
    assert_disk_check_fails(&server, "and 2 inodes free");
    fs::remove_dir_all(many).unwrap();
}

#[test]
fn composer_missing_before_the_app_has_composer_json_only_warns() {
    let server = Server::install();
    let dir = path_without_composer(&server);
    let out = server
        .command(BIN)
        .env("PATH", &dir)
        .args(["doctor", "--nginx-config", "/nonexistent", "--root"])
        .arg(&server.root)
        .output()
        .unwrap();
    parse(out).has(
        "warning",
        "tools",
        "once the app has a composer.json",
        "apt-get install composer",
    );
}

/// On a primary, one `hosts` line per host: ok on a healthy group; FAIL with the fix for a
/// host on another commit, one whose app keys differ, and one that does not answer.
#[test]
fn doctor_on_a_primary_checks_each_host() {
    let primary = deployed();
    let host = Server::install();
    let link = primary.base().join("web2.git");
    symlink(&host.repo, &link).unwrap();
    primary.set_config("hosts", &format!("['{}']", link.display()));
    // Deployed together: a commit the primary does not serve yet.
    let clone = primary.clone_repo("group");
    clone.wrap();
    clone.git(&["commit", "-q", "--allow-empty", "-m", "group"]);
    clone.push(&["HEAD:main"]).success();
    let report = doctor(&primary);
    report.has("ok", "hosts", "web2: live on ", "");
    assert!(
        report.of("hosts").iter().all(|f| f.0 == "ok"),
        "{}",
        report.text()
    );

    // The host alone on another commit (out of its group first: a host refuses its own
    // pushes).
    host.leave_group();
    let other = host.clone_fixture("example-app");
    other.set_version("elsewhere");
    other.commit("elsewhere");
    other.push(&["-f", "main"]).success();
    let report = doctor(&primary);
    report.has("FAIL", "hosts", "web2: serves ", "hosts include web2");
    report.failed();

    // Its app keys differ.
    host.set_config("keep_builds", "9");
    let report = doctor(&primary);
    report.has(
        "FAIL",
        "hosts",
        "web2: its deploy.yml's app keys differ",
        "agree",
    );

    // One that does not answer.
    let gone = primary.base().join("gone.git");
    primary.set_config(
        "hosts",
        &format!("['{}', '{}']", link.display(), gone.display()),
    );
    let report = doctor(&primary);
    report.has("FAIL", "hosts", "gone: does not answer: ", "git ls-remote");
    report.has(
        "FAIL",
        "hosts",
        "gone: does not answer: ",
        "hosts exclude gone",
    );
}

/// A host of a group says whose it is and how it leaves, and changes nothing saying it.
#[test]
fn a_host_of_a_group_names_its_primary_and_how_to_leave() {
    let server = Server::install();
    let clone = server.clone_fixture("example-app");
    clone.push_main().success();
    assert!(doctor(&server).of("group").is_empty());
    clone.drive_as_primary();
    // The primary's `prepare` of the live commit (a `status` first, for the fingerprint).
    let status = clone
        .push(&["HEAD:refs/atomdeploy/group/d/status"])
        .success();
    let fp = match status.stderr.lines().find_map(Line::parse) {
        Some(Line::Status(status)) => status.fingerprint,
        other => panic!("no status: {other:?}\n{}", status.stderr),
    };
    clone
        .push(&[&format!("HEAD:refs/atomdeploy/group/d/prepare/{fp}")])
        .success();
    clone
        .push(&["HEAD:refs/atomdeploy/group/d/abort"])
        .success();
    let report = doctor_unchanged(&server);
    report.has(
        "ok",
        "group",
        "a host of a group: the group's primary deploys it (since 20",
        "",
    );
    report.has(
        "ok",
        "group",
        &format!(
            "atomdeploy-hook leave-group --root {}",
            server.root.display()
        ),
        "",
    );
}
