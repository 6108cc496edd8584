//! atomdeploy-hook: `git push production main` as an atomic deploy of a PHP application.
//!
//! The binary (`main.rs`) only parses its command line and calls [`run::run`]; everything
//! else is here, so that a test can call a deploy in-process.
//!
//! - Entry points: [`run`] dispatches a command; [`hook`] is the `post-receive` hook, above
//!   both [`deploy`] and [`rollback`]; [`install`] sets a server up; [`inventory`] lists what
//!   is on it; [`cli`] and [`push`] read what the operator and git hand over; [`push_status`]
//!   makes `git push` exit non-zero when its deploy failed (`receive-pack`, `serve`);
//!   [`hook`]`::several` lets one repository serve several deploy roots.
//! - A deploy: [`deploy`] takes the lock, decides, runs [`pipeline`] and logs; the pipeline
//!   runs the [`steps`] (one module each, in the README's order); [`rollback`] goes back.
//! - [`state`]: what a deploy root holds between runs (its layout, the builds, the deploy log,
//!   the manifests, the refs), and [`config`], deploy.yml.
//! - [`group`]: several web servers, one push (the protocol, and a host's side of it).
//! - [`infra`]: what every step leans on (running programs, the report, the lock, recovery
//!   after a kill, crash points for the tests).

pub mod cli;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod freeze;
pub mod group;
pub mod hook;
pub mod hook_file;
pub mod infra;
pub mod install;
pub mod inventory;
pub mod notify;
pub mod pipeline;
pub mod push;
pub mod push_status;
pub mod rollback;
pub mod run;
pub mod state;
pub mod steps;
