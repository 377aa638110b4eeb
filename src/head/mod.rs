//! The dense head trained on cached features: activations, losses and optimizers written on ndarray
//! and checked against finite differences or reference numbers; the layer stack ([`net`]), the
//! training loop ([`train`]), the first wide layer's fused step ([`wide`]) and product ([`matmul`]),
//! the linfa-logistic baseline ([`logistic`]) and the head file ([`file`]).

pub mod activation;
pub mod file;
pub mod logistic;
pub mod loss;
pub mod matmul;
pub mod net;
pub mod optim;
pub mod train;
pub mod wide;
