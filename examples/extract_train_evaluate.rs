//! The whole pipeline from Rust: cache a base model's features for a folder of photos, train the
//! default head on them, and evaluate it on the test split.
//!
//! ```sh
//! cargo run --release --example extract_train_evaluate -- MODEL.onnx DATA_DIR [OUT_DIR]
//! ```
//! `DATA_DIR` holds `train/<class>/*` and `test/<class>/*` (or `<class>/*`, then the head is
//! evaluated on its validation rows). Progress and messages go to stderr through a small
//! [`Reporter`] of our own.

use std::path::PathBuf;

use headstart::{
    evaluate, extract, train_head, EvaluateConfig, Event, ExtractConfig, Reporter, Source,
    TrainHeadConfig,
};

/// Prints messages on stderr and ignores progress.
struct Stderr;

impl Reporter for Stderr {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Line(s) | Event::Detail(s) => eprintln!("{s}"),
            Event::Notice(s) => eprintln!("notice: {s}"),
            Event::Warning(s) => eprintln!("warning: {s}"),
            _ => {}
        }
    }
}

fn main() -> headstart::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, data, rest @ ..] = args.as_slice() else {
        eprintln!("usage: extract_train_evaluate MODEL.onnx DATA_DIR [OUT_DIR]");
        std::process::exit(2);
    };
    let dir = PathBuf::from(rest.first().map_or(".", String::as_str));
    std::fs::create_dir_all(&dir).map_err(|e| headstart::Error::io(&dir, e))?;

    let features = dir.join("example.features.h5");
    let summary = extract(&ExtractConfig::new(model, data, &features), &Stderr)?;
    eprintln!("{}", summary.line());

    let cfg = TrainHeadConfig::new(&features);
    let trained = train_head(&cfg, &Stderr)?;

    let eval = evaluate(
        &EvaluateConfig {
            head: trained.head,
            source: Source::Features {
                path: features,
                split: None,
            },
            top: 5,
            tta: true,
            any_precision: false,
        },
        &Stderr,
    )?;
    println!(
        "split {}: accuracy {:.4} on {} images",
        eval.split, eval.metrics.accuracy, eval.metrics.n
    );
    Ok(())
}
