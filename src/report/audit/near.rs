//! Neighbours in feature space: the rows are L2-normalised and multiplied block by block (a block of
//! rows against the rows after it, so memory stays at `BLOCK x rows` and each pair is computed
//! once), keeping each row's `k` most similar other rows and every pair at or above a cosine
//! similarity threshold (near duplicates).

use ndarray::{s, Array2, Axis};

/// Rows per block of the similarity product.
const BLOCK: usize = 512;

/// What the scan found: pairs `(i, j, cosine)` with `i < j` at or above the threshold, and each
/// row's mean cosine distance (1 - similarity) to its `k` nearest other rows.
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    pub pairs: Vec<(usize, usize, f32)>,
    pub knn_distance: Vec<f32>,
}

/// `x` with each row scaled to unit length (a zero row stays zero).
pub fn normalised(x: &Array2<f32>) -> Array2<f32> {
    let mut out = x.clone();
    normalise_rows(&mut out);
    out
}

/// Scales each row of `x` to unit length in place (a zero row stays zero).
pub fn normalise_rows(x: &mut Array2<f32>) {
    for mut r in x.axis_iter_mut(Axis(0)) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            r /= n;
        }
    }
}

/// A row's `k` highest similarities so far, highest first.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    top: Vec<f32>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            top: Vec::with_capacity(k + 1),
        }
    }

    /// Keeps `v` when it is among the `k` highest.
    #[inline]
    pub fn keep(&mut self, v: f32) {
        let (k, t) = (self.k, &mut self.top);
        if k > 0 && (t.len() < k || v > t[k - 1]) {
            let at = t.partition_point(|&u| u >= v);
            t.insert(at, v);
            t.truncate(k);
        }
    }

    /// The mean cosine distance (1 - similarity) to the kept rows; 0 with `k` = 0.
    pub fn mean_distance(&self) -> f32 {
        if self.k == 0 {
            0.0
        } else {
            1.0 - self.top.iter().sum::<f32>() / self.top.len().max(1) as f32
        }
    }
}

/// Most pairs a scan keeps: more than this many near duplicates says the threshold does not tell
/// the photos apart, and holding them all could exhaust memory.
pub const MAX_PAIRS: usize = 2_000_000;

/// Scans `x`'s rows against each other; `progress(rows done)` after each block. Each block of rows
/// is multiplied by the rows from its own first one on (the upper triangle: half the products of
/// the full square), and every similarity updates both rows' nearest neighbours. `Err(rows done)`
/// as soon as more than [`MAX_PAIRS`] pairs are at or above `threshold`.
pub fn scan(
    x: &Array2<f32>,
    threshold: f32,
    k: usize,
    mut progress: impl FnMut(usize),
) -> Result<Neighbours, usize> {
    let z = normalised(x);
    let n = z.nrows();
    let mut pairs = Vec::new();
    let k = k.min(n.saturating_sub(1));
    let mut top = vec![TopK::new(k); n];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let sims = z
            .slice(s![start..end, ..])
            .dot(&z.slice(s![start.., ..]).t());
        for (b, row) in sims.outer_iter().enumerate() {
            let i = start + b;
            for (off, &v) in row.iter().enumerate().skip(b + 1) {
                let j = start + off;
                if v >= threshold {
                    if pairs.len() == MAX_PAIRS {
                        return Err(start);
                    }
                    pairs.push((i, j, v));
                }
                top[i].keep(v);
                top[j].keep(v);
            }
        }
        progress(end);
    }
    let knn_distance = top.iter().map(TopK::mean_distance).collect();
    Ok(Neighbours {
        pairs,
        knn_distance,
    })
}

/// Rows whose distance is far out: its logarithm above the third quartile by 3 inter-quartile
/// ranges (Tukey's far-out fence; distances to neighbours are skewed to the right, their logarithms
/// far less), highest first; none when the spread is zero.
pub fn far_out(distance: &[f32]) -> Vec<usize> {
    if distance.len() < 4 {
        return Vec::new();
    }
    let logs: Vec<f32> = distance.iter().map(|&d| d.max(1e-6).ln()).collect();
    let distance = &logs[..];
    let mut sorted = distance.to_vec();
    sorted.sort_by(f32::total_cmp);
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
    let (q1, q3) = (q(0.25), q(0.75));
    let fence = q3 + 3.0 * (q3 - q1);
    if q3 <= q1 {
        return Vec::new();
    }
    let mut rows: Vec<usize> = (0..distance.len())
        .filter(|&i| distance[i] > fence)
        .collect();
    rows.sort_by(|&a, &b| distance[b].total_cmp(&distance[a]));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs over the threshold across block borders, nearest-neighbour distances against a
    /// brute-force computation, and a far-away row as the one outlier.
    #[test]
    fn pairs_and_neighbours_match_brute_force() {
        let mut rng = crate::util::rng::Rng(9);
        let n = 700; // two blocks
        let mut x = Array2::from_shape_fn((n, 8), |_| rng.normal() + 3.0);
        let copy = x.row(3).to_owned() * 1.5; // the same direction: cosine 1
        x.row_mut(650).assign(&copy);
        x.row_mut(100)
            .assign(&(Array2::from_elem((1, 8), -1.0).row(0).to_owned() + 0.0));
        let found = scan(&x, 0.9999, 3, |_| {}).unwrap();
        assert!(
            found.pairs.iter().any(|&(i, j, _)| (i, j) == (3, 650)),
            "{:?}",
            found.pairs
        );
        let z = normalised(&x);
        for i in [0, 3, 100, 511, 512, 699] {
            let mut sims: Vec<f32> = (0..n)
                .filter(|&j| j != i)
                .map(|j| z.row(i).dot(&z.row(j)))
                .collect();
            sims.sort_by(|a, b| b.total_cmp(a));
            let want = 1.0 - sims[..3].iter().sum::<f32>() / 3.0;
            assert!((found.knn_distance[i] - want).abs() < 1e-5, "row {i}");
        }
        assert_eq!(far_out(&found.knn_distance), vec![100]);
    }

    /// Rows that all point one way are all near duplicates of one another: past the cap the scan
    /// stops instead of holding every pair.
    #[test]
    fn too_many_pairs_stop_the_scan() {
        let n = 2100; // 2100 * 2099 / 2 pairs, over MAX_PAIRS
        let x = Array2::from_elem((n, 4), 1.0f32);
        assert!(n * (n - 1) / 2 > MAX_PAIRS);
        assert!(scan(&x, 0.95, 3, |_| {}).is_err());
        assert!(scan(&x.slice(s![..100, ..]).to_owned(), 0.95, 3, |_| {}).is_ok());
    }
}
