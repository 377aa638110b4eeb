//! Phase 2: top and head trained together at a low learning rate, a checkpoint after every epoch
//! (resumed when the settings are the same), early stopping and `--restore-best`.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::fit::{EpochRecord, History};
use crate::head::train_head::table_row;
use crate::util::rng::Rng;

use super::*;

/// The checkpoint of an interrupted phase 2 with the same settings, if there is one.
pub(super) fn load_checkpoint(
    path: &Path,
    fingerprint: &str,
    rep: &dyn Reporter,
) -> Option<Checkpoint> {
    if !path.exists() {
        return None;
    }
    match Checkpoint::load(path) {
        Ok(c) if c.fingerprint == fingerprint => Some(c),
        Ok(_) => {
            rep.report(Report::Line(&format!(
                "{} is from a run with other settings: starting over",
                path.display()
            )));
            None
        }
        Err(e) => {
            rep.report(Report::Line(&format!("{e}: starting over")));
            None
        }
    }
}

/// The state phase 2 trains: the top's and the head's variables, the optimizer and the generators.
pub(super) struct Phase2<'a> {
    pub(super) cfg: &'a FinetuneConfig,
    pub(super) top: &'a TopGraph,
    pub(super) head: &'a CandleHead,
    pub(super) inp: &'a Inputs,
    pub(super) vars: Vec<Var>,
    pub(super) opt: Box<dyn crate::head::optim::Optimizer>,
    pub(super) shuffle: Rng,
    pub(super) dropout: Rng,
    pub(super) history: History,
    /// The first epoch to run (after a resumed checkpoint's last).
    pub(super) first: usize,
}

impl<'a> Phase2<'a> {
    pub(super) fn new(
        cfg: &'a FinetuneConfig,
        top: &'a TopGraph,
        head: &'a CandleHead,
        inp: &'a Inputs,
    ) -> Self {
        let mut vars: Vec<Var> = top.params().iter().map(|(_, v)| v.clone()).collect();
        vars.extend(head.vars());
        Phase2 {
            cfg,
            top,
            head,
            inp,
            vars,
            opt: cfg.optimizer.build(),
            shuffle: Rng(cfg.seed.wrapping_add(0x0f1e_2d3c)),
            dropout: Rng(cfg.seed.wrapping_add(0x4b5a_6978)),
            history: History::default(),
            first: 1,
        }
    }

    /// Continues from a checkpoint: weights, optimizer state, generators and history.
    pub(super) fn resume(&mut self, c: Checkpoint, path: &Path, rep: &dyn Reporter) -> Result<()> {
        let sizes_ok = c.vars.len() == self.vars.len()
            && c.vars
                .iter()
                .zip(&self.vars)
                .all(|(a, v)| a.len() == v.elem_count());
        if !sizes_ok {
            return Err(Error::cache(
                path,
                "holds other tensors than this model's top and head: delete it to start over",
            ));
        }
        // A run is never recorded with fewer epochs than its weights were trained for.
        if c.epoch > self.cfg.epochs {
            return Err(Error::cache(
                path,
                format!(
                    "holds phase 2 after epoch {}, past --epochs {}: give --epochs {} or more to continue it, or delete it to start over",
                    c.epoch, self.cfg.epochs, c.epoch
                ),
            ));
        }
        for (v, a) in self.vars.iter().zip(c.vars) {
            v.set(&Tensor::from_vec(a, v.shape(), &Device::Cpu).map_err(cerr)?)
                .map_err(cerr)?;
        }
        self.opt.restore(c.opt_steps, c.opt_slots);
        self.shuffle.0 = c.rngs[0];
        self.dropout.0 = c.rngs[1];
        self.history = c.history;
        self.first = c.epoch + 1;
        rep.report(Report::Line(&format!(
            "resuming phase 2 after epoch {} from {}",
            c.epoch,
            path.display()
        )));
        for r in &self.history.epochs {
            rep.report(Report::Line(&table_row(r)));
        }
        Ok(())
    }

