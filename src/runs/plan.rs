//! The plan of a run: `RUN/plan.json` and one manifest per shard, the shard of each image
//! (contiguous, sizes differing by at most one), the run folder's layout and the shard index a task
//! gets from its scheduler. Each array task of a scheduler (Slurm, a Kubernetes Indexed Job, AWS
//! Batch) extracts one shard into `RUN/shards/shard-KKKKK.h5` and then creates its completion
//! marker `RUN/done/KKKKK.json` ([`super::markers`]); [`mod@super::merge`] joins the shards into one
//! cache equal to a single `extract`.
//!
//! ```text
//! RUN/plan.json                    source, shard count, classes, splits, images per shard
//! RUN/manifest/shard-KKKKK.txt     one JSON array per line: [split, label, path relative to source]
//! RUN/shards/shard-KKKKK.h5        a worker's cache (with .journal / .lock while it runs)
//! RUN/done/KKKKK.json              the completion marker: counts, skips, output sha256, model
//! RUN/scores/shard-KKKKK.csv       a `score --run` worker's rows, RUN/scored/KKKKK.json its marker
//! ```
//!
//! The shard count always comes from the plan, never from the scheduler's environment (resubmitting
//! two failed tasks of an array changes the array's task count).

use std::io::BufRead;
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
    /// Each shard's manifest's sha256, checked whenever the manifest is read (a manifest edited
    /// after planning is refused); empty in plans of earlier releases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_sha256: Vec<String>,
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

/// The shard count: `shards`, else [`recommend_shards`]; at least 1 and at most `total`.
pub(crate) fn shard_count(shards: Option<usize>, total: usize) -> Result<usize> {
    let n = shards.unwrap_or_else(|| recommend_shards(total));
    if n == 0 || n > total || n > crate::util::limits::MAX_SHARDS {
        return Err(Error::invalid(
            "shards",
            format!(
                "{n} is not between 1 and the number of images ({total}), at most {}",
                crate::util::limits::MAX_SHARDS
            ),
        ));
    }
    Ok(n)
}

/// Writes the plan as JSON through the one output writer (a plan is never replaced).
pub(super) fn write_json_via_tmp(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    crate::util::output::Output::new(path).write_bytes((text + "\n").as_bytes())
}

/// Reads `RUN/plan.json`.
pub fn load_plan(run: &Path) -> Result<Plan> {
    let path = run.join(PLAN_FILE);
    crate::util::paths::check_regular(&path)?;
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
    if plan.shards == 0 || plan.shards > crate::util::limits::MAX_SHARDS {
        return Err(Error::Config(format!(
            "{}: {} shards; a plan has 1 to {} (`headstart plan` writes it)",
            path.display(),
            plan.shards,
            crate::util::limits::MAX_SHARDS
        )));
    }
    // Summed without overflow: the counts are read from a file.
    let listed = plan
        .shard_images
        .iter()
        .try_fold(0usize, |a, &n| a.checked_add(n));
    // Each image is a manifest line of at least 10 bytes: more than 2^40 is no real plan.
    if plan.images > 1 << 40 {
        return Err(Error::Config(format!(
            "{}: {} images; a plan holds at most 2^40",
            path.display(),
            plan.images
        )));
    }
    if plan.shard_images.len() != plan.shards || listed != Some(plan.images) {
        let sum = listed.map_or("more than 2^64".into(), |n| n.to_string());
        return Err(Error::Config(format!(
            "{}: {} shards listed for {} (images {sum} vs {})",
            path.display(),
            plan.shard_images.len(),
            plan.shards,
            plan.images
        )));
    }
    if !plan.manifest_sha256.is_empty() && plan.manifest_sha256.len() != plan.shards {
        return Err(Error::Config(format!(
            "{}: {} manifest hashes for {} shards",
            path.display(),
            plan.manifest_sha256.len(),
            plan.shards
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
        crate::util::paths::check_regular(&path)?;
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if let Some(want) = self.manifest_sha256.get(k) {
            let got = crate::util::hash::sha256_bytes(&text);
            if &got != want {
                return Err(Error::Config(format!(
                    "{}: sha256 {got}, the plan says {want} (the manifest changed after `headstart plan` wrote it; plan the run again)",
                    path.display()
                )));
            }
        }
        let mut splits: Vec<Split> = self
            .splits
            .iter()
            .map(|s| Split {
                name: s.name.clone(),
                items: Vec::new(),
            })
            .collect();
        for (n, line) in text.lines().enumerate() {
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
                tags: vec![],
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
            multi_label: false,
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
    let total = k.checked_add(offset).ok_or_else(|| {
        Error::invalid(
            "shard_offset",
            format!("shard {k} + offset {offset} overflows"),
        )
    })?;
    let from = if offset > 0 {
        format!("{from} + --shard-offset {offset}")
    } else {
        from
    };
    Ok((total, from))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Counts from a plan file that overflow when summed are refused with the file named (this
    /// used to panic on an overflowing add).
    #[test]
    fn a_plan_whose_counts_overflow_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = usize::MAX / 2 + 1;
        let plan = Plan {
            format: PLAN_FORMAT.into(),
            source: "/photos".into(),
            shards: 2,
            images: 0,
            classes: vec!["cat".into()],
            splits: vec![],
            shard_images: vec![big, big],
            manifest_sha256: vec![],
            headstart_version: "0".into(),
        };
        let write = |p: &Plan| {
            let text = serde_json::to_string(p).unwrap();
            std::fs::write(d.path().join(PLAN_FILE), text).unwrap();
        };
        write(&plan);
        let e = load_plan(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("plan.json") && e.contains("more than 2^64"),
            "{e}"
        );
        write(&Plan {
            images: usize::MAX,
            shard_images: vec![usize::MAX, 0],
            ..plan.clone()
        });
        let e = load_plan(d.path()).unwrap_err().to_string();
        assert!(e.contains("at most 2^40"), "{e}");
        write(&Plan {
            images: 3,
            shard_images: vec![1, 2],
            ..plan
        });
        assert_eq!(load_plan(d.path()).unwrap().images, 3);
    }
}
