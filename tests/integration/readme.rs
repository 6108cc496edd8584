//! Checks of the documentation against what it describes, so that a moved page, a renamed test
//! or a new key of deploy.yml cannot leave it wrong unnoticed:
//! - docs/guarantees.md cites, in italics, the tests that fail without each promise. A renamed
//!   or deleted test would leave a promise citing nothing and nobody would notice: the check
//!   reads the citations and finds every cited test function where the citation says.
//! - every relative link and `#anchor` of README.md, docs/ and the maintainers' pages leads
//!   somewhere;
//! - the keys deploy.yml's parser accepts, the commented deploy.yml (from which deploy.yml(5) is
//!   rendered) and the reference docs/deploy.yml.md name the same keys;
//! - every `atomdeploy-hook …` line the pages' shell blocks show parses as a command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// docs/guarantees.md, the page of the guarantees.
fn guarantees_section() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/guarantees.md")).unwrap()
}

/// The numbered guarantees: each starts at a line `N. ` at the left margin.
fn numbered_guarantees(section: &str) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = Vec::new();
    for line in section.lines() {
        let number: String = line.chars().take_while(char::is_ascii_digit).collect();
        if !number.is_empty() && line[number.len()..].starts_with(". ") {
            items.push((number, String::new()));
        }
        if let Some((_, text)) = items.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    items
}

/// The italic spans of `text` (`*...*`, not `**...**`); a `*` inside backticks (`GIT_*`) is
/// text, not markup.
fn italic_spans(text: &str) -> Vec<String> {
    let text = text.replace("**", "");
    let (mut spans, mut current) = (Vec::new(), None::<String>);
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => in_code = !in_code,
            '*' if !in_code => {
                match current.take() {
                    Some(span) => spans.push(span),
                    None => current = Some(String::new()),
                }
                continue;
            }
            _ => {}
        }
        if let Some(span) = current.as_mut() {
            span.push(c);
        }
    }
    spans
}

/// What a citation names: a file (`something.rs` outside backticks), with the number of its
/// tests when it says `file.rs (N tests`, and the backticked snake_case names, each belonging to
/// the last file named before it.
#[derive(Debug)]
enum Cited {
    File(String, Option<usize>),
    Fn(String, String),
    /// A path from the repository's root that is not a test module (`scripts/check-package`).
    Path(String),
}

