//! `score --features`: a head's probabilities for the rows of one split of a feature cache (or a
//! run folder's merged cache), streamed: the cache is read in blocks and each row is written as its
//! block is scored, so memory is one block (two when the cache holds mirrored copies, which are
//! averaged in as `evaluate` does) and the split's paths, however large the cache.
//! The rows are named by the paths the cache lists (relative to the folder it was extracted from),
//! and `--resume` skips the names already in the output, as for images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{open_output, Classifier, Format, ScoreConfig, ScoreSummary};
use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::head::file::Head;
use crate::report::evaluate::{pick_split, BLOCK_BYTES};

/// Scores `cfg.split` (default test, else val, else train) of the cache at `features`.
pub(super) fn score_features(
    cfg: &ScoreConfig,
    features: &Path,
    rep: &dyn Reporter,
) -> Result<ScoreSummary> {
    let t0 = Instant::now();
    let hp = cfg.head.as_ref().ok_or_else(|| {
        Error::invalid(
            "head",
            "scoring a feature cache needs the head file to score it with",
        )
    })?;
    let head = Head::load(hp)?;
    let cache = FeatureCache::open(features)?;
    head.check_compatible(hp, &cache.meta, features, cfg.any_precision)?;
    let split = pick_split(&cache, cfg.split.as_deref(), features)?;
    let classifier = Classifier::Head(Box::new(head));
    let Classifier::Head(head) = &classifier else {
        unreachable!("built as a head above")
    };
    if let Some(k) = cfg.top_k {
        crate::util::limits::check("top_k", k, 1, head.classes.len())?;
    }
    let paths = cache.read_paths(&split)?;
    let n = paths.len();
    let format = cfg.out.as_deref().map_or(Format::Csv, Format::for_path);
    // A cache made by make-features has no fingerprint: its bytes say which it is.
    let id = match cache.meta.fingerprint.as_str() {
        "" => crate::util::hash::sha256_file(features)?,
        f => f.to_string(),
    };
    let source = format!("features {id} split {split}");
    let (opened, mut w, done) = open_output(cfg, format, &classifier, &paths, source)?;
    let out_path = cfg.out.clone().unwrap_or_else(|| PathBuf::from("<stdout>"));
    let resumed = paths.iter().filter(|p| done.contains(*p)).count();
    rep.report(Event::Start {
        task: "score",
        total: n as u64,
        done: resumed as u64,
    });
    // A cache made with `extract --tta flip`: each row averaged with its mirrored copy, as
    // `evaluate` does.
    let flipped = crate::cache::flip_split(&split);
    let tta = cache.meta.splits.contains(&flipped);
    if tta {
        if cache.read_paths(&flipped)? != paths {
            return Err(Error::cache(
                features,
                format!("split {flipped} does not list {split}'s images in the same order"),
            ));
        }
        rep.report(Event::Notice(&format!(
            "each row averaged with its mirrored copy (split {flipped}), as evaluate does"
        )));
    }
    let row = head.feature_shape.iter().product::<usize>().max(1);
    cache.for_each_block(&split, n, BLOCK_BYTES, |start, rows| {
        let k = rows.len() / row;
        let mut p = head.probabilities(rows, k)?;
        if tta {
            let mirrored = cache.read_rows(&flipped, start, k)?;
            p = (p + head.probabilities(mirrored, k)?) * 0.5;
        }
        let mut written = 0;
        for (r, name) in paths[start..start + k].iter().enumerate() {
            if !done.contains(name) {
                let pr = p.row(r);
                w.row(name, pr.as_slice().expect("standard layout"))
                    .map_err(|e| Error::io(&out_path, e))?;
                written += 1;
            }
        }
        rep.report(Event::Advance(written));
        Ok(())
    })?;
    opened.finish(&mut w)?;
    rep.report(Event::Finish);
    Ok(ScoreSummary {
        scored: n - resumed,
        failed: 0,
        resumed,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
