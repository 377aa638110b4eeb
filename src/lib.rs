//! headstart: transfer learning on images. A frozen ONNX CNN base runs in ONNX Runtime over folders of
//! images and its bottleneck features are cached in HDF5; heads are trained on the cache in Rust.
//!
//! The modules follow the pipeline, data flowing one way:
//! [`data`] (scan folders, decode and preprocess images, presets) -> [`infer`] (ONNX Runtime session,
//! model introspection, the overlapped decode/inference pipeline, extraction) -> [`cache`] (journal,
//! output lock, HDF5 feature cache) -> [`head`] (layers, losses, optimizers, training, SIMD kernels) ->
//! [`report`] (evaluate, metrics, plots, score, classify). Beside them: [`onnx`] (protobuf, shapes,
//! cut, generated models, export of base + head), [`finetune`] (the top blocks trained with candle) and
//! small helpers in [`util`]. Library code neither prints nor exits: it reports through
//! [`events::Reporter`], which the `headstart` binary implements.

pub mod cache;
pub mod data;
pub mod error;
pub mod finetune;
pub mod head;
pub mod infer;
pub mod onnx;
pub mod report;
pub mod util;

pub use error::{Error, Result};
