//! `train-head` as a library call: read the feature cache, pool, choose the validation rows, train
//! (our backprop or the linfa-logistic baseline), and write the head file and its history CSV.

use crate::util::output::Output;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::{FeatureCache, SplitData};
use crate::cache::{AUG_SPLIT, FLIP_SPLIT};
use crate::data::exclude::Exclusion;
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::head::file::{Head, HeadKind};
use crate::head::fit::{fit, output_units, EpochRecord, History, Labels, TrainConfig, TrainData};
use crate::head::logistic::fit_logistic;
use crate::head::net::{spec_string, Network, Pool};
use crate::head::recipe::{self, AutoData};
use crate::head::stream;

mod rows;
mod streamed;
use crate::head::validation::{leave_out, validation_rows};
use ndarray::Array2;
use rows::{targets, Rows, ValRows};
use streamed::train_streamed;

/// Our backprop with a layer spec, the `auto` recipe, or the linfa baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadChoice {
    Mlp(TrainConfig),
    /// [`crate::head::recipe::auto`]: candidates scored on validation rows, the best refit.
    Auto {
        threads: usize,
    },
    Logistic {
        c: f64,
        max_iter: u64,
    },
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
    /// A multi-label head's decision threshold for every class; `None`: each class's threshold
    /// maximises its F1 on the validation rows ([`crate::head::tags`]).
    pub threshold: Option<f32>,
    /// Photos left out of the train and validation rows ([`crate::data::exclude`]).
    pub exclude: Option<PathBuf>,
    /// The memory budget in bytes: a train split over it is streamed from disk
    /// ([`crate::head::stream`]); `None`: half the machine's available memory.
    pub memory: Option<u64>,
    /// Rows per block of a streamed run (`None`: from the budget).
    pub block_rows: Option<usize>,
}

