//! The training loop: stratified validation split, seeded shuffling, mini-batches, class weights,
//! gradient clipping, learning-rate schedules and early stopping with restore-best.
//! Same seed and data give bit-identical weights.

use crate::util::output::{Output, Replace};
use ndarray::{s, Array2, ArrayView2, Axis};
use std::io::Read;
use std::path::Path;

use super::loss::Loss;
use super::net::{Dense, Grads, Layer, LayerSpec, Network};
use super::optim::{Adam, Optimizer, RmsProp, Sgd};
use crate::error::{Error, Result};
use crate::head::kernels::wide::{fused_step, StepInputs, StepOutputs};
use crate::util::rng::Rng;

/// Which optimizer, with its learning rate and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    Sgd {
        momentum: f32,
        nesterov: bool,
        decay: f64,
    },
    Adam,
    AdamW,
    RmsProp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f32,
}

impl OptimizerSpec {
    pub fn build(&self) -> Box<dyn Optimizer> {
        match self.kind {
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                decay,
            } => Box::new(Sgd::new(
                self.lr,
                momentum,
                nesterov,
                decay,
                self.weight_decay,
            )),
            OptimizerKind::Adam => Box::new(Adam::new(self.lr, self.weight_decay, false)),
            OptimizerKind::AdamW => Box::new(Adam::new(self.lr, self.weight_decay, true)),
            OptimizerKind::RmsProp => Box::new(RmsProp::new(self.lr, self.weight_decay)),
        }
    }
    pub fn describe(&self) -> String {
        let wd = if self.weight_decay > 0.0 {
            format!(", weight_decay={}", self.weight_decay)
        } else {
            String::new()
        };
        match self.kind {
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                decay,
            } => format!(
                "sgd(lr={}, momentum={momentum}, nesterov={nesterov}, decay={decay}{wd})",
                self.lr
            ),
            OptimizerKind::Adam => format!("adam(lr={}{wd})", self.lr),
            OptimizerKind::AdamW => format!("adamw(lr={}{wd})", self.lr),
            OptimizerKind::RmsProp => format!("rmsprop(lr={}{wd})", self.lr),
        }
    }
}

/// Learning rate per epoch (SGD's `decay` applies per step on top).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
    /// Cosine from the base rate down to `min_lr` over the run.
    Cosine {
        min_lr: f64,
    },
}

impl Schedule {
    /// Rate for 0-based `epoch` of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { min_lr } => {
                let t = epoch as f64 / epochs.max(1) as f64;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Schedule::Constant => "constant".into(),
            Schedule::Step { every, gamma } => format!("step(every={every}, gamma={gamma})"),
            Schedule::Cosine { min_lr } => format!("cosine(min_lr={min_lr})"),
        }
    }
}

/// The quantity early stopping and restore-best watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
    Loss,
    Accuracy,
}

impl Monitor {
    pub fn parse(s: &str) -> Option<Monitor> {
        match s {
            "val_loss" => Some(Monitor::ValLoss),
            "val_accuracy" => Some(Monitor::ValAccuracy),
            "loss" => Some(Monitor::Loss),
            "accuracy" => Some(Monitor::Accuracy),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::Loss => "loss",
            Monitor::Accuracy => "accuracy",
        }
    }
    fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::ValAccuracy)
    }
    fn value(self, r: &EpochRecord) -> Option<f64> {
        match self {
            Monitor::ValLoss => r.val_loss,
            Monitor::ValAccuracy => r.val_accuracy,
            Monitor::Loss => Some(r.loss),
            Monitor::Accuracy => Some(r.accuracy),
        }
    }
    /// True when `a` is better than `b` by more than `delta`.
    fn better(self, a: f64, b: f64, delta: f64) -> bool {
        match self {
            Monitor::ValLoss | Monitor::Loss => a < b - delta,
            _ => a > b + delta,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
}

/// Everything that decides a training run besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub spec: Vec<LayerSpec>,
    pub loss: Loss,
    pub optimizer: OptimizerSpec,
    pub schedule: Schedule,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub monitor: Monitor,
    pub early_stopping: Option<EarlyStopping>,
    /// Keep the weights of the best epoch by `monitor` (needs that metric every epoch).
    pub restore_best: bool,
    /// Scale all gradients so their global L2 norm is at most this.
    pub clip_norm: Option<f32>,
    /// Clamp each gradient value to `[-v, v]`.
    pub clip_value: Option<f32>,
    /// Weight each class by `n / (classes * n_class)` (sklearn/Keras "balanced").
    pub balanced: bool,
    /// Use the fused first-layer step ([`crate::head::kernels::wide`]); off: the plain three-pass step.
    pub fused: bool,
    /// Threads of the fused step (0 = all cores); results do not depend on it.
    pub threads: usize,
}

