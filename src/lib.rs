//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.
//!
//! The binary (`main.rs`) only parses its command line and calls [`commands::run`];
//! everything else is here. Its folders are layers, each importing only from itself or the
//! layers below it (`scripts/shape/cycles.py` fails the build on an upward import):
//!
//! - [`commands`]: what `run` dispatches (install, doctor, builds/log, freeze, hosts, serve
//!   and receive-pack, rollback and replay by hand…), and the command line ([`commands::cli`]).
//! - [`receive`]: what a push sets going: the `post-receive` hook, a deploy and its pipeline,
//!   a rollback, the group of web servers (the protocol, the primary's and a host's side).
//! - [`steps`]: one module per step of a deploy, in the README's order (checkout, composer,
//!   snapshot, shared, the flip in [`steps::switch`], …).
//! - [`state`]: what a deploy root holds between runs (its layout, the builds, the deploy log,
//!   the manifests, the refs, a freeze).
//! - [`infra`]: what every step leans on (running programs, the report, the lock, recovery
//!   after a kill, crash points for the tests), and [`config`], deploy.yml, at the ground.

pub mod commands;
pub mod config;
pub mod infra;
pub mod receive;
pub mod state;
pub mod steps;
