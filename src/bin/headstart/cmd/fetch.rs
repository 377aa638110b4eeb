//! `headstart fetch`: a pretrained base by name, built into `$HEADSTART_HOME/models` (see
//! `headstart models` for the names).

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::fetch::{fetch, source, FetchConfig, SOURCES};

use crate::common::{term, ProgressArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model's name, e.g. efficientnet-lite0.
    pub name: String,
    /// Folder for the model [default: $HEADSTART_HOME/models, else ~/.cache/headstart/models].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Build the file again even if it is there.
    #[arg(long)]
    pub force: bool,
    /// Only the final line.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let src = source(&a.name).ok_or_else(|| {
        Error::Config(format!(
            "unknown model '{}'; headstart can fetch: {}",
            a.name,
            SOURCES.map(|s| s.name).join(", ")
        ))
    })?;
    let cfg = FetchConfig {
        dir: a.dir.clone(),
        force: a.force,
    };
    let f = fetch(src, &cfg, &term(ProgressArg::None, a.quiet))?;
    let state = if f.present {
        "already there".to_string()
    } else {
        format!("built in {:.1} s", f.seconds)
    };
    println!("{}: {} ({state})", src.name, f.path.display());
    Ok(())
}
