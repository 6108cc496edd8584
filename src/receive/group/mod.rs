//! Several web servers, one push: what a group's primary and its hosts say to each other.
//!
//! A host is an ordinary install. The primary talks to it only with `git push` over the
//! host's git URL: it pushes a commit to `refs/atomdeploy/group/<gid>/<op>[/<fp>]`, the host's
//! hook does what `<op>` asks (see [`host`]) and deletes the ref again, and prints
//! `atomdeploy-group: …` lines that the primary reads among git's `remote:` lines.
//! Everything here is pure: ref names, group ids, the lines.

pub(crate) mod excluded;
pub(crate) mod host;
pub(crate) mod local;
pub(crate) mod primary;
pub(crate) mod remote;
pub(crate) mod trust;
pub(crate) mod view;

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Where every group ref lives.
pub(crate) const REF_PREFIX: &str = "refs/atomdeploy/group/";

/// What starts every protocol line a host prints.
pub(crate) const LINE_PREFIX: &str = "atomdeploy-group: ";

/// A group id: `[0-9A-Za-z-]{1,64}`, chosen by the primary for one group operation (a
/// deploy, a rollback), the same on every host.
pub(crate) fn valid_gid(gid: &str) -> bool {
    (1..=64).contains(&gid.len()) && gid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A config fingerprint as [`crate::config::Config::app_fingerprint`] makes it: 16 lowercase
/// hex digits.
pub(crate) fn valid_fingerprint(fp: &str) -> bool {
    fp.len() == 16 && fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the primary asks of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Build the pushed commit up to the switch; the primary's config fingerprint.
    Prepare(String),
    /// Like `Prepare`, linking nothing from the live build: the primary's `replay`, a build
    /// equal to a fresh checkout on every server.
    Replay(String),
    /// Like `Prepare`, with a good build of the commit already on disk (a rollback).
    Reuse(String),
    /// Switch to the prepared build.
    Switch,
    /// Switch back to the build live before the group's.
    Restore,
    /// Remove the prepared build.
    Abort,
    /// Say what is live and how the host is configured.
    Status,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Prepare(_) => "prepare",
            Op::Replay(_) => "replay",
            Op::Reuse(_) => "reuse",
            Op::Switch => "switch",
            Op::Restore => "restore",
            Op::Abort => "abort",
            Op::Status => "status",
        }
    }
}

/// A group ref: `refs/atomdeploy/group/<gid>/<op>[/<fp>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub gid: String,
    pub op: Op,
}

impl GroupRef {
    /// Whether a pushed ref is a group ref at all (well formed or not).
    pub(crate) fn is_group_ref(refname: &[u8]) -> bool {
        refname.starts_with(REF_PREFIX.as_bytes())
    }

    /// Reads a pushed ref name; says plainly what is wrong with one that is not a group ref
    /// this version understands.
    pub fn parse(refname: &[u8]) -> Result<GroupRef> {
        let shown = String::from_utf8_lossy(refname);
        let Some(rest) = std::str::from_utf8(refname)
            .ok()
            .and_then(|r| r.strip_prefix(REF_PREFIX))
        else {
            bail!("`{shown}` is not a group ref ({REF_PREFIX}<gid>/<op>)");
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let gid = parts[0];
        if !valid_gid(gid) {
            bail!("`{shown}`: the group id `{gid}` must be 1 to 64 letters, digits or `-`");
        }
        let fingerprint = |fp: &str| -> Result<String> {
            if valid_fingerprint(fp) {
                Ok(fp.to_string())
            } else {
                bail!("`{shown}`: `{fp}` is not a config fingerprint (16 lowercase hex digits)")
            }
        };
        let op = match parts[1..] {
            ["prepare", fp] => Op::Prepare(fingerprint(fp)?),
            ["replay", fp] => Op::Replay(fingerprint(fp)?),
            ["reuse", fp] => Op::Reuse(fingerprint(fp)?),
            ["switch"] => Op::Switch,
            ["restore"] => Op::Restore,
            ["abort"] => Op::Abort,
            ["status"] => Op::Status,
            _ => bail!(
                "`{shown}` asks for nothing this host knows: the operations are \
                 prepare/<fp>, replay/<fp>, reuse/<fp>, switch, restore, abort and status"
            ),
        };
        Ok(GroupRef {
            gid: gid.to_string(),
            op,
        })
    }

    pub fn refname(&self) -> String {
        let gid = &self.gid;
        match &self.op {
            Op::Prepare(fp) | Op::Replay(fp) | Op::Reuse(fp) => {
                format!("{REF_PREFIX}{gid}/{}/{fp}", self.op.name())
            }
            op => format!("{REF_PREFIX}{gid}/{}", op.name()),
        }
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.refname())
    }
}

