//! Optimizers behind one small trait, with Keras' update rules (the seed recipe is Keras):
//! SGD with momentum, Nesterov and legacy inverse-time `decay`; Adam; AdamW (decoupled weight decay);
//! RMSprop. `weight_decay` on SGD/Adam/RMSprop is L2 added to the gradient.
//!
//! Each step is split in two: [`Optimizer::begin_step`] advances the step counter and returns the
//! step's element-wise [`Rule`] (its coefficients computed once); the rule is then applied to each
//! parameter with its state slots. The training loop's fused wide-layer kernel applies the same rule
//! to tiles of the first layer's kernel, so both paths share one implementation of the maths.

/// Updates parameters in place from their gradients.
pub trait Optimizer: Send {
    /// Starts one step over tensors of `sizes` (allocating state on first use); returns its rule.
    fn begin_step(&mut self, sizes: &[usize]) -> Rule;
    /// The two state slots of tensor `i` (empty when the optimizer keeps less state).
    fn state(&mut self, i: usize) -> (&mut [f32], &mut [f32]);
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
    /// Steps taken and every state slot (for checkpoints).
    fn snapshot(&self) -> (u64, Vec<Vec<f32>>);
    /// Restores a [`Optimizer::snapshot`] of an optimizer of the same kind over the same tensors.
    fn restore(&mut self, steps: u64, slots: Vec<Vec<f32>>);
    /// One update of every parameter tensor (`params[i]` with gradient `grads[i]`).
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        let sizes: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let rule = self.begin_step(&sizes);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let (s1, s2) = self.state(i);
            rule.apply(p, g, s1, s2);
        }
    }
}

/// One step's element-wise update, with its coefficients fixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// State: velocity.
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        wd: f32,
    },
    /// State: first and second moments.
    Adam {
        lr: f32,
        alpha: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        decoupled: bool,
    },
    /// State: mean square.
    RmsProp {
        lr: f32,
        rho: f32,
        eps: f32,
        wd: f32,
    },
}

impl Rule {
    /// Applies the update to `p` from `g`, with the state slots the optimizer keeps for `p`.
    #[inline(always)]
    pub fn apply(&self, p: &mut [f32], g: &[f32], s1: &mut [f32], s2: &mut [f32]) {
        match *self {
            Rule::Sgd {
                lr,
                momentum,
                nesterov,
                wd,
            } => {
                for ((pv, &gv), mv) in p.iter_mut().zip(g).zip(s1.iter_mut()) {
                    let g = gv + wd * *pv;
                    *mv = momentum * *mv - lr * g;
                    *pv += if nesterov {
                        momentum * *mv - lr * g
                    } else {
                        *mv
                    };
                }
            }
            Rule::Adam {
                lr,
                alpha,
                beta1,
                beta2,
                eps,
                wd,
                decoupled,
            } => {
                for (((pv, &gv), m), v) in p.iter_mut().zip(g).zip(s1.iter_mut()).zip(s2.iter_mut())
                {
                    let mut g = gv;
                    if decoupled {
                        *pv -= lr * wd * *pv;
                    } else {
                        g += wd * *pv;
                    }
                    *m += (g - *m) * (1.0 - beta1);
                    *v += (g * g - *v) * (1.0 - beta2);
                    *pv -= alpha * *m / (v.sqrt() + eps);
                }
            }
            Rule::RmsProp { lr, rho, eps, wd } => {
                for ((pv, &gv), vv) in p.iter_mut().zip(g).zip(s1.iter_mut()) {
                    let g = gv + wd * *pv;
                    *vv = rho * *vv + (1.0 - rho) * g * g;
                    *pv -= lr * g / (*vv + eps).sqrt();
                }
            }
        }
    }
}

fn alloc(slots: &mut Vec<Vec<f32>>, sizes: &[usize]) {
    if slots.len() != sizes.len() || slots.iter().zip(sizes).any(|(s, &n)| s.len() != n) {
        *slots = sizes.iter().map(|&n| vec![0.0; n]).collect();
    }
}

