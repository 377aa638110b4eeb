//! Plans that never hold the whole listing in memory. An object-storage listing is streamed page by
//! page into a spill file beside the plan (one JSON string a line), while only the contiguous runs
//! of each folder (`top/` or `top/second/`, which are contiguous because stores list keys in order)
//! are kept. The layout and classes are decided from those runs, then the manifests are copied out
//! of the spill file in plan order. Memory: one page plus one entry per folder. A local folder is
//! spilled one class folder at a time (memory: the largest class folder's names, sorted as
//! `extract` sorts them).
//!
//! A store that does not list in key order (some `https://` listings) is detected (a key smaller
//! than the one before) and planned in memory instead. [`write_plan`] is the entry point: it picks
//! the streamed listing, or the in-memory one, and writes the plan last.

use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::plan::{
    self, manifest_path, shard_count, shard_range, write_json_via_tmp, Plan, SplitCount, PLAN_FILE,
    PLAN_FORMAT,
};
use crate::data::remote::Remote;
use crate::data::scan::{
    beside_splits, canonical_split, classes_differ, image_files_fenced, is_hidden, is_image_file,
    is_split_name, ordered_splits, subdirs, Dataset, DEFAULT_SPLIT,
};
use crate::error::{Error, Result};

/// A contiguous run of keys of one folder in the spill file.
#[derive(Debug, Clone)]
struct Run {
    top: String,
    /// The second path component when the key has at least three.
    second: Option<String>,
    /// Byte offset of its first line, and its number of keys.
    offset: u64,
    count: usize,
}

/// The keys of one (split, class): runs of the spill file, in order.
struct Group {
    label: u32,
    runs: Vec<(u64, usize)>,
}

/// Each split's name and its groups, in plan order.
type SplitGroups = Vec<(String, Vec<Group>)>;

/// The spill file and the folder runs of one listing.
struct Spill {
    path: PathBuf,
    runs: Vec<Run>,
}

/// Lists `remote` into `path`; `None` when the store did not list in key order.
fn spill(remote: &Remote, path: &Path) -> Result<Option<Spill>> {
    let file = fresh_file(path)?;
    let mut w = BufWriter::new(file);
    let mut runs: Vec<Run> = Vec::new();
    let mut offset = 0u64;
    let mut sorted = true;
    let mut previous = String::new();
    remote.list("", &mut |l| {
        let parts: Vec<&str> = l.rel.split('/').collect();
        if parts.len() < 2
            || parts.iter().any(|p| is_hidden(p))
            || !is_image_file(Path::new(&l.rel))
        {
            return Ok(());
        }
        if l.rel < previous {
            sorted = false;
        }
        let second = (parts.len() >= 3).then(|| parts[1].to_string());
        let same = runs
            .last()
            .is_some_and(|r| r.top == parts[0] && r.second == second);
        if !same {
            runs.push(Run {
                top: parts[0].to_string(),
                second,
                offset,
                count: 0,
            });
        }
        let line = serde_json::to_string(&l.rel).unwrap_or_default() + "\n";
        w.write_all(line.as_bytes())
            .map_err(|e| Error::io(path, e))?;
        offset += line.len() as u64;
        if let Some(r) = runs.last_mut() {
            r.count += 1;
        }
        previous = l.rel;
        Ok(())
    })?;
    w.flush().map_err(|e| Error::io(path, e))?;
    Ok(sorted.then(|| Spill {
        path: path.to_path_buf(),
        runs,
    }))
}

/// One group per class: the runs `of(run, class)` selects, in spill order.
fn groups(runs: &[Run], classes: &[String], of: impl Fn(&Run, &String) -> bool) -> Vec<Group> {
    classes
        .iter()
        .enumerate()
        .map(|(label, c)| Group {
            label: label as u32,
            runs: runs
                .iter()
                .filter(|r| of(r, c))
                .map(|r| (r.offset, r.count))
                .collect(),
        })
        .collect()
}

