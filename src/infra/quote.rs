//! Text quoted for `sh`: the hook script `install` writes, the commands it and `doctor` print
//! for people to paste, and the `--receive-pack` command the primary hands git.

/// Single-quoted for sh, as git's `sq_quote` does (which `serve` undoes).
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Plain paths stay plain in the lines people paste; others are quoted for the shell.
pub(crate) fn quote_if_needed(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%:,".contains(c))
    {
        s.to_string()
    } else {
        sh_quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_survive_sh() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(quote_if_needed("/srv/app.git"), "/srv/app.git");
        assert_eq!(quote_if_needed("/srv/my app"), "'/srv/my app'");
        assert_eq!(quote_if_needed(""), "''");
    }
}
