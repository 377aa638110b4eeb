//! The HDF5 feature cache: written from the journal (or from arrays) through the one output writer
//! ([`crate::util::output`]: unique temporary file, lock, fsync, rename), read back split by split (or in blocks of rows: [`rows`]). The layout is in the [`crate::cache`] docs.

mod features;
mod linked;
mod rows;

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;

use super::journal::{Journal, Record, Status};
use super::{CacheMeta, Dtype};
use crate::error::{Error, Result};
use crate::util::lock::OutputLock;
use crate::util::output::{Output, Replace};
pub(crate) use features::{chunk_rows, FeatureWriter};

/// One split of the dataset, as handed to the writer.
pub struct SplitRows {
    pub name: String,
    /// Global journal index of each image of this split, with label and relative path.
    pub items: Vec<(usize, u32, String)>,
    /// A multi-label dataset's tags (class indices) of each item; empty otherwise.
    pub tags: Vec<Vec<u32>>,
}

/// The multi-hot rows (`classes` columns of 0/1) of a multi-label split's tags.
pub fn multi_hot<'a>(tags: impl IntoIterator<Item = &'a [u32]>, classes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tags {
        let at = out.len();
        out.resize(at + classes, 0);
        for &c in t {
            out[at + c as usize] = 1;
        }
    }
    out
}

/// A multi-label split's `targets` dataset: `[n, classes]` u8, 1 where the image has the class.
fn write_targets(g: &hdf5::Group, hot: &[u8], classes: usize) -> hdf5::Result<()> {
    let rows = hot.len() / classes.max(1);
    let b = g.new_dataset::<u8>();
    let b = if rows == 0 {
        b
    } else {
        // About 1 MiB a chunk, however many classes.
        b.chunk([rows.min(((1 << 20) / classes.max(1)).max(1)), classes])
            .fletcher32()
    };
    b.shape([rows, classes]).create("targets")?.write_raw(hot)
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| Error::hdf5(path, "HDF5", e)
}

/// Opens an HDF5 file for reading. HDF5 locks the files it opens (`flock`); a process that forks
/// (a library user starting a child process) lends the lock of a file open at that moment to the
/// child until the child's `exec`, so an open right after may briefly find the file locked. That
/// lock error is retried for up to 2 s; any other error, or a lock held longer, is returned.
pub(crate) fn open_read(path: &Path) -> hdf5::Result<hdf5::File> {
    let mut tries = 0;
    loop {
        match hdf5::File::open(path) {
            Err(e) if tries < 20 && e.to_string().contains("unable to lock file") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn vlu(s: &str) -> VarLenUnicode {
    // Strings containing NUL cannot be stored; replace them.
    s.replace('\0', "?").parse().unwrap_or_default()
}

/// Writes an HDF5 file through `out` ([`Output::write`]: refusals, lock, unique temporary file,
/// fsync, rename), so a crash or a second writer never leaves a half-written file.
pub(crate) fn save_via_tmp(
    out: &Output,
    write: impl FnOnce(&Path) -> hdf5::Result<()>,
) -> Result<()> {
    out.write(|tmp| write(tmp).map_err(|e| Error::hdf5(out.target(), "HDF5", e)))
}

/// Whether `path` is a feature cache headstart wrote (an HDF5 file with the cache's attributes): the
/// rule by which `extract` and `merge` replace an existing output.
pub fn is_cache(path: &Path) -> bool {
    open_read(path).is_ok_and(|f| read_meta(&f).is_ok())
}

/// The replacement rule of a feature cache output: only a feature cache is replaced.
pub fn replace_cache() -> Replace<'static> {
    Replace::If {
        what: "a headstart feature cache",
        check: &is_cache,
    }
}

pub(crate) fn write_str_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vlu(value))
}

pub(crate) fn write_strs_attr(
    loc: &hdf5::Location,
    name: &str,
    values: &[String],
) -> hdf5::Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s)).collect();
    loc.new_attr::<VarLenUnicode>()
        .shape(v.len())
        .create(name)?
        .write_raw(&v)
}

