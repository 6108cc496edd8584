//! A group of web servers deployed by one push (issue #12): the primary pushes special refs
//! to each host over git and reads the lines the host's hook prints back.
//!
//! (fix/group-primary: this file only declares the primary's modules; fix/group-host owns it
//! and adds the protocol's shared types.)

pub mod excluded;
pub mod primary;
pub mod remote;
pub mod view;
