//! Running composer in `application/`, where `vendor/` persists between deploys.

use std::path::Path;

use anyhow::{Context, Result};

use crate::child;
use crate::config::Composer;
use crate::report::Reporter;

/// What composer did, for the step's line.
pub enum Outcome {
    Ran,
    NoComposerJson,
}

pub fn install(app: &Path, composer: &Composer, reporter: &Reporter) -> Result<Outcome> {
    if !app.join("composer.json").is_file() {
        return Ok(Outcome::NoComposerJson);
    }
    let program = which::which("composer").context(
        "the app has a composer.json but `composer` is not on the hook's PATH \
         (install it, e.g. `apt-get install composer`, or set `composer: false` in deploy.yml)",
    )?;
    let mut cmd = child::command(&program, app);
    cmd.args(&composer.args);
    let what = format!("`composer {}`", composer.args.join(" "));
    child::run_limited(cmd, &what, Some(composer.timeout), reporter)?;
    Ok(Outcome::Ran)
}
