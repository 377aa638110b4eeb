//! `headstart fetch`: a pretrained base by name, built into `$HEADSTART_HOME/models` (see
//! `headstart models` for the names).

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::fetch::{fetch, fetch_hub_spec, source, Digest, FetchConfig, Fetched, SOURCES};

use crate::common::DisplayArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model's name, e.g. efficientnet-lite0 or dinov2-small; or any ONNX export on the Hugging
    /// Face hub as hf:ORG/NAME@COMMIT[:PATH] (PATH defaults to onnx/model.onnx), pinned by --sha256.
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
    /// The sha256 the file from --url must have (it replaces the pinned hash). For an hf: model:
    /// the graph's sha256, and PATH=HASH for each external data file it names (repeatable).
    #[arg(long)]
    pub sha256: Vec<String>,
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(a: &Args) -> Result<()> {
    if a.name.starts_with("hf:") {
        if a.url.is_some() {
            return Err(Error::Config(format!(
                "--url: a hub model comes from its repository; point {} at a mirror instead",
                headstart::fetch::hub::ENDPOINT_ENV
            )));
        }
        let cfg = FetchConfig {
            dir: a.dir.clone(),
            force: a.force,
            ..Default::default()
        };
        // The spec is NAME here, not the --model of the other commands.
        let f =
            fetch_hub_spec(&a.name, &a.sha256, &cfg, &a.display.term()).map_err(|e| match e {
                Error::Invalid { what, msg } if what == "model" => Error::Config(msg),
                e => e,
            })?;
        println!("{}: {} ({})", a.name, f.path.display(), state(&f));
        return Ok(());
    }
    if a.sha256.len() > 1 || (a.sha256.len() == 1 && a.url.is_none()) {
        return Err(Error::Config(
            "--sha256 goes with --url (one hash), or with an hf: model".into(),
        ));
    }
    let src = source(&a.name).ok_or_else(|| {
        Error::Config(format!(
            "unknown model '{}'; headstart can fetch: {}",
            a.name,
            SOURCES.map(|s| s.name).join(", ")
        ))
    })?;
    let digest = match a.sha256.first() {
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
    println!("{}: {} ({})", src.name, f.path.display(), state(&f));
    Ok(())
}

fn state(f: &Fetched) -> String {
    if f.present {
        "already there".to_string()
    } else {
        format!("built in {:.1} s", f.seconds)
    }
}
