//! The validation rows of a training run (`train-head`, `finetune`): the cache's `val` split when
//! it has one, else a stratified, seeded fraction of `train`, else none.

use std::collections::BTreeSet;

use crate::cache::{FeatureCache, SplitData, AUG_SPLIT, FLIP_SPLIT};
use crate::data::exclude::Exclusion;
use crate::error::{Error, Result};
use crate::head::fit::stratified_split;

/// Where the validation rows of a training run come from: the cache's `val` split when it has one,
/// else a stratified, seeded fraction of `train`, else none.
#[derive(Debug)]
pub struct Validation {
    /// The cache's `val` split, when the rows come from it (`val` then indexes into it).
    pub split: Option<SplitData>,
    /// Rows of `train` to train on.
    pub train: Vec<usize>,
    /// Validation rows: into `split` when it is set, else into `train`'s rows.
    pub val: Vec<usize>,
    /// Where they came from, in words.
    pub from: String,
}

/// A fraction of the train rows held out for validation: in `[0, 1)`.
pub fn check_val_split(val_split: f64) -> Result<()> {
    if !(0.0..1.0).contains(&val_split) {
        return Err(Error::invalid(
            "val_split",
            format!("must be in [0, 1), got {val_split}"),
        ));
    }
    Ok(())
}

/// Chooses the validation rows for `train_labels` (the cache's `train` split); shared by
/// `train-head` and `finetune`.
pub fn validation_rows(
    cache: &FeatureCache,
    train_labels: &[u32],
    val_split: f64,
    seed: u64,
) -> Result<Validation> {
    check_val_split(val_split)?;
    let n = train_labels.len();
    Ok(if cache.meta.splits.iter().any(|s| s == "val") {
        let v = cache.read_split("val")?;
        Validation {
            val: (0..v.len()).collect(),
            split: Some(v),
            train: (0..n).collect(),
            from: "the cache's val split".into(),
        }
    } else if val_split > 0.0 {
        let (train, val) = stratified_split(train_labels, val_split, seed);
        Validation {
            split: None,
            train,
            val,
            from: format!("--val-split {val_split} of train, stratified, seed {seed}"),
        }
    } else {
        Validation {
            split: None,
            train: (0..n).collect(),
            val: Vec::new(),
            from: "none".into(),
        }
    })
}

/// Leaves the photos `ex` lists out of `v`'s train and validation rows (`train_paths`: the train
/// split's). Every listed photo must be in the cache; listed photos of other splits (test) are
/// counted, as they are not trained on anyway. Returns what was done, in words.
pub fn leave_out(
    cache: &FeatureCache,
    ex: &Exclusion,
    train_paths: &[String],
    v: &mut Validation,
) -> Result<String> {
    let meta = &cache.meta;
    let mut elsewhere = 0;
    {
        let mut known: BTreeSet<&str> = train_paths.iter().map(String::as_str).collect();
        if let Some(s) = &v.split {
            known.extend(s.paths.iter().map(String::as_str));
        }
        let others: Vec<Vec<String>> = meta
            .splits
            .iter()
            .filter(|s| {
                // The train and val photos are known already; augmented copies repeat them.
                let s = s.as_str();
                s != "train"
                    && s != AUG_SPLIT
                    && s != FLIP_SPLIT
                    && !s.ends_with("_flip")
                    && !(s == "val" && v.split.is_some())
            })
            .map(|s| cache.read_paths(s))
            .collect::<Result<_>>()?;
        for paths in &others {
            elsewhere += paths.iter().filter(|p| ex.contains(p)).count();
            known.extend(paths.iter().map(String::as_str));
        }
        ex.not_found(&known, &format!("the cache {}", cache.path.display()))?;
    }
    let (train_before, val_before) = (v.train.len(), v.val.len());
    v.train.retain(|&i| !ex.contains(&train_paths[i]));
    let val_paths = v.split.as_ref().map_or(train_paths, |s| &s.paths);
    v.val.retain(|&i| !ex.contains(&val_paths[i]));
    if v.train.is_empty() {
        return Err(Error::dataset(
            &ex.source,
            format!("leaves none of the {train_before} train rows"),
        ));
    }
    Ok(format!(
        "--exclude {}: {} listed photos left out: {} train, {} validation ({} are in other splits, not trained on)",
        ex.source.display(),
        ex.files.len(),
        train_before - v.train.len(),
        val_before - v.val.len(),
        elsewhere
    ))
}

/// `rows` cut to about `max` by a seeded sample of each class in proportion (at least one row a
/// class), sorted; `rows` itself when it has at most `max`.
pub fn stratified_sample(
    rows: Vec<usize>,
    labels: &[u32],
    classes: usize,
    max: usize,
    seed: u64,
) -> Vec<usize> {
    if rows.len() <= max {
        return rows;
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for &i in &rows {
        by_class[labels[i] as usize].push(i);
    }
    let mut rng = crate::util::rng::Rng(seed);
    let mut out = Vec::with_capacity(max + classes);
    for members in &mut by_class {
        rng.shuffle(members);
        let take = (members.len() * max)
            .div_ceil(rows.len())
            .clamp(1, members.len().max(1));
        out.extend_from_slice(&members[..take.min(members.len())]);
    }
    out.sort_unstable();
    out
}