    /// One pass over the training rows; returns mean loss and accuracy.
    pub(super) fn train_epoch(&mut self, epoch: usize, rep: &dyn Reporter) -> Result<(f64, f64)> {
        let inp = self.inp;
        let mut order = inp.fit_idx.clone();
        self.shuffle.shuffle(&mut order);
        let task = format!("epoch {epoch}");
        rep.report(Report::Start {
            task: &task,
            total: order.len() as u64,
            done: 0,
        });
        let (mut total, mut correct) = (0f64, 0usize);
        for chunk in order.chunks(self.cfg.batch_size) {
            let x = batch_tensor(&inp.all, inp.row, &inp.shape, chunk)?;
            let y: Vec<u32> = chunk.iter().map(|&i| inp.all.labels[i]).collect();
            let z = logits(self.top, self.head, &x, Some(&mut self.dropout))?;
            let loss = head::cross_entropy(&z, &y).map_err(cerr)?;
            let lv = loss.to_scalar::<f32>().map_err(cerr)? as f64;
            if !lv.is_finite() {
                return Err(Error::Runtime(format!(
                    "phase 2 epoch {epoch}: the loss is {lv}; lower --lr (now {})",
                    self.opt.learning_rate()
                )));
            }
            total += lv * chunk.len() as f64;
            correct += count_correct(&z, &y)?;
            step(self.opt.as_mut(), &self.vars, &loss)?;
            rep.report(Report::Advance(chunk.len() as u64));
        }
        rep.report(Report::Finish);
        let n = order.len().max(1) as f64;
        Ok((total / n, correct as f64 / n))
    }

    /// Saves the state after `epoch` (written to a temporary file, then renamed).
    pub(super) fn checkpoint(&self, epoch: usize, fingerprint: &str, path: &Path) -> Result<()> {
        let (opt_steps, opt_slots) = self.opt.snapshot();
        Checkpoint {
            fingerprint: fingerprint.to_string(),
            epoch,
            vars: self
                .vars
                .iter()
                .map(|v| v.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                .collect::<candle_core::Result<_>>()
                .map_err(cerr)?,
            opt_steps,
            opt_slots,
            rngs: [self.shuffle.0, self.dropout.0],
            history: self.history.clone(),
        }
        .save(path)
    }

    /// Runs the remaining epochs with checkpoints, early stopping and `--restore-best`; returns the
    /// seconds per epoch run.
    pub(super) fn run(
        &mut self,
        fingerprint: &str,
        ckpt: &Path,
        rep: &dyn Reporter,
    ) -> Result<f64> {
        let cfg = self.cfg;
        let hist_path = sibling(&cfg.out, ".phase2.history.csv");
        let t_train = Instant::now();
        let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
        for epoch in self.first..=cfg.epochs {
            let te = Instant::now();
            let (loss, accuracy) = self.train_epoch(epoch, rep)?;
            let (val_loss, val_accuracy) = if self.inp.val_idx.is_empty() {
                (None, None)
            } else {
                let inp = self.inp;
                let (l, a) = evaluate(
                    self.top,
                    self.head,
                    inp.val_data(),
                    inp.row,
                    &inp.shape,
                    &inp.val_idx,
                )?;
                (Some(l), Some(a))
            };
            let rec = EpochRecord {
                epoch,
                loss,
                accuracy,
                val_loss,
                val_accuracy,
                lr: self.opt.learning_rate(),
                seconds: te.elapsed().as_secs_f64(),
            };
            rep.report(Report::Line(&table_row(&rec)));
            let improved = val_loss.is_some_and(|l| best.as_ref().is_none_or(|(b, _, _)| l < *b));
            if improved {
                let snapshot = if cfg.restore_best {
                    self.vars
                        .iter()
                        .map(|v| v.as_tensor().copy())
                        .collect::<candle_core::Result<Vec<_>>>()
                        .map_err(cerr)?
                } else {
                    Vec::new()
                };
                best = Some((val_loss.unwrap_or(f64::INFINITY), epoch, snapshot));
            }
            self.history.epochs.push(rec);
            self.history.kept_epoch = epoch;
            History::output(&hist_path).write_bytes(self.history.csv().as_bytes())?;
            self.checkpoint(epoch, fingerprint, ckpt)?;
            rep.report(Report::Checkpoint {
                task: "finetune",
                count: epoch,
            });
            if let (Some(p), Some((_, b, _))) = (cfg.patience, &best) {
                if epoch - b >= p && epoch < cfg.epochs {
                    rep.report(Report::Line(&format!(
                        "early stop: no lower val_loss for {p} epochs (best: epoch {b})"
                    )));
                    self.history.stopped_early = true;
                    break;
                }
            }
        }
        if cfg.restore_best {
            if let Some((l, b, snapshot)) = best.take() {
                if b != self.history.epochs.len() {
                    for (v, t) in self.vars.iter().zip(&snapshot) {
                        v.set(t).map_err(cerr)?;
                    }
                    rep.report(Report::Line(&format!(
                        "restored the weights of epoch {b} (val_loss {l:.4})"
                    )));
                }
                self.history.kept_epoch = b;
            }
        }
        let run_epochs = (self.history.epochs.len() + 1)
            .saturating_sub(self.first)
            .max(1);
        Ok(t_train.elapsed().as_secs_f64() / run_epochs as f64)
    }
}