impl Default for TrainConfig {
    /// The seed recipe: Dense 256 relu, Dropout 0.5, binary cross-entropy, RMSprop 2e-5, 30 epochs
    /// of 20.
    fn default() -> Self {
        TrainConfig {
            spec: super::net::parse_spec(super::net::DEFAULT_HEAD).expect("valid default"),
            loss: Loss::CrossEntropy { smoothing: 0.0 },
            optimizer: OptimizerSpec {
                kind: OptimizerKind::RmsProp,
                lr: 2e-5,
                weight_decay: 0.0,
            },
            schedule: Schedule::Constant,
            epochs: 30,
            batch_size: 20,
            seed: 42,
            monitor: Monitor::ValLoss,
            early_stopping: None,
            restore_best: false,
            clip_norm: None,
            clip_value: None,
            balanced: false,
            fused: true,
            threads: 0,
        }
    }
}

impl TrainConfig {
    /// Checks the hyperparameters before any work; errors name the flag.
    pub fn validate(&self, has_validation: bool) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad(format!("--lr must be positive, got {}", self.optimizer.lr));
        }
        if self.optimizer.weight_decay < 0.0 {
            return bad("--weight-decay must be >= 0".into());
        }
        if let OptimizerKind::Sgd {
            momentum, decay, ..
        } = self.optimizer.kind
        {
            if !(0.0..1.0).contains(&momentum) || decay < 0.0 {
                return bad(format!(
                    "--momentum must be in [0, 1) and --decay >= 0 (got {momentum}, {decay})"
                ));
            }
        }
        for (flag, v) in [
            ("--clip-norm", self.clip_norm),
            ("--clip-value", self.clip_value),
        ] {
            if v.is_some_and(|v| v.is_nan() || v <= 0.0) {
                return bad(format!("{flag} must be positive"));
            }
        }
        if let Loss::CrossEntropy { smoothing } = self.loss {
            if !(0.0..1.0).contains(&smoothing) {
                return bad(format!(
                    "--label-smoothing must be in [0, 1), got {smoothing}"
                ));
            }
        }
        if (self.early_stopping.is_some() || self.restore_best)
            && self.monitor.needs_validation()
            && !has_validation
        {
            return bad(format!(
                "early stopping / restore-best monitor {} but there is no validation data (add a val split or --val-split > 0, or --monitor loss)",
                self.monitor.name()
            ));
        }
        Ok(())
    }
}

/// One row of the training history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// The columns epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds as text: losses and
    /// accuracies with `digits` decimals, seconds with `sec_digits`, the rate in scientific notation
    /// (`lr_digits` decimals, or as short as exact), a missing validation value as `missing`. The
    /// history CSV, the printed table and the report's table all come from here.
    pub fn columns(
        &self,
        (digits, sec_digits): (usize, usize),
        lr_digits: Option<usize>,
        missing: &str,
    ) -> [String; 7] {
        let o = |v: Option<f64>| v.map_or(missing.to_string(), |v| format!("{v:.digits$}"));
        [
            self.epoch.to_string(),
            format!("{:.digits$}", self.loss),
            format!("{:.digits$}", self.accuracy),
            o(self.val_loss),
            o(self.val_accuracy),
            match lr_digits {
                Some(d) => format!("{:.d$e}", self.lr),
                None => format!("{:e}", self.lr),
            },
            format!("{:.sec_digits$}", self.seconds),
        ]
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch whose weights were kept (the best by the monitor, or the last).
    pub kept_epoch: usize,
    pub stopped_early: bool,
}

