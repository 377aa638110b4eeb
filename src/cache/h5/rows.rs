//! Reading a split in pieces: its labels and lists without the features, and rows of its
//! features chunk by chunk into a buffer used again (what every reader of features calls: a
//! whole split in memory, a streamed `train-head`, `evaluate`, `summary` and `merge`).

use super::{check_declared, read_strs, FeatureCache};
use crate::cache::{Dtype, SplitData};
use crate::error::{Error, Result};

impl FeatureCache {
    /// `split` without its features: labels, paths, skipped files and a multi-label split's
    /// targets (what a reader that streams the features holds in memory).
    pub fn read_lists(&self, split: &str) -> Result<SplitData> {
        let labels = self.read_labels(split)?;
        let g = self.group(split)?;
        let pds = g
            .dataset("paths")
            .map_err(|x| Error::cache(&self.path, format!("split '{split}': {x}")))?;
        check_declared(&self.path, split, "paths", pds.size(), 16)?;
        super::check_list(&self.path, split, "paths", &pds)?;
        let paths = read_strs(
            pds.read_raw()
                .map_err(|x| Error::cache(&self.path, format!("split '{split}': {x}")))?,
        );
        if paths.len() != labels.len() {
            return Err(Error::cache(
                &self.path,
                format!(
                    "split '{split}': {} labels and {} paths do not agree",
                    labels.len(),
                    paths.len()
                ),
            ));
        }
        Ok(SplitData {
            name: split.to_string(),
            features: Vec::new(),
            skipped: self.read_split_skipped(split)?,
            tags: self.read_targets(split, &g, labels.len())?,
            labels,
            paths,
        })
    }

    /// Visits `split`'s `n` rows of features in order, in blocks of whole chunks of about
    /// `bytes` as float32 each: `f(first row, rows)` (each value checked finite).
    pub fn for_each_block(
        &self,
        split: &str,
        n: usize,
        bytes: usize,
        mut f: impl FnMut(usize, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        let held = self
            .group(split)?
            .dataset("features")
            .map_err(|x| Error::cache(&self.path, format!("split '{split}': {x}")))?
            .shape()
            .first()
            .copied()
            .unwrap_or(0);
        if held != n {
            return Err(Error::cache(
                &self.path,
                format!("split '{split}': {held} rows of features but {n} photos in its paths and labels (a damaged cache: extract it again)"),
            ));
        }
        let shape = &self.meta.feature_shape;
        let chunk = super::chunk_rows(self.meta.dtype, shape, n);
        let row_bytes = shape.iter().product::<usize>().max(1) * 4;
        let block = (bytes / row_bytes / chunk).max(1) * chunk;
        for start in (0..n).step_by(block) {
            f(start, self.read_rows(split, start, block.min(n - start))?)?;
        }
        Ok(())
    }

    /// The labels of `split` (checked against the classes), without reading its features.
    pub fn read_labels(&self, split: &str) -> Result<Vec<u32>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let lds = g.dataset("labels").map_err(e)?;
        check_declared(&self.path, split, "labels", lds.size(), 4)?;
        super::check_integers(&self.path, split, "labels", &lds, 1)?;
        let raw = lds.read_raw::<i32>().map_err(e)?;
        let classes = self.meta.classes.len();
        raw.iter()
            .enumerate()
            .map(|(i, &l)| {
                if l < 0 || l as usize >= classes {
                    Err(Error::cache(
                        &self.path,
                        format!(
                            "split '{split}' row {i}: label {l}, the cache has {classes} classes"
                        ),
                    ))
                } else {
                    Ok(l as u32)
                }
            })
            .collect()
    }

    /// Rows `start .. start + count` of `split`'s features as float32 (a float16 cache is
    /// converted here), read chunk by chunk without touching the rest of the file. A block past
    /// the split's end, one that cannot be read (a truncated file, a chunk that fails its
    /// checksum), or one with a value that is not finite is an error naming the file, the split
    /// and the rows.
    pub fn read_rows(&self, split: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        self.read_rows_into(split, start, count, &mut v)?;
        Ok(v)
    }

    /// [`FeatureCache::read_rows`] into `out` (its length set to the rows'): a buffer used again
    /// for every block keeps its memory (a fresh one of this size would be new pages, each faulted
    /// in).
    pub fn read_rows_into(
        &self,
        split: &str,
        start: usize,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.read_runs_into(split, &[(start, count)], out)
    }

