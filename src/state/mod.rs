//! What a deploy root holds between runs, and the types that name it: the root's layout and
//! configuration ([`plan`]), build names ([`build_name`]), the builds and their records
//! ([`builds`]), the deploy log ([`history`]), what each build file came from ([`manifest`]),
//! the refs kept in the bare repository ([`refs`]), a freeze ([`freeze`]), and cleaning up
//! after a killed deploy ([`recover`]).

pub mod app_tree;
pub mod build_name;
pub mod builds;
pub mod control_branches;
pub mod freeze;
pub mod history;
pub mod manifest;
pub mod plan;
pub mod recover;
pub mod refs;