impl TrainHeadConfig {
    /// Defaults of the command line: the `auto` recipe, `<features>` -> `<name>.head.h5` beside it.
    pub fn new(features: impl Into<PathBuf>) -> Self {
        let features = features.into();
        let out = default_head_path(&features);
        TrainHeadConfig {
            history: history_path(&out),
            out,
            features,
            head: HeadChoice::Auto { threads: 0 },
            pool: Pool::Flatten,
            val_split: 0.2,
            seed: 42,
            threshold: None,
            exclude: None,
            memory: None,
            block_rows: None,
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
    let [epoch, loss, acc, val_loss, val_acc, lr, secs] = r.columns((4, 2), Some(3), "-");
    format!("{epoch:>5} {loss:>9} {acc:>9} {val_loss:>9} {val_acc:>9} {lr:>10} {secs:>7}")
}

/// Opens a cache for training: at least two classes and a `train` split.
fn open_for_training(path: &Path) -> Result<FeatureCache> {
    let cache = FeatureCache::open(path)?;
    let meta = &cache.meta;
    let classes = meta.classes.len();
    if classes < 2 {
        return Err(Error::cache(
            path,
            format!(
                "needs at least 2 classes to train a head, has {classes} ({})",
                meta.classes.join(", ")
            ),
        ));
    }
    if !meta.splits.iter().any(|s| s == "train") {
        return Err(Error::cache(
            path,
            format!("no 'train' split (has: {})", meta.splits.join(", ")),
        ));
    }
    Ok(cache)
}

/// A single-label train split with images of at least two classes: a head learns nothing from one
/// (an empty split, or one whose other classes all went to val or test, is named with its counts).
fn check_train_classes(path: &Path, meta: &crate::cache::CacheMeta, labels: &[u32]) -> Result<()> {
    if meta.multi_label {
        return Ok(());
    }
    let counts = class_counts(meta.classes.len(), (labels, None), 0..labels.len());
    if counts.iter().filter(|&&c| c > 0).count() >= 2 {
        return Ok(());
    }
    let held: Vec<String> = meta
        .classes
        .iter()
        .zip(&counts)
        .map(|(name, c)| format!("{name}: {c}"))
        .collect();
    Err(Error::cache(
        path,
        format!(
            "the train split holds images of fewer than 2 classes ({}); a head needs train images of at least two",
            held.join(", ")
        ),
    ))
}

/// Images of each of `classes` among `rows`: by label, or by tag of a multi-label cache.
fn class_counts(
    classes: usize,
    (labels, tags): (&[u32], Option<&Array2<f32>>),
    rows: impl IntoIterator<Item = usize>,
) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for i in rows {
        match tags {
            Some(t) => {
                for (c, &v) in t.row(i).iter().enumerate() {
                    counts[c] += usize::from(v > 0.5);
                }
            }
            None => {
                if let Some(c) = counts.get_mut(labels[i] as usize) {
                    *c += 1;
                }
            }
        }
    }
    counts
}

/// Warns of the classes (tags of a multi-label cache) that none of the training rows `rows` has,
/// once validation rows and `--exclude` are taken out: the head never learns them.
fn warn_untrained(
    meta: &crate::cache::CacheMeta,
    (labels, tags): (&[u32], Option<&Array2<f32>>),
    rows: &[usize],
    rep: &dyn Reporter,
) {
    let counts = class_counts(meta.classes.len(), (labels, tags), rows.iter().copied());
    let none: Vec<&str> = meta
        .classes
        .iter()
        .zip(&counts)
        .filter(|(_, &c)| c == 0)
        .map(|(n, _)| n.as_str())
        .collect();
    if !none.is_empty() {
        rep.report(Event::Warning(&format!(
            "class(es) {} have no training rows (after validation rows and --exclude are taken out): the head never learns them",
            none.join(", ")
        )));
    }
}

/// What a training run produced, before it is written.
struct Trained {
    kind: HeadKind,
    network: Network,
    history: History,
    spec: String,
    settings: serde_json::Value,
    /// Multi-label: out-of-sample validation probabilities and targets, when the network was
    /// refit on the validation rows (the thresholds are chosen on these).
    val_probs: Option<(Array2<f32>, Array2<f32>)>,
}

impl Trained {
    /// A head the auto recipe chose: its network, history and hidden layers, and the choice.
    fn auto(
        (network, history, spec): (Network, History, Vec<crate::head::net::LayerSpec>),
        settings: serde_json::Value,
        val_probs: Option<(Array2<f32>, Array2<f32>)>,
    ) -> Trained {
        Trained {
            kind: HeadKind::Mlp,
            network,
            history,
            spec: spec_string(&spec),
            settings,
            val_probs,
        }
    }
}

/// Trains a head on `cfg.features` and writes `cfg.out` and `cfg.history`; the settings and the
/// per-epoch table go to `rep` as [`Event::Line`]s.
/// The head and history outputs of `cfg`, checked before any work: neither is the feature cache, and
/// the two are different files.
fn outputs(cfg: &TrainHeadConfig) -> Result<(Output<'static>, Output<'static>)> {
    let head = Output::new(&cfg.out)
        .input(&cfg.features)
        .replace(crate::head::file::replace_head());
    let history = History::output(&cfg.history)
        .input(&cfg.features)
        .input(&cfg.out);
    head.check()?;
    history.check()?;
    if crate::util::paths::resolve(&cfg.out) == crate::util::paths::resolve(&cfg.history) {
        return Err(Error::output(
            &cfg.out,
            "is both the head and the history output; give them different names",
        ));
    }
    Ok((head, history))
}

pub fn train_head(cfg: &TrainHeadConfig, rep: &dyn Reporter) -> Result<TrainHeadSummary> {
    let t0 = Instant::now();
    let outs = outputs(cfg)?;
    let cache = open_for_training(&cfg.features)?;
    let meta = &cache.meta;
    let budget = cfg.memory.unwrap_or_else(stream::default_budget);
    let raw_row: usize = meta.feature_shape.iter().product::<usize>().max(1) * 4;
    let train_bytes = cache.split_len("train")? as u64 * raw_row as u64;
    if train_bytes > budget {
        return train_streamed(cfg, &cache, (budget, train_bytes), outs, rep, t0);
    }
    let mut rows = Rows::load(&cache, cfg)?;
    warn_untrained(meta, (&rows.y, rows.tags.as_ref()), &rows.train_idx, rep);
    let info = RunInfo {
        train_rows: rows.train_idx.len(),
        val_rows: rows.val_idx.len(),
        val_from: rows.val_from.clone(),
        excluded: rows.excluded.clone(),
        streamed: None,
    };
    announce(cfg, meta, &info, rows.x.ncols(), rep)?;
    let classes = meta.classes.len();
    let t = match &cfg.head {
        HeadChoice::Mlp(tc) => train_mlp(tc, classes, &rows, rep)?,
        HeadChoice::Logistic { .. } if meta.multi_label => {
            return Err(Error::invalid(
                "head",
                format!("logistic trains single-label heads; {} is multi-label (use --recipe auto or a layer spec such as --head none)", cfg.features.display()),
            ))
        }
        HeadChoice::Logistic { c, max_iter } => {
            train_logistic((*c, *max_iter), classes, &rows, rep)?
        }
        HeadChoice::Auto { threads } => train_auto(*threads, cfg.seed, classes, &mut rows, rep)?,
    };
    let thresholds = meta
        .multi_label
        .then(|| thresholds(cfg, &t, &rows, &meta.classes, rep));
    write_head(cfg, meta, t, thresholds, info, outs, rep, t0)
}

/// What a run trained on, for its first lines and the head's training JSON.
struct RunInfo {
    train_rows: usize,
    val_rows: usize,
    val_from: String,
    excluded: Option<serde_json::Value>,
    /// How a streamed run read the cache (`None`: in memory).
    streamed: Option<serde_json::Value>,
}

/// The first lines of a run: the cache, the rows, the head; and the threshold check.
fn announce(
    cfg: &TrainHeadConfig,
    meta: &crate::cache::CacheMeta,
    info: &RunInfo,
    width: usize,
    rep: &dyn Reporter,
) -> Result<()> {
    let say = |s: String| rep.report(Event::Line(&s));
    say(format!(
        "train-head: {} ({} classes: {}); train {} rows, validation {} rows ({})",
        cfg.features.display(),
        meta.classes.len(),
        meta.classes.join(", "),
        info.train_rows,
        info.val_rows,
        info.val_from
    ));
    if let Some(said) = info.excluded.as_ref().and_then(|e| e["said"].as_str()) {
        say(said.to_string());
    }
    check_threshold(cfg, meta.multi_label)?;
    say(format!(
        "head: {} {:?} -> {} -> {}",
        cfg.pool.name(),
        meta.feature_shape,
        width,
        describe_head(cfg, meta.classes.len(), meta.multi_label)
    ));
    Ok(())
}

/// Writes the head file and its history, and reports the kept epoch.
#[allow(clippy::too_many_arguments)]
fn write_head(
    cfg: &TrainHeadConfig,
    meta: &crate::cache::CacheMeta,
    t: Trained,
    thresholds: Option<(Vec<f32>, String)>,
    info: RunInfo,
    (head_out, history_out): (Output<'static>, Output<'static>),
    rep: &dyn Reporter,
    t0: Instant,
) -> Result<TrainHeadSummary> {
    let say = |s: String| rep.report(Event::Line(&s));
    let history = t.history;
    let training = serde_json::json!({
        "settings": t.settings,
        "features": cfg.features.display().to_string(),
        "train_rows": info.train_rows,
        "val_rows": info.val_rows,
        "validation": info.val_from,
        "excluded": info.excluded,
        "streamed": info.streamed,
        "kept_epoch": history.kept_epoch,
        "stopped_early": history.stopped_early,
        "final": history.epochs.get(history.kept_epoch.saturating_sub(1)),
        "thresholds": thresholds.as_ref().map(|(_, how)| how),
    })
    .to_string();
    let head = Head {
        kind: t.kind,
        network: t.network,
        pool: cfg.pool,
        classes: meta.classes.clone(),
        feature_shape: meta.feature_shape.clone(),
        base: meta.clone(),
        spec: t.spec,
        training,
        history_csv: history.csv(),
        thresholds: thresholds.map(|(t, _)| t),
    };
    // Both or neither: a failed history write used to leave the new head beside the old history.
    let csv = history.csv();
    crate::util::output::write_together(vec![
        (
            &head_out,
            Box::new(|tmp: &Path| head.write_into(tmp, &cfg.out)),
        ),
        (
            &history_out,
            Box::new(|tmp: &Path| {
                std::fs::write(tmp, csv.as_bytes()).map_err(|e| Error::io(tmp, e))
            }),
        ),
    ])?;
    for line in history.summary_lines() {
        say(line);
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
        train_rows: info.train_rows,
        val_rows: info.val_rows,
        seconds,
    })
}

