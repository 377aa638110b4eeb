//! `score`: run base + head (or one exported model) over image files and folders and stream one row
//! per image (CSV or JSON lines) as batches finish. Unreadable files get a row with the error and the
//! run goes on; `resume` skips the files an earlier run already wrote.

use crate::util::lock::OutputLock;
use crate::util::output::{Output, Replace};
use crate::util::paths::to_text;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::preprocess::{Layout, Preprocess};
use crate::data::remote::{is_url_path, Prefetch, Remote};
use crate::data::scan::{image_files_checked, is_image_file};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::file::Head;
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::pipeline::{Event, InputKind, Pipeline};
use crate::infer::runtime::RuntimeConfig;
use crate::onnx::export::CLASSES_KEY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// By the output file's extension: `.jsonl`/`.json` -> JSON lines, anything else CSV.
    pub fn for_path(p: &Path) -> Format {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "jsonl" || e == "json" => Format::Jsonl,
            _ => Format::Csv,
        }
    }
}

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
    /// Binary heads: predict the second class when its probability is at least this.
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
    /// [`score_shard`] for a plan of a bucket; a single URL input is listed without it).
    pub remote_root: Option<std::sync::Arc<Remote>>,
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
        }
    }
}

/// The images to score: their names, and when in object storage, the store and each one's key.
struct Inputs {
    files: Vec<PathBuf>,
    remote: Option<(std::sync::Arc<Remote>, Vec<String>)>,
}

/// The downloader for images in object storage, its keys laid out as the pipeline's paths (twice
/// over with TTA: image i and its mirror n + i).
fn prefetch_for(
    remote: Option<(std::sync::Arc<Remote>, Vec<String>)>,
    tta_flip: bool,
) -> Result<Option<Prefetch>> {
    let Some((r, keys)) = remote else {
        return Ok(None);
    };
    let keys = if tta_flip {
        keys.iter().chain(keys.iter()).cloned().collect()
    } else {
        keys
    };
    Prefetch::new(r, keys).map(Some)
}

