//! The feature cache. While extracting, finished images go to an append-only journal
//! (`<out>.journal`) that survives a crash or Ctrl-C; when every image is done, the journal becomes one
//! HDF5 file, written to `<out>.tmp` and renamed. HDF5 layout (readable by h5py):
//!
//! ```text
//! /                 attrs: classes, model_file, model_sha256, input_size, layout, preprocess, color_order,
//!                          mean, std, resize, interpolation, output_name, feature_shape, dtype,
//!                          headstart_version, fingerprint, data_root, splits
//! /<split>/features  f32 or f16 [N, *feature_shape]
//! /<split>/labels    i32 [N]        index into `classes`
//! /<split>/paths     str [N]        relative to data_root
//! /<split>/skipped_paths, /<split>/skipped_reasons   str [K]   images that could not be read
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{ArrayViewD, IxDyn};

use crate::error::{Error, Result};

const JOURNAL_MAGIC: &[u8; 8] = b"HSJRNL01";
const REC_OK: u8 = 1;
const REC_FAILED: u8 = 2;

/// Storage type of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// Status of each image in a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Done,
    Failed,
}

/// The journal path for an output file.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// An open journal: where finished images are appended.
pub struct Journal {
    path: PathBuf,
    file: BufWriter<File>,
    /// Per-image feature shape, known after the first finished image.
    pub feature_shape: Option<Vec<usize>>,
    pub status: Vec<Status>,
    /// (index, reason) of the images that failed.
    pub failures: Vec<(usize, String)>,
}

fn rd_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn rd_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// One journal record as read back.
pub enum Record {
    Done {
        index: usize,
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    Failed {
        index: usize,
        reason: String,
    },
}

fn read_record(r: &mut impl Read, skip_data: bool) -> std::io::Result<Record> {
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    let index = rd_u64(r)? as usize;
    let len = rd_u32(r)? as usize;
    match kind[0] {
        REC_OK => {
            let nd = rd_u32(r)? as usize;
            let shape = (0..nd)
                .map(|_| rd_u32(r).map(|v| v as usize))
                .collect::<std::io::Result<Vec<_>>>()?;
            let n: usize = shape.iter().product();
            if len != 4 + 4 * nd + 4 * n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record length mismatch",
                ));
            }
            let mut bytes = vec![0u8; 4 * n];
            r.read_exact(&mut bytes)?;
            let data = if skip_data {
                Vec::new()
            } else {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            Ok(Record::Done { index, shape, data })
        }
        REC_FAILED => {
            let mut bytes = vec![0u8; len];
            r.read_exact(&mut bytes)?;
            Ok(Record::Failed {
                index,
                reason: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
        k => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown record kind {k}"),
        )),
    }
}