/// `--exclude`: the listed photos leave `v`'s train and validation rows; what the head file says
/// of it (the list, its sha256, what was left out).
fn exclude(
    cfg: &TrainHeadConfig,
    cache: &FeatureCache,
    paths: &[String],
    v: &mut crate::head::validation::Validation,
) -> Result<Option<serde_json::Value>> {
    let Some(list) = &cfg.exclude else {
        return Ok(None);
    };
    let ex = Exclusion::read(list)?;
    let said = leave_out(cache, &ex, paths, v)?;
    Ok(Some(
        serde_json::json!({"list": list.display().to_string(), "sha256": ex.sha256, "files": ex.files.len(), "said": said}),
    ))
}

/// A layer-spec head as trained: the network, its history and its settings.
fn mlp_trained(tc: &TrainConfig, (network, history): (Network, History)) -> Trained {
    Trained {
        kind: HeadKind::Mlp,
        network,
        history,
        spec: spec_string(&tc.spec),
        settings: mlp_settings(tc),
        val_probs: None,
    }
}

/// `--threshold` is a probability, and only for a multi-label cache.
fn check_threshold(cfg: &TrainHeadConfig, multi_label: bool) -> Result<()> {
    match cfg.threshold {
        Some(t) if !(0.0..=1.0).contains(&t) => Err(Error::invalid(
            "threshold",
            format!("must be a probability in [0, 1], got {t}"),
        )),
        Some(_) if !multi_label => Err(Error::invalid(
            "threshold",
            format!(
                "only for a multi-label cache; {} is single-label (a class per image)",
                cfg.features.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// A multi-label head's thresholds and how they were chosen ([`crate::head::tags::decide`]), on
/// the validation rows' probabilities (out of sample: the auto recipe's come from before its refit).
fn thresholds(
    cfg: &TrainHeadConfig,
    t: &Trained,
    rows: &Rows,
    classes: &[String],
    rep: &dyn Reporter,
) -> (Vec<f32>, String) {
    let val = t
        .val_probs
        .clone()
        .or_else(|| rows.val_probabilities(&t.network));
    crate::head::tags::decide(cfg.threshold, val, classes, rep)
}

/// The head as the settings describe it, for the first lines of the run.
fn describe_head(cfg: &TrainHeadConfig, classes: usize, multi_label: bool) -> String {
    let outputs = if multi_label {
        classes
    } else {
        output_units(classes)
    };
    let output = match (multi_label, outputs) {
        (true, _) => "sigmoids (multi-label)",
        (false, 1) => "sigmoid",
        _ => "softmax",
    };
    match &cfg.head {
        HeadChoice::Mlp(tc) => format!(
            "{} -> {outputs} {output}; loss {}; {}; schedule {}; {} epochs of {}, seed {}",
            spec_string(&tc.spec),
            tc.loss.describe(),
            tc.optimizer.describe(),
            tc.schedule.describe(),
            tc.epochs,
            tc.batch_size,
            tc.seed
        ),
        HeadChoice::Logistic { c, max_iter } => {
            format!("linfa-logistic (C={c}, max_iter={max_iter}) -> {outputs} {output}")
        }
        HeadChoice::Auto { .. } => format!(
            "recipe auto (chosen below) -> {outputs} {output}, seed {}",
            cfg.seed
        ),
    }
}

/// Our backprop on the pooled rows.
fn train_mlp(tc: &TrainConfig, classes: usize, rows: &Rows, rep: &dyn Reporter) -> Result<Trained> {
    let say = |s: String| rep.report(Event::Line(&s));
    say(table_header());
    let (vx, vy) = rows.val_labels();
    let data = TrainData {
        x: &rows.x,
        y: rows.labels(),
        train: rows.train_idx.clone(),
        val: (!rows.val_idx.is_empty()).then(|| (vx, vy, rows.val_idx.clone())),
        classes,
    };
    Ok(mlp_trained(tc, fit(tc, &data, |r| say(table_row(r)))?))
}

/// A layer-spec head's training settings, for the head file.
fn mlp_settings(tc: &TrainConfig) -> serde_json::Value {
    serde_json::json!({
        "loss": tc.loss.describe(),
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
    })
}

/// The `auto` recipe on the pooled rows ([`recipe::auto`]; [`recipe::auto_tags`] for a
/// multi-label cache).
fn train_auto(
    threads: usize,
    seed: u64,
    classes: usize,
    rows: &mut Rows,
    rep: &dyn Reporter,
) -> Result<Trained> {
    let (network, history, settings, spec, val_probs) = match &rows.tags {
        Some(tags) => {
            let val = match &rows.val {
                Some((vx, _, Some(vt))) => Some((vx, vt, rows.val_idx.as_slice())),
                _ => (!rows.val_idx.is_empty()).then_some((&rows.x, tags, rows.val_idx.as_slice())),
            };
            let data = recipe::TagData {
                x: &rows.x,
                tags,
                train: &rows.train_idx,
                val,
                classes,
                seed,
                threads,
            };
            let (n, h, json, spec, vp) = recipe::auto_tags(&data, rep)?;
            (n, h, json, spec, Some(vp))
        }
        None => {
            // The pool is built in the train rows' own memory: validation rows held out of
            // train are copied out first (the val split is a matrix of its own).
            let x = std::mem::take(&mut rows.x);
            let held: Option<(Array2<f32>, Vec<u32>, Vec<usize>)> =
                (rows.val.is_none() && !rows.val_idx.is_empty()).then(|| {
                    (
                        x.select(ndarray::Axis(0), &rows.val_idx),
                        rows.val_idx.iter().map(|&i| rows.y[i]).collect(),
                        (0..rows.val_idx.len()).collect(),
                    )
                });
            let val = match (&held, &rows.val) {
                (Some((vx, vy, idx)), _) => Some((vx, vy.as_slice(), idx.as_slice())),
                (None, Some((vx, vy, _))) if !rows.val_idx.is_empty() => {
                    Some((vx, vy.as_slice(), rows.val_idx.as_slice()))
                }
                _ => None,
            };
            let data = AutoData {
                x: std::borrow::Cow::Owned(x),
                y: &rows.y,
                train: &rows.train_idx,
                val,
                extra: &rows.extra,
                classes,
                seed,
                threads,
            };
            let (n, h, report, spec) = recipe::auto(data, rep)?;
            (n, h, report.json(), spec, None)
        }
    };
    Ok(Trained::auto((network, history, spec), settings, val_probs))
}

/// The linfa-logistic baseline on the pooled rows: one "epoch" with its train and validation numbers.
fn train_logistic(
    (c, max_iter): (f64, u64),
    classes: usize,
    rows: &Rows,
    rep: &dyn Reporter,
) -> Result<Trained> {
    let t = Instant::now();
    let network = fit_logistic(&rows.x, &rows.y, &rows.train_idx, classes, c, max_iter)?;
    let (vx, vy) = rows.val_xy();
    let val = (!rows.val_idx.is_empty()).then_some((vx, vy, rows.val_idx.as_slice()));
    let val = val.map(|(x, y, r)| (x, Labels::Classes(y), r));
    let history = History::single(
        &network,
        (&rows.x, Labels::Classes(&rows.y), &rows.train_idx),
        val,
        t.elapsed().as_secs_f64(),
    );
    let r = &history.epochs[0];
    rep.report(Event::Line(&format!(
        "fit: loss {:.4} accuracy {:.4}{}",
        r.loss,
        r.accuracy,
        r.val_accuracy.map_or(String::new(), |a| format!(
            " val_loss {:.4} val_accuracy {a:.4}",
            r.val_loss.unwrap_or(0.0)
        ))
    )));
    Ok(Trained {
        kind: HeadKind::Logistic,
        network,
        history,
        spec: "logistic".into(),
        settings: serde_json::json!({"C": c, "max_iter": max_iter}),
        val_probs: None,
    })
}

#[cfg(test)]
mod tests;