pub(crate) fn write_strs(group: &hdf5::Group, name: &str, values: &[String]) -> hdf5::Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s)).collect();
    group
        .new_dataset::<VarLenUnicode>()
        .shape(v.len())
        .create(name)?
        .write_raw(&v)
}

/// Rows a chunk of a checksummed list holds.
const LIST_CHUNK: usize = 1 << 16;

/// A list dataset of `n` rows, chunked with a Fletcher-32 checksum per chunk when it has rows: a
/// damaged label is an error when read, not another class. (HDF5 takes no filter on
/// variable-length strings: the path lists stay unchecked.)
fn checked(b: hdf5::DatasetBuilderEmpty, n: usize) -> hdf5::DatasetBuilderEmpty {
    if n == 0 {
        b
    } else {
        b.chunk(n.min(LIST_CHUNK)).fletcher32()
    }
}

/// A split's labels, paths and skipped files.
pub(crate) fn write_lists(
    g: &hdf5::Group,
    labels: &[i32],
    paths: &[String],
    skipped_paths: &[String],
    skipped_reasons: &[String],
) -> hdf5::Result<()> {
    checked(g.new_dataset::<i32>(), labels.len())
        .shape(labels.len())
        .create("labels")?
        .write_raw(labels)?;
    write_strs(g, "paths", paths)?;
    write_strs(g, "skipped_paths", skipped_paths)?;
    write_strs(g, "skipped_reasons", skipped_reasons)
}

/// Writes the final HDF5 file from the journal through `out`, under `lock` (the run's lock on it).
pub fn write_hdf5(
    out: &Output,
    lock: &OutputLock,
    meta: &CacheMeta,
    splits: &[SplitRows],
    journal: &mut Journal,
) -> Result<()> {
    out.write_locked(lock, |tmp| write_journal(tmp, meta, splits, journal))
}

fn write_journal(
    tmp: &Path,
    meta: &CacheMeta,
    splits: &[SplitRows],
    journal: &mut Journal,
) -> Result<()> {
    let e = h5err(tmp);
    let feature_shape = meta.feature_shape.clone();
    // Map global index -> (split, row).
    let mut place = vec![None; journal.status.len()];
    let reasons: std::collections::HashMap<usize, String> =
        journal.failures.iter().cloned().collect();
    let file = crate::cache::create_h5(tmp).map_err(&e)?;
    let mut datasets = Vec::new();
    for (si, split) in splits.iter().enumerate() {
        let g = file.create_group(&split.name).map_err(&e)?;
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        let mut skipped_paths = Vec::new();
        let mut skipped_reasons = Vec::new();
        let mut tags: Vec<&[u32]> = Vec::new();
        for (k, (idx, label, rel)) in split.items.iter().enumerate() {
            match journal.status[*idx] {
                Status::Done => {
                    place[*idx] = Some((si, labels.len()));
                    labels.push(*label as i32);
                    paths.push(rel.clone());
                    if meta.multi_label {
                        tags.push(split.tags.get(k).map_or(&[], Vec::as_slice));
                    }
                }
                Status::Failed => {
                    skipped_paths.push(rel.clone());
                    skipped_reasons.push(reasons.get(idx).cloned().unwrap_or_default());
                }
                Status::Pending => {
                    return Err(Error::cache(
                        tmp,
                        format!("internal: image {rel} was never extracted"),
                    ));
                }
            }
        }
        let ds = FeatureWriter::create(&g, meta.dtype, labels.len(), &feature_shape).map_err(&e)?;
        write_lists(&g, &labels, &paths, &skipped_paths, &skipped_reasons).map_err(&e)?;
        if meta.multi_label {
            let classes = meta.classes.len();
            write_targets(&g, &multi_hot(tags, classes), classes).map_err(&e)?;
        }
        datasets.push(ds);
    }
    journal.for_each_record(|rec| {
        if let Record::Done { index, data, .. } = rec {
            if let Some((si, row)) = place.get(index).copied().flatten() {
                datasets[si].write(row, &data).map_err(&e)?;
            }
        }
        Ok(())
    })?;
    write_meta(&file, meta).map_err(&e)?;
    file.flush().map_err(&e)?;
    drop(datasets);
    file.close().map_err(&e)
}

