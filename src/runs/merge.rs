//! `merge`: the shards of a finished run ([`super::plan`], [`super::markers`]) joined into one cache with the same
//! rows in the same order as a single `extract` of the same data. Every marker, output hash, model,
//! preprocessing, feature shape and row count is checked first; the output is written to
//! a unique temporary file through the one output writer ([`crate::util::output`]), and renamed.
//! Features are copied through in blocks of one chunk (about 1 MiB; every value checked finite):
//! memory holds one block and the splits' labels and paths, never a shard's features. A run
//! folder's own `RUN/merged.h5` (what `train-head RUN` reads) copies nothing: its features map the
//! shards' rows in place ([`resolve_features`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::markers::{checked_output, ranges, read_score_marker, status, Marker, RunStatus};
use super::plan::{load_plan, marker_path, score_marker_path, score_output_path, Plan, PLAN_FILE};
use super::remote::RemoteRun;
use crate::cache::h5::{chunk_rows, write_lists, FeatureCache, FeatureWriter};
use crate::cache::{write_meta, CacheMeta};
use crate::error::{Error, Result};
use crate::util::hash::sha256_file;
use crate::util::lock::OutputLock;
use crate::util::output::{Output, Replace};

/// What a merge did.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub out: PathBuf,
    pub shards: usize,
    /// Rows with features, and images skipped, over all splits.
    pub rows: usize,
    pub skipped: usize,
    pub seconds: f64,
}

/// Joins the shards of `run` into `out` (an existing `out` is replaced only when it is a feature
/// cache; never a shard of the run).
pub fn merge(run: &Path, out: &Path) -> Result<MergeSummary> {
    merge_with(run, out, None)
}

/// The photo folder of a local plan, an input of every merge (no output is written among the
/// photos); none for a bucket's.
fn photos_of(plan: &Plan) -> Option<PathBuf> {
    (!crate::data::remote::is_url(&plan.source)).then(|| PathBuf::from(&plan.source))
}

/// [`merge`] under the lock of `out`, held by the caller.
fn merge_locked(run: &Path, out: &Path, lock: &OutputLock) -> Result<MergeSummary> {
    merge_with(run, out, Some(lock))
}

fn merge_with(run: &Path, out: &Path, lock: Option<&OutputLock>) -> Result<MergeSummary> {
    let t0 = Instant::now();
    let st = status(run)?;
    let unfinished = st.unfinished();
    if !unfinished.is_empty() {
        return Err(Error::Config(format!(
            "{}: shard(s) {} of {} have no completion marker (not finished); `headstart status {}` prints the lines that resubmit them",
            run.display(),
            ranges(&unfinished),
            st.plan.shards,
            run.display()
        )));
    }
    let mut shard_files = Vec::with_capacity(st.done.len());
    for m in &st.done {
        shard_files.push(m.output_path(run)?);
    }
    let target = Output::new(out)
        .input(&run.join("shards"))
        .inputs(photos_of(&st.plan))
        .inputs(&shard_files);
    // A run folder's merged.h5 is the run's own derived file: replaced whatever it holds.
    let target = match lock {
        Some(_) => target.replace(Replace::Always),
        None => target.replace(crate::cache::replace_cache()),
    };
    target.check()?;
    merge_into(run, &st, &target, lock, t0)
}

