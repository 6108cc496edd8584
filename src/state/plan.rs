//! The deploy root's layout and its validated configuration: everything decided before any
//! file is touched.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::{self, Config};
use crate::state::build_name::BuildName;

/// Where everything lives under one deploy root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) application: PathBuf,
    pub(crate) builds: PathBuf,
    pub(crate) shared: PathBuf,
    pub(crate) latest: PathBuf,
    pub(crate) config_file: PathBuf,
    /// Private state: the lock, the deploy log, the checkout's index, builds in the making.
    pub(crate) state: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        let state = root.join(".atomdeploy");
        Layout {
            root: root.to_path_buf(),
            application: root.join("application"),
            builds: root.join("builds"),
            shared: root.join("shared"),
            latest: root.join("latest"),
            config_file: root.join("deploy.yml"),
            state,
        }
    }

    /// `builds/<name>`: the build's files.
    pub(crate) fn build_dir(&self, build: &BuildName) -> PathBuf {
        self.builds.join(build.to_string())
    }
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.state.join("lock")
    }
    pub(crate) fn deploy_log(&self) -> PathBuf {
        self.state.join("deploys.jsonl")
    }
    /// The index of `application/`, kept out of the bare repository so that git's own tools
    /// on the server never see a half-updated index of a working tree they do not know.
    pub(crate) fn index_file(&self) -> PathBuf {
        self.state.join("application.index")
    }
    /// The indexes of the submodules' directories in `application/`, one each.
    pub(crate) fn submodule_indexes(&self) -> PathBuf {
        self.state.join("modules").join("checkouts")
    }
    /// Builds in the making; on the same filesystem as `builds/` so a rename publishes them.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.state.join("tmp")
    }
    /// Builds being removed: renamed here first so `builds/` never shows a half-deleted one.
    pub(crate) fn trash(&self) -> PathBuf {
        self.state.join("trash")
    }
    /// What is known of each build beyond its files: commit, ref, time, whether it is bad.
    pub(crate) fn meta_dir(&self) -> PathBuf {
        self.state.join("builds")
    }
    pub(crate) fn meta_file(&self, build: &BuildName) -> PathBuf {
        self.meta_dir().join(format!("{build}.json"))
    }
    /// Which application/ files the build's files came from (see `manifest`).
    pub(crate) fn manifest_file(&self, build: &BuildName) -> PathBuf {
        self.meta_dir().join(format!("{build}.files"))
    }
    /// The files `keep_assets:` carried into the build from earlier ones (see
    /// `steps/assets.rs`): not its own, so never carried on again.
    pub(crate) fn carried_file(&self, build: &BuildName) -> PathBuf {
        self.meta_dir().join(format!("{build}.carried"))
    }
    /// The full output of each deploy attempt, as the pusher saw it.
    pub(crate) fn output_dir(&self) -> PathBuf {
        self.state.join("output")
    }
}

/// A validated deploy root: its layout and its configuration.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) layout: Layout,
    pub(crate) config: Config,
}

impl Plan {
    pub(crate) fn load(root: &Path) -> Result<Plan> {
        let root = std::fs::canonicalize(root)
            .with_context(|| format!("deploy root {} is not usable", root.display()))?;
        let layout = Layout::new(&root);
        let text = std::fs::read_to_string(&layout.config_file).with_context(|| {
            format!(
                "cannot read {} (run `atomdeploy-hook install` to create it)",
                layout.config_file.display()
            )
        })?;
        let config = config::parse(&text, &layout.config_file, &root)?;
        for dir in [&layout.builds, &layout.shared, &layout.state] {
            if !dir.is_dir() {
                bail!(
                    "{} is missing: this is not an installed deploy root (run `atomdeploy-hook install`)",
                    dir.display()
                );
            }
        }
        Ok(Plan { layout, config })
    }
}
