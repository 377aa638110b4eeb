//! The `headstart` binary: parse the arguments, validate them into the library's config, call the
//! library, map the result to an exit code.
//!
//! One file per command in `cmd/` (its clap arguments, their validation, its `run`); flags shared by
//! several commands in `common`; the terminal side of the library's event reporting in `term`;
//! signals (SIGPIPE, SIGTERM) and the test build's checkpoint hooks in `signal`.

mod cmd;
mod common;
mod signal;
mod term;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "headstart",
    version,
    about = "Transfer learning on images: ONNX base -> cached features -> trained head"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a frozen ONNX base over image folders and cache its features in HDF5.
    Extract(cmd::extract::Args),
    /// Print what a feature cache holds.
    Summary(cmd::summary::Args),
    /// Write a random-weight CNN as ONNX (VGG-16 conv base, or a tiny one for tests).
    MakeModel(cmd::make_model::Args),
    /// Write a feature cache of seeded random features (benchmarks and tests; no model involved).
    MakeFeatures(cmd::make_features::Args),
    /// Time ONNX Runtime alone on preprocessed tensors held in memory (benchmark reference).
    BenchInfer(cmd::bench_infer::Args),
    /// Time decoding and preprocessing alone, per decode mode and worker count (benchmark).
    BenchDecode(cmd::bench_decode::Args),
    /// Train a dense head (or a logistic-regression baseline) on a feature cache.
    TrainHead(cmd::train_head::Args),
    /// Metrics of a head on a cached split, or on image folders (extracted on the fly).
    Evaluate(cmd::evaluate::Args),
    /// Likely label errors, duplicates, train/test leakage and outliers of a feature cache.
    Audit(cmd::audit::Args),
    /// Classify image files and folders with base + head (or an exported model), one row per image.
    Score(cmd::score::Args),
    /// Write one ONNX model: the base with the head appended (and optionally the preprocessing).
    Export(cmd::export::Args),
    /// Describe an ONNX model: inputs/outputs, layout, preset, preprocessing, parameters, multiply-adds.
    Inspect(cmd::inspect::Args),
    /// Write a float16 copy of a model for GPUs (inputs and outputs stay float32).
    Convert(cmd::convert::Args),
    /// Cut an ONNX model at a tensor (default: the conv base of a classifier) and prune the rest.
    Cut(cmd::cut::Args),
    /// Top-k ImageNet classes (with names) of images, for a model that still has its classifier.
    Classify(cmd::classify::Args),
    /// The architecture presets: input size, preprocessing, conv base, fine-tune split, figures.
    Models,
    /// Unfreeze the top block(s) of the base and train them with the head (candle), then export.
    #[cfg(feature = "finetune")]
    Finetune(cmd::finetune::Args),
    /// Not in this build (built without the `finetune` feature).
    #[cfg(not(feature = "finetune"))]
    #[command(hide = true)]
    Finetune {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch a pretrained base by name (e.g. efficientnet-lite0) into $HEADSTART_HOME/models.
    Fetch(cmd::fetch::Args),
    /// Install ONNX Runtime into $HEADSTART_HOME/lib (for a binary used outside the checkout).
    Setup(cmd::setup::Args),
    /// Sample train / val / test images per class out of a raw dump (e.g. Kaggle's PetImages).
    Split(cmd::split::Args),
    /// Write a static int8 (QDQ) copy of a base model, calibrated on your images.
    Quantize(cmd::quantize::Args),
    /// Cut a dataset into shards for an array job (Slurm, Kubernetes Indexed Job, AWS Batch).
    Plan(cmd::plan::Args),
    /// Done, started and missing shards of a planned run, with the lines that resubmit them.
    Status(cmd::status::Args),
    /// Join the shards of a finished run into one feature cache.
    Merge(cmd::merge::Args),
}

fn run(cli: Cli) -> headstart::Result<()> {
    match cli.command {
        Command::Extract(a) => cmd::extract::run(&a),
        Command::Summary(a) => cmd::summary::run(&a),
        Command::Audit(a) => cmd::audit::run(&a),
        Command::MakeModel(a) => cmd::make_model::run(&a),
        Command::MakeFeatures(a) => cmd::make_features::run(&a),
        Command::BenchInfer(a) => cmd::bench_infer::run(&a),
        Command::BenchDecode(a) => cmd::bench_decode::run(&a),
        Command::Quantize(a) => cmd::quantize::run(&a),
        Command::Plan(a) => cmd::plan::run(&a),
        Command::Status(a) => cmd::status::run(&a),
        Command::Merge(a) => cmd::merge::run(&a),
        Command::TrainHead(a) => cmd::train_head::run(&a),
        Command::Evaluate(a) => cmd::evaluate::run(&a),
        Command::Score(a) => cmd::score::run(&a),
        Command::Export(a) => cmd::export::run(&a),
        Command::Inspect(a) => cmd::inspect::run(&a),
        Command::Cut(a) => cmd::cut::run(&a),
        Command::Convert(a) => cmd::convert::run(&a),
        Command::Classify(a) => cmd::classify::run(&a),
        Command::Models => cmd::models::run(),
        #[cfg(feature = "finetune")]
        Command::Finetune(a) => cmd::finetune::run(&a),
        #[cfg(not(feature = "finetune"))]
        Command::Finetune { .. } => Err(headstart::Error::Config(
            "finetune is not in this build (built without the `finetune` feature): build with `cargo build --release`, its default features on".into(),
        )),
        Command::Fetch(a) => cmd::fetch::run(&a),
        Command::Setup(a) => cmd::setup::run(&a),
        Command::Split(a) => cmd::split::run(&a),
    }
}

/// The error and its chain of causes, one per line (a cause the message already quotes is not
/// repeated).
fn error_text(e: &headstart::Error) -> String {
    let mut msg = match e {
        // A setting the library found invalid is shown as the flag that sets it.
        headstart::Error::Invalid { what, msg } => {
            format!("error: --{}: {msg}", what.replace(['_', ' '], "-"))
        }
        e => format!("error: {e}"),
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        src = s.source();
    }
    headstart::util::redact::credentials(&msg)
}

fn main() -> std::process::ExitCode {
    signal::default_sigpipe();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
