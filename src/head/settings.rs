//! Training settings as a user gives them ([`TrainSettings`], each `None` when not given) and how
//! they become a [`HeadChoice`]: with none given the `auto` recipe chooses the head; with any given
//! the seed recipe ([`TrainConfig::default`]) runs with them, an explicit setting always winning.
//! The defaults and the checks that span settings live here once; the binary only parses flags.

use crate::error::{Error, Result};
use crate::head::fit::{
    EarlyStopping, Monitor, OptimizerKind, OptimizerSpec, Schedule, TrainConfig,
};
use crate::head::loss::Loss;
use crate::head::net::parse_spec;
use crate::head::train_head::HeadChoice;

/// Focal loss gamma when none is given (Lin et al.).
pub const DEFAULT_FOCAL_GAMMA: f32 = 2.0;
/// Focal loss alpha (weight of the positive class) when none is given.
pub const DEFAULT_FOCAL_ALPHA: f32 = 0.25;
/// Step schedule: epochs between rate drops.
pub const DEFAULT_STEP_EVERY: usize = 10;
/// Step schedule: factor per drop.
pub const DEFAULT_STEP_GAMMA: f64 = 0.1;
/// Logistic baseline: inverse L2 strength (scikit-learn's `C`).
pub const DEFAULT_C: f64 = 1.0;
/// Logistic baseline: solver iterations.
pub const DEFAULT_MAX_ITER: u64 = 100;

/// The loss, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossName {
    CrossEntropy,
    Focal,
    Hinge,
    SquaredHinge,
    Mse,
}

/// The optimizer, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerName {
    Sgd,
    Adam,
    AdamW,
    RmsProp,
}

impl OptimizerName {
    /// The optimizer with SGD's momentum, Nesterov flag and decay; given to another optimizer they
    /// are refused, by name.
    pub fn kind(
        self,
        momentum: Option<f32>,
        nesterov: bool,
        decay: Option<f64>,
    ) -> Result<OptimizerKind> {
        if self != OptimizerName::Sgd {
            // Zero (the default, said explicitly) is no setting of another optimizer.
            let stray = [
                ("momentum", momentum.is_some_and(|m| m != 0.0)),
                ("nesterov", nesterov),
                ("decay", decay.is_some_and(|d| d != 0.0)),
            ];
            if let Some((what, _)) = stray.iter().find(|(_, g)| *g) {
                return Err(Error::invalid(
                    *what,
                    "applies only when the optimizer is sgd",
                ));
            }
        }
        Ok(match self {
            OptimizerName::Sgd => OptimizerKind::Sgd {
                momentum: momentum.unwrap_or(0.0),
                nesterov,
                decay: decay.unwrap_or(0.0),
            },
            OptimizerName::Adam => OptimizerKind::Adam,
            OptimizerName::AdamW => OptimizerKind::AdamW,
            OptimizerName::RmsProp => OptimizerKind::RmsProp,
        })
    }
}

/// The learning-rate schedule, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleName {
    Constant,
    Step,
    Cosine,
}

/// `auto` chooses a head for the data unless a training setting is given; `seed` is the Keras
/// book's head exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    Auto,
    Seed,
}

/// The settings of a training run as given: `None` (or `false`) is "not given".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainSettings {
    /// A layer spec (see [`parse_spec`]), or `logistic` for the linfa baseline.
    pub head: Option<String>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub loss: Option<LossName>,
    pub label_smoothing: Option<f32>,
    pub focal_gamma: Option<f32>,
    pub focal_alpha: Option<f32>,
    pub optimizer: Option<OptimizerName>,
    /// Default: the optimizer's own ([`OptimizerKind::default_lr`]).
    pub lr: Option<f64>,
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub decay: Option<f64>,
    pub weight_decay: Option<f32>,
    pub schedule: Option<ScheduleName>,
    pub step_every: Option<usize>,
    pub step_gamma: Option<f64>,
    pub min_lr: Option<f64>,
    pub patience: Option<usize>,
    pub min_delta: Option<f64>,
    pub monitor: Option<Monitor>,
    pub restore_best: bool,
    pub clip_norm: Option<f32>,
    pub clip_value: Option<f32>,
    /// `Some(true)`: balanced class weights; `Some(false)`: none, said explicitly.
    pub class_weight: Option<bool>,
    pub plain_step: bool,
    /// Logistic baseline only (not a training setting of our backprop).
    pub c: Option<f64>,
    /// Logistic baseline only.
    pub max_iter: Option<u64>,
}

