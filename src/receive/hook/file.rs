//! The `post-receive` script `install` writes (hooks/post-receive), read back: which program
//! it runs for which roots. install reads it to add a root without dropping the others;
//! doctor, to tell whether a root's pushes reach it.

use std::path::PathBuf;

/// One `… post-receive --root DIR…` command in the hook: the program and the roots it names.
#[derive(Debug, PartialEq)]
pub(crate) struct Invocation {
    pub(crate) program: PathBuf,
    pub(crate) roots: Vec<PathBuf>,
}

/// Every command line of a shell script that runs `post-receive`, with its program and `--root`
/// arguments.
pub(crate) fn invocations(script: &str) -> Vec<Invocation> {
    let mut found = Vec::new();
    for line in script.lines() {
        let Some(mut words) = sh_words(line) else {
            continue;
        };
        if words.first().is_some_and(|w| w == "exec") {
            words.remove(0);
        }
        if words.len() < 2 || !words.iter().any(|w| w == "post-receive") {
            continue;
        }
        let mut roots = Vec::new();
        let mut rest = words[1..].iter();
        while let Some(word) = rest.next() {
            if word == "--root" {
                roots.extend(rest.next().map(PathBuf::from));
            } else if let Some(root) = word.strip_prefix("--root=") {
                roots.push(PathBuf::from(root));
            }
        }
        found.push(Invocation {
            program: PathBuf::from(&words[0]),
            roots,
        });
    }
    found
}

/// The roots a hook written by `install` names: the `--root` arguments of its `exec` line,
/// read as sh reads them (install quotes each one). None if the hook has no such line, or one
/// this cannot read (rewriting it would drop roots without a word).
pub(crate) fn hook_roots(hook: &str) -> Option<Vec<PathBuf>> {
    let line = hook.lines().find(|l| l.trim_start().starts_with("exec "))?;
    let call = invocations(line).pop()?;
    (!call.roots.is_empty()).then_some(call.roots)
}

/// Splits one line of sh into words: blanks separate, '…' quotes everything, "…" everything
/// but `\"` and `\\`, a backslash outside quotes escapes the next character. None for what
/// this does not read (an unterminated quote).
fn sh_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                words.extend(word.take());
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_of_a_hook_are_read_as_sh_reads_them() {
        let hook = "#!/bin/sh\n# installed\nexec '/usr/bin/atomdeploy-hook' post-receive \
                    --root '/srv/app' --root '/srv/my app/it'\\''s \"x\"'\n";
        assert_eq!(
            hook_roots(hook).unwrap(),
            [
                PathBuf::from("/srv/app"),
                PathBuf::from("/srv/my app/it's \"x\"")
            ]
        );
        assert_eq!(
            hook_roots("exec bin post-receive --root=/a --root \"/b \\\"c\\\"\" # x").unwrap(),
            [PathBuf::from("/a"), PathBuf::from("/b \"c\"")]
        );
        assert!(hook_roots("#!/bin/sh\necho hi\n").is_none());
        assert!(hook_roots("exec bin post-receive --root '/unterminated").is_none());
    }

    #[test]
    fn the_installed_line_is_read_back() {
        let calls = invocations(
            "#!/bin/sh\n# post-receive hook\nexec '/usr/bin/atomdeploy-hook' post-receive --root '/srv/it'\\''s'\n",
        );
        assert_eq!(
            calls,
            [Invocation {
                program: "/usr/bin/atomdeploy-hook".into(),
                roots: vec!["/srv/it's".into()],
            }]
        );
    }

    #[test]
    fn several_roots_are_all_read() {
        let calls = invocations("exec /bin/a post-receive --root /srv/a --root=\"/srv/b c\"\n");
        assert_eq!(
            calls[0].roots,
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b c")]
        );
    }

    #[test]
    fn lines_that_do_not_run_post_receive_are_ignored() {
        assert!(invocations("#!/bin/sh\necho post-receive\n# exec x post-receive\n").len() == 1);
        assert!(invocations("#!/bin/sh\nlogger pushed\n").is_empty());
    }
}
