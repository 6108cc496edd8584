//! What is on the server: `atomdeploy-hook builds` and `atomdeploy-hook log`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::infra::report;
use crate::state::builds;
use crate::state::history::{self, Outcome};
use crate::state::plan::Layout;

/// One row of `builds`: a build on disk, or a failed deploy that left none.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    /// The build's name; `null` for a failed deploy, but for one whose build went live and was
    /// rolled back by its health check (then removed by cleanup): `log` takes that name.
    pub(crate) name: Option<String>,
    pub(crate) commit: String,
    #[serde(rename = "ref")]
    pub(crate) source: String,
    /// UTC, RFC 3339.
    pub(crate) deployed_at: String,
    /// `live`, `bad`, `rollback target` (comma-separated when several hold), `failed`, or "".
    pub(crate) state: String,
    /// Bytes on disk this build adds to the builds newer than it (each file counted once, in
    /// the newest build that has it): the figures of all builds add up to what `builds/` takes
    /// on disk. `null` for a failed deploy.
    pub(crate) disk_bytes: Option<u64>,
    /// The build's full size, shared files included (`du -s --apparent-size`).
    pub(crate) apparent_bytes: Option<u64>,
    pub(crate) error: Option<String>,
    /// The commit's subject, its author (`name <email>`) and who pushed it, as the deploy log
    /// has them; `null` for builds made before the log kept them.
    pub(crate) subject: Option<String>,
    pub(crate) author: Option<String>,
    pub(crate) pusher: Option<String>,
    /// For a replay of a tagged commit: its tags (`v1.0`), as the deploy log has them.
    pub(crate) tag: Option<String>,
}

/// Every build, newest first, with the failed deploys since the oldest of them.
pub(crate) fn rows(layout: &Layout) -> Result<Vec<Row>> {
    let log = history::read(layout)?;
    let live = builds::live(layout);
    let target = builds::rollback_target(layout)?;
    let mut rows = Vec::new();
    let mut names = builds::list(layout)?;
    names.reverse();
    let dirs: Vec<_> = names.iter().map(|b| layout.build_dir(b)).collect();
    let usage = builds::disk_usage(&dirs);
    for (build, usage) in names.into_iter().zip(usage) {
        let meta = builds::read_meta(layout, &build);
        let mut states = Vec::new();
        if Some(&build) == live.as_ref() {
            states.push("live");
        }
        if meta.as_ref().is_some_and(|m| m.bad) {
            states.push("bad");
        }
        if Some(&build) == target.as_ref() {
            states.push("rollback target");
        }
        let name = build.to_string();
        // Who made the build: its first attempt, not a later rollback or push that found it live.
        let made = log.iter().find(|e| {
            e.build.as_deref() == Some(name.as_str())
                && !matches!(e.outcome, Outcome::RolledBack | Outcome::Unchanged)
        });
        rows.push(Row {
            name: Some(name.clone()),
            commit: meta
                .as_ref()
                .map(|m| m.commit.clone())
                .or_else(|| builds::revision(layout, &build))
                .unwrap_or_default(),
            source: meta.as_ref().map(|m| m.source.clone()).unwrap_or_default(),
            deployed_at: meta.map(|m| m.deployed_at).unwrap_or_default(),
            state: states.join(", "),
            disk_bytes: Some(usage.disk),
            apparent_bytes: Some(usage.apparent),
            error: None,
            subject: made.and_then(|m| m.subject.clone()),
            author: made.and_then(|m| m.author.clone()),
            pusher: made.and_then(|m| m.pusher.clone()),
            tag: made.and_then(|m| m.tag.clone()),
        });
    }
    let oldest = rows
        .iter()
        .map(|r| r.deployed_at.clone())
        .filter(|t| !t.is_empty())
        .min();
    for entry in log {
        // A build that went live and was rolled back by its health check is a failed deploy
        // too, once cleanup removed it; it keeps its name, which `log` takes.
        let gone_unhealthy = entry.outcome == Outcome::Unhealthy
            && entry
                .build
                .as_deref()
                .and_then(crate::state::build_name::BuildName::parse)
                .is_some_and(|b| !layout.build_dir(&b).exists());
        if (entry.outcome == Outcome::Failed || gone_unhealthy)
            && oldest.as_ref().is_none_or(|o| entry.started_at >= *o)
        {
            rows.push(Row {
                name: entry.build.filter(|_| gone_unhealthy),
                commit: entry.commit,
                source: entry.refname,
                deployed_at: entry.started_at,
                state: "failed".into(),
                disk_bytes: None,
                apparent_bytes: None,
                error: entry.error,
                subject: entry.subject,
                author: entry.author,
                pusher: entry.pusher,
                tag: entry.tag,
            });
        }
    }
    rows.sort_by(|a, b| {
        b.deployed_at
            .cmp(&a.deployed_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    Ok(rows)
}

pub(crate) fn print_builds(layout: &Layout, json: bool) -> Result<()> {
    let rows = rows(layout)?;
    if json {
        let text = serde_json::to_string_pretty(&rows)?;
        return report::to_stdout(|out| writeln!(out, "{text}"));
    }
    report::to_stdout(|out| write_builds(out, layout, &rows))
}

fn write_builds(out: &mut dyn Write, layout: &Layout, rows: &[Row]) -> std::io::Result<()> {
    if rows.is_empty() {
        writeln!(out, "no builds yet")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<8} {:<20} {:<20} {:<24} {:>9} {:>9}",
        "BUILD", "COMMIT", "REF", "DEPLOYED (UTC)", "STATE", "DISK", "APPARENT"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<20} {:<8} {:<20} {:<20} {:<24} {:>9} {:>9}",
            row.name.as_deref().unwrap_or("-"),
            &row.commit[..row.commit.len().min(7)],
            row.source,
            row.deployed_at
                .get(..19)
                .unwrap_or(&row.deployed_at)
                .replace('T', " "),
            row.state,
            row.disk_bytes.map(human_size).unwrap_or_default(),
            row.apparent_bytes.map(human_size).unwrap_or_default(),
        )?;
        if let Some(line) = who_and_what(row) {
            writeln!(out, "    {line}")?;
        }
        if let Some(error) = &row.error {
            writeln!(out, "    error: {error}")?;
        }
        if row.state != "failed" {
            continue;
        }
        match &row.name {
            Some(build) if kept_output_of(layout, build) => {
                writeln!(out, "    log: atomdeploy-hook log {build}")?
            }
            Some(_) => {}
            None if failed_output(layout, &row.deployed_at).is_some() => writeln!(
                out,
                "    log: atomdeploy-hook log {}",
                failed_id(&row.deployed_at)
            )?,
            None => {}
        }
    }
    let total: u64 = rows.iter().filter_map(|r| r.disk_bytes).sum();
    writeln!(
        out,
        "builds/ takes {} on disk.\nDISK: what a build adds to the newer ones (a file several \
         builds share counts in the newest); deleting a build and all older ones frees the sum \
         of theirs.\nAPPARENT: a build's full size.",
        human_size(total)
    )?;
    Ok(())
}

