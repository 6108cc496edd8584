//! The integration tests, in one binary: the harness is compiled once, and every test runs in
//! one process with one thread pool. Tests run concurrently, so a test may look only at its
//! own processes and files (its temp dir).
//!
//! One module per area, each a file beside this one, and the harness in harness/: this file is
//! the crate's root (Cargo.toml's `[[test]]`), so Rust finds `mod deploy;` in
//! tests/integration/deploy.rs. `cargo test --test integration deploy::` runs one area.

mod harness;

mod assets;
mod build;
mod build_refs;
mod cleanup;
mod composer;
mod config;
mod deploy;
mod deploy_log;
mod doctor_root;
mod doctor_web;
mod environments;
mod faults;
mod freeze;
mod group;
mod group_faults;
mod group_host;
mod group_hostile;
mod group_ssh;
mod group_trust;
mod group_web;
mod hostile;
mod integrity;
mod notify;
mod opcache;
mod orphans;
mod owner;
mod package;
mod permissions;
mod preflight;
mod private;
mod push_status;
mod readme;
mod recipes;
mod rollback;
mod root_here;
mod setup;
mod submodules;
mod web;
