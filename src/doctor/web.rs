//! The web server around the root: the php-fpm pool serving it, its user's access to
//! `shared/`, nginx's server block, and opcache settings that would serve a stale build.

use super::{Context, Finding};

pub fn check(_context: &Context, _out: &mut Vec<Finding>) {}
