//! Runs over many machines: a plan cuts a dataset's images into N contiguous shards; each array task
//! of a scheduler (Slurm, a Kubernetes Indexed Job, AWS Batch) extracts one shard into
//! `RUN/shards/shard-KKKKK.h5` and then creates its completion marker `RUN/done/KKKKK.json` (only if
//! absent); `merge` ([`super::merge`]) joins the shards into one cache equal to a single `extract`.
//!
//! ```text
//! RUN/plan.json                    source, shard count, classes, splits, images per shard
//! RUN/manifest/shard-KKKKK.txt     one JSON array per line: [split, label, path relative to source]
//! RUN/shards/shard-KKKKK.h5        a worker's cache (with .journal / .lock while it runs)
//! RUN/done/KKKKK.json              the completion marker: counts, skips, output sha256, model
//! ```
//!
//! The shard count always comes from the plan, never from the scheduler's environment (resubmitting
//! two failed tasks of an array changes the array's task count).

use std::io::{BufRead, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::scan::{Dataset, Item, Split};
use crate::error::{Error, Result};

/// The plan's file name inside a run folder.
pub const PLAN_FILE: &str = "plan.json";
pub(crate) const PLAN_FORMAT: &str = "headstart-plan/1";
/// Images per shard that [`recommend_shards`] aims at (10k-100k keeps per-task overhead small and a
/// lost task cheap).
pub const TARGET_SHARD_IMAGES: usize = 50_000;

/// Where the shard index may come from, in the order they are tried after `--shard`.
pub const SHARD_ENV: [&str; 4] = [
    "HEADSTART_SHARD",
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// Images of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitCount {
    pub name: String,
    pub images: usize,
}

/// `RUN/plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    /// The dataset folder every shard's paths are relative to.
    pub source: String,
    pub shards: usize,
    pub images: usize,
    pub classes: Vec<String>,
    pub splits: Vec<SplitCount>,
    /// Images in each shard.
    pub shard_images: Vec<usize>,
    pub headstart_version: String,
}

/// The images of shard `k` of `n` over `total` images in plan order: contiguous, sizes differing by
/// at most one, every image in exactly one shard.
pub fn shard_range(total: usize, n: usize, k: usize) -> Range<usize> {
    let at = |k: usize| (k as u128 * total as u128 / n.max(1) as u128) as usize;
    at(k)..at(k + 1)
}

/// A shard count giving about [`TARGET_SHARD_IMAGES`] images per shard.
pub fn recommend_shards(total: usize) -> usize {
    total.div_ceil(TARGET_SHARD_IMAGES).max(1)
}

/// `RUN/manifest/shard-KKKKK.txt`.
pub fn manifest_path(run: &Path, k: usize) -> PathBuf {
    run.join("manifest").join(format!("shard-{k:05}.txt"))
}

/// `RUN/shards/shard-KKKKK.h5`: the worker's cache.
pub fn output_path(run: &Path, k: usize) -> PathBuf {
    run.join("shards").join(format!("shard-{k:05}.h5"))
}

/// `RUN/scores/shard-KKKKK.csv`: a `score --run` worker's rows.
pub fn score_output_path(run: &Path, k: usize) -> PathBuf {
    run.join("scores").join(format!("shard-{k:05}.csv"))
}

/// `RUN/scored/KKKKK.json`: a scored shard's completion marker.
pub fn score_marker_path(run: &Path, k: usize) -> PathBuf {
    run.join("scored").join(format!("{k:05}.json"))
}

/// `RUN/done/KKKKK.json`: the completion marker.
pub fn marker_path(run: &Path, k: usize) -> PathBuf {
    run.join("done").join(format!("{k:05}.json"))
}

