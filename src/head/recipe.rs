//! `train-head --recipe auto` (the default): a head chosen for the data at hand instead of the seed's
//! fixed one.
//!
//! 1. Features are centred and scaled by one factor (the root mean variance of the training rows),
//!    which makes one learning rate and one weight decay fit any base while keeping the features'
//!    relative sizes; the scaling is folded into the first dense
//!    layer at the end, so the head file, `evaluate`, `score` and `export` see an ordinary network.
//! 2. A small candidate set is trained with Adam and early stopping on the validation loss (best
//!    epoch restored): three linear heads (softmax/logistic regression with L2 penalties 1e-3, 1e-2,
//!    1e-1) and one MLP (Dense 256 ReLU, Dropout 0.5).
//! 3. On small data (at most [`KFOLD_MAX_ROWS`] rows of train + validation) each candidate is scored
//!    by 5-fold cross-validation, else on the validation rows; the highest validation accuracy wins,
//!    ties broken by the lower validation loss.
//! 4. The winner is trained again on train + validation for its best epoch count.
//!
//! Augmented copies of the train images (`extract --augment flip`, split `train_flip`; `extract
//! --augment ... --copies K`, split `train_aug`) are added to the training rows when the cache has
//! them, never to validation rows. Everything is seeded:
//! the same data and seed give the same bytes.

use ndarray::{concatenate, Array1, Array2, Axis};

use super::net::{parse_spec, Layer, LayerSpec, Network};
use super::train::{
    fit, EarlyStopping, History, Monitor, OptimizerKind, OptimizerSpec, Schedule, TrainConfig,
    TrainData,
};
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::rng::Rng;

/// Up to this many rows (train + validation), candidates are scored by k-fold cross-validation.
pub const KFOLD_MAX_ROWS: usize = 1000;
const FOLDS: usize = 5;
const MAX_EPOCHS: usize = 40;
const BATCH: usize = 32;
/// Fewest optimizer steps a candidate may stop training at the epoch limit with (tiny data).
const MIN_STEPS: usize = 600;
/// Patience of the early stop, in optimizer steps (at least [`PATIENCE`] epochs).
const PATIENCE_STEPS: usize = 60;
/// Above this many feature values (rows x features, e.g. 2000 x 4096), candidates get at most
/// [`WIDE_MAX_EPOCHS`]: VGG-16's flattened 25,088 features make every epoch of the MLP cost seconds.
const WIDE_VALUES: usize = 2000 * 4096;
const WIDE_MAX_EPOCHS: usize = 20;
const PATIENCE: usize = 6;

/// One candidate head.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: &'static str,
    pub spec: &'static str,
    pub lr: f64,
    pub weight_decay: f32,
}

/// The candidate set, in report order: L2-regularised linear heads (logistic / softmax regression
/// with three penalties) and one small MLP, all with Adam and an L2 penalty in the gradient.
pub fn candidates() -> Vec<Candidate> {
    let linear = |name, weight_decay| Candidate {
        name,
        spec: "none",
        lr: 1e-3,
        weight_decay,
    };
    vec![
        linear("linear, L2 1e-3", 1e-3),
        linear("linear, L2 1e-2", 1e-2),
        linear("linear, L2 1e-1", 1e-1),
        Candidate {
            name: "mlp 256, dropout 0.5",
            spec: "dense:256:relu,dropout:0.5",
            lr: 1e-4,
            weight_decay: 1e-3,
        },
    ]
}

/// The rows `auto` works on: train (and its mirrored copies) and validation, already pooled.
pub struct AutoData<'a> {
    pub x: &'a Array2<f32>,
    pub y: &'a [u32],
    pub train: &'a [usize],
    /// Validation rows: the matrix they are in, its labels, and the rows.
    pub val: Option<(&'a Array2<f32>, &'a [u32], &'a [usize])>,
    /// Augmented copies of `x`'s rows, each in `x`'s order (`train_flip`, and each copy of
    /// `train_aug`).
    pub extra: &'a [Array2<f32>],
    pub classes: usize,
    pub seed: u64,
    pub threads: usize,
}

/// How one candidate scored.
#[derive(Debug, Clone)]
pub struct Scored {
    pub candidate: Candidate,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Mean best epoch over the folds.
    pub epochs: usize,
}