/// Writes a cache from splits held in memory (synthetic features for benchmarks and tests):
/// same schema as [`write_hdf5`], written through `out`.
pub fn write_arrays(out: &Output, meta: &CacheMeta, splits: &[SplitData]) -> Result<()> {
    out.write(|tmp| write_array_file(tmp, meta, splits))
}

/// Creates the HDF5 file `path` with the 1.8 file format as its floor: version-2 object headers,
/// whose checksum makes a damaged attribute or header an error when read (the 1.0 headers the
/// library writes by default carry none, and a damaged variable-length string length there can
/// crash the library).
pub(crate) fn create_h5(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.libver_v18())
        .create(path)
}

fn write_array_file(tmp: &Path, meta: &CacheMeta, splits: &[SplitData]) -> Result<()> {
    let e = h5err(tmp);
    let file = crate::cache::create_h5(tmp).map_err(&e)?;
    for sd in splits {
        let g = file.create_group(&sd.name).map_err(&e)?;
        FeatureWriter::create(&g, meta.dtype, sd.len(), &meta.feature_shape)
            .and_then(|w| w.write(0, &sd.features))
            .map_err(&e)?;
        let labels: Vec<i32> = sd.labels.iter().map(|&l| l as i32).collect();
        let (sp, sr): (Vec<String>, Vec<String>) = sd.skipped.iter().cloned().unzip();
        write_lists(&g, &labels, &sd.paths, &sp, &sr).map_err(&e)?;
        if meta.multi_label {
            write_targets(&g, &sd.tags, meta.classes.len()).map_err(&e)?;
        }
    }
    write_meta(&file, meta).map_err(&e)?;
    file.close().map_err(&e)
}

/// Whether every value of `c` is finite: its exponent bits are not all ones. The largest
/// exponent field over the slice is an integer maximum, which vectorises (a float sum is one
/// long chain of dependent adds, and a search with an early exit does not vectorise at all).
pub(crate) fn all_finite(c: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    c.iter().fold(0u32, |a, v| a.max(v.to_bits() & EXP)) != EXP
}

/// Refuses a dataset that declares more elements than its file can hold, before allocating for it
/// (headstart writes caches uncompressed: a dataset's bytes are in the file). `elem` is the bytes
/// of one element as stored.
pub(crate) fn check_declared(
    path: &Path,
    split: &str,
    name: &str,
    elements: usize,
    elem: usize,
) -> Result<()> {
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let declared = (elements as u128) * (elem as u128);
    // Variable-length strings are stored on the heap; 16 bytes each is their smallest record.
    if declared > (file as u128) + (1 << 20) {
        return Err(Error::cache(
            path,
            format!(
                "split '{split}': dataset '{name}' declares {elements} elements ({declared} bytes), but the file holds {file} bytes: damaged or forged, refused before reading"
            ),
        ));
    }
    Ok(())
}

/// Split `split`'s list `name` has one axis (HDF5 would read a table as one long list).
pub(crate) fn check_list(path: &Path, split: &str, name: &str, ds: &hdf5::Dataset) -> Result<()> {
    if ds.ndim() != 1 {
        return Err(Error::cache(
            path,
            format!(
                "split '{split}': dataset '{name}' has {} axes; a cache stores it as a list",
                ds.ndim()
            ),
        ));
    }
    Ok(())
}

