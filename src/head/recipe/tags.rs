//! `--recipe auto` on a multi-label cache: the Adam candidates of [`super::candidates`] (no
//! scikit-learn baseline: it is single-label), each trained with binary cross-entropy per class and
//! early stopping on the validation loss, scored by the macro average precision of the validation
//! rows ([`crate::head::tags::macro_ap`]); the highest wins (ties: the lower validation loss) and is
//! refit on train + validation for its best epoch count. Its validation probabilities, made before
//! the refit, are returned for choosing the thresholds out of sample.

use ndarray::{concatenate, Array2, Axis};

use super::{candidates, config, fold_standardization, schedule, standardize};
use crate::error::Result;
use crate::events::{Event, Reporter};
use crate::head::fit::{fit, History, Labels, TrainData};
use crate::head::net::{LayerSpec, Network};
use crate::head::tags::macro_ap;
use crate::util::rng::Rng;

/// The rows the multi-label recipe works on, already pooled.
pub struct TagData<'a> {
    pub x: &'a Array2<f32>,
    /// Multi-hot targets of `x`'s rows, `[rows, classes]`.
    pub tags: &'a Array2<f32>,
    pub train: &'a [usize],
    /// Validation rows: their matrix, its targets and the rows; without them, a seeded 20% of
    /// `train` is held out.
    pub val: Option<(&'a Array2<f32>, &'a Array2<f32>, &'a [usize])>,
    pub classes: usize,
    pub seed: u64,
    pub threads: usize,
}

/// What the multi-label recipe chose: the refit network (standardisation folded in), its history,
/// the choice as JSON, the hidden layers, and the winner's validation (probabilities, targets).
pub type TagChoice = (
    Network,
    History,
    serde_json::Value,
    Vec<LayerSpec>,
    (Array2<f32>, Array2<f32>),
);

/// Train + validation rows pooled, standardised: (x, targets, train rows, validation rows).
fn pool(d: &TagData) -> (Array2<f32>, Array2<f32>, Vec<usize>, Vec<usize>) {
    let mut xs = vec![d.x.select(Axis(0), d.train)];
    let mut ts = vec![d.tags.select(Axis(0), d.train)];
    let n_train = d.train.len();
    if let Some((vx, vt, rows)) = d.val.filter(|v| !v.2.is_empty()) {
        xs.push(vx.select(Axis(0), rows));
        ts.push(vt.select(Axis(0), rows));
        let x = concatenate(Axis(0), &xs.iter().map(|a| a.view()).collect::<Vec<_>>());
        let t = concatenate(Axis(0), &ts.iter().map(|a| a.view()).collect::<Vec<_>>());
        let (x, t) = (x.expect("same width"), t.expect("same classes"));
        let n = x.nrows();
        return (x, t, (0..n_train).collect(), (n_train..n).collect());
    }
    let mut order: Vec<usize> = (0..n_train).collect();
    Rng(d.seed ^ 0x7a95).shuffle(&mut order);
    let k = (0.2 * n_train as f64).round() as usize;
    let (mut val, mut train) = (order[..k].to_vec(), order[k..].to_vec());
    if val.is_empty() || train.is_empty() {
        // Too few rows to hold any out: validate on the training rows.
        (train, val) = ((0..n_train).collect(), (0..n_train).collect());
    }
    train.sort_unstable();
    val.sort_unstable();
    (xs.remove(0), ts.remove(0), train, val)
}

/// Chooses, refits and returns the multi-label head.
pub fn auto_tags(d: &TagData, rep: &dyn Reporter) -> Result<TagChoice> {
    let say = |s: String| rep.report(Event::Line(&s));
    let (mut x, t, train, val) = pool(d);
    let n = x.nrows();
    let (mean, std) = standardize(&mut x, n);
    let cands = candidates(false);
    say(format!(
        "auto (multi-label): {} train + {} validation rows x {} features, {} classes; {} candidates scored by validation macro average precision",
        train.len(),
        val.len(),
        x.ncols(),
        d.classes,
        cands.len()
    ));
    let (max_epochs, patience) = schedule(train.len(), x.ncols());
    let labels = Labels::Tags(t.view());
    let mut scored = Vec::new();
    for c in &cands {
        let tc = config(c, d.seed, d.threads, max_epochs, Some(patience))?;
        let data = TrainData {
            x: &x,
            y: labels,
            train: train.clone(),
            val: Some((&x, labels, val.clone())),
            classes: d.classes,
        };
        let (net, h) = fit(&tc, &data, |_| {})?;
        let vx = x.select(Axis(0), &val);
        let p = net
            .logits_batched(&vx, 256)
            .mapv(crate::head::activation::sigmoid);
        let vt = t.select(Axis(0), &val);
        let ap = macro_ap(p.view(), vt.view());
        let kept = &h.epochs[h.kept_epoch.saturating_sub(1)];
        let loss = kept.val_loss.unwrap_or(f64::INFINITY);
        say(format!(
            "  {:<26} val_loss {loss:.4}  macro AP {ap:.4}  best epoch {}",
            c.name, h.kept_epoch
        ));
        scored.push((c.clone(), ap, loss, h.kept_epoch, (p, vt)));
    }
    let best = (0..scored.len())
        .max_by(|&a, &b| {
            let (sa, sb) = (&scored[a], &scored[b]);
            sa.1.total_cmp(&sb.1).then(sb.2.total_cmp(&sa.2))
        })
        .expect("candidates");
    let (c, ap, _, epochs, _) = &scored[best];
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    all.dedup();
    say(format!(
        "auto: chose {} (highest validation macro AP, {ap:.4}); refit on {} rows for {epochs} epochs",
        c.name,
        all.len()
    ));
    let tc = config(c, d.seed, d.threads, (*epochs).max(1), None)?;
    let data = TrainData {
        x: &x,
        y: labels,
        train: all.clone(),
        val: None,
        classes: d.classes,
    };
    let (mut net, history) = fit(&tc, &data, |_| {})?;
    fold_standardization(&mut net, &mean, &std)?;
    let json = serde_json::json!({
        "recipe": "auto",
        "multi_label": true,
        "standardize": "centred, divided by the root mean variance; folded into the first dense layer",
        "scoring": "validation macro average precision",
        "candidates": scored.iter().map(|(c, ap, loss, e, _)| serde_json::json!({
            "name": c.name, "layers": c.spec, "val_loss": loss, "val_macro_ap": ap, "epochs": e,
        })).collect::<Vec<_>>(),
        "chosen": c.name,
        "refit_rows": all.len(),
    });
    let spec = tc.spec;
    let val_probs = scored.swap_remove(best).4;
    Ok((net, history, json, spec, val_probs))
}
