//! Progress reporting behind one switch: a terminal bar, JSON lines (for scripts), or nothing.

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

/// A progress sink; warnings go through it so they do not tear the bar.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    start: std::time::Instant,
    last_json: std::time::Instant,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: u64, already: u64, what: &str) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
                ProgressMode::Bar
            }
            ProgressMode::Auto => ProgressMode::None,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(what.to_string());
            b.set_position(already);
            b.reset_eta();
            b
        });
        let now = std::time::Instant::now();
        Progress {
            mode,
            bar,
            total,
            done: already,
            start: now,
            last_json: now,
        }
    }

    /// Counts `n` more items done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if self.mode == ProgressMode::Json
            && (self.last_json.elapsed().as_millis() >= 500 || self.done == self.total)
        {
            self.last_json = std::time::Instant::now();
            let secs = self.start.elapsed().as_secs_f64();
            eprintln!(
                "{}",
                serde_json::json!({"event": "progress", "done": self.done, "total": self.total, "seconds": (secs * 100.0).round() / 100.0})
            );
        }
    }

    /// Prints a warning above the bar (or as a JSON line).
    pub fn warn(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.suspend(|| eprintln!("warning: {msg}")),
            (None, ProgressMode::Json) => eprintln!(
                "{}",
                serde_json::json!({"event": "warning", "message": msg})
            ),
            _ => eprintln!("warning: {msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
