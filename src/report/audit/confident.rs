//! Confident learning (Northcutt, Jiang and Chuang 2021), as cleanlab's
//! `find_label_issues(labels, pred_probs, filter_by="confident_learning",
//! return_indices_ranked_by="self_confidence")`: each class's threshold is the mean probability of
//! that class over the rows labelled with it; a row whose probabilities reach the threshold of a
//! class other than its label (the most probable one when several do) is counted off the diagonal
//! of the confident joint and is a likely label error, unless the label is still the most probable
//! class. Issues are ranked by self-confidence (the probability of the given label), lowest first.
//! The probabilities must be out of sample (out-of-fold).

use ndarray::ArrayView2;

use crate::report::metrics::argmax;

/// cleanlab's fuzzy comparison of probabilities.
const FUZZ: f64 = 1e-6;

/// A likely label error: the row, its label, the class confident learning suggests, and the
/// probability given to its label (self-confidence).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelIssue {
    pub row: usize,
    pub given: u32,
    pub suggested: u32,
    pub self_confidence: f64,
}

/// Per-class thresholds: the mean probability of class k over the rows labelled k (at least
/// `2 * FUZZ`; 2, which no probability reaches, for a class no row has).
pub fn thresholds(probs: ArrayView2<f32>, labels: &[u32]) -> Vec<f64> {
    let k = probs.ncols();
    let (mut sum, mut n) = (vec![0f64; k], vec![0usize; k]);
    for (r, &l) in probs.outer_iter().zip(labels) {
        sum[l as usize] += r[l as usize] as f64;
        n[l as usize] += 1;
    }
    (0..k)
        .map(|c| {
            if n[c] == 0 {
                2.0
            } else {
                (sum[c] / n[c] as f64).max(2.0 * FUZZ)
            }
        })
        .collect()
}

/// The likely label errors of `labels` under out-of-sample `probs`, lowest self-confidence first.
pub fn find_label_issues(probs: ArrayView2<f32>, labels: &[u32]) -> Vec<LabelIssue> {
    let t = thresholds(probs, labels);
    let mut out = Vec::new();
    for (i, (r, &l)) in probs.outer_iter().zip(labels).enumerate() {
        let p: Vec<f64> = r.iter().map(|&v| v as f64).collect();
        let confident: Vec<usize> = (0..p.len()).filter(|&c| p[c] >= t[c] - FUZZ).collect();
        let guess = match confident.as_slice() {
            [] => continue,
            [one] => *one,
            _ => argmax(&p),
        };
        let mut nudged = p.clone();
        nudged[l as usize] += FUZZ;
        if guess == l as usize || argmax(&nudged) == l as usize {
            continue;
        }
        out.push(LabelIssue {
            row: i,
            given: l,
            suggested: guess as u32,
            self_confidence: p[l as usize],
        });
    }
    out.sort_by(|a, b| a.self_confidence.total_cmp(&b.self_confidence));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The same probabilities through cleanlab 2.9.0:
    /// ```python
    /// import numpy as np; from cleanlab.filter import find_label_issues
    /// p = np.array([[.9,.05,.05],[.8,.15,.05],[.1,.85,.05],[.7,.2,.1],[.15,.75,.1],[.2,.7,.1],
    ///               [.05,.15,.8],[.1,.1,.8],[.62,.3,.08],[.3,.35,.35],[.05,.55,.4],[.45,.44,.11],
    ///               [.12,.08,.8],[.6,.05,.35],[.33,.33,.34],[.08,.9,.02]])
    /// y = np.array([0,0,0,0,1,1,2,2,1,2,2,1,0,2,0,1])
    /// find_label_issues(y, p, filter_by='confident_learning', return_indices_ranked_by='self_confidence')
    /// # [ 2 12  8 13]
    /// ```
    #[test]
    fn the_ranking_matches_cleanlab() {
        let p = [
            [0.90, 0.05, 0.05],
            [0.80, 0.15, 0.05],
            [0.10, 0.85, 0.05],
            [0.70, 0.20, 0.10],
            [0.15, 0.75, 0.10],
            [0.20, 0.70, 0.10],
            [0.05, 0.15, 0.80],
            [0.10, 0.10, 0.80],
            [0.62, 0.30, 0.08],
            [0.30, 0.35, 0.35],
            [0.05, 0.55, 0.40],
            [0.45, 0.44, 0.11],
            [0.12, 0.08, 0.80],
            [0.60, 0.05, 0.35],
            [0.33, 0.33, 0.34],
            [0.08, 0.90, 0.02],
        ];
        let probs = Array2::from_shape_fn((16, 3), |(i, j)| p[i][j] as f32);
        let y = [0, 0, 0, 0, 1, 1, 2, 2, 1, 2, 2, 1, 0, 2, 0, 1];
        let issues = find_label_issues(probs.view(), &y);
        let rows: Vec<usize> = issues.iter().map(|i| i.row).collect();
        assert_eq!(rows, [2, 12, 8, 13]);
        let suggested: Vec<u32> = issues.iter().map(|i| i.suggested).collect();
        assert_eq!(suggested, [1, 2, 0, 0]);
    }
}
