//! Approximate neighbours, for audits past the all-pairs scan of [`super::near`] (2 million photos
//! are 2·10¹² pairs: days on 2 cores).
//!
//! - **Projection.** Each photo's pooled features are projected to [`DIM`] dimensions by a seeded
//!   Gaussian matrix and scaled to unit length. The dot product of two projections estimates the
//!   cosine of the photos; its error shrinks with `1 - cos²`, so near duplicates are estimated
//!   closely (about ±0.01 at a cosine of 0.95) and far pairs loosely.
//! - **Inverted lists.** Spherical k-means on a seeded sample groups the projections into about
//!   `√n` lists (FAISS's IVF-Flat, without its quantiser). Each list's rows are compared with every
//!   row of the [`PROBES`] lists whose centres are nearest its own centre, so a row is compared
//!   with about `PROBES·√n` others instead of `n`.
//!
//! The pairs found here are candidates: the audit computes their exact cosine from the features
//! before it reports one ([`super::streamed`]). The nearest-neighbour distances (the outlier
//! score) are the projections' own.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::near::{normalise_rows, Neighbours, TopK};
use crate::report::metrics::argmax;
use crate::util::rng::Rng;

/// Dimensions of the projection.
pub const DIM: usize = 128;

/// Lists each list is compared with (itself included).
pub const PROBES: usize = 8;

/// Iterations of k-means.
const ITERS: usize = 10;

/// Rows of k-means' training sample per list.
pub const SAMPLE_PER_LIST: usize = 64;

/// Query rows per product in the search.
const QUERY_BLOCK: usize = 256;

/// A seeded Gaussian projection from `width` dimensions to [`DIM`].
pub struct Projection {
    r: Array2<f32>,
}

impl Projection {
    pub fn new(width: usize, seed: u64) -> Projection {
        let mut rng = Rng(seed ^ 0x9e37_79b9);
        Projection {
            r: Array2::from_shape_fn((width, DIM), |_| rng.normal()),
        }
    }

    /// The rows of `x`, projected and scaled to unit length (a zero row stays zero).
    pub fn apply(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut z = x.dot(&self.r);
        normalise_rows(&mut z);
        z
    }
}

/// The inverted lists: unit-length centres and the rows assigned to each.
pub struct Lists {
    pub centres: Array2<f32>,
    pub members: Vec<Vec<usize>>,
}

/// The index of each row's most similar centre, in parallel blocks.
fn assign(z: ArrayView2<f32>, centres: &Array2<f32>) -> Vec<usize> {
    let n = z.nrows();
    let starts: Vec<usize> = (0..n).step_by(4096).collect();
    starts
        .par_iter()
        .flat_map_iter(|&a| {
            let sims = z.slice(s![a..(a + 4096).min(n), ..]).dot(&centres.t());
            sims.outer_iter().map(argmax).collect::<Vec<_>>()
        })
        .collect()
}

/// Groups the unit rows of `z` into about `√n` lists by spherical k-means, trained on a seeded
/// sample of [`SAMPLE_PER_LIST`] rows per list; a centre left with no rows keeps its place.
pub fn lists(z: &Array2<f32>, seed: u64) -> Lists {
    let n = z.nrows();
    let m = ((n as f64).sqrt().round() as usize).clamp(1, 4096);
    let mut idx: Vec<usize> = (0..n).collect();
    Rng(seed ^ 0x1f5).shuffle(&mut idx);
    idx.truncate((SAMPLE_PER_LIST * m).min(n));
    let sample = z.select(Axis(0), &idx);
    let mut centres = sample.slice(s![..m, ..]).to_owned();
    for _ in 0..ITERS {
        let a = assign(sample.view(), &centres);
        let mut sum = Array2::<f32>::zeros(centres.dim());
        for (r, &c) in sample.outer_iter().zip(&a) {
            let mut row = sum.row_mut(c);
            row += &r;
        }
        for (mut c, s) in centres.outer_iter_mut().zip(sum.outer_iter()) {
            if s.iter().any(|&v| v != 0.0) {
                c.assign(&s);
            }
        }
        normalise_rows(&mut centres);
    }
    let mut members = vec![Vec::new(); m];
    for (i, c) in assign(z.view(), &centres).into_iter().enumerate() {
        members[c].push(i);
    }
    Lists { centres, members }
}