/// [`collect_inputs`], or for object storage: one URL listed for its images (sorted by key), or
/// the given object URLs below `cfg.remote_root`.
fn score_inputs(cfg: &ScoreConfig, rep: &dyn Reporter) -> Result<Inputs> {
    let urls = cfg.inputs.iter().filter(|p| is_url_path(p)).count();
    if urls == 0 {
        return collect_inputs(&cfg.inputs, rep).map(|files| Inputs {
            files,
            remote: None,
        });
    }
    if urls != cfg.inputs.len() {
        return Err(Error::Config(
            "score local files and object storage in separate runs".into(),
        ));
    }
    if let Some(root) = &cfg.remote_root {
        let prefix = format!("{}/", root.url());
        let keys = cfg
            .inputs
            .iter()
            .map(|p| {
                let text = p.to_string_lossy();
                text.strip_prefix(&prefix)
                    .map(str::to_string)
                    .ok_or_else(|| Error::Config(format!("{text}: not below {}", root.url())))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Inputs {
            files: cfg.inputs.clone(),
            remote: Some((root.clone(), keys)),
        });
    }
    let [url] = cfg.inputs.as_slice() else {
        return Err(Error::Config(
            "one object-storage URL per score run (a prefix: its images are listed)".into(),
        ));
    };
    let remote = Remote::open(&url.to_string_lossy())?;
    let mut keys = Vec::new();
    remote.list("", &mut |l| {
        if is_image_file(Path::new(&l.rel)) && !l.rel.split('/').any(|c| c.starts_with('.')) {
            keys.push(l.rel);
        }
        Ok(())
    })?;
    keys.sort();
    let files = keys
        .iter()
        .map(|k| PathBuf::from(format!("{}/{k}", remote.url())))
        .collect();
    Ok(Inputs {
        files,
        remote: Some((remote, keys)),
    })
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

/// Files to score: files as given, folders walked recursively for images, in sorted order. Entries
/// of a folder that cannot be walked are reported as warnings.
pub fn collect_inputs(inputs: &[PathBuf], rep: &dyn Reporter) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            let (mut v, warnings) = image_files_checked(p)?;
            for (w, why) in warnings {
                rep.report(Report::Warning(&format!("{}: {why}", w.display())));
            }
            v.retain(|f| is_image_file(f));
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// The classifier: base + head, or an exported model.
enum Classifier {
    Head(Box<Head>),
    Exported { classes: Vec<String> },
}

impl Classifier {
    fn classes(&self) -> &[String] {
        match self {
            Classifier::Head(h) => &h.classes,
            Classifier::Exported { classes } => classes,
        }
    }
}

/// What an earlier run left in the output.
struct Done {
    paths: std::collections::HashSet<String>,
    /// The file held no whole record (not even a header): written anew.
    is_empty_file: bool,
}

/// Paths already written to `out` by an earlier run; a torn last record (a kill during a write) is
/// cut off the file. A file this run would not have written (another header: another model's or
/// head's classes, another `--top-k`; or not a score file at all) is refused, never appended to.
fn done_paths(out: &Path, format: Format, probe: &Writer) -> Result<Done> {
    let Ok(bytes) = std::fs::read(out) else {
        return Ok(Done {
            paths: Default::default(),
            is_empty_file: true,
        });
    };
    let (done, complete) = match format {
        Format::Jsonl => jsonl_records(&bytes, probe).map_err(|why| refuse_resume(out, &why))?,
        Format::Csv => {
            let (done, complete, header) = csv_records(&bytes);
            let want = probe.header_columns();
            match header {
                Some(h) if h != want => {
                    return Err(refuse_resume(
                        out,
                        &format!(
                            "its header is '{}', this run writes '{}'",
                            h.join(","),
                            want.join(",")
                        ),
                    ))
                }
                // A header torn by a kill is written again; anything else is not ours.
                None if !header_bytes(&want).starts_with(&bytes) => {
                    return Err(refuse_resume(out, "it holds no score header"));
                }
                _ => {}
            }
            (done, complete)
        }
    };
    if complete < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .map_err(|e| Error::io(out, e))?;
        f.set_len(complete as u64).map_err(|e| Error::io(out, e))?;
    }
    Ok(Done {
        paths: done,
        is_empty_file: complete == 0,
    })
}

/// The CSV line of the header `cols`, as the writer writes it.
fn header_bytes(cols: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(cols);
    w.into_inner().unwrap_or_default()
}

fn refuse_resume(out: &Path, why: &str) -> Error {
    Error::output(
        out,
        format!("--resume: not a score file of this run ({why}); choose another --out, or pass --force to replace it"),
    )
}

/// The `path` of every whole JSON line and the length of the whole lines (JSON escapes newlines);
/// an error when a whole line is not a record `probe` would write (other classes, or not JSON).
fn jsonl_records(
    bytes: &[u8],
    probe: &Writer,
) -> std::result::Result<(std::collections::HashSet<String>, usize), String> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut done = std::collections::HashSet::new();
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("line {} is not JSON: {e}", n + 1))?;
        let Some(path) = v["path"].as_str() else {
            return Err(format!("line {} has no \"path\"", n + 1));
        };
        if v.get("error").is_none() {
            if let Some(why) = probe.json_mismatch(&v) {
                return Err(format!("line {}: {why}", n + 1));
            }
        }
        done.insert(path.to_string());
    }
    Ok((done, complete))
}

/// The first field of every whole CSV record after the header, and where the whole records end. A
/// record is whole when it has the header's number of fields, ends with its newline and closes its
/// quotes (file names may hold commas, quotes and newlines).
fn csv_records(
    bytes: &[u8],
) -> (
    std::collections::HashSet<String>,
    usize,
    Option<Vec<String>>,
) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut done = std::collections::HashSet::new();
    let (mut complete, mut width) = (0usize, None);
    let mut header = None;
    let mut rec = csv::ByteRecord::new();
    loop {
        let start = rdr.position().byte() as usize;
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
        let end = (rdr.position().byte() as usize).min(bytes.len());
        let raw = &bytes[start..end];
        let whole = raw.ends_with(b"\n")
            && raw.iter().filter(|&&b| b == b'"').count() % 2 == 0
            && width.is_none_or(|w| w == rec.len());
        if !whole {
            break;
        }
        match width {
            None => {
                width = Some(rec.len());
                header = Some(
                    rec.iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                );
            }
            Some(_) => {
                if let Some(p) = rec.get(0).and_then(|f| std::str::from_utf8(f).ok()) {
                    done.insert(p.to_string());
                }
            }
        }
        complete = end;
    }
    (done, complete, header)
}

/// Whether `p` holds a score file: CSV whose header starts with `path` (the rule by which `merge
/// --scores` replaces an existing output).
pub fn is_score_file(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| {
        csv_records(&b)
            .2
            .is_some_and(|h| h.first().is_some_and(|c| c == "path"))
    })
}

/// Where rows go: CSV records (quoted as needed) or JSON lines.
enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(Box<dyn Write>),
}

/// Formats rows for the chosen format.
struct Writer {
    classes: Vec<String>,
    top_k: Option<usize>,
    threshold: Option<f32>,
    sink: Sink,
}