/// Lists `source` (as `extract` would) and writes the plan and one manifest per shard into `run`.
/// `run` must not hold a plan already. The plan file is written last: a plan is complete when it
/// exists.
pub fn write_plan(source: &Path, shards: Option<usize>, run: &Path) -> Result<Plan> {
    let plan_file = run.join(PLAN_FILE);
    if plan_file.exists() {
        return Err(Error::Config(format!(
            "{}: a plan is already there; plan into a new folder (shards and markers belong to their plan)",
            plan_file.display()
        )));
    }
    // Streamed listings; held in memory only for a store that does not list in key order.
    let streamed = match source.to_str().filter(|u| crate::data::remote::is_url(u)) {
        Some(url) => super::listing::plan_streamed(url, shards, run)?,
        None => Some(super::listing::plan_local_streamed(source, shards, run)?),
    };
    if let Some(plan) = streamed {
        write_json_via_tmp(&plan_file, &plan)?;
        return Ok(plan);
    }
    let ds = Dataset::scan_any(source)?;
    let total = ds.len();
    if total == 0 {
        return Err(Error::dataset(source, "no images to plan"));
    }
    let n = shard_count(shards, total)?;
    let manifest_dir = run.join("manifest");
    std::fs::create_dir_all(&manifest_dir).map_err(|e| Error::io(&manifest_dir, e))?;
    let mut rows = ds
        .splits
        .iter()
        .flat_map(|s| s.items.iter().map(move |i| (s.name.as_str(), i)));
    let mut shard_images = Vec::with_capacity(n);
    for k in 0..n {
        let r = shard_range(total, n, k);
        let path = manifest_path(run, k);
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = BufWriter::new(file);
        for (split, item) in rows.by_ref().take(r.len()) {
            let line = serde_json::to_string(&(split, item.label, &item.rel_path))
                .map_err(|e| Error::Config(format!("manifest line: {e}")))?;
            writeln!(w, "{line}").map_err(|e| Error::io(&path, e))?;
        }
        w.flush().map_err(|e| Error::io(&path, e))?;
        shard_images.push(r.len());
    }
    let source = match &ds.remote {
        Some(r) => PathBuf::from(r.remote.url()),
        None => source.canonicalize().map_err(|e| Error::io(source, e))?,
    };
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        source: crate::util::paths::to_text(&source),
        shards: n,
        images: total,
        classes: ds.classes.clone(),
        splits: ds
            .splits
            .iter()
            .map(|s| SplitCount {
                name: s.name.clone(),
                images: s.items.len(),
            })
            .collect(),
        shard_images,
        headstart_version: env!("CARGO_PKG_VERSION").into(),
    };
    write_json_via_tmp(&plan_file, &plan)?;
    Ok(plan)
}

/// The shard count: `shards`, else [`recommend_shards`]; at least 1 and at most `total`.
pub(crate) fn shard_count(shards: Option<usize>, total: usize) -> Result<usize> {
    let n = shards.unwrap_or_else(|| recommend_shards(total));
    if n == 0 || n > total {
        return Err(Error::Config(format!(
            "--shards {n}: must be between 1 and the number of images ({total})"
        )));
    }
    Ok(n)
}

/// Writes the plan as JSON through the one output writer (a plan is never replaced).
fn write_json_via_tmp(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    crate::util::output::Output::new(path).write_bytes((text + "\n").as_bytes())
}

/// Reads `RUN/plan.json`.
pub fn load_plan(run: &Path) -> Result<Plan> {
    let path = run.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not a headstart plan: {e}", path.display())))?;
    if plan.format != PLAN_FORMAT {
        return Err(Error::Config(format!(
            "{}: format '{}', this headstart reads '{PLAN_FORMAT}'",
            path.display(),
            plan.format
        )));
    }
    if plan.shard_images.len() != plan.shards
        || plan.shard_images.iter().sum::<usize>() != plan.images
    {
        return Err(Error::Config(format!(
            "{}: {} shards listed for {} (images {} vs {})",
            path.display(),
            plan.shard_images.len(),
            plan.shards,
            plan.shard_images.iter().sum::<usize>(),
            plan.images
        )));
    }
    Ok(plan)
}