/// Merges the finished run `st` of `run` through `target`.
fn merge_into(
    run: &Path,
    st: &RunStatus,
    target: &Output,
    lock: Option<&OutputLock>,
    t0: Instant,
) -> Result<MergeSummary> {
    let out = target.target();
    let caches = open_checked(run, &st.plan, &st.done)?;
    let first = &caches[0].meta;
    let mut meta = first.clone();
    meta.data_root = st.plan.source.clone();
    meta.fingerprint = merged_fingerprint(caches.iter().map(|c| c.meta.fingerprint.as_str()));
    // The run's own merged.h5 (written under its lock) maps the shards' features in place.
    let link = lock.map(|_| run);
    let write = |tmp: &Path| {
        write_merged(tmp, &meta, &caches, link).map_err(|e| Error::hdf5(out, "HDF5", e))
    };
    let counts = match lock {
        Some(l) => target.write_locked(l, write)?,
        None => target.write(write)?,
    };
    let (rows, skipped) = counts;
    Ok(MergeSummary {
        out: out.to_path_buf(),
        shards: caches.len(),
        rows,
        skipped,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Opens every shard's cache and checks it against its marker, the plan and shard 0.
fn open_checked(run: &Path, plan: &Plan, markers: &[Marker]) -> Result<Vec<FeatureCache>> {
    let mut caches: Vec<FeatureCache> = Vec::with_capacity(markers.len());
    let mut seen = std::collections::HashMap::new();
    for m in markers {
        let path = m.output_path(run)?;
        let sha = sha256_file(&path)?;
        if sha != m.output_sha256 {
            return Err(Error::cache(
                &path,
                format!(
                    "shard {}: sha256 {sha}, its marker says {} (the file changed after the shard finished; rerun the shard after deleting {})",
                    m.shard,
                    m.output_sha256,
                    marker_path(run, m.shard).display()
                ),
            ));
        }
        let c = FeatureCache::open(&path)?;
        check_same(
            &path,
            m.shard,
            plan,
            caches.first().map(|c| &c.meta),
            &c.meta,
        )?;
        let mut rows = 0;
        for s in &c.meta.splits {
            rows += c.split_len(s)? + c.read_split_skipped(s)?.len();
        }
        if rows != plan.shard_images[m.shard] {
            return Err(Error::cache(
                &path,
                format!(
                    "shard {}: {rows} rows and skips, the plan gives it {} images",
                    m.shard, plan.shard_images[m.shard]
                ),
            ));
        }
        check_manifest(run, plan, m.shard, &c, &mut seen)?;
        caches.push(c);
    }
    Ok(caches)
}

/// Shard `k`'s cache `c` holds the images of its manifest, split by split (as rows or skips), and
/// none that an earlier shard held (`seen`: split and path to shard): overlapping manifests, or a shard
/// file of another dataset, are refused rather than merged.
fn check_manifest(
    run: &Path,
    plan: &Plan,
    k: usize,
    c: &FeatureCache,
    seen: &mut std::collections::HashMap<(String, String), usize>,
) -> Result<()> {
    let ds = plan.shard_dataset(run, k)?;
    for split in &ds.splits {
        let mut want: Vec<&str> = split.items.iter().map(|i| i.rel_path.as_str()).collect();
        let mut got = if c.meta.splits.contains(&split.name) {
            let mut p = c.read_paths(&split.name)?;
            p.extend(c.read_split_skipped(&split.name)?.into_iter().map(|s| s.0));
            p
        } else {
            Vec::new()
        };
        want.sort_unstable();
        got.sort_unstable();
        if got.iter().map(String::as_str).ne(want.iter().copied()) {
            let other = got
                .iter()
                .find(|p| want.binary_search(&p.as_str()).is_err());
            let missing = want
                .iter()
                .find(|p| got.binary_search_by(|g| g.as_str().cmp(p)).is_err());
            return Err(Error::cache(
                &c.path,
                format!(
                    "shard {k}: split '{}' holds {} images, its manifest {} lists {}{}{}",
                    split.name,
                    got.len(),
                    super::plan::manifest_path(run, k).display(),
                    want.len(),
                    other.map_or(String::new(), |p| format!("; '{p}' is not in the manifest")),
                    missing.map_or(String::new(), |p| format!("; '{p}' is missing")),
                ),
            ));
        }
        for p in got {
            if let Some(first) = seen.insert((split.name.clone(), p.clone()), k) {
                return Err(Error::cache(
                    &c.path,
                    format!("shard {k}: '{p}' is also in shard {first}; each image belongs to one shard (were the manifests edited?)"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that shard `k`'s cache `m` was made like shard 0's (`first`) and holds the plan's classes.
fn check_same(
    path: &Path,
    k: usize,
    plan: &Plan,
    first: Option<&CacheMeta>,
    m: &CacheMeta,
) -> Result<()> {
    let differ = |what: &str, a: String, b: String| {
        Err(Error::cache(
            path,
            format!("shard {k}: {what} {b}, shard 0 has {a}; shards of one run must use one model and one preprocessing"),
        ))
    };
    if m.classes != plan.classes {
        return Err(Error::cache(
            path,
            format!(
                "shard {k}: classes [{}], the plan has [{}]",
                m.classes.join(", "),
                plan.classes.join(", ")
            ),
        ));
    }
    let Some(f) = first else { return Ok(()) };
    if f.model_sha256 != m.model_sha256 {
        return differ(
            "model sha256",
            f.model_sha256.clone(),
            m.model_sha256.clone(),
        );
    }
    if f.preprocess != m.preprocess {
        return differ("preprocessing", f.preprocess.clone(), m.preprocess.clone());
    }
    if f.feature_shape != m.feature_shape {
        return differ(
            "feature shape",
            format!("{:?}", f.feature_shape),
            format!("{:?}", m.feature_shape),
        );
    }
    if f.dtype != m.dtype {
        return differ("dtype", f.dtype.name().into(), m.dtype.name().into());
    }
    if f.splits != m.splits {
        return differ("splits", f.splits.join(","), m.splits.join(","));
    }
    Ok(())
}

/// Writes the merged file at `tmp`; returns (rows, skipped).
fn write_merged(
    tmp: &Path,
    meta: &CacheMeta,
    caches: &[FeatureCache],
    link: Option<&Path>,
) -> hdf5::Result<(usize, usize)> {
    let file = crate::cache::create_h5(tmp)?;
    let (mut rows, mut skipped) = (0, 0);
    for split in &meta.splits {
        let g = file.create_group(split)?;
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        let (mut sp, mut sr) = (Vec::new(), Vec::new());
        let mut n = 0;
        for c in caches {
            n += c.split_len(split).map_err(|e| e.to_string())?;
        }
        match link {
            Some(run) => link_features(&g, split, n, meta, caches, run)?,
            None => copy_features(&g, split, n, meta, caches)?,
        }
        for c in caches {
            let grp = c.group(split).map_err(|e| e.to_string())?;
            // Checked against the classes, which are the run's (check_same).
            let l = c.read_labels(split).map_err(|e| e.to_string())?;
            labels.extend(l.into_iter().map(|v| v as i32));
            paths.extend(crate::cache::read_strs(grp.dataset("paths")?.read_raw()?));
            for (p, r) in c.read_split_skipped(split).map_err(|e| e.to_string())? {
                sp.push(p);
                sr.push(r);
            }
        }
        rows += labels.len();
        skipped += sp.len();
        write_lists(&g, &labels, &paths, &sp, &sr)?;
    }
    write_meta(&file, meta)?;
    file.close()?;
    Ok((rows, skipped))
}

/// Copies split `split`'s features of every shard, in order, into one `[n, *shape]` dataset, one
/// chunk of rows at a time.
fn copy_features(
    g: &hdf5::Group,
    split: &str,
    n: usize,
    meta: &CacheMeta,
    caches: &[FeatureCache],
) -> hdf5::Result<()> {
    let w = FeatureWriter::create(g, meta.dtype, n, &meta.feature_shape)?;
    let block = chunk_rows(meta.dtype, &meta.feature_shape, n);
    let mut at = 0;
    for c in caches {
        let k = c.split_len(split).map_err(|e| e.to_string())?;
        for start in (0..k).step_by(block) {
            let count = block.min(k - start);
            let rows = c
                .read_rows(split, start, count)
                .map_err(|e| e.to_string())?;
            w.write(at + start, &rows)?;
        }
        at += k;
    }
    Ok(())
}

/// Maps split `split`'s features of every shard, in order, into one virtual `[n, *shape]`
/// dataset (HDF5's virtual datasets): nothing is copied, each shard file is named relative to
/// `run` (where the merged file lies), and a reader checks on opening that every shard is there
/// with its rows ([`FeatureCache::open`]).
fn link_features(
    g: &hdf5::Group,
    split: &str,
    n: usize,
    meta: &CacheMeta,
    caches: &[FeatureCache],
    run: &Path,
) -> hdf5::Result<()> {
    use hdf5::{Hyperslab, Selection, SliceOrIndex};
    let mut full = vec![n];
    full.extend_from_slice(&meta.feature_shape);
    let mut b = g.new_dataset_builder();
    let mut at = 0;
    for c in caches {
        let k = c.split_len(split).map_err(|e| e.to_string())?;
        if k == 0 {
            continue;
        }
        let rel = c
            .path
            .strip_prefix(run)
            .map_err(|_| format!("{}: not inside the run", c.path.display()))?;
        let mut src = vec![k];
        src.extend_from_slice(&meta.feature_shape);
        let rows = |r: std::ops::Range<usize>| {
            let mut sel: Vec<SliceOrIndex> = vec![r.into()];
            sel.extend(meta.feature_shape.iter().map(|_| SliceOrIndex::from(..)));
            Selection::from(Hyperslab::from(sel))
        };
        b = b.virtual_map(
            rel.to_string_lossy(),
            format!("/{split}/features"),
            src,
            Selection::All,
            full.clone(),
            rows(at..at + k),
        );
        at += k;
    }
    // Rows HDF5 cannot read from a source (one gone after the check on opening, or a hole in a
    // forged mapping) read as NaN, which every reader refuses, not as zeros.
    match meta.dtype {
        crate::cache::Dtype::F32 => b
            .empty::<f32>()
            .fill_value(f32::NAN)
            .shape(full)
            .create("features")?,
        crate::cache::Dtype::F16 => b
            .empty::<half::f16>()
            .fill_value(half::f16::NAN)
            .shape(full)
            .create("features")?,
    };
    Ok(())
}

pub const MERGED_FILE: &str = "merged.h5";

/// The fingerprint a merge of `caches` records.
fn merged_fingerprint<'a>(fingerprints: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for f in fingerprints {
        h.update(f);
    }
    format!("merged:{:x}", h.finalize())
}

/// Whether `merged` is the merge of the run's finished shards as they are now: it opens as a cache,
/// every shard file still has the sha256 its marker recorded (a shard changed by hand is merged
/// again, and that merge names it), and its fingerprint is the one a merge of the shards' caches
/// records.
fn merged_is_current(run: &Path, st: &RunStatus, merged: &Path) -> bool {
    let Ok(m) = FeatureCache::open(merged) else {
        return false;
    };
    let mut fps = Vec::new();
    for marker in &st.done {
        let Some(fp) = marker
            .output_path(run)
            .ok()
            .filter(|p| sha256_file(p).is_ok_and(|sha| sha == marker.output_sha256))
            .and_then(|p| FeatureCache::open(&p).ok())
            .map(|c| c.meta.fingerprint)
        else {
            return false;
        };
        fps.push(fp);
    }
    m.meta.fingerprint == merged_fingerprint(fps.iter().map(|s| s.as_str()))
}

/// A feature cache path as given; or, for a run folder (a `plan.json` inside), its merged cache
/// `RUN/merged.h5`, merged now when missing or not the merge of the shards as they are (then the
/// summary is returned too). That file's features map the shards' rows in place (virtual
/// datasets, checked when opened: [`FeatureCache::open`]); `merge` to a file of one's own copies
/// them. Runs at once wait for one another: the first merges, the others reuse.
pub fn resolve_features(path: &Path) -> Result<(PathBuf, Option<MergeSummary>)> {
    if crate::data::remote::is_url_path(path) {
        let local = super::remote::local_run(path, true)?;
        return resolve_features(&local);
    }
    if !(path.is_dir() && path.join(PLAN_FILE).is_file()) {
        return Ok((path.to_path_buf(), None));
    }
    let out = path.join(MERGED_FILE);
    let st = status(path)?;
    if st.unfinished().is_empty() && merged_is_current(path, &st, &out) {
        return Ok((out, None));
    }
    let lock = OutputLock::wait(&out)?;
    let st = status(path)?;
    if st.unfinished().is_empty() && merged_is_current(path, &st, &out) {
        return Ok((out, None));
    }
    let s = merge_locked(path, &out, &lock)?;
    Ok((out, Some(s)))
}

/// [`merge_scores`] of a local run folder: joins the scored shards of `run` into one CSV at `out` (one header, rows in shard order),
/// refusing a shard without a marker or whose rows changed after it finished. Returns the rows.
fn merge_scores_local(run: &Path, out: &Path) -> Result<usize> {
    let plan = load_plan(run)?;
    let mut markers = Vec::with_capacity(plan.shards);
    let mut missing = Vec::new();
    for k in 0..plan.shards {
        match read_score_marker(&score_marker_path(run, k))? {
            Some(m) => markers.push(m),
            None => missing.push(k),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "{}: shard(s) {} of {} are not scored (no marker in {}); run `score --run` for them",
            run.display(),
            ranges(&missing),
            plan.shards,
            run.join("scored").display()
        )));
    }
    let mut files = Vec::with_capacity(markers.len());
    for m in &markers {
        files.push(checked_output(
            run,
            &score_marker_path(run, m.shard),
            &m.output,
            &score_output_path(run, m.shard),
        )?);
    }
    // One head, model and set of options for every shard: rows of two runs under one header would
    // be wrong in silence.
    // Against the first marker that has a record (markers of earlier releases have none).
    let mut first: Option<(usize, &serde_json::Value)> = None;
    for m in &markers {
        let Some(b) = &m.run else {
            continue;
        };
        let Some((k, a)) = first else {
            first = Some((m.shard, b));
            continue;
        };
        if let Some(how) = crate::report::score::records_differ(a, b) {
            return Err(Error::Config(format!(
                "{}: shards {k} and {} were scored by different runs ({how}); score every shard with the same head, model and options (remove the odd shard's scores/shard-KKKKK.csv and scored/KKKKK.json, then `score --run` it again)",
                run.display(),
                m.shard
            )));
        }
    }
    let target = Output::new(out)
        .input(&run.join("scores"))
        .inputs(photos_of(&plan))
        .inputs(&files)
        .replace(Replace::If {
            what: "a score file (CSV headed path,predicted,…,error)",
            check: &crate::report::score::is_score_file,
        });
    target.check()?;
    target.write(|tmp| {
        let mut w = csv::Writer::from_path(tmp).map_err(|e| Error::cache(tmp, e))?;
        let mut rows = 0;
        let mut first_header: Option<csv::ByteRecord> = None;
        for (m, path) in markers.iter().zip(&files) {
            let sha = crate::util::hash::sha256_file(path)?;
            if sha != m.output_sha256 {
                return Err(Error::cache(
                    path,
                    format!(
                        "shard {}: sha256 {sha}, its marker says {} (the rows changed after the shard finished)",
                        m.shard, m.output_sha256
                    ),
                ));
            }
            // Records, not lines: an error message may hold a newline inside its quotes.
            let mut r = csv::Reader::from_path(path).map_err(|e| Error::cache(path, e))?;
            let header = r
                .byte_headers()
                .map_err(|e| Error::cache(path, e))?
                .clone();
            match &first_header {
                None => {
                    w.write_byte_record(&header)
                        .map_err(|e| Error::cache(tmp, e))?;
                    first_header = Some(header);
                }
                Some(h) if *h != header => {
                    let show = |h: &csv::ByteRecord| {
                        let cols: Vec<_> = h.iter().map(String::from_utf8_lossy).collect();
                        cols.join(",")
                    };
                    return Err(Error::cache(
                        path,
                        format!(
                            "shard {}: its columns differ from shard {}'s ({} there); score every shard with the same head and options",
                            m.shard,
                            markers[0].shard,
                            show(h)
                        ),
                    ));
                }
                Some(_) => {}
            }
            for rec in r.byte_records() {
                let rec = rec.map_err(|e| Error::cache(path, e))?;
                w.write_byte_record(&rec)
                    .map_err(|e| Error::cache(tmp, e))?;
                rows += 1;
            }
        }
        w.flush().map_err(|e| Error::io(tmp, e))?;
        Ok(rows)
    })
}

/// Joins the scored shards of `run` (local or on object storage) into one CSV at `out`: for a bucket,
/// the score markers and the rows they name are
/// downloaded into the local mirror first.
pub fn merge_scores(run: &Path, out: &Path) -> Result<usize> {
    let Some(url) = run.to_str().filter(|u| crate::data::remote::is_url(u)) else {
        return merge_scores_local(run, out);
    };
    let rr = RemoteRun::open(url)?;
    let plan = rr.pull_plan()?;
    for k in 0..plan.shards {
        rr.pull(&format!("scored/{k:05}.json"))?;
        if let Some(m) = read_score_marker(&score_marker_path(&rr.local, k))? {
            let own = checked_output(
                &rr.local,
                &score_marker_path(&rr.local, k),
                &m.output,
                &score_output_path(&rr.local, k),
            )?;
            let have = crate::util::hash::sha256_file(&own).ok();
            if have.as_deref() != Some(m.output_sha256.as_str()) {
                rr.pull(&m.output)?;
            }
        }
    }
    merge_scores_local(&rr.local, out)
}