fn csv_err(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

impl Writer {
    fn new(format: Format, sink: Box<dyn Write>, classes: &[String]) -> Writer {
        let sink = match format {
            Format::Csv => Sink::Csv(Box::new(
                csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(sink),
            )),
            Format::Jsonl => Sink::Jsonl(sink),
        };
        Writer {
            classes: classes.to_vec(),
            top_k: None,
            threshold: None,
            sink,
        }
    }

    fn csv_record(&mut self, cols: &[String]) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(w) => w.write_record(cols).map_err(csv_err),
            Sink::Jsonl(_) => Ok(()),
        }
    }

    fn json_line(&mut self, v: &serde_json::Value) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Jsonl(w) => writeln!(w, "{v}"),
            Sink::Csv(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(w) => w.flush(),
            Sink::Jsonl(w) => w.flush(),
        }
    }

    fn is_csv(&self) -> bool {
        matches!(self.sink, Sink::Csv(_))
    }

    fn header(&mut self) -> std::io::Result<()> {
        let cols = self.header_columns();
        self.csv_record(&cols)
    }

    /// Why a JSON record `v` (not an error row) is not one this writer would write, if it is not.
    fn json_mismatch(&self, v: &serde_json::Value) -> Option<String> {
        let pred = v["predicted"].as_str();
        if !pred.is_some_and(|p| self.classes.iter().any(|c| c == p)) {
            return Some(format!(
                "predicted {}, not one of this head's classes [{}]",
                v["predicted"],
                self.classes.join(", ")
            ));
        }
        match self.top_k {
            Some(_) => {
                (!v["top"].is_array()).then(|| "no \"top\" list (written without --top-k)".into())
            }
            None => {
                let keys: Option<Vec<&String>> =
                    v["probabilities"].as_object().map(|m| m.keys().collect());
                let mut want: Vec<&String> = self.classes.iter().collect();
                want.sort();
                (keys.as_ref() != Some(&want)).then(|| {
                    format!(
                        "probabilities of {:?}, this run writes [{}]",
                        keys.unwrap_or_default(),
                        self.classes.join(", ")
                    )
                })
            }
        }
    }

    /// The CSV header this writer writes.
    fn header_columns(&self) -> Vec<String> {
        let mut cols = vec!["path".to_string(), "predicted".to_string()];
        match self.top_k {
            Some(k) => {
                for i in 1..=k {
                    cols.push(format!("top{i}"));
                    cols.push(format!("p_top{i}"));
                }
            }
            None => cols.extend(self.classes.iter().map(|c| format!("p_{c}"))),
        }
        cols.push("error".into());
        cols
    }

    fn predicted(&self, p: &[f32]) -> usize {
        if let (Some(t), 2) = (self.threshold, p.len()) {
            return (p[1] >= t) as usize;
        }
        (0..p.len()).fold(0, |b, j| if p[j] > p[b] { j } else { b })
    }

    fn row(&mut self, path: &str, p: &[f32]) -> std::io::Result<()> {
        let pred = self.predicted(p);
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let k = self.top_k.unwrap_or(p.len()).min(p.len());
        if !self.is_csv() {
            let v = match self.top_k {
                Some(_) => serde_json::json!({
                    "path": path,
                    "predicted": self.classes[pred],
                    "top": order[..k].iter().map(|&j| serde_json::json!([self.classes[j], p[j]])).collect::<Vec<_>>(),
                }),
                None => {
                    let probs: serde_json::Map<String, serde_json::Value> = self
                        .classes
                        .iter()
                        .zip(p)
                        .map(|(c, &v)| (c.clone(), serde_json::json!(v)))
                        .collect();
                    serde_json::json!({"path": path, "predicted": self.classes[pred], "probabilities": probs})
                }
            };
            return self.json_line(&v);
        }
        let mut cols = vec![path.to_string(), self.classes[pred].clone()];
        match self.top_k {
            Some(kk) => {
                for i in 0..kk {
                    match order.get(i) {
                        Some(&j) => {
                            cols.push(self.classes[j].clone());
                            cols.push(format!("{}", p[j]));
                        }
                        None => cols.extend([String::new(), String::new()]),
                    }
                }
            }
            None => cols.extend(p.iter().map(|v| format!("{v}"))),
        }
        cols.push(String::new());
        self.csv_record(&cols)
    }

    fn error(&mut self, path: &str, reason: &str) -> std::io::Result<()> {
        if !self.is_csv() {
            return self.json_line(&serde_json::json!({"path": path, "error": reason}));
        }
        let width = match self.top_k {
            Some(k) => 2 * k,
            None => self.classes.len(),
        };
        let mut cols = vec![path.to_string(), String::new()];
        cols.extend(std::iter::repeat_n(String::new(), width));
        cols.push(reason.to_string());
        self.csv_record(&cols)
    }
}

