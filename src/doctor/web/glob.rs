//! Paths whose components may hold `*` (nginx's `include sites-enabled/*`, php-fpm's
//! `/etc/php/*/fpm/pool.d/*.conf`): expanded in sorted order, as both servers do.

use std::path::{Component, Path, PathBuf};

/// The existing paths `pattern` names, sorted; a pattern without `*` names itself if it
/// exists.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str().to_string_lossy().into_owned();
        if !matches!(component, Component::Normal(_)) || !part.contains('*') {
            found.iter_mut().for_each(|p| p.push(&part));
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.') && matches(&part, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found
}

/// Whether `name` matches `pattern`, whose only wildcard is `*` (any run of characters).
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn star_matches_any_run_within_a_name() {
        assert!(matches("*.conf", "www.conf"));
        assert!(matches("*", "8.2"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("*.conf", "www.conf.dpkg-old"));
        assert!(!matches("a*a", "a"));
        assert!(matches("www.conf", "www.conf"));
    }
}
