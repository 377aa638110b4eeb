//! Stage 2, inference: load ONNX Runtime ([`runtime`]), open a base model and work out its input and
//! preprocessing ([`model`]), optionally with its input and output bound once (`model/binding`), run decoding overlapped with inference ([`pipeline`]), and cache a
//! folder's features ([`extract`]), pooling a transformer's token output as [`crate::cache::tokens`] says; quantise a base to int8 on calibration images ([`quantize`], with the ranges from
//! [`calibrate`]).

pub mod calibrate;
pub mod extract;
pub mod model;
pub mod pipeline;
pub mod quantize;
pub mod runtime;