impl History {
    /// A fit without epochs (L-BFGS) as one "epoch": `net`'s cross-entropy and accuracy on rows
    /// `train` of `x`, and on the validation rows when given.
    pub fn single(
        net: &Network,
        (x, y, train): (&Array2<f32>, &[u32], &[usize]),
        val: Option<(&Array2<f32>, &[u32], &[usize])>,
        seconds: f64,
    ) -> History {
        let ce = Loss::CrossEntropy { smoothing: 0.0 };
        let (loss, accuracy) = evaluate_rows(net, &ce, x, y, train);
        let v = val.map(|(vx, vy, rows)| evaluate_rows(net, &ce, vx, vy, rows));
        History {
            epochs: vec![EpochRecord {
                epoch: 1,
                loss,
                accuracy,
                val_loss: v.map(|v| v.0),
                val_accuracy: v.map(|v| v.1),
                lr: 0.0,
                seconds,
            }],
            kept_epoch: 1,
            stopped_early: false,
        }
    }

    pub const CSV_HEADER: &'static str = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds";

    /// Whether `path` holds a history CSV (its first line is [`History::CSV_HEADER`]): the rule by
    /// which a history file is replaced.
    pub fn is_csv(path: &Path) -> bool {
        use std::io::BufRead;
        std::fs::File::open(path).is_ok_and(|f| {
            let mut line = String::new();
            std::io::BufReader::new(f.take(4096))
                .read_line(&mut line)
                .is_ok()
                && line.trim_end() == Self::CSV_HEADER
        })
    }

    /// The output of a history CSV at `path`: replaced only when it is one.
    pub fn output(path: &Path) -> Output<'static> {
        Output::new(path).replace(Replace::If {
            what: "a training history (CSV)",
            check: &History::is_csv,
        })
    }

    pub fn csv(&self) -> String {
        let mut s = format!("{}\n", Self::CSV_HEADER);
        for r in &self.epochs {
            s += &r.columns((6, 3), None, "").join(",");
            s.push('\n');
        }
        s
    }

    /// The history as a markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| epoch | loss | accuracy | val_loss | val_accuracy | lr | seconds |\n|---|---|---|---|---|---|---|\n");
        for r in &self.epochs {
            s += &format!("| {} |\n", r.columns((4, 2), Some(2), "-").join(" | "));
        }
        s
    }
}

/// Feature rows and labels, with the indices that make up the training and validation sets.
pub struct TrainData<'a> {
    pub x: &'a Array2<f32>,
    pub y: &'a [u32],
    pub train: Vec<usize>,
    pub val: Option<(&'a Array2<f32>, &'a [u32], Vec<usize>)>,
    pub classes: usize,
}