impl Plan {
    /// Checks that shard `k` exists in this plan.
    pub fn check_shard(&self, run: &Path, k: usize) -> Result<()> {
        if k >= self.shards {
            return Err(Error::Config(format!(
                "shard {k}: {} has shards 0..{} (the count comes from the plan, not the scheduler)",
                run.join(PLAN_FILE).display(),
                self.shards - 1
            )));
        }
        Ok(())
    }

    /// The dataset of shard `k`: the plan's source, classes and splits (some possibly empty), with
    /// the images of the shard's manifest.
    pub fn shard_dataset(&self, run: &Path, k: usize) -> Result<Dataset> {
        self.check_shard(run, k)?;
        let path = manifest_path(run, k);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut splits: Vec<Split> = self
            .splits
            .iter()
            .map(|s| Split {
                name: s.name.clone(),
                items: Vec::new(),
            })
            .collect();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| Error::io(&path, e))?;
            let bad = |why: String| Error::Config(format!("{}:{}: {why}", path.display(), n + 1));
            let (split, label, rel_path): (String, u32, String) =
                serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if label as usize >= self.classes.len() {
                return Err(bad(format!(
                    "label {label}, the plan has {} classes",
                    self.classes.len()
                )));
            }
            let Some(s) = splits.iter_mut().find(|s| s.name == split) else {
                return Err(bad(format!("split '{split}' is not in the plan")));
            };
            // A path of the source's tree: never absolute, never climbing out of it.
            let rel = crate::util::paths::contained(&rel_path, &path, &format!("line {}", n + 1))?;
            s.items.push(Item {
                rel_path: crate::util::paths::to_text(&rel),
                label,
            });
        }
        let got: usize = splits.iter().map(|s| s.items.len()).sum();
        if got != self.shard_images[k] {
            return Err(Error::Config(format!(
                "{}: {got} images, the plan says {}",
                path.display(),
                self.shard_images[k]
            )));
        }
        let remote = if crate::data::remote::is_url(&self.source) {
            Some(crate::data::scan::RemoteSource {
                remote: crate::data::remote::Remote::open(&self.source)?,
                versions: Default::default(),
            })
        } else {
            None
        };
        Ok(Dataset {
            root: crate::util::paths::from_text(&self.source),
            classes: self.classes.clone(),
            splits,
            warnings: Vec::new(),
            remote,
        })
    }
}

/// The shard index: `flag`, else the first of [`SHARD_ENV`] that is set (read through `env`), plus
/// `offset`. Returns the index and where it came from.
pub fn shard_index(
    flag: Option<usize>,
    offset: usize,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(usize, String)> {
    let (k, from) = match flag {
        Some(k) => (k, "--shard".to_string()),
        None => {
            let Some((name, value)) = SHARD_ENV
                .iter()
                .find_map(|name| env(name).map(|v| (*name, v)))
            else {
                return Err(Error::Config(format!(
                    "no shard index: pass --shard K, or run as an array task ({} is read)",
                    SHARD_ENV.join(", ")
                )));
            };
            let k = value.trim().parse::<usize>().map_err(|_| {
                Error::Config(format!(
                    "{name}='{value}': not a shard index (a whole number)"
                ))
            })?;
            (k, name.to_string())
        }
    };
    let total = k
        .checked_add(offset)
        .ok_or_else(|| Error::Config(format!("shard {k} + --shard-offset {offset} overflows")))?;
    let from = if offset > 0 {
        format!("{from} + --shard-offset {offset}")
    } else {
        from
    };
    Ok((total, from))
}

/// `RUN/done/KKKKK.json`: what a finished shard holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub shard: usize,
    /// Images in the shard, and how many have features.
    pub images: usize,
    pub extracted: usize,
    /// (path relative to the source, reason) of the images that could not be read.
    pub skipped: Vec<(String, String)>,
    /// The shard's cache, relative to the run folder, and its sha256.
    pub output: String,
    pub output_sha256: String,
    pub model_sha256: String,
    pub preprocess: String,
    pub feature_shape: Vec<usize>,
    pub seconds: f64,
}

