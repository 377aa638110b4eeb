//! The training loop: stratified validation split, seeded shuffling, mini-batches, class weights,
//! gradient clipping, learning-rate schedules and early stopping with restore-best.
//! Same seed and data give bit-identical weights.

use ndarray::{s, Array2, ArrayView2, Axis};

pub use super::history::{EpochRecord, History};
mod labels;
mod weights;
use super::loss::Loss;
use super::net::{Dense, Grads, Layer, LayerSpec, Network};
use super::optim::Optimizer;
pub use super::optim::{OptimizerKind, OptimizerSpec};
pub use super::schedule::{EarlyStopping, Monitor, Schedule};
use crate::error::{Error, Result};
use crate::head::kernels::wide::{fused_step, StepInputs, StepOutputs};
use crate::util::rng::Rng;
pub use labels::{Batch, Labels};
use weights::balanced_weights;
pub(crate) use weights::class_weights;

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
    /// Use the fused first-layer step (the wide kernels of `head::kernels`); off: the plain three-pass step.
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
    /// Checks the hyperparameters before any work. Errors are [`Error::Invalid`] naming the setting
    /// (`epochs`, `lr`, ...): the binary shows it as its flag (`--epochs`).
    pub fn validate(&self, has_validation: bool) -> Result<()> {
        let bad = |what: &str, m: String| Err(Error::invalid(what, m));
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1, got 0".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1, got 0".into());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad("lr", format!("must be positive, got {}", self.optimizer.lr));
        }
        if self.optimizer.weight_decay.is_nan() || self.optimizer.weight_decay < 0.0 {
            return bad(
                "weight_decay",
                format!("must be >= 0, got {}", self.optimizer.weight_decay),
            );
        }
        if let OptimizerKind::Sgd {
            momentum, decay, ..
        } = self.optimizer.kind
        {
            if !(0.0..1.0).contains(&momentum) {
                return bad("momentum", format!("must be in [0, 1), got {momentum}"));
            }
            if decay.is_nan() || decay < 0.0 {
                return bad("decay", format!("must be >= 0, got {decay}"));
            }
        }
        if let Schedule::Step { every: 0, .. } = self.schedule {
            return bad("step_every", "must be at least 1, got 0".into());
        }
        for (what, v) in [
            ("clip_norm", self.clip_norm),
            ("clip_value", self.clip_value),
        ] {
            if let Some(v) = v.filter(|v| v.is_nan() || *v <= 0.0) {
                return bad(what, format!("must be positive, got {v}"));
            }
        }
        if let Loss::CrossEntropy { smoothing } = self.loss {
            if !(0.0..1.0).contains(&smoothing) {
                return bad(
                    "label_smoothing",
                    format!("must be in [0, 1), got {smoothing}"),
                );
            }
        }
        if let Loss::Focal { gamma, alpha } = self.loss {
            if !(gamma.is_finite() && gamma >= 0.0) {
                return bad("focal_gamma", format!("must be >= 0, got {gamma}"));
            }
            if !(0.0..=1.0).contains(&alpha) {
                return bad("focal_alpha", format!("must be in [0, 1], got {alpha}"));
            }
        }
        match self.schedule {
            Schedule::Step { gamma, .. } if !(gamma > 0.0 && gamma <= 1.0) => {
                return bad("step_gamma", format!("must be in (0, 1], got {gamma}"));
            }
            Schedule::Cosine { min_lr } if !(0.0..=self.optimizer.lr).contains(&min_lr) => {
                let lr = self.optimizer.lr;
                return bad("min_lr", format!("must be in [0, lr = {lr}], got {min_lr}"));
            }
            _ => {}
        }
        if (self.early_stopping.is_some() || self.restore_best)
            && self.monitor.needs_validation()
            && !has_validation
        {
            return bad(
                "monitor",
                format!(
                    "early stopping / restore-best watch {} but there is no validation data (add a val split or --val-split > 0, or --monitor loss)",
                    self.monitor.name()
                ),
            );
        }
        Ok(())
    }
}

