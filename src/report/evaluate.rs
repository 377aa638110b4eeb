//! `evaluate` as a library call: a head on a cached split, or on image folders extracted on the fly
//! through the same pipeline as `extract`. Refuses features that do not belong to the head.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Serialize;

use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::head::file::Head;
use crate::infer::extract::{extract, flip_split, ExtractConfig};
use crate::report::metrics::{compute, Metrics};
use crate::report::multilabel::{compute_tags, truth_matrix, TagMetrics};

/// Where the evaluated features come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A feature cache and a split (`None`: `test`, else `val`, else `train`).
    Features {
        path: PathBuf,
        split: Option<String>,
    },
    /// Images: extracted with this config into a temporary cache, then evaluated.
    Images(Box<ExtractConfig>),
}

#[derive(Debug, Clone)]
pub struct EvaluateConfig {
    pub head: PathBuf,
    pub source: Source,
    /// How many most-confidently-wrong files to list.
    pub top: usize,
    /// Average the predictions of the plain and mirrored images when the cache holds the split's
    /// mirrored copies (`extract --tta flip`).
    pub tta: bool,
    /// Accept features of another precision of the head's base model (`--any-precision`).
    pub any_precision: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub head: String,
    pub features: String,
    pub split: String,
    /// The folder the files of `metrics.top_losses` are relative to.
    pub data_root: String,
    /// The split's mirrored copies were averaged in (test-time augmentation).
    pub tta: bool,
    pub skipped: usize,
    /// For a multi-label head, `accuracy` is the subset accuracy and `per_class` each class's
    /// decisions at its threshold ([`crate::report::multilabel::compute_tags`]).
    pub metrics: Metrics,
    /// A multi-label head's ranking and set metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<TagMetrics>,
    /// Binary heads: P(second class) per image and whether it is of that class (for the ROC plot).
    #[serde(skip)]
    pub scores: Vec<(f64, bool)>,
    /// Multi-label heads, per class: its name and AP, and each image's probability and truth (for
    /// the precision-recall plot).
    #[serde(skip)]
    pub class_scores: Vec<(String, Vec<(f64, bool)>)>,
    /// Each image's path, truth and probabilities, with the head's classes, thresholds and
    /// training history (for the HTML report).
    #[serde(skip)]
    pub rows: Rows,
}

/// What a report needs beyond the metrics: the evaluated images one by one.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub classes: Vec<String>,
    /// Paths relative to [`Evaluation::data_root`].
    pub paths: Vec<String>,
    /// Each image's class (single-label heads).
    pub labels: Vec<u32>,
    /// Multi-label heads: `[images, classes]`, 1 where the image has the tag.
    pub truth: Option<Array2<f32>>,
    /// `[images, classes]`.
    pub probs: Array2<f32>,
    /// A multi-label head's per-class thresholds.
    pub thresholds: Option<Vec<f32>>,
    /// The head's training history ([`crate::head::history::History::CSV_HEADER`] rows).
    pub history_csv: String,
}

impl Evaluation {
    /// The metrics as text: a multi-label head's ([`TagMetrics::report`]) or [`Metrics::report`].
    pub fn report(&self) -> String {
        match &self.multi_label {
            Some(t) => t.report(&self.metrics),
            None => self.metrics.report(),
        }
    }
}

/// The split to evaluate or score: `wanted`, else the first of test, val and train that has rows.
/// A wanted split that is not there, or has no rows, is an error naming the cache.
pub(crate) fn pick_split(
    cache: &FeatureCache,
    wanted: Option<&str>,
    path: &Path,
) -> Result<String> {
    let splits = &cache.meta.splits;
    if let Some(w) = wanted {
        if !splits.iter().any(|s| s == w) {
            return Err(Error::cache(
                path,
                format!("no split '{w}' (has: {})", splits.join(", ")),
            ));
        }
        if cache.split_len(w)? == 0 {
            return Err(Error::cache(path, format!("split '{w}' has no images")));
        }
        return Ok(w.to_string());
    }
    for s in ["test", "val", "train"] {
        if splits.iter().any(|x| x == s) && cache.split_len(s)? > 0 {
            return Ok(s.to_string());
        }
    }
    Err(Error::cache(
        path,
        format!(
            "no split test, val or train with images (has: {})",
            splits.join(", ")
        ),
    ))
}

