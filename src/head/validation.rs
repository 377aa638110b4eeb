//! The validation rows of a training run (`train-head`, `finetune`): the cache's `val` split when
//! it has one, else a stratified, seeded fraction of `train`, else none.

use crate::cache::{FeatureCache, SplitData};
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
