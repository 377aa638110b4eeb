//! `score`: run base + head (or one exported model) over image files and folders and stream one row
//! per image (CSV or JSON lines) as batches finish. Unreadable files get a row with the error and the
//! run goes on; `resume` skips the files an earlier run already wrote. With `features`, the rows
//! of a feature cache are scored by a head instead, no model run (`features.rs`).

use crate::util::lock::OutputLock;
use crate::util::output::{Output, Replace};
use crate::util::paths::to_text;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::preprocess::{Layout, Preprocess};
use crate::data::remote::{is_url_path, Remote};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::file::Head;
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::pipeline::{Event, InputKind, Pipeline};
use crate::infer::runtime::RuntimeConfig;
use crate::onnx::export::{CLASSES_KEY, THRESHOLDS_KEY};

mod features;
mod identity;
mod inputs;
mod output;

use identity::RunRecord;
pub use identity::{images_record, records_differ};
pub use inputs::collect_inputs;
use inputs::{prefetch_for, score_inputs, Inputs};
use output::{done_paths, Done, InOrder, Writer};
pub use output::{is_score_file, Format};

#[derive(Debug, Clone)]
pub struct ScoreConfig {
    pub model: PathBuf,
    /// The head file; `None` for a model written by `export` (it outputs probabilities).
    pub head: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    /// Output file; `None` writes CSV to stdout.
    pub out: Option<PathBuf>,
    /// Write only the `k` most probable classes per row.
    pub top_k: Option<usize>,
    /// Binary heads: predict the second class when its probability is at least this; multi-label
    /// heads: predict each class at a probability of at least this (instead of the head's own
    /// thresholds).
    pub threshold: Option<f32>,
    pub resume: bool,
    /// Replace an existing `out` (without it, an existing `out` is refused unless `resume`).
    pub force: bool,
    pub batch: usize,
    pub runtime: RuntimeConfig,
    pub decode_threads: usize,
    /// Preprocessing for an exported model without metadata (ignored with a head: the head decides).
    pub overrides: PreprocessOverrides,
    pub layout: Option<Layout>,
    /// Test-time augmentation: score each image and its left-right mirror, write the mean.
    pub tta_flip: bool,
    /// The object store `inputs` are in, when they are object URLs below its URL (set by
    /// [`crate::runs::score_shard`] for a plan of a bucket; a single URL input is listed without it).
    pub remote_root: Option<std::sync::Arc<Remote>>,
    /// Score the rows of this feature cache (or run folder's merged cache) with `head` instead of
    /// images: no model is run.
    pub features: Option<PathBuf>,
    /// With `features`: the split scored (default test, else val, else train).
    pub split: Option<String>,
    /// With `features`: accept features of another precision (int8, fp16) of the head's model.
    pub any_precision: bool,
}