/// Evaluates the head; for images, the features are extracted into a temporary cache (progress to
/// `rep`) that is removed afterwards.
pub fn evaluate(cfg: &EvaluateConfig, rep: &dyn Reporter) -> Result<Evaluation> {
    let head = Head::load(&cfg.head)?;
    match &cfg.source {
        Source::Features { path, split } => evaluate_cache(&head, cfg, path, split.as_deref()),
        Source::Images(ex) => {
            let dir = crate::util::paths::Scratch::new("evaluate")?;
            let mut ex = (**ex).clone();
            ex.out = dir.path().join("features.h5");
            // The base's tokens pooled as they were for the head's training features.
            ex.tokens = head.base.tokens.request();
            let result = extract(&ex, rep).and_then(|_| evaluate_cache(&head, cfg, &ex.out, None));
            drop(dir);
            // The temporary cache is gone: an error names the photos and the model instead.
            let tmp = ex.out.display().to_string();
            let result = result.map_err(|e| match e.to_string() {
                t if t.contains(&tmp) => Error::Config(t.replace(
                    &tmp,
                    &format!(
                        "the features of {} (extracted with {})",
                        ex.data.display(),
                        ex.model.display()
                    ),
                )),
                _ => e,
            });
            result.map(|mut e| {
                e.features = format!(
                    "{} (extracted with {})",
                    ex.data.display(),
                    ex.model.display()
                );
                e
            })
        }
    }
}

/// Bytes of float32 features read at a time by the readers that stream a split.
pub(crate) const BLOCK_BYTES: usize = 64 << 20;

/// `head`'s probabilities for the `n` rows of `cache`'s `split`, the features read in blocks of
/// [`BLOCK_BYTES`] (memory: one block and the `[n, classes]` result).
pub(crate) fn split_probabilities(
    head: &Head,
    cache: &FeatureCache,
    split: &str,
    n: usize,
) -> Result<Array2<f32>> {
    let mut probs = Array2::<f32>::zeros((n, head.classes.len().max(1)));
    cache.for_each_block(split, n, BLOCK_BYTES, |start, rows| {
        let k = rows.len() / head.feature_shape.iter().product::<usize>().max(1);
        let p = head.probabilities(rows, k)?;
        if p.ncols() != probs.ncols() {
            return Err(Error::cache(
                &cache.path,
                format!(
                    "the head gives {} columns for {} classes",
                    p.ncols(),
                    probs.ncols()
                ),
            ));
        }
        probs
            .slice_mut(ndarray::s![start..start + k, ..])
            .assign(&p);
        Ok(())
    })?;
    Ok(probs)
}

fn evaluate_cache(
    head: &Head,
    cfg: &EvaluateConfig,
    path: &Path,
    split: Option<&str>,
) -> Result<Evaluation> {
    let cache = FeatureCache::open(path)?;
    head.check_compatible(&cfg.head, &cache.meta, path, cfg.any_precision)?;
    let split = pick_split(&cache, split, path)?;
    let d = cache.read_lists(&split)?;
    let n = d.len();
    let mut probs = split_probabilities(head, &cache, &split, n)?;
    let flipped = flip_split(&split);
    let tta = cfg.tta && cache.meta.splits.contains(&flipped);
    if tta {
        if cache.read_paths(&flipped)? != d.paths {
            return Err(Error::cache(
                path,
                format!("split {flipped} does not list {split}'s images in the same order"),
            ));
        }
        probs = (probs + split_probabilities(head, &cache, &flipped, n)?) * 0.5;
    }
    let mut class_scores = Vec::new();
    let mut truth_kept = None;
    let (metrics, multi_label) = match &head.thresholds {
        Some(th) => {
            let truth = truth_matrix(&d.tags, head.classes.len());
            for (j, c) in head.classes.iter().enumerate() {
                let (p, t) = (probs.column(j), truth.column(j));
                let pairs = p.iter().zip(t.iter()).map(|(&p, &t)| (p as f64, t > 0.5));
                class_scores.push((c.clone(), pairs.collect()));
            }
            let (m, t) = compute_tags(
                probs.view(),
                truth.view(),
                th,
                &head.classes,
                &d.paths,
                cfg.top,
            );
            truth_kept = Some(truth);
            (m, Some(t))
        }
        None => (
            compute(&probs, &d.labels, &head.classes, &d.paths, cfg.top),
            None,
        ),
    };
    let scores = if probs.ncols() == 2 && multi_label.is_none() {
        probs
            .column(1)
            .iter()
            .zip(&d.labels)
            .map(|(&p, &l)| (p as f64, l == 1))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(t) = &multi_label {
        for ((name, _), ap) in class_scores.iter_mut().zip(&t.per_class_ap) {
            *name = match ap {
                Some(a) => format!("{name} (AP {a:.3})"),
                None => format!("{name} (no positive)"),
            };
        }
    }
    Ok(Evaluation {
        scores,
        class_scores,
        head: cfg.head.display().to_string(),
        features: path.display().to_string(),
        split,
        data_root: cache.meta.data_root.clone(),
        tta,
        skipped: d.skipped.len(),
        metrics,
        multi_label,
        rows: Rows {
            classes: head.classes.clone(),
            paths: d.paths,
            labels: d.labels,
            truth: truth_kept,
            probs,
            thresholds: head.thresholds.clone(),
            history_csv: head.history_csv.clone(),
        },
    })
}
