//! A training run's history: one [`EpochRecord`] per epoch, the kept epoch, whether it stopped
//! early; printed as a table, written as CSV (the `--history` file, checked before it is replaced)
//! and stored in the head file.

use std::io::Read;
use std::path::Path;

use crate::util::output::{Output, Replace};

/// One row of the training history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// The columns epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds as text: losses and
    /// accuracies with `digits` decimals, seconds with `sec_digits`, the rate in scientific notation
    /// (`lr_digits` decimals, or as short as exact), a missing validation value as `missing`. The
    /// history CSV, the printed table and the report's table all come from here.
    pub fn columns(
        &self,
        (digits, sec_digits): (usize, usize),
        lr_digits: Option<usize>,
        missing: &str,
    ) -> [String; 7] {
        let o = |v: Option<f64>| v.map_or(missing.to_string(), |v| format!("{v:.digits$}"));
        [
            self.epoch.to_string(),
            format!("{:.digits$}", self.loss),
            format!("{:.digits$}", self.accuracy),
            o(self.val_loss),
            o(self.val_accuracy),
            match lr_digits {
                Some(d) => format!("{:.d$e}", self.lr),
                None => format!("{:e}", self.lr),
            },
            format!("{:.sec_digits$}", self.seconds),
        ]
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch whose weights were kept (the best by the monitor, or the last).
    pub kept_epoch: usize,
    pub stopped_early: bool,
}

impl History {
    pub const CSV_HEADER: &'static str = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds";

    /// The closing lines of a run: the kept epoch's numbers, and the first epochs reaching the
    /// lowest val_loss and the highest val_accuracy (what `train-head --quiet` still prints).
    pub fn summary_lines(&self) -> Vec<String> {
        let Some(kept) = self.epochs.get(self.kept_epoch.saturating_sub(1)) else {
            return vec![];
        };
        let val = match (kept.val_loss, kept.val_accuracy) {
            (Some(l), Some(a)) => format!("val_loss {l:.4} val_accuracy {a:.4}"),
            _ => format!(
                "loss {:.4} accuracy {:.4} (no validation)",
                kept.loss, kept.accuracy
            ),
        };
        let stop = if self.stopped_early {
            ", stopped early"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "kept epoch {} of {}{stop}: {val}",
            self.kept_epoch,
            self.epochs.len()
        )];
        let best = |f: fn(&EpochRecord) -> Option<f64>, lower: bool| {
            self.epochs
                .iter()
                .filter_map(|r| f(r).map(|v| (v, r.epoch)))
                .reduce(|a, b| {
                    if (lower && b.0 < a.0) || (!lower && b.0 > a.0) {
                        b
                    } else {
                        a
                    }
                })
        };
        if let (Some((l, le)), Some((a, ae))) =
            (best(|r| r.val_loss, true), best(|r| r.val_accuracy, false))
        {
            lines.push(format!(
                "best: val_loss {l:.4} (epoch {le}), val_accuracy {a:.4} (epoch {ae})"
            ));
        }
        lines
    }

    /// Whether `path` holds a history CSV (its first line is [`History::CSV_HEADER`]): the rule by
    /// which a history file is replaced.
    pub fn is_csv(path: &Path) -> bool {
        use std::io::BufRead;
        std::fs::File::open(path).is_ok_and(|f| {
            let mut line = String::new();
            std::io::BufReader::new(f.take(4096))
                .read_line(&mut line)
                .is_ok()
                && line.trim_end() == Self::CSV_HEADER
        })
    }

    /// The replacement rule of a history CSV: only a history is replaced.
    pub fn replace() -> Replace<'static> {
        Replace::If {
            what: "a training history (CSV)",
            check: &History::is_csv,
        }
    }

    /// The output of a history CSV at `path`: replaced only when it is one.
    pub fn output(path: &Path) -> Output<'static> {
        Output::new(path).replace(Self::replace())
    }

    /// The epochs of a history CSV ([`History::csv`]); rows that do not parse are left out.
    pub fn parse_csv(text: &str) -> Vec<EpochRecord> {
        let num = |s: &str| s.trim().parse::<f64>().ok();
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let c: Vec<&str> = line.split(',').collect();
                if c.len() != 7 {
                    return None;
                }
                Some(EpochRecord {
                    epoch: c[0].trim().parse().ok()?,
                    loss: num(c[1])?,
                    accuracy: num(c[2])?,
                    val_loss: num(c[3]),
                    val_accuracy: num(c[4]),
                    lr: num(c[5])?,
                    seconds: num(c[6])?,
                })
            })
            .collect()
    }

    pub fn csv(&self) -> String {
        let mut s = format!("{}\n", Self::CSV_HEADER);
        for r in &self.epochs {
            s += &r.columns((6, 3), None, "").join(",");
            s.push('\n');
        }
        s
    }

    /// The history as a markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| epoch | loss | accuracy | val_loss | val_accuracy | lr | seconds |\n|---|---|---|---|---|---|---|\n");
        for r in &self.epochs {
            s += &format!("| {} |\n", r.columns((4, 2), Some(2), "-").join(" | "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parses_back_to_its_epochs() {
        let r = |epoch, val: Option<f64>| EpochRecord {
            epoch,
            loss: 0.5 / epoch as f64,
            accuracy: 0.75,
            val_loss: val,
            val_accuracy: val.map(|v| 1.0 - v),
            lr: 3e-4,
            seconds: 1.25,
        };
        let h = History {
            epochs: vec![r(1, Some(0.625)), r(2, None)],
            kept_epoch: 1,
            stopped_early: false,
        };
        assert_eq!(History::parse_csv(&h.csv()), h.epochs);
        assert!(History::parse_csv("epoch,loss\n1,x\n").is_empty());
    }
}
