//! Training on a cache larger than memory: the `train` split is read in blocks of rows (one HDF5
//! hyperslab each; a float16 cache stays float16 on disk and becomes float32 block by block),
//! pooled block by block, and the next block is read on a thread while the current one trains.
//! Each epoch visits the blocks in a seeded order and shuffles the training rows inside each block,
//! so no step needs the whole split; the validation rows are held in memory.
//!
//! The memory budget (`train-head --memory`, default half of the machine's available memory)
//! decides: a split whose float32 rows fit stays in memory as before. With one block holding every
//! row, the streamed run draws the same shuffles as the in-memory one and gives the same weights (a
//! test checks it).

use ndarray::{Array1, Array2};

use super::fit::{
    class_weights, evaluate_rows, output_units, train_loop, Labels, Run, TrainConfig,
};
use super::history::{EpochRecord, History};
use super::net::{Network, Pool};
use crate::cache::FeatureCache;
use crate::error::{Error, Result};

/// When no budget is given and the machine does not say: 2 GiB.
const FALLBACK_BUDGET: u64 = 2 << 30;

/// Half of the memory the machine has available now (`MemAvailable` in `/proc/meminfo`).
pub fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(FALLBACK_BUDGET, |kb| kb * 1024 / 2)
}

/// `2G`, `512M`, `100K` (powers of 1024) or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last()? {
        (i, 'G' | 'g') => (&t[..i], 1u64 << 30),
        (i, 'M' | 'm') => (&t[..i], 1 << 20),
        (i, 'K' | 'k') => (&t[..i], 1 << 10),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v * mult as f64) as u64)
}

/// How a streamed run reads: rows per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub rows: usize,
}

impl Blocks {
    /// Blocks for `budget` bytes of rows `row_bytes` wide: two blocks (the one training and the one
    /// being read) and their pooled copies take at most a third of the budget; `given` overrides.
    pub fn for_budget(budget: u64, row_bytes: usize, given: Option<usize>) -> Blocks {
        let rows = given.unwrap_or_else(|| (budget / 6 / row_bytes.max(1) as u64) as usize);
        Blocks { rows: rows.max(1) }
    }
}

/// What the streamed run trains on: the cache, its pooling, the rows of `train` to train on
/// (sorted) and all of `train`'s labels, and the validation rows in memory.
pub struct Streamed<'a> {
    pub cache: &'a FeatureCache,
    pub pool: Pool,
    pub train: &'a [usize],
    pub labels: &'a [u32],
    pub classes: usize,
    pub val: Option<(&'a Array2<f32>, &'a [u32])>,
    pub blocks: Blocks,
    /// `(mean, std)`: each block becomes `(x - mean) / std` before it trains (`val` is given
    /// standardised already).
    pub standardize: Option<(&'a Array1<f32>, &'a Array1<f32>)>,
}

impl Streamed<'_> {
    /// Block `k` of `train`, pooled, read into `buf`: its first row and its rows.
    fn read(&self, k: usize, buf: Vec<f32>) -> Result<(usize, Array2<f32>)> {
        read_block(
            self.cache,
            self.pool,
            self.labels.len(),
            self.blocks,
            k,
            buf,
        )
    }
}

/// Block `k` of the `n` rows of `cache`'s `train` split, pooled: its first row and its rows. The
/// rows are read into `buf` (a flattened block keeps it: hand it back for the next block).
pub fn read_block(
    cache: &FeatureCache,
    pool: Pool,
    n: usize,
    blocks: Blocks,
    k: usize,
    buf: Vec<f32>,
) -> Result<(usize, Array2<f32>)> {
    let start = k * blocks.rows;
    let count = blocks.rows.min(n.saturating_sub(start));
    let meta = &cache.meta;
    let mut raw = buf;
    cache.read_rows_into("train", start, count, &mut raw)?;
    let x = pool.apply(raw, count, &meta.feature_shape, &meta.layout)?;
    Ok((start, x))
}

/// Trains a new network from `cfg` on `s`, streaming `train` block by block; `on_epoch` sees each
/// history row.
pub fn fit_streamed(
    cfg: &TrainConfig,
    s: &Streamed,
    on_epoch: impl FnMut(&EpochRecord),
) -> Result<(Network, History)> {
    let has_val = s.val.is_some_and(|(_, y)| !y.is_empty());
    cfg.validate(has_val)?;
    if s.train.is_empty() {
        return Err(Error::Config("no training rows".into()));
    }
    let meta = &s.cache.meta;
    let width = s.pool.output_dim(&meta.feature_shape, &meta.layout)?;
    let n = s.labels.len();
    let blocks = n.div_ceil(s.blocks.rows);
    // Each block's training rows, as indices into the block, kept from epoch to epoch (each
    // epoch shuffles the previous order, as the in-memory loop does).
    let mut orders: Vec<Vec<usize>> = vec![Vec::new(); blocks];
    for &i in s.train {
        orders[i / s.blocks.rows].push(i % s.blocks.rows);
    }
    let weights = cfg
        .balanced
        .then(|| class_weights(Labels::Classes(s.labels), s.train, s.classes));
    let rows = cfg.batch_size.min(s.train.len());
    let run = Run::new(cfg, width, output_units(s.classes), rows, weights);
    let mut block_order: Vec<usize> = (0..blocks).filter(|&k| !orders[k].is_empty()).collect();
    let val_idx: Vec<usize> = s.val.map_or(Vec::new(), |(_, y)| (0..y.len()).collect());
    train_loop(
        cfg,
        run,
        |run, epoch, rng| {
            rng.shuffle(&mut block_order);
            for &k in &block_order {
                rng.shuffle(&mut orders[k]);
            }
            let (mut loss, mut correct, mut seen) = (0f64, 0f64, 0usize);
            std::thread::scope(|scope| -> Result<()> {
                let read = |k: usize, buf: Vec<f32>| scope.spawn(move || s.read(k, buf));
                let mut next = block_order.first().map(|&k| read(k, Vec::new()));
                // The buffer of the block trained last, read into again: two buffers take turns.
                let mut spare = Vec::new();
                for (bi, &k) in block_order.iter().enumerate() {
                    let (start, mut x) = match next.take().map(|h| h.join()) {
                        Some(Ok(r)) => r?,
                        _ => return Err(Error::Config("the block reader stopped".into())),
                    };
                    if let Some((mean, std)) = s.standardize {
                        x -= mean;
                        x /= std;
                    }
                    next = block_order
                        .get(bi + 1)
                        .map(|&k2| read(k2, std::mem::take(&mut spare)));
                    let y = &s.labels[start..start + x.nrows()];
                    let (l, c) = run.epoch(&x, Labels::Classes(y), epoch, &orders[k])?;
                    loss += l;
                    correct += c;
                    seen += orders[k].len();
                    spare = x.into_raw_vec_and_offset().0;
                }
                Ok(())
            })?;
            Ok((loss, correct, seen))
        },
        |net| match s.val {
            Some((vx, vy)) if !vy.is_empty() => {
                let (l, a) = evaluate_rows(net, &cfg.loss, vx, Labels::Classes(vy), &val_idx);
                (Some(l), Some(a))
            }
            _ => (None, None),
        },
        on_epoch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_blocks() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5m"), Some(3 << 19));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "G", "-1G", "0", "x"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(Blocks::for_budget(6 << 20, 1024, None).rows, 1024);
        assert_eq!(Blocks::for_budget(10, 1024, None).rows, 1);
        assert_eq!(Blocks::for_budget(10, 1024, Some(7)).rows, 7);
        assert!(default_budget() > 0);
    }
}