impl History {
    /// A fit without epochs (L-BFGS) as one "epoch": `net`'s cross-entropy and accuracy on rows
    /// `train` of `x`, and on the validation rows when given.
    pub fn single(
        net: &Network,
        (x, y, train): (&Array2<f32>, Labels, &[usize]),
        val: Option<(&Array2<f32>, Labels, &[usize])>,
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
}

/// Feature rows and labels, with the indices that make up the training and validation sets.
pub struct TrainData<'a> {
    pub x: &'a Array2<f32>,
    pub y: Labels<'a>,
    pub train: Vec<usize>,
    pub val: Option<(&'a Array2<f32>, Labels<'a>, Vec<usize>)>,
    pub classes: usize,
}

impl TrainData<'_> {
    /// The network's output units: one sigmoid per class for tags, else [`output_units`].
    pub fn outputs(&self) -> usize {
        match self.y {
            Labels::Tags(_) => self.classes,
            Labels::Classes(_) => output_units(self.classes),
        }
    }
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

/// Mean loss and accuracy (multi-label: element-wise) of `net` on rows `idx` of `x` (inference
/// mode, no class weights).
pub fn evaluate_rows(
    net: &Network,
    loss: &Loss,
    x: &Array2<f32>,
    y: Labels,
    idx: &[usize],
) -> (f64, f64) {
    let (mut total, mut correct) = (0f64, 0f64);
    for chunk in idx.chunks(256) {
        let xb = x.select(Axis(0), chunk);
        let yb = y.batch(chunk);
        let z = net.logits(&xb);
        total += yb.loss(loss, &z, None).0 as f64 * chunk.len() as f64;
        correct += yb.hits(&z);
    }
    let n = idx.len().max(1) as f64;
    (total / n, correct / n)
}

/// The settings against the data: rows to train on, labels within the classes.
fn check_data(cfg: &TrainConfig, data: &TrainData) -> Result<()> {
    cfg.validate(data.val.as_ref().is_some_and(|v| !v.2.is_empty()))?;
    crate::head::net::check_size(data.x.ncols(), &cfg.spec, data.outputs())?;
    if data.train.is_empty() {
        return Err(Error::Config("no training rows".into()));
    }
    match data.y {
        Labels::Classes(y) => {
            if let Some(&bad) = y.iter().find(|&&l| l as usize >= data.classes) {
                return Err(Error::Config(format!(
                    "label {bad} out of range for {} classes",
                    data.classes
                )));
            }
        }
        Labels::Tags(t) if t.ncols() != data.classes => {
            return Err(Error::Config(format!(
                "{} tag columns for {} classes",
                t.ncols(),
                data.classes
            )));
        }
        Labels::Tags(_) => {}
    }
    Ok(())
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
            let (l, a) = evaluate_rows(net, &cfg.loss, vx, *vy, vidx);
            (Some(l), Some(a))
        }
        _ => (None, None),
    }
}

/// Trains a new network from `cfg` on `data`; `on_epoch` sees each history row as it is made.
pub fn fit(
    cfg: &TrainConfig,
    data: &TrainData,
    on_epoch: impl FnMut(&EpochRecord),
) -> Result<(Network, History)> {
    check_data(cfg, data)?;
    let rows = cfg.batch_size.min(data.train.len());
    let weights = cfg.balanced.then(|| balanced_weights(data));
    let run = Run::new(cfg, data.x.ncols(), data.outputs(), rows, weights);
    let mut order = data.train.clone();
    train_loop(
        cfg,
        run,
        |run, epoch, rng| {
            rng.shuffle(&mut order);
            let (loss, correct) = run.epoch(data.x, data.y, epoch, &order)?;
            Ok((loss, correct, order.len()))
        },
        |net| validation(net, cfg, data),
        on_epoch,
    )
}

