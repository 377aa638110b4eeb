//! Multi-label metrics: each image has a set of classes and the head one probability per class,
//! thresholded per class ([`crate::head::tags`]). Ranking (macro and micro average precision), the
//! sets at the head's thresholds (micro and macro F1, per-class precision/recall/F1/support, subset
//! accuracy, Hamming loss) and the images whose sets are most wrong. Definitions are
//! scikit-learn's (`average_precision_score`, `f1_score`, `hamming_loss`, `accuracy_score`), checked
//! against its numbers, except that a class with no positive image is left out of the macro
//! average precision (scikit-learn counts it as 0 and warns).

use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use super::metrics::{ClassMetrics, Metrics, TopLoss, LOG_LOSS_EPS};
use crate::head::tags::{average_precision, per_class_ap, predict_sets};

/// What joins an image's classes in one text cell: a space, unless a class name holds one (`tabby
/// cat`: "indoor tabby cat" read as three), then `;`, then `|`.
pub fn set_separator(classes: &[String]) -> &'static str {
    [" ", ";", "|"]
        .into_iter()
        .find(|sep| !classes.iter().any(|c| c.contains(sep)))
        .unwrap_or("|")
}

/// The numbers only a multi-label evaluation has.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TagMetrics {
    /// Mean of the per-class average precisions over the classes with a positive image.
    pub macro_ap: f64,
    /// Average precision of all (image, class) pairs together.
    pub micro_ap: f64,
    pub micro_f1: f64,
    pub macro_f1: f64,
    /// Images whose predicted set is exactly their set.
    pub subset_accuracy: f64,
    /// Wrong (image, class) decisions over all of them.
    pub hamming_loss: f64,
    /// Per class: its average precision (`None` without a positive image) and threshold.
    pub per_class_ap: Vec<Option<f64>>,
    pub thresholds: Vec<f32>,
}

/// The multi-label metrics of `probs` (`[n, classes]`, each class's own probability) against the
/// multi-hot `truth`, at `thresholds`. The returned [`Metrics`] holds what both kinds share: its
/// `accuracy` is the subset accuracy, `log_loss` the mean binary cross-entropy over all (image,
/// class) pairs, `per_class` the per-class table; no ROC or confusion matrix. `top` images with
/// the highest loss are listed (true and predicted sets as space-separated class names).
pub fn compute_tags(
    probs: ArrayView2<f32>,
    truth: ArrayView2<f32>,
    thresholds: &[f32],
    classes: &[String],
    paths: &[String],
    top: usize,
) -> (Metrics, TagMetrics) {
    let (n, k) = probs.dim();
    let pred = predict_sets(probs, thresholds);
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|j| class_metrics(&classes[j], pred.column(j), truth.column(j)))
        .collect();
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut wrong = 0usize;
    let mut exact = 0usize;
    let mut losses: Vec<(f64, usize, f64)> = Vec::new();
    let mut log_loss = 0f64;
    for i in 0..n {
        let mut row_wrong = 0;
        let (mut row_loss, mut worst) = (0f64, 1f64);
        for j in 0..k {
            let (p, y, hat) = (
                probs[[i, j]] as f64,
                truth[[i, j]] > 0.5,
                pred[[i, j]] > 0.5,
            );
            match (y, hat) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
            row_wrong += usize::from(y != hat);
            let pt = if y { p } else { 1.0 - p }.clamp(LOG_LOSS_EPS, 1.0);
            row_loss -= pt.ln();
            worst = worst.min(pt);
        }
        wrong += row_wrong;
        exact += usize::from(row_wrong == 0);
        log_loss += row_loss;
        if row_wrong > 0 {
            losses.push((row_loss / k.max(1) as f64, i, worst));
        }
    }
    losses.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let set = |m: ArrayView2<f32>, i: usize| -> String {
        let names: Vec<&str> = (0..k)
            .filter(|&j| m[[i, j]] > 0.5)
            .map(|j| classes[j].as_str())
            .collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(set_separator(classes))
        }
    };
    let top_losses = losses
        .into_iter()
        .take(top)
        .map(|(l, i, worst)| TopLoss {
            path: paths.get(i).cloned().unwrap_or_default(),
            label: set(truth, i),
            predicted: set(pred.view(), i),
            p_true: worst,
            loss: l,
        })
        .collect();
    let aps = per_class_ap(probs, truth);
    let with_pos: Vec<f64> = aps.iter().flatten().copied().collect();
    let flat_p = ndarray::Array1::from_iter(probs.iter().copied());
    let flat_t = ndarray::Array1::from_iter(truth.iter().copied());
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64;
    let tags = TagMetrics {
        macro_ap: with_pos.iter().sum::<f64>() / with_pos.len().max(1) as f64,
        micro_ap: average_precision(flat_p.view(), flat_t.view()).unwrap_or(0.0),
        micro_f1: ratio(2 * tp, 2 * tp + fp + fn_),
        macro_f1,
        subset_accuracy: ratio(exact, n),
        hamming_loss: ratio(wrong, n * k),
        per_class_ap: aps,
        thresholds: thresholds.to_vec(),
    };
    let metrics = Metrics {
        n,
        accuracy: tags.subset_accuracy,
        log_loss: if n * k == 0 {
            0.0
        } else {
            log_loss / (n * k) as f64
        },
        roc_auc: None,
        macro_f1,
        per_class,
        confusion: Vec::new(),
        top_losses,
    };
    (metrics, tags)
}

