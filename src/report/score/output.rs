//! Where `score`'s rows go: the CSV or JSON-lines writer, an earlier run's rows read back for
//! `--resume` (a torn last record cut off; a file this run would not have written refused), and the
//! order rows are written in (the inputs', whatever order the decode threads finish in).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

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

/// What an earlier run left in the output.
pub(super) struct Done {
    pub(super) paths: std::collections::HashSet<String>,
    /// The file held no whole record (not even a header): written anew.
    pub(super) is_empty_file: bool,
}

/// Paths already written to `out` by an earlier run; a torn last record (a kill during a write) is
/// cut off the file. A file this run would not have written (another header: another model's or
/// head's classes, another `--top-k`; not a score file at all; rows naming files outside `names`)
/// is refused, never appended to nor cut.
pub(super) fn done_paths(
    out: &Path,
    format: Format,
    probe: &Writer,
    names: &[String],
) -> Result<Done> {
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
            let mut rdr = csv::ReaderBuilder::new().from_reader(&bytes[..complete]);
            for rec in rdr.records().flatten() {
                if let Some(why) = probe.csv_row_mismatch(&rec) {
                    return Err(refuse_resume(out, &why));
                }
            }
            (done, complete)
        }
    };
    check_done_rows(out, &done, names)?;
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

/// Refuses to resume `out` when rows of it name files that are not among this run's `names`
/// (an earlier run over other inputs, another split).
fn check_done_rows(
    out: &Path,
    done: &std::collections::HashSet<String>,
    names: &[String],
) -> Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let names: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut foreign = done.iter().filter(|d| !names.contains(d.as_str()));
    match foreign.next() {
        None => Ok(()),
        Some(first) => Err(refuse_resume(
            out,
            &format!(
                "{} of its rows name files this run does not score (first: {first})",
                1 + foreign.count()
            ),
        )),
    }
}

/// The CSV line of the header `cols`, as the writer writes it.
pub(super) fn header_bytes(cols: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(cols);
    w.into_inner().unwrap_or_default()
}

pub(super) fn refuse_resume(out: &Path, why: &str) -> Error {
    Error::output(
        out,
        format!("--resume: not a score file of this run ({why}); choose another --out, or pass --force to replace it"),
    )
}

