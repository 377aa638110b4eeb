//! The rows an in-memory `train-head` run trains on: the train split pooled, its validation rows
//! (held out or the val split), augmented copies and multi-label targets, and what `--exclude` left
//! out.

use super::*;

/// The cache's augmented copies of `train` (`train_flip`; the copies of `train_aug`), pooled, each
/// in train's order; an error if a split does not list train's images in train's order.
fn augmented_rows(
    cache: &FeatureCache,
    cfg: &TrainHeadConfig,
    train: &SplitData,
) -> Result<Vec<Array2<f32>>> {
    let meta = &cache.meta;
    let n = train.len();
    let mut out = Vec::new();
    for name in [FLIP_SPLIT, AUG_SPLIT] {
        if !meta.splits.iter().any(|s| s == name) {
            continue;
        }
        let f = cache.read_split(name)?;
        let copies = f.len().checked_div(n).unwrap_or(0);
        let width = f.features.len() / f.len().max(1);
        let aligned = copies * n == f.len()
            && (0..copies).all(|k| f.paths[k * n..(k + 1) * n] == train.paths[..]);
        if !aligned {
            return Err(Error::cache(
                &cfg.features,
                format!("split {name} ({} rows) does not hold whole copies of train ({n} rows) in train's order", f.len()),
            ));
        }
        for k in 0..copies {
            let part = f.features[k * n * width..(k + 1) * n * width].to_vec();
            out.push(cfg.pool.apply(part, n, &meta.feature_shape, &meta.layout)?);
        }
    }
    Ok(out)
}

/// A multi-label split's multi-hot targets as floats, `[rows, classes]`.
pub(super) fn targets(split: &SplitData, classes: usize) -> Option<Array2<f32>> {
    if split.tags.is_empty() && !split.is_empty() {
        return None;
    }
    let hot = split.tags.iter().map(|&v| f32::from(v)).collect();
    Array2::from_shape_vec((split.len(), classes), hot).ok()
}

/// Pooled rows of the `val` split: features, labels and (multi-label) targets.
pub(super) type ValRows = (Array2<f32>, Vec<u32>, Option<Array2<f32>>);

/// The pooled rows a head trains on.
pub(super) struct Rows {
    pub(super) x: Array2<f32>,
    pub(super) y: Vec<u32>,
    /// A multi-label cache's targets of the train rows.
    pub(super) tags: Option<Array2<f32>>,
    /// Pooled validation rows, labels and (multi-label) targets when they come from the `val`
    /// split.
    pub(super) val: Option<ValRows>,
    /// Pooled augmented copies of the train rows, each in train's order (`train_flip`, and each
    /// copy of `train_aug`), for the `auto` recipe.
    pub(super) extra: Vec<Array2<f32>>,
    pub(super) train_idx: Vec<usize>,
    pub(super) val_idx: Vec<usize>,
    pub(super) val_from: String,
    /// `--exclude`: the list, its sha256 and what was left out.
    pub(super) excluded: Option<serde_json::Value>,
}

impl Rows {
    pub(super) fn load(cache: &FeatureCache, cfg: &TrainHeadConfig) -> Result<Rows> {
        let meta = &cache.meta;
        let train = cache.read_split("train")?;
        let extra = if matches!(cfg.head, HeadChoice::Auto { .. }) {
            augmented_rows(cache, cfg, &train)?
        } else {
            Vec::new()
        };
        let n = train.len();
        let classes = meta.classes.len();
        let tags = meta.multi_label.then(|| targets(&train, classes)).flatten();
        check_train_classes(&cfg.features, meta, &train.labels)?;
        let mut v = validation_rows(cache, &train.labels, cfg.val_split, cfg.seed)?;
        let excluded = exclude(cfg, cache, &train.paths, &mut v)?;
        let x = cfg
            .pool
            .apply(train.features, n, &meta.feature_shape, &meta.layout)?;
        let val = match v.split {
            Some(s) => {
                let vn = s.len();
                let vt = meta.multi_label.then(|| targets(&s, classes)).flatten();
                let vx = cfg
                    .pool
                    .apply(s.features, vn, &meta.feature_shape, &meta.layout)?;
                Some((vx, s.labels, vt))
            }
            None => None,
        };
        Ok(Rows {
            x,
            y: train.labels,
            tags,
            val,
            extra,
            train_idx: v.train,
            val_idx: v.val,
            val_from: v.from,
            excluded,
        })
    }

    /// The validation features and labels (the `val` split, or train rows picked by `val_idx`).
    pub(super) fn val_xy(&self) -> (&Array2<f32>, &[u32]) {
        match &self.val {
            Some((x, y, _)) => (x, y),
            None => (&self.x, &self.y),
        }
    }

    /// The train rows' labels: classes, or a multi-label cache's targets.
    pub(super) fn labels(&self) -> Labels<'_> {
        match &self.tags {
            Some(t) => Labels::Tags(t.view()),
            None => Labels::Classes(&self.y),
        }
    }

    /// The validation features and labels, as [`Rows::labels`].
    pub(super) fn val_labels(&self) -> (&Array2<f32>, Labels<'_>) {
        match (&self.val, &self.tags) {
            (Some((x, _, Some(t))), _) => (x, Labels::Tags(t.view())),
            (Some((x, y, None)), _) => (x, Labels::Classes(y)),
            (None, _) => (&self.x, self.labels()),
        }
    }

    /// The validation rows' probabilities under `net` and their targets (multi-label).
    pub(super) fn val_probabilities(&self, net: &Network) -> Option<(Array2<f32>, Array2<f32>)> {
        let (vx, labels) = self.val_labels();
        let Labels::Tags(t) = labels else {
            return None;
        };
        if self.val_idx.is_empty() {
            return None;
        }
        let x = vx.select(ndarray::Axis(0), &self.val_idx);
        let p = net
            .logits_batched(&x, 256)
            .mapv(crate::head::activation::sigmoid);
        Some((p, t.select(ndarray::Axis(0), &self.val_idx)))
    }
}
