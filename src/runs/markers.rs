//! What a run has done: each shard's completion marker (`RUN/done/KKKKK.json` for `extract`,
//! `RUN/scored/KKKKK.json` for `score`), created only if absent, so a duplicated or requeued task
//! never replaces the marker that holds; the output a marker names, checked to be its own shard's;
//! the run's status (done, started, missing) and the scheduler lines that resubmit what is left.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{load_plan, marker_path, output_path, Plan};
use crate::error::{Error, Result};

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

/// `RUN/scored/KKKKK.json`: what a scored shard holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreMarker {
    pub shard: usize,
    pub images: usize,
    pub scored: usize,
    pub failed: usize,
    /// The rows (CSV, relative to the run folder) and their sha256.
    pub output: String,
    pub output_sha256: String,
    /// What scored the shard: the head, the model, the options (the score file's run record;
    /// markers of earlier releases have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<serde_json::Value>,
}

/// Reads the score marker at `path`; `None` when the shard is not scored.
pub fn read_score_marker(path: &Path) -> Result<Option<ScoreMarker>> {
    read_once(path, "score marker")
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
    // Never written through a link planted at the temporary name.
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, (text + "\n").as_bytes()))
        .map_err(|e| Error::io(&tmp, e))?;
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
    let path = run.join(rel);
    // Through links too: the file itself lies inside the run (the rule a merged cache's mapped
    // shards are held to).
    if let (Ok(real), Ok(root)) = (path.canonicalize(), run.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(Error::dataset(
                marker,
                format!(
                    "its output {} lies outside the run folder (a link): refused",
                    path.display()
                ),
            ));
        }
    }
    Ok(path)
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
    crate::util::paths::check_regular(path)?;
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
            // A marker naming another file (outside the run, another shard's) is an error, as in
            // `merge`, not a finished shard.
            m.output_path(run)?;
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

/// Both markers name their output in the field `output`.
macro_rules! shard_marker {
    ($($t:ty),*) => {$(
        impl super::driver::ShardMarker for $t {
            fn output(&self) -> &str {
                &self.output
            }
            fn renamed(&self, output: &str) -> Self {
                Self {
                    output: output.to_string(),
                    ..self.clone()
                }
            }
        }
    )*};
}
shard_marker!(Marker, ScoreMarker);

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
