//! The last step of a deploy that went live: old and bad builds go, never the live one.

use std::fmt;

use anyhow::Result;

use crate::state::build_name::BuildName;
use crate::state::builds;
use crate::state::plan::Layout;
use crate::steps::Summary;

/// How many builds went, and the setting that decided it.
pub struct Cleaned {
    pub removed: usize,
    pub keep: usize,
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} old builds removed (keep_builds: {})",
            self.removed, self.keep
        )
    }
}

impl Summary for Cleaned {}

/// Removes every bad build and the oldest good ones beyond `keep` (see [`builds::cleanup`]),
/// never `spare`.
pub fn cleanup(layout: &Layout, keep: usize, spare: Option<&BuildName>) -> Result<Cleaned> {
    let removed = builds::cleanup_sparing(layout, keep, spare)?.len();
    Ok(Cleaned { removed, keep })
}