/// Each list's [`PROBES`] nearest lists by centre (itself first).
fn probes(lists: &Lists) -> Vec<Vec<usize>> {
    let cc = lists.centres.dot(&lists.centres.t());
    cc.outer_iter()
        .enumerate()
        .map(|(l, r)| {
            let mut order: Vec<usize> = (0..r.len()).filter(|&j| j != l).collect();
            order.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
            order.truncate(PROBES - 1);
            order.insert(0, l);
            order
        })
        .collect()
}

/// Bytes one thread of [`search`] over `n` rows holds: a list's candidates (about [`PROBES`]
/// lists of `√n` rows) and their products with a block of queries.
pub fn search_bytes(n: usize) -> u64 {
    let cand = PROBES * ((n as f64).sqrt().ceil() as usize).max(1);
    (cand * (DIM + QUERY_BLOCK) * 4) as u64
}

/// More pairs over the threshold than the search keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyPairs;

/// Searches the unit rows of `z` through `lists`: pairs `(i, j, estimated cosine)`, `i < j`, at or
/// above `threshold` (each once, in order), and each row's mean distance to its `k` nearest rows
/// found. [`TooManyPairs`] as soon as more than `max_pairs` pairs are found.
pub fn search(
    z: &Array2<f32>,
    lists: &Lists,
    threshold: f32,
    k: usize,
    max_pairs: usize,
) -> Result<Neighbours, TooManyPairs> {
    let probes = probes(lists);
    let found = AtomicUsize::new(0);
    type Part = (Vec<(usize, f32)>, Vec<(usize, usize, f32)>);
    let parts: Vec<Option<Part>> = (0..lists.members.len())
        .into_par_iter()
        .map(|l| {
            let cand: Vec<usize> = probes[l]
                .iter()
                .flat_map(|&p| lists.members[p].iter().copied())
                .collect();
            let zc = z.select(Axis(0), &cand);
            let (mut dist, mut pairs) = (Vec::new(), Vec::new());
            for q in lists.members[l].chunks(QUERY_BLOCK) {
                let before = pairs.len();
                let sims = z.select(Axis(0), q).dot(&zc.t());
                for (b, row) in sims.outer_iter().enumerate() {
                    let i = q[b];
                    let mut top = TopK::new(k);
                    for (&j, &v) in cand.iter().zip(row.iter()) {
                        if j == i {
                            continue;
                        }
                        top.keep(v);
                        if v >= threshold {
                            pairs.push((i.min(j), i.max(j), v));
                        }
                    }
                    dist.push((i, top.mean_distance()));
                }
                let new = pairs.len() - before;
                if found.fetch_add(new, Ordering::Relaxed) + new > 2 * max_pairs {
                    return None;
                }
            }
            Some((dist, pairs))
        })
        .collect();
    let mut knn_distance = vec![0f32; z.nrows()];
    let mut pairs = Vec::new();
    for part in parts {
        let (dist, p) = part.ok_or(TooManyPairs)?;
        for (i, d) in dist {
            knn_distance[i] = d;
        }
        pairs.extend(p);
    }
    // A pair is found from both of its rows when each list probes the other.
    pairs.sort_by_key(|p| (p.0, p.1));
    pairs.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
    if pairs.len() > max_pairs {
        return Err(TooManyPairs);
    }
    Ok(Neighbours {
        pairs,
        knn_distance,
    })
}

#[cfg(test)]
mod tests {
    use super::super::near;
    use super::*;

