//! Training on a cache larger than memory: the `train` split is read in blocks of rows (chunk by
//! chunk; a float16 cache stays float16 on disk and becomes float32 block by block), pooled block
//! by block, and the next block is read on a thread while the current one trains. Each epoch deals
//! a seeded permutation of the split's chunks into blocks and shuffles the training rows inside
//! each block, so no step needs the whole split and no block holds one class only (caches are
//! written class by class); the validation rows are held in memory.
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
/// (sorted) and all of `train`'s labels (classes, or a multi-label cache's targets), and the
/// validation rows in memory.
pub struct Streamed<'a> {
    pub cache: &'a FeatureCache,
    pub pool: Pool,
    pub train: &'a [usize],
    pub labels: Labels<'a>,
    pub classes: usize,
    pub val: Option<(&'a Array2<f32>, Labels<'a>)>,
    pub blocks: Blocks,
    /// `(mean, std)`: each block becomes `(x - mean) / std` before it trains (`val` is given
    /// standardised already).
    pub standardize: Option<(&'a Array1<f32>, &'a Array1<f32>)>,
}

impl Streamed<'_> {
    /// The rows of `units` (runs of `unit` rows of `train`, in this order), pooled, read into
    /// `buf`.
    fn read_units(&self, units: &[usize], unit: usize, buf: Vec<f32>) -> Result<Array2<f32>> {
        let n = self.labels.len();
        let meta = &self.cache.meta;
        let runs: Vec<(usize, usize)> = units
            .iter()
            .map(|&u| (u * unit, unit.min(n - u * unit)))
            .collect();
        let count = runs.iter().map(|r| r.1).sum();
        let mut raw = buf;
        self.cache.read_runs_into("train", &runs, &mut raw)?;
        self.pool
            .apply(raw, count, &meta.feature_shape, &meta.layout)
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

/// One epoch's blocks: runs of rows (units) of the train split, and which rows of a block train.
struct Epoch {
    /// Each block's units, in reading order.
    blocks: Vec<Vec<usize>>,
    /// Each block's training rows (indices into the block, in training order) and all its rows
    /// (indices into the split, in block order).
    rows: Vec<(Vec<usize>, Vec<usize>)>,
}

/// One epoch of a split over several blocks: `units` (runs of `unit` rows holding a training row)
/// in a seeded order, dealt `per_block` to a block; each block's training rows shuffled.
fn deal(
    units: &[usize],
    (unit, per_block): (usize, usize),
    is_train: &[bool],
    rng: &mut crate::util::rng::Rng,
) -> Epoch {
    let n = is_train.len();
    let mut order = units.to_vec();
    rng.shuffle(&mut order);
    let blocks: Vec<Vec<usize>> = order.chunks(per_block).map(<[usize]>::to_vec).collect();
    let rows = blocks
        .iter()
        .map(|b| {
            let (mut train, mut block_rows) = (Vec::new(), Vec::new());
            for &u in b {
                let end = n.min((u + 1) * unit);
                for (i, &t) in is_train.iter().enumerate().take(end).skip(u * unit) {
                    if t {
                        train.push(block_rows.len());
                    }
                    block_rows.push(i);
                }
            }
            rng.shuffle(&mut train);
            (train, block_rows)
        })
        .collect();
    Epoch { blocks, rows }
}

/// Trains a new network from `cfg` on `s`, streaming `train` block by block; `on_epoch` sees each
/// history row.
///
/// When the split fits one block, the block holds it in file order and each epoch shuffles the
/// previous order of its training rows (what the in-memory loop does, with the same draws). Else
/// the split is cut into units of one chunk (1 MiB of rows; smaller when a block holds fewer than
/// 16 chunks) and each epoch deals a seeded
/// permutation of the units into blocks, then shuffles the rows inside each block: every block
/// mixes rows from all over the file, so a cache written class by class (as `extract` writes
/// one) does not train one class at a time.
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
    // At least 16 units a block, so that each block mixes rows from 16 places at the least.
    let unit = crate::cache::chunk_rows(meta.dtype, &meta.feature_shape, n)
        .min(s.blocks.rows / 16)
        .max(1);
    let per_block = (s.blocks.rows / unit).max(1);
    let n_units = n.div_ceil(unit);
    let single = n <= s.blocks.rows;
    let mut is_train = vec![false; n];
    for &i in s.train {
        is_train[i] = true;
    }
    // Units with a training row (a unit of validation rows only is never read).
    let units: Vec<usize> = (0..n_units)
        .filter(|&u| (u * unit..n.min((u + 1) * unit)).any(|i| is_train[i]))
        .collect();
    // One block: its training rows kept from epoch to epoch, as the in-memory loop keeps them.
    let mut kept: Vec<usize> = if single { s.train.to_vec() } else { Vec::new() };
    let weights = cfg
        .balanced
        .then(|| class_weights(s.labels, s.train, s.classes));
    let rows = cfg.batch_size.min(s.train.len());
    let outputs = match s.labels {
        Labels::Tags(_) => s.classes,
        Labels::Classes(_) => output_units(s.classes),
    };
    crate::head::net::check_size(width, &cfg.spec, outputs)?;
    let run = Run::new(cfg, width, outputs, rows, weights);
    let val_idx: Vec<usize> = s.val.map_or(Vec::new(), |(_, y)| (0..y.len()).collect());
    let mut plan = |rng: &mut crate::util::rng::Rng| -> Epoch {
        if single {
            rng.shuffle(&mut kept);
            return Epoch {
                blocks: vec![(0..n_units).collect()],
                rows: vec![(kept.clone(), (0..n).collect())],
            };
        }
        deal(&units, (unit, per_block), &is_train, rng)
    };
    train_loop(
        cfg,
        run,
        |run, epoch, rng| {
            let e = plan(rng);
            let (mut loss, mut correct, mut seen) = (0f64, 0f64, 0usize);
            std::thread::scope(|scope| -> Result<()> {
                let read = |k: usize, buf: Vec<f32>| {
                    let units = &e.blocks[k];
                    scope.spawn(move || s.read_units(units, unit, buf))
                };
                let mut next = Some(read(0, Vec::new()));
                // The buffer of the block trained last, read into again: two buffers take turns.
                let mut spare = Vec::new();
                for (k, (train, ids)) in e.rows.iter().enumerate() {
                    let mut x = match next.take().map(|h| h.join()) {
                        Some(Ok(r)) => r?,
                        _ => return Err(Error::Config("the block reader stopped".into())),
                    };
                    if k + 1 < e.blocks.len() {
                        next = Some(read(k + 1, std::mem::take(&mut spare)));
                    }
                    if let Some((mean, std)) = s.standardize {
                        x -= mean;
                        x /= std;
                    }
                    let block = s.labels.batch(ids);
                    let (l, c) = run.epoch(&x, block.labels(), epoch, train)?;
                    loss += l;
                    correct += c;
                    seen += train.len();
                    spare = x.into_raw_vec_and_offset().0;
                }
                Ok(())
            })?;
            Ok((loss, correct, seen))
        },
        |net| match s.val {
            Some((vx, vy)) if !vy.is_empty() => {
                let (l, a) = evaluate_rows(net, &cfg.loss, vx, vy, &val_idx);
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

    /// A split written class by class (as `extract` writes one): every block of an epoch mixes
    /// both classes, every training row trains once an epoch and no validation row does, and two
    /// epochs deal differently.
    #[test]
    fn blocks_mix_a_split_written_class_by_class() {
        let n = 1000;
        let labels: Vec<u32> = (0..n).map(|i| u32::from(i >= n / 2)).collect();
        let is_train: Vec<bool> = (0..n).map(|i| i % 10 != 3).collect();
        let (unit, per_block) = (10, 16);
        let units: Vec<usize> = (0..n / unit).collect();
        let mut rng = crate::util::rng::Rng(5);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let e = deal(&units, (unit, per_block), &is_train, &mut rng);
            assert_eq!(e.blocks.len(), (n / unit).div_ceil(per_block));
            let mut rows = Vec::new();
            for (b, (train, ids)) in e.blocks.iter().zip(&e.rows) {
                let y: Vec<u32> = ids.iter().map(|&i| labels[i]).collect();
                assert!(y.contains(&0) && y.contains(&1), "one class in {b:?}");
                let global: Vec<usize> = b.iter().flat_map(|&u| u * unit..(u + 1) * unit).collect();
                assert_eq!(*ids, global);
                rows.extend(train.iter().map(|&k| global[k]));
            }
            let mut sorted = rows.clone();
            sorted.sort_unstable();
            let want: Vec<usize> = (0..n).filter(|&i| is_train[i]).collect();
            assert_eq!(sorted, want);
            seen.push(rows);
        }
        assert_ne!(seen[0], seen[1]);
    }
}
