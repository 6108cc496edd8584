//! Paths with wildcards (nginx's `include sites-enabled/*`, php-fpm's
//! `/etc/php/*/fpm/pool.d/*.conf`), expanded by the `glob` crate as both servers expand them
//! with glob(3) and flags that leave sorting on and GLOB_PERIOD off: in sorted order, and a
//! wildcard never matches a name's leading dot (`*` skips `.hidden.conf`, `.*` finds it).

use std::path::{Path, PathBuf};

use ::glob::{MatchOptions, Pattern};

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// The existing paths `pattern` names, sorted; a pattern without a wildcard names itself if
/// it exists.
pub(crate) fn expand(pattern: &Path) -> Vec<PathBuf> {
    let pattern = pattern.to_string_lossy();
    let paths = ::glob::glob_with(&pattern, OPTIONS)
        // glob(3) reads a bracket it cannot close as itself.
        .or_else(|_| ::glob::glob_with(&Pattern::escape(&pattern), OPTIONS));
    // Unreadable directories are skipped, as glob(3) without GLOB_ERR does; a dangling
    // symlink is no file to read.
    paths
        .into_iter()
        .flatten()
        .flatten()
        .filter(|p| p.exists())
        .collect()
}

/// Whether the file name `name` matches the one-component `pattern`.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    match Pattern::new(pattern) {
        Ok(pattern) => pattern.matches_with(name, OPTIONS),
        Err(_) => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_within_a_name() {
        assert!(matches("*.conf", "www.conf"));
        assert!(matches("*", "8.2"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("*.conf", "www.conf.dpkg-old"));
        assert!(!matches("a*a", "a"));
        assert!(matches("www.conf", "www.conf"));
        assert!(!matches("*", ".hidden"));
        assert!(matches(".*", ".hidden"));
        assert!(matches("[ab", "[ab"));
    }

    #[test]
    fn expands_sorted_skipping_hidden_names() {
        let dir = tempfile::tempdir().unwrap();
        for version in ["8.3", "7.4", "8.2", ".old"] {
            let pool = dir.path().join(version).join("pool.d");
            std::fs::create_dir_all(&pool).unwrap();
            for file in ["www.conf", "app.conf", ".hidden.conf", "b.conf.dpkg-old"] {
                std::fs::write(pool.join(file), "").unwrap();
            }
        }
        let found = expand(&dir.path().join("*/pool.d/*.conf"));
        let names: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "7.4/pool.d/app.conf",
                "7.4/pool.d/www.conf",
                "8.2/pool.d/app.conf",
                "8.2/pool.d/www.conf",
                "8.3/pool.d/app.conf",
                "8.3/pool.d/www.conf",
            ]
        );
        let file = dir.path().join("8.2/pool.d/www.conf");
        assert_eq!(expand(&file), std::slice::from_ref(&file));
        assert!(expand(&dir.path().join("8.2/pool.d/none.conf")).is_empty());
    }
}