    /// `n` rows of `width` around 60 themes, 30 rows replaced by near copies of others (the pairs
    /// `(c·131, c·131 + 977)`) and 3 rows far away from all.
    fn photos(n: usize, width: usize, theme: f32) -> Array2<f32> {
        let mut rng = Rng(3);
        let themes = Array2::from_shape_fn((60, width), |_| theme * rng.normal());
        let mut x = Array2::from_shape_fn((n, width), |_| 0.6 * rng.normal());
        for i in 0..n {
            let mut r = x.row_mut(i);
            r += &themes.row(i % 60);
        }
        for c in 0..30 {
            let (a, b) = (c * 131 % n, (c * 131 + 977) % n);
            let copy = x.row(a).mapv(|v| v + 0.05 * rng.normal());
            x.row_mut(b).assign(&copy);
        }
        for i in [17, 1717, 3333] {
            let far = Array2::from_shape_fn((1, width), |_| 3.0 * rng.normal());
            x.row_mut(i).assign(&far.row(0));
        }
        x
    }

    /// Searched without a projection, the lists can only miss neighbours: each row's distance is
    /// at least the exact scan's. Where the rows gather around themes it is the exact one for 99%
    /// of them; in one cloud with hardly any themes (lists cut through it, 32 dimensions of
    /// noise) the distances are within 10% of the exact ones on average. The outliers are the
    /// exact scan's: far-away rows, where the themes make the others near one another.
    #[test]
    fn the_lists_find_the_nearest_rows() {
        for theme in [1.0, 0.3] {
            let mut z = photos(4000, 32, theme);
            near::normalise_rows(&mut z);
            let exact = near::scan(&z, 0.97, 5, |_| {}).unwrap();
            let l = lists(&z, 1);
            assert_eq!(l.members.iter().map(Vec::len).sum::<usize>(), 4000);
            let approx = search(&z, &l, 0.97, 5, 1000).unwrap();
            let same = exact
                .knn_distance
                .iter()
                .zip(&approx.knn_distance)
                .filter(|(e, a)| {
                    assert!(**a >= **e - 1e-5, "{a} nearer than exact {e}");
                    (**a - **e).abs() < 1e-5
                })
                .count();
            let excess: f32 = exact
                .knn_distance
                .iter()
                .zip(&approx.knn_distance)
                .map(|(e, a)| (a - e) / e.max(1e-3))
                .sum::<f32>()
                / 4000.0;
            if theme == 1.0 {
                assert!(same >= 3960, "{same} of 4000 rows exact");
            }
            assert!(excess < 0.1, "theme {theme}: distances {excess} over exact");
            let sorted = |d: &[f32]| {
                let mut o = near::far_out(d);
                o.sort();
                o
            };
            let out = sorted(&approx.knn_distance);
            assert!(out.iter().all(|i| [17, 1717, 3333].contains(i)), "{out:?}");
            assert!(theme < 1.0 || out.len() >= 2, "{out:?}");
            assert_eq!(out, sorted(&exact.knn_distance), "theme {theme}");
        }
    }

    /// Through the projection, the search finds at least 29 of the exact scan's 30-odd pairs over
    /// the threshold, estimates their cosines within 0.03, and the far-away rows are its outliers,
    /// as they are the exact scan's. Too many pairs stop it.
    #[test]
    fn projected_pairs_and_outliers_match_the_exact_scan() {
        let x = photos(4000, 96, 1.0);
        let exact = near::scan(&x, 0.97, 5, |_| {}).unwrap();
        assert!(exact.pairs.len() >= 30, "{}", exact.pairs.len());
        let z = Projection::new(96, 1).apply(x.view());
        let l = lists(&z, 1);
        let approx = search(&z, &l, 0.92, 5, 1000).unwrap();
        let hit = |e: &(usize, usize, f32)| approx.pairs.iter().find(|p| (p.0, p.1) == (e.0, e.1));
        let found = exact.pairs.iter().filter(|e| hit(e).is_some()).count();
        assert!(
            found + 1 >= exact.pairs.len(),
            "{found} of {}",
            exact.pairs.len()
        );
        for e in &exact.pairs {
            if let Some(a) = hit(e) {
                assert!((e.2 - a.2).abs() < 0.03, "{e:?} estimated {a:?}");
            }
        }
        let mut out = near::far_out(&approx.knn_distance);
        out.sort();
        assert_eq!(out, vec![17, 1717, 3333]);
        assert_eq!(near::far_out(&exact.knn_distance).len(), 3);
        assert!(search(&z, &l, -1.0, 5, 1000).is_err());
    }
}
