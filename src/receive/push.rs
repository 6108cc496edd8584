//! The `<old> <new> <ref>` lines git hands a post-receive hook, and what each asks of us.
//!
//! Read as bytes: a ref name is any bytes git accepts (`caf\xe9` from a Latin-1 shell is one),
//! and one such ref in a push must not stop the deploy branch from deploying.

use std::borrow::Cow;

use anyhow::{Result, bail};

use crate::receive::group::GroupRef;
use crate::state::control_branches::Branches;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefUpdate {
    pub(crate) old: String,
    pub(crate) new: String,
    /// As git sent it; see [`RefUpdate::name`] to show it.
    pub(crate) refname: Vec<u8>,
}

impl RefUpdate {
    pub(crate) fn is_deletion(&self) -> bool {
        is_zero(&self.new)
    }

    /// The push made the ref (it did not exist before).
    pub(crate) fn is_creation(&self) -> bool {
        is_zero(&self.old)
    }

    /// The ref's name for people: bytes that are not UTF-8 shown as U+FFFD.
    pub(crate) fn name(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.refname)
    }
}

/// What one push asks of the hook.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PushRequest {
    /// The deploy branch moved to a commit: deploy (once, however many lines said so).
    pub(crate) deploy: Option<RefUpdate>,
    /// The deploy branch was deleted: the site is left alone.
    pub(crate) branch_deleted: bool,
    /// `refs/heads/rollback` was deleted: `git push production :rollback`.
    pub(crate) rollback: bool,
    /// `refs/heads/rollback` was pushed to: it is ours to keep, so it is reset.
    pub(crate) rollback_moved: bool,
    /// `refs/heads/replay` was pushed to: deploy that commit as a new build.
    pub(crate) replay: Option<RefUpdate>,
    /// `refs/atomdeploy/group/…` pushed to: a group's primary asks this server, one of its
    /// hosts, for something (see `receive/group/host.rs`). A push carrying one deploys nothing
    /// else.
    pub(crate) group: Vec<RefUpdate>,
    /// Tags named like a control branch, created or moved by this push: the hook deletes
    /// them and refuses the push (left alone, such a tag deploys nothing, and makes git
    /// refuse every later `main:replay` with "tag already exists").
    pub(crate) control_tags: Vec<RefUpdate>,
    /// Every other ref in the push; they only get a notice.
    pub(crate) ignored: Vec<RefUpdate>,
    /// The updates behind `branch_deleted`, `rollback` and `rollback_moved`, as pushed: what a
    /// host of a group puts back when it refuses them (see `receive/group/trust.rs`).
    pub(crate) controls: Vec<RefUpdate>,
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// The id as text, if it is one: SHA-1 (40 hex digits) or SHA-256 (64).
fn object_id(field: &[u8]) -> Option<String> {
    ((field.len() == 40 || field.len() == 64) && field.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(field).into_owned())
}

