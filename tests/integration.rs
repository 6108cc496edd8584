//! The integration tests, in one binary: the harness is compiled once, and every test runs in
//! one process with one thread pool. Tests run concurrently, so a test may look only at its
//! own processes and files (its temp dir).
//!
//! One module per area, each in tests/integration/; `cargo test --test integration deploy::`
//! runs one of them.

mod harness;

#[path = "integration/assets.rs"]
mod assets;
#[path = "integration/build.rs"]
mod build;
#[path = "integration/cleanup.rs"]
mod cleanup;
#[path = "integration/composer.rs"]
mod composer;
#[path = "integration/composer_refs.rs"]
mod composer_refs;
#[path = "integration/config.rs"]
mod config;
#[path = "integration/deploy.rs"]
mod deploy;
#[path = "integration/doctor_root.rs"]
mod doctor_root;
#[path = "integration/doctor_web.rs"]
mod doctor_web;
#[path = "integration/environments.rs"]
mod environments;
#[path = "integration/faults.rs"]
mod faults;
#[path = "integration/freeze.rs"]
mod freeze;
#[path = "integration/group.rs"]
mod group;
#[path = "integration/group_faults.rs"]
mod group_faults;
#[path = "integration/group_host.rs"]
mod group_host;
#[path = "integration/group_hostile.rs"]
mod group_hostile;
#[path = "integration/group_ssh.rs"]
mod group_ssh;
#[path = "integration/group_trust.rs"]
mod group_trust;
#[path = "integration/group_web.rs"]
mod group_web;
#[path = "integration/guarantees.rs"]
mod guarantees;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/integrity.rs"]
mod integrity;
#[path = "integration/logwho.rs"]
mod logwho;
#[path = "integration/notify.rs"]
mod notify;
#[path = "integration/opcache.rs"]
mod opcache;
#[path = "integration/orphans.rs"]
mod orphans;
#[path = "integration/owner.rs"]
mod owner;
#[path = "integration/package.rs"]
mod package;
#[path = "integration/permissions.rs"]
mod permissions;
#[path = "integration/preflight.rs"]
mod preflight;
#[path = "integration/private.rs"]
mod private;
#[path = "integration/push_status.rs"]
mod push_status;
#[path = "integration/readme.rs"]
mod readme;
#[path = "integration/recipes.rs"]
mod recipes;
#[path = "integration/review13.rs"]
mod review13;
#[path = "integration/rollback.rs"]
mod rollback;
#[path = "integration/root_here.rs"]
mod root_here;
#[path = "integration/setup.rs"]
mod setup;
#[path = "integration/submodules.rs"]
mod submodules;
#[path = "integration/web.rs"]
mod web;