/// What a host says about itself (`status`), and what it builds with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The live build, if any.
    pub build: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// Whether the live build is marked bad (a rollback or a failed health check left it live).
    pub bad: bool,
    /// The host's config fingerprint.
    pub fingerprint: String,
    /// The app keys of its deploy.yml, as fingerprinted.
    pub config: serde_json::Value,
    /// The atomdeploy-hook version the host runs.
    pub version: String,
}

/// One protocol line, as a host prints it and the primary reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The build is made, up to its switch.
    Prepared {
        gid: String,
        build: String,
        commit: String,
    },
    /// `latest` points at the build since `ns` (CLOCK_REALTIME nanoseconds right after the
    /// rename).
    Switched {
        gid: String,
        build: String,
        ns: u64,
    },
    /// The build is live but failed its health check; it stays live, the primary decides.
    Unhealthy {
        gid: String,
        why: String,
    },
    /// Back on the build live before the group's.
    Restored {
        gid: String,
        build: String,
    },
    /// The prepared build is gone.
    Aborted {
        gid: String,
    },
    Status(Box<Status>),
    /// The host's live commit before a prepare (`None`: nothing live), so that the primary can
    /// say a host drifted from it before the deploy brings it back in line. A line of its own:
    /// a primary that does not know it passes over it.
    Live {
        gid: String,
        commit: Option<String>,
    },
    /// The host's last word on an operation, however it went: the primary counts a switch as
    /// clean only with this line saying `ok`. A host killed, or one whose connection dropped,
    /// never prints it.
    Ended {
        gid: String,
        /// `None`: it succeeded; else why not, on one line.
        failed: Option<String>,
    },
    /// A host's app config (its fingerprint differed from the primary's).
    Config(serde_json::Value),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(LINE_PREFIX)?;
        match self {
            Line::Prepared { gid, build, commit } => write!(f, "prepared {gid} {build} {commit}"),
            Line::Switched { gid, build, ns } => write!(f, "switched {gid} {build} {ns}"),
            // One line, whatever the error said.
            Line::Unhealthy { gid, why } => write!(f, "unhealthy {gid} {}", one_line(why)),
            Line::Restored { gid, build } => write!(f, "restored {gid} {build}"),
            Line::Aborted { gid } => write!(f, "aborted {gid}"),
            // serde_json writes one line: newlines inside strings are escaped.
            Line::Status(status) => write!(
                f,
                "status {}",
                serde_json::to_string(status).map_err(|_| fmt::Error)?
            ),
            Line::Config(config) => write!(f, "config {config}"),
            Line::Live { gid, commit } => {
                write!(f, "live {gid} {}", commit.as_deref().unwrap_or("none"))
            }
            Line::Ended { gid, failed: None } => write!(f, "ended {gid} ok"),
            Line::Ended {
                gid,
                failed: Some(why),
            } => write!(f, "ended {gid} failed {}", one_line(why)),
        }
    }
}