/// Split `split`'s dataset `name` holds integers in `rank` axes: HDF5 would convert floats to
/// integers (dropping fractions) and read a 2-D list as one long list, both in silence.
pub(crate) fn check_integers(
    path: &Path,
    split: &str,
    name: &str,
    ds: &hdf5::Dataset,
    rank: usize,
) -> Result<()> {
    use hdf5::types::TypeDescriptor;
    let kind = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| Error::hdf5(path, format!("split '{split}': dataset '{name}'"), e))?;
    let integers = matches!(
        kind,
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)
    );
    if !integers || ds.ndim() != rank {
        return Err(Error::cache(
            path,
            format!(
                "split '{split}': dataset '{name}' holds {kind} in {} axes; a cache stores integers in {rank}",
                ds.ndim()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn write_meta(file: &hdf5::Location, m: &CacheMeta) -> hdf5::Result<()> {
    write_strs_attr(file, "classes", &m.classes)?;
    write_str_attr(file, "model_file", &m.model_file)?;
    write_str_attr(file, "model_sha256", &m.model_sha256)?;
    file.new_attr::<u32>()
        .shape(2)
        .create("input_size")?
        .write_raw(&[m.input_size.0, m.input_size.1])?;
    write_str_attr(file, "layout", &m.layout)?;
    write_str_attr(file, "preprocess", &m.preprocess)?;
    write_str_attr(file, "color_order", &m.color_order)?;
    file.new_attr::<f32>()
        .shape(3)
        .create("mean")?
        .write_raw(&m.mean)?;
    file.new_attr::<f32>()
        .shape(3)
        .create("std")?
        .write_raw(&m.std)?;
    write_str_attr(file, "resize", &m.resize)?;
    write_str_attr(file, "interpolation", &m.interpolation)?;
    write_str_attr(file, "decode", &m.decode)?;
    write_str_attr(file, "precision", &m.precision)?;
    write_str_attr(file, "source_sha256", &m.source_sha256)?;
    write_str_attr(file, "output_name", &m.output_name)?;
    let fs: Vec<u64> = m.feature_shape.iter().map(|&d| d as u64).collect();
    file.new_attr::<u64>()
        .shape(fs.len())
        .create("feature_shape")?
        .write_raw(&fs)?;
    write_str_attr(file, "dtype", m.dtype.name())?;
    write_str_attr(file, "headstart_version", &m.headstart_version)?;
    write_str_attr(file, "fingerprint", &m.fingerprint)?;
    write_str_attr(file, "data_root", &m.data_root)?;
    write_strs_attr(file, "splits", &m.splits)?;
    if m.multi_label {
        file.new_attr::<u8>()
            .create("multi_label")?
            .write_scalar(&1u8)?;
    }
    if m.tokens.pools() {
        write_str_attr(file, "token_pool", m.tokens.pool.name())?;
        file.new_attr::<u64>()
            .create("prefix_tokens")?
            .write_scalar(&(m.tokens.prefix as u64))?;
    }
    Ok(())
}

/// Features, labels and paths of one split, read back.
#[derive(Debug, Clone)]
pub struct SplitData {
    pub name: String,
    /// Row-major `[n, product(feature_shape)]`.
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub paths: Vec<String>,
    pub skipped: Vec<(String, String)>,
    /// A multi-label cache's multi-hot targets, row-major `[n, classes]`; empty otherwise.
    pub tags: Vec<u8>,
}

impl SplitData {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A finished feature cache opened for reading.
pub struct FeatureCache {
    pub path: PathBuf,
    pub meta: CacheMeta,
    file: hdf5::File,
}

pub(crate) fn read_str_attr(loc: &hdf5::Location, name: &str) -> hdf5::Result<String> {
    Ok(loc
        .attr(name)?
        .read_scalar::<VarLenUnicode>()?
        .as_str()
        .to_string())
}

/// A string attribute, or `default` when the file predates it.
fn read_str_attr_or(loc: &hdf5::Location, name: &str, default: &str) -> hdf5::Result<String> {
    if loc.attr_names()?.iter().any(|n| n == name) {
        read_str_attr(loc, name)
    } else {
        Ok(default.into())
    }
}

/// A file's class list: every name non-empty and none twice (a file that breaks this would print
/// two columns of one name, or a column with none).
pub(crate) fn read_classes(loc: &hdf5::Location) -> hdf5::Result<Vec<String>> {
    let classes = read_strs(loc.attr("classes")?.read_raw()?);
    let mut seen = std::collections::HashSet::new();
    if let Some(bad) = classes
        .iter()
        .find(|c| c.is_empty() || !seen.insert(c.as_str()))
    {
        return Err(format!(
            "class '{bad}' is empty or listed twice in [{}]",
            classes.join(", ")
        )
        .into());
    }
    Ok(classes)
}

pub(crate) fn read_strs(v: Vec<VarLenUnicode>) -> Vec<String> {
    v.into_iter().map(|s| s.as_str().to_string()).collect()
}

/// Reads the attributes written by [`write_meta`] from a file or group.
pub(crate) fn read_meta(file: &hdf5::Location) -> hdf5::Result<CacheMeta> {
    let arr3 = |name: &str| -> hdf5::Result<[f32; 3]> {
        match file.attr(name)?.read_raw::<f32>()?[..] {
            [a, b, c] => Ok([a, b, c]),
            _ => Err(hdf5::Error::from(format!(
                "attribute '{name}' must hold 3 values"
            ))),
        }
    };
    let size = match file.attr("input_size")?.read_raw::<u32>()?[..] {
        [h, w] => (h, w),
        _ => {
            return Err(hdf5::Error::from(
                "attribute 'input_size' must hold 2 values",
            ))
        }
    };
    let dtype = match read_str_attr(file, "dtype")?.as_str() {
        "f16" => Dtype::F16,
        "f32" => Dtype::F32,
        other => return Err(format!("dtype '{other}' is not f32 or f16").into()),
    };
    let model_sha256 = read_str_attr(file, "model_sha256")?;
    Ok(CacheMeta {
        classes: read_classes(file)?,
        model_file: read_str_attr(file, "model_file")?,
        source_sha256: match read_str_attr_or(file, "source_sha256", "")? {
            s if s.is_empty() => model_sha256.clone(),
            s => s,
        },
        model_sha256,
        input_size: size,
        layout: read_str_attr(file, "layout")?,
        preprocess: read_str_attr(file, "preprocess")?,
        color_order: read_str_attr(file, "color_order")?,
        mean: arr3("mean")?,
        std: arr3("std")?,
        resize: read_str_attr(file, "resize")?,
        interpolation: read_str_attr(file, "interpolation")?,
        decode: read_str_attr_or(file, "decode", "exact")?,
        precision: read_str_attr_or(file, "precision", "fp32")?,
        output_name: read_str_attr(file, "output_name")?,
        feature_shape: crate::util::limits::feature_shape(
            &file.attr("feature_shape")?.read_raw::<u64>()?,
        )?,
        dtype,
        headstart_version: read_str_attr(file, "headstart_version")?,
        fingerprint: read_str_attr(file, "fingerprint")?,
        data_root: read_str_attr(file, "data_root")?,
        splits: read_strs(file.attr("splits")?.read_raw()?),
        multi_label: match file.attr_names()?.iter().any(|n| n == "multi_label") {
            false => false,
            true => match file.attr("multi_label")?.read_scalar::<u8>()? {
                0 => false,
                1 => true,
                v => return Err(format!("multi_label is {v}, not 0 or 1").into()),
            },
        },
        tokens: super::Tokens::recorded(
            &read_str_attr_or(file, "token_pool", "none")?,
            if file.attr_names()?.iter().any(|n| n == "prefix_tokens") {
                file.attr("prefix_tokens")?.read_scalar::<u64>()? as usize
            } else {
                0
            },
        )
        .map_err(hdf5::Error::from)?,
    })
}

impl FeatureCache {
    /// Opens `path` and reads its attributes; errors name the file and the missing piece.
    pub fn open(path: &Path) -> Result<FeatureCache> {
        crate::util::paths::check_regular(path)?;
        if !path.is_file() {
            return Err(Error::cache(path, "feature cache not found"));
        }
        let e = |x: hdf5::Error| Error::hdf5(path, "not a headstart feature cache", x);
        let file = open_read(path).map_err(e)?;
        let meta = match read_meta(&file) {
            Ok(m) => m,
            // Another headstart file (a head) is named as what it is, not by the HDF5 call.
            Err(x) => match read_str_attr(&file, "format") {
                Ok(f) if f == "headstart-head" => {
                    return Err(Error::cache(
                        path,
                        "is a head file (train-head's output), not a feature cache",
                    ))
                }
                _ => return Err(e(x)),
            },
        };
        linked::check_sources(path, &file, &meta)?;
        Ok(FeatureCache {
            path: path.to_path_buf(),
            meta,
            file,
        })
    }

    /// Number of images stored in `split` (without reading the features).
    pub fn split_len(&self, split: &str) -> Result<usize> {
        let g = self.group(split)?;
        Ok(g.dataset("labels")
            .map_err(|x| Error::hdf5(&self.path, "HDF5", x))?
            .size())
    }

    pub(crate) fn group(&self, split: &str) -> Result<hdf5::Group> {
        self.file.group(split).map_err(|_| {
            let why = if self.meta.splits.iter().any(|s| s == split) {
                "is listed in the cache's splits but its group is missing (a damaged cache)".into()
            } else {
                format!("is not in the cache (has: {})", self.meta.splits.join(", "))
            };
            Error::cache(&self.path, format!("split '{split}' {why}"))
        })
    }

    /// Reads one split fully (f16 features are widened to f32).
    pub fn read_split(&self, split: &str) -> Result<SplitData> {
        let mut d = self.read_lists(split)?;
        d.features = self.read_features(split, &d.paths)?;
        Ok(d)
    }

    /// Refuses split `split`'s `features` dataset `ds` when it declares more values than its file
    /// holds (a linked split's sources were bounded when the cache was opened).
    pub(crate) fn bound_features(&self, split: &str, ds: &hdf5::Dataset) -> Result<()> {
        if linked::is_linked(ds) {
            return Ok(());
        }
        check_declared(
            &self.path,
            split,
            "features",
            ds.size(),
            self.meta.dtype.bytes(),
        )
    }

    /// All of `split`'s features, checked finite and against its `paths` (one row each), read
    /// chunk by chunk into one buffer (a float16 split is never held twice).
    fn read_features(&self, split: &str, paths: &[String]) -> Result<Vec<f32>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let ds = g.dataset("features").map_err(e)?;
        let row: usize = self.meta.feature_shape.iter().product();
        // Bounded by its file first, so a forged size is named as such (the reader checks again).
        self.bound_features(split, &ds)?;
        let n = ds.shape().first().copied().unwrap_or(0);
        if n != paths.len() || ds.size() != n * row {
            return Err(Error::cache(
                &self.path,
                format!("split '{split}': {} features values, {} labels and paths do not agree (row size {row})", ds.size(), paths.len()),
            ));
        }
        let mut features = Vec::new();
        self.read_rows_into(split, 0, n, &mut features)?;
        Ok(features)
    }

    /// A multi-label split's `targets` (`[n, classes]` of 0/1; a row of zeros is an image of none of
    /// the tags); empty for a single-label cache.
    pub(crate) fn read_targets(&self, split: &str, g: &hdf5::Group, n: usize) -> Result<Vec<u8>> {
        if !self.meta.multi_label {
            return Ok(Vec::new());
        }
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let ds = g.dataset("targets").map_err(e)?;
        let classes = self.meta.classes.len();
        if ds.shape() != [n, classes] {
            return Err(Error::cache(
                &self.path,
                format!(
                    "split '{split}': targets are {:?}, expected [{n}, {classes}] (rows, classes)",
                    ds.shape()
                ),
            ));
        }
        check_integers(&self.path, split, "targets", &ds, 2)?;
        let hot = ds.read_raw::<u8>().map_err(e)?;
        if let Some(i) = hot.iter().position(|&v| v > 1) {
            return Err(Error::cache(
                &self.path,
                format!(
                    "split '{split}' row {}: target {} is not 0 or 1",
                    i / classes,
                    hot[i]
                ),
            ));
        }
        Ok(hot)
    }

    /// The image paths of `split`, without reading its features.
    pub fn read_paths(&self, split: &str) -> Result<Vec<String>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let pds = g.dataset("paths").map_err(e)?;
        check_declared(&self.path, split, "paths", pds.size(), 16)?;
        check_list(&self.path, split, "paths", &pds)?;
        Ok(read_strs(pds.read_raw().map_err(e)?))
    }

    /// The (path, reason) pairs of the images of `split` that could not be read.
    pub fn read_split_skipped(&self, split: &str) -> Result<Vec<(String, String)>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let (spd, srd) = (
            g.dataset("skipped_paths").map_err(e)?,
            g.dataset("skipped_reasons").map_err(e)?,
        );
        check_declared(&self.path, split, "skipped_paths", spd.size(), 16)?;
        check_declared(&self.path, split, "skipped_reasons", srd.size(), 16)?;
        check_list(&self.path, split, "skipped_paths", &spd)?;
        check_list(&self.path, split, "skipped_reasons", &srd)?;
        let sp = read_strs(spd.read_raw().map_err(e)?);
        let sr = read_strs(srd.read_raw().map_err(e)?);
        if sp.len() != sr.len() {
            return Err(Error::cache(
                &self.path,
                format!(
                    "split '{split}': {} skipped paths and {} reasons do not agree",
                    sp.len(),
                    sr.len()
                ),
            ));
        }
        Ok(sp.into_iter().zip(sr).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::synthetic::{synthetic, SyntheticSpec};
    use crate::cache::FeatureCache;

    /// A cache of 6 train rows of 4 features at `path`; its attributes.
    fn small_cache(path: &Path) -> CacheMeta {
        let (meta, splits) = synthetic(&SyntheticSpec {
            shape: vec![4],
            splits: vec![("train".into(), 6)],
            classes: 2,
            separation: 2.0,
            seed: 1,
            dtype: crate::cache::Dtype::F32,
        })
        .unwrap();
        write_arrays(&crate::util::output::Output::new(path), &meta, &splits).unwrap();
        meta
    }

    /// A lock held for a moment (as a forked child holds it until its `exec`) is waited out; one
    /// held for good gives an error naming the file.
    #[test]
    fn a_briefly_locked_cache_opens_and_a_locked_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.h5");
        small_cache(&path);
        let holder = std::fs::File::open(&path).unwrap();
        holder.lock().unwrap(); // flock(LOCK_EX), the lock HDF5 takes when it writes
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(holder);
        });
        let c = FeatureCache::open(&path).unwrap();
        assert_eq!(c.meta.feature_shape, vec![4]);
        drop(c);
        t.join().unwrap();

        let holder = std::fs::File::open(&path).unwrap();
        holder.lock().unwrap();
        let err = FeatureCache::open(&path)
            .err()
            .expect("a held lock fails")
            .to_string();
        assert!(err.contains("c.h5") && err.contains("lock"), "{err}");
    }
    /// Every attribute sits in a checksummed object header and the labels in checksummed chunks:
    /// a byte changed anywhere from the root's attributes to the labels is an error, never a crash
    /// of the library (a version-1 header let a damaged string length crash it) nor another
    /// class read as if it were right.
    #[test]
    fn a_damaged_attribute_or_label_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.h5");
        let meta = small_cache(&path);
        let good = std::fs::read(&path).unwrap();
        let at = |name: &[u8]| good.windows(name.len()).position(|w| w == name).unwrap();
        let bad = d.path().join("bad.h5");
        let mut errors = 0;
        for off in at(b"model_file").saturating_sub(40)..at(b"preprocess") + 60 {
            let mut b = good.clone();
            b[off..off + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
            std::fs::write(&bad, &b).unwrap();
            if let Ok(c) = FeatureCache::open(&bad) {
                let read = c.read_lists("train");
                assert!(
                    read.is_err() || c.meta == meta,
                    "byte {off}: a damaged file read as other values"
                );
            }
            errors += usize::from(FeatureCache::open(&bad).is_err());
        }
        assert!(errors > 100, "{errors}");
        let mut b = good.clone();
        let off = at(b"model_file") + 20;
        b[off..off + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        std::fs::write(&bad, &b).unwrap();
        let e = FeatureCache::open(&bad).err().expect("damaged").to_string();
        assert!(e.contains("bad.h5") && e.contains("damaged"), "{e}");
        let f = hdf5::File::open(&path).unwrap();
        let labels = f.dataset("train/labels").unwrap();
        let checked = labels
            .filters()
            .iter()
            .any(|f| matches!(f, hdf5::filters::Filter::Fletcher32));
        assert!(checked, "labels carry a checksum");
    }
}
