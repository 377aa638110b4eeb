//! `score`: run base + head (or one exported model) over image files and folders and stream one row
//! per image (CSV or JSON lines) as batches finish. Unreadable files get a row with the error and the
//! run goes on; `resume` skips the files an earlier run already wrote.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::scan::{image_files, is_image_file};
use crate::error::{Error, Result};
use crate::onnx::export::CLASSES_KEY;
use crate::infer::extract::sha256_file;
use crate::head::file::Head;
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::pipeline::{Event, InputKind, Pipeline};
use crate::data::preprocess::{Layout, Preprocess};
use crate::util::progress::{Progress, ProgressMode};
use crate::infer::runtime::Device;

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
    pub batch: usize,
    pub threads: usize,
    pub decode_threads: usize,
    pub device: Device,
    pub ort_lib: Option<PathBuf>,
    pub progress: ProgressMode,
    /// Preprocessing for an exported model without metadata (ignored with a head: the head decides).
    pub overrides: PreprocessOverrides,
    pub layout: Option<Layout>,
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
            batch: 32,
            threads: 0,
            decode_threads: 0,
            device: Device::Cpu,
            ort_lib: None,
            progress: ProgressMode::Auto,
            overrides: PreprocessOverrides::default(),
            layout: None,
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

/// Files to score: files as given, folders walked recursively for images, in sorted order.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            let mut v = image_files(p)?;
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

/// Paths already written to `out` by an earlier run; a torn last line is cut off.
fn done_paths(out: &Path, format: Format) -> Result<std::collections::HashSet<String>> {
    let mut done = std::collections::HashSet::new();
    let Ok(bytes) = std::fs::read(out) else {
        return Ok(done);
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .map_err(|e| Error::io(out, e))?;
        f.set_len(complete as u64).map_err(|e| Error::io(out, e))?;
    }
    for (i, line) in bytes[..complete].lines().enumerate() {
        let line = line.map_err(|e| Error::io(out, e))?;
        let path = match format {
            Format::Jsonl => serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["path"].as_str().map(String::from)),
            Format::Csv if i == 0 => None, // header
            Format::Csv => csv_first_field(&line),
        };
        if let Some(p) = path {
            done.insert(p);
        }
    }
    Ok(done)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_first_field(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        line.split(',').next().map(String::from)
    }
}

/// Formats rows for the chosen format.
struct Writer {
    format: Format,
    classes: Vec<String>,
    top_k: Option<usize>,
    threshold: Option<f32>,
    sink: Box<dyn Write>,
}

impl Writer {
    fn header(&mut self) -> std::io::Result<()> {
        if self.format == Format::Jsonl {
            return Ok(());
        }
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
        let line: Vec<String> = cols.iter().map(|c| csv_field(c)).collect();
        writeln!(self.sink, "{}", line.join(","))
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
        match self.format {
            Format::Jsonl => {
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
                writeln!(self.sink, "{v}")
            }
            Format::Csv => {
                let mut cols = vec![csv_field(path), csv_field(&self.classes[pred])];
                match self.top_k {
                    Some(kk) => {
                        for i in 0..kk {
                            match order.get(i) {
                                Some(&j) => {
                                    cols.push(csv_field(&self.classes[j]));
                                    cols.push(format!("{}", p[j]));
                                }
                                None => cols.extend([String::new(), String::new()]),
                            }
                        }
                    }
                    None => cols.extend(p.iter().map(|v| format!("{v}"))),
                }
                cols.push(String::new());
                writeln!(self.sink, "{}", cols.join(","))
            }
        }
    }

    fn error(&mut self, path: &str, reason: &str) -> std::io::Result<()> {
        match self.format {
            Format::Jsonl => writeln!(
                self.sink,
                "{}",
                serde_json::json!({"path": path, "error": reason})
            ),
            Format::Csv => {
                let width = match self.top_k {
                    Some(k) => 2 * k,
                    None => self.classes.len(),
                };
                let mut cols = vec![csv_field(path), String::new()];
                cols.extend(std::iter::repeat_n(String::new(), width));
                cols.push(csv_field(reason));
                writeln!(self.sink, "{}", cols.join(","))
            }
        }
    }
}

/// Scores every file; rows are written and flushed batch by batch.
pub fn score(cfg: &ScoreConfig) -> Result<ScoreSummary> {
    if cfg.batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let mut model = BaseModel::open(
        &cfg.model,
        cfg.device,
        cfg.threads,
        cfg.ort_lib.as_deref(),
        cfg.layout,
    )?;
    let (classifier, pre, input): (Classifier, Preprocess, InputKind) = match &cfg.head {
        Some(hp) => {
            let head = Head::load(hp)?;
            let sha = sha256_file(&cfg.model)?;
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
    };
    let files = collect_inputs(&cfg.inputs)?;
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let format = cfg.out.as_deref().map_or(Format::Csv, Format::for_path);
    let done = match (&cfg.out, cfg.resume) {
        (Some(o), true) => done_paths(o, format)?,
        _ => Default::default(),
    };
    let pending: Vec<usize> = (0..files.len())
        .filter(|&i| !done.contains(&names[i]))
        .collect();
    let resumed = files.len() - pending.len();
    let existing = cfg
        .out
        .as_ref()
        .and_then(|o| std::fs::metadata(o).ok())
        .map_or(0, |m| m.len());
    let appending = cfg.resume && existing > 0;
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
    let mut w = Writer {
        format,
        classes: classifier.classes().to_vec(),
        top_k: cfg.top_k,
        threshold: cfg.threshold,
        sink,
    };
    if !appending {
        w.header().map_err(io)?;
    }
    let mut progress = Progress::new(cfg.progress, files.len() as u64, resumed as u64, "score");
    let (mut scored, mut failed) = (0usize, 0usize);
    let t_run = Instant::now();
    let pipeline = Pipeline {
        pre: &pre,
        input,
        batch: cfg.batch,
        decode_threads: cfg.decode_threads,
        paths: &files,
        flip: &[],
    };
    pipeline.run(&mut model, &pending, &mut |event| {
        match event {
            Event::Batch {
                indices,
                out,
                shape,
            } => {
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
                for (k, &i) in indices.iter().enumerate() {
                    let row = probs.row(k);
                    w.row(&names[i], row.as_slice().expect("standard layout"))
                        .map_err(io)?;
                }
                w.sink.flush().map_err(io)?;
                scored += n;
                progress.inc(n as u64);
            }
            Event::Failed { index, reason } => {
                progress.warn(&format!("{}: {reason}", names[index]));
                w.error(&names[index], &reason).map_err(io)?;
                w.sink.flush().map_err(io)?;
                failed += 1;
                progress.inc(1);
            }
        }
        Ok(())
    })?;
    progress.finish();
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

    #[test]
    fn csv_fields_round_trip_through_quoting() {
        for p in [
            "plain.jpg",
            "with,comma.jpg",
            "with \"quote\".jpg",
            "ünïcode 名.png",
        ] {
            let line = format!("{},cat,0.5", csv_field(p));
            assert_eq!(csv_first_field(&line).as_deref(), Some(p));
        }
    }
}