/// What `auto` chose and why.
#[derive(Debug, Clone)]
pub struct AutoReport {
    pub scored: Vec<Scored>,
    pub chosen: usize,
    pub scoring: String,
    pub refit_rows: usize,
    pub augmented_rows: usize,
}

impl AutoReport {
    /// The choice as JSON, for the head file and the report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "recipe": "auto",
            "standardize": "centred, divided by the root mean variance; folded into the first dense layer",
            "scoring": self.scoring,
            "candidates": self.scored.iter().map(|s| serde_json::json!({
                "name": s.candidate.name,
                "layers": s.candidate.spec,
                "optimizer": format!("adam(lr={}, l2={})", s.candidate.lr, s.candidate.weight_decay),
                "val_loss": s.val_loss,
                "val_accuracy": s.val_accuracy,
                "epochs": s.epochs,
            })).collect::<Vec<_>>(),
            "chosen": self.scored[self.chosen].candidate.name,
            "refit_rows": self.refit_rows,
            "augmented_rows": self.augmented_rows,
        })
    }
}

/// One fold: (rows to train on, rows to validate on), indices into the pool.
type Fold = (Vec<usize>, Vec<usize>);

/// The pool: train rows then validation rows (then mirrored train rows), centred and scaled.
struct Pool {
    x: Array2<f32>,
    y: Vec<u32>,
    /// Rows of `x` that are train + validation (the rest are mirrored copies).
    n: usize,
    /// Rows from the train split (the first `n_train`); copy `k` of row `i` is at
    /// `n + k * n_train + i`.
    n_train: usize,
    /// How many augmented copies of each train row.
    copies: usize,
    /// Validation rows as given (indices into the pool), for large data.
    given_val: Vec<usize>,
    mean: Array1<f32>,
    std: Array1<f32>,
}

