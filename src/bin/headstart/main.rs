//! The `headstart` binary: parse arguments, call the library, map errors to an exit code.

mod args;
mod commands;

use args::{Cli, Command};
use clap::Parser;

fn run(cli: Cli) -> headstart::Result<()> {
    match cli.command {
        Command::Extract(a) => commands::run_extract(&a.to_config()?),
        Command::Summary { cache } => commands::run_summary(&cache),
        Command::MakeModel(a) => commands::run_make_model(&a),
        Command::MakeFeatures(a) => commands::run_make_features(&a),
        Command::BenchInfer(a) => commands::run_bench_infer(&a),
        Command::TrainHead(a) => {
            commands::run_train_head(&a.to_config()?, a.plot, a.report.as_deref())
        }
        Command::Evaluate(a) => {
            commands::run_evaluate(&a.to_config()?, a.json, a.plot, a.report.as_deref())
        }
        Command::Score(a) => commands::run_score(&a.to_config()?),
        Command::Export(a) => commands::run_export(&a),
        Command::Inspect(a) => commands::run_inspect(&a),
        Command::Cut(a) => commands::run_cut(&a),
        Command::Classify(a) => commands::run_classify(&a),
        Command::Finetune(a) => commands::run_finetune(&a.to_config()?, a.json),
        Command::Models => {
            print!("{}", headstart::data::presets::table());
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!("\n  caused by: {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