/// Precision, recall, F1 and support of one class's decisions (0 where a ratio has no
/// denominator, as scikit-learn's `zero_division` default).
fn class_metrics(
    class: &str,
    pred: ndarray::ArrayView1<f32>,
    truth: ndarray::ArrayView1<f32>,
) -> ClassMetrics {
    let (mut tp, mut predicted, mut support) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth.iter()) {
        let (p, t) = (p > 0.5, t > 0.5);
        tp += usize::from(p && t);
        predicted += usize::from(p);
        support += usize::from(t);
    }
    let precision = if predicted == 0 {
        0.0
    } else {
        tp as f64 / predicted as f64
    };
    let recall = if support == 0 {
        0.0
    } else {
        tp as f64 / support as f64
    };
    let f1 = if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (predicted + support) as f64
    };
    ClassMetrics {
        class: class.to_string(),
        precision,
        recall,
        f1,
        support,
    }
}

impl TagMetrics {
    /// The multi-label report: headline numbers, then per class its decisions at its threshold
    /// and its average precision, then the images whose sets are most wrong.
    pub fn report(&self, m: &Metrics) -> String {
        let mut s = format!(
            "images: {}\nmacro average precision (mAP): {:.4}\nmicro average precision: {:.4}\nmicro F1: {:.4}\nmacro F1: {:.4}\nsubset accuracy: {:.4}\nHamming loss: {:.4}\nmean binary cross-entropy: {:.4}\n\n",
            m.n, self.macro_ap, self.micro_ap, self.micro_f1, self.macro_f1, self.subset_accuracy, self.hamming_loss, m.log_loss
        );
        s += &format!(
            "{:<20} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}\n",
            "class", "precision", "recall", "f1", "support", "AP", "threshold"
        );
        for ((c, ap), t) in m
            .per_class
            .iter()
            .zip(&self.per_class_ap)
            .zip(&self.thresholds)
        {
            let ap = ap.map_or("-".to_string(), |a| format!("{a:.4}"));
            s += &format!(
                "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8} {ap:>9} {t:>9.4}\n",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        s + &m.top_text()
    }
}

/// Multi-hot rows as an array: `hot` row-major `[n, classes]` of 0/1.
pub fn truth_matrix(hot: &[u8], classes: usize) -> Array2<f32> {
    let n = hot.len() / classes.max(1);
    Array2::from_shape_fn((n, classes), |(i, j)| f32::from(hot[i * classes + j]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    /// Reference numbers from scikit-learn 1.9.1 on the same arrays:
    /// ```python
    /// import numpy as np; from sklearn import metrics as M
    /// y = np.array([[1,0,1],[0,1,0],[1,1,0],[0,0,1],[1,0,0],[0,1,1],[0,0,1],[1,1,1]])
    /// p = np.array([[.9,.2,.6],[.3,.8,.2],[.6,.4,.3],[.1,.3,.7],[.55,.6,.2],[.2,.7,.45],
    ///               [.4,.1,.8],[.7,.5,.9]])
    /// yp = (p >= .5).astype(int)
    /// M.average_precision_score(y, p, average=None)     # [1.     0.8875 1.    ]
    /// M.average_precision_score(y, p, average='macro')  # 0.9625
    /// M.average_precision_score(y, p, average='micro')  # 0.9550385511923973
    /// M.f1_score(y, yp, average='micro'), M.f1_score(y, yp, average='macro')
    ///                                                   # 0.88 0.8796296296296297
    /// M.precision_recall_fscore_support(y, yp)          # P [1. .75 1.], R [1. .75 .8], S [4 4 5]
    /// M.hamming_loss(y, yp), M.accuracy_score(y, yp)    # 0.125 0.625
    /// ```
    #[test]
    fn multilabel_metrics_match_scikit_learn() {
        let y = arr2(&[
            [1f32, 0., 1.],
            [0., 1., 0.],
            [1., 1., 0.],
            [0., 0., 1.],
            [1., 0., 0.],
            [0., 1., 1.],
            [0., 0., 1.],
            [1., 1., 1.],
        ]);
        let p = arr2(&[
            [0.9f32, 0.2, 0.6],
            [0.3, 0.8, 0.2],
            [0.6, 0.4, 0.3],
            [0.1, 0.3, 0.7],
            [0.55, 0.6, 0.2],
            [0.2, 0.7, 0.45],
            [0.4, 0.1, 0.8],
            [0.7, 0.5, 0.9],
        ]);
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let paths: Vec<String> = (0..8).map(|i| format!("f{i}.jpg")).collect();
        let (m, t) = compute_tags(p.view(), y.view(), &[0.5; 3], &classes, &paths, 5);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        let aps: Vec<f64> = t.per_class_ap.iter().map(|a| a.unwrap()).collect();
        assert!(
            close(aps[0], 1.0) && close(aps[1], 0.8875) && close(aps[2], 1.0),
            "{aps:?}"
        );
        assert!(close(t.macro_ap, 0.9625), "{}", t.macro_ap);
        assert!(close(t.micro_ap, 0.955_038_551_192_397_3), "{}", t.micro_ap);
        assert!(close(t.micro_f1, 0.88), "{}", t.micro_f1);
        assert!(close(t.macro_f1, 0.879_629_629_629_629_7), "{}", t.macro_f1);
        assert!(close(t.hamming_loss, 0.125) && close(t.subset_accuracy, 0.625));
        assert!(close(m.accuracy, 0.625));
        let prs = [(1.0, 1.0, 4), (0.75, 0.75, 4), (1.0, 0.8, 5)];
        for (c, (p, r, n)) in m.per_class.iter().zip(prs) {
            assert!(
                close(c.precision, p) && close(c.recall, r) && c.support == n,
                "{c:?}"
            );
        }
        // Wrong sets: f2 (a for a b), f4 (a b for a), f5 (b for b c); f7's b at 0.5 counts.
        let mut wrong: Vec<&str> = m.top_losses.iter().map(|l| l.path.as_str()).collect();
        wrong.sort();
        assert_eq!(wrong, ["f2.jpg", "f4.jpg", "f5.jpg"]);
        let f4 = m.top_losses.iter().find(|l| l.path == "f4.jpg").unwrap();
        assert_eq!((f4.label.as_str(), f4.predicted.as_str()), ("a", "a b"));
    }

    #[test]
    fn a_set_is_joined_by_what_no_class_name_holds() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(set_separator(&names(&["cat", "indoor"])), " ");
        assert_eq!(set_separator(&names(&["tabby cat", "indoor"])), ";");
        assert_eq!(set_separator(&names(&["tabby cat", "a;b"])), "|");
    }
}