impl Pool {
    fn new(d: &AutoData) -> Pool {
        let tx = d.x.select(Axis(0), d.train);
        let mut y: Vec<u32> = d.train.iter().map(|&i| d.y[i]).collect();
        let n_train = tx.nrows();
        let mut parts = vec![tx];
        if let Some((vx, vy, rows)) = d.val {
            parts.push(vx.select(Axis(0), rows));
            y.extend(rows.iter().map(|&i| vy[i]));
        }
        let n = y.len();
        for e in d.extra {
            parts.push(e.select(Axis(0), d.train));
            y.extend(d.train.iter().map(|&i| d.y[i]));
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let mut x = concatenate(Axis(0), &views).expect("same width");
        // Statistics of the real rows (train + validation), in f64: each feature is centred, and all
        // are divided by one scale (the root mean variance), which keeps the features' relative
        // sizes: on small data, dividing each by its own noisy deviation lifted noise features.
        let cols = x.ncols();
        let mut mean = Array1::<f32>::zeros(cols);
        let mut total_var = 0f64;
        for j in 0..cols {
            let c = x.slice(ndarray::s![..n, j]);
            let m = c.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            total_var += c.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
            mean[j] = m as f32;
        }
        let scale = (total_var / cols.max(1) as f64).sqrt();
        let scale = if scale > 1e-6 { scale as f32 } else { 1.0 };
        let std = Array1::<f32>::from_elem(cols, scale);
        x -= &mean;
        x /= &std;
        Pool {
            x,
            y,
            n,
            n_train,
            copies: d.extra.len(),
            given_val: (n_train..n).collect(),
            mean,
            std,
        }
    }

    /// `rows` plus the augmented copies of those from the train split.
    fn with_copies(&self, rows: &[usize]) -> Vec<usize> {
        let mut out = rows.to_vec();
        for k in 0..self.copies {
            let base = self.n + k * self.n_train;
            out.extend(
                rows.iter()
                    .filter(|&&i| i < self.n_train)
                    .map(|&i| base + i),
            );
        }
        out
    }

    /// (train rows, validation rows) of each fold, and how they were made.
    fn folds(&self, seed: u64) -> (Vec<Fold>, String) {
        if self.n > KFOLD_MAX_ROWS || self.n < 2 * FOLDS {
            let val = if self.given_val.is_empty() {
                let (t, v) = super::train::stratified_split(&self.y[..self.n], 0.2, seed);
                if v.is_empty() || t.is_empty() {
                    let all: Vec<usize> = (0..self.n).collect();
                    return (
                        vec![(all.clone(), all)],
                        "the training rows (too few rows to hold any out)".into(),
                    );
                }
                return (vec![(t, v)], "20% of train held out".into());
            } else {
                self.given_val.clone()
            };
            let train = (0..self.n).filter(|i| !val.contains(i)).collect();
            return (vec![(train, val)], "the validation rows".into());
        }
        // Stratified folds: each class shuffled and dealt round-robin.
        let mut fold_of = vec![0usize; self.n];
        let mut rng = Rng(seed ^ 0xf01d);
        let classes = self.y[..self.n]
            .iter()
            .map(|&c| c as usize + 1)
            .max()
            .unwrap_or(0);
        let mut next = 0;
        for c in 0..classes {
            let mut idx: Vec<usize> = (0..self.n).filter(|&i| self.y[i] as usize == c).collect();
            rng.shuffle(&mut idx);
            for i in idx {
                fold_of[i] = next % FOLDS;
                next += 1;
            }
        }
        let folds = (0..FOLDS)
            .map(|k| {
                let (v, t): (Vec<usize>, Vec<usize>) = (0..self.n).partition(|&i| fold_of[i] == k);
                (t, v)
            })
            .collect();
        (folds, format!("{FOLDS}-fold cross-validation"))
    }
}

/// Training length: (most epochs, patience in epochs). Tiny data gets more epochs, so every candidate
/// sees at least [`MIN_STEPS`] optimizer steps (and [`PATIENCE_STEPS`] steps of patience); wide data
/// fewer (see [`WIDE_VALUES`]).
fn schedule(rows: usize, features: usize) -> (usize, usize) {
    if rows * features > WIDE_VALUES {
        return (WIDE_MAX_EPOCHS, PATIENCE);
    }
    let steps = rows.div_ceil(BATCH).max(1);
    (
        MIN_STEPS.div_ceil(steps).clamp(MAX_EPOCHS, 400),
        PATIENCE_STEPS.div_ceil(steps).max(PATIENCE),
    )
}

fn config(
    c: &Candidate,
    seed: u64,
    threads: usize,
    epochs: usize,
    patience: Option<usize>,
) -> Result<TrainConfig> {
    let early = patience.is_some();
    Ok(TrainConfig {
        spec: parse_spec(c.spec)?,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr: c.lr,
            weight_decay: c.weight_decay,
        },
        schedule: Schedule::Constant,
        epochs,
        batch_size: BATCH,
        seed,
        monitor: if early {
            Monitor::ValLoss
        } else {
            Monitor::Loss
        },
        early_stopping: patience.map(|patience| EarlyStopping {
            patience,
            min_delta: 0.0,
        }),
        restore_best: early,
        threads,
        ..TrainConfig::default()
    })
}

