//! README.md's `## Guarantees` cites, in italics, the tests that fail without each promise. A
//! renamed or deleted test would leave a promise citing nothing and nobody would notice: this
//! check reads the citations and finds every cited test function where the citation says.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `## Guarantees` section, up to the next `## ` heading.
fn guarantees_section() -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme
        .find("\n## Guarantees\n")
        .expect("README.md has no `## Guarantees` section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
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