/// The `path` of every whole JSON line and the length of the whole lines (JSON escapes newlines);
/// an error when a whole line is not a record `probe` would write (other classes, or not JSON).
pub(super) fn jsonl_records(
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
pub(super) fn csv_records(
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

/// Whether `p` holds a score file: CSV whose header is `path,predicted,…,error`, as
/// the score writer writes it, or JSON lines of objects with `path` and `predicted`
/// (the rule by which `merge --scores` and `score --force` replace an existing output). A label
/// table (`path,label`) is not one.
pub fn is_score_file(p: &Path) -> bool {
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    let csv = csv_records(&b).2.is_some_and(|h| {
        h.len() >= 3
            && h[0] == "path"
            && h[1] == "predicted"
            && h.last().is_some_and(|c| c == "error")
    });
    let first = b.split(|&c| c == b'\n').next().unwrap_or_default();
    let jsonl = serde_json::from_slice::<serde_json::Value>(first).is_ok_and(|v| {
        v.get("path").is_some() && (v.get("predicted").is_some() || v.get("error").is_some())
    });
    csv || jsonl
}

/// Where rows go: CSV records (quoted as needed) or JSON lines.
pub(super) enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(Box<dyn Write>),
}

/// Formats rows for the chosen format.
pub(super) struct Writer {
    pub(super) classes: Vec<String>,
    pub(super) top_k: Option<usize>,
    pub(super) threshold: Option<f32>,
    /// Multi-label: each class's threshold; `predicted` is then the set of classes at or above
    /// theirs (CSV: space-separated; JSON: a list).
    pub(super) tags: Option<Vec<f32>>,
    pub(super) sink: Sink,
}

pub(super) fn csv_err(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

impl Writer {
    pub(super) fn new(format: Format, sink: Box<dyn Write>, classes: &[String]) -> Writer {
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
            tags: None,
            sink,
        }
    }

    pub(super) fn csv_record(&mut self, cols: &[String]) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(w) => w.write_record(cols).map_err(csv_err),
            Sink::Jsonl(_) => Ok(()),
        }
    }

    pub(super) fn json_line(&mut self, v: &serde_json::Value) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Jsonl(w) => writeln!(w, "{v}"),
            Sink::Csv(_) => Ok(()),
        }
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(w) => w.flush(),
            Sink::Jsonl(w) => w.flush(),
        }
    }

    pub(super) fn is_csv(&self) -> bool {
        matches!(self.sink, Sink::Csv(_))
    }

    pub(super) fn header(&mut self) -> std::io::Result<()> {
        let cols = self.header_columns();
        self.csv_record(&cols)
    }

    /// Why a JSON record `v` (not an error row) is not one this writer would write, if it is not.
    pub(super) fn json_mismatch(&self, v: &serde_json::Value) -> Option<String> {
        let known = |p: &serde_json::Value| {
            p.as_str()
                .is_some_and(|p| self.classes.iter().any(|c| c == p))
        };
        let ok = match (&self.tags, &v["predicted"]) {
            (Some(_), serde_json::Value::Array(set)) => set.iter().all(known),
            (None, p) => known(p),
            _ => false,
        };
        if !ok {
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
                if keys.as_ref() != Some(&want) {
                    return Some(format!(
                        "probabilities of {:?}, this run writes [{}]",
                        keys.unwrap_or_default(),
                        self.classes.join(", ")
                    ));
                }
                let p: Option<Vec<f32>> = self
                    .classes
                    .iter()
                    .map(|c| v["probabilities"][c].as_f64().map(|x| x as f32))
                    .collect();
                let Some(p) = p else {
                    return Some("probabilities that are not numbers".into());
                };
                let same = match self.predicted_set(&p) {
                    Some(set) => v["predicted"] == serde_json::json!(set),
                    None => v["predicted"] == serde_json::json!(self.classes[self.predicted(&p)]),
                };
                (!same).then(|| {
                    format!(
                        "predicted {} where this run predicts otherwise from the same probabilities (another --threshold?)",
                        v["predicted"]
                    )
                })
            }
        }
    }

    /// The CSV header this writer writes.
    pub(super) fn header_columns(&self) -> Vec<String> {
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

    pub(super) fn predicted(&self, p: &[f32]) -> usize {
        if let (Some(t), 2) = (self.threshold, p.len()) {
            return (p[1] >= t) as usize;
        }
        (0..p.len()).fold(0, |b, j| if p[j] > p[b] { j } else { b })
    }

    /// The `predicted` cell of a CSV row: the class, or a multi-label row's classes
    /// space-separated ([`set_separator`](crate::report::multilabel::set_separator)).
    fn shown(&self, p: &[f32]) -> String {
        match self.predicted_set(p) {
            Some(s) => s.join(crate::report::multilabel::set_separator(&self.classes)),
            None => self.classes[self.predicted(p)].clone(),
        }
    }

    /// Why a whole CSV row of an earlier run (`path, predicted, p_…, error`) does not predict
    /// what this run predicts from its probabilities (another `--threshold`, another head's
    /// thresholds), if it does not. Rows of `--top-k` and error rows hold too little to tell.
    pub(super) fn csv_row_mismatch(&self, rec: &csv::StringRecord) -> Option<String> {
        let n = self.classes.len();
        if self.top_k.is_some() || rec.get(n + 2).is_some_and(|e| !e.is_empty()) {
            return None;
        }
        let p: Option<Vec<f32>> = (2..n + 2)
            .map(|j| rec.get(j).and_then(|v| v.parse().ok()))
            .collect();
        let Some(p) = p else {
            return Some("a row's probabilities are not numbers".into());
        };
        let want = self.shown(&p);
        (rec.get(1) != Some(want.as_str())).then(|| {
            format!(
                "row {:?} predicts '{}' where this run predicts '{want}' from the same probabilities (another --threshold?)",
                rec.get(0).unwrap_or_default(),
                rec.get(1).unwrap_or_default()
            )
        })
    }

    /// A multi-label row's predicted classes, in class order.
    fn predicted_set(&self, p: &[f32]) -> Option<Vec<&str>> {
        let t = self.tags.as_ref()?;
        Some(
            (0..p.len())
                .filter(|&j| p[j] >= t[j])
                .map(|j| self.classes[j].as_str())
                .collect(),
        )
    }

    pub(super) fn row(&mut self, path: &str, p: &[f32]) -> std::io::Result<()> {
        let set = self.predicted_set(p);
        let pred = match &set {
            Some(s) => serde_json::json!(s),
            None => serde_json::json!(self.classes[self.predicted(p)]),
        };
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let k = self.top_k.unwrap_or(p.len()).min(p.len());
        if !self.is_csv() {
            let v = match self.top_k {
                Some(_) => serde_json::json!({
                    "path": path,
                    "predicted": pred,
                    "top": order[..k].iter().map(|&j| serde_json::json!([self.classes[j], p[j]])).collect::<Vec<_>>(),
                }),
                None => {
                    let probs: serde_json::Map<String, serde_json::Value> = self
                        .classes
                        .iter()
                        .zip(p)
                        .map(|(c, &v)| (c.clone(), serde_json::json!(v)))
                        .collect();
                    serde_json::json!({"path": path, "predicted": pred, "probabilities": probs})
                }
            };
            return self.json_line(&v);
        }
        let mut cols = vec![path.to_string(), self.shown(p)];
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

    pub(super) fn error(&mut self, path: &str, reason: &str) -> std::io::Result<()> {
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

/// Results held until every image before them in input order has one, so rows are written in the
/// order of the inputs (decode threads finish out of order).
pub(super) struct InOrder {
    /// The images still to write, in input order.
    pub(super) queue: std::collections::VecDeque<usize>,
    pub(super) ready: std::collections::HashMap<usize, std::result::Result<Vec<f32>, String>>,
}

impl InOrder {
    pub(super) fn new(order: impl Iterator<Item = usize>) -> InOrder {
        InOrder {
            queue: order.collect(),
            ready: Default::default(),
        }
    }

    pub(super) fn put(&mut self, i: usize, r: std::result::Result<Vec<f32>, String>) {
        self.ready.insert(i, r);
    }

    /// Writes every result whose predecessors are written, and flushes.
    pub(super) fn write(&mut self, w: &mut Writer, names: &[String]) -> std::io::Result<()> {
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

    pub(super) fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn left(&self) -> usize {
        self.queue.len()
    }
}
