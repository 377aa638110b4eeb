//! How library code tells the caller what it is doing: one [`Reporter`] trait, one [`Event`] type.
//!
//! The library never prints and never exits. Long-running calls (`extract`, `score`, `train_head`,
//! `finetune`, ...) take a `&dyn Reporter` and send it what a user may want to see: the settings that
//! were chosen and where they came from, per-epoch rows, warnings about skipped files, progress, and
//! checkpoints (a batch safely in the journal, an epoch saved). The `headstart` binary draws a progress
//! bar or JSON lines from them; a library user can log them, collect them, or pass [`Silent`].

/// Something a running call reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A line of the command's running report (the chosen head and optimizer, a per-epoch row, the
    /// kept epoch). The CLI prints these on stdout unless `--quiet`.
    Line(&'a str),
    /// What was chosen and where from (model, device, preprocessing, data). The CLI prints these on
    /// stderr unless `--quiet`.
    Detail(&'a str),
    /// Worth knowing, not a problem (an old journal from another run is discarded).
    Notice(&'a str),
    /// A problem that did not stop the run (a file skipped, with the reason).
    Warning(&'a str),
    /// A counted task starts: `total` items, `done` of them already finished (resumed).
    Start {
        task: &'a str,
        total: u64,
        done: u64,
    },
    /// `n` more items of the current task are finished.
    Advance(u64),
    /// The current task is over.
    Finish,
    /// Work up to here is durable: `count` units of `task` are saved (extract: batches in the
    /// journal; finetune: phase 2 epochs checkpointed). An interrupted run resumes from the last one.
    Checkpoint { task: &'a str, count: usize },
}

/// Receives a run's [`Event`]s. Implementations must be cheap: events come from the hot loop.
pub trait Reporter: Sync {
    fn report(&self, event: Event<'_>);
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event<'_>) {}
}

/// Keeps the text of every message (lines, details, notices, warnings) in order; for tests and for
/// library users who show messages their own way.
#[derive(Debug, Default)]
pub struct Collect(pub std::sync::Mutex<Vec<String>>);

impl Reporter for Collect {
    fn report(&self, event: Event<'_>) {
        let text = match event {
            Event::Line(s) | Event::Detail(s) => s.to_string(),
            Event::Notice(s) => format!("notice: {s}"),
            Event::Warning(s) => format!("warning: {s}"),
            _ => return,
        };
        if let Ok(mut v) = self.0.lock() {
            v.push(text);
        }
    }
}

impl Collect {
    /// The messages so far.
    pub fn messages(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
