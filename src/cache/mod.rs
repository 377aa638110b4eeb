//! The feature cache. While extracting, finished images go to an append-only journal
//! (`<out>.journal`) that survives a crash or Ctrl-C; when every image is done, the journal becomes one
//! HDF5 file, written through the one output writer ([`crate::util::output`]: unique temporary file, fsync, rename). HDF5 layout (readable by h5py):
//!
//! ```text
//! /                 attrs: classes, model_file, model_sha256, input_size, layout, preprocess, color_order,
//!                          mean, std, resize, interpolation, decode, precision, output_name, feature_shape, dtype,
//!                          headstart_version, fingerprint, data_root, splits
//!                   (+ multi_label; token_pool and prefix_tokens when a token output was pooled)
//! /<split>/features  f32 or f16 [N, *feature_shape], chunks of about 1 MiB of rows, each with a
//!                    Fletcher-32 checksum (caches written before have none and still read)
//! /<split>/labels    i32 [N]        index into `classes`
//! /<split>/targets   u8 [N, classes] multi-label caches: 1 where the image has the class
//! /<split>/paths     str [N]        relative to data_root
//! /<split>/skipped_paths, /<split>/skipped_reasons   str [K]   images that could not be read
//! ```
//!
//! Modules: [`journal`] (append-only record of finished images), `h5` (the HDF5 file, written and
//! read) and [`synthetic`] (random caches for benchmarks). Runs over many machines (plans, shards,
//! markers, merges) are [`crate::runs`].

pub(crate) mod h5;
pub mod journal;
pub mod tokens;

pub use tokens::Tokens;
pub mod synthetic;

pub use crate::util::lock::OutputLock;
pub(crate) use h5::{
    chunk_rows, create_h5, read_meta, read_str_attr, read_strs, save_via_tmp, write_meta,
    write_str_attr, write_strs_attr,
};
pub use h5::{
    is_cache, replace_cache, write_arrays, write_hdf5, FeatureCache, SplitData, SplitRows,
};
pub use journal::{journal_path, Journal, Record, Status};

/// The split that holds the mirrored copies of `train` (`extract`'s `augment_flip`).
pub const FLIP_SPLIT: &str = "train_flip";
/// The split that holds the augmented copies of `train` (`extract`'s `copies`): copy `j` of train
/// row `i` is row `j * n + i`.
pub const AUG_SPLIT: &str = "train_aug";

/// The split holding the mirrored copies of `split`: `train_flip` (augmentation), `val_flip` and
/// `test_flip` (test-time augmentation), in the same order as `split`.
pub fn flip_split(split: &str) -> String {
    format!("{split}_flip")
}

/// Storage type of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    /// Bytes of one stored value.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// Everything the cache records about how its features were made.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheMeta {
    pub classes: Vec<String>,
    pub model_file: String,
    pub model_sha256: String,
    /// (height, width)
    pub input_size: (u32, u32),
    pub layout: String,
    pub preprocess: String,
    pub color_order: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: String,
    pub interpolation: String,
    /// How JPEGs were decoded: "fast" (DCT-scaled when large) or "exact" (caches written before
    /// the attribute existed read as "exact").
    pub decode: String,
    /// "fp32", "int8" for a base quantised by `headstart quantize`, or "fp16" for one written by
    /// `headstart convert --fp16` (caches written before the attribute existed read as "fp32").
    pub precision: String,
    /// sha256 of the float32 model an int8 or fp16 base was made from; the base's own sha256 for a
    /// float32 one (and in caches written before the attribute existed).
    pub source_sha256: String,
    pub output_name: String,
    pub feature_shape: Vec<usize>,
    pub dtype: Dtype,
    pub headstart_version: String,
    pub fingerprint: String,
    pub data_root: String,
    pub splits: Vec<String>,
    /// Each image has a set of classes: every split holds `targets` (multi-hot, `[n, classes]`).
    pub multi_label: bool,
    /// How a transformer's token output was pooled to one row ([`Tokens::NONE`] for outputs
    /// stored as they came, and in caches written before the attributes `token_pool` and
    /// `prefix_tokens`).
    pub tokens: Tokens,
}

impl CacheMeta {
    /// The preprocessing these features were made with, rebuilt from the stored attributes.
    pub fn preprocess(&self) -> std::result::Result<crate::data::preprocess::Preprocess, String> {
        use crate::data::preprocess::{
            ColorOrder, Decode, Interpolation, Layout, Normalize, Preprocess, ResizeMode,
        };
        let layout = Layout::parse(&self.layout)
            .ok_or_else(|| format!("unknown layout '{}'", self.layout))?;
        let resize = match self
            .resize
            .split_whitespace()
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["squash"] => ResizeMode::Squash,
            ["crop", f] => ResizeMode::Crop {
                fraction: f
                    .parse()
                    .map_err(|_| format!("bad crop fraction in '{}'", self.resize))?,
            },
            _ => return Err(format!("unknown resize '{}'", self.resize)),
        };
        let interpolation = Interpolation::parse(&self.interpolation)
            .ok_or_else(|| format!("unknown interpolation '{}'", self.interpolation))?;
        let decode = Decode::parse(&self.decode)
            .ok_or_else(|| format!("unknown decode mode '{}'", self.decode))?;
        let color = match self.color_order.to_ascii_uppercase().as_str() {
            "RGB" => ColorOrder::Rgb,
            "BGR" => ColorOrder::Bgr,
            other => return Err(format!("unknown colour order '{other}'")),
        };
        let pre = Preprocess {
            size: self.input_size,
            layout,
            resize,
            interpolation,
            normalize: Normalize {
                color,
                mean: self.mean,
                std: self.std,
            },
            decode,
        };
        match pre.problem() {
            Some(why) => Err(why),
            None => Ok(pre),
        }
    }
}