/// Creates shard `marker.shard`'s marker if it is absent (atomically: written to a temporary file,
/// then hard-linked into place, which fails when a marker exists). Returns false when a marker was
/// already there (a duplicated or requeued task); the existing one is left as it is.
pub fn create_marker(run: &Path, marker: &Marker) -> Result<bool> {
    create_once(&marker_path(run, marker.shard), marker)
}

/// Writes `value` as JSON at `path` only if nothing is there (written to a temporary file, then
/// hard-linked into place, which fails when `path` exists). Returns false when it existed.
pub fn create_once(path: &Path, value: &impl Serialize) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The output a marker names, checked: relative to the run folder, inside it, and exactly `own`
/// (the output of the marker's own shard), so a marker cannot point at another shard's file or
/// outside the run.
pub fn checked_output(run: &Path, marker: &Path, output: &str, own: &Path) -> Result<PathBuf> {
    let rel = crate::util::paths::contained(output, marker, "field 'output'")?;
    let own_rel = own.strip_prefix(run).unwrap_or(own);
    // On a bucket each task uploads under a name of its own: `shards/shard-KKKKK.<task>.h5`.
    let named_for = |rel: &Path| {
        let (Some(name), Some(own_name)) = (
            rel.file_name().and_then(|n| n.to_str()),
            own_rel.file_name().and_then(|n| n.to_str()),
        ) else {
            return false;
        };
        let (stem, ext) = own_name.rsplit_once('.').unwrap_or((own_name, ""));
        rel.parent() == own_rel.parent()
            && (name == own_name
                || (name.starts_with(&format!("{stem}."))
                    && name.ends_with(&format!(".{ext}"))
                    && name.len() > own_name.len() + 1))
    };
    if !named_for(&rel) {
        return Err(Error::dataset(
            marker,
            format!(
                "field 'output' names {}, but this marker's shard writes {}",
                rel.display(),
                own_rel.display()
            ),
        ));
    }
    Ok(run.join(rel))
}

impl Marker {
    /// The shard's cache, checked with [`checked_output`].
    pub fn output_path(&self, run: &Path) -> Result<PathBuf> {
        checked_output(
            run,
            &marker_path(run, self.shard),
            &self.output,
            &output_path(run, self.shard),
        )
    }
}

/// Reads shard `k`'s marker; `None` when the shard is not done.
pub fn read_marker(run: &Path, k: usize) -> Result<Option<Marker>> {
    let path = marker_path(run, k);
    let Some(m) = read_once::<Marker>(&path, "shard marker")? else {
        return Ok(None);
    };
    if m.shard != k {
        return Err(Error::Config(format!(
            "{}: says shard {}, expected {k}",
            path.display(),
            m.shard
        )));
    }
    Ok(Some(m))
}