/// Splits `labels` into (train, val) index lists with `fraction` of each class in val, seeded.
pub fn stratified_split(labels: &[u32], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut rng = Rng(seed ^ 0x5eed_5917);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        rng.shuffle(&mut idx);
        let k = (fraction * idx.len() as f64).round() as usize;
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Predicted class of each row of logits (one column: positive when > 0).
pub fn predicted(logits: &Array2<f32>) -> Vec<u32> {
    logits
        .outer_iter()
        .map(|r| {
            if r.len() == 1 {
                (r[0] > 0.0) as u32
            } else {
                let mut best = 0;
                for (j, &v) in r.iter().enumerate() {
                    if v > r[best] {
                        best = j;
                    }
                }
                best as u32
            }
        })
        .collect()
}

/// Output units for `classes` (1 for a binary sigmoid head).
pub fn output_units(classes: usize) -> usize {
    if classes == 2 {
        1
    } else {
        classes
    }
}

/// Mean loss and accuracy of `net` on rows `idx` of `x` (inference mode, no class weights).
pub fn evaluate_rows(
    net: &Network,
    loss: &Loss,
    x: &Array2<f32>,
    y: &[u32],
    idx: &[usize],
) -> (f64, f64) {
    let (mut total, mut correct) = (0f64, 0usize);
    for chunk in idx.chunks(256) {
        let xb = x.select(Axis(0), chunk);
        let yb: Vec<u32> = chunk.iter().map(|&i| y[i]).collect();
        let z = net.logits(&xb);
        total += loss.compute(&z, &yb, None).0 as f64 * chunk.len() as f64;
        correct += predicted(&z)
            .iter()
            .zip(&yb)
            .filter(|(p, t)| p == t)
            .count();
    }
    let n = idx.len().max(1) as f64;
    (total / n, correct as f64 / n)
}

/// The settings against the data: rows to train on, labels within the classes.
fn check_data(cfg: &TrainConfig, data: &TrainData) -> Result<()> {
    cfg.validate(data.val.as_ref().is_some_and(|v| !v.2.is_empty()))?;
    if data.train.is_empty() {
        return Err(Error::Config("no training rows".into()));
    }
    if let Some(&bad) = data.y.iter().find(|&&l| l as usize >= data.classes) {
        return Err(Error::Config(format!(
            "label {bad} out of range for {} classes",
            data.classes
        )));
    }
    Ok(())
}

/// `--class-weight balanced`: `n / (classes * n_c)` per class over the training rows (0 for a class
/// with none), as scikit-learn and Keras.
fn balanced_weights(data: &TrainData) -> Vec<f32> {
    let mut counts = vec![0usize; data.classes];
    for &i in &data.train {
        counts[data.y[i] as usize] += 1;
    }
    let n = data.train.len() as f32;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (data.classes as f32 * c as f32)
            }
        })
        .collect()
}

/// An error when a weight overflowed during `epoch` (0-based).
fn check_weights(net: &Network, epoch: usize) -> Result<()> {
    if net
        .params()
        .iter()
        .any(|p| p.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Config(format!(
            "training diverged in epoch {} (weights overflowed); lower --lr or add --clip-norm",
            epoch + 1
        )));
    }
    Ok(())
}

/// Validation loss and accuracy of `net`, when `data` has validation rows.
fn validation(net: &Network, cfg: &TrainConfig, data: &TrainData) -> (Option<f64>, Option<f64>) {
    match &data.val {
        Some((vx, vy, vidx)) if !vidx.is_empty() => {
            let (l, a) = evaluate_rows(net, &cfg.loss, vx, vy, vidx);
            (Some(l), Some(a))
        }
        _ => (None, None),
    }
}

