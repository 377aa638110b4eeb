//! `headstart extract`: run the frozen base over an image folder and cache its features.
//!
//! Decoding and resizing run on worker threads that feed a bounded channel, so they overlap with
//! inference; finished batches go to the journal at once (see [`crate::cache`]), so an interrupted run
//! continues where it stopped, and an unchanged rerun is a cache hit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::tokens::TokenRequest;
use crate::cache::{self, CacheMeta, Dtype, Journal, SplitRows, Status};
use crate::data::preprocess::{self, Layout};
use crate::data::remote::Prefetch;
use crate::data::scan::{Dataset, RemoteSource};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::pipeline::{Event, InputKind, Pipeline};
use crate::infer::runtime::{Device, RuntimeConfig};
use crate::util::output::Output;

mod base;
mod hit;

pub use crate::cache::{flip_split, AUG_SPLIT, FLIP_SPLIT};
pub use base::cut_model_for;
use base::{cut_first, int8_model};
use hit::{cache_hit, data_root, fingerprint};

/// Everything `extract` needs, validated by the CLI (or built by a library user).
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub overrides: PreprocessOverrides,
    pub layout: Option<Layout>,
    pub batch: usize,
    /// Where and how ONNX Runtime runs the model.
    pub runtime: RuntimeConfig,
    /// Image decoding threads (0 = number of CPUs).
    pub decode_threads: usize,
    pub dtype: Dtype,
    /// Fail on the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Re-extract even when the cache is up to date.
    pub force: bool,
    /// Cut the model at this tensor first ([`cut_model_for`] writes the cut model beside `out`).
    pub layer: Option<String>,
    /// Also cache left-right mirrored copies of the `train` images, as split `train_flip` (same
    /// order and paths as `train`).
    pub augment_flip: bool,
    /// Test-time augmentation: also cache mirrored copies of every split but `train`, as
    /// `<split>_flip`; `evaluate` and `score` then average the plain and mirrored predictions.
    pub tta_flip: bool,
    /// Cached augmentation: this many seeded augmented copies of each train image, as split
    /// [`AUG_SPLIT`] (0: none).
    pub copies: usize,
    /// What the copies may get (flip, crop, scale, colour).
    pub augment: crate::data::augment::AugmentSpec,
    /// Seed of the copies' transforms.
    pub augment_seed: u64,
    /// Extract these images (paths relative to `data`) instead of scanning `data`: one shard of a
    /// planned run ([`crate::runs::extract_shard`]).
    pub subset: Option<Dataset>,
    /// Labels from a table ([`crate::data::labels`]) instead of class folders.
    pub labels: Option<crate::data::labels::LabelTable>,
    /// Set from outside (e.g. a SIGTERM handler) to stop after the batch in flight: finished
    /// batches are in the journal, and the next run continues from there.
    pub cancel: Option<&'static std::sync::atomic::AtomicBool>,
    /// Extract with an int8 copy of the model, calibrated on these images ([`Int8`]).
    pub int8: Option<Int8>,
    /// How a token output `[N, T, D]` is pooled (`--pool`, `--prefix-tokens`; `None` fields: the
    /// model's metadata decides, see [`crate::cache::tokens`]).
    pub tokens: TokenRequest,
}

/// `extract --precision int8`: the model is quantised once (`headstart quantize`, minmax) on
/// `images` photos of `calibrate`, and kept in `$HEADSTART_HOME/quantized` under a name keyed by the
/// model's sha256 and the calibration set (file names, sizes, mtimes, count).
#[derive(Debug, Clone)]
pub struct Int8 {
    pub calibrate: PathBuf,
    pub images: usize,
}

