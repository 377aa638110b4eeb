//! `audit --html`: the audit's summary, then each finding with its photo (a duplicate or leakage
//! with both), its score and, for a likely label error, the class suggested.

use std::fmt::Write as _;
use std::path::Path;

use super::{esc, table, HtmlSummary, Thumbs};
use crate::error::Result;
use crate::report::audit::{AuditSummary, Finding};

/// Findings shown per kind (the most suspicious first); audit.tsv lists them all.
pub const MAX_PER_KIND: usize = 1000;

/// The kinds in the order shown: (issue, heading, what the score is).
const KINDS: [(&str, &str, &str); 4] = [
    ("label", "Likely label errors", "self-confidence"),
    (
        "leakage",
        "Leakage: the same photo in two splits",
        "similarity",
    ),
    ("duplicate", "Duplicates within a split", "similarity"),
    ("outlier", "Outliers", "distance to nearest photos"),
];

fn figure(f: &Finding, th: &Thumbs, score: &str) -> String {
    let value = if f.score != 0.0 && f.score.abs() < 1e-3 {
        format!("{:.1e}", f.score)
    } else {
        format!("{:.3}", f.score)
    };
    let mut lines = vec![
        format!("{}, labelled {}", f.split, f.given),
        format!("{score} {value}"),
    ];
    if !f.suggested.is_empty() {
        lines.insert(1, format!("suggested: {}", f.suggested));
    }
    if f.pair.is_empty() {
        return th.figure(&f.file, &lines);
    }
    lines.push(format!("pair: {}", f.pair));
    let caption: String = lines.iter().map(|l| format!("<br>{}", esc(l))).collect();
    format!(
        "<figure class=\"pair\" title=\"{} / {}\"><div>{}{}</div><figcaption>{}{caption}</figcaption></figure>",
        esc(&f.file),
        esc(&f.pair),
        th.img(&f.file),
        th.img(&f.pair),
        esc(f.file.rsplit('/').next().unwrap_or(&f.file)),
    )
}

/// Writes the report of `s` (photos below `data_root`) to `path`, never onto one of `inputs`.
pub fn write(
    s: &AuditSummary,
    data_root: &str,
    path: &Path,
    inputs: &[&Path],
) -> Result<HtmlSummary> {
    let shown: Vec<(&str, &str, &str, Vec<&Finding>)> = KINDS
        .iter()
        .map(|&(kind, title, score)| {
            let all: Vec<&Finding> = s.findings.iter().filter(|f| f.issue == kind).collect();
            (kind, title, score, all)
        })
        .collect();
    let paths = shown.iter().flat_map(|(_, _, _, fs)| {
        fs.iter()
            .take(MAX_PER_KIND)
            .flat_map(|f| [f.file.as_str(), f.pair.as_str()])
            .filter(|p| !p.is_empty())
    });
    let thumbs = Thumbs::load(data_root, paths);
    let summary = table(
        &["", "count"],
        &[
            vec!["photos".into(), s.photos.to_string()],
            match (s.folds, s.out_of_fold_accuracy) {
                (Some(k), Some(a)) => vec![
                    format!("out-of-fold accuracy ({k}-fold)"),
                    format!("{a:.4}"),
                ],
                _ => vec!["out-of-fold accuracy".into(), "labels not checked".into()],
            },
            vec![
                "<a href=\"#label\">likely label errors</a>".into(),
                s.label_issues.to_string(),
            ],
            vec!["exact duplicates".into(), s.exact_duplicates.to_string()],
            vec!["near duplicates".into(), s.near_duplicates.to_string()],
            vec![
                "<a href=\"#leakage\">leakage (duplicates across splits)</a>".into(),
                s.leakage.to_string(),
            ],
            vec![
                "<a href=\"#outlier\">outliers</a>".into(),
                s.outliers.to_string(),
            ],
        ],
    );
    let mut body = format!(
        "<p class=\"meta\">features <code>{}</code>; every finding is in <code>{}</code>; nothing was moved or deleted</p><h2>Summary</h2>{summary}",
        esc(&s.features),
        esc(&s.audit_tsv)
    );
    let mut figures = 0;
    for (kind, title, score, fs) in &shown {
        let _ = write!(body, "<h2 id=\"{kind}\">{} ({})</h2>", esc(title), fs.len());
        if fs.len() > MAX_PER_KIND {
            let _ = write!(
                body,
                "<p class=\"meta\">The first {MAX_PER_KIND} shown; audit.tsv has them all.</p>"
            );
        }
        body.push_str("<div class=\"grid\">");
        for f in fs.iter().take(MAX_PER_KIND) {
            body += &figure(f, &thumbs, score);
            figures += 1;
        }
        body.push_str("</div>");
    }
    let title = format!(
        "Audit: {}",
        s.features.rsplit('/').next().unwrap_or(&s.features)
    );
    super::write(path, &title, &body, inputs)?;
    Ok(HtmlSummary::of(path, figures, &thumbs, 0))
}