/// Parses git's post-receive input. Malformed lines are an error: git never writes them, so
/// something other than git is calling us and guessing would be worse than stopping.
pub(crate) fn parse(input: &[u8], branches: &Branches) -> Result<PushRequest> {
    let deploy_ref = format!("refs/heads/{}", branches.deploy);
    let rollback_ref = format!("refs/heads/{}", branches.rollback);
    let replay_ref = format!("refs/heads/{}", branches.replay);
    let mut request = PushRequest::default();
    for (n, line) in input.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let shown = String::from_utf8_lossy(line);
        let fields: Vec<&[u8]> = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .collect();
        let [old, new, refname] = fields[..] else {
            bail!(
                "line {} of the hook's input is not `<old> <new> <ref>`: {shown:?}",
                n + 1
            );
        };
        let (Some(old), Some(new)) = (object_id(old), object_id(new)) else {
            bail!(
                "line {} of the hook's input has no object ids: {shown:?}",
                n + 1
            );
        };
        let update = RefUpdate {
            old,
            new,
            refname: refname.to_vec(),
        };
        if refname == rollback_ref.as_bytes() {
            if update.is_deletion() {
                request.rollback = true;
            } else {
                request.rollback_moved = true;
            }
            request.controls.push(update);
        } else if refname == replay_ref.as_bytes() && !update.is_deletion() {
            request.replay = Some(update);
        } else if branches.is_control_tag(refname) && !update.is_deletion() {
            request.control_tags.push(update);
        } else if GroupRef::is_group_ref(refname) && !update.is_deletion() {
            request.group.push(update);
        } else if refname != deploy_ref.as_bytes() {
            request.ignored.push(update);
        } else if update.is_deletion() {
            request.branch_deleted = true;
            request.controls.push(update);
        } else {
            request.deploy = Some(update);
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn a_push_to_the_deploy_branch_deploys() {
        let request = parse(
            format!("{A} {B} refs/heads/main\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert_eq!(
            request.deploy,
            Some(RefUpdate {
                old: A.into(),
                new: B.into(),
                refname: b"refs/heads/main".to_vec()
            })
        );
        assert!(request.ignored.is_empty() && !request.branch_deleted);
    }

    #[test]
    fn the_first_push_creates_the_branch() {
        let request = parse(
            format!("{ZERO} {B} refs/heads/main\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.deploy.is_some());
    }

    #[test]
    fn other_refs_are_only_noticed() {
        let input = format!(
            "{A} {B} refs/heads/feature\n{ZERO} {B} refs/tags/v1.0\n{A} {B} refs/heads/main-old\n"
        );
        let request = parse(input.as_bytes(), &Branches::first("main")).unwrap();
        assert_eq!(request.deploy, None);
        let names: Vec<_> = request.ignored.iter().map(|u| u.name()).collect();
        assert_eq!(
            names,
            [
                "refs/heads/feature",
                "refs/tags/v1.0",
                "refs/heads/main-old"
            ]
        );
    }

    #[test]
    fn several_refs_in_one_push_deploy_once() {
        let input = format!(
            "{A} {B} refs/heads/feature\n{A} {B} refs/heads/main\n{ZERO} {A} refs/tags/v1\n"
        );
        let request = parse(input.as_bytes(), &Branches::first("main")).unwrap();
        assert!(request.deploy.is_some());
        assert_eq!(request.ignored.len(), 2);
    }

    #[test]
    fn deleting_the_deploy_branch_is_not_a_deploy() {
        let request = parse(
            format!("{A} {ZERO} refs/heads/main\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.branch_deleted);
        assert_eq!(request.deploy, None);
    }

    #[test]
    fn deleting_the_rollback_branch_asks_for_a_rollback() {
        let request = parse(
            format!("{A} {ZERO} refs/heads/rollback\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.rollback && !request.rollback_moved);
        assert!(request.deploy.is_none() && request.ignored.is_empty());
        let request = parse(
            format!("{A} {B} refs/heads/rollback\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.rollback_moved && !request.rollback);
    }

    #[test]
    fn a_push_to_replay_asks_for_a_new_build() {
        let request = parse(
            format!("{ZERO} {B} refs/heads/replay\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert_eq!(request.replay.map(|u| u.new), Some(B.to_string()));
        assert!(request.deploy.is_none() && request.ignored.is_empty());
        let request = parse(
            format!("{B} {ZERO} refs/heads/replay\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.replay.is_none());
    }

    #[test]
    fn tags_named_like_a_control_branch_are_set_apart() {
        let staging = crate::state::control_branches::further_root("staging");
        for (branches, names) in [
            (
                Branches::first("main"),
                ["refs/tags/replay", "refs/tags/rollback"],
            ),
            (
                staging,
                ["refs/tags/replay-staging", "refs/tags/rollback-staging"],
            ),
        ] {
            let input: String = names
                .iter()
                .map(|n| format!("{ZERO} {B} {n}\n{B} {ZERO} {n}\n"))
                .collect();
            let request = parse(input.as_bytes(), &branches).unwrap();
            let tags: Vec<_> = request.control_tags.iter().map(|u| u.name()).collect();
            // Their deletion is nothing to refuse.
            assert_eq!(tags, names);
            assert!(request.replay.is_none() && !request.rollback);
            assert!(names.iter().all(|n| branches.claims(n.as_bytes())));
        }
    }

    #[test]
    fn a_configured_branch_is_honoured() {
        let request = parse(
            format!("{A} {B} refs/heads/main\n").as_bytes(),
            &Branches::first("production"),
        )
        .unwrap();
        assert_eq!(request.deploy, None);
        assert_eq!(request.ignored.len(), 1);
    }

    #[test]
    fn sha256_ids_and_blank_lines_are_accepted() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let request = parse(
            format!("\n{a} {b} refs/heads/main\n\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(request.deploy.is_some());
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse(b"garbage\n", &Branches::first("main")).is_err());
        assert!(parse(format!("{A} {B}\n").as_bytes(), &Branches::first("main")).is_err());
        assert!(
            parse(
                format!("{A} xyz refs/heads/main\n").as_bytes(),
                &Branches::first("main")
            )
            .is_err()
        );
    }

    #[test]
    fn a_ref_name_that_is_not_utf8_does_not_stop_the_deploy_branch() {
        let mut input = format!("{A} {B} refs/heads/caf").into_bytes();
        input.push(0xE9);
        input.extend_from_slice(format!("\n{ZERO} {B} refs/heads/main\n").as_bytes());
        let request = parse(&input, &Branches::first("main")).unwrap();
        assert_eq!(
            request.deploy.map(|u| u.refname),
            Some(b"refs/heads/main".to_vec())
        );
        assert_eq!(request.ignored.len(), 1);
        assert_eq!(request.ignored[0].refname, b"refs/heads/caf\xe9");
        assert_eq!(request.ignored[0].name(), "refs/heads/caf\u{fffd}");
    }

    #[test]
    fn a_deploy_branch_lookalike_with_other_bytes_is_not_the_deploy_branch() {
        let mut input = format!("{A} {B} refs/heads/main").into_bytes();
        input.push(0xFF);
        input.push(b'\n');
        let request = parse(&input, &Branches::first("main")).unwrap();
        assert_eq!(request.deploy, None);
        assert_eq!(request.ignored.len(), 1);
    }

    #[test]
    fn group_refs_are_set_apart_from_everything_else() {
        let input = format!(
            "{ZERO} {B} refs/atomdeploy/group/g1/prepare/0123456789abcdef\n\
             {A} {B} refs/heads/main\n\
             {ZERO} {B} refs/atomdeploy/group/g1/whatever\n\
             {B} {ZERO} refs/atomdeploy/group/g0/switch\n\
             {ZERO} {B} refs/atomdeploy/groups/x\n"
        );
        let request = parse(input.as_bytes(), &Branches::first("main")).unwrap();
        let names: Vec<_> = request.group.iter().map(|u| u.name()).collect();
        // Malformed ones too: the host refuses them, and deletes them.
        assert_eq!(
            names,
            [
                "refs/atomdeploy/group/g1/prepare/0123456789abcdef",
                "refs/atomdeploy/group/g1/whatever"
            ]
        );
        // (The hook deploys nothing else of a push carrying a group ref; see hook.rs.)
        assert!(request.deploy.is_some());
        let ignored: Vec<_> = request.ignored.iter().map(|u| u.name()).collect();
        assert_eq!(
            ignored,
            [
                "refs/atomdeploy/group/g0/switch",
                "refs/atomdeploy/groups/x"
            ]
        );
        let plain = parse(
            format!("{A} {B} refs/heads/main\n").as_bytes(),
            &Branches::first("main"),
        )
        .unwrap();
        assert!(plain.group.is_empty());
    }

    #[test]
    fn object_ids_that_are_not_ascii_are_refused_plainly() {
        let mut input = vec![0xE9; 40];
        input.extend_from_slice(format!(" {B} refs/heads/main\n").as_bytes());
        let err = parse(&input, &Branches::first("main"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no object ids"), "{err}");
    }

    #[test]
    fn a_further_roots_control_branches_are_its_own() {
        let staging = Branches {
            deploy: "staging".into(),
            rollback: "rollback-staging".into(),
            replay: "replay-staging".into(),
        };
        let input = format!(
            "{A} {ZERO} refs/heads/rollback\n{ZERO} {B} refs/heads/replay\n\
             {A} {ZERO} refs/heads/rollback-staging\n{ZERO} {B} refs/heads/replay-staging\n"
        );
        let request = parse(input.as_bytes(), &staging).unwrap();
        assert!(request.rollback);
        assert_eq!(
            request.replay.map(|u| u.refname),
            Some(b"refs/heads/replay-staging".to_vec())
        );
        let ignored: Vec<_> = request.ignored.iter().map(|u| u.name()).collect();
        assert_eq!(ignored, ["refs/heads/rollback", "refs/heads/replay"]);
        assert!(
            staging.claims(b"refs/heads/rollback-staging")
                && !staging.claims(b"refs/heads/rollback")
        );
    }
}