impl ExtractConfig {
    /// A config with the defaults of the command line.
    pub fn new(
        model: impl Into<PathBuf>,
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        ExtractConfig {
            model: model.into(),
            data: data.into(),
            out: out.into(),
            overrides: PreprocessOverrides::default(),
            layout: None,
            batch: 32,
            runtime: RuntimeConfig::default(),
            decode_threads: 0,
            dtype: Dtype::F32,
            strict: false,
            force: false,
            layer: None,
            augment_flip: false,
            tta_flip: false,
            copies: 0,
            augment: Default::default(),
            augment_seed: 42,
            subset: None,
            labels: None,
            cancel: None,
            int8: None,
            tokens: TokenRequest::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct ExtractSummary {
    pub out: PathBuf,
    /// Images in the dataset.
    pub images: usize,
    /// Images whose features are in the cache.
    pub extracted: usize,
    /// Images extracted by this run (the rest came from a journal or the cache).
    pub extracted_now: usize,
    /// (relative path, reason) of unreadable images.
    pub skipped: Vec<(String, String)>,
    pub seconds: f64,
    pub cache_hit: bool,
    /// Images recovered from an interrupted run's journal.
    pub resumed: usize,
    pub file_bytes: u64,
    pub device: Device,
    /// Entries passed over while scanning the folders (symlink loops, unreadable entries, ...).
    pub scan_warnings: usize,
}

impl ExtractSummary {
    /// The final one-line summary.
    pub fn line(&self) -> String {
        let rate = if self.seconds > 0.0 {
            self.extracted_now as f64 / self.seconds
        } else {
            0.0
        };
        let what = if self.cache_hit {
            "cache hit: ".to_string()
        } else {
            String::new()
        };
        let resumed = if self.resumed > 0 {
            format!(", {} resumed from journal", self.resumed)
        } else {
            String::new()
        };
        let scan = if self.scan_warnings > 0 {
            format!(
                ", {} scan warnings (entries passed over, table rows)",
                self.scan_warnings
            )
        } else {
            String::new()
        };
        format!(
            "{what}{} of {} images, {} skipped{scan}, {} extracted now in {:.1} s ({:.1} img/s{resumed}) -> {} ({:.1} MB)",
            self.extracted,
            self.images,
            self.skipped.len(),
            self.extracted_now,
            self.seconds,
            rate,
            self.out.display(),
            self.file_bytes as f64 / 1e6
        )
    }
}

/// The cache output of `cfg`: never the model (nor its external data files) or inside a local photo
/// folder; an existing file is replaced only when it is a feature cache.
fn output(cfg: &ExtractConfig) -> Output<'static> {
    let mut out = Output::new(&cfg.out)
        .input(&cfg.model)
        .inputs(crate::onnx::external_data_files(&cfg.model))
        .replace(cache::replace_cache());
    if !crate::data::remote::is_url_path(&cfg.data) {
        out = out.input(&cfg.data);
    }
    out
}

/// Reports the scan's warnings; under `--strict`, an entry named as a photo that could not be
/// read (a dangling link, a FIFO) is an unreadable image, and a folder or entry that could not be
/// read may hold some: the run stops.
fn scan_warnings(cfg: &ExtractConfig, ds: &Dataset, rep: &dyn Reporter) -> Result<()> {
    for (p, why) in &ds.warnings {
        let photo =
            why.starts_with("skipped:") && crate::data::scan::is_image_file(p) && !p.is_dir();
        let unread = why.starts_with("folder not read") || why.starts_with("entry not read");
        if cfg.strict && (photo || unread) {
            return Err(Error::Dataset {
                path: p.clone(),
                msg: format!("{why} (--strict)"),
            });
        }
        rep.report(Report::Warning(&format!("{}: {why}", p.display())));
    }
    Ok(())
}

/// Runs extraction as configured, reporting choices, progress, warnings and checkpoints to `rep`:
/// scan the folder, return at once on an unchanged rerun, open the model, run the pending images
/// into the journal, then write the HDF5 cache.
pub fn extract(cfg: &ExtractConfig, rep: &dyn Reporter) -> Result<ExtractSummary> {
    // Refused before any work: the cache onto the model or inside the photo folder, or over a file
    // that is not a feature cache.
    let out = output(cfg);
    out.check()?;
    if let Some(layer) = &cfg.layer {
        return extract(&cut_first(cfg, layer, rep)?, rep);
    }
    if let Some(q) = &cfg.int8 {
        let mut cfg = cfg.clone();
        cfg.model = int8_model(&cfg, q, rep)?;
        cfg.int8 = None;
        return extract(&cfg, rep);
    }
    let t0 = Instant::now();
    if cfg.batch == 0 {
        return Err(Error::invalid("batch", "must be at least 1, got 0"));
    }
    crate::util::limits::check("batch", cfg.batch, 1, crate::util::limits::MAX_BATCH)?;
    crate::util::limits::check("copies", cfg.copies, 0, crate::util::limits::MAX_COPIES)?;
    let (ds, table_sha) = match (&cfg.subset, &cfg.labels) {
        (Some(ds), _) => (ds.clone(), None),
        (None, Some(t)) => {
            if crate::data::remote::is_url_path(&cfg.data) {
                return Err(Error::invalid(
                    "labels",
                    "a label table names local files: give a local image folder",
                ));
            }
            let (ds, sha) = crate::data::labels::scan_table(&cfg.data, t)?;
            (ds, Some(sha))
        }
        (None, None) => (Dataset::scan_any(&cfg.data)?, None),
    };
    scan_warnings(cfg, &ds, rep)?;
    let model_sha = crate::onnx::model_sha256(&cfg.model)?;
    let fp = fingerprint(cfg, &model_sha, &ds, table_sha.as_deref())?;
    if !cfg.force {
        // Under --strict a cache that skipped images is no answer: they are tried again.
        if let Some(hit) =
            cache_hit(cfg, &fp, &ds, t0).filter(|h| !cfg.strict || h.skipped.is_empty())
        {
            return Ok(hit);
        }
    }

    let mut model = BaseModel::open(&cfg.model, &cfg.runtime, cfg.layout)?;
    model.info.float_input("to extract features with")?;
    let tokens = model.resolve_tokens(cfg.tokens)?;
    model.set_tokens(tokens);
    let resolved = resolve_preprocess(&model.info, &cfg.overrides)?;
    let pre = resolved.preprocess;
    report_choices(rep, &model, &pre, &resolved.sources, &ds);
    let index = Index::new(cfg, &ds)?;

    let _lock = cache::OutputLock::acquire(&cfg.out)?;
    let jpath = cache::journal_path(&cfg.out);
    let (mut journal, resumed) = open_journal(&jpath, &fp, index.paths.len(), cfg.strict, rep)?;
    let pending: Vec<usize> = (0..index.paths.len())
        .filter(|&i| journal.status[i] == Status::Pending)
        .collect();
    let t_run = Instant::now();
    rep.report(Report::Start {
        task: "extract",
        total: index.paths.len() as u64,
        done: resumed as u64,
    });
    for (i, reason) in &journal.failures {
        rep.report(Report::Warning(&format!(
            "{}: skipped earlier: {reason}",
            index.paths[*i].display()
        )));
    }
    let run = Run {
        cfg,
        pre: &pre,
        index: &index,
        remote: ds.remote.as_ref(),
    };
    let extracted_now = run_pipeline(&run, &mut model, &pending, &mut journal, rep)?;
    rep.report(Report::Finish);
    let seconds = t_run.elapsed().as_secs_f64();

    let meta = cache_meta(cfg, &ds, &model, &pre, &journal, (model_sha, fp), &index)?;
    cache::write_hdf5(&out, &_lock, &meta, &index.splits, &mut journal)?;
    let skipped: Vec<(String, String)> = journal
        .failures
        .iter()
        .map(|(i, r)| {
            let p = &index.paths[*i];
            let rel = p.strip_prefix(&ds.root).unwrap_or(p);
            (rel.display().to_string(), r.clone())
        })
        .collect();
    drop(journal);
    std::fs::remove_file(&jpath).map_err(|e| Error::io(&jpath, e))?;
    Ok(ExtractSummary {
        out: cfg.out.clone(),
        images: index.paths.len(),
        extracted: index.paths.len() - skipped.len(),
        extracted_now,
        skipped,
        seconds,
        cache_hit: false,
        resumed,
        file_bytes: std::fs::metadata(&cfg.out).map(|m| m.len()).unwrap_or(0),
        device: model.device,
        scan_warnings: ds.warnings.len(),
    })
}

/// Every image of every split in one global index (the mirrored copies of `train` last, with
/// `--augment flip`), and each split's rows of it.
struct Index {
    paths: Vec<PathBuf>,
    /// Each image's path relative to the dataset root (its object key when the data is remote).
    keys: Vec<String>,
    /// Whether each image is mirrored before it goes in.
    flip: Vec<bool>,
    /// Each image's augmentation (empty when nothing is augmented).
    augment: Vec<Option<crate::data::augment::AugParams>>,
    splits: Vec<SplitRows>,
}

impl Index {
    fn new(cfg: &ExtractConfig, ds: &Dataset) -> Result<Index> {
        let mut index = Index {
            paths: Vec::with_capacity(ds.len()),
            keys: Vec::with_capacity(ds.len()),
            flip: Vec::with_capacity(ds.len()),
            augment: Vec::new(),
            splits: Vec::new(),
        };
        for split in &ds.splits {
            index.add(&split.name, &split.items, &ds.root, false);
        }
        if cfg.augment_flip {
            let Some(train) = ds.splits.iter().find(|s| s.name == "train") else {
                return Err(Error::dataset(
                    &cfg.data,
                    "flip augmentation needs a train split",
                ));
            };
            index.add(FLIP_SPLIT, &train.items, &ds.root, true);
        }
        if cfg.tta_flip {
            for split in ds.splits.iter().filter(|s| s.name != "train") {
                index.add(&flip_split(&split.name), &split.items, &ds.root, true);
            }
        }
        if cfg.copies > 0 {
            let Some(train) = ds.splits.iter().find(|s| s.name == "train") else {
                return Err(Error::dataset(
                    &cfg.data,
                    "augmented copies need a train split",
                ));
            };
            index.augment.resize(index.paths.len(), None);
            let mut rows = Vec::with_capacity(cfg.copies * train.items.len());
            let mut tags = Vec::new();
            for copy in 0..cfg.copies {
                for (i, item) in train.items.iter().enumerate() {
                    rows.push((index.paths.len(), item.label, item.rel_path.clone()));
                    tags.push(item.tags.clone());
                    index.paths.push(ds.root.join(item.path()));
                    index.keys.push(item.rel_path.clone());
                    index.flip.push(false);
                    index
                        .augment
                        .push(Some(cfg.augment.draw(cfg.augment_seed, i, copy)));
                }
            }
            index.splits.push(SplitRows {
                name: AUG_SPLIT.into(),
                items: rows,
                tags,
            });
        }
        Ok(index)
    }

    fn add(&mut self, name: &str, items: &[crate::data::scan::Item], root: &Path, flip: bool) {
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            rows.push((self.paths.len(), item.label, item.rel_path.clone()));
            self.paths.push(root.join(item.path()));
            self.keys.push(item.rel_path.clone());
            self.flip.push(flip);
        }
        self.splits.push(SplitRows {
            name: name.into(),
            items: rows,
            tags: items.iter().map(|i| i.tags.clone()).collect(),
        });
    }
}

/// Opens (or continues) the journal, saying what happened to an earlier one.
fn open_journal(
    jpath: &Path,
    fp: &str,
    total: usize,
    strict: bool,
    rep: &dyn Reporter,
) -> Result<(Journal, usize)> {
    let (mut journal, mut resumed) = Journal::open(jpath, fp, total)?;
    if journal.older_format {
        rep.report(Report::Notice(&format!(
            "{} was written by an earlier release in another format; starting over",
            jpath.display()
        )));
    } else if journal.replaced_other_run {
        rep.report(Report::Notice(&format!(
            "{} belongs to a different run (model, data or options changed); starting over",
            jpath.display()
        )));
    }
    if strict {
        // --strict tries the images an earlier run skipped again, and stops at the first that fails.
        for (i, _) in std::mem::take(&mut journal.failures) {
            journal.status[i] = Status::Pending;
            resumed = resumed.saturating_sub(1);
        }
    }
    if resumed > 0 {
        rep.report(Report::Detail(&format!(
            "resuming: {resumed} of {total} images already in {}",
            jpath.display()
        )));
    }
    Ok((journal, resumed))
}

/// What the cache records about how its features were made.
fn cache_meta(
    cfg: &ExtractConfig,
    ds: &Dataset,
    model: &BaseModel,
    pre: &preprocess::Preprocess,
    journal: &Journal,
    (model_sha256, fingerprint): (String, String),
    index: &Index,
) -> Result<CacheMeta> {
    let Some(feature_shape) = journal.feature_shape.clone() else {
        return Err(Error::dataset(
            &cfg.data,
            format!(
                "no image could be read ({} failed); nothing to cache",
                journal.failures.len()
            ),
        ));
    };
    // The float32 model an int8 or fp16 base was made from (recorded by quantize and convert).
    let source_sha256 = [
        crate::onnx::QUANT_SOURCE_SHA256,
        crate::onnx::FP16_SOURCE_SHA256,
    ]
    .iter()
    .find_map(|k| model.info.metadata.get(*k).cloned())
    .unwrap_or_else(|| model_sha256.clone());
    Ok(CacheMeta {
        classes: ds.classes.clone(),
        model_file: cfg
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_sha256,
        input_size: pre.size,
        layout: pre.layout.to_string(),
        preprocess: pre.describe(),
        color_order: pre.normalize.color.to_string(),
        mean: pre.normalize.mean,
        std: pre.normalize.std,
        resize: pre.resize.to_string(),
        interpolation: pre.interpolation.to_string(),
        decode: pre.decode.to_string(),
        precision: model
            .info
            .metadata
            .get("headstart_precision")
            .cloned()
            .unwrap_or_else(|| "fp32".into()),
        source_sha256,
        output_name: model.info.output_name.clone(),
        feature_shape,
        dtype: cfg.dtype,
        headstart_version: env!("CARGO_PKG_VERSION").into(),
        fingerprint,
        data_root: data_root(&cfg.data),
        splits: index.splits.iter().map(|s| s.name.clone()).collect(),
        multi_label: ds.multi_label,
        tokens: model.tokens(),
    })
}

/// Reports the model, device, preprocessing (and where each part came from) and the data.
fn report_choices(
    rep: &dyn Reporter,
    model: &BaseModel,
    pre: &preprocess::Preprocess,
    sources: &[String],
    ds: &Dataset,
) {
    if let Some(why) = &model.fallback {
        rep.report(Report::Notice(why));
    }
    let info = &model.info;
    rep.report(Report::Detail(&format!(
        "model: {} ({})",
        info.path.display(),
        info.describe()
    )));
    rep.report(Report::Detail(&format!("device: {:?}", model.device)));
    if model.tokens().pools() {
        rep.report(Report::Detail(&format!(
            "tokens: {} pooled per image",
            model.tokens().describe()
        )));
    }
    rep.report(Report::Detail(&format!(
        "preprocess: {}  [{}]",
        pre.describe(),
        sources.join("; ")
    )));
    let counts: Vec<String> = ds
        .splits
        .iter()
        .map(|s| format!("{} {}", s.name, s.items.len()))
        .collect();
    rep.report(Report::Detail(&format!(
        "data: {} ({} classes: {}; {})",
        ds.root.display(),
        ds.classes.len(),
        ds.classes.join(", "),
        counts.join(", ")
    )));
}

/// What one extraction runs: the settings, the resolved preprocessing, the images, and the object
/// store they come from when remote.
struct Run<'a> {
    cfg: &'a ExtractConfig,
    pre: &'a preprocess::Preprocess,
    index: &'a Index,
    remote: Option<&'a RemoteSource>,
}