/// The classifier for `cfg`: a head (checked against the model's sha256, with the preprocessing of
/// its cache) or an exported model (its classes and preprocessing from its metadata).
fn classifier(cfg: &ScoreConfig, model: &BaseModel) -> Result<(Classifier, Preprocess, InputKind)> {
    Ok(match &cfg.head {
        Some(hp) => {
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
            (Classifier::Exported { classes }, pre, input)
        }
    })
}

/// Results held until every image before them in input order has one, so rows are written in the
/// order of the inputs (decode threads finish out of order).
struct InOrder {
    /// The images still to write, in input order.
    queue: std::collections::VecDeque<usize>,
    ready: std::collections::HashMap<usize, std::result::Result<Vec<f32>, String>>,
}

impl InOrder {
    fn new(order: impl Iterator<Item = usize>) -> InOrder {
        InOrder {
            queue: order.collect(),
            ready: Default::default(),
        }
    }

    fn put(&mut self, i: usize, r: std::result::Result<Vec<f32>, String>) {
        self.ready.insert(i, r);
    }

    /// Writes every result whose predecessors are written, and flushes.
    fn write(&mut self, w: &mut Writer, names: &[String]) -> std::io::Result<()> {
        let mut any = false;
        while let Some(r) = self.queue.front().and_then(|i| self.ready.remove(i)) {
            let i = self.queue.pop_front().unwrap_or_default();
            match r {
                Ok(p) => w.row(&names[i], &p)?,
                Err(reason) => w.error(&names[i], &reason)?,
            }
            any = true;
        }
        if any {
            w.flush()?;
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    fn left(&self) -> usize {
        self.queue.len()
    }
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

/// Scores every input, writing one row per image as its batch finishes; progress and unreadable
/// files go to `rep`.
pub fn score(cfg: &ScoreConfig, rep: &dyn Reporter) -> Result<ScoreSummary> {
    if cfg.batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let mut model = BaseModel::open(&cfg.model, &cfg.runtime, cfg.layout)?;
    if let Some(why) = &model.fallback {
        rep.report(Report::Notice(why));
    }
    let (classifier, pre, input) = classifier(cfg, &model)?;
    if let Some(k) = cfg.top_k {
        crate::util::limits::check("top-k", k, 1, classifier.classes().len())?;
    }
    let Inputs { files, remote } = score_inputs(cfg, rep)?;
    // Names as lossless text (the form caches use): two files never share a row name.
    let names: Vec<String> = files.iter().map(|p| to_text(p)).collect();
    let format = cfg.out.as_deref().map_or(Format::Csv, Format::for_path);
    // The output: never a scored file, the model or the head; an existing one only with --resume
    // (continued after its header is checked) or --force (replaced); locked for the whole run.
    let _lock = match &cfg.out {
        Some(o) => {
            let rule = if cfg.resume || cfg.force {
                Replace::Always
            } else {
                Replace::Never
            };
            let out = Output::new(o)
                .input(&cfg.model)
                .inputs(&cfg.head)
                .inputs(cfg.inputs.iter().filter(|p| !is_url_path(p)))
                .replace(rule)
                .hint("pass --resume to continue it or --force to replace it");
            out.check()?;
            Some(OutputLock::acquire(o)?)
        }
        None => None,
    };
    let done = match (&cfg.out, cfg.resume) {
        (Some(o), true) => {
            let mut probe = Writer::new(format, Box::new(std::io::sink()), classifier.classes());
            probe.top_k = cfg.top_k;
            done_paths(o, format, &probe)?
        }
        _ => Done {
            paths: Default::default(),
            is_empty_file: true,
        },
    };
    let pending: Vec<usize> = (0..files.len())
        .filter(|&i| !done.paths.contains(&names[i]))
        .collect();
    let resumed = files.len() - pending.len();
    let existing = cfg
        .out
        .as_ref()
        .and_then(|o| std::fs::metadata(o).ok())
        .map_or(0, |m| m.len());
    let appending = cfg.resume && existing > 0 && !done.is_empty_file;
    let sink: Box<dyn Write> = match &cfg.out {
        Some(o) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(appending)
                .write(true)
                .truncate(!appending)
                .open(o)
                .map_err(|e| Error::io(o, e))?;
            Box::new(std::io::BufWriter::new(f))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let out_path = cfg.out.clone().unwrap_or_else(|| PathBuf::from("<stdout>"));
    let io = |e: std::io::Error| Error::io(&out_path, e);
    let mut w = Writer::new(format, sink, classifier.classes());
    w.top_k = cfg.top_k;
    w.threshold = cfg.threshold;
    if !appending {
        w.header().map_err(io)?;
    }
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
                let probs = match &classifier {
                    Classifier::Head(h) => {
                        if shape != h.feature_shape.as_slice() {
                            return Err(Error::model(
                                &cfg.model,
                                format!(
                                    "output per image {shape:?} != the head's feature shape {:?}",
                                    h.feature_shape
                                ),
                            ));
                        }
                        h.probabilities(out.to_vec(), n)?
                    }
                    Classifier::Exported { classes } => {
                        if shape != [classes.len()] {
                            return Err(Error::model(
                                &cfg.model,
                                format!(
                                    "output per image {shape:?} != [{}] class probabilities",
                                    classes.len()
                                ),
                            ));
                        }
                        ndarray::Array2::from_shape_vec((n, classes.len()), out.to_vec())
                            .map_err(|e| Error::Config(e.to_string()))?
                    }
                };
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
    rep.report(Report::Finish);
    Ok(ScoreSummary {
        scored,
        failed,
        resumed,
        seconds: t_run.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_csv(rows: &[&str]) -> Vec<u8> {
        let buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let classes = ["cat".to_string(), "dog".to_string()];
        let mut w = Writer::new(Format::Csv, Box::new(Shared(buf.clone())), &classes);
        w.header().unwrap();
        for (i, p) in rows.iter().enumerate() {
            if i % 3 == 2 {
                w.error(p, "cannot decode: bad \"data\",\nreally").unwrap();
            } else {
                w.row(p, &[0.25, 0.75]).unwrap();
            }
        }
        w.flush().unwrap();
        drop(w);
        let v = buf.lock().unwrap().clone();
        v
    }

    /// File names with commas, quotes and newlines are written quoted and read back whole; a file
    /// torn at any byte keeps exactly the records written before the tear.
    #[test]
    fn csv_rows_round_trip_and_torn_records_are_cut() {
        let rows = [
            "plain.jpg",
            "with,comma.jpg",
            "with \"quote\".jpg",
            "line\nbreak.jpg",
            "ünïcode 名.png",
            "\"\n,\".png",
        ];
        let bytes = write_csv(&rows);
        let (done, complete, header) = csv_records(&bytes);
        assert_eq!(complete, bytes.len());
        assert_eq!(
            header.unwrap(),
            ["path", "predicted", "p_cat", "p_dog", "error"]
        );
        let want: std::collections::HashSet<String> = rows.iter().map(|s| s.to_string()).collect();
        assert_eq!(done, want);
        // Record ends: the whole file cut after k records.
        let ends: Vec<usize> = (0..=rows.len())
            .map(|k| csv_records(&write_csv(&rows[..k])).1)
            .collect();
        for cut in 0..bytes.len() {
            let (done, complete, _) = csv_records(&bytes[..cut]);
            // Before the header is whole nothing is kept.
            let (k, end) = ends
                .iter()
                .rposition(|&e| e <= cut)
                .map_or((0, 0), |k| (k, ends[k]));
            assert_eq!(complete, end, "cut at {cut}");
            assert_eq!(done.len(), k, "cut at {cut}");
            for r in &rows[..k] {
                assert!(done.contains(*r), "cut at {cut}: {r:?} missing");
            }
        }
    }

    #[test]
    fn torn_json_lines_are_cut() {
        let text = b"{\"path\":\"a\\nb.jpg\",\"predicted\":\"cat\",\"top\":[[\"cat\",1.0]]}\n{\"path\":\"c.jpg\",\"pred";
        let classes = ["cat".to_string(), "dog".to_string()];
        let mut probe = Writer::new(Format::Jsonl, Box::new(std::io::sink()), &classes);
        probe.top_k = Some(1);
        let (done, complete) = jsonl_records(text, &probe).unwrap();
        assert_eq!(done.into_iter().collect::<Vec<_>>(), ["a\nb.jpg"]);
        assert_eq!(text[complete - 1], b'\n');
        // A whole line this run would not write (other classes) is refused, naming the line.
        let other = b"{\"path\":\"a.jpg\",\"predicted\":\"car\",\"top\":[]}\n";
        let e = jsonl_records(other, &probe).unwrap_err();
        assert!(e.contains("line 1") && e.contains("car"), "{e}");
    }
}
