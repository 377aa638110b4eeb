//! `evaluate --html FILE`: the metrics and per-class table, the confusion matrix whose cells open
//! their photos (a multi-label head: each class's false positives and misses), the most
//! confidently wrong photos and the head's learning curves, in one self-contained file.

use std::fmt::Write as _;
use std::path::Path;

use super::{esc, table, HtmlSummary, Thumbs};
use crate::error::Result;
use crate::head::history::History;
use crate::report::evaluate::Evaluation;

/// Photos shown per confusion-matrix cell (the least confident first); a cell with more says how
/// many it holds.
pub const MAX_PER_CELL: usize = 200;

/// A section of photos, opened by its link.
struct Cell {
    id: String,
    title: String,
    /// (path, caption lines).
    photos: Vec<(String, Vec<String>)>,
    total: usize,
}

fn cell_html(c: &Cell, th: &Thumbs) -> String {
    let mut s = format!(
        "<section class=\"cell\" id=\"{}\"><h3>{}",
        c.id,
        esc(&c.title)
    );
    if c.total > c.photos.len() {
        let _ = write!(s, " (the {} least confident shown)", c.photos.len());
    }
    s.push_str("</h3><div class=\"grid\">");
    for (p, lines) in &c.photos {
        s += &th.figure(p, lines);
    }
    s + "</div></section>"
}

/// `ids` sorted by `key` descending and cut to [`MAX_PER_CELL`], with their captions.
fn shown(
    mut ids: Vec<usize>,
    key: impl Fn(usize) -> f64,
    caption: impl Fn(usize) -> Vec<String>,
    paths: &[String],
) -> (Vec<(String, Vec<String>)>, usize) {
    let total = ids.len();
    ids.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    ids.truncate(MAX_PER_CELL);
    let photos = ids
        .into_iter()
        .map(|i| (paths[i].clone(), caption(i)))
        .collect();
    (photos, total)
}

