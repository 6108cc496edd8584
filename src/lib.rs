//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.
//!
//! The binary (`main.rs`) only parses its command line and calls [`run::run`]; everything
//! else is here, so that a test can call a deploy in-process.
//!
//! - Entry points: [`run`] dispatches a command; [`hook`] is the `post-receive` hook, above
//!   both [`deploy`] and [`rollback`]; [`install`] sets a server up; [`inventory`] lists what
//!   is on it.
//! - A deploy: [`deploy`] takes the lock, decides, runs [`pipeline`] and logs; the pipeline
//!   runs the [`steps`] (one module each, in the README's order); [`rollback`] goes back.
//! - State on disk: [`plan`] (the layout of a deploy root and its configuration, [`config`]),
//!   [`build_name`], [`builds`], [`history`] (the deploy log), [`manifest`] (what each build
//!   file came from), [`refs`] (the refs kept in the bare repository), [`lock`].
//! - Infrastructure: [`child`] (running programs), [`report`] (what the pusher sees),
//!   [`fault`] (crash points for the kill tests), [`recover`] (after a killed deploy),
//!   [`push`] (the ref updates git hands the hook), [`cli`].

// Every unsafe block says why it is sound (see Cargo.toml for why this is not in [lints]).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod build_name;
pub mod builds;
pub mod child;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod fault;
pub mod history;
pub mod hook;
pub mod install;
pub mod inventory;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod plan;
pub mod push;
pub mod recover;
pub mod refs;
pub mod report;
pub mod rollback;
pub mod run;
pub mod steps;
