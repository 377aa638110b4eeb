//! Class weights for `--class-weight balanced`.

use super::{Labels, TrainData};

/// `--class-weight balanced`: `n / (classes * n_c)` per class over the training rows (0 for a class
/// with none), as scikit-learn and Keras. Multi-label: each column's `pos_weight`, its negatives
/// over its positives among the training rows (PyTorch's advice for `BCEWithLogitsLoss`; 1 for a
/// column without positives).
pub(super) fn balanced_weights(data: &TrainData) -> Vec<f32> {
    class_weights(data.y, &data.train, data.classes)
}

/// [`balanced_weights`] of the training rows `train` of labels `labels`.
pub(crate) fn class_weights(labels: Labels, train: &[usize], classes: usize) -> Vec<f32> {
    let n = train.len() as f32;
    let y = match labels {
        Labels::Classes(y) => y,
        Labels::Tags(t) => {
            return (0..classes)
                .map(|j| {
                    let pos = train.iter().filter(|&&i| t[[i, j]] > 0.5).count() as f32;
                    if pos == 0.0 {
                        1.0
                    } else {
                        (n - pos) / pos
                    }
                })
                .collect();
        }
    };
    let mut counts = vec![0usize; classes];
    for &i in train {
        counts[y[i] as usize] += 1;
    }
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (classes as f32 * c as f32)
            }
        })
        .collect()
}