/// Trains a new network from `cfg` on `data`; `on_epoch` sees each history row as it is made.
pub fn fit(
    cfg: &TrainConfig,
    data: &TrainData,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<(Network, History)> {
    check_data(cfg, data)?;
    let _ftz = crate::head::kernels::wide::FlushDenormals::new();
    let outputs = output_units(data.classes);
    let mut net = Network::new(data.x.ncols(), &cfg.spec, outputs, cfg.seed);
    let mut opt = cfg.optimizer.build();
    let mut shuffle_rng = Rng(cfg.seed.wrapping_add(0x0123_4567));
    let mut dropout_rng = Rng(cfg.seed.wrapping_add(0x89ab_cdef));
    let class_weights = cfg.balanced.then(|| balanced_weights(data));
    let mut history = History::default();
    let mut best: Option<(f64, Network, usize)> = None;
    let mut since_best = 0usize;
    let mut order = data.train.clone();
    let d = data.x.ncols();
    let mut bufs = BatchBuffers {
        cur: Array2::zeros((cfg.batch_size.min(order.len()), d)),
        next: Array2::zeros((cfg.batch_size.min(order.len()), d)),
    };
    let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
    // The fused first-layer step needs a leading dense layer; clamping before a global-norm clip
    // cannot be folded into it.
    let fused = cfg.fused
        && first_dense(&net).is_some()
        && !(cfg.clip_value.is_some() && cfg.clip_norm.is_some());
    for epoch in 0..cfg.epochs {
        let t0 = std::time::Instant::now();
        let lr = cfg.schedule.lr(cfg.optimizer.lr, epoch, cfg.epochs);
        opt.set_learning_rate(lr);
        shuffle_rng.shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
        // With the fused path, the first layer's pre-activation of batch b+1 is computed while the
        // step of batch b updates its weights.
        let mut z_next: Option<Array2<f32>> = None;
        // Batch rows are gathered into two reused buffers (current, next): no large allocation per
        // step (each would be mapped and unmapped, flushing the other core's TLB).
        gather(data.x, batches[0], &mut bufs.cur);
        for (bi, batch) in batches.iter().enumerate() {
            let n = batch.len();
            if let Some(b) = batches.get(bi + 1) {
                gather(data.x, b, &mut bufs.next);
            }
            let yb: Vec<u32> = batch.iter().map(|&i| data.y[i]).collect();
            let wb: Option<Vec<f32>> = class_weights
                .as_ref()
                .map(|w| yb.iter().map(|&l| w[l as usize]).collect());
            let loss_fn = |z: &Array2<f32>| cfg.loss.compute(z, &yb, wb.as_deref());
            let (loss, logits) = if fused {
                let z1 = match z_next.take() {
                    Some(z) => z,
                    None => first_dense(&net)
                        .map(|l| l.apply(bufs.cur.slice(s![..n, ..])))
                        .expect("fused needs a first dense layer"),
                };
                let (loss, logits, rest, g1) =
                    net.forward_backward_from(1, z1, &mut dropout_rng, loss_fn, true);
                let g1 = g1.expect("input gradient requested");
                let xn = batches
                    .get(bi + 1)
                    .map(|b| bufs.next.slice(s![..b.len(), ..]));
                if loss.is_finite() {
                    z_next = fused_step_first_layer(
                        cfg,
                        &mut net,
                        opt.as_mut(),
                        &sizes,
                        bufs.cur.slice(s![..n, ..]),
                        &g1,
                        rest,
                        xn,
                    );
                }
                (loss, logits)
            } else {
                let xb = bufs.cur.slice(s![..n, ..]).to_owned();
                let (loss, logits, mut grads) = net.forward_backward(xb, &mut dropout_rng, loss_fn);
                if loss.is_finite() {
                    clip(&mut grads, cfg.clip_value, cfg.clip_norm);
                    let g: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                    opt.step(&mut net.params_mut(), &g);
                }
                (loss, logits)
            };
            std::mem::swap(&mut bufs.cur, &mut bufs.next);
            if !loss.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged in epoch {} (loss {loss}); lower --lr or add --clip-norm",
                    epoch + 1
                )));
            }
            loss_sum += loss as f64 * batch.len() as f64;
            correct += predicted(&logits)
                .iter()
                .zip(&yb)
                .filter(|(p, t)| p == t)
                .count();
        }
        check_weights(&net, epoch)?;
        let n = order.len() as f64;
        let (val_loss, val_accuracy) = validation(&net, cfg, data);
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            val_loss,
            val_accuracy,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&rec);
        let value = cfg.monitor.value(&rec);
        history.epochs.push(rec);
        if let Some(v) = value {
            let delta = cfg.early_stopping.map_or(0.0, |e| e.min_delta);
            let improved = best
                .as_ref()
                .is_none_or(|(b, _, _)| cfg.monitor.better(v, *b, delta));
            if improved {
                since_best = 0;
                let keep = if cfg.restore_best {
                    net.clone()
                } else {
                    Network { layers: vec![] }
                };
                best = Some((v, keep, epoch + 1));
            } else {
                since_best += 1;
            }
        }
        if let Some(es) = cfg.early_stopping {
            if since_best > es.patience {
                history.stopped_early = true;
                break;
            }
        }
    }
    history.kept_epoch = history.epochs.len();
    if cfg.restore_best {
        if let Some((_, b, e)) = best {
            net = b;
            history.kept_epoch = e;
        }
    }
    Ok((net, history))
}

