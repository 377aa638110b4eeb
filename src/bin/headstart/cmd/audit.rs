//! `headstart audit`: likely label errors, duplicates, train/test leakage and outliers of a cache.

use std::path::PathBuf;

use headstart::error::Result;
use headstart::report::audit::{audit, AuditConfig};

use crate::common::{DisplayArgs, PoolArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The feature cache (`extract`'s output), or a run folder (its merged cache).
    pub features: PathBuf,
    /// Folder of audit.tsv [default: <cache name>.audit beside the cache].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folds of the out-of-fold probabilities [default: 5, fewer for a class with fewer photos].
    #[arg(long)]
    pub folds: Option<usize>,
    /// Cosine similarity of the features from which two photos are near duplicates.
    #[arg(value_parser = crate::common::finite_f32, long, default_value_t = 0.95)]
    pub near: f32,
    /// Pooling of spatial features to one vector per photo.
    #[arg(long, value_enum, default_value = "avg")]
    pub pool: PoolArg,
    /// Seed of the folds.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Memory budget (e.g. 2G): an exact audit holds every photo's pooled features
    /// twice; over it the audit is approximate [default: half the machine's available memory].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Search neighbours approximately (projected features in inverted lists; each reported
    /// pair's cosine still exact), as on a cache over the budget or of more than 100,000 photos.
    #[arg(long)]
    pub approximate: bool,
    /// Also write OUT/audit.html: each finding with its photos, in one self-contained file.
    #[arg(long)]
    pub html: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(a: &Args) -> Result<()> {
    let mut cfg = AuditConfig::new(crate::common::features_or_run(&a.features)?);
    if let Some(o) = &a.out {
        cfg.out = o.clone();
    }
    cfg.folds = a.folds;
    cfg.near = a.near;
    cfg.pool = a.pool.into();
    cfg.seed = a.seed;
    cfg.html = a.html;
    cfg.approximate = a.approximate;
    cfg.memory = crate::common::memory_budget(a.memory.as_deref())?;
    // With --json, stdout holds the JSON alone.
    let term = crate::common::term(a.display.progress, a.display.quiet || a.json);
    let s = audit(&cfg, &term)?;
    if a.json {
        println!("{}", headstart::report::to_json(&s, true)?);
    } else {
        print!("{}", s.report());
    }
    Ok(())
}
