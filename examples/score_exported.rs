//! Score photos with one exported ONNX file (`headstart export`: base + head in one graph), writing
//! a CSV of class probabilities, as `headstart score --model exported.onnx PATHS --out OUT.csv`.
//!
//! ```sh
//! cargo run --release --example score_exported -- EXPORTED.onnx OUT.csv PHOTO_OR_DIR...
//! ```

use headstart::{score, ScoreConfig, Silent};

fn main() -> headstart::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out, inputs @ ..] = args.as_slice() else {
        eprintln!("usage: score_exported EXPORTED.onnx OUT.csv PHOTO_OR_DIR...");
        std::process::exit(2);
    };
    if inputs.is_empty() {
        eprintln!("usage: score_exported EXPORTED.onnx OUT.csv PHOTO_OR_DIR...");
        std::process::exit(2);
    }
    let mut cfg = ScoreConfig::new(model, None, inputs.iter().map(Into::into).collect());
    cfg.out = Some(out.into());
    let s = score(&cfg, &Silent)?;
    println!("{}", s.line(cfg.out.as_deref()));
    Ok(())
}
