//! headstart: transfer learning on images. A frozen ONNX CNN base runs in ONNX Runtime over folders of
//! images and its bottleneck features are cached in HDF5; heads are trained on the cache in Rust.
//!
//! The modules follow the pipeline, data flowing one way:
//! [`data`] (scan folders, decode and preprocess images, presets) -> [`infer`] (ONNX Runtime session,
//! model introspection, the overlapped decode/inference pipeline, extraction) -> [`cache`] (journal,
//! output lock, HDF5 feature cache) -> [`head`] (layers, losses, optimizers, training, SIMD kernels) ->
//! [`report`] (evaluate, metrics, plots, score, classify). Beside them: [`runs`] (plans, shards,
//! markers and merges of runs over many machines), [`onnx`] (protobuf, shapes,
//! cut, generated models, export of base + head), [`mod@finetune`] (the top blocks trained with candle),
//! [`mod@fetch`] (pretrained bases by name, built from pinned downloads) and small helpers in [`util`].
//! Library code neither prints nor exits: it reports through [`events::Reporter`], which the
//! `headstart` binary implements.
//!
//! The front door: the pipeline's calls, their configs and summaries are re-exported here, so a
//! program needs no deep path. The pipeline in ten lines (`examples/` has it as a program):
//!
//! ```no_run
//! use headstart::{evaluate, extract, train_head, EvaluateConfig, ExtractConfig, Silent, Source, TrainHeadConfig};
//! # fn main() -> headstart::Result<()> {
//! extract(&ExtractConfig::new("base.onnx", "photos/", "features.h5"), &Silent)?; // photos/{train,test}/<class>/*
//! let head = train_head(&TrainHeadConfig::new("features.h5"), &Silent)?.head;
//! let source = Source::Features { path: "features.h5".into(), split: None };
//! let e = evaluate(&EvaluateConfig { head, source, top: 5, tta: true, any_precision: false }, &Silent)?;
//! println!("{} accuracy {:.4}", e.split, e.metrics.accuracy);
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod data;
pub mod error;
pub mod events;
pub mod fetch;
#[cfg(feature = "finetune")]
pub mod finetune;
pub mod head;
pub mod infer;
pub mod onnx;
pub mod report;
pub mod runs;
pub mod util;

pub use error::{Error, Result};
pub use events::{Event, Reporter, Silent};
// Stage by stage: extract features, train a head, evaluate and score it, export one ONNX file,
// fine-tune the top of the base, fetch bases by name, and runs over many machines.
pub use fetch::{fetch, resolve_model, FetchConfig, Fetched};
#[cfg(feature = "finetune")]
pub use finetune::{finetune, FinetuneConfig, FinetuneSummary};
pub use head::file::Head;
pub use head::train_head::{train_head, HeadChoice, TrainHeadConfig, TrainHeadSummary};
pub use infer::extract::{extract, ExtractConfig, ExtractSummary};
pub use onnx::export::{export, ExportConfig, ExportSummary};
pub use report::evaluate::{evaluate, EvaluateConfig, Evaluation, Source};
pub use report::score::{score, ScoreConfig, ScoreSummary};
pub use runs::{extract_shard, merge, merge_scores, score_shard, write_plan, ShardOutcome};
