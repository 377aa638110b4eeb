//! Element-wise activations and their derivatives.

use ndarray::{Array2, Zip};

/// Keras' default negative slope for LeakyReLU.
pub const LEAKY_SLOPE: f32 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    /// tanh approximation (Keras `gelu(approximate=True)`, PyTorch `approximate="tanh"`).
    Gelu,
    Tanh,
    Sigmoid,
    Linear,
}

/// Numerically stable logistic function.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/pi)

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (GELU_C * (x + 0.044715 * x * x * x)).tanh())
}

fn gelu_grad(x: f32) -> f32 {
    let u = GELU_C * (x + 0.044715 * x * x * x);
    let t = u.tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * x * x)
}

impl Activation {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Some(Self::Relu),
            "leaky_relu" | "leakyrelu" => Some(Self::LeakyRelu(LEAKY_SLOPE)),
            "gelu" => Some(Self::Gelu),
            "tanh" => Some(Self::Tanh),
            "sigmoid" => Some(Self::Sigmoid),
            "linear" | "none" => Some(Self::Linear),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::LeakyRelu(_) => "leaky_relu",
            Self::Gelu => "gelu",
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
            Self::Linear => "linear",
        }
    }

    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Self::Relu => x.max(0.0),
            Self::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Self::Gelu => gelu(x),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => sigmoid(x),
            Self::Linear => x,
        }
    }

    /// d(apply)/dx at input `x`.
    pub fn derivative(&self, x: f32) -> f32 {
        match *self {
            Self::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::LeakyRelu(a) => {
                if x >= 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Self::Gelu => gelu_grad(x),
            Self::Tanh => 1.0 - x.tanh().powi(2),
            Self::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Self::Linear => 1.0,
        }
    }

    pub fn forward(&self, x: &Array2<f32>) -> Array2<f32> {
        x.mapv(|v| self.apply(v))
    }

    /// Gradient with respect to the input, given the input `x` and the output gradient `g`.
    pub fn backward(&self, x: &Array2<f32>, g: &Array2<f32>) -> Array2<f32> {
        let mut out = g.clone();
        Zip::from(&mut out)
            .and(x)
            .for_each(|o, &xv| *o *= self.derivative(xv));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let acts = [
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Gelu,
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::Linear,
        ];
        for a in acts {
            for &x in &[-2.5f32, -0.7, 0.3, 1.9] {
                let h = 1e-3;
                let fd = (a.apply(x + h) - a.apply(x - h)) / (2.0 * h);
                assert!(
                    (fd - a.derivative(x)).abs() < 2e-3,
                    "{a:?} at {x}: {} vs {fd}",
                    a.derivative(x)
                );
            }
        }
        // Keras gelu(approximate=True)(1.0) = 0.8411920 (from 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715x^3)))).
        assert!((Activation::Gelu.apply(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(
            Activation::parse("leaky_relu"),
            Some(Activation::LeakyRelu(LEAKY_SLOPE))
        );
        assert_eq!(Activation::parse("swish"), None);
    }
}
