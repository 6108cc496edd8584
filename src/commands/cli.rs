//! Command-line interface: what the operator and git can ask for.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "atomdeploy-hook",
    version,
    about = "Atomic, zero-downtime deploys of PHP applications on `git push`",
    long_about = "Atomic, zero-downtime deploys of PHP applications on `git push`.\n\n\
        Installed as the post-receive hook of a bare repository, it checks the pushed commit \
        out, runs composer, snapshots the result into builds/<UTC timestamp> and flips the \
        `latest` symlink to it with one rename(2)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct RootArg {
    /// The deploy root (holds application/, builds/, shared/, latest and deploy.yml); default:
    /// the deploy root that holds the current directory.
    #[arg(long, env = "ATOMDEPLOY_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
}

impl RootArg {
    /// The root given, or the one the current directory is in (see [`root_or_here`]).
    pub(crate) fn dir(self) -> Result<PathBuf> {
        root_or_here(self.root)
    }
}

/// `--root` or `$ATOMDEPLOY_ROOT` if given; otherwise the nearest directory at or above the
/// current one that holds what `install` makes (deploy.yml and .atomdeploy/), so that an
/// operator standing in `application/` or `builds/<name>/public` need not name it. A commit may
/// carry a deploy.yml of its own, but never .atomdeploy/, so a build or application/ is never
/// taken for the root.
pub(crate) fn root_or_here(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(root) = given {
        return Ok(root);
    }
    let here = std::env::current_dir().context("cannot tell the current directory")?;
    here.ancestors()
        .find(|dir| is_deploy_root(dir))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "the deploy root is needed: --root DIR (or $ATOMDEPLOY_ROOT), or run this inside \
                 a deploy root; {} is in none",
                here.display()
            )
        })
}