/// The epochs of a run: `one_epoch` trains one pass (given the run, the epoch and the shuffling
/// generator; returns the summed loss, the correct predictions and the rows seen), `validate`
/// scores the network; the learning-rate schedule, divergence checks, history, early stopping and
/// restore-best are the same for data in memory and streamed from disk.
pub(crate) fn train_loop(
    cfg: &TrainConfig,
    mut run: Run,
    mut one_epoch: impl FnMut(&mut Run, usize, &mut Rng) -> Result<(f64, f64, usize)>,
    validate: impl Fn(&Network) -> (Option<f64>, Option<f64>),
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<(Network, History)> {
    let _ftz = crate::head::kernels::FlushDenormals::new();
    let mut shuffle_rng = Rng(cfg.seed.wrapping_add(0x0123_4567));
    let mut history = History::default();
    let mut keeper = Keeper::default();
    for epoch in 0..cfg.epochs {
        let t0 = std::time::Instant::now();
        let lr = cfg.schedule.lr(cfg.optimizer.lr, epoch, cfg.epochs);
        run.opt.set_learning_rate(lr);
        let (loss_sum, correct, rows) = one_epoch(&mut run, epoch, &mut shuffle_rng)?;
        check_weights(&run.net, epoch)?;
        let n = rows.max(1) as f64;
        let (val_loss, val_accuracy) = validate(&run.net);
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / n,
            accuracy: correct / n,
            val_loss,
            val_accuracy,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&rec);
        let value = cfg.monitor.value(&rec);
        history.epochs.push(rec);
        if let Some(v) = value {
            keeper.saw(cfg, v, &run.net, epoch + 1);
        }
        if let Some(es) = cfg.early_stopping {
            if keeper.since_best > es.patience {
                history.stopped_early = true;
                break;
            }
        }
    }
    history.kept_epoch = history.epochs.len();
    let mut net = run.net;
    if cfg.restore_best {
        if let Some((_, b, e)) = keeper.best {
            net = b;
            history.kept_epoch = e;
        }
    }
    Ok((net, history))
}

/// The best monitored value so far (with the network then, under `restore_best`, and its epoch),
/// and the epochs since it.
#[derive(Default)]
struct Keeper {
    best: Option<(f64, Network, usize)>,
    since_best: usize,
}

impl Keeper {
    /// Epoch `epoch` (1-based) gave the monitored value `v`.
    fn saw(&mut self, cfg: &TrainConfig, v: f64, net: &Network, epoch: usize) {
        let delta = cfg.early_stopping.map_or(0.0, |e| e.min_delta);
        let improved = self
            .best
            .as_ref()
            .is_none_or(|(b, _, _)| cfg.monitor.better(v, *b, delta));
        if improved {
            self.since_best = 0;
            let keep = if cfg.restore_best {
                net.clone()
            } else {
                Network { layers: vec![] }
            };
            self.best = Some((v, keep, epoch));
        } else {
            self.since_best += 1;
        }
    }
}

/// What one training run carries from batch to batch: the network, its optimizer, the dropout
/// generator, the class weights and the reused batch buffers (the data comes with each epoch).
pub(crate) struct Run<'a> {
    cfg: &'a TrainConfig,
    net: Network,
    opt: Box<dyn Optimizer>,
    dropout_rng: Rng,
    class_weights: Option<Vec<f32>>,
    bufs: BatchBuffers,
    sizes: Vec<usize>,
    /// The fused first-layer step: it needs a leading dense layer, and clamping before a
    /// global-norm clip cannot be folded into it.
    fused: bool,
}

