//! Reading a split in pieces without the rest of the file: its labels alone, and blocks of rows of
//! its features as one hyperslab each (what a streamed `train-head` reads).

use super::{check_declared, FeatureCache};
use crate::cache::Dtype;
use crate::error::{Error, Result};

impl FeatureCache {
    /// The labels of `split` (checked against the classes), without reading its features.
    pub fn read_labels(&self, split: &str) -> Result<Vec<u32>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let lds = g.dataset("labels").map_err(e)?;
        check_declared(&self.path, split, "labels", lds.size(), 4)?;
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
    /// converted here, row block by row block), read as one hyperslab without touching the rest of
    /// the file. A block past the split's end, one that cannot be read (a truncated or corrupt
    /// file), or one with a value that is not finite is an error naming the file, the split and the
    /// rows.
    pub fn read_rows(&self, split: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        use hdf5::{Hyperslab, SliceOrIndex};
        let g = self.group(split)?;
        let rows = |e: String| {
            let hint = if e.contains("Fletcher32") {
                " (a chunk of the file is damaged: copy it again, or extract again)"
            } else {
                ""
            };
            Error::cache(
                &self.path,
                format!("split '{split}' rows {start}..{}: {e}{hint}", start + count),
            )
        };
        let ds = g.dataset("features").map_err(|x| rows(x.to_string()))?;
        let shape = ds.shape();
        let n = shape.first().copied().unwrap_or(0);
        if start.checked_add(count).is_none_or(|end| end > n) {
            return Err(rows(format!("past the split's {n} rows")));
        }
        let mut slab: Vec<SliceOrIndex> = vec![(start..start + count).into()];
        slab.extend(shape[1..].iter().map(|_| SliceOrIndex::from(..)));
        let slab = Hyperslab::from(slab);
        let values: Vec<f32> = match self.meta.dtype {
            Dtype::F32 => {
                ds.read_slice::<f32, _, ndarray::IxDyn>(slab)
                    .map_err(|x| rows(x.to_string()))?
                    .into_raw_vec_and_offset()
                    .0
            }
            Dtype::F16 => ds
                .read_slice::<half::f16, _, ndarray::IxDyn>(slab)
                .map_err(|x| rows(x.to_string()))?
                .iter()
                .map(|v| f32::from(*v))
                .collect(),
        };
        let width = shape[1..].iter().product::<usize>().max(1);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(rows(format!(
                "row {} holds a value that is not finite (re-extract that image)",
                start + i / width
            )));
        }
        Ok(values)
    }

    /// After a whole-split read of `split` failed: the error of the first block of rows (one
    /// chunk each) that cannot be read, naming its rows; `None` when every block reads.
    pub(crate) fn first_bad_block(&self, split: &str, n: usize) -> Option<Error> {
        let block = super::chunk_rows(self.meta.dtype, &self.meta.feature_shape, n);
        (0..n)
            .step_by(block)
            .find_map(|start| self.read_rows(split, start, block.min(n - start)).err())
    }
}
