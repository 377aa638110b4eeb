//! Phase 1: without `--head`, a new head trained on the frozen top's outputs with our own training
//! loop ([`crate::head::fit::fit`]).

use candle_core::DType;
use ndarray::Array2;

use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::file::Head;
use crate::head::fit::{fit, output_units, History, Labels, TrainData};
use crate::head::net::{spec_string, Network, Pool};
use crate::head::train_head::{table_header, table_row};

use super::*;

/// The head phase 2 starts from.
pub(super) struct StartHead {
    pub(super) network: Network,
    pub(super) pool: Pool,
    pub(super) spec: String,
    /// Phase 1's history, when it ran now.
    pub(super) phase1: Option<History>,
}

/// The head: the given one, or (phase 1) a new one trained on the frozen top's outputs. When phase 2
/// resumes, phase 1 is not run again: its weights are in the checkpoint.
pub(super) fn start_head(
    cfg: &FinetuneConfig,
    top: &TopGraph,
    inp: &Inputs,
    given: Option<Head>,
    resuming: bool,
    rep: &dyn Reporter,
) -> Result<(StartHead, Vec<usize>)> {
    let probe = top
        .forward(&batch_tensor(&inp.all, inp.row, &inp.shape, &[0])?)
        .map_err(|e| Error::model(&cfg.model, e))?;
    let top_shape: Vec<usize> = probe.dims()[1..].to_vec();
    let classes = inp.meta.classes.len();
    let start = match given {
        Some(h) => {
            if h.classes != inp.meta.classes {
                return Err(Error::Config(format!(
                    "class lists differ: head has [{}], {} has [{}]",
                    h.classes.join(", "),
                    cfg.data.display(),
                    inp.meta.classes.join(", ")
                )));
            }
            if h.feature_shape != top_shape {
                return Err(Error::Config(format!(
                    "feature shapes differ: head has {:?}, the model's output is {top_shape:?}",
                    h.feature_shape
                )));
            }
            StartHead {
                network: h.network,
                pool: h.pool,
                spec: h.spec,
                phase1: None,
            }
        }
        None if resuming => {
            let dim = cfg.pool.output_dim(&top_shape, &inp.meta.layout)?;
            crate::head::net::check_size(dim, &cfg.head_train.spec, output_units(classes))?;
            StartHead {
                network: Network::new(
                    dim,
                    &cfg.head_train.spec,
                    output_units(classes),
                    cfg.head_train.seed,
                ),
                pool: cfg.pool,
                spec: spec_string(&cfg.head_train.spec),
                phase1: None,
            }
        }
        None => phase1(cfg, top, inp, rep)?,
    };
    if start.network.output_dim() != Some(output_units(classes)) {
        return Err(Error::Config(format!(
            "the head has {:?} outputs, {classes} classes need {}",
            start.network.output_dim(),
            output_units(classes)
        )));
    }
    Ok((start, top_shape))
}

/// Phase 1: a new head trained on the frozen top's pooled outputs.
pub(super) fn phase1(
    cfg: &FinetuneConfig,
    top: &TopGraph,
    inp: &Inputs,
    rep: &dyn Reporter,
) -> Result<StartHead> {
    let say = |s: String| rep.report(Report::Line(&s));
    let pooler = CandleHead::new(
        &Network { layers: vec![] },
        cfg.pool,
        &inp.meta.layout,
        DType::F32,
    )
    .map_err(cerr)?;
    let every: Vec<usize> = (0..inp.all.len()).collect();
    let x = top_features(top, &pooler, &inp.all, inp.row, &inp.shape, &every)?;
    let vx = match &inp.val {
        Some(v) => Some(top_features(
            top,
            &pooler,
            v,
            inp.row,
            &inp.shape,
            &inp.val_idx,
        )?),
        None => None,
    };
    let y = inp.all.labels.clone();
    let (vxr, vyr, vidx): (&Array2<f32>, &[u32], Vec<usize>) = match (&vx, &inp.val) {
        (Some(vx), Some(v)) => (vx, &v.labels, (0..v.len()).collect()),
        _ => (&x, &y, inp.val_idx.clone()),
    };
    say(format!(
        "phase 1: head {} -> {} on the frozen top, {} epochs of {}, {}",
        cfg.pool.name(),
        spec_string(&cfg.head_train.spec),
        cfg.head_train.epochs,
        cfg.head_train.batch_size,
        cfg.head_train.optimizer.describe()
    ));
    say(table_header());
    let data = TrainData {
        x: &x,
        y: Labels::Classes(&y),
        train: inp.fit_idx.clone(),
        val: (!vidx.is_empty()).then(|| (vxr, Labels::Classes(vyr), vidx.clone())),
        classes: inp.meta.classes.len(),
    };
    let (network, h) = fit(&cfg.head_train, &data, |r| say(table_row(r)))?;
    let hist = sibling(&cfg.out, ".phase1.history.csv");
    History::output(&hist).write_bytes(h.csv().as_bytes())?;
    Ok(StartHead {
        network,
        pool: cfg.pool,
        spec: spec_string(&cfg.head_train.spec),
        phase1: Some(h),
    })
}