fn is_deploy_root(dir: &Path) -> bool {
    dir.join("deploy.yml").is_file() && dir.join(".atomdeploy").is_dir()
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Set up a bare repository and a deploy root, and print the remote to add.
    Install {
        /// The bare repository to push to (created if missing; an existing one is kept).
        #[arg(long, value_name = "PATH")]
        repo: PathBuf,
        /// The deploy root to create (holds application/, builds/, shared/, latest and
        /// deploy.yml); an existing one is kept.
        #[arg(long, env = "ATOMDEPLOY_ROOT", value_name = "DIR")]
        root: PathBuf,
        /// The branch whose pushes deploy.
        #[arg(long, default_value = "main")]
        branch: String,
        /// How developers reach the repository, e.g. `deploy@example.com:/srv/app.git`
        /// (default: the repository's local path).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The user php-fpm's pool runs as (e.g. www-data): shared/ is given to its primary
        /// group, once, with setgid directories and default ACLs, so that files the app
        /// writes stay writable by both that user and the deploy user.
        #[arg(long, value_name = "USER")]
        web_user: Option<String>,
    },
    /// Check a deploy root and the server around it (repository, hook, deploy.yml, tools,
    /// disk, `latest`, php-fpm, nginx, opcache): each finding with its fix. Exits non-zero
    /// when something would break a deploy or a request.
    Doctor {
        #[command(flatten)]
        root: RootArg,
        /// The php-fpm pool file serving the app (default: found among php-fpm's pool files).
        #[arg(long, value_name = "FILE")]
        fpm_pool: Option<PathBuf>,
        /// nginx's main configuration file.
        #[arg(long, value_name = "FILE", default_value = "/etc/nginx/nginx.conf")]
        nginx_config: PathBuf,
        /// Where the pool serving the app is searched for, without --fpm-pool (`*` matches
        /// within one path component).
        #[arg(
            long,
            value_name = "GLOB",
            default_value = "/etc/php/*/fpm/pool.d/*.conf"
        )]
        fpm_pools: String,
    },
    /// Run by git after a push: reads `<old> <new> <ref>` lines on stdin and deploys.
    PostReceive {
        /// A deploy root of this repository; repeated when it serves several (environments:
        /// each root deploys its own branch).
        #[arg(long, env = "ATOMDEPLOY_ROOT", value_name = "DIR", required = true)]
        root: Vec<PathBuf>,
    },
    /// A drop-in for git-receive-pack that makes `git push` exit non-zero when its deploy
    /// failed: `git config remote.production.receivepack "atomdeploy-hook receive-pack"`.
    ReceivePack {
        /// The bare repository, as git names it.
        repo: PathBuf,
    },
    /// An `authorized_keys` forced command: lets an ssh key push to (through `receive-pack`)
    /// and fetch from one repository, and read `builds [--json]` and `log [BUILD]` of the
    /// roots it deploys, and nothing else. Reads SSH_ORIGINAL_COMMAND.
    Serve {
        /// The only repository this key may reach.
        #[arg(long, value_name = "PATH")]
        repo: PathBuf,
        /// Who this key belongs to, for the deploy log (e.g. the key's comment); default:
        /// the user the hook runs as.
        #[arg(long, value_name = "NAME")]
        pusher: Option<String>,
        /// This key is the group primary's, on one of its hosts: its pushes may drive the
        /// host (`refs/atomdeploy/group/…`). Only in that key's line of authorized_keys.
        #[arg(long)]
        group_primary: bool,
        /// The repository's path as git appends it to a local `--receive-pack` command (how a
        /// primary reaches a host that is a local path); must be the same as --repo.
        #[arg(hide = true, value_name = "PATH")]
        appended: Option<PathBuf>,
    },
    /// Deploy again without a push: always a new build, even of the live commit.
    ///
    /// For a deploy that failed for a passing reason, or a server that lost application/.
    Replay {
        /// Any commit-ish of the bare repository (default: the deploy branch's head).
        rev: Option<String>,
        #[command(flatten)]
        root: RootArg,
    },
    /// Switch back to the newest older build that is not bad, and mark the live one bad.
    ///
    /// The same as `git push production :rollback` (`:rollback-<branch>` for a root added to a
    /// repository that has others).
    Rollback {
        /// Switch to this build instead (a name from `atomdeploy-hook builds`).
        #[arg(long, value_name = "BUILD")]
        to: Option<String>,
        #[command(flatten)]
        root: RootArg,
    },
    /// Stop deploying pushes until `unfreeze`: they are received (the branch moves) but each
    /// one, and `replay`, is refused with this message. Rollbacks still work.
    ///
    /// On a frozen root: replaces the message.
    Freeze {
        /// Why, and until when: every refused pusher reads it.
        #[arg(long)]
        message: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// Take this server out of its group: its own pushes, `replay` and `rollback` deploy
    /// again. A host refuses them while it belongs to a group, whose primary deploys it.
    LeaveGroup {
        #[command(flatten)]
        root: RootArg,
    },
    /// End a freeze: the next push deploys.
    Unfreeze {
        #[command(flatten)]
        root: RootArg,
    },
    /// What a deploy starts to delete the old builds' files once the push has its answer,
    /// holding the deploy lock it hands over; not for people.
    #[command(name = "empty-trash", hide = true)]
    EmptyTrash {
        #[command(flatten)]
        root: RootArg,
    },
    /// List every build, newest first, and the failed deploys since the oldest.
    Builds {
        /// Print a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// Print only the names of the builds on disk, newest first, one a line (what
        /// `rollback --to` takes; the bash completion offers them).
        #[arg(long, conflicts_with = "json")]
        names: bool,
        #[command(flatten)]
        root: RootArg,
    },
    /// Show the full output of a deploy (default: the latest attempt, failed or not).
    Log {
        /// A build's name, or the `failed-…` id that `builds` prints under a failed deploy.
        build: Option<String>,
        #[command(flatten)]
        root: RootArg,
    },
    /// The other web servers of the group (`hosts:` in deploy.yml): each one's live build and
    /// commit, a host not on this server's live commit marked. Or leave a dead host out of
    /// deploys for an emergency, and take it back.
    ///
    /// Exit status, for scripts and monitoring: 0 when every host that is not excluded answered
    /// and is live on this server's live commit, 1 when one is on another commit (or on none),
    /// 2 when one did not answer.
    Hosts {
        #[command(subcommand)]
        action: Option<HostsAction>,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// The deploy root (holds application/, builds/, shared/, latest and deploy.yml);
        /// default: the deploy root that holds the current directory.
        #[arg(long, env = "ATOMDEPLOY_ROOT", value_name = "DIR", global = true)]
        root: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HostsAction {
    /// Deploy without this host until `hosts include`: every deploy warns meanwhile.
    Exclude {
        /// The host as deploy.yml lists it (or its short name, as deploys prefix its lines).
        host: String,
        /// Why, for the log and every deploy's warning.
        #[arg(long)]
        reason: String,
    },
    /// Bring the host to this server's live commit now, and back into deploys.
    Include {
        /// The host as deploy.yml lists it (or its short name).
        host: String,
    },
}
