//! How a training run's learning rate moves per epoch ([`Schedule`]) and when it stops: the number
//! it watches ([`Monitor`]) and early stopping's patience ([`EarlyStopping`]).

use super::history::EpochRecord;

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
    pub(crate) fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::ValAccuracy)
    }
    pub(crate) fn value(self, r: &EpochRecord) -> Option<f64> {
        match self {
            Monitor::ValLoss => r.val_loss,
            Monitor::ValAccuracy => r.val_accuracy,
            Monitor::Loss => Some(r.loss),
            Monitor::Accuracy => Some(r.accuracy),
        }
    }
    /// True when `a` is better than `b` by more than `delta`.
    pub(crate) fn better(self, a: f64, b: f64, delta: f64) -> bool {
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