fn citations(span: &str) -> Vec<Cited> {
    let mut found = Vec::new();
    let mut file = None::<String>;
    for (i, part) in span.split('`').enumerate() {
        if i % 2 == 1 {
            let looks_like_a_fn = part.contains('_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if looks_like_a_fn {
                let file = file
                    .clone()
                    .unwrap_or_else(|| panic!("`{part}` cited before any file in: {span}"));
                found.push(Cited::Fn(file, part.to_string()));
            }
            continue;
        }
        let words: Vec<&str> = part
            .split(|c: char| c.is_whitespace() || c == ';' || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        for (i, word) in words.iter().enumerate() {
            let word = word.trim_matches(|c: char| c == '(' || c == ')' || c == '.');
            if ["scripts/", "fixtures/", "benches/"]
                .iter()
                .any(|top| word.starts_with(top))
            {
                found.push(Cited::Path(word.to_string()));
            } else if word.len() > 3 && word.ends_with(".rs") {
                file = Some(word.to_string());
                let count = match words.get(i + 1..i + 3) {
                    Some([n, tests]) if n.starts_with('(') && tests.starts_with("test") => {
                        n[1..].parse().ok()
                    }
                    _ => None,
                };
                found.push(Cited::File(word.to_string(), count));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Where `file` may mean: the integration module of that name or a harness file (`harness/…`,
/// both in tests/integration/), or a source file (unit tests) whose path ends so.
fn candidates(file: &str) -> Vec<PathBuf> {
    let mut all = vec![Path::new(ROOT).join("tests/integration").join(file)];
    let mut sources = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut sources);
    all.extend(sources.into_iter().filter(|p| p.ends_with(file)));
    all.retain(|p| p.is_file());
    all
}

fn defines(path: &Path, name: &str) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    text.contains(&format!("fn {name}(")) || text.contains(&format!("fn {name}<"))
}

#[test]
fn every_guarantee_cites_tests_that_exist_where_it_says() {
    let section = guarantees_section();
    let guarantees = numbered_guarantees(&section);
    assert!(
        guarantees.len() >= 30,
        "only {} guarantees found",
        guarantees.len()
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for (number, text) in &guarantees {
        let spans = italic_spans(text);
        if spans.is_empty() {
            broken.push(format!("guarantee {number} cites no test in italics"));
        }
        for cited in spans.iter().flat_map(|s| citations(s)) {
            checked += 1;
            match cited {
                Cited::File(file, count) => {
                    let places = candidates(&file);
                    if places.is_empty() {
                        broken.push(format!("guarantee {number}: no file {file}"));
                    }
                    if let Some(count) = count {
                        let module = Path::new(ROOT).join("tests/integration").join(&file);
                        let text = std::fs::read_to_string(&module).unwrap_or_default();
                        let tests = text.matches("#[test]").count();
                        if tests != count {
                            broken.push(format!(
                                "guarantee {number}: {file} says {count} tests, has {tests}"
                            ));
                        }
                    }
                }
                Cited::Path(path) => {
                    if !Path::new(ROOT).join(&path).exists() {
                        broken.push(format!("guarantee {number}: no {path}"));
                    }
                }
                Cited::Fn(file, name) => {
                    if !candidates(&file).iter().any(|p| defines(p, &name)) {
                        broken.push(format!("guarantee {number}: no `fn {name}` in {file}"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 150,
        "only {checked} citations found: the parser lost them"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The pages whose links are checked: the README, every page of docs/, and the maintainers'.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    for page in ["README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"] {
        pages.insert(0, root.join(page));
    }
    pages
}

/// The lines of a Markdown page outside fenced code blocks, where `#` is a comment, not a
/// heading, and `](` is text.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// The anchors GitHub gives a page's headings: the text in lower case, without punctuation
/// (backticks, colons, parentheses, `+`, `.`) but with `-` and `_`, spaces as `-`; a repeated
/// heading gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let Some(heading) = line[hashes..].strip_prefix(' ').filter(|_| hashes > 0) else {
            continue;
        };
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        anchors.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of a page's inline links (`[text](target)`) outside code blocks and spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let spans: Vec<&str> = line.split('`').step_by(2).collect();
        for span in spans {
            for (at, _) in span.match_indices("](") {
                let rest = &span[at + 2..];
                if let Some(end) = rest.find(')') {
                    targets.push(rest[..end].to_string());
                }
            }
        }
    }
    targets
}

#[test]
fn every_link_and_anchor_of_the_docs_leads_somewhere() {
    let pages = pages();
    let texts: BTreeMap<PathBuf, String> = pages
        .iter()
        .map(|page| (page.clone(), std::fs::read_to_string(page).unwrap()))
        .collect();
    let (mut broken, mut checked) = (Vec::new(), 0);
    for (page, text) in &texts {
        let name = page.strip_prefix(ROOT).unwrap().display().to_string();
        for target in link_targets(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{name}: ({target}): no file {}", file.display()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let found = match texts.get(&file) {
                Some(text) => anchors(text).contains(anchor),
                None => false,
            };
            if !found {
                broken.push(format!("{name}: ({target}): no heading #{anchor} there"));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} links found: the parser lost them"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The keys the parser accepts at a level of deploy.yml, as its error for an unknown key lists
/// them: `text` puts `zz_unknown: 1` where the keys are asked for.
fn parser_keys(text: &str) -> BTreeSet<String> {
    let error = atomdeploy_hook::config::parse(text, Path::new("deploy.yml"), Path::new("/"))
        .err()
        .unwrap_or_else(|| panic!("an unknown key was accepted in:\n{text}"));
    let error = format!("{error:#}");
    let (_, expected) = error
        .split_once("unknown field `zz_unknown`, expected")
        .unwrap_or_else(|| panic!("not an unknown key's error: {error}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The keys at the left margin of the commented deploy.yml, set or commented out
/// (`keep_builds: 5`, `# app_dir: backend/`, `#healthcheck:`).
pub(crate) fn example_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|line| {
            line.strip_prefix('#')
                .map_or(line, |l| l.strip_prefix(' ').unwrap_or(l))
        })
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, rest)| {
            !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && (rest.is_empty() || rest.starts_with(' '))
        })
        .map(|(key, _)| key.to_string())
        .collect()
}

/// The rows of docs/deploy.yml.md's table: its key, and the rest of the row.
fn reference_rows(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split_once("` |"))
        .map(|(key, rest)| (key.to_string(), rest.to_string()))
        .collect()
}

#[test]
fn deploy_yml_its_reference_and_the_parser_name_the_same_keys() {
    let root = Path::new(ROOT);
    let example = std::fs::read_to_string(root.join("deploy.yml")).unwrap();
    let reference = std::fs::read_to_string(root.join("docs/deploy.yml.md")).unwrap();
    let rows = reference_rows(&reference);
    let parsed = parser_keys("repository: /srv/app.git\nzz_unknown: 1\n");
    assert!(
        parsed.len() > 15,
        "only {parsed:?} found in the parser's error"
    );
    let documented: BTreeSet<String> = rows.keys().cloned().collect();
    assert_eq!(
        example_keys(&example),
        parsed,
        "deploy.yml's keys (left) are not the parser's"
    );
    assert_eq!(
        documented, parsed,
        "docs/deploy.yml.md's table (left) is not the parser's keys"
    );
    // A map's keys: each in the example and in its key's row of the reference.
    let nested = [
        ("composer", "composer: {zz_unknown: 1}"),
        ("build", "build: {commands: [x], zz_unknown: 1}"),
        ("build", "build: {commands: [{run: x, zz_unknown: 1}]}"),
        (
            "healthcheck",
            "healthcheck: {url: 'http://127.0.0.1/', zz_unknown: 1}",
        ),
        (
            "preflight",
            "preflight: {fastcgi: 'unix:/run/php/app.sock', zz_unknown: 1}",
        ),
        (
            "notify",
            "notify: [{url: 'http://127.0.0.1/', zz_unknown: 1}]",
        ),
    ];
    let mut missing = Vec::new();
    for (key, yaml) in nested {
        let keys = parser_keys(&format!("repository: /srv/app.git\n{yaml}\n"));
        assert!(!keys.is_empty(), "no keys found for {key}");
        for inner in keys {
            // Set in an example (`  timeout: 900`, `{run: …}`), or named in a comment.
            let shown = [
                format!(" {inner}:"),
                format!("{{{inner}:"),
                format!("`{inner}`"),
            ];
            if !shown.iter().any(|s| example.contains(s)) {
                missing.push(format!("deploy.yml does not show {key}'s `{inner}`"));
            }
            if !rows[key].contains(inner.as_str()) {
                missing.push(format!(
                    "docs/deploy.yml.md's {key} row does not name `{inner}`"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The `atomdeploy-hook …` lines of the shell blocks of README.md and docs/, continuation lines
/// joined, without their `sudo -u USER` and their comment.
fn shown_commands() -> Vec<(String, String)> {
    let mut shown = Vec::new();
    for page in pages() {
        let name = page.strip_prefix(ROOT).unwrap().display().to_string();
        let text = std::fs::read_to_string(&page).unwrap();
        let (mut shell, mut line) = (false, String::new());
        for raw in text.lines() {
            if let Some(info) = raw.strip_prefix("```") {
                shell = !shell && (info == "sh" || info == "bash");
                continue;
            }
            if !shell {
                continue;
            }
            line.push_str(raw.trim());
            if line.ends_with('\\') {
                line.pop();
                line.push(' ');
                continue;
            }
            let command = std::mem::take(&mut line);
            let command = command.split(" #").next().unwrap().trim();
            let command = command.strip_prefix("sudo -u deploy ").unwrap_or(command);
            if command.starts_with("atomdeploy-hook ") {
                shown.push((name.clone(), command.to_string()));
            }
        }
    }
    shown
}

/// Each way to write a command line with optional parts: `[--json|--names]` left out or one of
/// its alternatives, `[REV]` left out or an example value.
fn spellings(command: &str) -> Vec<String> {
    let Some(open) = command.find('[') else {
        return vec![command.to_string()];
    };
    let close = open + command[open..].find(']').expect("a [ without its ]");
    let inner = &command[open + 1..close];
    let mut choices = vec![String::new()];
    if inner.starts_with('-') {
        choices.extend(inner.split('|').map(|c| c.trim().to_string()));
    } else {
        choices.push("main".to_string());
    }
    choices
        .iter()
        .flat_map(|choice| {
            spellings(&format!(
                "{}{choice}{}",
                &command[..open],
                &command[close + 1..]
            ))
        })
        .collect()
}

/// Words as sh splits them, for the quoting the pages use: '…' and "…" around a word.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote) = (Vec::new(), None::<String>, None::<char>);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// Every `atomdeploy-hook` command line the pages show is one the command line accepts: a
/// renamed flag or subcommand cannot leave the documentation showing the old one.
#[test]
fn every_command_the_docs_show_is_one_the_command_line_accepts() {
    use clap::Parser;
    let shown = shown_commands();
    assert!(shown.len() > 15, "only {} command lines found", shown.len());
    let mut refused = Vec::new();
    for (page, command) in &shown {
        for spelling in spellings(command) {
            if let Err(err) = atomdeploy_hook::commands::cli::Cli::try_parse_from(words(&spelling))
            {
                refused.push(format!("{page}: `{spelling}`: {}", err.kind()));
            }
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
