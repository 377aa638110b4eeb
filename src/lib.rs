//! headstart: transfer learning on images. A frozen ONNX CNN base runs in ONNX Runtime over folders of
//! images and its bottleneck features are cached in HDF5; heads are trained on the cache in Rust.
//!
//! The modules follow the pipeline, data flowing one way:
//! [`data`] (scan folders, decode and preprocess images, presets) -> [`infer`] (ONNX Runtime session,
//! model introspection, the overlapped decode/inference pipeline, extraction) -> [`cache`] (journal,
//! output lock, HDF5 feature cache) -> [`head`] (layers, losses, optimizers, training, SIMD kernels) ->
//! [`report`] (evaluate, metrics, plots, score, classify). Beside them: [`runs`] (plans, shards,
//! markers and merges of runs over many machines), [`onnx`] (protobuf, shapes,
//! cut, generated models, export of base + head), [`finetune`] (the top blocks trained with candle),
//! [`fetch`] (pretrained bases by name, built from pinned downloads) and small helpers in [`util`].
//! Library code neither prints nor exits: it reports through [`events::Reporter`], which the
//! `headstart` binary implements.
//!
//! The pipeline in ten lines (`examples/` has it as a program):
//!
//! ```no_run
//! use headstart::{events::Silent, head::train_head, infer::extract, report::evaluate};
//! # fn main() -> headstart::Result<()> {
//! let cfg = extract::ExtractConfig::new("base.onnx", "photos/", "features.h5");
//! extract::extract(&cfg, &Silent)?; // photos/{train,test}/<class>/* -> HDF5 features
//! let head = train_head::train_head(&train_head::TrainHeadConfig::new("features.h5"), &Silent)?.head;
//! let source = evaluate::Source::Features { path: "features.h5".into(), split: None };
//! let e = evaluate::evaluate(&evaluate::EvaluateConfig { head, source, top: 5, tta: true, any_precision: false }, &Silent)?;
//! println!("{} accuracy {:.4}", e.split, e.metrics.accuracy);
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod data;
pub mod error;
pub mod events;
pub mod fetch;
pub mod finetune;
pub mod head;
pub mod infer;
pub mod onnx;
pub mod report;
pub mod runs;
pub mod util;

pub use error::{Error, Result};
