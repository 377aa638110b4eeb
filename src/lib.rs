//! headstart: transfer learning on images. A frozen ONNX CNN base runs in ONNX Runtime over folders of
//! images and its bottleneck features are cached in HDF5; heads are trained on the cache in Rust.
//!
//! Pipeline, one module per stage: [`dataset`] (folder scan) -> [`preprocess`] (decode, resize,
//! normalise) -> [`model`] / [`runtime`] (ONNX Runtime session) -> [`extract`] (batching, overlap,
//! resume) -> [`cache`] (journal and HDF5). [`onnx`] reads and generates model files.

pub mod cache;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod extract;
pub mod finetune;
pub mod fit;
pub mod head;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod pipeline;
pub mod plot;
pub mod preprocess;
pub mod presets;
pub mod progress;
pub mod rng;
pub mod runtime;
pub mod score;

pub use error::{Error, Result};
