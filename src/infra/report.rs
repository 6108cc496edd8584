//! What the person who pushed sees: step headers with durations, progress, `error:` lines and
//! a one-line summary.
//!
//! Inside a hook, stderr is a pipe that git relays line by line as `remote: …`; a redraw with
//! `\r` is relayed too, so progress bars work there if they are drawn that way and not too
//! often. When output goes to a file, bars are hidden and only whole lines are written.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// How stderr is drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// A terminal: indicatif's own drawing.
    Terminal,
    /// git's sideband: redraws with `\r`, a few times a second.
    Sideband,
    /// A file or a pipe nobody watches live: whole lines only.
    Plain,
}

impl Output {
    /// `in_hook`: we were started by git, whose sideband relays `\r` redraws to the pusher.
    pub(crate) fn detect(in_hook: bool) -> Output {
        let stderr = std::io::stderr();
        if stderr.is_terminal() {
            Output::Terminal
        } else if in_hook && !is_regular_file(&stderr) {
            Output::Sideband
        } else {
            Output::Plain
        }
    }
}

/// Output redirected to a file (a hook run by hand, `2> deploy.log`) gets no redraws.
fn is_regular_file(stream: &impl AsFd) -> bool {
    stream
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}

/// Prints an error the way git colours it on the pusher's terminal.
pub fn error(message: &str) {
    // One write(2) for the whole message: stderr is unbuffered, and `writeln!` would write the
    // prefix and the text apart. When the receive-pack wrapper says this, git's client is
    // printing `remote:` lines to the same stderr meanwhile, and a split line came out as
    // `error: remote: …` followed by a line that had lost its `error: `.
    let mut text = String::new();
    for (i, line) in message.lines().enumerate() {
        text.push_str(if i == 0 { "error: " } else { "error:   " });
        text.push_str(line);
        text.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes a listing (`builds`, `log`, `hosts`) to stdout with `write`. A reader that stops
/// early (`atomdeploy-hook builds | head -1`) wanted no more: the closed pipe ends the
/// listing quietly and successfully, as it ends `ls` or `git log`.
pub(crate) fn to_stdout(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

/// An error that was shown to the pusher already (with its summary); `main` only exits 1.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported above")
    }
}

impl std::error::Error for Reported {}

pub(crate) struct Reporter {
    output: Output,
    /// The step begun last: the one a failure happened in, for the summary.
    last_step: Mutex<Option<&'static str>>,
    started: Instant,
    steps: Mutex<Vec<(String, Duration)>>,
    /// Steps that had nothing to do.
    skipped: Mutex<Vec<String>>,
    /// Every line shown, kept for `atomdeploy-hook log`.
    transcript: Mutex<String>,
}

/// A step under way; hand it back to [`Reporter::done`].
#[must_use]
pub(crate) struct Step {
    name: &'static str,
    started: Instant,
}

impl Reporter {
    pub(crate) fn new(output: Output) -> Reporter {
        Reporter {
            output,
            last_step: Mutex::new(None),
            started: Instant::now(),
            steps: Mutex::new(Vec::new()),
            skipped: Mutex::new(Vec::new()),
            transcript: Mutex::new(String::new()),
        }
    }

    pub(crate) fn line(&self, text: &str) {
        let mut transcript = self.transcript.lock().unwrap();
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        transcript.push_str(text);
        transcript.push('\n');
    }

    /// Keeps an error in the transcript; showing it is left to whoever handles the error.
    pub(crate) fn record_error(&self, message: &str) {
        let mut transcript = self.transcript.lock().unwrap();
        transcript.push_str(&format!("error: {message}\n"));
    }

    /// Reports an error now, for one that does not end the run.
    pub(crate) fn error(&self, message: &str) {
        error(message);
        self.record_error(message);
    }

    pub(crate) fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    /// Output of a child process, indented under its step header.
    pub(crate) fn child_line(&self, text: &str) {
        self.line(&format!("    {text}"));
    }

    pub(crate) fn warn(&self, text: &str) {
        self.line(&format!("warning: {text}"));
    }

    pub(crate) fn step(&self, name: &'static str) -> Step {
        self.line(&format!("==> {name}"));
        *self.last_step.lock().unwrap() = Some(name);
        Step {
            name,
            started: Instant::now(),
        }
    }

    /// Closes a step with its duration and, if given, what it did.
    pub(crate) fn done(&self, step: Step, detail: &str) -> Duration {
        self.done_after(step, Duration::ZERO, detail)
    }

    /// Closes a step part of whose work (`before`) was done before it started.
    pub(crate) fn done_after(&self, step: Step, before: Duration, detail: &str) -> Duration {
        let took = step.started.elapsed() + before;
        let sep = if detail.is_empty() { "" } else { ": " };
        self.line(&format!("    {} {}{sep}{detail}", step.name, seconds(took)));
        self.steps
            .lock()
            .unwrap()
            .push((step.name.to_string(), took));
        took
    }

    /// The step begun last, if any.
    pub(crate) fn last_step(&self) -> Option<&'static str> {
        *self.last_step.lock().unwrap()
    }

    /// Durations of the finished steps, in order, for the deploy log.
    pub(crate) fn step_durations(&self) -> Vec<(String, Duration)> {
        self.steps.lock().unwrap().clone()
    }

    /// Where the time went, for the summary line:
    /// `checkout 0.04s · composer skipped · snapshot 0.21s · switch 0.1ms`.
    pub(crate) fn breakdown(&self) -> String {
        let skipped = self.skipped.lock().unwrap();
        self.steps
            .lock()
            .unwrap()
            .iter()
            .map(|(name, took)| match skipped.contains(name) {
                true => format!("{name} skipped"),
                false => format!("{name} {}", seconds(*took)),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// Closes a step that had nothing to do.
    pub(crate) fn skipped(&self, step: Step, why: &str) -> Duration {
        self.skipped.lock().unwrap().push(step.name.to_string());
        self.done(step, why)
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A bar counting `len` items, drawn where the pusher can see it.
    pub(crate) fn progress(&self, len: u64, what: &str) -> ProgressBar {
        let target = match self.output {
            Output::Terminal => ProgressDrawTarget::stderr_with_hz(10),
            Output::Sideband => ProgressDrawTarget::term_like_with_hz(Box::new(Sideband::new()), 4),
            Output::Plain => ProgressDrawTarget::hidden(),
        };
        let style = ProgressStyle::with_template("    {msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> ");
        ProgressBar::with_draw_target(Some(len), target)
            .with_style(style)
            .with_message(what.to_string())
    }
}

/// A commit id as the report lines show it: its first seven characters.
pub(crate) fn short_id(id: &str) -> &str {
    &id[..id.len().min(7)]
}

/// `0.04s`, or milliseconds for the steps that take less than one.
pub(crate) fn seconds(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Draws on stderr for git's sideband: no cursor movement, only `\r` and a padded line.
///
/// Every redraw is relayed to the pusher as a packet, so frames are buffered and let through
/// only once a step has run long enough to need a bar, and then a few times a second.
#[derive(Debug)]
struct Sideband {
    frames: Mutex<Frames>,
}

#[derive(Debug)]
struct Frames {
    created: Instant,
    last_shown: Option<Instant>,
    pending: String,
    pending_has_text: bool,
}

const SIDEBAND_WIDTH: u16 = 70; // 80 columns less git's `remote: ` prefix
const SIDEBAND_DELAY: Duration = Duration::from_millis(500);
const SIDEBAND_INTERVAL: Duration = Duration::from_millis(250);

impl Sideband {
    fn new() -> Sideband {
        Sideband {
            frames: Mutex::new(Frames {
                created: Instant::now(),
                last_shown: None,
                pending: String::new(),
                pending_has_text: false,
            }),
        }
    }

    fn push(&self, text: &str, is_text: bool) {
        let mut frames = self.frames.lock().unwrap();
        frames.pending.push_str(text);
        frames.pending_has_text |= is_text && !text.trim().is_empty();
    }
}

impl TermLike for Sideband {
    fn width(&self) -> u16 {
        SIDEBAND_WIDTH
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.push(s, true);
        self.push("\n", false);
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.push(s, true);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.push(
            &format!("\r{}\r", " ".repeat(SIDEBAND_WIDTH as usize)),
            false,
        );
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut frames = self.frames.lock().unwrap();
        let now = Instant::now();
        let show = if frames.pending_has_text {
            now.duration_since(frames.created) >= SIDEBAND_DELAY
                && frames
                    .last_shown
                    .is_none_or(|last| now.duration_since(last) >= SIDEBAND_INTERVAL)
        } else {
            // A clear: only needed if a bar was ever shown.
            frames.last_shown.is_some()
        };
        let frame = std::mem::take(&mut frames.pending);
        frames.pending_has_text = false;
        if show {
            frames.last_shown = Some(now);
            let mut err = std::io::stderr().lock();
            err.write_all(frame.as_bytes())?;
            err.flush()?;
        }
        Ok(())
    }
}