/// Keras `SGD(learning_rate, momentum, nesterov, decay)`:
/// `lr_t = lr / (1 + decay * t)`, `m = momentum * m - lr_t * g`, `p += m` (or `momentum * m - lr_t * g`).
#[derive(Debug, Clone)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f32,
    pub nesterov: bool,
    pub decay: f64,
    pub weight_decay: f32,
    iterations: u64,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f32, nesterov: bool, decay: f64, weight_decay: f32) -> Self {
        Sgd {
            lr,
            momentum,
            nesterov,
            decay,
            weight_decay,
            iterations: 0,
            velocity: Vec::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn begin_step(&mut self, sizes: &[usize]) -> Rule {
        alloc(&mut self.velocity, sizes);
        let lr = (self.lr / (1.0 + self.decay * self.iterations as f64)) as f32;
        self.iterations += 1;
        Rule::Sgd {
            lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            wd: self.weight_decay,
        }
    }
    fn state(&mut self, i: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.velocity[i], &mut [])
    }
    fn snapshot(&self) -> (u64, Vec<Vec<f32>>) {
        (self.iterations, self.velocity.clone())
    }
    fn restore(&mut self, steps: u64, slots: Vec<Vec<f32>>) {
        self.iterations = steps;
        self.velocity = slots;
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// Keras Adam (`alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)`, `p -= alpha * m / (sqrt(v) + eps)`); with
/// `decoupled` it is AdamW (`p -= lr * weight_decay * p` before the update).
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Keras' default epsilon.
pub const KERAS_EPSILON: f32 = 1e-7;

impl Adam {
    pub fn new(lr: f64, weight_decay: f32, decoupled: bool) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: KERAS_EPSILON,
            weight_decay,
            decoupled,
            t: 0,
            m: vec![],
            v: vec![],
        }
    }
}