/// Reused per-step buffers: the current and next batch's rows.
struct BatchBuffers {
    cur: Array2<f32>,
    next: Array2<f32>,
}

/// Copies rows `idx` of `x` into the first rows of `buf`.
fn gather(x: &Array2<f32>, idx: &[usize], buf: &mut Array2<f32>) {
    for (r, &i) in idx.iter().enumerate() {
        buf.row_mut(r).assign(&x.row(i));
    }
}

fn first_dense(net: &Network) -> Option<&Dense> {
    match net.layers.first() {
        Some(Layer::Dense(d)) => Some(d),
        _ => None,
    }
}

/// The optimizer step of a batch on the fused path: `rest` are the gradients of every parameter
/// but the first kernel (first bias first), `g1` the gradient of the first layer's pre-activation.
/// Returns the next batch's first-layer pre-activation (with the updated weights and bias).
#[allow(clippy::too_many_arguments)]
fn fused_step_first_layer(
    cfg: &TrainConfig,
    net: &mut Network,
    opt: &mut dyn Optimizer,
    sizes: &[usize],
    xb: ArrayView2<f32>,
    g1: &Array2<f32>,
    rest: Grads,
    xn: Option<ArrayView2<f32>>,
) -> Option<Array2<f32>> {
    let mut rest: Vec<Vec<f32>> = std::iter::once(g1.sum_axis(Axis(0)).to_vec())
        .chain(rest)
        .collect();
    let mut scale = 1.0f32;
    if let Some(max) = cfg.clip_norm {
        // |X^T G|_F^2 = sum_ij (X X^T)_ij (G G^T)_ij: the kernel gradient's norm without forming it.
        let k = xb.dot(&xb.t());
        let gg = g1.dot(&g1.t());
        let kernel: f64 = k
            .iter()
            .zip(gg.iter())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let others: f64 = rest.iter().flatten().map(|&g| g as f64 * g as f64).sum();
        let total = (kernel + others).max(0.0).sqrt() as f32;
        if total > max {
            scale = max / total;
            for g in rest.iter_mut().flatten() {
                *g *= scale;
            }
        }
    } else {
        clip(&mut rest, cfg.clip_value, None);
    }
    let rule = opt.begin_step(sizes);
    for ((i, p), g) in net.params_mut().into_iter().enumerate().skip(1).zip(&rest) {
        let (s1, s2) = opt.state(i);
        rule.apply(p, g, s1, s2);
    }
    let Some(Layer::Dense(l0)) = net.layers.first_mut() else {
        unreachable!("checked by the caller")
    };
    let (d, u) = l0.w.dim();
    let n = xb.nrows();
    let g1 = g1.as_standard_layout();
    let m = xn.map_or(0, |x| x.nrows());
    // The first rows of a row-major buffer: contiguous.
    let xn = xn.map(|x| {
        x.to_slice()
            .expect("leading rows of a standard-layout buffer")
    });
    let mut z = vec![0f32; m * u];
    let (s1, s2) = opt.state(0);
    let inp = StepInputs {
        x: xb
            .to_slice()
            .expect("leading rows of a standard-layout buffer"),
        n,
        g: g1.as_slice().expect("standard layout"),
        next: xn.map(|x| (x, m)),
        rule,
        scale,
        clip_value: cfg.clip_value,
    };
    let out = StepOutputs {
        w: l0.w.as_slice_mut().expect("standard layout"),
        s1,
        s2,
        z: &mut z,
    };
    fused_step(&inp, out, d, u, cfg.threads);
    (m > 0).then(|| Array2::from_shape_vec((m, u), z).expect("m x u") + &l0.b)
}

