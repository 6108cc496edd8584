//! The `<old> <new> <ref>` lines git hands a post-receive hook, and what each asks of us.

use anyhow::{Result, bail};

use crate::config::ROLLBACK_BRANCH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    pub fn is_deletion(&self) -> bool {
        is_zero(&self.new)
    }
}

/// What one push asks of the hook.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushRequest {
    /// The deploy branch moved to a commit: deploy (once, however many lines said so).
    pub deploy: Option<RefUpdate>,
    /// The deploy branch was deleted: the site is left alone.
    pub branch_deleted: bool,
    /// `refs/heads/rollback` was deleted: `git push production :rollback`.
    pub rollback: bool,
    /// `refs/heads/rollback` was pushed to: it is ours to keep, so it is reset.
    pub rollback_moved: bool,
    /// Every other ref in the push; they only get a notice.
    pub ignored: Vec<RefUpdate>,
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn is_object_id(id: &str) -> bool {
    // SHA-1 (40) and SHA-256 (64) repositories.
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses git's post-receive input. Malformed lines are an error: git never writes them, so
/// something other than git is calling us and guessing would be worse than stopping.
pub fn parse(input: &str, branch: &str) -> Result<PushRequest> {
    let deploy_ref = format!("refs/heads/{branch}");
    let mut request = PushRequest::default();
    for (n, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [old, new, refname] = fields[..] else {
            bail!(
                "line {} of the hook's input is not `<old> <new> <ref>`: {line:?}",
                n + 1
            );
        };
        if !is_object_id(old) || !is_object_id(new) {
            bail!(
                "line {} of the hook's input has no object ids: {line:?}",
                n + 1
            );
        }
        let update = RefUpdate {
            old: old.into(),
            new: new.into(),
            refname: refname.into(),
        };
        if refname.strip_prefix("refs/heads/") == Some(ROLLBACK_BRANCH) {
            if update.is_deletion() {
                request.rollback = true;
            } else {
                request.rollback_moved = true;
            }
        } else if refname != deploy_ref {
            request.ignored.push(update);
        } else if update.is_deletion() {
            request.branch_deleted = true;
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
        let request = parse(&format!("{A} {B} refs/heads/main\n"), "main").unwrap();
        assert_eq!(
            request.deploy,
            Some(RefUpdate {
                old: A.into(),
                new: B.into(),
                refname: "refs/heads/main".into()
            })
        );
        assert!(request.ignored.is_empty() && !request.branch_deleted);
    }

    #[test]
    fn the_first_push_creates_the_branch() {
        let request = parse(&format!("{ZERO} {B} refs/heads/main\n"), "main").unwrap();
        assert!(request.deploy.is_some());
    }

    #[test]
    fn other_refs_are_only_noticed() {
        let input = format!(
            "{A} {B} refs/heads/feature\n{ZERO} {B} refs/tags/v1.0\n{A} {B} refs/heads/main-old\n"
        );
        let request = parse(&input, "main").unwrap();
        assert_eq!(request.deploy, None);
        let names: Vec<_> = request.ignored.iter().map(|u| u.refname.as_str()).collect();
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
        let request = parse(&input, "main").unwrap();
        assert!(request.deploy.is_some());
        assert_eq!(request.ignored.len(), 2);
    }

    #[test]
    fn deleting_the_deploy_branch_is_not_a_deploy() {
        let request = parse(&format!("{A} {ZERO} refs/heads/main\n"), "main").unwrap();
        assert!(request.branch_deleted);
        assert_eq!(request.deploy, None);
    }

    #[test]
    fn deleting_the_rollback_branch_asks_for_a_rollback() {
        let request = parse(&format!("{A} {ZERO} refs/heads/rollback\n"), "main").unwrap();
        assert!(request.rollback && !request.rollback_moved);
        assert!(request.deploy.is_none() && request.ignored.is_empty());
        let request = parse(&format!("{A} {B} refs/heads/rollback\n"), "main").unwrap();
        assert!(request.rollback_moved && !request.rollback);
    }

    #[test]
    fn a_configured_branch_is_honoured() {
        let request = parse(&format!("{A} {B} refs/heads/main\n"), "production").unwrap();
        assert_eq!(request.deploy, None);
        assert_eq!(request.ignored.len(), 1);
    }

    #[test]
    fn sha256_ids_and_blank_lines_are_accepted() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let request = parse(&format!("\n{a} {b} refs/heads/main\n\n"), "main").unwrap();
        assert!(request.deploy.is_some());
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("garbage\n", "main").is_err());
        assert!(parse(&format!("{A} {B}\n"), "main").is_err());
        assert!(parse(&format!("{A} xyz refs/heads/main\n"), "main").is_err());
    }
}
