//! The terminal side of [`headstart::events::Reporter`]: report lines on stdout, details, notices and
//! warnings on stderr, and progress as a bar (on a terminal), JSON lines (for scripts) or nothing.

use std::sync::Mutex;
use std::time::Instant;

use headstart::events::{Event, Reporter};
use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else nothing.
    Auto,
    Bar,
    /// One JSON object per line on stderr.
    Json,
    None,
}

/// Counts of the running task, for JSON progress lines.
struct Count {
    done: u64,
    total: u64,
    start: Instant,
    last: Instant,
}

/// Prints a run's events for a person (or, with JSON progress, a script).
pub struct Term {
    mode: ProgressMode,
    /// Report lines (stdout): off with `--quiet`.
    lines: bool,
    /// Details of what was chosen (stderr): off with `--quiet`.
    details: bool,
    bar: Mutex<Option<ProgressBar>>,
    count: Mutex<Count>,
}

impl Term {
    /// `quiet` drops report lines, details and progress; warnings, notices and errors remain.
    pub fn new(mode: ProgressMode, quiet: bool) -> Self {
        let mode = match (quiet, mode) {
            (true, _) => ProgressMode::None,
            (_, ProgressMode::Auto) if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
                ProgressMode::Bar
            }
            (_, ProgressMode::Auto) => ProgressMode::None,
            (_, m) => m,
        };
        let now = Instant::now();
        Term {
            mode,
            lines: !quiet,
            details: !quiet,
            bar: Mutex::new(None),
            count: Mutex::new(Count {
                done: 0,
                total: 0,
                start: now,
                last: now,
            }),
        }
    }

    /// Keeps progress and report lines but drops the details (evaluate on images shows only its
    /// metrics and the extraction's progress).
    pub fn without_details(mut self) -> Self {
        self.details = false;
        self
    }

    /// Runs `f` with the bar (if any) out of the way, so printed lines do not tear it.
    fn above_bar(&self, f: impl FnOnce()) {
        match self.bar.lock().ok().as_deref().and_then(|b| b.as_ref()) {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn start(&self, task: &str, total: u64, done: u64) {
        if let Ok(mut c) = self.count.lock() {
            let now = Instant::now();
            *c = Count {
                done,
                total,
                start: now,
                last: now,
            };
        }
        if self.mode != ProgressMode::Bar {
            return;
        }
        let b = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(task.to_string());
        b.set_position(done);
        b.reset_eta();
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(b);
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().ok().as_deref().and_then(|b| b.as_ref()) {
            b.inc(n);
        }
        if self.mode != ProgressMode::Json {
            return;
        }
        let Ok(mut c) = self.count.lock() else { return };
        c.done += n;
        if c.last.elapsed().as_millis() >= 500 || c.done == c.total {
            c.last = Instant::now();
            let secs = c.start.elapsed().as_secs_f64();
            eprintln!(
                "{}",
                serde_json::json!({"event": "progress", "done": c.done, "total": c.total, "seconds": (secs * 100.0).round() / 100.0})
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            b.finish_and_clear();
        }
    }

    fn warn(&self, msg: &str) {
        if self.mode == ProgressMode::Json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "warning", "message": msg})
            );
        } else {
            self.above_bar(|| eprintln!("warning: {msg}"));
        }
    }
}

impl Reporter for Term {
    fn report(&self, event: Event<'_>) {
        // No text shows a URL's user or password.
        let clean = headstart::util::redact::credentials;
        match event {
            Event::Line(s) if self.lines => self.above_bar(|| println!("{}", clean(s))),
            Event::Detail(s) if self.details => self.above_bar(|| eprintln!("{}", clean(s))),
            Event::Line(_) | Event::Detail(_) => {}
            Event::Notice(s) => self.above_bar(|| eprintln!("notice: {}", clean(s))),
            Event::Warning(s) => self.warn(&clean(s)),
            Event::Start { task, total, done } => self.start(task, total, done),
            Event::Advance(n) => self.advance(n),
            Event::Finish => self.finish(),
            Event::Checkpoint { task, count } => crate::signal::test_hook(task, count),
        }
    }
}
