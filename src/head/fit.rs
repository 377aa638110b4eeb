//! `train-head` as a library call: read the feature cache, pool, choose the validation rows, train
//! (our backprop or the linfa-logistic baseline), and write the head file and its history CSV.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::head::file::{Head, HeadKind};
use crate::head::logistic::fit_logistic;
use crate::head::loss::Loss;
use crate::head::net::{spec_string, Pool};
use crate::head::train::{
    evaluate_rows, fit, output_units, stratified_split, EpochRecord, History, TrainConfig,
    TrainData,
};

/// Our backprop with a layer spec, or the linfa baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadChoice {
    Mlp(TrainConfig),
    Logistic { c: f64, max_iter: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainHeadConfig {
    pub features: PathBuf,
    pub out: PathBuf,
    pub history: PathBuf,
    pub head: HeadChoice,
    pub pool: Pool,
    /// Fraction of `train` held out (stratified) when the cache has no `val` split.
    pub val_split: f64,
    /// Seed of the validation split (the MLP's own seed is in its [`TrainConfig`]).
    pub seed: u64,
    /// Print the per-epoch table.
    pub verbose: bool,
}

impl TrainHeadConfig {
    /// Defaults of the command line: the seed head, `<features>` -> `<name>.head.h5` beside it.
    pub fn new(features: impl Into<PathBuf>) -> Self {
        let features = features.into();
        let out = default_head_path(&features);
        TrainHeadConfig {
            history: history_path(&out),
            out,
            features,
            head: HeadChoice::Mlp(TrainConfig::default()),
            pool: Pool::Flatten,
            val_split: 0.2,
            seed: 42,
            verbose: true,
        }
    }
}

/// `dir/name.features.h5` -> `dir/name.head.h5`; `dir/features.h5` -> `dir/features.head.h5`.
pub fn default_head_path(features: &Path) -> PathBuf {
    let stem = features
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".features").unwrap_or(&stem);
    features.with_file_name(format!("{stem}.head.h5"))
}

/// `head.h5` -> `head.history.csv`.
pub fn history_path(head: &Path) -> PathBuf {
    let stem = head
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    head.with_file_name(format!("{stem}.history.csv"))
}

#[derive(Debug, Clone)]
pub struct TrainHeadSummary {
    pub head: PathBuf,
    pub history: History,
    pub train_rows: usize,
    pub val_rows: usize,
    pub seconds: f64,
}

/// The header of the per-epoch table.
pub fn table_header() -> String {
    format!(
        "{:>5} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "epoch", "loss", "accuracy", "val_loss", "val_acc", "lr", "seconds"
    )
}

/// One row of the per-epoch table.
pub fn table_row(r: &EpochRecord) -> String {
    let o = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    format!(
        "{:>5} {:>9.4} {:>9.4} {:>9} {:>9} {:>10.3e} {:>7.2}",
        r.epoch,
        r.loss,
        r.accuracy,
        o(r.val_loss),
        o(r.val_accuracy),
        r.lr,
        r.seconds
    )
}