impl TrainSettings {
    /// The names of the training settings given (`c` and `max_iter` of the baseline are not among
    /// them: they do not change the recipe).
    pub fn given(&self) -> Vec<&'static str> {
        let set = [
            ("head", self.head.is_some()),
            ("epochs", self.epochs.is_some()),
            ("batch_size", self.batch_size.is_some()),
            ("loss", self.loss.is_some()),
            ("label_smoothing", self.label_smoothing.is_some()),
            ("focal_gamma", self.focal_gamma.is_some()),
            ("focal_alpha", self.focal_alpha.is_some()),
            ("optimizer", self.optimizer.is_some()),
            ("lr", self.lr.is_some()),
            ("momentum", self.momentum.is_some()),
            ("nesterov", self.nesterov),
            ("decay", self.decay.is_some()),
            ("weight_decay", self.weight_decay.is_some()),
            ("schedule", self.schedule.is_some()),
            ("step_every", self.step_every.is_some()),
            ("step_gamma", self.step_gamma.is_some()),
            ("min_lr", self.min_lr.is_some()),
            ("patience", self.patience.is_some()),
            ("min_delta", self.min_delta.is_some()),
            ("monitor", self.monitor.is_some()),
            ("restore_best", self.restore_best),
            ("clip_norm", self.clip_norm.is_some()),
            ("clip_value", self.clip_value.is_some()),
            ("class_weight", self.class_weight.is_some()),
            ("plain_step", self.plain_step),
        ];
        set.into_iter()
            .filter(|(_, g)| *g)
            .map(|(n, _)| n)
            .collect()
    }

    /// The head to train: the logistic baseline when `head` is `logistic`; with `Recipe::Auto` and
    /// no training setting given, the auto recipe; else our backprop with the seed recipe's
    /// settings where none is given.
    pub fn choose(&self, recipe: Recipe, seed: u64, threads: usize) -> Result<HeadChoice> {
        if self.head.as_deref().map(str::trim) == Some("logistic") {
            // The baseline is linfa's L-BFGS fit: none of our backprop's settings reach it.
            if let Some(what) = self.given().into_iter().find(|&g| g != "head") {
                return Err(Error::invalid(
                    what,
                    "does not apply to the logistic baseline (it takes C and max_iter only)",
                ));
            }
            return Ok(HeadChoice::Logistic {
                c: self.c.unwrap_or(DEFAULT_C),
                max_iter: self.max_iter.unwrap_or(DEFAULT_MAX_ITER),
            });
        }
        let baseline = [
            ("C", self.c.is_some()),
            ("max_iter", self.max_iter.is_some()),
        ];
        if let Some((what, _)) = baseline.iter().find(|(_, g)| *g) {
            return Err(Error::invalid(
                *what,
                "applies only to the logistic baseline (head logistic)",
            ));
        }
        if recipe == Recipe::Auto && self.given().is_empty() {
            return Ok(HeadChoice::Auto { threads });
        }
        Ok(HeadChoice::Mlp(self.train_config(seed, threads)?))
    }

    /// The seed recipe with the settings given; settings that do not apply to the chosen optimizer
    /// or loss are refused, naming them.
    pub fn train_config(&self, seed: u64, threads: usize) -> Result<TrainConfig> {
        let d = TrainConfig::default();
        let kind = self.optimizer.unwrap_or(OptimizerName::RmsProp).kind(
            self.momentum,
            self.nesterov,
            self.decay,
        )?;
        let loss_name = self.loss.unwrap_or(LossName::CrossEntropy);
        if self.label_smoothing.is_some_and(|s| s != 0.0) && loss_name != LossName::CrossEntropy {
            return Err(Error::invalid(
                "label_smoothing",
                "applies only when the loss is cross-entropy",
            ));
        }
        let schedule_name = self.schedule.unwrap_or(ScheduleName::Constant);
        // Each setting given must reach the run: one of another loss or schedule, or a
        // min_delta with no early stopping, is refused rather than ignored.
        let stray = [
            (
                "focal_gamma",
                self.focal_gamma.is_some() && loss_name != LossName::Focal,
                "the loss is focal",
            ),
            (
                "focal_alpha",
                self.focal_alpha.is_some() && loss_name != LossName::Focal,
                "the loss is focal",
            ),
            (
                "step_every",
                self.step_every.is_some() && schedule_name != ScheduleName::Step,
                "the schedule is step",
            ),
            (
                "step_gamma",
                self.step_gamma.is_some() && schedule_name != ScheduleName::Step,
                "the schedule is step",
            ),
            (
                "min_lr",
                self.min_lr.is_some() && schedule_name != ScheduleName::Cosine,
                "the schedule is cosine",
            ),
            (
                "min_delta",
                self.min_delta.is_some() && self.patience.is_none(),
                "patience is given (early stopping)",
            ),
        ];
        if let Some((what, _, when)) = stray.iter().find(|(_, s, _)| *s) {
            return Err(Error::invalid(*what, format!("applies only when {when}")));
        }
        let loss = match loss_name {
            LossName::CrossEntropy => Loss::CrossEntropy {
                smoothing: self.label_smoothing.unwrap_or(0.0),
            },
            LossName::Focal => Loss::Focal {
                gamma: self.focal_gamma.unwrap_or(DEFAULT_FOCAL_GAMMA),
                alpha: self.focal_alpha.unwrap_or(DEFAULT_FOCAL_ALPHA),
            },
            LossName::Hinge => Loss::Hinge,
            LossName::SquaredHinge => Loss::SquaredHinge,
            LossName::Mse => Loss::Mse,
        };
        let schedule = match schedule_name {
            ScheduleName::Constant => Schedule::Constant,
            ScheduleName::Step => Schedule::Step {
                every: self.step_every.unwrap_or(DEFAULT_STEP_EVERY),
                gamma: self.step_gamma.unwrap_or(DEFAULT_STEP_GAMMA),
            },
            ScheduleName::Cosine => Schedule::Cosine {
                min_lr: self.min_lr.unwrap_or(0.0),
            },
        };
        let spec = match &self.head {
            Some(h) => parse_spec(h)?,
            None => d.spec,
        };
        Ok(TrainConfig {
            spec,
            loss,
            optimizer: OptimizerSpec {
                kind,
                lr: self.lr.unwrap_or_else(|| kind.default_lr()),
                weight_decay: self.weight_decay.unwrap_or(0.0),
            },
            schedule,
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            seed,
            monitor: self.monitor.unwrap_or(d.monitor),
            early_stopping: self.patience.map(|patience| EarlyStopping {
                patience,
                min_delta: self.min_delta.unwrap_or(0.0),
            }),
            restore_best: self.restore_best,
            clip_norm: self.clip_norm,
            clip_value: self.clip_value,
            balanced: self.class_weight == Some(true),
            fused: !self.plain_step,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_auto_and_anything_given_is_the_seed_recipe_with_it() {
        let none = TrainSettings::default();
        assert!(none.given().is_empty());
        assert_eq!(
            none.choose(Recipe::Auto, 42, 0).unwrap(),
            HeadChoice::Auto { threads: 0 }
        );
        // The seed recipe without settings is TrainConfig::default exactly.
        assert_eq!(
            none.choose(Recipe::Seed, 42, 0).unwrap(),
            HeadChoice::Mlp(TrainConfig::default())
        );
        let lr = TrainSettings {
            epochs: Some(3),
            optimizer: Some(OptimizerName::Adam),
            class_weight: Some(false),
            ..Default::default()
        };
        assert_eq!(lr.given(), ["epochs", "optimizer", "class_weight"]);
        let HeadChoice::Mlp(c) = lr.choose(Recipe::Auto, 7, 1).unwrap() else {
            panic!("the seed recipe");
        };
        assert_eq!((c.epochs, c.seed, c.threads), (3, 7, 1));
        assert_eq!(c.optimizer.lr, 1e-3, "Adam's own default rate");
        assert_eq!(c.batch_size, TrainConfig::default().batch_size);
        let logistic = TrainSettings {
            head: Some(" logistic".into()),
            ..Default::default()
        };
        assert_eq!(
            logistic.choose(Recipe::Auto, 42, 0).unwrap(),
            HeadChoice::Logistic {
                c: DEFAULT_C,
                max_iter: DEFAULT_MAX_ITER
            }
        );
    }

    #[test]
    fn settings_of_another_optimizer_or_loss_are_refused_by_name() {
        let refused = |s: TrainSettings| match s.train_config(42, 0) {
            Err(Error::Invalid { what, .. }) => what,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let decay = TrainSettings {
            decay: Some(1e-4),
            ..Default::default()
        };
        assert_eq!(refused(decay), "decay");
        let smoothing = TrainSettings {
            loss: Some(LossName::Hinge),
            label_smoothing: Some(0.1),
            ..Default::default()
        };
        assert_eq!(refused(smoothing), "label_smoothing");
        // Zero, the default said explicitly, is accepted with any optimizer and loss.
        let zeros = TrainSettings {
            optimizer: Some(OptimizerName::Adam),
            momentum: Some(0.0),
            decay: Some(0.0),
            loss: Some(LossName::Hinge),
            label_smoothing: Some(0.0),
            ..Default::default()
        };
        assert!(zeros.train_config(42, 0).is_ok());
        let sgd = TrainSettings {
            optimizer: Some(OptimizerName::Sgd),
            momentum: Some(0.9),
            ..Default::default()
        };
        assert_eq!(sgd.train_config(42, 0).unwrap().optimizer.lr, 0.01);
        // Settings of another schedule, loss or of early stopping without patience.
        let gamma = TrainSettings {
            focal_gamma: Some(3.0),
            ..Default::default()
        };
        assert_eq!(refused(gamma), "focal_gamma");
        let step = TrainSettings {
            step_gamma: Some(0.5),
            schedule: Some(ScheduleName::Cosine),
            ..Default::default()
        };
        assert_eq!(refused(step), "step_gamma");
        let delta = TrainSettings {
            min_delta: Some(0.01),
            ..Default::default()
        };
        assert_eq!(refused(delta), "min_delta");
        let with_patience = TrainSettings {
            min_delta: Some(0.01),
            patience: Some(3),
            ..Default::default()
        };
        assert!(with_patience.train_config(42, 0).is_ok());
    }

    #[test]
    fn the_baseline_and_backprop_refuse_each_others_settings() {
        let choose = |s: TrainSettings| match s.choose(Recipe::Auto, 42, 0) {
            Err(Error::Invalid { what, .. }) => what,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let logistic = |s: TrainSettings| TrainSettings {
            head: Some("logistic".into()),
            ..s
        };
        let epochs = TrainSettings {
            epochs: Some(50),
            ..Default::default()
        };
        assert_eq!(choose(logistic(epochs)), "epochs");
        let c = TrainSettings {
            c: Some(5.0),
            ..Default::default()
        };
        assert_eq!(choose(c.clone()), "C");
        assert!(logistic(c).choose(Recipe::Auto, 42, 0).is_ok());
    }
}