    /// The features are stored in the float type the cache declares: HDF5 would convert another
    /// in silence.
    fn check_stored_type(&self, ds: &hdf5::Dataset) -> std::result::Result<(), String> {
        use hdf5::types::{FloatSize, TypeDescriptor};
        let stored = ds.dtype().and_then(|t| t.to_descriptor()).ok();
        let declared = match self.meta.dtype {
            Dtype::F32 => TypeDescriptor::Float(FloatSize::U4),
            Dtype::F16 => TypeDescriptor::Float(FloatSize::U2),
        };
        if stored.as_ref() == Some(&declared) {
            return Ok(());
        }
        let what = stored.map_or("an unreadable type".into(), |t| t.to_string());
        Err(format!(
            "the features are stored as {what}, the cache declares {}",
            self.meta.dtype.name()
        ))
    }

    /// Runs of rows `(start, count)` of `split`'s features one after the other into `out` (its
    /// length set to theirs), the dataset opened once.
    pub fn read_runs_into(
        &self,
        split: &str,
        runs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        use hdf5::{Hyperslab, SliceOrIndex};
        let g = self.group(split)?;
        let rows = |(a, b): (usize, usize), e: String| {
            let hint = if e.contains("Fletcher32") {
                " (a chunk of the file is damaged: copy it again, or extract again)"
            } else {
                ""
            };
            Error::cache(
                &self.path,
                format!("split '{split}' rows {a}..{b}: {e}{hint}"),
            )
        };
        let first = runs
            .first()
            .map_or((0, 0), |&(a, k)| (a, a.saturating_add(k)));
        let ds = g
            .dataset("features")
            .map_err(|x| rows(first, x.to_string()))?;
        let shape = ds.shape();
        // Rows of the shape the cache declares, before anything is allocated for them.
        if shape.get(1..) != Some(&self.meta.feature_shape[..]) {
            return Err(rows(
                first,
                format!(
                    "the dataset is {shape:?}, the cache declares rows of {:?}",
                    self.meta.feature_shape
                ),
            ));
        }
        let n = shape[0];
        let width = shape[1..].iter().product::<usize>().max(1);
        for &(start, count) in runs {
            if start.checked_add(count).is_none_or(|end| end > n) {
                return Err(rows(
                    (start, start.saturating_add(count)),
                    format!("past the split's {n} rows"),
                ));
            }
        }
        self.bound_features(split, &ds)?;
        self.check_stored_type(&ds).map_err(|e| rows(first, e))?;
        let total: usize = runs.iter().map(|r| r.1).sum();
        // A buffer of the right length already (the last block's) is written over, not zeroed.
        out.resize(total * width, 0.0);
        // Pieces of one chunk each, on the chunks' boundaries.
        let chunk = ds
            .chunk()
            .and_then(|c| c.first().copied())
            .unwrap_or_else(|| super::chunk_rows(self.meta.dtype, &shape[1..], n))
            .max(1);
        let mut base = 0;
        for &(start, count) in runs {
            let mut at = start;
            while at < start + count {
                let end = ((at / chunk + 1) * chunk).min(start + count);
                let mut slab: Vec<SliceOrIndex> = vec![(at..end).into()];
                slab.extend(shape[1..].iter().map(|_| SliceOrIndex::from(..)));
                let slab = Hyperslab::from(slab);
                let piece = &mut out[(base + at - start) * width..(base + end - start) * width];
                let wrong = |got: usize| rows((at, end), format!("read {got} values"));
                match self.meta.dtype {
                    Dtype::F32 => {
                        let v = ds
                            .read_slice::<f32, _, ndarray::IxDyn>(slab)
                            .map_err(|x| rows((at, end), x.to_string()))?;
                        let v = v.as_slice().unwrap_or_default();
                        if v.len() != piece.len() {
                            return Err(wrong(v.len()));
                        }
                        piece.copy_from_slice(v);
                    }
                    Dtype::F16 => {
                        use half::slice::HalfFloatSliceExt;
                        let h = ds
                            .read_slice::<half::f16, _, ndarray::IxDyn>(slab)
                            .map_err(|x| rows((at, end), x.to_string()))?;
                        let h = h.as_slice().unwrap_or_default();
                        if h.len() != piece.len() {
                            return Err(wrong(h.len()));
                        }
                        // F16C instructions where the CPU has them, 8 values at a time.
                        h.convert_to_f32_slice(piece);
                    }
                }
                let piece = &*piece;
                if !super::all_finite(piece) {
                    let i = piece.iter().position(|v| !v.is_finite()).unwrap_or(0);
                    let r = at + i / width;
                    let path = self.read_paths(split).ok().and_then(|p| p.get(r).cloned());
                    return Err(Error::cache(
                    &self.path,
                    format!(
                        "split '{split}' row {r} ({}): feature {} is {} (features must be finite numbers; re-extract this image)",
                        path.as_deref().unwrap_or("?"),
                        i % width,
                        piece[i]
                    ),
                ));
                }
                at = end;
            }
            base += count;
        }
        Ok(())
    }
}
