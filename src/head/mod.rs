//! Stage 4, the dense head trained on cached features: activations, losses and optimizers written on
//! ndarray and checked against finite differences or reference numbers; the layer stack ([`net`]),
//! the training loop ([`fit`], with its [`schedule`] and [`history`]), the wide first layer's SIMD
//! kernels (`kernels`), the linfa-logistic baseline ([`logistic`]), the `auto` recipe ([`recipe`]),
//! the settings as a user gives them and their defaults ([`settings`]), multi-label thresholds and
//! average precision ([`tags`]), the head file
//! ([`mod@file`]), the validation rows ([`validation`]), training on a cache larger than memory
//! ([`stream`]) and `train-head` on a cache ([`train_head`]).

pub mod activation;
pub mod file;
pub mod fit;
pub mod history;
pub(crate) mod kernels;
pub mod logistic;
pub mod loss;
pub mod net;
pub mod optim;
pub mod recipe;
pub mod schedule;
pub mod settings;
pub mod stream;
pub mod tags;
pub mod train_head;
pub mod validation;
