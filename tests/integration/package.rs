//! What the Debian package holds beside the binary: the man pages examples/gen-docs.rs renders
//! from the clap definitions, and the Maintainer scripts/maintainer names.

use std::path::Path;
use std::process::Command;

use atomdeploy_hook::commands::cli::Cli;
use clap::CommandFactory;

/// The generator itself, as scripts/package runs it: an example is not built for
/// `cargo test --test integration`, so its code is compiled in here instead.
#[allow(dead_code)] // its `main`, which only the example calls
#[path = "../../examples/gen-docs.rs"]
mod gen_docs;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every page gen-docs writes, as `man` shows it (no roff warning allowed), by file name.
fn rendered_pages(dir: &Path) -> Vec<(String, String)> {
    gen_docs::man_pages(dir).unwrap();
    let mut pages: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, rendered(&path))
        })
        .collect();
    pages.sort();
    pages
}

/// The page at `path` as `man` shows it, one paragraph a line; a roff warning fails the test.
fn rendered(path: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(path)
        .env("MANWIDTH", "1000")
        .output()
        .expect("man (the man-db package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "man {}: {stderr}",
        path.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of a page's section `heading`, up to the next heading (man indents all but those).
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading} in {page}"))
        + heading.len()
        + 2;
    let rest = &page[start..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_flag_with_a_value_shows_it_in_its_synopsis_and_the_root_variable_is_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let pages = rendered_pages(tmp.path());
    let page = |file: &str| {
        &pages
            .iter()
            .find(|(name, _)| name == file)
            .unwrap_or_else(|| panic!("no {file}"))
            .1
    };

    // Every option of every (sub)command that takes a value, from the definitions: its page's
    // synopsis shows it as --help does, `--to <BUILD>`.
    let mut cmd = Cli::command();
    cmd.build();
    let mut todo = vec![cmd];
    let mut checked = 0;
    while let Some(cmd) = todo.pop() {
        let name = cmd.get_bin_name().unwrap_or(cmd.get_name());
        let file = format!("{}.1", name.replace(' ', "-"));
        let synopsis = section(page(&file), "SYNOPSIS");
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let (Some(long), Some(values), true) =
                (arg.get_long(), arg.get_value_names(), takes_value)
            else {
                continue;
            };
            let shown = format!("--{long} <{}>", values[0]);
            assert!(
                synopsis.contains(&shown),
                "{file}: no {shown} in\n{synopsis}"
            );
            checked += 1;
        }
        todo.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .cloned(),
        );
    }
    assert!(checked >= 15, "only {checked} options with a value");
    let rollback = section(page("atomdeploy-hook-rollback.1"), "SYNOPSIS");
    assert!(
        rollback.contains("atomdeploy-hook rollback [--to <BUILD>] [--root <DIR>] [-h|--help]"),
        "{rollback}"
    );

    // Where --root is documented, so is the variable that stands in for it.
    for (file, text) in &pages {
        let options = section(text, "OPTIONS");
        if options.contains("--root <DIR>") {
            assert!(
                options.contains(
                    "May also be specified with the ATOMDEPLOY_ROOT environment variable"
                ),
                "{file}: {options}"
            );
        }
    }
    let environment = section(page("atomdeploy-hook.1"), "ENVIRONMENT");
    for var in [
        "ATOMDEPLOY_ROOT",
        "COMPOSER_AUTH",
        "ATOMDEPLOY_BUILD",
        "ATOMDEPLOY_RUN",
    ] {
        assert!(
            environment.contains(var),
            "no {var} in ENVIRONMENT:\n{environment}"
        );
    }
    assert!(environment.contains("rollback"), "{environment}");
}

/// scripts/maintainer's output and warning, with only `env` set: no git identity of the machine's.
fn maintainer(env: &[(&str, &str)]) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(Path::new(ROOT).join("scripts/maintainer"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// deploy.yml(5), rendered from the commented deploy.yml, renders without a roff warning and
/// has an entry for each key deploy.yml shows (`readme::` checks those are the parser's keys),
/// with the file's own words under it.
#[test]
fn the_deploy_yml_page_has_an_entry_for_every_key_of_the_example() {
    let tmp = tempfile::tempdir().unwrap();
    gen_docs::deploy_yml_page(tmp.path()).unwrap();
    let page = rendered(&tmp.path().join("deploy.yml.5"));
    // An entry's tag: its keys at the left, `build, exclude`, maybe followed by the text when
    // the tag is short (`branch Pushes to this branch …`).
    let mut tagged = std::collections::BTreeSet::new();
    for line in section(&page, "KEYS").lines() {
        let Some(tag) = line
            .strip_prefix("       ")
            .filter(|t| t.starts_with(char::is_lowercase))
        else {
            continue;
        };
        for part in tag.split(", ") {
            tagged.insert(part.split(' ').next().unwrap().to_string());
            if part.contains(' ') {
                break;
            }
        }
    }
    let example = std::fs::read_to_string(Path::new(ROOT).join("deploy.yml")).unwrap();
    let keys = super::readme::example_keys(&example);
    assert!(keys.len() > 15, "only {keys:?} in deploy.yml");
    let missing: Vec<&String> = keys.difference(&tagged).collect();
    assert!(missing.is_empty(), "no entry for {missing:?} in:\n{page}");
    // The words are the file's: a sentence of its comments, joined into one line as man fills it.
    let said =
        "Pushes to this branch deploy; pushes to any other branch or tag are only acknowledged.";
    assert!(
        example.contains("Pushes to this branch deploy;"),
        "deploy.yml changed its words"
    );
    assert!(page.contains(said), "{page}");
}

#[test]
fn the_maintainer_is_who_builds_and_a_placeholder_is_warned_about() {
    let real = "Jane Doe <jane@corp.org>";
    let git = |name: &'static str, email: &'static str| {
        [
            ("GIT_CONFIG_COUNT", "2"),
            ("GIT_CONFIG_KEY_0", "user.name"),
            ("GIT_CONFIG_VALUE_0", name),
            ("GIT_CONFIG_KEY_1", "user.email"),
            ("GIT_CONFIG_VALUE_1", email),
        ]
    };
    // Debian's variables, in either spelling, before the builder's git identity.
    let debian = [("DEBFULLNAME", "Jane Doe"), ("DEBEMAIL", "jane@corp.org")];
    let debian_and_git: Vec<_> = debian
        .into_iter()
        .chain(git("Git Person", "g@corp.org"))
        .collect();
    assert_eq!(
        maintainer(&debian_and_git),
        (real.to_string(), String::new())
    );
    assert_eq!(
        maintainer(&[("DEBEMAIL", real)]),
        (real.to_string(), String::new())
    );
    assert_eq!(
        maintainer(&git("Jane Doe", "jane@corp.org")),
        (real.to_string(), String::new())
    );

    // A placeholder address, from anywhere, still builds, with a warning naming what to set.
    let placeholders = [
        maintainer(&[("DEBEMAIL", "ci@build.example")]),
        maintainer(&git("ci", "ci@example.com")),
        // No identity at all: the first commit's author, whoever that was.
        maintainer(&[]),
    ];
    for (named, warning) in placeholders {
        assert!(named.contains('<') && named.ends_with('>'), "{named}");
        assert!(
            warning.starts_with("scripts/package: warning: ")
                && warning.contains("DEBFULLNAME and DEBEMAIL")
                && warning.contains("git config user.name and user.email"),
            "{named}: {warning}"
        );
    }
}
