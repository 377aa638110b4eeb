//! `headstart merge RUN --out features.h5`: join a finished run's shards into one cache.

use std::path::PathBuf;

use headstart::error::Result;
use headstart::runs::merge;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run folder (made by `headstart plan`, filled by `extract --run`).
    pub run: PathBuf,
    /// The merged HDF5 cache.
    #[arg(long, default_value = "features.h5")]
    pub out: PathBuf,
    /// Join the scored shards (`score --run`) into this CSV instead of the feature caches.
    #[arg(long, conflicts_with = "out")]
    pub scores: Option<PathBuf>,
}

pub fn run(a: &Args) -> Result<()> {
    if let Some(out) = &a.scores {
        let rows = headstart::runs::merge_scores(&a.run, out)?;
        println!("merged the scored shards: {rows} rows -> {}", out.display());
        return Ok(());
    }
    let local = headstart::runs::remote::local_run(&a.run, true)?;
    let s = merge(&local, &a.out)?;
    println!(
        "merged {} shards: {} rows, {} skipped in {:.1} s -> {}",
        s.shards,
        s.rows,
        s.skipped,
        s.seconds,
        s.out.display()
    );
    Ok(())
}