/// Chooses, refits and returns the head (standardisation folded in), its refit history and why.
pub fn auto(
    d: &AutoData,
    rep: &dyn Reporter,
) -> Result<(Network, History, AutoReport, Vec<LayerSpec>)> {
    let pool = Pool::new(d);
    let (folds, scoring) = pool.folds(d.seed);
    let say = |s: String| rep.report(Event::Line(&s));
    say(format!(
        "auto: {} rows x {} features, centred and scaled; {} candidates scored by {scoring}{}",
        pool.n,
        pool.x.ncols(),
        candidates().len(),
        if pool.copies > 0 {
            format!(" (+ {} augmented train rows)", pool.copies * pool.n_train)
        } else {
            String::new()
        }
    ));
    let fold_rows = pool.with_copies(&folds[0].0).len();
    let (max_epochs, patience) = schedule(fold_rows, pool.x.ncols());
    let mut scored = Vec::new();
    for c in candidates() {
        let tc = config(&c, d.seed, d.threads, max_epochs, Some(patience))?;
        let (mut loss, mut acc, mut epochs) = (0.0, 0.0, 0.0);
        for (train, val) in &folds {
            let data = TrainData {
                x: &pool.x,
                y: &pool.y,
                train: pool.with_copies(train),
                val: Some((&pool.x, &pool.y, val.clone())),
                classes: d.classes,
            };
            let (_, h) = fit(&tc, &data, |_| {})?;
            let kept = &h.epochs[h.kept_epoch - 1];
            loss += kept.val_loss.unwrap_or(f64::INFINITY);
            acc += kept.val_accuracy.unwrap_or(0.0);
            epochs += h.kept_epoch as f64;
        }
        let k = folds.len() as f64;
        let s = Scored {
            candidate: c,
            val_loss: loss / k,
            val_accuracy: acc / k,
            epochs: ((epochs / k).round() as usize).max(1),
        };
        say(format!(
            "  {:<22} val_loss {:.4}  val_accuracy {:.4}  best epoch {}",
            s.candidate.name, s.val_loss, s.val_accuracy, s.epochs
        ));
        scored.push(s);
    }
    // The highest validation accuracy; within half a validation row of it, the lowest loss.
    let top = scored.iter().map(|s| s.val_accuracy).fold(0.0, f64::max);
    let slack = 0.5 / folds.iter().map(|f| f.1.len()).sum::<usize>().max(1) as f64;
    let chosen = (0..scored.len())
        .filter(|&i| scored[i].val_accuracy >= top - slack)
        .min_by(|&a, &b| scored[a].val_loss.total_cmp(&scored[b].val_loss))
        .ok_or_else(|| Error::Config("auto: no candidates".into()))?;
    let best = &scored[chosen];
    let rows = pool.with_copies(&(0..pool.n).collect::<Vec<_>>());
    say(format!(
        "auto: chose {} (highest validation accuracy, then lowest loss); refit on {} rows (train + validation{}) for {} epochs",
        best.candidate.name,
        rows.len(),
        if pool.copies > 0 { " + augmented" } else { "" },
        best.epochs
    ));
    let tc = config(&best.candidate, d.seed, d.threads, best.epochs, None)?;
    let (mut net, history) = fit(
        &tc,
        &TrainData {
            x: &pool.x,
            y: &pool.y,
            train: rows.clone(),
            val: None,
            classes: d.classes,
        },
        |_| {},
    )?;
    fold_standardization(&mut net, &pool.mean, &pool.std)?;
    let report = AutoReport {
        scored: scored.clone(),
        chosen,
        scoring,
        refit_rows: rows.len(),
        augmented_rows: pool.copies * pool.n_train,
    };
    Ok((net, history, report, tc.spec))
}

/// Folds `x -> (x - mean) / std` into the first dense layer: `W' = W / std` (per input row),
/// `b' = b - (mean / std) W`.
pub fn fold_standardization(
    net: &mut Network,
    mean: &Array1<f32>,
    std: &Array1<f32>,
) -> Result<()> {
    let Some(Layer::Dense(first)) = net.layers.iter_mut().find(|l| matches!(l, Layer::Dense(_)))
    else {
        return Err(Error::Config("auto: the head has no dense layer".into()));
    };
    for (mut row, &s) in first.w.outer_iter_mut().zip(std.iter()) {
        row /= s;
    }
    let shift = mean.dot(&first.w);
    first.b -= &shift;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::net::Dense;

    /// Tiny data trains for at least 600 steps, ordinary data for 40 epochs, wide data for 20.
    #[test]
    fn training_length_follows_rows_and_width() {
        assert_eq!(schedule(40, 1280), (300, 30));
        assert_eq!(schedule(1600, 1280), (MAX_EPOCHS, PATIENCE));
        assert_eq!(schedule(2000, 25088), (WIDE_MAX_EPOCHS, PATIENCE));
        assert_eq!(schedule(1, 8), (400, 60));
    }

    /// A network on standardised inputs and its folded version give the same logits.
    #[test]
    fn folded_standardisation_equals_standardising_the_input() {
        let mut rng = Rng(3);
        let (n, d, u) = (5, 4, 3);
        let x = Array2::from_shape_fn((n, d), |_| rng.normal() * 3.0 + 1.5);
        let mean = Array1::from_shape_fn(d, |_| rng.normal());
        let std = Array1::from_shape_fn(d, |_| 0.5 + rng.uniform() as f32);
        let dense = Dense {
            w: Array2::from_shape_fn((d, u), |_| rng.normal()),
            b: Array1::from_shape_fn(u, |_| rng.normal()),
        };
        let want = dense.apply(((&x - &mean) / &std).view());
        let mut net = Network {
            layers: vec![Layer::Dense(dense)],
        };
        fold_standardization(&mut net, &mean, &std).unwrap();
        let Layer::Dense(folded) = &net.layers[0] else {
            unreachable!()
        };
        let got = folded.apply(x.view());
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