/// Decodes `pending` images on worker threads and runs them through the model in batches, appending
/// every finished batch to the journal. Returns how many images were extracted.
fn run_pipeline(
    run: &Run,
    model: &mut BaseModel,
    pending: &[usize],
    journal: &mut Journal,
    rep: &dyn Reporter,
) -> Result<usize> {
    let (cfg, index) = (run.cfg, run.index);
    let prefetch = match run.remote {
        Some(r) => Some(Prefetch::new(r.remote.clone(), index.keys.clone())?),
        None => None,
    };
    let pipeline = Pipeline {
        pre: run.pre,
        input: InputKind::F32,
        batch: cfg.batch,
        decode_threads: cfg.decode_threads,
        paths: &index.paths,
        flip: &index.flip,
        augment: &index.augment,
        prefetch: prefetch.as_ref(),
    };
    let index_paths = &index.paths;
    let (mut done, mut batches) = (0usize, 0usize);
    pipeline.run(model, pending, &mut |event| {
        match event {
            Event::Batch(b) => {
                for (index, row) in b.rows() {
                    // The model's fault, said as such (it was read back as a damaged journal).
                    // Stored in float16, a value past its 65504 would be infinite.
                    let f16 = cfg.dtype == crate::cache::Dtype::F16;
                    if let Some(v) = row.iter().find(|v| f16 && v.is_finite() && v.abs() > 65504.0) {
                        return Err(Error::model(
                            &cfg.model,
                            format!(
                                "gave {v} among the features of {}, past float16's 65504: extract with --dtype f32",
                                index_paths[index].display()
                            ),
                        ));
                    }
                    if let Some(v) = row.iter().find(|v| !v.is_finite()) {
                        return Err(Error::model(
                            &cfg.model,
                            format!(
                                "gave {v} among the features of {}: the model's output must be finite",
                                index_paths[index].display()
                            ),
                        ));
                    }
                    journal.append_done(index, b.shape, row)?;
                }
                journal.flush()?;
                done += b.indices.len();
                batches += 1;
                rep.report(Report::Advance(b.indices.len() as u64));
                rep.report(Report::Checkpoint {
                    task: "extract",
                    count: batches,
                });
                if cfg
                    .cancel
                    .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                {
                    return Err(Error::Interrupted(format!(
                        "stopped on request after {done} images; they are kept in {} and the same command continues from there",
                        journal.path().display()
                    )));
                }
            }
            Event::Failed { index, reason } => {
                journal.append_failed(index, &reason)?;
                journal.flush()?;
                rep.report(Report::Advance(1));
                if cfg.strict {
                    // `reason` says what failed ("cannot decode image: ..."; a read error).
                    return Err(Error::Dataset {
                        path: index_paths[index].clone(),
                        msg: format!(
                            "{reason} (--strict; {done} finished images are kept in {})",
                            journal.path().display()
                        ),
                    });
                }
                rep.report(Report::Warning(&format!(
                    "{}: skipped: {reason}",
                    index_paths[index].display()
                )));
            }
        }
        Ok(())
    })
}
