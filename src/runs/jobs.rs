//! The two sharded commands as [`ShardJob`]s: `extract --run` ([`ExtractShard`]: the shard's cache
//! in `RUN/shards/`, its marker in `RUN/done/`) and `score --run` ([`ScoreShard`]: the shard's rows
//! in `RUN/scores/`, its marker in `RUN/scored/`). Both go through the one driver.

use std::path::{Path, PathBuf};

use super::driver::{run_shard, Ran, ShardJob, ShardOutcome};
use super::markers::{Marker, ScoreMarker};
use super::plan::{marker_path, output_path, score_marker_path, score_output_path};
use super::remote::key_of;
use crate::cache::FeatureCache;
use crate::data::scan::Dataset;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::infer::extract::{extract, ExtractConfig, ExtractSummary};
use crate::report::score::{score, ScoreConfig, ScoreSummary};
use crate::util::hash::sha256_file;

/// `extract --run`: the extraction settings every shard shares (`data` and `out` come from the plan).
pub struct ExtractShard<'a>(pub &'a ExtractConfig);

/// `score --run`: the scoring settings every shard shares (`inputs` and `out` come from the plan).
pub struct ScoreShard<'a>(pub &'a ScoreConfig);

/// Creates the folder that holds `out`.
fn parent_dir(out: &Path) -> Result<()> {
    match out.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

impl ShardJob for ExtractShard<'_> {
    type Marker = Marker;
    type Summary = ExtractSummary;
    const WHAT: &'static str = "shard marker";

    fn marker_path(&self, run: &Path, k: usize) -> PathBuf {
        marker_path(run, k)
    }

    fn check(&self) -> Result<()> {
        if self.0.labels.is_some() {
            return Err(Error::invalid(
                "labels",
                "not with a run: a plan lists class folders (extract the labelled folder in one run)",
            ));
        }
        if self.0.layer.is_some() {
            return Err(Error::invalid(
                "layer",
                "not with a run: cut the model once first (`headstart cut`), then give every shard the cut file",
            ));
        }
        Ok(())
    }

    /// The model of a done shard is the one given now (an int8 base is made at run time: not
    /// compared).
    fn agrees(&self, k: usize, done: &Marker) -> Result<()> {
        if self.0.int8.is_some() {
            return Ok(());
        }
        let sha = crate::onnx::model_sha256(&self.0.model)?;
        if sha != done.model_sha256 {
            return Err(Error::model(
                &self.0.model,
                format!(
                    "shard {k} of this run was extracted with another model (sha256 {}, this one is {sha}): the shards of one run share one base; plan a new run for this model",
                    done.model_sha256
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, run: &Path, k: usize, ds: Dataset, rep: &dyn Reporter) -> Ran<Self> {
        let out = output_path(run, k);
        parent_dir(&out)?;
        let mut cfg = self.0.clone();
        cfg.data = ds.root.clone();
        cfg.out = out.clone();
        cfg.subset = Some(ds);
        let summary = extract(&cfg, rep)?;
        let cache = FeatureCache::open(&out)?;
        let marker = Marker {
            shard: k,
            images: summary.images,
            extracted: summary.extracted,
            skipped: summary.skipped.clone(),
            output: key_of(run, &out),
            output_sha256: sha256_file(&out)?,
            model_sha256: cache.meta.model_sha256.clone(),
            preprocess: cache.meta.preprocess.clone(),
            feature_shape: cache.meta.feature_shape.clone(),
            seconds: summary.seconds,
        };
        Ok((summary, marker))
    }
}

impl ShardJob for ScoreShard<'_> {
    type Marker = ScoreMarker;
    type Summary = ScoreSummary;
    const WHAT: &'static str = "score marker";

    fn marker_path(&self, run: &Path, k: usize) -> PathBuf {
        score_marker_path(run, k)
    }

    /// A shard scored by another head, model or options is told, not answered "already scored"
    /// (its rows are another run's).
    fn agrees(&self, k: usize, done: &ScoreMarker) -> Result<()> {
        let Some(then) = &done.run else {
            return Ok(());
        };
        let now = crate::report::score::images_record(self.0)?;
        match crate::report::score::records_differ(then, &now) {
            None => Ok(()),
            Some(how) => Err(Error::Config(format!(
                "shard {k} of this run was already scored by another run ({how}; the first is the shard's, the second this call's): its rows stay as they are; to score it again, remove RUN/{} and RUN/scored/{k:05}.json",
                done.output
            ))),
        }
    }

    /// Scores into `RUN/scores/shard-KKKKK.csv`, continuing an interrupted attempt.
    fn run(&self, run: &Path, k: usize, ds: Dataset, rep: &dyn Reporter) -> Ran<Self> {
        let out = score_output_path(run, k);
        parent_dir(&out)?;
        let mut cfg = self.0.clone();
        cfg.inputs = ds
            .splits
            .iter()
            .flat_map(|s| s.items.iter().map(|i| ds.root.join(i.path())))
            .collect();
        cfg.out = Some(out.clone());
        cfg.resume = true;
        cfg.remote_root = ds.remote.as_ref().map(|r| r.remote.clone());
        let images = cfg.inputs.len();
        let summary = score(&cfg, rep)?;
        let marker = ScoreMarker {
            shard: k,
            images,
            scored: images - summary.failed,
            failed: summary.failed,
            output: key_of(run, &out),
            output_sha256: sha256_file(&out)?,
            run: Some(crate::report::score::images_record(self.0)?),
        };
        Ok((summary, marker))
    }
}

/// Extracts shard `k` of the planned run `run` (local or on object storage) into
/// `RUN/shards/shard-KKKKK.h5`, then creates its completion marker if none exists. Another worker on
/// the same shard at the same time is refused by the output's lock.
pub fn extract_shard(
    cfg: &ExtractConfig,
    run: &Path,
    k: usize,
    rep: &dyn Reporter,
) -> Result<ShardOutcome<ExtractSummary, Marker>> {
    run_shard(&ExtractShard(cfg), run, k, rep)
}

/// Scores shard `k` of the planned run `run` (local or on object storage) into
/// `RUN/scores/shard-KKKKK.csv`, then creates the marker `RUN/scored/KKKKK.json` if none exists.
pub fn score_shard(
    cfg: &ScoreConfig,
    run: &Path,
    k: usize,
    rep: &dyn Reporter,
) -> Result<ShardOutcome<ScoreSummary, ScoreMarker>> {
    run_shard(&ScoreShard(cfg), run, k, rep)
}
