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
//!    by 5-fold cross-validation, beside the baseline: scikit-learn's `LogisticRegression()` (C = 1,
//!    L-BFGS, on the features as extracted). The baseline is kept unless a candidate's out-of-fold
//!    accuracy beats it by more than one standard error of the paired row-by-row differences
//!    ([`choose`]): on a few hundred rows the candidates' accuracies are nearly tied, and picking the
//!    lowest loss among ties chose the MLP and lost to the baseline on held-out photos.
//! 4. On larger data the candidates are scored on the validation rows; the highest validation
//!    accuracy wins, ties broken by the lower validation loss.
//! 5. The winner is trained again on train + validation (for its best epoch count).
//!
//! Augmented copies of the train images (`extract --augment flip`, split `train_flip`; `extract
//! --augment ... --copies K`, split `train_aug`) are added to the training rows when the cache has
//! them, never to validation rows. Everything is seeded:
//! the same data and seed give the same bytes.

use std::borrow::Cow;

use ndarray::{Array1, Array2, Axis};

use super::fit::{
    fit, predicted, EarlyStopping, History, Labels, Monitor, OptimizerKind, OptimizerSpec,
    Schedule, TrainConfig, TrainData,
};
use super::logistic::fit_logistic;
use super::loss::Loss;
use super::net::{parse_spec, Layer, LayerSpec, Network};
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

/// How a candidate is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    /// Minibatches of 32 with Adam and an L2 penalty in the gradient, early-stopped on the
    /// validation loss, on the centred and scaled features.
    Adam { lr: f64, weight_decay: f32 },
    /// scikit-learn's `LogisticRegression(C)` on the features as extracted: the objective
    /// `sum(loss) + |w|^2 / (2C)`, intercept unpenalised, L-BFGS from zero (linfa-logistic).
    Lbfgs { c: f64, max_iter: u64 },
}

impl Solver {
    fn describe(&self) -> String {
        match *self {
            Solver::Adam { lr, weight_decay } => format!("adam(lr={lr}, l2={weight_decay})"),
            Solver::Lbfgs { c, max_iter } => format!("lbfgs(C={c}, max_iter={max_iter})"),
        }
    }
}

/// One candidate head.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: &'static str,
    pub spec: &'static str,
    pub solver: Solver,
}

/// The reference candidate: scikit-learn's default logistic regression (C = 1, 100 iterations).
pub const BASELINE: &str = "logistic regression, C=1";

/// The candidate set, in report order: with `with_baseline`, first scikit-learn's
/// `LogisticRegression()`; then L2-regularised linear heads (three penalties) and one small MLP,
/// trained with Adam.
pub fn candidates(with_baseline: bool) -> Vec<Candidate> {
    let linear = |name, weight_decay| Candidate {
        name,
        spec: "none",
        solver: Solver::Adam {
            lr: 1e-3,
            weight_decay,
        },
    };
    let mut out = Vec::new();
    if with_baseline {
        out.push(Candidate {
            name: BASELINE,
            spec: "none",
            solver: Solver::Lbfgs {
                c: 1.0,
                max_iter: 100,
            },
        });
    }
    out.extend([
        linear("linear, L2 1e-3", 1e-3),
        linear("linear, L2 1e-2", 1e-2),
        linear("linear, L2 1e-1", 1e-1),
        Candidate {
            name: "mlp 256, dropout 0.5",
            spec: "dense:256:relu,dropout:0.5",
            solver: Solver::Adam {
                lr: 1e-4,
                weight_decay: 1e-3,
            },
        },
    ]);
    out
}

/// The rows `auto` works on: train (and its mirrored copies) and validation, already pooled.
pub struct AutoData<'a> {
    /// The rows (`train` indexes them). Given owned, the pool is built in its memory: the train
    /// rows are moved up in place (`train` must then be sorted and `val` must not point into it),
    /// so the rows are held once, not twice.
    pub x: Cow<'a, Array2<f32>>,
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
    /// Why the chosen candidate won, in words.
    pub reason: String,
    pub refit_rows: usize,
    pub augmented_rows: usize,
}