/// Trains a head on `cfg.features` and writes `cfg.out` and `cfg.history`.
pub fn train_head(cfg: &TrainHeadConfig) -> Result<TrainHeadSummary> {
    if !(0.0..1.0).contains(&cfg.val_split) {
        return Err(Error::Config(format!(
            "--val-split must be in [0, 1), got {}",
            cfg.val_split
        )));
    }
    let t0 = Instant::now();
    let cache = FeatureCache::open(&cfg.features)?;
    let meta = &cache.meta;
    let classes = meta.classes.len();
    if classes < 2 {
        return Err(Error::cache(
            &cfg.features,
            format!(
                "needs at least 2 classes to train a head, has {classes} ({})",
                meta.classes.join(", ")
            ),
        ));
    }
    if !meta.splits.iter().any(|s| s == "train") {
        return Err(Error::cache(
            &cfg.features,
            format!("no 'train' split (has: {})", meta.splits.join(", ")),
        ));
    }
    let dim = cfg.pool.output_dim(&meta.feature_shape, &meta.layout)?;
    let train = cache.read_split("train")?;
    let n = train.len();
    let y = train.labels;
    let x = cfg
        .pool
        .apply(train.features, n, &meta.feature_shape, &meta.layout)?;
    let (val_x, val_y, train_idx, val_idx, val_from) = if meta.splits.iter().any(|s| s == "val") {
        let v = cache.read_split("val")?;
        let vn = v.len();
        let vx = cfg
            .pool
            .apply(v.features, vn, &meta.feature_shape, &meta.layout)?;
        (
            Some(vx),
            Some(v.labels),
            (0..n).collect(),
            (0..vn).collect::<Vec<_>>(),
            "the cache's val split".to_string(),
        )
    } else if cfg.val_split > 0.0 {
        let (t, v) = stratified_split(&y, cfg.val_split, cfg.seed);
        (
            None,
            None,
            t,
            v,
            format!(
                "--val-split {} of train, stratified, seed {}",
                cfg.val_split, cfg.seed
            ),
        )
    } else {
        (None, None, (0..n).collect(), Vec::new(), "none".to_string())
    };
    let vx = val_x.as_ref().unwrap_or(&x);
    let vy: &[u32] = val_y.as_deref().unwrap_or(&y);
    let say = |s: String| {
        if cfg.verbose {
            println!("{s}");
        }
    };
    say(format!(
        "train-head: {} ({} classes: {}); train {} rows, validation {} rows ({val_from})",
        cfg.features.display(),
        classes,
        meta.classes.join(", "),
        train_idx.len(),
        val_idx.len()
    ));
    let outputs = output_units(classes);
    let output_name = if outputs == 1 { "sigmoid" } else { "softmax" };
    let (kind, network, history, spec, settings) = match &cfg.head {
        HeadChoice::Mlp(tc) => {
            let spec = spec_string(&tc.spec);
            say(format!(
                "head: {} {:?} -> {dim} -> {spec} -> {outputs} {output_name}; loss {:?}; {}; schedule {}; {} epochs of {}, seed {}",
                cfg.pool.name(),
                meta.feature_shape,
                tc.loss,
                tc.optimizer.describe(),
                tc.schedule.describe(),
                tc.epochs,
                tc.batch_size,
                tc.seed
            ));
            say(table_header());
            let data = TrainData {
                x: &x,
                y: &y,
                train: train_idx.clone(),
                val: (!val_idx.is_empty()).then(|| (vx, vy, val_idx.clone())),
                classes,
            };
            let (net, h) = fit(tc, &data, |r| say(table_row(r)))?;
            let settings = serde_json::json!({
                "loss": format!("{:?}", tc.loss),
                "optimizer": tc.optimizer.describe(),
                "schedule": tc.schedule.describe(),
                "epochs": tc.epochs,
                "batch_size": tc.batch_size,
                "seed": tc.seed,
                "monitor": tc.monitor.name(),
                "early_stopping": tc.early_stopping.map(|e| serde_json::json!({"patience": e.patience, "min_delta": e.min_delta})),
                "restore_best": tc.restore_best,
                "clip_norm": tc.clip_norm,
                "clip_value": tc.clip_value,
                "class_weight": if tc.balanced { "balanced" } else { "none" },
            });
            (HeadKind::Mlp, net, h, spec, settings)
        }
        HeadChoice::Logistic { c, max_iter } => {
            say(format!("head: {} {:?} -> {dim} -> linfa-logistic (C={c}, max_iter={max_iter}) -> {outputs} {output_name}", cfg.pool.name(), meta.feature_shape));
            let t = Instant::now();
            let net = fit_logistic(&x, &y, &train_idx, classes, *c, *max_iter)?;
            let ce = Loss::CrossEntropy { smoothing: 0.0 };
            let (loss, accuracy) = evaluate_rows(&net, &ce, &x, &y, &train_idx);
            let (val_loss, val_accuracy) = if val_idx.is_empty() {
                (None, None)
            } else {
                let (l, a) = evaluate_rows(&net, &ce, vx, vy, &val_idx);
                (Some(l), Some(a))
            };
            let rec = EpochRecord {
                epoch: 1,
                loss,
                accuracy,
                val_loss,
                val_accuracy,
                lr: 0.0,
                seconds: t.elapsed().as_secs_f64(),
            };
            say(format!(
                "fit: loss {loss:.4} accuracy {accuracy:.4}{}",
                val_accuracy.map_or(String::new(), |a| format!(
                    " val_loss {:.4} val_accuracy {a:.4}",
                    val_loss.unwrap_or(0.0)
                ))
            ));
            let h = History {
                epochs: vec![rec],
                kept_epoch: 1,
                stopped_early: false,
            };
            (
                HeadKind::Logistic,
                net,
                h,
                "logistic".to_string(),
                serde_json::json!({"C": c, "max_iter": max_iter}),
            )
        }
    };
    let training = serde_json::json!({
        "settings": settings,
        "features": cfg.features.display().to_string(),
        "train_rows": train_idx.len(),
        "val_rows": val_idx.len(),
        "validation": val_from,
        "kept_epoch": history.kept_epoch,
        "stopped_early": history.stopped_early,
        "final": history.epochs.get(history.kept_epoch.saturating_sub(1)),
    })
    .to_string();
    let head = Head {
        kind,
        network,
        pool: cfg.pool,
        classes: meta.classes.clone(),
        feature_shape: meta.feature_shape.clone(),
        base: meta.clone(),
        spec,
        training,
        history_csv: history.csv(),
    };
    head.save(&cfg.out)?;
    std::fs::write(&cfg.history, history.csv()).map_err(|e| Error::io(&cfg.history, e))?;
    if let Some(best) = history.epochs.get(history.kept_epoch.saturating_sub(1)) {
        let val = match (best.val_loss, best.val_accuracy) {
            (Some(l), Some(a)) => format!("val_loss {l:.4} val_accuracy {a:.4}"),
            _ => format!(
                "loss {:.4} accuracy {:.4} (no validation)",
                best.loss, best.accuracy
            ),
        };
        let stop = if history.stopped_early {
            ", stopped early"
        } else {
            ""
        };
        say(format!(
            "kept epoch {} of {}{stop}: {val}",
            history.kept_epoch,
            history.epochs.len()
        ));
        // First epoch reaching the lowest val_loss / highest val_accuracy.
        let best = |f: fn(&EpochRecord) -> Option<f64>, lower: bool| {
            history
                .epochs
                .iter()
                .filter_map(|r| f(r).map(|v| (v, r.epoch)))
                .reduce(|a, b| {
                    if (lower && b.0 < a.0) || (!lower && b.0 > a.0) {
                        b
                    } else {
                        a
                    }
                })
        };
        if let (Some((l, le)), Some((a, ae))) =
            (best(|r| r.val_loss, true), best(|r| r.val_accuracy, false))
        {
            say(format!(
                "best: val_loss {l:.4} (epoch {le}), val_accuracy {a:.4} (epoch {ae})"
            ));
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    say(format!(
        "wrote {} and {} in {seconds:.2} s",
        cfg.out.display(),
        cfg.history.display()
    ));
    Ok(TrainHeadSummary {
        head: cfg.out.clone(),
        history,
        train_rows: train_idx.len(),
        val_rows: val_idx.len(),
        seconds,
    })
}
