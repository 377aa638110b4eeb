//! `headstart setup`: installs ONNX Runtime into `$HEADSTART_HOME/lib`, so an installed binary finds it
//! from any folder.

use std::path::PathBuf;

use headstart::error::Result;
use headstart::fetch::install::{install_onnxruntime, InstallConfig};
use headstart::infer::runtime::{find_library, ORT_VERSION};

use crate::common::{term, ProgressArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Install from this onnxruntime wheel (e.g. from `pip download onnxruntime`) instead of
    /// downloading one.
    #[arg(long)]
    pub wheel: Option<PathBuf>,
    /// Install again even if the library is there.
    #[arg(long)]
    pub force: bool,
    /// Only the final line.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let cfg = InstallConfig {
        wheel: a.wheel.clone(),
        force: a.force,
    };
    let got = install_onnxruntime(&cfg, &term(ProgressArg::None, a.quiet))?;
    let state = if got.present {
        "already installed"
    } else {
        "installed, sha256 checked"
    };
    println!(
        "ONNX Runtime {ORT_VERSION}: {} ({state})",
        got.path.display()
    );
    match find_library(None) {
        Ok(p) if p == got.path => {}
        Ok(p) => println!(
            "note: this run would load {} first (--ort-lib or ORT_DYLIB_PATH wins)",
            p.display()
        ),
        Err(e) => println!("note: {e}"),
    }
    Ok(())
}