impl Optimizer for Adam {
    fn begin_step(&mut self, sizes: &[usize]) -> Rule {
        alloc(&mut self.m, sizes);
        alloc(&mut self.v, sizes);
        self.t += 1;
        let lr = self.lr as f32;
        Rule::Adam {
            lr,
            alpha: lr * (1.0 - self.beta2.powi(self.t)).sqrt() / (1.0 - self.beta1.powi(self.t)),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            wd: self.weight_decay,
            decoupled: self.decoupled,
        }
    }
    fn state(&mut self, i: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.m[i], &mut self.v[i])
    }
    fn snapshot(&self) -> (u64, Vec<Vec<f32>>) {
        let mut slots = self.m.clone();
        slots.extend(self.v.iter().cloned());
        (self.t as u64, slots)
    }
    fn restore(&mut self, steps: u64, mut slots: Vec<Vec<f32>>) {
        self.t = steps as i32;
        self.v = slots.split_off(slots.len() / 2);
        self.m = slots;
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// Keras RMSprop: `v = rho * v + (1 - rho) * g^2`, `p -= lr * g / sqrt(v + eps)`.
#[derive(Debug, Clone)]
pub struct RmsProp {
    pub lr: f64,
    pub rho: f32,
    pub eps: f32,
    pub weight_decay: f32,
    v: Vec<Vec<f32>>,
}

impl RmsProp {
    pub fn new(lr: f64, weight_decay: f32) -> Self {
        RmsProp {
            lr,
            rho: 0.9,
            eps: KERAS_EPSILON,
            weight_decay,
            v: vec![],
        }
    }
}

impl Optimizer for RmsProp {
    fn begin_step(&mut self, sizes: &[usize]) -> Rule {
        alloc(&mut self.v, sizes);
        Rule::RmsProp {
            lr: self.lr as f32,
            rho: self.rho,
            eps: self.eps,
            wd: self.weight_decay,
        }
    }
    fn state(&mut self, i: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.v[i], &mut [])
    }
    fn snapshot(&self) -> (u64, Vec<Vec<f32>>) {
        (0, self.v.clone())
    }
    fn restore(&mut self, _steps: u64, slots: Vec<Vec<f32>>) {
        self.v = slots;
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

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

impl OptimizerKind {
    /// The learning rate used when none is given: Keras' seed recipe's 2e-5 for RMSprop, 1e-3 for
    /// Adam and AdamW (their usual default), 0.01 for SGD (Keras' default).
    pub fn default_lr(&self) -> f64 {
        match self {
            OptimizerKind::RmsProp => 2e-5,
            OptimizerKind::Adam | OptimizerKind::AdamW => 1e-3,
            OptimizerKind::Sgd { .. } => 0.01,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps on f(p) = 0.5 * (1 * p0^2 + 3 * p1^2) from p = [1, -2]. Reference trajectories from
    /// numpy implementing the Keras update rules above (float64):
    ///
    /// ```python
    /// a = np.array([1.0, 3.0]); p = np.array([1.0, -2.0])
    /// # sgd:  g += wd*p; lr_t = lr/(1+decay*(t-1)); m = mom*m - lr_t*g; p += (mom*m - lr_t*g) if nesterov else m
    /// # adam: (AdamW: p -= lr*wd*p) m += (g-m)*(1-b1); v += (g*g-v)*(1-b2)
    /// #       p -= lr*sqrt(1-b2**t)/(1-b1**t) * m/(sqrt(v)+1e-7)
    /// # rmsprop: v = rho*v + (1-rho)*g*g; p -= lr*g/sqrt(v+1e-7)
    /// ```
    fn trajectory(opt: &mut dyn Optimizer) -> Vec<[f32; 2]> {
        let a = [1.0f32, 3.0];
        let mut p = vec![1.0f32, -2.0];
        let mut out = vec![];
        for _ in 0..3 {
            let g: Vec<f32> = p.iter().zip(a).map(|(x, k)| x * k).collect();
            opt.step(&mut [p.as_mut_slice()], &[g.as_slice()]);
            out.push([p[0], p[1]]);
        }
        out
    }

    fn check(opt: &mut dyn Optimizer, want: [[f32; 2]; 3]) {
        let got = trajectory(opt);
        for (g, w) in got.iter().zip(want) {
            for k in 0..2 {
                assert!((g[k] - w[k]).abs() < 2e-5, "got {got:?}, want {want:?}");
            }
        }
    }

    #[test]
    fn sgd_matches_keras_seed_settings() {
        // The seed's SGD(lr=0.2, momentum=0.9, decay=0.01).
        check(
            &mut Sgd::new(0.2, 0.9, false, 0.01, 0.0),
            [[0.8, -0.8], [0.4615842, 0.7552475], [0.0665032, 1.710707]],
        );
    }

    #[test]
    fn sgd_nesterov_with_weight_decay() {
        check(
            &mut Sgd::new(0.1, 0.9, true, 0.0, 0.01),
            [
                [0.8081, -0.8562],
                [0.5712156, 0.1210808],
                [0.3218597, 0.6994428],
            ],
        );
    }

    #[test]
    fn adam_and_adamw() {
        check(
            &mut Adam::new(0.1, 0.0, false),
            [
                [0.9000003, -1.9000001],
                [0.8004128, -1.8001666],
                [0.701587, -1.7006235],
            ],
        );
        check(
            &mut Adam::new(0.1, 0.1, true),
            [
                [0.8900003, -1.8800001],
                [0.7815724, -1.761409],
                [0.675102, -1.6443688],
            ],
        );
    }

    #[test]
    fn rmsprop() {
        check(
            &mut RmsProp::new(0.01, 0.0),
            [
                [0.9683772, -1.9683772],
                [0.945788, -1.9456096],
                [0.9270531, -1.9266337],
            ],
        );
    }

    #[test]
    fn learning_rate_can_be_set() {
        let mut o = Adam::new(0.1, 0.0, false);
        o.set_learning_rate(0.5);
        assert_eq!(o.learning_rate(), 0.5);
    }
}