/// The classes and, per split (in plan order), its groups, decided as [`Dataset::from_keys`]
/// (crate::data::scan::Dataset::from_keys) decides them.
fn layout(url: &str, runs: &[Run]) -> Result<(Vec<String>, SplitGroups)> {
    let mut tops: Vec<&str> = runs.iter().map(|r| r.top.as_str()).collect();
    tops.sort_unstable();
    tops.dedup();
    let split_dirs: Vec<String> = tops
        .iter()
        .filter(|t| is_split_name(t))
        .map(|t| t.to_string())
        .collect();
    let root = Path::new(url);
    if split_dirs.is_empty() {
        let classes: Vec<String> = tops.iter().map(|t| t.to_string()).collect();
        let groups = groups(runs, &classes, |r, c| &r.top == c);
        return Ok((classes, vec![(DEFAULT_SPLIT.to_string(), groups)]));
    }
    let refs: Vec<&String> = split_dirs.iter().collect();
    if let Some(other) = tops.iter().find(|t| !is_split_name(t)) {
        return Err(beside_splits(root, other, &refs));
    }
    let classes_of = |split: &str| -> Vec<String> {
        let mut v: Vec<String> = runs
            .iter()
            .filter(|r| r.top == split)
            .filter_map(|r| r.second.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let ordered = ordered_splits(&refs);
    let classes = classes_of(&ordered[0]);
    let mut splits = Vec::new();
    for name in &ordered {
        let these = classes_of(name);
        if these != classes {
            let dir = root.join(name);
            return Err(classes_differ(
                &dir,
                (&ordered[0], &classes),
                (name, &these),
            ));
        }
        let groups = groups(runs, &classes, |r, c| {
            &r.top == name && r.second.as_ref() == Some(c)
        });
        splits.push((canonical_split(name).to_string(), groups));
    }
    Ok((classes, splits))
}

/// Plans the images below `url` into `run` (manifests only; the caller writes `plan.json`), with
/// the listing streamed through a spill file. `None` when the store does not list in key order.
pub fn plan_streamed(url: &str, shards: Option<usize>, run: &Path) -> Result<Option<Plan>> {
    let remote = Remote::open(url)?;
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let spill_path = run.join(".listing.tmp");
    let result = spill(&remote, &spill_path).and_then(|s| match s {
        Some(s) => write_manifests(remote.url(), &s, shards, run).map(Some),
        None => Ok(None),
    });
    let _ = std::fs::remove_file(&spill_path);
    result
}

/// Plans the local folder `source` into `run` (manifests only; the caller writes `plan.json`),
/// spilling one class folder at a time.
pub fn plan_local_streamed(source: &Path, shards: Option<usize>, run: &Path) -> Result<Plan> {
    let meta = std::fs::metadata(source).map_err(|e| Error::io(source, e))?;
    if !meta.is_dir() {
        return Err(Error::dataset(
            source,
            "not a directory (expected one folder per class)",
        ));
    }
    let root = source.canonicalize().map_err(|e| Error::io(source, e))?;
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let spill_path = run.join(".listing.tmp");
    let result = spill_local(&root, &spill_path).and_then(|runs| {
        let spill = Spill {
            path: spill_path.clone(),
            runs,
        };
        write_manifests(&crate::util::paths::to_text(&root), &spill, shards, run)
    });
    let _ = std::fs::remove_file(&spill_path);
    result
}

/// Walks `root`'s class folders (inside split folders or not) into the spill file at `path`, one
/// run per class folder (empty ones too: their class still counts); a folder beside split folders
/// gets an empty run, which the layout check then names.
fn spill_local(root: &Path, path: &Path) -> Result<Vec<Run>> {
    let dirs = subdirs(root)?;
    let split_layout = dirs.iter().any(|d| is_split_name(d));
    let mut folders: Vec<(String, Option<String>, bool)> = Vec::new();
    for d in &dirs {
        if !split_layout {
            folders.push((d.clone(), None, true));
        } else if is_split_name(d) {
            for c in subdirs(&root.join(d))? {
                folders.push((d.clone(), Some(c), true));
            }
        } else {
            folders.push((d.clone(), None, false));
        }
    }
    let file = fresh_file(path)?;
    let mut w = BufWriter::new(file);
    let (mut runs, mut offset) = (Vec::with_capacity(folders.len()), 0u64);
    for (top, second, walk) in folders {
        let dir = match &second {
            Some(c) => root.join(&top).join(c),
            None => root.join(&top),
        };
        let files = if walk {
            image_files_fenced(&dir, Some(root))?.0
        } else {
            Vec::new()
        };
        runs.push(Run {
            top,
            second,
            offset,
            count: files.len(),
        });
        for f in files {
            let rel = crate::util::paths::to_text(f.strip_prefix(root).unwrap_or(&f));
            let line = serde_json::to_string(&rel).unwrap_or_default() + "\n";
            w.write_all(line.as_bytes())
                .map_err(|e| Error::io(path, e))?;
            offset += line.len() as u64;
        }
    }
    w.flush().map_err(|e| Error::io(path, e))?;
    Ok(runs)
}

fn write_manifests(url: &str, spill: &Spill, shards: Option<usize>, run: &Path) -> Result<Plan> {
    let (classes, splits) = layout(url, &spill.runs)?;
    if classes.is_empty() {
        return Err(Error::dataset(
            Path::new(url),
            "no class folders found (expected e.g. DIR/cat/*.jpg or DIR/train/cat/*.jpg)",
        ));
    }
    let counts: Vec<usize> = splits
        .iter()
        .map(|(_, g)| g.iter().flat_map(|g| &g.runs).map(|r| r.1).sum())
        .collect();
    let total: usize = counts.iter().sum();
    if total == 0 {
        return Err(Error::dataset(Path::new(url), "no images to plan"));
    }
    let n = shard_count(shards, total)?;
    let manifest_dir = run.join("manifest");
    real_folder(&manifest_dir)?;
    let file = std::fs::File::open(&spill.path).map_err(|e| Error::io(&spill.path, e))?;
    let mut reader = BufReader::new(file);
    let (mut k, mut in_shard) = (0usize, 0usize);
    let mut out = open_manifest(run, k)?;
    let mut shard_images = Vec::with_capacity(n);
    let mut line = String::new();
    for (split, groups) in &splits {
        for g in groups {
            for &(offset, count) in &g.runs {
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(&spill.path, e))?;
                for _ in 0..count {
                    while in_shard == shard_range(total, n, k).len() {
                        shard_images.push(in_shard);
                        out.1.flush().map_err(|e| Error::io(&out.0, e))?;
                        (k, in_shard) = (k + 1, 0);
                        out = open_manifest(run, k)?;
                    }
                    line.clear();
                    reader
                        .read_line(&mut line)
                        .map_err(|e| Error::io(&spill.path, e))?;
                    let rel: String = serde_json::from_str(line.trim_end())
                        .map_err(|e| Error::cache(&spill.path, format!("listing line: {e}")))?;
                    let row = serde_json::to_string(&(split, g.label, &rel))
                        .map_err(|e| Error::Config(format!("manifest line: {e}")))?;
                    writeln!(out.1, "{row}").map_err(|e| Error::io(&out.0, e))?;
                    in_shard += 1;
                }
            }
        }
    }
    out.1.flush().map_err(|e| Error::io(&out.0, e))?;
    shard_images.push(in_shard);
    Ok(Plan {
        format: plan::PLAN_FORMAT.into(),
        source: url.to_string(),
        shards: n,
        images: total,
        classes,
        splits: splits
            .iter()
            .zip(&counts)
            .map(|((name, _), &images)| SplitCount {
                name: name.clone(),
                images,
            })
            .collect(),
        shard_images,
        manifest_sha256: Vec::new(),
        headstart_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// A new file at `path` for the plan's own writes: what is there (a manifest of a plan that failed
/// before its plan.json, or a link planted there) is removed first, never written through.
fn fresh_file(path: &Path) -> Result<std::fs::File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(Error::output(path, "is a folder, not a file")),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path, e))?,
        Err(_) => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Makes the folder `dir` of the run (the manifests), refusing a link: the plan's files stay
/// inside the run folder.
fn real_folder(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::output(
            dir,
            "is a link: a run's manifests are written inside the run folder only",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

fn open_manifest(run: &Path, k: usize) -> Result<(PathBuf, BufWriter<std::fs::File>)> {
    let path = manifest_path(run, k);
    let file = fresh_file(&path)?;
    Ok((path, BufWriter::new(file)))
}

/// Lists `source` (as `extract` would) and writes the plan and one manifest per shard into `run`.
/// `run` must not hold a plan already. The plan file is written last: a plan is complete when it
/// exists.
pub fn write_plan(source: &Path, shards: Option<usize>, run: &Path) -> Result<Plan> {
    let plan_file = run.join(PLAN_FILE);
    let is_url = |p: &Path| p.to_str().is_some_and(crate::data::remote::is_url);
    if !is_url(source) {
        // Refused before anything is made: a run folder among the photos would be listed as a
        // class (or an unexpected folder) by every later scan of them.
        let (src, out) = (
            crate::util::paths::resolve(source),
            crate::util::paths::resolve(run),
        );
        if out.starts_with(&src) || src.starts_with(&out) {
            return Err(Error::Output {
                path: run.to_path_buf(),
                msg: format!(
                    "the run folder and the data folder {} are one inside the other; put the run elsewhere",
                    source.display()
                ),
            });
        }
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    // One plan at a time in a folder: a second is refused, naming the first's pid (the lock of
    // the manifests' folder: plan.json takes its own when it is written).
    let _lock = crate::util::lock::OutputLock::acquire(&run.join("manifest"))?;
    if plan_file.exists() {
        return Err(Error::Config(format!(
            "{}: a plan is already there; plan into a new folder (shards and markers belong to their plan)",
            plan_file.display()
        )));
    }
    // Streamed listings; held in memory only for a store that does not list in key order.
    let streamed = match source.to_str().filter(|u| crate::data::remote::is_url(u)) {
        Some(url) => plan_streamed(url, shards, run)?,
        None => Some(plan_local_streamed(source, shards, run)?),
    };
    if let Some(plan) = streamed {
        return finish_plan(run, plan);
    }
    let ds = Dataset::scan_any(source)?;
    let total = ds.len();
    if total == 0 {
        return Err(Error::dataset(source, "no images to plan"));
    }
    let n = shard_count(shards, total)?;
    let manifest_dir = run.join("manifest");
    real_folder(&manifest_dir)?;
    let mut rows = ds
        .splits
        .iter()
        .flat_map(|s| s.items.iter().map(move |i| (s.name.as_str(), i)));
    let mut shard_images = Vec::with_capacity(n);
    for k in 0..n {
        let r = shard_range(total, n, k);
        let path = manifest_path(run, k);
        let file = fresh_file(&path)?;
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
        manifest_sha256: Vec::new(),
        headstart_version: env!("CARGO_PKG_VERSION").into(),
    };
    finish_plan(run, plan)
}

/// Records each manifest's sha256 in `plan` and writes `RUN/plan.json`, last (a plan is complete
/// when it exists).
fn finish_plan(run: &Path, mut plan: Plan) -> Result<Plan> {
    plan.manifest_sha256 = (0..plan.shards)
        .map(|k| crate::util::hash::sha256_file(&manifest_path(run, k)))
        .collect::<Result<_>>()?;
    write_json_via_tmp(&run.join(PLAN_FILE), &plan)?;
    Ok(plan)
}
