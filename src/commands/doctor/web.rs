//! The web server around the root: nginx's server block, the php-fpm pool serving it, its
//! user's access to the live build and `shared/`, and opcache settings that would serve a
//! stale build.
//!
//! The pool is asked for what it really runs with (its user, its ini values) by a probe run
//! in it over FastCGI, the way `reset_opcache:` resets it: the files on disk may not be what
//! the running php-fpm read (not reloaded since, `-d` options, conf.d files elsewhere).

use super::{Context, Finding};

mod access;
mod glob;
mod nginx;
mod php;
mod pool;

/// Where php-fpm's pool files are searched for by default (Debian's layout).
pub(crate) const POOL_FILES: &str = "/etc/php/*/fpm/pool.d/*.conf";

pub(crate) fn check(context: &Context, out: &mut Vec<Finding>) {
    let site = nginx::check(context, out);
    let pool = pool::check(context, site.as_ref(), out);
    access::check(context, pool.as_ref(), out);
    php::check(context, site.as_ref(), pool.as_ref(), out);
}
