//! What a deploy root holds between runs, and the types that name it: the root's layout and
//! configuration ([`plan`]), build names ([`build_name`]), the builds and their records
//! ([`builds`]), the deploy log ([`history`]), what each build file came from ([`manifest`]),
//! the refs kept in the bare repository ([`refs`]), a freeze ([`freeze`]), and cleaning up
//! after a killed deploy ([`recover`]).
//!
//! A layer below the steps and above infra and config: nothing here runs a step.

pub(crate) mod app_tree;
pub(crate) mod build_name;
pub(crate) mod builds;
pub(crate) mod control_branches;
pub(crate) mod freeze;
pub(crate) mod history;
pub(crate) mod manifest;
pub(crate) mod plan;
pub(crate) mod recover;
pub(crate) mod refs;