/// Element-wise clamp, then global-norm rescale.
pub fn clip(grads: &mut [Vec<f32>], value: Option<f32>, norm: Option<f32>) {
    if let Some(v) = value {
        for g in grads.iter_mut().flatten() {
            *g = g.clamp(-v, v);
        }
    }
    if let Some(max) = norm {
        let total: f64 = grads
            .iter()
            .flatten()
            .map(|&g| (g as f64) * (g as f64))
            .sum();
        let total = total.sqrt() as f32;
        if total > max {
            let s = max / total;
            for g in grads.iter_mut().flatten() {
                *g *= s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::net::parse_spec;

    fn blobs(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut rng = Rng(seed);
        let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            rng.normal()
                + if j % classes == y[i] as usize {
                    2.0
                } else {
                    0.0
                }
        });
        (x, y)
    }

    #[test]
    fn stratified_split_keeps_class_fractions() {
        let labels: Vec<u32> = (0..100).map(|i| (i < 30) as u32).collect();
        let (t, v) = stratified_split(&labels, 0.2, 1);
        assert_eq!(v.len(), 20);
        assert_eq!(v.iter().filter(|&&i| labels[i] == 1).count(), 6);
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(stratified_split(&labels, 0.2, 1), (t, v.clone()));
        assert_ne!(stratified_split(&labels, 0.2, 2).1, v);
    }

    #[test]
    fn schedules_hit_their_endpoints() {
        assert_eq!(Schedule::Constant.lr(0.1, 5, 10), 0.1);
        let s = Schedule::Step {
            every: 2,
            gamma: 0.5,
        };
        assert_eq!(
            (s.lr(1.0, 1, 9), s.lr(1.0, 2, 9), s.lr(1.0, 5, 9)),
            (1.0, 0.5, 0.25)
        );
        let c = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(c.lr(1.0, 0, 10), 1.0);
        assert!((c.lr(1.0, 5, 10) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn clipping_by_value_and_norm() {
        let mut g = vec![vec![3.0, -4.0], vec![0.0]];
        clip(&mut g, None, Some(1.0));
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[0][1] + 0.8).abs() < 1e-6);
        let mut g = vec![vec![3.0, -4.0, 0.5]];
        clip(&mut g, Some(1.0), None);
        assert_eq!(g[0], vec![1.0, -1.0, 0.5]);
    }

    #[test]
    fn every_optimizer_and_loss_learns_separable_blobs() {
        let (x, y) = blobs(300, 6, 3, 1);
        let (train, val) = stratified_split(&y, 0.2, 0);
        let kinds = [
            (
                OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: true,
                    decay: 0.01,
                },
                0.05,
            ),
            (OptimizerKind::Adam, 1e-2),
            (OptimizerKind::AdamW, 1e-2),
            (OptimizerKind::RmsProp, 1e-2),
        ];
        let losses = [
            Loss::CrossEntropy { smoothing: 0.1 },
            Loss::Focal {
                gamma: 2.0,
                alpha: 0.25,
            },
            Loss::Hinge,
            Loss::SquaredHinge,
            Loss::Mse,
        ];
        for (kind, lr) in kinds {
            for loss in losses {
                let cfg = TrainConfig {
                    spec: parse_spec("dense:16:relu,bn,dropout:0.1").unwrap(),
                    loss,
                    optimizer: OptimizerSpec {
                        kind,
                        lr,
                        weight_decay: 1e-4,
                    },
                    epochs: 15,
                    batch_size: 16,
                    ..TrainConfig::default()
                };
                let data = TrainData {
                    x: &x,
                    y: &y,
                    train: train.clone(),
                    val: Some((&x, &y, val.clone())),
                    classes: 3,
                };
                let (_, h) = fit(&cfg, &data, |_| {}).unwrap();
                let last = h.epochs.last().unwrap();
                assert!(
                    last.val_accuracy.unwrap() > 0.9,
                    "{kind:?} {loss:?}: {last:?}"
                );
                assert!(
                    last.loss < h.epochs[0].loss,
                    "{kind:?} {loss:?} did not lower the loss"
                );
            }
        }
    }

    #[test]
    fn early_stopping_restores_the_best_epoch() {
        let (x, y) = blobs(200, 4, 2, 3);
        let (train, val) = stratified_split(&y, 0.3, 0);
        let cfg = TrainConfig {
            spec: parse_spec("dense:8:relu").unwrap(),
            optimizer: OptimizerSpec {
                kind: OptimizerKind::Adam,
                lr: 0.05,
                weight_decay: 0.0,
            },
            epochs: 200,
            early_stopping: Some(EarlyStopping {
                patience: 3,
                min_delta: 0.0,
            }),
            restore_best: true,
            ..TrainConfig::default()
        };
        let data = TrainData {
            x: &x,
            y: &y,
            train,
            val: Some((&x, &y, val.clone())),
            classes: 2,
        };
        let (net, h) = fit(&cfg, &data, |_| {}).unwrap();
        assert!(h.stopped_early && h.epochs.len() < 200);
        let best = h
            .epochs
            .iter()
            .map(|r| r.val_loss.unwrap())
            .fold(f64::INFINITY, f64::min);
        let kept = &h.epochs[h.kept_epoch - 1];
        assert_eq!(kept.val_loss.unwrap(), best);
        assert_eq!(h.epochs.len(), h.kept_epoch + 4);
        let (l, _) = evaluate_rows(&net, &cfg.loss, &x, &y, &val);
        assert!(
            (l - best).abs() < 1e-9,
            "restored weights give val_loss {l}, best {best}"
        );
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let (x, y) = blobs(120, 5, 2, 4);
        let run = |seed| {
            let cfg = TrainConfig {
                seed,
                epochs: 3,
                ..TrainConfig::default()
            };
            let data = TrainData {
                x: &x,
                y: &y,
                train: (0..120).collect(),
                val: None,
                classes: 2,
            };
            fit(&cfg, &data, |_| {}).unwrap().0
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    /// The fused first-layer step trains the same network as the plain three-pass step (up to
    /// rounding: fused multiply-add), for every optimizer and with global-norm clipping; its thread
    /// count changes nothing.
    #[test]
    fn fused_and_plain_steps_agree_and_threads_do_not_matter() {
        let (x, y) = blobs(90, 70, 3, 5);
        let kinds = [
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
                decay: 0.0,
            },
            OptimizerKind::Adam,
            OptimizerKind::RmsProp,
        ];
        for kind in kinds {
            let run = |fused: bool, threads: usize| {
                let cfg = TrainConfig {
                    spec: parse_spec("dense:40:relu,dropout:0.5,dense:8:tanh").unwrap(),
                    optimizer: OptimizerSpec {
                        kind,
                        lr: 1e-3,
                        weight_decay: 1e-3,
                    },
                    epochs: 3,
                    batch_size: 7,
                    clip_norm: Some(0.5),
                    fused,
                    threads,
                    ..TrainConfig::default()
                };
                let data = TrainData {
                    x: &x,
                    y: &y,
                    train: (0..90).collect(),
                    val: None,
                    classes: 3,
                };
                fit(&cfg, &data, |_| {}).unwrap().0
            };
            let (plain, fused1, fused2) = (run(false, 1), run(true, 1), run(true, 2));
            assert_eq!(fused1, fused2, "{kind:?}: thread count changed the weights");
            for (a, b) in plain.params().iter().zip(fused1.params()) {
                for (u, v) in a.iter().zip(b) {
                    assert!(
                        (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                        "{kind:?}: plain {u} fused {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_hyperparameters_are_refused_before_training() {
        let mut cfg = TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        };
        assert!(cfg
            .validate(true)
            .unwrap_err()
            .to_string()
            .contains("--epochs"));
        cfg.epochs = 1;
        cfg.early_stopping = Some(EarlyStopping {
            patience: 1,
            min_delta: 0.0,
        });
        assert!(cfg
            .validate(false)
            .unwrap_err()
            .to_string()
            .contains("validation"));
    }
}
