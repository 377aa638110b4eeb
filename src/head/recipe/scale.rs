//! `auto` on a train split over the memory budget: the candidates are scored as always, on a
//! seeded, stratified subsample of the train rows and on the validation rows, both held in
//! memory; the winner is then trained on every train row, streamed from the cache
//! ([`crate::head::stream`]), on the features standardised as the subsample's were, and the
//! standardisation is folded into its first layer. Its epochs give it the optimizer steps its
//! best epoch took on the subsample (at least one pass over every row).

use ndarray::Array1;

use super::{config, refit, score_candidates, AutoData, AutoReport, Solver};
use crate::error::Result;
use crate::events::{Event, Reporter};
use crate::head::fit::{History, TrainConfig};
use crate::head::net::{LayerSpec, Network};

/// Most train rows the candidates are scored on when the split is streamed.
pub const SUBSAMPLE_ROWS: usize = 50_000;

/// How the head of a streamed `auto` run is trained.
pub enum ScaledFit {
    /// The baseline won (an L-BFGS fit needs every row at once): its fit on the subsample and the
    /// validation rows is the head.
    Subsample(Network, History, Vec<LayerSpec>),
    /// Train `config` on every row streamed, each block standardised by `(x - mean) / std`, then
    /// fold `mean` and `std` into the first layer ([`super::fold_standardization`]).
    Streamed {
        config: TrainConfig,
        mean: Array1<f32>,
        std: Array1<f32>,
    },
}

/// Scores the candidates on `d` (the subsample and the validation rows) and says how to train
/// the winner on all `all_rows` train rows.
pub fn auto_at_scale(
    mut d: AutoData,
    all_rows: usize,
    rep: &dyn Reporter,
) -> Result<(AutoReport, ScaledFit)> {
    let (pool, raw, mut report) = score_candidates(&mut d, rep)?;
    let d = &d;
    let best = &report.scored[report.chosen];
    let fit = match best.candidate.solver {
        Solver::Lbfgs { .. } => {
            let rows: Vec<usize> = (0..pool.n).collect();
            rep.report(Event::Line(&format!(
                "auto: chose {} ({}); fit on the {} rows of the subsample and validation (L-BFGS needs its rows in memory)",
                best.candidate.name, report.reason, pool.n
            )));
            report.refit_rows = rows.len();
            let (net, history, spec) = refit(&best.candidate, best.epochs, &pool, &raw, &rows, d)?;
            ScaledFit::Subsample(net, history, spec)
        }
        Solver::Adam { .. } => {
            let epochs = (best.epochs * d.train.len())
                .div_ceil(all_rows.max(1))
                .max(1);
            rep.report(Event::Line(&format!(
                "auto: chose {} ({}); training it on all {all_rows} train rows streamed for {epochs} epoch(s) (its best epoch {} on {} subsample rows)",
                best.candidate.name,
                report.reason,
                best.epochs,
                d.train.len()
            )));
            report.refit_rows = all_rows;
            ScaledFit::Streamed {
                config: config(&best.candidate, d.seed, d.threads, epochs, None)?,
                mean: pool.mean.clone(),
                std: pool.std.clone(),
            }
        }
    };
    Ok((report, fit))
}
