//! `headstart status RUN`: which shards of a planned run are done, started or missing, and the
//! lines that resubmit the unfinished ones.

use std::path::PathBuf;

use headstart::error::Result;
use headstart::runs::markers::{ranges, resubmit_lines, status};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run folder (made by `headstart plan`), or its object-storage URL.
    pub run: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    // A run on object storage: its plan and markers are read into the local mirror first.
    let local = headstart::runs::remote::local_run(&a.run, false)?;
    let st = status(&local)?;
    let p = &st.plan;
    let images: usize = st.done.iter().map(|m| m.images).sum();
    let extracted: usize = st.done.iter().map(|m| m.extracted).sum();
    let skipped: usize = st.done.iter().map(|m| m.skipped.len()).sum();
    println!(
        "run {}: {} shards, {} images of {}",
        a.run.display(),
        p.shards,
        p.images,
        p.source
    );
    println!(
        "done:    {} shards ({} of {} images: {extracted} with features, {skipped} skipped)",
        st.done.len(),
        images,
        p.images
    );
    let show = |v: &[usize]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            ranges(v)
        }
    };
    println!(
        "started: {} (a journal or lock is there: running, or killed; rerunning continues it)",
        show(&st.started)
    );
    println!("missing: {}", show(&st.missing));
    let scored: Vec<usize> = (0..p.shards)
        .filter(|&k| headstart::runs::plan::score_marker_path(&local, k).is_file())
        .collect();
    if !scored.is_empty() {
        let unscored: Vec<usize> = (0..p.shards).filter(|k| !scored.contains(k)).collect();
        println!(
            "scored:  {} of {} shards (`score --run`); not scored: {}",
            scored.len(),
            p.shards,
            show(&unscored)
        );
    }
    let unfinished = st.unfinished();
    if unfinished.is_empty() {
        println!(
            "all shards are done: headstart merge {} --out features.h5",
            a.run.display()
        );
    } else {
        println!("resubmit the unfinished shards with one of:");
        for line in resubmit_lines(&a.run, p.shards, &unfinished) {
            println!("  {line}");
        }
    }
    Ok(())
}