impl AutoReport {
    /// The choice as JSON, for the head file and the report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "recipe": "auto",
            "standardize": match self.scored[self.chosen].candidate.solver {
                Solver::Adam { .. } => "centred, divided by the root mean variance; folded into the first dense layer",
                Solver::Lbfgs { .. } => "none (the features as extracted)",
            },
            "scoring": self.scoring,
            "candidates": self.scored.iter().map(|s| serde_json::json!({
                "name": s.candidate.name,
                "layers": s.candidate.spec,
                "optimizer": s.candidate.solver.describe(),
                "val_loss": s.val_loss,
                "val_accuracy": s.val_accuracy,
                "epochs": s.epochs,
            })).collect::<Vec<_>>(),
            "chosen": self.scored[self.chosen].candidate.name,
            "reason": self.reason,
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
    /// Built in one allocation, row by row (selecting the parts and joining them held the data
    /// three times at once).
    fn new(src: Cow<Array2<f32>>, d: &AutoData) -> Pool {
        let n_train = d.train.len();
        let val_rows = d.val.map_or(0, |(_, _, rows)| rows.len());
        let total = n_train + val_rows + d.extra.len() * n_train;
        let cols = src.ncols();
        let sorted = d.train.windows(2).all(|w| w[0] < w[1]);
        let (mut x, mut at) = match src {
            Cow::Owned(owned) if sorted => (in_place(owned, d.train, total), n_train),
            src => {
                let mut x = Array2::<f32>::zeros((total, cols));
                let at = fill(&mut x, 0, &src, d.train);
                (x, at)
            }
        };
        let mut y: Vec<u32> = Vec::with_capacity(total);
        y.extend(d.train.iter().map(|&i| d.y[i]));
        if let Some((vx, vy, rows)) = d.val {
            at = fill(&mut x, at, vx, rows);
            y.extend(rows.iter().map(|&i| vy[i]));
        }
        let n = y.len();
        for e in d.extra {
            at = fill(&mut x, at, e, d.train);
            y.extend(d.train.iter().map(|&i| d.y[i]));
        }
        debug_assert_eq!(at, total);
        let (mean, std) = standardize(&mut x, n);
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
                let (t, v) = super::fit::stratified_split(&self.y[..self.n], 0.2, seed);
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

/// Centres and scales `x` by the statistics of its first `n` rows (the real rows, train +
/// validation), in f64: each feature is centred, and all are divided by one scale (the root mean
/// variance), which keeps the features' relative sizes: on small data, dividing each by its own
/// noisy deviation lifted noise features. Returns (mean, std) for [`fold_standardization`].
/// Copies `rows` of `src` into `x` from row `at` on; returns the row after the last written.
/// `x`'s rows `train` (sorted) moved up to rows `0..train.len()` in its own memory, then grown to
/// `total` rows (zeros after the train rows; growing a large buffer remaps its pages, no copy).
fn in_place(x: Array2<f32>, train: &[usize], total: usize) -> Array2<f32> {
    let cols = x.ncols();
    // (`as_standard_layout().into_owned()` would copy even a standard array.)
    let x = if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    };
    let (mut v, offset) = x.into_raw_vec_and_offset();
    debug_assert!(offset.is_none_or(|o| o == 0));
    for (k, &i) in train.iter().enumerate() {
        // Sorted: row `i >= k` has not been overwritten yet.
        if i != k {
            v.copy_within(i * cols..(i + 1) * cols, k * cols);
        }
    }
    v.truncate(train.len() * cols);
    v.resize(total * cols, 0.0);
    Array2::from_shape_vec((total, cols), v).expect("total x cols values")
}

fn fill(x: &mut Array2<f32>, at: usize, src: &Array2<f32>, rows: &[usize]) -> usize {
    for (k, &i) in rows.iter().enumerate() {
        x.row_mut(at + k).assign(&src.row(i));
    }
    at + rows.len()
}

fn standardize(x: &mut Array2<f32>, n: usize) -> (Array1<f32>, Array1<f32>) {
    let cols = x.ncols();
    let mut mean = Array1::<f32>::zeros(cols);
    let mut total_var = 0f64;
    for j in 0..cols {
        let c = x.slice(ndarray::s![..n, j]);
        let m = c.iter().map(|&v| v as f64).sum::<f64>() / n.max(1) as f64;
        total_var += c.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n.max(1) as f64;
        mean[j] = m as f32;
    }
    let scale = (total_var / cols.max(1) as f64).sqrt();
    let scale = if scale > 1e-6 { scale as f32 } else { 1.0 };
    let std = Array1::<f32>::from_elem(cols, scale);
    *x -= &mean;
    *x /= &std;
    (mean, std)
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
    let Solver::Adam { lr, weight_decay } = c.solver else {
        return Err(Error::Config(format!(
            "auto: {} is not trained by Adam",
            c.name
        )));
    };
    let early = patience.is_some();
    Ok(TrainConfig {
        spec: parse_spec(c.spec)?,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr,
            weight_decay,
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

/// Out-of-fold results of one candidate: its scores, and whether each validation row (all folds,
/// in fold order) was classified correctly.
fn cross_validate(
    c: &Candidate,
    pool: &Pool,
    raw: &Array2<f32>,
    folds: &[Fold],
    d: &AutoData,
    (max_epochs, patience): (usize, usize),
) -> Result<(Scored, Vec<bool>)> {
    let ce = Loss::CrossEntropy { smoothing: 0.0 };
    let (mut loss, mut acc, mut epochs) = (0.0, 0.0, 0.0);
    let mut correct = Vec::new();
    for (train, val) in folds {
        let train = pool.with_copies(train);
        let (net, x, kept) = match c.solver {
            Solver::Lbfgs { c, max_iter } => (
                fit_logistic(raw, &pool.y, &train, d.classes, c, max_iter)?,
                raw,
                1,
            ),
            Solver::Adam { .. } => {
                let tc = config(c, d.seed, d.threads, max_epochs, Some(patience))?;
                let data = TrainData {
                    x: &pool.x,
                    y: Labels::Classes(&pool.y),
                    train,
                    val: Some((&pool.x, Labels::Classes(&pool.y), val.clone())),
                    classes: d.classes,
                };
                let (net, h) = fit(&tc, &data, |_| {})?;
                (net, &pool.x, h.kept_epoch)
            }
        };
        // One pass over the validation rows gives the loss and each row's verdict.
        let z = net.logits(&x.select(Axis(0), val));
        let vy: Vec<u32> = val.iter().map(|&i| pool.y[i]).collect();
        let right: Vec<bool> = predicted(&z).iter().zip(&vy).map(|(p, t)| p == t).collect();
        loss += ce.compute(&z, &vy, None).0 as f64;
        acc += right.iter().filter(|&&r| r).count() as f64 / val.len().max(1) as f64;
        epochs += kept as f64;
        correct.extend(right);
    }
    let k = folds.len() as f64;
    let s = Scored {
        candidate: c.clone(),
        val_loss: loss / k,
        val_accuracy: acc / k,
        epochs: ((epochs / k).round() as usize).max(1),
    };
    Ok((s, correct))
}

/// The winner and why. With a baseline (scikit-learn's default logistic regression), another
/// candidate replaces it only when its out-of-fold accuracy is higher by more than one standard error
/// of the paired row-by-row differences (so a gain the validation rows cannot tell from chance
/// does not move the default); among those, the highest accuracy, then the lowest loss. Without
/// one, the highest accuracy; within half a validation row of it, the lowest loss.
pub fn choose(
    scored: &[Scored],
    correct: &[Vec<bool>],
    baseline: Option<usize>,
) -> (usize, String) {
    let rows = correct.first().map_or(0, Vec::len).max(1) as f64;
    let best_of = |pool: Vec<usize>, slack: f64| {
        let top = pool
            .iter()
            .map(|&i| scored[i].val_accuracy)
            .fold(0.0, f64::max);
        pool.into_iter()
            .filter(|&i| scored[i].val_accuracy >= top - slack)
            .min_by(|&a, &b| scored[a].val_loss.total_cmp(&scored[b].val_loss))
    };
    let Some(b) = baseline else {
        let all = (0..scored.len()).collect();
        let i = best_of(all, 0.5 / rows).unwrap_or(0);
        return (i, "highest validation accuracy, then lowest loss".into());
    };
    let gain = |i: usize| {
        let d: Vec<f64> = correct[i]
            .iter()
            .zip(&correct[b])
            .map(|(&c, &r)| c as i32 as f64 - r as i32 as f64)
            .collect();
        let mean = d.iter().sum::<f64>() / rows;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (rows - 1.0).max(1.0);
        (mean, (var / rows).sqrt())
    };
    let better: Vec<usize> = (0..scored.len())
        .filter(|&i| i != b && gain(i).0 > gain(i).1 + 1e-12)
        .collect();
    match best_of(better, 0.0) {
        Some(i) => {
            let (g, se) = gain(i);
            let why = format!(
                "validation accuracy {:+.4} over {} (standard error {se:.4})",
                g, scored[b].candidate.name
            );
            (i, why)
        }
        None => (
            b,
            "no candidate beat it by more than one standard error of validation accuracy".into(),
        ),
    }
}

/// Chooses, refits and returns the head (standardisation folded in), its refit history and why.
pub fn auto(
    mut d: AutoData,
    rep: &dyn Reporter,
) -> Result<(Network, History, AutoReport, Vec<LayerSpec>)> {
    let (pool, raw, mut report) = score_candidates(&mut d, rep)?;
    let d = &d;
    let best = &report.scored[report.chosen];
    let rows = pool.with_copies(&(0..pool.n).collect::<Vec<_>>());
    rep.report(Event::Line(&format!(
        "auto: chose {} ({}); refit on {} rows (train + validation{}){}",
        best.candidate.name,
        report.reason,
        rows.len(),
        if pool.copies > 0 { " + augmented" } else { "" },
        match best.candidate.solver {
            Solver::Adam { .. } => format!(" for {} epochs", best.epochs),
            Solver::Lbfgs { .. } => String::new(),
        }
    )));
    let (net, history, spec) = refit(&best.candidate, best.epochs, &pool, &raw, &rows, d)?;
    report.refit_rows = rows.len();
    Ok((net, history, report, spec))
}

/// Every candidate scored on `d`: the standardised pool they were trained on, the features as
/// extracted (for the baseline; empty without it) and the choice (`refit_rows` still 0).
fn score_candidates(
    d: &mut AutoData,
    rep: &dyn Reporter,
) -> Result<(Pool, Array2<f32>, AutoReport)> {
    let pool = Pool::new(std::mem::take(&mut d.x), d);
    let d = &*d;
    let (folds, scoring) = pool.folds(d.seed);
    let say = |s: String| rep.report(Event::Line(&s));
    let fold_rows = pool.with_copies(&folds[0].0).len();
    let wide = fold_rows * pool.x.ncols() > WIDE_VALUES;
    let cands = candidates(folds.len() > 1 && !wide);
    say(format!(
        "auto: {} rows x {} features; {} candidates scored by {scoring}{}",
        pool.n,
        pool.x.ncols(),
        cands.len(),
        if pool.copies > 0 {
            format!(" (+ {} augmented train rows)", pool.copies * pool.n_train)
        } else {
            String::new()
        }
    ));
    // The features as extracted, for the baseline (the pool holds them centred and scaled).
    let raw = if cands[0].name != BASELINE {
        Array2::zeros((0, 0))
    } else {
        &pool.x * &pool.std + &pool.mean
    };
    let sched = schedule(fold_rows, pool.x.ncols());
    let (mut scored, mut correct) = (Vec::new(), Vec::new());
    for c in &cands {
        let (s, ok) = match cross_validate(c, &pool, &raw, &folds, d, sched) {
            Ok(r) => r,
            // The baseline is a reference, not a requirement: a solver failure leaves it out.
            Err(e) if c.name == BASELINE => {
                say(format!("  {:<26} left out: {e}", c.name));
                continue;
            }
            Err(e) => return Err(e),
        };
        say(format!(
            "  {:<26} val_loss {:.4}  val_accuracy {:.4}  {}",
            s.candidate.name,
            s.val_loss,
            s.val_accuracy,
            match c.solver {
                Solver::Adam { .. } => format!("best epoch {}", s.epochs),
                Solver::Lbfgs { .. } => "L-BFGS, scikit-learn's stop".into(),
            }
        ));
        scored.push(s);
        correct.push(ok);
    }
    let baseline = scored.iter().position(|s| s.candidate.name == BASELINE);
    let (chosen, reason) = choose(&scored, &correct, baseline);
    let report = AutoReport {
        scored,
        chosen,
        scoring,
        reason,
        refit_rows: 0,
        augmented_rows: pool.copies * pool.n_train,
    };
    Ok((pool, raw, report))
}

/// Trains the chosen candidate on `rows` (train + validation): the network on the features as
/// extracted, its history and its hidden layers.
fn refit(
    c: &Candidate,
    epochs: usize,
    pool: &Pool,
    raw: &Array2<f32>,
    rows: &[usize],
    d: &AutoData,
) -> Result<(Network, History, Vec<LayerSpec>)> {
    if let Solver::Lbfgs { c, max_iter } = c.solver {
        let t = std::time::Instant::now();
        let net = fit_logistic(raw, &pool.y, rows, d.classes, c, max_iter)?;
        let labels = Labels::Classes(&pool.y);
        let history = History::single(&net, (raw, labels, rows), None, t.elapsed().as_secs_f64());
        return Ok((net, history, Vec::new()));
    }
    let tc = config(c, d.seed, d.threads, epochs, None)?;
    let data = TrainData {
        x: &pool.x,
        y: Labels::Classes(&pool.y),
        train: rows.to_vec(),
        val: None,
        classes: d.classes,
    };
    let (mut net, history) = fit(&tc, &data, |_| {})?;
    fold_standardization(&mut net, &pool.mean, &pool.std)?;
    Ok((net, history, tc.spec))
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

mod scale;
mod tags;
pub use scale::{auto_at_scale, ScaledFit, SUBSAMPLE_ROWS};
pub use tags::{auto_tags, TagData};

#[cfg(test)]
mod tests;