impl Journal {
    /// Opens the journal of a run with `fingerprint` over `total` images, continuing one left by an
    /// interrupted run with the same fingerprint (a torn last record is cut off). A journal of a
    /// different run is replaced. Returns the journal and how many images it already held.
    pub fn open(path: &Path, fingerprint: &str, total: usize) -> Result<(Journal, usize)> {
        let mut status = vec![Status::Pending; total];
        let mut failures = Vec::new();
        let mut feature_shape = None;
        let mut resumed = 0;
        let mut valid_end = None;
        if let Ok(f) = File::open(path) {
            let mut r = BufReader::new(f);
            let header_ok = (|| -> std::io::Result<bool> {
                let mut magic = [0u8; 8];
                r.read_exact(&mut magic)?;
                let flen = rd_u32(&mut r)? as usize;
                let mut fp = vec![0u8; flen];
                r.read_exact(&mut fp)?;
                let n = rd_u64(&mut r)? as usize;
                Ok(&magic == JOURNAL_MAGIC && fp == fingerprint.as_bytes() && n == total)
            })()
            .unwrap_or(false);
            if header_ok {
                let mut pos = r.stream_position().map_err(|e| Error::io(path, e))?;
                while let Ok(rec) = read_record(&mut r, true) {
                    let (index, st) = match &rec {
                        Record::Done { index, shape, .. } => {
                            if feature_shape.get_or_insert_with(|| shape.clone()) != shape {
                                break;
                            }
                            (*index, Status::Done)
                        }
                        Record::Failed { index, reason } => {
                            failures.push((*index, reason.clone()));
                            (*index, Status::Failed)
                        }
                    };
                    if index >= total {
                        break;
                    }
                    status[index] = st;
                    resumed += 1;
                    pos = r.stream_position().map_err(|e| Error::io(path, e))?;
                }
                valid_end = Some(pos);
            } else {
                eprintln!("notice: {} belongs to a different run (model, data or options changed); starting over", path.display());
            }
        }
        let file = match valid_end {
            Some(end) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                f.set_len(end).map_err(|e| Error::io(path, e))?;
                let mut f = f;
                f.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
                f
            }
            None => {
                let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
                let mut h = Vec::new();
                h.extend_from_slice(JOURNAL_MAGIC);
                h.extend_from_slice(&(fingerprint.len() as u32).to_le_bytes());
                h.extend_from_slice(fingerprint.as_bytes());
                h.extend_from_slice(&(total as u64).to_le_bytes());
                f.write_all(&h).map_err(|e| Error::io(path, e))?;
                f
            }
        };
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: BufWriter::new(file),
                feature_shape,
                status,
                failures,
            },
            resumed,
        ))
    }

    /// Appends the features of image `index`. All images must share one feature shape.
    pub fn append_done(&mut self, index: usize, shape: &[usize], data: &[f32]) -> Result<()> {
        if let Some(s) = &self.feature_shape {
            if s.as_slice() != shape {
                return Err(Error::cache(
                    &self.path,
                    format!("feature shape {shape:?} != {s:?} of earlier images"),
                ));
            }
        } else {
            self.feature_shape = Some(shape.to_vec());
        }
        let mut rec = Vec::with_capacity(17 + 4 * shape.len() + 4 * data.len());
        rec.push(REC_OK);
        rec.extend_from_slice(&(index as u64).to_le_bytes());
        rec.extend_from_slice(&((4 + 4 * shape.len() + 4 * data.len()) as u32).to_le_bytes());
        rec.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape {
            rec.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        for v in data {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        self.file
            .write_all(&rec)
            .map_err(|e| Error::io(&self.path, e))?;
        self.status[index] = Status::Done;
        Ok(())
    }

    /// Records that image `index` could not be read.
    pub fn append_failed(&mut self, index: usize, reason: &str) -> Result<()> {
        let mut rec = vec![REC_FAILED];
        rec.extend_from_slice(&(index as u64).to_le_bytes());
        rec.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        rec.extend_from_slice(reason.as_bytes());
        self.file
            .write_all(&rec)
            .map_err(|e| Error::io(&self.path, e))?;
        self.status[index] = Status::Failed;
        self.failures.push((index, reason.to_string()));
        Ok(())
    }

    /// Hands what was appended to the operating system (survives the process being killed).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every record back, in file order, calling `f` for each.
    pub fn for_each_record(&mut self, mut f: impl FnMut(Record) -> Result<()>) -> Result<()> {
        self.flush()?;
        let mut r = BufReader::new(File::open(&self.path).map_err(|e| Error::io(&self.path, e))?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|e| Error::io(&self.path, e))?;
        let flen = rd_u32(&mut r).map_err(|e| Error::io(&self.path, e))? as u64;
        r.seek(SeekFrom::Current(flen as i64 + 8))
            .map_err(|e| Error::io(&self.path, e))?;
        loop {
            match read_record(&mut r, false) {
                Ok(rec) => f(rec)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(Error::io(&self.path, e)),
            }
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
    pub output_name: String,
    pub feature_shape: Vec<usize>,
    pub dtype: Dtype,
    pub headstart_version: String,
    pub fingerprint: String,
    pub data_root: String,
    pub splits: Vec<String>,
}

impl CacheMeta {
    /// The preprocessing these features were made with, rebuilt from the stored attributes.
    pub fn preprocess(&self) -> std::result::Result<crate::data::preprocess::Preprocess, String> {
        use crate::data::preprocess::{
            ColorOrder, Interpolation, Layout, Normalize, Preprocess, ResizeMode,
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
        let color = match self.color_order.to_ascii_uppercase().as_str() {
            "RGB" => ColorOrder::Rgb,
            "BGR" => ColorOrder::Bgr,
            other => return Err(format!("unknown colour order '{other}'")),
        };
        Ok(Preprocess {
            size: self.input_size,
            layout,
            resize,
            interpolation,
            normalize: Normalize {
                color,
                mean: self.mean,
                std: self.std,
            },
        })
    }
}

/// An exclusive claim on an output file (`<out>.lock` holding the owner's pid), so that two runs
/// never write the same cache. A lock whose process is gone (killed) is taken over.
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        let mut p = out.as_os_str().to_owned();
        p.push(".lock");
        let path = PathBuf::from(p);
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(OutputLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner: Option<u32> = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    if let Some(pid) = owner {
                        if Path::new(&format!("/proc/{pid}")).exists() {
                            return Err(Error::cache(
                                out,
                                format!(
                                    "another headstart run (pid {pid}) is writing this file; wait for it to finish (or delete {} if that process is not headstart)",
                                    path.display()
                                ),
                            ));
                        }
                    }
                    // The owner is gone (killed): take the lock over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::cache(
            out,
            format!("could not take the lock {}", path.display()),
        ))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One split of the dataset, as handed to the writer.
pub struct SplitRows {
    pub name: String,
    /// Global journal index of each image of this split, with label and relative path.
    pub items: Vec<(usize, u32, String)>,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| Error::cache(path, e)
}

fn vlu(s: &str) -> VarLenUnicode {
    // Strings containing NUL cannot be stored; replace them.
    s.replace('\0', "?").parse().unwrap_or_default()
}

/// Writes `path` through `<path>.tmp` and a rename, so a crash never leaves a half-written file.
pub(crate) fn save_via_tmp(
    path: &Path,
    write: impl FnOnce(&Path) -> hdf5::Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp).map_err(|e| Error::cache(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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

/// A split's labels, paths and skipped files.
fn write_lists(
    g: &hdf5::Group,
    labels: &[i32],
    paths: &[String],
    skipped_paths: &[String],
    skipped_reasons: &[String],
) -> hdf5::Result<()> {
    g.new_dataset::<i32>()
        .shape(labels.len())
        .create("labels")?
        .write_raw(labels)?;
    write_strs(g, "paths", paths)?;
    write_strs(g, "skipped_paths", skipped_paths)?;
    write_strs(g, "skipped_reasons", skipped_reasons)
}

/// Writes the final HDF5 file from the journal: to `<out>.tmp`, then renamed to `out`.
pub fn write_hdf5(
    out: &Path,
    meta: &CacheMeta,
    splits: &[SplitRows],
    journal: &mut Journal,
) -> Result<()> {
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let e = h5err(&tmp);
    let feature_shape = meta.feature_shape.clone();
    let row_len: usize = feature_shape.iter().product();
    // Map global index -> (split, row).
    let mut place = vec![None; journal.status.len()];
    let reasons: std::collections::HashMap<usize, String> =
        journal.failures.iter().cloned().collect();
    let file = hdf5::File::create(&tmp).map_err(&e)?;
    let mut datasets = Vec::new();
    for (si, split) in splits.iter().enumerate() {
        let g = file.create_group(&split.name).map_err(&e)?;
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        let mut skipped_paths = Vec::new();
        let mut skipped_reasons = Vec::new();
        for (idx, label, rel) in &split.items {
            match journal.status[*idx] {
                Status::Done => {
                    place[*idx] = Some((si, labels.len()));
                    labels.push(*label as i32);
                    paths.push(rel.clone());
                }
                Status::Failed => {
                    skipped_paths.push(rel.clone());
                    skipped_reasons.push(reasons.get(idx).cloned().unwrap_or_default());
                }
                Status::Pending => {
                    return Err(Error::cache(
                        out,
                        format!("internal: image {rel} was never extracted"),
                    ));
                }
            }
        }
        let mut shape = vec![labels.len()];
        shape.extend_from_slice(&feature_shape);
        let row_bytes = row_len * if meta.dtype == Dtype::F16 { 2 } else { 4 };
        let chunk_rows = (1 << 20) / row_bytes.max(1);
        let mut chunk = shape.clone();
        chunk[0] = chunk_rows.clamp(1, labels.len().max(1));
        let builder = g.new_dataset_builder();
        let builder = if labels.is_empty() {
            builder
        } else {
            builder.chunk(chunk)
        };
        let ds = match meta.dtype {
            Dtype::F32 => builder.empty::<f32>().shape(shape).create("features"),
            Dtype::F16 => builder.empty::<half::f16>().shape(shape).create("features"),
        }
        .map_err(&e)?;
        write_lists(&g, &labels, &paths, &skipped_paths, &skipped_reasons).map_err(&e)?;
        datasets.push(ds);
    }
    let mut row_shape = vec![1];
    row_shape.extend_from_slice(&feature_shape);
    journal.for_each_record(|rec| {
        if let Record::Done { index, data, .. } = rec {
            if let Some((si, row)) = place.get(index).copied().flatten() {
                let ds = &datasets[si];
                match meta.dtype {
                    Dtype::F32 => {
                        let view = ArrayViewD::from_shape(IxDyn(&row_shape), &data)
                            .map_err(|x| Error::cache(&tmp, x))?;
                        ds.write_slice(view, row_selection(row, feature_shape.len()))
                            .map_err(&e)?;
                    }
                    Dtype::F16 => {
                        let h: Vec<half::f16> =
                            data.iter().map(|v| half::f16::from_f32(*v)).collect();
                        let view = ArrayViewD::from_shape(IxDyn(&row_shape), &h)
                            .map_err(|x| Error::cache(&tmp, x))?;
                        ds.write_slice(view, row_selection(row, feature_shape.len()))
                            .map_err(&e)?;
                    }
                }
            }
        }
        Ok(())
    })?;
    write_meta(&file, meta).map_err(&e)?;
    file.flush().map_err(&e)?;
    drop(datasets);
    file.close().map_err(&e)?;
    std::fs::rename(&tmp, out).map_err(|x| Error::io(out, x))
}

/// Writes a cache from splits held in memory (synthetic features for benchmarks and tests):
/// same schema as [`write_hdf5`], written to `<out>.tmp` and renamed.
pub fn write_arrays(out: &Path, meta: &CacheMeta, splits: &[SplitData]) -> Result<()> {
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let e = h5err(&tmp);
    let file = hdf5::File::create(&tmp).map_err(&e)?;
    for sd in splits {
        let g = file.create_group(&sd.name).map_err(&e)?;
        let mut shape = vec![sd.len()];
        shape.extend_from_slice(&meta.feature_shape);
        let arr = ArrayViewD::from_shape(IxDyn(&shape), &sd.features)
            .map_err(|x| Error::cache(&tmp, x))?;
        g.new_dataset::<f32>()
            .shape(shape.clone())
            .create("features")
            .map_err(&e)?
            .write(arr)
            .map_err(&e)?;
        let labels: Vec<i32> = sd.labels.iter().map(|&l| l as i32).collect();
        let (sp, sr): (Vec<String>, Vec<String>) = sd.skipped.iter().cloned().unzip();
        write_lists(&g, &labels, &sd.paths, &sp, &sr).map_err(&e)?;
    }
    write_meta(&file, meta).map_err(&e)?;
    file.close().map_err(&e)?;
    std::fs::rename(&tmp, out).map_err(|x| Error::io(out, x))
}

/// Rows `row..row+1` of a dataset with `rest` more (whole) dimensions.
fn row_selection(row: usize, rest: usize) -> hdf5::Hyperslab {
    let mut sel: Vec<hdf5::SliceOrIndex> = vec![(row..row + 1).into()];
    sel.extend((0..rest).map(|_| hdf5::SliceOrIndex::from(..)));
    hdf5::Hyperslab::from(sel)
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
    write_strs_attr(file, "splits", &m.splits)
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
        _ => Dtype::F32,
    };
    Ok(CacheMeta {
        classes: read_strs(file.attr("classes")?.read_raw()?),
        model_file: read_str_attr(file, "model_file")?,
        model_sha256: read_str_attr(file, "model_sha256")?,
        input_size: size,
        layout: read_str_attr(file, "layout")?,
        preprocess: read_str_attr(file, "preprocess")?,
        color_order: read_str_attr(file, "color_order")?,
        mean: arr3("mean")?,
        std: arr3("std")?,
        resize: read_str_attr(file, "resize")?,
        interpolation: read_str_attr(file, "interpolation")?,
        output_name: read_str_attr(file, "output_name")?,
        feature_shape: file
            .attr("feature_shape")?
            .read_raw::<u64>()?
            .into_iter()
            .map(|d| d as usize)
            .collect(),
        dtype,
        headstart_version: read_str_attr(file, "headstart_version")?,
        fingerprint: read_str_attr(file, "fingerprint")?,
        data_root: read_str_attr(file, "data_root")?,
        splits: read_strs(file.attr("splits")?.read_raw()?),
    })
}

impl FeatureCache {
    /// Opens `path` and reads its attributes; errors name the file and the missing piece.
    pub fn open(path: &Path) -> Result<FeatureCache> {
        if !path.is_file() {
            return Err(Error::cache(path, "feature cache not found"));
        }
        let e = |x: hdf5::Error| Error::cache(path, format!("not a headstart feature cache: {x}"));
        let file = hdf5::File::open(path).map_err(e)?;
        let meta = read_meta(&file).map_err(e)?;
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
            .map_err(|x| Error::cache(&self.path, x))?
            .size())
    }

    fn group(&self, split: &str) -> Result<hdf5::Group> {
        self.file.group(split).map_err(|_| {
            Error::cache(
                &self.path,
                format!("no split '{split}' (has: {})", self.meta.splits.join(", ")),
            )
        })
    }

    /// Reads one split fully (f16 features are widened to f32).
    pub fn read_split(&self, split: &str) -> Result<SplitData> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let ds = g.dataset("features").map_err(e)?;
        let features = match self.meta.dtype {
            Dtype::F32 => ds.read_raw::<f32>().map_err(e)?,
            Dtype::F16 => ds
                .read_raw::<half::f16>()
                .map_err(e)?
                .into_iter()
                .map(f32::from)
                .collect(),
        };
        let labels: Vec<u32> = g
            .dataset("labels")
            .map_err(e)?
            .read_raw::<i32>()
            .map_err(e)?
            .into_iter()
            .map(|l| l as u32)
            .collect();
        let paths = read_strs(g.dataset("paths").map_err(e)?.read_raw().map_err(e)?);
        let skipped = self.read_split_skipped(split)?;
        let row: usize = self.meta.feature_shape.iter().product();
        if features.len() != labels.len() * row || paths.len() != labels.len() {
            return Err(Error::cache(
                &self.path,
                format!("split '{split}': {} features values, {} labels, {} paths do not agree (row size {row})", features.len(), labels.len(), paths.len()),
            ));
        }
        Ok(SplitData {
            name: split.to_string(),
            features,
            labels,
            paths,
            skipped,
        })
    }

    /// The (path, reason) pairs of the images of `split` that could not be read.
    pub fn read_split_skipped(&self, split: &str) -> Result<Vec<(String, String)>> {
        let g = self.group(split)?;
        let e = |x: hdf5::Error| Error::cache(&self.path, format!("split '{split}': {x}"));
        let sp = read_strs(
            g.dataset("skipped_paths")
                .map_err(e)?
                .read_raw()
                .map_err(e)?,
        );
        let sr = read_strs(
            g.dataset("skipped_reasons")
                .map_err(e)?
                .read_raw()
                .map_err(e)?,
        );
        Ok(sp.into_iter().zip(sr).collect())
    }
}
