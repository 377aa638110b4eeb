//! What a training row is labelled with ([`Labels`]: a class, or a multi-label row's multi-hot
//! tags) and one batch of them ([`Batch`]), with the loss and accuracy each kind has.

use ndarray::{Array2, ArrayView2, Axis};

use super::predicted;
use crate::head::loss::Loss;

/// What the rows are labelled with: one class each, or (multi-label) a multi-hot row of tags.
#[derive(Debug, Clone, Copy)]
pub enum Labels<'a> {
    Classes(&'a [u32]),
    /// `[rows, classes]` of 0/1.
    Tags(ArrayView2<'a, f32>),
}

impl Labels<'_> {
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes(y) => y.len(),
            Labels::Tags(t) => t.nrows(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels of rows `idx`.
    pub fn batch(&self, idx: &[usize]) -> Batch {
        match self {
            Labels::Classes(y) => Batch::Classes(idx.iter().map(|&i| y[i]).collect()),
            Labels::Tags(t) => Batch::Tags(t.select(Axis(0), idx)),
        }
    }
}

/// The labels of one batch.
pub enum Batch {
    Classes(Vec<u32>),
    Tags(Array2<f32>),
}

impl Batch {
    /// The batch as [`Labels`] of its own rows.
    pub fn labels(&self) -> Labels<'_> {
        match self {
            Batch::Classes(y) => Labels::Classes(y),
            Batch::Tags(t) => Labels::Tags(t.view()),
        }
    }

    /// The loss and its gradient; `class_weights` weight each row by its class, or (tags) each
    /// positive element by its column (`pos_weight`).
    pub fn loss(
        &self,
        loss: &Loss,
        z: &Array2<f32>,
        class_weights: Option<&[f32]>,
    ) -> (f32, Array2<f32>) {
        match self {
            Batch::Classes(y) => {
                let w: Option<Vec<f32>> =
                    class_weights.map(|w| y.iter().map(|&l| w[l as usize]).collect());
                loss.compute(z, y, w.as_deref())
            }
            Batch::Tags(t) => loss.compute_tags(z, t, class_weights),
        }
    }

    /// Rows predicted right: whole rows for classes; for tags, each row's fraction of columns
    /// right (logit > 0 for a tag), so that hits / rows is the element-wise accuracy.
    pub fn hits(&self, z: &Array2<f32>) -> f64 {
        match self {
            Batch::Classes(y) => predicted(z).iter().zip(y).filter(|(p, t)| p == t).count() as f64,
            Batch::Tags(t) => {
                let right = z
                    .iter()
                    .zip(t.iter())
                    .filter(|(&z, &y)| (z > 0.0) == (y > 0.5))
                    .count();
                right as f64 / t.ncols().max(1) as f64
            }
        }
    }
}