/// Reads a JSON file written by [`create_once`]; `None` when it is not there. `what` names the
/// kind of file in the error for one that does not parse.
pub fn read_once<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::Config(format!("{}: not a {what}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Where a run stands.
#[derive(Debug, Clone)]
pub struct RunStatus {
    pub plan: Plan,
    pub done: Vec<Marker>,
    /// Shards with no marker but a journal or a lock: started, not finished (running, or killed).
    pub started: Vec<usize>,
    /// Shards with no marker and nothing started.
    pub missing: Vec<usize>,
}

impl RunStatus {
    /// Shards without a marker (started or not), in order.
    pub fn unfinished(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.started.iter().chain(&self.missing).copied().collect();
        v.sort_unstable();
        v
    }
}

/// Reads the plan and every marker; shards without one are `started` (a journal or lock is there)
/// or `missing`.
pub fn status(run: &Path) -> Result<RunStatus> {
    let plan = load_plan(run)?;
    let mut st = RunStatus {
        plan: plan.clone(),
        done: Vec::new(),
        started: Vec::new(),
        missing: Vec::new(),
    };
    for k in 0..plan.shards {
        if let Some(m) = read_marker(run, k)? {
            st.done.push(m);
            continue;
        }
        let out = output_path(run, k);
        let started = [".journal", ".lock"].iter().any(|ext| {
            let mut p = out.as_os_str().to_owned();
            p.push(ext);
            Path::new(&p).exists()
        });
        if started {
            st.started.push(k);
        } else {
            st.missing.push(k);
        }
    }
    Ok(st)
}

/// Compresses shard indices into ranges: `[0,1,2,5,7,8]` -> `0-2,5,7-8` (Slurm's `--array` syntax).
pub fn ranges(ks: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ks.len() {
        let mut j = i;
        while j + 1 < ks.len() && ks[j + 1] == ks[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ks[i].to_string()
        } else {
            format!("{}-{}", ks[i], ks[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The commands that resubmit `shards` (of `total`), one per scheduler. Slurm's default MaxArraySize is
/// 1001: indices of 1000 and above go through `--shard-offset`.
pub fn resubmit_lines(run: &Path, total: usize, shards: &[usize]) -> Vec<String> {
    if shards.is_empty() {
        return Vec::new();
    }
    let run = run.display();
    let list = ranges(shards);
    let mut lines = Vec::new();
    let (low, high): (Vec<usize>, Vec<usize>) = shards.iter().partition(|&&k| k < 1000);
    if !low.is_empty() {
        lines.push(format!(
            "slurm:   RUN={run} sbatch --array={} deploy/slurm/extract.sbatch",
            ranges(&low)
        ));
    }
    for block in high.chunk_by(|a, b| a / 1000 == b / 1000) {
        let off = block[0] / 1000 * 1000;
        let rel: Vec<usize> = block.iter().map(|k| k - off).collect();
        lines.push(format!(
            "slurm:   RUN={run} SHARD_OFFSET={off} sbatch --array={} deploy/slurm/extract.sbatch",
            ranges(&rel)
        ));
    }
    lines.push(format!(
        "k8s:     kubectl delete job headstart-extract --ignore-not-found && RUN={run} COMPLETIONS={total} envsubst < deploy/k8s/extract-job.yaml | kubectl apply -f -   (indices already done exit at once; {list} do the work)"
    ));
    lines.push(format!(
        "aws:     for k in {}; do aws batch submit-job --job-name headstart-extract-$k --job-queue $QUEUE --job-definition headstart-extract --container-overrides \"environment=[{{name=RUN,value={run}}},{{name=HEADSTART_SHARD,value=$k}}]\"; done",
        shards
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress_runs() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn shard_index_order_and_offset() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
        };
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("AWS_BATCH_JOB_ARRAY_INDEX", "2"),
        ]);
        assert_eq!(shard_index(None, 0, slurm).unwrap().0, 7);
        assert_eq!(shard_index(None, 1000, slurm).unwrap().0, 1007);
        assert_eq!(shard_index(Some(3), 0, slurm).unwrap().0, 3);
        let k8s = env(&[("JOB_COMPLETION_INDEX", "4")]);
        assert_eq!(
            shard_index(None, 0, k8s).unwrap(),
            (4, "JOB_COMPLETION_INDEX".to_string())
        );
        let bad = env(&[("HEADSTART_SHARD", "x1")]);
        let e = shard_index(None, 0, bad).unwrap_err().to_string();
        assert!(e.contains("HEADSTART_SHARD='x1'"), "{e}");
        let e = shard_index(None, 0, env(&[])).unwrap_err().to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID"), "{e}");
    }

    #[test]
    fn resubmission_splits_high_indices_by_offset() {
        let lines = resubmit_lines(Path::new("/r"), 3000, &[3, 17, 18, 1002, 2500]);
        assert!(lines[0].contains("--array=3,17-18"), "{lines:?}");
        assert!(
            lines[1].contains("SHARD_OFFSET=1000 sbatch --array=2"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("SHARD_OFFSET=2000 sbatch --array=500"),
            "{lines:?}"
        );
    }
}
