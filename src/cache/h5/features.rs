//! The one way a cache's `features` dataset is laid out and written: chunks of about 1 MiB of
//! rows, each with a Fletcher-32 checksum, so a damaged chunk is an error when it is read (never
//! rows of wrong numbers), and a streamed reader can fetch whole chunks. Values arrive as float32
//! and are stored in the cache's dtype.

use ndarray::{ArrayViewD, IxDyn};

use crate::cache::Dtype;

/// Bytes of rows per chunk (and per block that [`FeatureWriter::write`] is given by the writers
/// that stream).
const CHUNK_BYTES: usize = 1 << 20;

/// Rows per chunk for rows of `shape` stored as `dtype`, for a dataset of `n` rows.
pub(crate) fn chunk_rows(dtype: Dtype, shape: &[usize], n: usize) -> usize {
    let row_bytes = shape.iter().product::<usize>() * dtype.bytes();
    (CHUNK_BYTES / row_bytes.max(1)).clamp(1, n.max(1))
}

/// A `features` dataset being written, rows in any order.
pub(crate) struct FeatureWriter {
    ds: hdf5::Dataset,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl FeatureWriter {
    /// Creates `g/features`, `[n, *shape]` of `dtype`: chunked and checksummed (an empty one is
    /// contiguous: HDF5 has no chunks of zero rows).
    pub(crate) fn create(
        g: &hdf5::Group,
        dtype: Dtype,
        n: usize,
        shape: &[usize],
    ) -> hdf5::Result<FeatureWriter> {
        let mut full = vec![n];
        full.extend_from_slice(shape);
        let mut chunk = full.clone();
        chunk[0] = chunk_rows(dtype, shape, n);
        let mut builder = g.new_dataset_builder();
        if n > 0 {
            builder = builder.chunk(chunk).fletcher32();
        }
        let ds = match dtype {
            Dtype::F32 => builder.empty::<f32>().shape(full).create("features"),
            Dtype::F16 => builder.empty::<half::f16>().shape(full).create("features"),
        }?;
        Ok(FeatureWriter {
            ds,
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// Writes `values` (whole rows, row-major) as rows `start..`.
    pub(crate) fn write(&self, start: usize, values: &[f32]) -> hdf5::Result<()> {
        let row = self.shape.iter().product::<usize>().max(1);
        if !values.len().is_multiple_of(row) {
            return Err(hdf5::Error::from(format!(
                "{} values are not whole rows of {:?}",
                values.len(),
                self.shape
            )));
        }
        let k = values.len() / row;
        if k == 0 {
            return Ok(());
        }
        let mut s = vec![k];
        s.extend_from_slice(&self.shape);
        let mut sel: Vec<hdf5::SliceOrIndex> = vec![(start..start + k).into()];
        sel.extend(self.shape.iter().map(|_| hdf5::SliceOrIndex::from(..)));
        let sel = hdf5::Hyperslab::from(sel);
        let bad = |e: ndarray::ShapeError| hdf5::Error::from(e.to_string());
        match self.dtype {
            Dtype::F32 => {
                let view = ArrayViewD::from_shape(IxDyn(&s), &values[..k * row]).map_err(bad)?;
                self.ds.write_slice(view, sel)
            }
            Dtype::F16 => {
                use half::slice::HalfFloatSliceExt;
                let mut h = vec![half::f16::ZERO; k * row];
                h.convert_from_f32_slice(&values[..k * row]);
                let view = ArrayViewD::from_shape(IxDyn(&s), &h).map_err(bad)?;
                self.ds.write_slice(view, sel)
            }
        }
    }
}