/// The confusion matrix (rows true, columns predicted, shaded by the row's share) and its cells.
fn confusion(e: &Evaluation) -> (String, Vec<Cell>) {
    let r = &e.rows;
    let k = r.classes.len();
    let mut members = vec![vec![Vec::new(); k]; k];
    let predicted: Vec<usize> = r
        .probs
        .outer_iter()
        .map(crate::report::metrics::argmax)
        .collect();
    for (i, &t) in r.labels.iter().enumerate() {
        members[t as usize][predicted[i]].push(i);
    }
    let mut s =
        String::from("<table class=\"confusion\"><tr><th class=\"name\">true \\ predicted</th>");
    for c in &r.classes {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr>");
    let mut cells = Vec::new();
    for (t, row) in members.iter().enumerate() {
        let _ = write!(s, "<tr><th class=\"name\">{}</th>", esc(&r.classes[t]));
        let row_total: usize = row.iter().map(Vec::len).sum();
        for (p, ids) in row.iter().enumerate() {
            let share = ids.len() as f64 / row_total.max(1) as f64;
            let ink = if share > 0.55 { "#fff" } else { "#222" };
            let style = format!("background:rgba(51,102,204,{:.3});color:{ink}", share * 0.9);
            if ids.is_empty() {
                let _ = write!(s, "<td style=\"{style}\">0</td>");
                continue;
            }
            let id = format!("cell-{t}-{p}");
            let _ = write!(
                s,
                "<td style=\"{style}\"><a href=\"#{id}\">{}</a></td>",
                ids.len()
            );
            let p_of = |i: usize, c: usize| f64::from(r.probs[[i, c]]);
            let (photos, total) = shown(
                ids.clone(),
                |i| -p_of(i, t),
                |i| {
                    vec![format!(
                        "p({})={:.3} p({})={:.3}",
                        r.classes[t],
                        p_of(i, t),
                        r.classes[p],
                        p_of(i, p)
                    )]
                },
                &r.paths,
            );
            cells.push(Cell {
                id,
                title: format!(
                    "true {}, predicted {}: {} photos",
                    r.classes[t], r.classes[p], total
                ),
                photos,
                total,
            });
        }
        s.push_str("</tr>");
    }
    s.push_str("</table><p>Rows: true class; columns: predicted. A count opens its photos.</p>");
    (s, cells)
}

/// Per class of a multi-label head: the table with links to its false positives and misses.
fn tag_table(e: &Evaluation) -> (String, Vec<Cell>) {
    let r = &e.rows;
    let (Some(truth), Some(th), Some(t)) = (&r.truth, &r.thresholds, &e.multi_label) else {
        return (String::new(), Vec::new());
    };
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    // The head's decisions, as evaluate and score make them.
    let decided = crate::head::tags::predict_sets(r.probs.view(), th);
    for (j, c) in r.classes.iter().enumerate() {
        let n = r.probs.nrows();
        let p = |i: usize| f64::from(r.probs[[i, j]]);
        let on = |i: usize| decided[[i, j]] > 0.5;
        let fp: Vec<usize> = (0..n).filter(|&i| on(i) && truth[[i, j]] < 0.5).collect();
        let fn_: Vec<usize> = (0..n).filter(|&i| !on(i) && truth[[i, j]] >= 0.5).collect();
        let mut link = |kind: &str, ids: Vec<usize>, high_first: bool| {
            if ids.is_empty() {
                return "0".to_string();
            }
            let id = format!("tag-{j}-{kind}");
            let count = ids.len();
            let (photos, total) = shown(
                ids,
                |i| if high_first { p(i) } else { -p(i) },
                |i| vec![format!("p({c})={:.3}, threshold {:.3}", p(i), th[j])],
                &r.paths,
            );
            let what = if kind == "fp" {
                "predicted but not tagged"
            } else {
                "tagged but missed"
            };
            cells.push(Cell {
                id: id.clone(),
                title: format!("{c}: {what}, {total} photos"),
                photos,
                total,
            });
            format!("<a href=\"#{id}\">{count}</a>")
        };
        let fp_link = link("fp", fp, true);
        let fn_link = link("fn", fn_, false);
        let m = &e.metrics.per_class[j];
        rows.push(vec![
            esc(c),
            format!("{:.4}", m.precision),
            format!("{:.4}", m.recall),
            format!("{:.4}", m.f1),
            m.support.to_string(),
            t.per_class_ap[j].map_or("-".into(), |a| format!("{a:.4}")),
            format!("{:.3}", th[j]),
            fp_link,
            fn_link,
        ]);
    }
    let head = [
        "class",
        "precision",
        "recall",
        "F1",
        "support",
        "AP",
        "threshold",
        "false positives",
        "misses",
    ];
    (table(&head, &rows), cells)
}

/// The per-class table of a single-label head.
fn class_table(e: &Evaluation) -> String {
    let rows: Vec<Vec<String>> = e
        .metrics
        .per_class
        .iter()
        .map(|m| {
            vec![
                esc(&m.class),
                format!("{:.4}", m.precision),
                format!("{:.4}", m.recall),
                format!("{:.4}", m.f1),
                m.support.to_string(),
            ]
        })
        .collect();
    table(&["class", "precision", "recall", "F1", "support"], &rows)
}

/// The headline numbers.
fn headline(e: &Evaluation) -> String {
    let m = &e.metrics;
    let mut rows = vec![
        vec!["images".into(), m.n.to_string()],
        vec![
            if e.multi_label.is_some() {
                "subset accuracy"
            } else {
                "accuracy"
            }
            .into(),
            format!("{:.4}", m.accuracy),
        ],
        vec!["log loss".into(), format!("{:.4}", m.log_loss)],
        vec!["macro F1".into(), format!("{:.4}", m.macro_f1)],
    ];
    if let Some(a) = m.roc_auc {
        rows.push(vec!["ROC AUC".into(), format!("{a:.4}")]);
    }
    if let Some(t) = &e.multi_label {
        rows.push(vec!["macro AP".into(), format!("{:.4}", t.macro_ap)]);
        rows.push(vec!["micro AP".into(), format!("{:.4}", t.micro_ap)]);
        rows.push(vec!["micro F1".into(), format!("{:.4}", t.micro_f1)]);
        rows.push(vec![
            "Hamming loss".into(),
            format!("{:.4}", t.hamming_loss),
        ]);
    }
    table(&["metric", "value"], &rows)
}

/// Writes the report of `e` to `path` (never onto one of `inputs`).
pub fn write(e: &Evaluation, path: &Path, inputs: &[&Path]) -> Result<HtmlSummary> {
    let (matrix, cells) = if e.rows.truth.is_some() {
        tag_table(e)
    } else {
        confusion(e)
    };
    let top: Vec<(String, Vec<String>)> = e
        .metrics
        .top_losses
        .iter()
        .map(|t| {
            let lines = vec![
                format!("true {}", t.label),
                format!("predicted {}", t.predicted),
                format!("p(true)={:.3}", t.p_true),
            ];
            (t.path.clone(), lines)
        })
        .collect();
    let all = cells
        .iter()
        .flat_map(|c| c.photos.iter())
        .chain(&top)
        .map(|(p, _)| p.as_str());
    let thumbs = Thumbs::load(&e.data_root, all);
    let mut body = format!(
        "<p class=\"meta\">head <code>{}</code><br>features <code>{}</code>, split {}{}; {} images skipped at extraction</p>",
        esc(&e.head),
        esc(&e.features),
        esc(&e.split),
        if e.tta { ", averaged with its mirrored copies" } else { "" },
        e.skipped
    );
    let _ = write!(body, "<h2>Metrics</h2>{}", headline(e));
    if e.multi_label.is_some() {
        let _ = write!(body, "<h2>Per class</h2>{matrix}");
    } else {
        let _ = write!(
            body,
            "<h2>Per class</h2>{}<h2>Confusion matrix</h2>{matrix}",
            class_table(e)
        );
    }
    for c in &cells {
        body += &cell_html(c, &thumbs);
    }
    if !top.is_empty() {
        let _ = write!(
            body,
            "<h2>Most confidently wrong</h2><div class=\"grid\">{}</div>",
            top.iter()
                .map(|(p, l)| thumbs.figure(p, l))
                .collect::<String>()
        );
    }
    let epochs = History::parse_csv(&e.rows.history_csv);
    if !epochs.is_empty() {
        let _ = write!(body, "<h2>Training</h2>{}", super::curves_svg(&epochs));
    }
    let _ = write!(body, "<h2>As text</h2><pre>{}</pre>", esc(&e.report()));
    if thumbs.is_empty() && !e.data_root.is_empty() {
        body += &format!(
            "<p class=\"meta\">No thumbnails: the photos are not below {} here.</p>",
            esc(&e.data_root)
        );
    }
    let figures = cells.iter().map(|c| c.photos.len()).sum::<usize>() + top.len();
    let title = format!("Evaluation: {} ({})", file_name(&e.head), e.split);
    super::write(path, &title, &body, inputs)?;
    Ok(HtmlSummary::of(path, figures, &thumbs, cells.len()))
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}
