//! Multi-label heads: one sigmoid per class, so each image gets the set of classes whose
//! probability reaches that class's decision threshold. The thresholds are chosen on validation
//! rows (each class's F1-maximising cut) or fixed (`--threshold`), and travel in the head file.
//! Ranking quality is average precision, scikit-learn's `average_precision_score`: the
//! precision at each distinct score, weighted by the recall it adds.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};

use crate::events::{Event, Reporter};

/// The threshold of a class that validation cannot inform (no validation rows, or no positive).
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Average precision of `scores` against 0/1 `truth` (scikit-learn's `average_precision_score`:
/// `sum_k (R_k - R_{k-1}) P_k` over the distinct scores, highest first). `None` without positives
/// (scikit-learn warns and returns 0 there; callers say so instead of averaging it in).
pub fn average_precision(scores: ArrayView1<f32>, truth: ArrayView1<f32>) -> Option<f64> {
    let positives = truth.iter().filter(|&&t| t > 0.5).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0f64, 0f64);
    for (k, &i) in order.iter().enumerate() {
        if truth[i] > 0.5 {
            tp += 1;
        } else {
            fp += 1;
        }
        // Tied scores are one threshold: count the point after the last of them.
        if order.get(k + 1).is_some_and(|&j| scores[j] == scores[i]) {
            continue;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
    }
    Some(ap)
}

/// Each column's average precision (`None` for a column without positives).
pub fn per_class_ap(probs: ArrayView2<f32>, truth: ArrayView2<f32>) -> Vec<Option<f64>> {
    (0..probs.ncols())
        .map(|j| average_precision(probs.column(j), truth.column(j)))
        .collect()
}

/// The mean of the columns' average precisions over the columns with a positive (macro mAP).
pub fn macro_ap(probs: ArrayView2<f32>, truth: ArrayView2<f32>) -> f64 {
    let aps: Vec<f64> = per_class_ap(probs, truth).into_iter().flatten().collect();
    aps.iter().sum::<f64>() / aps.len().max(1) as f64
}

/// The threshold of one class that maximises F1 on (scores, truth): midway between the lowest
/// score the best cut keeps and the highest it leaves out (the widest margin on both sides; the
/// lowest kept score itself when nothing is left out), ties broken by the higher threshold;
/// [`DEFAULT_THRESHOLD`] for a column without positives.
pub fn best_f1_threshold(scores: ArrayView1<f32>, truth: ArrayView1<f32>) -> f32 {
    let positives = truth.iter().filter(|&&t| t > 0.5).count();
    if positives == 0 {
        return DEFAULT_THRESHOLD;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut best, mut at) = (0usize, -1f64, DEFAULT_THRESHOLD);
    for (k, &i) in order.iter().enumerate() {
        if truth[i] > 0.5 {
            tp += 1;
        }
        if order.get(k + 1).is_some_and(|&j| scores[j] == scores[i]) {
            continue;
        }
        // Predicted positive: the first k + 1 rows. F1 = 2 tp / (predicted + positives).
        let f1 = 2.0 * tp as f64 / (k + 1 + positives) as f64;
        if f1 > best {
            best = f1;
            at = match order.get(k + 1) {
                Some(&j) => 0.5 * (scores[i] + scores[j]),
                None => scores[i],
            };
        }
    }
    at
}

/// Per-class thresholds chosen on validation probabilities and targets.
pub fn choose_thresholds(probs: ArrayView2<f32>, truth: ArrayView2<f32>) -> Vec<f32> {
    (0..probs.ncols())
        .map(|j| best_f1_threshold(probs.column(j), truth.column(j)))
        .collect()
}

/// The predicted label sets (0/1) of `probs` at `thresholds` (a class is predicted when its
/// probability is at least its threshold).
pub fn predict_sets(probs: ArrayView2<f32>, thresholds: &[f32]) -> Array2<f32> {
    let mut out = probs.to_owned();
    for (mut col, &t) in out.axis_iter_mut(Axis(1)).zip(thresholds) {
        col.mapv_inplace(|p| f32::from(p >= t));
    }
    out
}

/// The thresholds of a multi-label head and how they were chosen (for the head file): `fixed`
/// for every class, else each class's F1-best cut on the validation (probabilities, targets),
/// else [`DEFAULT_THRESHOLD`] with a warning. The choice and the validation macro AP go to `rep`.
pub fn decide(
    fixed: Option<f32>,
    val: Option<(Array2<f32>, Array2<f32>)>,
    classes: &[String],
    rep: &dyn Reporter,
) -> (Vec<f32>, String) {
    let n = classes.len();
    let (th, how) = match (fixed, val) {
        (Some(v), _) => (vec![v; n], format!("--threshold {v} for every class")),
        (None, Some((p, y))) => {
            rep.report(Event::Line(&format!(
                "validation: macro average precision {:.4} over {} rows",
                macro_ap(p.view(), y.view()),
                p.nrows()
            )));
            (
                choose_thresholds(p.view(), y.view()),
                "per class, the F1-best cut on the validation rows".into(),
            )
        }
        (None, None) => {
            rep.report(Event::Warning(&format!(
                "no validation rows to choose thresholds on: every class gets {DEFAULT_THRESHOLD}"
            )));
            (
                vec![DEFAULT_THRESHOLD; n],
                format!("{DEFAULT_THRESHOLD} (no validation rows)"),
            )
        }
    };
    let shown: Vec<String> = classes
        .iter()
        .zip(&th)
        .map(|(c, t)| format!("{c} {t:.3}"))
        .collect();
    rep.report(Event::Line(&format!("thresholds: {}", shown.join(", "))));
    (th, how)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    /// Reference values from scikit-learn 1.9.1, pasted with the script that made them:
    ///   from sklearn.metrics import average_precision_score as ap
    ///   ap([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])              # 0.8333333333333333
    ///   ap([1, 0, 1, 0, 1], [0.5, 0.5, 0.5, 0.2, 0.9])       # 0.8333333333333333 (ties)
    #[test]
    fn average_precision_matches_scikit_learn_with_and_without_ties() {
        let ap = |t: &[f32], s: &[f32]| {
            average_precision(arr1(s).view(), arr1(t).view()).expect("has positives")
        };
        assert!((ap(&[0., 0., 1., 1.], &[0.1, 0.4, 0.35, 0.8]) - 0.833_333_333).abs() < 1e-9);
        assert!(
            (ap(&[1., 0., 1., 0., 1.], &[0.5, 0.5, 0.5, 0.2, 0.9]) - 0.833_333_333).abs() < 1e-9
        );
        assert_eq!(
            average_precision(arr1(&[0.3f32]).view(), arr1(&[0f32]).view()),
            None
        );
    }

    #[test]
    fn thresholds_maximise_f1_per_class() {
        // Column 0: positives score 0.9 and 0.6, a negative 0.7 -> the best cut keeps all three
        // (F1 0.8) over keeping only 0.9 (F1 0.67), at 0.35 (midway to the 0.1 left out).
        // Column 1: no positive -> the default.
        let p = arr2(&[[0.9f32, 0.2], [0.7, 0.1], [0.6, 0.3], [0.1, 0.4]]);
        let t = arr2(&[[1f32, 0.], [0., 0.], [1., 0.], [0., 0.]]);
        let th = choose_thresholds(p.view(), t.view());
        assert!(
            (th[0] - 0.35).abs() < 1e-6 && th[1] == DEFAULT_THRESHOLD,
            "{th:?}"
        );
        let sets = predict_sets(p.view(), &th);
        assert_eq!(sets.column(0).to_vec(), vec![1., 1., 1., 0.]);
        assert_eq!(sets.column(1).to_vec(), vec![0., 0., 0., 0.]);
    }
}
