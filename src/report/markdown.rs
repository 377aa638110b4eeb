//! Markdown reports, `DIR/report.md` beside their pictures: `train-head --report` writes the run,
//! its settings and learning curves; `evaluate --report` adds the metrics, the confusion matrix, the
//! ROC curve and the most confidently wrong images (to a train-head report in the same folder).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::head::file::Head;
use crate::head::train_head::{TrainHeadConfig, TrainHeadSummary};
use crate::report::evaluate::Evaluation;
use crate::report::plot;
use crate::util::output::{Output, Replace};
use crate::util::paths::with_suffix;

/// Whether `p` holds a headstart report (the rule by which one replaces or extends it): a file
/// that opens as [`write()`] opens one, a title and then `_headstart <version>_`. Another markdown
/// file named `report.md` (a user's notes) is not one.
pub fn is_report(p: &Path) -> bool {
    use std::io::Read;
    if !std::fs::metadata(p).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::new();
    let read = std::fs::File::open(p).and_then(|f| f.take(4096).read_to_end(&mut head));
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    read.is_ok()
        && lines.next().is_some_and(|l| l.starts_with("# "))
        && lines.next() == Some("")
        && lines
            .next()
            .is_some_and(|l| l.starts_with("_headstart ") && l.ends_with('_'))
}

/// Writes `dir/report.md` (`sections` are (title, markdown body) pairs); with `append` and an
/// existing report (train-head's, say), adds to it under `title` instead.
pub fn write(
    dir: &Path,
    title: &str,
    sections: &[(String, String)],
    append: bool,
) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    let path = dir.join("report.md");
    let existing = if append {
        std::fs::read_to_string(&path).ok()
    } else {
        None
    };
    let mut s = match &existing {
        Some(old) => format!("{old}\n# {title}\n"),
        None => format!("# {title}\n\n_headstart {}_\n", env!("CARGO_PKG_VERSION")),
    };
    for (t, body) in sections {
        s += &format!("\n## {t}\n\n{body}\n");
    }
    Output::new(&path)
        .replace(Replace::If {
            what: "a headstart report",
            check: &is_report,
        })
        .write_bytes(s.as_bytes())?;
    Ok(path)
}

/// Where `train_head` draws the learning curves of the head at `out`: beside it
/// (`<head>.curves.png`) and in the report folder; each can be checked before training
/// ([`plot::check_picture`]).
pub fn train_head_pictures(out: &Path, beside_head: bool, report: Option<&Path>) -> Vec<PathBuf> {
    let mut at = Vec::new();
    if beside_head {
        at.push(with_suffix(out, "curves.png"));
    }
    if let Some(dir) = report {
        at.push(dir.join("curves.png"));
    }
    at
}

/// The learning curves at `curves` (each path a PNG), and with `report` the folder's report.md: the
/// run, the head's settings, the curves and the per-epoch table. Returns the files written.
pub fn train_head(
    cfg: &TrainHeadConfig,
    s: &TrainHeadSummary,
    curves_beside_head: bool,
    report: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let mut written = train_head_pictures(&cfg.out, curves_beside_head, report);
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    }
    for c in &written {
        plot::learning_curves(&s.history, c)?;
    }
    let Some(dir) = report else {
        return Ok(written);
    };
    let head = Head::load(&cfg.out)?;
    let training: serde_json::Value = serde_json::from_str(&head.training).unwrap_or_default();
    let run = format!(
        "- features: `{}`\n- base model: `{}` (sha256 `{}`)\n- preprocessing: {}\n- classes: {}\n- head: `{}` ({}), pool {}\n- rows: {} train, {} validation\n- kept epoch {} of {}{}\n- {:.1} s",
        cfg.features.display(),
        head.base.model_file,
        head.base.model_sha256,
        head.base.preprocess,
        head.classes.join(", "),
        head.spec,
        head.kind.name(),
        head.pool.name(),
        s.train_rows,
        s.val_rows,
        s.history.kept_epoch,
        s.history.epochs.len(),
        if s.history.stopped_early { " (stopped early)" } else { "" },
        s.seconds
    );
    let settings = serde_json::to_string_pretty(&training["settings"]).unwrap_or_default();
    written.push(write(
        dir,
        &format!("train-head: {}", cfg.out.display()),
        &[
            ("Run".into(), run),
            ("Settings".into(), format!("```json\n{settings}\n```")),
            ("Learning curves".into(), "![curves](curves.png)".into()),
            ("History".into(), s.history.markdown()),
        ],
        false,
    )?);
    Ok(written)
}

/// The confusion matrix, (two classes) the ROC curve and the most confidently wrong images: into the
/// report folder (with its report.md), else beside the head file as `<head>.<split>.confusion.png`
/// and so on. Returns the files written.
pub fn evaluation(head: &Path, e: &Evaluation, report: Option<&Path>) -> Result<Vec<PathBuf>> {
    let place = |what: &str| match report {
        Some(dir) => dir.join(format!("evaluate.{}.{what}", e.split)),
        None => with_suffix(head, &format!("{}.{what}", e.split)),
    };
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    }
    // Every place checked before the first picture is drawn: a refusal leaves no half report.
    for what in ["confusion.png", "roc.png", "pr.png", "top_losses.png"] {
        plot::check_picture(&place(what))?;
    }
    let mut pictures = Vec::new();
    if !e.metrics.confusion.is_empty() {
        let cm = place("confusion.png");
        plot::confusion(&e.metrics, &cm)?;
        pictures.push(cm);
    }
    if let (Some(auc), false) = (e.metrics.roc_auc, e.scores.is_empty()) {
        let roc = place("roc.png");
        let (s, p): (Vec<f64>, Vec<bool>) = e.scores.iter().copied().unzip();
        let class = e.metrics.per_class.get(1).map_or("1", |c| c.class.as_str());
        plot::roc(&s, &p, auc, class, &roc)?;
        pictures.push(roc);
    }
    if !e.class_scores.is_empty() {
        let pr = place("pr.png");
        plot::pr_curves(&e.class_scores, &pr)?;
        pictures.push(pr);
    }
    if !e.metrics.top_losses.is_empty() {
        let top = place("top_losses.png");
        plot::top_losses(&e.metrics, Path::new(&e.data_root), &top)?;
        pictures.push(top);
    }
    let Some(dir) = report else {
        return Ok(pictures);
    };
    let imgs: String = pictures
        .iter()
        .map(|p| {
            format!(
                "![{0}]({0})\n",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    let json = crate::report::to_json(e, true)?;
    let md = write(
        dir,
        &format!("Evaluation of {} on {} ({})", e.head, e.features, e.split),
        &[
            ("Metrics".into(), format!("```text\n{}```", e.report())),
            ("Pictures".into(), imgs),
            ("As JSON".into(), format!("```json\n{json}\n```")),
        ],
        true,
    )?;
    pictures.push(md);
    Ok(pictures)
}