/// The full output of a deploy attempt: of `id` — a build's name, or the `failed-…` id
/// `builds` shows under a failed attempt — or of the latest attempt, failed or not.
pub(crate) fn print_log(layout: &Layout, id: Option<&str>) -> Result<()> {
    let (file, what) = match id {
        Some(id) if id.starts_with("failed-") => {
            let entry = history::read(layout)?
                .into_iter()
                .find(|e| e.outcome == Outcome::Failed && failed_id(&e.started_at) == id)
                .with_context(|| {
                    format!("`{id}` is not a failed attempt that `atomdeploy-hook builds` lists")
                })?;
            let file = entry.output.with_context(|| {
                format!(
                    "no output is kept for {id}: it was refused before it began ({})",
                    entry.error.unwrap_or_default()
                )
            })?;
            (file, format!("the failed attempt {id}"))
        }
        Some(build) => {
            let Some(name) = crate::state::build_name::BuildName::parse(build) else {
                bail!(
                    "`{build}` is not a build name or a failed attempt's id (`atomdeploy-hook builds` lists them)"
                );
            };
            let file = format!("{build}.log");
            if layout.output_dir().join(&file).exists() {
                (file, format!("builds/{build}"))
            } else {
                // A bad build that cleanup removed: its output stays as a failed attempt's.
                (builds::failed_output_of(&name), format!("builds/{build}"))
            }
        }
        None => (
            history::read(layout)?
                .into_iter()
                .rev()
                .find_map(|e| e.output)
                .context("no deploy has run yet")?,
            "the latest deploy".to_string(),
        ),
    };
    let path = layout.output_dir().join(&file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no output is kept for {what} ({})", path.display()))?;
    report::to_stdout(|out| out.write_all(text.as_bytes()))
}

/// `"subject" by author, pushed by pusher`, as far as the log knows.
fn who_and_what(row: &Row) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(tag) = &row.tag {
        parts.push(format!("tag {tag}:"));
    }
    if let Some(subject) = &row.subject {
        parts.push(format!("\"{subject}\""));
    }
    if let Some(author) = &row.author {
        parts.push(format!("by {author}"));
    }
    let mut line = parts.join(" ");
    if let Some(pusher) = &row.pusher {
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(&format!("pushed by {pusher}"));
    }
    (!line.is_empty()).then_some(line)
}

/// The id of a failed attempt that left no build: its start time, as in its output's name.
fn failed_id(started_at: &str) -> String {
    format!("failed-{}", started_at.replace([':', '.'], ""))
}

/// Whether the output of the removed bad build `build` is still kept (the newest are).
fn kept_output_of(layout: &Layout, build: &str) -> bool {
    crate::state::build_name::BuildName::parse(build).is_some_and(|name| {
        layout
            .output_dir()
            .join(builds::failed_output_of(&name))
            .exists()
    })
}

/// The output file kept for the failed attempt that started at `started_at`, if any.
fn failed_output(layout: &Layout, started_at: &str) -> Option<String> {
    let prefix = format!("{}-", failed_id(started_at));
    std::fs::read_dir(layout.output_dir())
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&prefix) && name.ends_with(".log"))
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `builds --names`: the builds on disk, newest first, for the shell's completion; a reader
/// gone early (`| head -1`) ends it quietly, as for `builds`.
pub(crate) fn print_build_names(layout: &Layout) -> Result<()> {
    let names = builds::list(layout)?;
    report::to_stdout(|out| {
        for build in names.iter().rev() {
            writeln!(out, "{build}")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_234_567), "1.2 MB");
        assert_eq!(human_size(5_000_000_000_000), "5000.0 GB");
    }
}
