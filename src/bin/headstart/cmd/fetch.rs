//! `headstart fetch`: a pretrained base by name, built into `$HEADSTART_HOME/models` (see
//! `headstart models` for the names).

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::fetch::{fetch, source, Digest, FetchConfig, SOURCES};

use crate::common::DisplayArgs;

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
    /// Download the weights from this URL (a mirror, http or https) instead of
    /// the pinned place; needs --sha256.
    #[arg(long, requires = "sha256")]
    pub url: Option<String>,
    /// The sha256 the file from --url must have (it replaces the pinned hash).
    #[arg(long, requires = "url")]
    pub sha256: Option<String>,
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(a: &Args) -> Result<()> {
    let src = source(&a.name).ok_or_else(|| {
        Error::Config(format!(
            "unknown model '{}'; headstart can fetch: {}",
            a.name,
            SOURCES.map(|s| s.name).join(", ")
        ))
    })?;
    let digest = match &a.sha256 {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(Digest::Sha256(h.to_ascii_lowercase()))
        }
        Some(h) => {
            return Err(Error::Config(format!(
                "--sha256 '{h}': expected 64 hex digits"
            )))
        }
        None => None,
    };
    let cfg = FetchConfig {
        dir: a.dir.clone(),
        force: a.force,
        url: a.url.clone(),
        digest,
    };
    let f = fetch(src, &cfg, &a.display.term())?;
    let state = if f.present {
        "already there".to_string()
    } else {
        format!("built in {:.1} s", f.seconds)
    };
    println!("{}: {} ({state})", src.name, f.path.display());
    Ok(())
}