impl<'a> Run<'a> {
    /// A new network of `inputs` features and `outputs` units; batches of at most `rows` rows.
    pub(crate) fn new(
        cfg: &'a TrainConfig,
        inputs: usize,
        outputs: usize,
        rows: usize,
        class_weights: Option<Vec<f32>>,
    ) -> Run<'a> {
        let net = Network::new(inputs, &cfg.spec, outputs, cfg.seed);
        let d = inputs;
        let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
        let fused = cfg.fused
            && first_dense(&net).is_some()
            && !(cfg.clip_value.is_some() && cfg.clip_norm.is_some());
        Run {
            cfg,
            opt: cfg.optimizer.build(),
            net,
            dropout_rng: Rng(cfg.seed.wrapping_add(0x89ab_cdef)),
            class_weights,
            bufs: BatchBuffers {
                cur: Array2::zeros((rows, d)),
                next: Array2::zeros((rows, d)),
            },
            sizes,
            fused,
        }
    }

    /// One pass over rows `order` of `x` (labels `y`) in mini-batches: (summed loss, correct
    /// predictions).
    pub(crate) fn epoch(
        &mut self,
        x: &Array2<f32>,
        y: Labels,
        epoch: usize,
        order: &[usize],
    ) -> Result<(f64, f64)> {
        let (mut loss_sum, mut correct) = (0f64, 0f64);
        let batches: Vec<&[usize]> = order.chunks(self.cfg.batch_size).collect();
        // With the fused path, the first layer's pre-activation of batch b+1 is computed while the
        // step of batch b updates its weights.
        let mut z_next: Option<Array2<f32>> = None;
        // Batch rows are gathered into two reused buffers (current, next): no large allocation per
        // step (each would be mapped and unmapped, flushing the other core's TLB).
        let Some(first) = batches.first() else {
            return Ok((0.0, 0.0));
        };
        gather(x, first, &mut self.bufs.cur);
        for (bi, batch) in batches.iter().enumerate() {
            let next = batches.get(bi + 1);
            if let Some(b) = next {
                gather(x, b, &mut self.bufs.next);
            }
            let yb = y.batch(batch);
            let (loss, logits) = self.step(&yb, batch.len(), next.map(|b| b.len()), &mut z_next);
            std::mem::swap(&mut self.bufs.cur, &mut self.bufs.next);
            if !loss.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged in epoch {} (loss {loss}); lower --lr or add --clip-norm",
                    epoch + 1
                )));
            }
            loss_sum += loss as f64 * batch.len() as f64;
            correct += yb.hits(&logits);
        }
        Ok((loss_sum, correct))
    }

    /// One step on the `n` rows in `bufs.cur` (labels `yb`; `next_len` rows of the next batch in
    /// `bufs.next`): the loss and logits. A non-finite loss updates nothing.
    fn step(
        &mut self,
        yb: &Batch,
        n: usize,
        next_len: Option<usize>,
        z_next: &mut Option<Array2<f32>>,
    ) -> (f32, Array2<f32>) {
        let cfg = self.cfg;
        let weights = self.class_weights.as_deref();
        let loss_fn = |z: &Array2<f32>| yb.loss(&cfg.loss, z, weights);
        if !self.fused {
            let xb = self.bufs.cur.slice(s![..n, ..]).to_owned();
            let (loss, logits, mut grads) =
                self.net
                    .forward_backward(xb, &mut self.dropout_rng, loss_fn);
            if loss.is_finite() {
                clip(&mut grads, cfg.clip_value, cfg.clip_norm);
                let g: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                self.opt.step(&mut self.net.params_mut(), &g);
            }
            return (loss, logits);
        }
        let z1 = match z_next.take() {
            Some(z) => z,
            None => first_dense(&self.net)
                .map(|l| l.apply(self.bufs.cur.slice(s![..n, ..])))
                .expect("fused needs a first dense layer"),
        };
        let (loss, logits, rest, g1) =
            self.net
                .forward_backward_from(1, z1, &mut self.dropout_rng, loss_fn, true);
        let g1 = g1.expect("input gradient requested");
        let xn = next_len.map(|k| self.bufs.next.slice(s![..k, ..]));
        if loss.is_finite() {
            *z_next = fused_step_first_layer(
                cfg,
                &mut self.net,
                self.opt.as_mut(),
                &self.sizes,
                self.bufs.cur.slice(s![..n, ..]),
                &g1,
                rest,
                xn,
            );
        }
        (loss, logits)
    }
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
mod tests;
