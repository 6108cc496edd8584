//! What the steps lean on: the file system through open directories ([`at`]), whether a
//! file is in memory ([`cache`]), running
//! programs ([`child`]), what the pusher sees ([`report`]), one deploy at a time ([`lock`]),
//! the crash points of the kill tests ([`fault`]), and shared/ shared with the web server's
//! user ([`perms`]), who a uid or gid is ([`users`]), who may write into a deploy root
//! ([`owner`]), text quoted for sh ([`quote`]), files replaced whole ([`fsutil`]), and the
//! time as records write it ([`clock`]). Below state: nothing here knows a deploy root's
//! layout.

pub(crate) mod at;
pub(crate) mod cache;
pub(crate) mod child;
pub(crate) mod clock;
pub(crate) mod fault;
pub(crate) mod fsutil;
pub(crate) mod lock;
pub(crate) mod owner;
pub mod perms;
pub(crate) mod quote;
pub mod report;
pub(crate) mod users;