impl ScoreConfig {
    pub fn new(model: impl Into<PathBuf>, head: Option<PathBuf>, inputs: Vec<PathBuf>) -> Self {
        ScoreConfig {
            model: model.into(),
            head,
            inputs,
            out: None,
            top_k: None,
            threshold: None,
            resume: false,
            force: false,
            batch: 32,
            tta_flip: false,
            runtime: RuntimeConfig::default(),
            decode_threads: 0,
            overrides: PreprocessOverrides::default(),
            layout: None,
            remote_root: None,
            features: None,
            split: None,
            any_precision: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScoreSummary {
    pub scored: usize,
    pub failed: usize,
    /// Files skipped because an earlier run wrote them (`resume`).
    pub resumed: usize,
    pub seconds: f64,
}

impl ScoreSummary {
    pub fn line(&self, out: Option<&Path>) -> String {
        let rate = if self.seconds > 0.0 {
            self.scored as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "scored {} images ({} failed{}) in {:.1} s ({rate:.1} img/s){}",
            self.scored,
            self.failed,
            if self.resumed > 0 {
                format!(", {} already in the output", self.resumed)
            } else {
                String::new()
            },
            self.seconds,
            out.map(|p| format!(" -> {}", p.display()))
                .unwrap_or_default()
        )
    }
}

/// The classifier: base + head, or an exported model.
enum Classifier {
    Head(Box<Head>),
    Exported {
        classes: Vec<String>,
        /// A multi-label export's thresholds (metadata [`THRESHOLDS_KEY`]).
        thresholds: Option<Vec<f32>>,
    },
}

impl Classifier {
    /// Class probabilities of `n` images from the model's outputs `out` (`shape` per image).
    fn probabilities(
        &self,
        model: &Path,
        shape: &[usize],
        out: &[f32],
        n: usize,
    ) -> Result<ndarray::Array2<f32>> {
        match self {
            Classifier::Head(h) => {
                if shape != h.feature_shape.as_slice() {
                    return Err(Error::model(
                        model,
                        format!(
                            "output per image {shape:?} != the head's feature shape {:?}",
                            h.feature_shape
                        ),
                    ));
                }
                h.probabilities(out.to_vec(), n)
            }
            Classifier::Exported { classes, .. } => {
                if shape != [classes.len()] {
                    return Err(Error::model(
                        model,
                        format!(
                            "output per image {shape:?} != [{}] class probabilities",
                            classes.len()
                        ),
                    ));
                }
                // An export's output is probabilities; a graph cut below them (logits, features)
                // is not one to read as such.
                if let Some(v) = out.iter().find(|v| !(-1e-3..=1.01).contains(*v)) {
                    return Err(Error::model(
                        model,
                        format!("outputs {v}, not a probability: the graph does not end in the head's probabilities (a cut export?); score its base with --head instead"),
                    ));
                }
                ndarray::Array2::from_shape_vec((n, classes.len()), out.to_vec())
                    .map_err(|e| Error::Config(e.to_string()))
            }
        }
    }

    fn classes(&self) -> &[String] {
        match self {
            Classifier::Head(h) => &h.classes,
            Classifier::Exported { classes, .. } => classes,
        }
    }

    /// A multi-label classifier's per-class thresholds, `threshold` (when given) for every class.
    fn thresholds(&self, threshold: Option<f32>) -> Option<Vec<f32>> {
        let own = match self {
            Classifier::Head(h) => h.thresholds.clone(),
            Classifier::Exported { thresholds, .. } => thresholds.clone(),
        };
        own.map(|t| threshold.map_or(t.clone(), |v| vec![v; t.len()]))
    }
}

/// The classifier for `cfg`: a head (checked against the model's sha256, with the preprocessing of
/// its cache) or an exported model (its classes and preprocessing from its metadata).
fn classifier(
    cfg: &ScoreConfig,
    model: &mut BaseModel,
) -> Result<(Classifier, Preprocess, InputKind)> {
    Ok(match &cfg.head {
        Some(hp) => {
            // The head's features fix the preprocessing: a setting given would be ignored.
            if let Some(first) = cfg.overrides.given().first() {
                return Err(Error::invalid(
                    *first,
                    format!(
                        "a head is scored with the preprocessing its features were extracted with (recorded in {}); preprocessing settings apply to exported models only",
                        hp.display()
                    ),
                ));
            }
            let head = Head::load(hp)?;
            let sha = crate::onnx::model_sha256(&cfg.model)?;
            if sha != head.base.model_sha256 {
                return Err(Error::Config(format!(
                "base models differ: head {} was trained on {} (sha256 {}), --model {} has sha256 {sha}",
                hp.display(),
                head.base.model_file,
                head.base.model_sha256,
                cfg.model.display()
            )));
            }
            let pre = head.base.preprocess().map_err(|e| Error::cache(hp, e))?;
            // The base's token output pooled as it was for the head's training features.
            model.set_tokens(head.base.tokens);
            (Classifier::Head(Box::new(head)), pre, InputKind::F32)
        }
        None => {
            let classes: Vec<String> = model
            .info
            .metadata
            .get(CLASSES_KEY)
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| {
                Error::model(
                    &cfg.model,
                    format!("no --head given and the model has no '{CLASSES_KEY}' metadata (is it a headstart export?)"),
                )
            })?;
            let thresholds = match model.info.metadata.get(THRESHOLDS_KEY) {
                None => None,
                Some(v) => Some(
                    serde_json::from_str::<Vec<f32>>(v)
                        .ok()
                        .filter(|t| t.len() == classes.len())
                        .ok_or_else(|| {
                            Error::model(
                                &cfg.model,
                                format!(
                                    "metadata '{THRESHOLDS_KEY}' is not {} thresholds: {v}",
                                    classes.len()
                                ),
                            )
                        })?,
                ),
            };
            let in_graph = model
                .info
                .metadata
                .get("headstart_preprocessing_in_graph")
                .is_some_and(|v| v == "true");
            let mut overrides = cfg.overrides.clone();
            if in_graph {
                // The graph normalises; only the resize settings matter here.
                overrides.mode = Some(crate::data::preprocess::Mode::Raw);
            }
            let pre = resolve_preprocess(&model.info, &overrides)?.preprocess;
            let input = if in_graph {
                InputKind::U8
            } else {
                InputKind::F32
            };
            (
                Classifier::Exported {
                    classes,
                    thresholds,
                },
                pre,
                input,
            )
        }
    })
}

/// The first half of each image's test-time pair, until the second arrives.
#[derive(Default)]
struct Halves {
    first: std::collections::HashMap<usize, Vec<f32>>,
    failed: std::collections::HashSet<usize>,
}

impl Halves {
    /// Adds one half of image `i`: the mean once both are in, else `None`.
    fn add(&mut self, i: usize, p: &[f32]) -> Option<Vec<f32>> {
        if self.failed.contains(&i) {
            return None;
        }
        match self.first.remove(&i) {
            Some(a) => Some(a.iter().zip(p).map(|(x, y)| (x + y) * 0.5).collect()),
            None => {
                self.first.insert(i, p.to_vec());
                None
            }
        }
    }

    /// Marks image `i` failed; true the first time (its error row is written once).
    fn fail(&mut self, i: usize) -> bool {
        self.first.remove(&i);
        self.failed.insert(i)
    }
}

/// An opened `cfg.out`: its lock, and with `force` over an existing file the temporary file the
/// rows go to until [`Opened::finish`] renames it over the old one (a failed run leaves the old
/// file whole).
struct Opened {
    _lock: Option<OutputLock>,
    staged: Option<crate::util::output::Staged>,
    /// The record of a staged file, written once the file is in place.
    record: Option<RunRecord>,
    out: PathBuf,
}

impl Opened {
    /// Flushes the rows and puts a staged file (and its record) in place.
    fn finish(self, w: &mut Writer) -> Result<()> {
        w.flush().map_err(|e| Error::io(&self.out, e))?;
        if let Some(s) = self.staged {
            s.commit()?;
        }
        match &self.record {
            Some(r) => r.write(&self.out),
            None => Ok(()),
        }
    }
}

/// The writer of `cfg.out` (CSV on stdout without it), and the names an earlier run already
/// wrote there. The output is never a scored file, the model or the head; an existing one is
/// taken only with `resume` (continued after its header is checked) or `force` (replaced, if it
/// is a score file). A resumed file whose rows name files outside `names` (this run's inputs) is
/// refused before anything of it is touched.
fn open_output(
    cfg: &ScoreConfig,
    format: Format,
    classifier: &Classifier,
    names: &[String],
    source: String,
) -> Result<(Opened, Writer, std::collections::HashSet<String>)> {
    let (classes, tags) = (classifier.classes(), classifier.thresholds(cfg.threshold));
    if let (Some(t), None, 3..) = (cfg.threshold, &tags, classes.len()) {
        return Err(Error::invalid(
            "threshold",
            format!(
                "{t} given, but it applies to two-class and multi-label heads; this one has {} classes (each row predicts its most probable class)",
                classes.len()
            ),
        ));
    }
    let mut probe = Writer::new(format, Box::new(std::io::sink()), classes);
    probe.top_k = cfg.top_k;
    probe.threshold = cfg.threshold;
    probe.tags = tags.clone();
    let stdout = || PathBuf::from("<stdout>");
    let (opened, done, appending, sink): (_, _, _, Box<dyn Write>) = match &cfg.out {
        None => (
            Opened {
                _lock: None,
                staged: None,
                record: None,
                out: stdout(),
            },
            Done {
                paths: Default::default(),
                is_empty_file: true,
            },
            false,
            Box::new(std::io::BufWriter::new(std::io::stdout())),
        ),
        Some(o) => open_file(cfg, o, format, &probe, names, source)?,
    };
    let mut w = Writer::new(format, sink, classes);
    w.top_k = cfg.top_k;
    w.threshold = cfg.threshold;
    w.tags = tags;
    if !appending {
        w.header().map_err(|e| Error::io(&opened.out, e))?;
    }
    Ok((opened, w, done.paths))
}

/// `--out` checked, locked and opened: staged when it replaces a file (or a link), appended to when
/// `--resume` continues it; with the rows already there.
fn open_file(
    cfg: &ScoreConfig,
    o: &Path,
    format: Format,
    probe: &Writer,
    names: &[String],
    source: String,
) -> Result<(Opened, Done, bool, Box<dyn Write>)> {
    let hint = if cfg.resume || cfg.force {
        "choose another --out"
    } else {
        "pass --resume to continue it or --force to replace it"
    };
    let rule = if cfg.resume {
        Replace::Always
    } else if cfg.force {
        Replace::If {
            what: "a score file (CSV headed path,predicted,…,error, or JSON lines)",
            check: &is_score_file,
        }
    } else {
        Replace::Never
    };
    let out = Output::new(o)
        .input(&cfg.model)
        .inputs(&cfg.head)
        .inputs(&cfg.features)
        .inputs(cfg.inputs.iter().filter(|p| !is_url_path(p)))
        .replace(rule)
        .hint(hint);
    out.check()?;
    // A link at --out is replaced by the file (staged), never written through: a dangling
    // one would put the scores wherever it points, among the photos scored too.
    let is_link = std::fs::symlink_metadata(o).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && cfg.resume {
        return Err(Error::output(
            o,
            "is a link: --resume continues a score file itself, not a link to one",
        ));
    }
    let lock = OutputLock::acquire(o)?;
    let record = RunRecord::of(cfg, source)?;
    // Checked before anything of the file is read or cut.
    if cfg.resume {
        record.check_resume(o)?;
    }
    let done = if cfg.resume {
        done_paths(o, format, probe, names)?
    } else {
        Done {
            paths: Default::default(),
            is_empty_file: true,
        }
    };
    let existing = std::fs::metadata(o).map_or(0, |m| m.len());
    let appending = cfg.resume && existing > 0 && !done.is_empty_file;
    let staged = if !cfg.resume && (existing > 0 || is_link) {
        Some(out.stage(&lock)?)
    } else {
        None
    };
    // A staged file's record is written when it is put in place.
    if staged.is_none() {
        record.write(o)?;
    }
    let path = staged.as_ref().map_or(o, |s| s.path());
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        // Never through a link planted after the checks.
        .custom_flags(libc::O_NOFOLLOW)
        .create(true)
        .append(appending)
        .write(true)
        .truncate(!appending)
        .open(path)
        .map_err(|e| Error::io(o, e))?;
    Ok((
        Opened {
            _lock: Some(lock),
            record: staged.is_some().then_some(record),
            staged,
            out: o.to_path_buf(),
        },
        done,
        appending,
        Box::new(std::io::BufWriter::new(f)),
    ))
}

/// Scores every input, writing one row per image as its batch finishes; progress and unreadable
/// files go to `rep`.
pub fn score(cfg: &ScoreConfig, rep: &dyn Reporter) -> Result<ScoreSummary> {
    if let Some(f) = &cfg.features {
        return features::score_features(cfg, f, rep);
    }
    if cfg.batch == 0 {
        return Err(Error::invalid("batch", "must be at least 1, got 0"));
    }
    let mut model = BaseModel::open(&cfg.model, &cfg.runtime, cfg.layout)?;
    if let Some(why) = &model.fallback {
        rep.report(Report::Notice(why));
    }
    let (classifier, pre, input) = classifier(cfg, &mut model)?;
    if let Some(k) = cfg.top_k {
        crate::util::limits::check("top_k", k, 1, classifier.classes().len())?;
    }
    let Inputs { files, remote } = score_inputs(cfg, rep)?;
    // Names as lossless text (the form caches use): two files never share a row name.
    let names: Vec<String> = files.iter().map(|p| to_text(p)).collect();
    let format = cfg.out.as_deref().map_or(Format::Csv, Format::for_path);
    let source = crate::onnx::model_sha256(&cfg.model)?;
    let (opened, mut w, done) = open_output(cfg, format, &classifier, &names, source)?;
    let pending: Vec<usize> = (0..files.len())
        .filter(|&i| !done.contains(&names[i]))
        .collect();
    let resumed = files.len() - pending.len();
    let out_path = cfg.out.clone().unwrap_or_else(|| PathBuf::from("<stdout>"));
    let io = |e: std::io::Error| Error::io(&out_path, e);
    rep.report(Report::Start {
        task: "score",
        total: files.len() as u64,
        done: resumed as u64,
    });
    let (mut scored, mut failed) = (0usize, 0usize);
    let t_run = Instant::now();
    // With TTA, image i is run twice: as index i and, mirrored, as index n + i.
    let n_files = files.len();
    let pending_files = pending.clone();
    let (paths, flip, pending) = if cfg.tta_flip {
        let paths: Vec<PathBuf> = files.iter().chain(files.iter()).cloned().collect();
        let flip: Vec<bool> = (0..2 * n_files).map(|i| i >= n_files).collect();
        let pending = pending.iter().flat_map(|&i| [i, n_files + i]).collect();
        (paths, flip, pending)
    } else {
        (files.clone(), Vec::new(), pending)
    };
    let prefetch = prefetch_for(remote, cfg.tta_flip)?;
    let mut halves = Halves::default();
    // Rows go out in input order whatever order the decode threads finish in.
    let mut order = InOrder::new(pending_files.iter().copied());
    let pipeline = Pipeline {
        pre: &pre,
        input,
        batch: cfg.batch,
        decode_threads: cfg.decode_threads,
        paths: &paths,
        flip: &flip,
        augment: &[],
        prefetch: prefetch.as_ref(),
    };
    pipeline.run(&mut model, &pending, &mut |event| {
        match event {
            Event::Batch(b) => {
                let (indices, out, shape) = (b.indices, b.out, b.shape);
                let n = indices.len();
                let probs = classifier.probabilities(&cfg.model, shape, out, n)?;
                let mut written = 0;
                for (k, &i) in indices.iter().enumerate() {
                    let row = probs.row(k);
                    let row = row.as_slice().expect("standard layout");
                    let merged = if cfg.tta_flip {
                        halves.add(i % n_files, row)
                    } else {
                        Some(row.to_vec())
                    };
                    if let Some(p) = merged {
                        order.put(i % n_files, Ok(p));
                        written += 1;
                    }
                }
                order.write(&mut w, &names).map_err(io)?;
                scored += written;
                rep.report(Report::Advance(written as u64));
            }
            Event::Failed { index, reason } => {
                let i = index % n_files;
                if halves.fail(i) {
                    rep.report(Report::Warning(&format!("{}: {reason}", names[i])));
                    order.put(i, Err(reason));
                    order.write(&mut w, &names).map_err(io)?;
                    failed += 1;
                    rep.report(Report::Advance(1));
                }
            }
        }
        Ok(())
    })?;
    order.write(&mut w, &names).map_err(io)?;
    if !order.is_done() {
        return Err(Error::Runtime(format!(
            "score: {} image(s) got no result from the pipeline",
            order.left()
        )));
    }
    opened.finish(&mut w)?;
    rep.report(Report::Finish);
    Ok(ScoreSummary {
        scored,
        failed,
        resumed,
        seconds: t_run.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