impl Line {
    /// Reads one line of a host's output, as the host printed it or as `git push` relays
    /// it (`remote: …`, possibly with git's clear-to-end-of-line and padding after it).
    /// Anything else is `None`.
    pub fn parse(line: &str) -> Option<Line> {
        // A progress bar's last redraw (ended by `\r`) may share the line.
        let line = line.trim_end_matches(['\r', '\n']);
        let line = line.rsplit('\r').next().unwrap_or(line);
        let line = line.strip_prefix("remote: ").unwrap_or(line);
        let line = line.trim_end_matches(' ');
        let line = line.strip_suffix("\x1b[K").unwrap_or(line).trim_end();
        let rest = line.strip_prefix(LINE_PREFIX)?;
        let (word, rest) = rest.split_once(' ')?;
        let json = || serde_json::from_str::<serde_json::Value>(rest).ok();
        if word == "status" {
            return serde_json::from_str(rest)
                .ok()
                .map(|s| Line::Status(Box::new(s)));
        }
        if word == "config" {
            return json().map(Line::Config);
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        let gid = fields.first().filter(|g| valid_gid(g))?.to_string();
        let build = |s: &str| crate::state::build_name::BuildName::parse(s).map(|_| s.to_string());
        Some(match (word, &fields[1..]) {
            ("prepared", [b, commit]) if is_object_id(commit) => Line::Prepared {
                gid,
                build: build(b)?,
                commit: commit.to_string(),
            },
            ("switched", [b, ns]) => Line::Switched {
                gid,
                build: build(b)?,
                ns: ns.parse().ok()?,
            },
            ("restored", [b]) => Line::Restored {
                gid,
                build: build(b)?,
            },
            ("aborted", []) => Line::Aborted { gid },
            ("unhealthy", [_, ..]) => Line::Unhealthy {
                gid,
                why: fields[1..].join(" "),
            },
            ("live", [commit]) if is_object_id(commit) => Line::Live {
                gid,
                commit: Some(commit.to_string()),
            },
            ("live", ["none"]) => Line::Live { gid, commit: None },
            ("ended", ["ok"]) => Line::Ended { gid, failed: None },
            ("ended", ["failed", _, ..]) => Line::Ended {
                gid,
                failed: Some(fields[2..].join(" ")),
            },
            _ => return None,
        })
    }
}

/// A reason of several lines on one: a protocol line is one line of the host's output.
fn one_line(why: &str) -> String {
    why.lines().collect::<Vec<_>>().join(" / ")
}

fn is_object_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef";
    const COMMIT: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn group_ids_are_short_and_plain() {
        assert!(valid_gid("20261126-101500-a1b2c3"));
        assert!(valid_gid(&"a".repeat(64)));
        for bad in [
            "",
            &"a".repeat(65),
            "a/b",
            "a b",
            "a.b",
            "..",
            "é",
            "a_b",
            "a\n",
        ] {
            assert!(!valid_gid(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_group_ref_is_read_back_from_its_name() {
        for op in [
            Op::Prepare(FP.into()),
            Op::Replay(FP.into()),
            Op::Reuse(FP.into()),
            Op::Switch,
            Op::Restore,
            Op::Abort,
            Op::Status,
        ] {
            let r = GroupRef {
                gid: "g-1".into(),
                op,
            };
            let name = r.refname();
            assert!(name.starts_with("refs/atomdeploy/group/g-1/"), "{name}");
            assert!(GroupRef::is_group_ref(name.as_bytes()));
            assert_eq!(GroupRef::parse(name.as_bytes()).unwrap(), r);
        }
        assert_eq!(
            GroupRef {
                gid: "g".into(),
                op: Op::Prepare(FP.into())
            }
            .to_string(),
            format!("refs/atomdeploy/group/g/prepare/{FP}")
        );
    }

    #[test]
    fn malformed_group_refs_are_refused_plainly() {
        for (name, why) in [
            ("refs/atomdeploy/group/a b/switch", "group id"),
            ("refs/atomdeploy/group//switch", "group id"),
            ("refs/atomdeploy/group/g/prepare", "operations are"),
            ("refs/atomdeploy/group/g/prepare/XYZ", "fingerprint"),
            (
                "refs/atomdeploy/group/g/prepare/0123456789ABCDEF",
                "fingerprint",
            ),
            ("refs/atomdeploy/group/g/switch/extra", "operations are"),
            ("refs/atomdeploy/group/g/launch", "operations are"),
            ("refs/atomdeploy/group/g", "operations are"),
            ("refs/heads/main", "not a group ref"),
        ] {
            let err = GroupRef::parse(name.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        assert!(GroupRef::parse(b"refs/atomdeploy/group/\xe9/switch").is_err());
        assert!(!GroupRef::is_group_ref(b"refs/atomdeploy/builds/x"));
    }

    fn status() -> Status {
        Status {
            build: Some("20261126-101500".into()),
            commit: Some(COMMIT.into()),
            bad: false,
            fingerprint: FP.into(),
            config: serde_json::json!({"shared": [".env"], "note": "a\nb"}),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn every_line_is_read_back_as_printed_and_as_git_relays_it() {
        let lines = [
            Line::Prepared {
                gid: "g".into(),
                build: "20261126-101500".into(),
                commit: COMMIT.into(),
            },
            Line::Switched {
                gid: "g".into(),
                build: "20261126-101500-2".into(),
                ns: 1_764_152_100_123_456_789,
            },
            Line::Unhealthy {
                gid: "g".into(),
                why: "health check failed: exit 1".into(),
            },
            Line::Restored {
                gid: "g".into(),
                build: "20261126-101500".into(),
            },
            Line::Aborted { gid: "g".into() },
            Line::Status(Box::new(status())),
            Line::Config(serde_json::json!({"keep_builds": 5})),
            Line::Live {
                gid: "g".into(),
                commit: Some(COMMIT.into()),
            },
            Line::Live {
                gid: "g".into(),
                commit: None,
            },
            Line::Ended {
                gid: "g".into(),
                failed: None,
            },
            Line::Ended {
                gid: "g".into(),
                failed: Some("after_switch failed: exit 1".into()),
            },
        ];
        for line in lines {
            let text = line.to_string();
            assert!(text.starts_with("atomdeploy-group: "), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
            assert_eq!(Line::parse(&text), Some(line.clone()), "{text}");
            let relayed = format!("remote: {text}\x1b[K\r\n");
            assert_eq!(Line::parse(&relayed), Some(line.clone()), "{relayed:?}");
            let padded = format!("remote: {text}        ");
            assert_eq!(Line::parse(&padded), Some(line.clone()), "{padded:?}");
            let after_a_bar = format!("remote: snapshot 50%\x1b[K\rremote: {text}\x1b[K\n");
            assert_eq!(Line::parse(&after_a_bar), Some(line), "{after_a_bar:?}");
        }
    }

    #[test]
    fn an_unhealthy_reason_of_several_lines_stays_on_one() {
        let line = Line::Unhealthy {
            gid: "g".into(),
            why: "health check failed\nexit 1".into(),
        };
        assert_eq!(
            line.to_string(),
            "atomdeploy-group: unhealthy g health check failed / exit 1"
        );
    }

    #[test]
    fn a_failed_end_of_several_lines_stays_on_one() {
        let line = Line::Ended {
            gid: "g".into(),
            failed: Some("after_switch failed\nexit 1".into()),
        };
        assert_eq!(
            line.to_string(),
            "atomdeploy-group: ended g failed after_switch failed / exit 1"
        );
    }

    #[test]
    fn other_lines_are_not_protocol_lines() {
        for text in [
            "remote: ==> composer",
            "atomdeploy-group:",
            "atomdeploy-group: prepared",
            "atomdeploy-group: prepared g 20261126-101500",
            "atomdeploy-group: prepared g not-a-build 1111111111111111111111111111111111111111",
            "atomdeploy-group: prepared g 20261126-101500 xyz",
            "atomdeploy-group: switched g 20261126-101500 soon",
            "atomdeploy-group: switched bad/gid 20261126-101500 1",
            "atomdeploy-group: aborted g extra",
            "atomdeploy-group: status {not json",
            "atomdeploy-group: launched g",
            "atomdeploy-group: ended g",
            "atomdeploy-group: ended g fine",
            "atomdeploy-group: ended g ok extra",
            "atomdeploy-group: ended g failed",
            "atomdeploy-group: ended bad/gid ok",
            "atomdeploy-group: live g",
            "atomdeploy-group: live g 1234",
            "atomdeploy-group: live g none extra",
            "error: atomdeploy-group: aborted g",
        ] {
            assert_eq!(Line::parse(text), None, "{text}");
        }
    }
}
