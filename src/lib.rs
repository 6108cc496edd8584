//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.
//!
//! The binary (`main.rs`) only parses its command line and calls [`commands::run`];
//! everything else is here. Public are only the modules main.rs, the tests and
//! `examples/gen-docs.rs` reach into (the command line and its run, the report, the web
//! server's read access, the group's protocol lines, the status file's variables,
//! deploy.yml's defaults); every other module is `pub(crate)`, so that the compiler names
//! dead code in it. The folders are layers, each importing only from itself or the layers
//! below it (`scripts/shape/cycles.py` fails the build on an upward import):
//!
//! - [`commands`]: what `run` dispatches (install, doctor, builds/log, freeze, hosts, serve
//!   and receive-pack, rollback and replay by hand…), and the command line ([`commands::cli`]).
//! - [`receive`]: what a push sets going: the `post-receive` hook, a deploy and its pipeline,
//!   a rollback, the group of web servers (the protocol, the primary's and a host's side).
//! - [`steps`]: one module per step of a deploy, in the order a deploy runs them (checkout, composer,
//!   snapshot, shared, the flip in [`steps::switch`], …).
//! - [`state`]: what a deploy root holds between runs (its layout, the builds, the deploy log,
//!   the manifests, the refs, a freeze, cleaning up after a killed deploy).
//! - [`infra`]: what every step leans on (running programs, the report, the lock, the clock,
//!   crash points for the tests), and [`config`], deploy.yml, at the ground.

// The maps above and in each layer's module link to modules that are the crate's own
// business (`pub(crate)`): they are for whoever reads the source, not for a user of the
// library, whose surface is what main.rs and the tests need.
#![allow(rustdoc::private_intra_doc_links)]

pub mod commands;
pub mod config;
pub mod infra;
pub mod receive;
pub(crate) mod state;
pub(crate) mod steps;
