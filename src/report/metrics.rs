//! Classification metrics from predicted probabilities: accuracy, per-class precision/recall/F1,
//! confusion matrix, ROC-AUC (binary), log loss, and the most confidently wrong files ("top losses").
//! Checked against scikit-learn on the same numbers.

use ndarray::Array2;
use serde::Serialize;

/// Probabilities are clamped to `[EPS, 1]` inside the log loss (scikit-learn's float64 clip).
pub const LOG_LOSS_EPS: f64 = 1e-15;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLoss {
    pub path: String,
    pub label: String,
    pub predicted: String,
    /// Probability the head gave the true class.
    pub p_true: f64,
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    /// Binary only: area under the ROC curve of the second class's probability.
    pub roc_auc: Option<f64>,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub top_losses: Vec<TopLoss>,
}

/// The index of the highest value (the first on a tie; 0 when empty): the predicted class.
pub fn argmax<'a, T: PartialOrd + Copy + 'a>(r: impl IntoIterator<Item = &'a T>) -> usize {
    let (mut best, mut top) = (0, None);
    for (j, &v) in r.into_iter().enumerate() {
        if top.is_none_or(|t| v > t) {
            (best, top) = (j, Some(v));
        }
    }
    best
}

/// Rank-based AUC (Mann-Whitney U) with average ranks for ties; `None` if one class is absent.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * avg;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// All metrics for `probs` (`n x classes`, rows sum to 1) against `labels`; `top` worst files.
pub fn compute(
    probs: &Array2<f32>,
    labels: &[u32],
    classes: &[String],
    paths: &[String],
    top: usize,
) -> Metrics {
    let (n, k) = probs.dim();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut losses = Vec::with_capacity(n);
    let mut log_loss = 0f64;
    for (i, r) in probs.outer_iter().enumerate() {
        let t = labels[i] as usize;
        let p = argmax(r);
        confusion[t][p] += 1;
        let pt = (r[t] as f64).clamp(LOG_LOSS_EPS, 1.0);
        let l = -pt.ln();
        log_loss += l;
        if p != t {
            losses.push((l, i, p, pt));
        }
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted == 0 {
                0.0
            } else {
                tp / predicted as f64
            };
            let recall = if support == 0 {
                0.0
            } else {
                tp / support as f64
            };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                class: classes.get(c).cloned().unwrap_or_else(|| c.to_string()),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let roc = (k == 2)
        .then(|| {
            let s: Vec<f64> = probs.column(1).iter().map(|&v| v as f64).collect();
            let pos: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
            roc_auc(&s, &pos)
        })
        .flatten();
    losses.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let name = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
    let top_losses = losses
        .into_iter()
        .take(top)
        .map(|(l, i, p, pt)| TopLoss {
            path: paths.get(i).cloned().unwrap_or_default(),
            label: name(labels[i] as usize),
            predicted: name(p),
            p_true: pt,
            loss: l,
        })
        .collect();
    Metrics {
        n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        log_loss: if n == 0 { 0.0 } else { log_loss / n as f64 },
        roc_auc: roc,
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64,
        per_class,
        confusion,
        top_losses,
    }
}

impl Metrics {
    /// Human-readable report: headline numbers, per-class table, confusion matrix, top losses.
    pub fn report(&self) -> String {
        let mut s = format!(
            "images: {}\naccuracy: {:.4}\nlog loss: {:.4}\n",
            self.n, self.accuracy, self.log_loss
        );
        if let Some(a) = self.roc_auc {
            s += &format!("ROC-AUC: {a:.4}\n");
        }
        s += &format!("macro F1: {:.4}\n\n", self.macro_f1);
        s += &self.class_table();
        s += "\nconfusion (rows: true, columns: predicted)\n";
        s += &format!("{:<20}", "");
        for c in &self.per_class {
            s += &format!(" {:>10}", truncate(&c.class, 10));
        }
        s += "\n";
        for (c, row) in self.per_class.iter().zip(&self.confusion) {
            s += &format!("{:<20}", truncate(&c.class, 20));
            for v in row {
                s += &format!(" {v:>10}");
            }
            s += "\n";
        }
        s + &self.top_text()
    }

    /// The per-class precision, recall, F1 and support table.
    pub fn class_table(&self) -> String {
        let mut s = format!(
            "{:<20} {:>9} {:>9} {:>9} {:>8}\n",
            "class", "precision", "recall", "f1", "support"
        );
        for c in &self.per_class {
            s += &format!(
                "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}\n",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        s
    }

    /// The most confidently wrong files, when there are any.
    pub fn top_text(&self) -> String {
        if self.top_losses.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "\ntop {} losses (most confidently wrong)\n",
            self.top_losses.len()
        );
        for t in &self.top_losses {
            s += &format!(
                "  {:.4}  {} (true {}, predicted {}, p(true) {:.4})\n",
                t.loss, t.path, t.label, t.predicted, t.p_true
            );
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference numbers from scikit-learn 1.x on the same arrays:
    /// ```python
    /// import numpy as np; from sklearn import metrics as M
    /// y = [0, 0, 1, 1, 1, 0, 1, 0, 1]; p1 = np.array([.1, .4, .35, .8, .9, .6, .6, 0., .2])
    /// P = np.stack([1 - p1, p1], 1); yp = P.argmax(1)
    /// print(M.accuracy_score(y, yp), M.log_loss(y, P), M.roc_auc_score(y, p1))
    /// print(M.precision_recall_fscore_support(y, yp)); print(M.confusion_matrix(y, yp))
    /// # 0.6666666666666666 0.5590073998854197 0.775
    /// # (array([0.6 , 0.75]), array([0.75, 0.6 ]), array([0.66666667, 0.66666667]), array([4, 5]))
    /// # [[3 1]
    /// #  [2 3]]
    /// ```
    #[test]
    fn binary_metrics_match_sklearn() {
        let p1 = [0.1f32, 0.4, 0.35, 0.8, 0.9, 0.6, 0.6, 0.0, 0.2];
        let y = [0u32, 0, 1, 1, 1, 0, 1, 0, 1];
        let probs =
            Array2::from_shape_fn((9, 2), |(i, j)| if j == 1 { p1[i] } else { 1.0 - p1[i] });
        let classes = vec!["cat".to_string(), "dog".to_string()];
        let paths: Vec<String> = (0..9).map(|i| format!("f{i}.jpg")).collect();
        let m = compute(&probs, &y, &classes, &paths, 10);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(m.accuracy, 0.666_666_666_666_666_6), "{}", m.accuracy);
        assert!(close(m.log_loss, 0.559_007_399_885_419_7), "{}", m.log_loss);
        assert!(close(m.roc_auc.unwrap(), 0.775), "{:?}", m.roc_auc);
        assert_eq!(m.confusion, vec![vec![3, 1], vec![2, 3]]);
        let prf = [(0.6, 0.75, 0.666_666_67, 4), (0.75, 0.6, 0.666_666_67, 5)];
        for (c, (p, r, f, n)) in m.per_class.iter().zip(prf) {
            assert!(
                close(c.precision, p) && close(c.recall, r) && close(c.f1, f) && c.support == n,
                "{c:?}"
            );
        }
        // Wrong rows by loss: f8 -ln(.2), f2 -ln(.35), f5 -ln(.4).
        let worst: Vec<&str> = m.top_losses.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(worst, ["f8.jpg", "f2.jpg", "f5.jpg"]);
        assert_eq!(
            (
                m.top_losses[0].label.as_str(),
                m.top_losses[0].predicted.as_str()
            ),
            ("dog", "cat")
        );
    }

    #[test]
    fn auc_handles_ties_and_missing_class() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, true]), None);
    }
}
