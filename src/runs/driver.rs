//! One driver for every sharded command. A [`ShardJob`] says where its shard's marker goes and how
//! to run a shard over its images; [`run_shard`] does the rest the same way for `extract --run` and
//! `score --run`: load the plan, check the shard, return at once when its marker is there (a
//! requeued or duplicated task), run the shard over the images of its manifest, then create the
//! marker only if absent. For a run folder on object storage the same steps run on the local mirror
//! and the output and marker are then published ([`super::remote`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::markers::{create_once, read_once};
use super::plan::load_plan;
use super::remote::RemoteRun;
use crate::data::scan::Dataset;
use crate::error::Result;
use crate::events::Reporter;

/// One kind of sharded work.
pub trait ShardJob {
    /// The shard's completion marker (JSON).
    type Marker: ShardMarker;
    /// What running a shard reports.
    type Summary;
    /// The marker's kind, for errors ("shard marker", "score marker").
    const WHAT: &'static str;
    /// Where shard `k`'s marker goes.
    fn marker_path(&self, run: &Path, k: usize) -> PathBuf;
    /// Runs shard `k` of `run` over `ds`, the shard's images; returns the summary and the marker to
    /// create.
    fn run(&self, run: &Path, k: usize, ds: Dataset, rep: &dyn Reporter) -> Ran<Self>;
    /// Refuses settings no shard can run with, before the plan is read or a marker looked at.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Refuses this call's settings when shard `k`'s marker `done` shows it was run with others
    /// (another model): a resubmission with changed flags is told, not answered "already done".
    fn agrees(&self, _k: usize, _done: &Self::Marker) -> Result<()> {
        Ok(())
    }
}

/// What [`ShardJob::run`] returns: the shard's summary and the marker to create.
pub type Ran<J> = Result<(<J as ShardJob>::Summary, <J as ShardJob>::Marker)>;

/// A completion marker: JSON that names the shard's output (relative to the run folder).
pub trait ShardMarker: Serialize + DeserializeOwned + Clone {
    /// The output the marker names.
    fn output(&self) -> &str;
    /// The marker with its output published under another name.
    fn renamed(&self, output: &str) -> Self;
}

/// What [`run_shard`] did.
#[derive(Debug, Clone)]
pub enum ShardOutcome<S, M> {
    /// This call ran the shard and its marker holds.
    Done(S, M),
    /// The shard's marker was already there (or another task's won): nothing of this call's holds.
    AlreadyDone(M),
}

impl<S, M> ShardOutcome<S, M> {
    /// The marker that holds.
    pub fn marker(&self) -> &M {
        match self {
            ShardOutcome::Done(_, m) | ShardOutcome::AlreadyDone(m) => m,
        }
    }
}

/// Runs shard `k` of the local run folder `run` with `job` (see the module text).
pub fn run_shard_local<J: ShardJob>(
    job: &J,
    run: &Path,
    k: usize,
    rep: &dyn Reporter,
) -> Result<ShardOutcome<J::Summary, J::Marker>> {
    job.check()?;
    let plan = load_plan(run)?;
    plan.check_shard(run, k)?;
    let marker_path = job.marker_path(run, k);
    if let Some(m) = read_once::<J::Marker>(&marker_path, J::WHAT)? {
        job.agrees(k, &m)?;
        return Ok(ShardOutcome::AlreadyDone(m));
    }
    let ds = plan.shard_dataset(run, k)?;
    let (summary, marker) = job.run(run, k, ds, rep)?;
    if create_once(&marker_path, &marker)? {
        Ok(ShardOutcome::Done(summary, marker))
    } else {
        let held = read_once::<J::Marker>(&marker_path, J::WHAT)?.unwrap_or(marker);
        Ok(ShardOutcome::AlreadyDone(held))
    }
}

/// [`run_shard_local`] for a run folder that is local or on object storage: for a bucket, the plan,
/// the shard's manifest and its marker are pulled into the mirror, the shard runs there, and its
/// output is published under a name of its own before the marker is created only if absent.
pub fn run_shard<J: ShardJob>(
    job: &J,
    run: &Path,
    k: usize,
    rep: &dyn Reporter,
) -> Result<ShardOutcome<J::Summary, J::Marker>> {
    let Some(url) = run.to_str().filter(|u| crate::data::remote::is_url(u)) else {
        return run_shard_local(job, run, k, rep);
    };
    job.check()?;
    let rr = RemoteRun::open(url)?;
    rr.pull_shard(k)?;
    let marker_path = job.marker_path(&rr.local, k);
    if let Some(m) = rr.pull_marker::<J::Marker>(&marker_path, J::WHAT)? {
        job.agrees(k, &m)?;
        return Ok(ShardOutcome::AlreadyDone(m));
    }
    let (summary, marker) = match run_shard_local(job, &rr.local, k, rep)? {
        ShardOutcome::Done(s, m) => (Some(s), m),
        ShardOutcome::AlreadyDone(m) => (None, m),
    };
    let (won, held) = rr.publish_marker(
        marker.output(),
        &marker_path,
        &|name| marker.renamed(name),
        J::WHAT,
    )?;
    match (won, summary) {
        (true, Some(s)) => Ok(ShardOutcome::Done(s, held)),
        _ => Ok(ShardOutcome::AlreadyDone(held)),
    }
}
