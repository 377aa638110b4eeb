//! The dense head trained on cached features: activations, losses and optimizers written on ndarray,
//! each checked against finite differences or reference numbers. (The layer stack, training loop and
//! `train-head` command build on these.)

pub mod activation;
pub mod loss;
pub mod optim;
