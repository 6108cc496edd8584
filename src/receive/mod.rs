//! What a push sets going, and what drives it: the `post-receive` [`hook`] reads what git
//! hands over ([`push`]) and asks for a [`deploy`] (which runs the [`pipeline`] of steps and
//! then [`notify`]), a [`rollback`], or a [`group`] operation (several web servers, one push:
//! the protocol, the primary's side and a host's side). Below the commands, above the steps.

pub(crate) mod deploy;
pub mod group;
pub(crate) mod hook;
pub(crate) mod notify;
pub(crate) mod pipeline;
pub(crate) mod push;
pub(crate) mod rollback;
