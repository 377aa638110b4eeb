//! One file per command: its clap arguments, their validation into the library's config, and `run`.

pub mod audit;
pub mod bench_decode;
pub mod bench_infer;
pub mod classify;
pub mod convert;
pub mod cut;
pub mod evaluate;
pub mod export;
pub mod extract;
pub mod fetch;
#[cfg(feature = "finetune")]
pub mod finetune;
pub mod inspect;
pub mod make_features;
pub mod make_model;
pub mod merge;
pub mod models;
pub mod plan;
pub mod quantize;
pub mod score;
pub mod setup;
pub mod split;
pub mod status;
pub mod summary;
pub mod train_head;
