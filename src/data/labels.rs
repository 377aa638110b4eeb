//! Labels from a table instead of folder names: a CSV, TSV or JSON Lines file that names each
//! image (its path below the image folder, with or without the extension, in any Unicode
//! normalisation) and its class, and optionally its split (`train`, `val`, `test`). The result is the same [`Dataset`] a folder
//! layout gives: classes sorted by name, each split class by class, files in path order, so a
//! table that says what the folders say makes the same cache.
//!
//! A bad table gets one error naming the file and the line: an id that matches no image (the count
//! and the first few), an id labelled twice differently, an id that matches two files, an empty
//! label, an unknown split, a row without the column. Images with no row are listed as warnings
//! (an error with `strict`), as is a class with a single image.
//!
//! With a label delimiter (`--label-delim ' '`, or `;`, `|`), or a JSON array of tags, each image
//! has a set of tags: the dataset is multi-label ([`Dataset::multi_label`], each [`Item::tags`]
//! sorted class indices) and the cache holds a multi-hot matrix beside the labels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::scan::{canonical_split, image_files_checked, is_split_name, Dataset, Item};
use crate::data::scan::{Split, SPLIT_NAMES};
use crate::error::{Error, Result};
use crate::util::paths::nfc;

/// A label table is read whole: larger files are refused before reading.
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// How many unknown ids, or images without a row, an error or warning names.
const SHOWN: usize = 5;

/// Where the labels come from and which columns hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTable {
    /// `.csv` (comma), `.tsv`/`.tab` (tab) or `.jsonl`/`.ndjson` (one JSON object per line).
    pub file: PathBuf,
    /// The column (header name, or JSON key) of the image ids; default: the first column (JSON:
    /// the first of `path`, `id`, `file`, `filename`, `image` present).
    pub path_col: Option<String>,
    /// The column of the labels; default: the second column (JSON: the first of `label`,
    /// `class`, `labels`, `tags` present).
    pub label_col: Option<String>,
    /// A column of split names (`train`, `val`/`valid`/`validation`, `test`); without it every
    /// row is `train`.
    pub split_col: Option<String>,
    /// Images in the folder without a row are an error, not a warning.
    pub strict: bool,
    /// Splits each label cell into tags at this character: a multi-label table. JSON arrays of
    /// tags are multi-label without it.
    pub label_delim: Option<char>,
}

impl LabelTable {
    /// A table with the default columns.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        LabelTable {
            file: file.into(),
            path_col: None,
            label_col: None,
            split_col: None,
            strict: false,
            label_delim: None,
        }
    }
}

/// One row as read: its line, the id, the label cell and the split cell.
struct Row {
    line: u64,
    id: String,
    label: Cell,
    split: Option<String>,
}

/// A label cell: one text, or (JSON) an array of tags.
enum Cell {
    Text(String),
    Tags(Vec<String>),
}

impl Cell {
    /// The row's classes, trimmed, in Unicode NFC, sorted and without repeats: the text split at
    /// `delim` when given, else the text as one class. (Two spellings of one name, NFC and the NFD
    /// a Mac writes, were two classes that print alike.)
    fn classes(&self, delim: Option<char>) -> Vec<String> {
        let mut tags: Vec<String> = match (self, delim) {
            (Cell::Text(t), Some(d)) => t.split(d).map(|x| nfc(x.trim())).collect(),
            (Cell::Text(t), None) => vec![nfc(t.trim())],
            (Cell::Tags(v), _) => v.iter().map(|x| nfc(x.trim())).collect(),
        };
        tags.retain(|t| !t.is_empty());
        tags.sort();
        tags.dedup();
        tags
    }
}

/// The dataset the table gives for the images below `images`, and the table's sha256 (for the
/// run's fingerprint).
pub fn scan_table(images: &Path, t: &LabelTable) -> Result<(Dataset, String)> {
    let meta = std::fs::metadata(images).map_err(|e| Error::io(images, e))?;
    if !meta.is_dir() {
        return Err(Error::dataset(
            images,
            "not a directory (the images of the label table)",
        ));
    }
    let (bytes, sha) = read_table(&t.file)?;
    let (files, mut warnings) = image_files_checked(images)?;
    let index = ImageIndex::new(images, &files);
    let rows = match format_of(&t.file) {
        Format::JsonLines => json_rows(&t.file, &bytes, t)?,
        Format::Delimited(d) => delimited_rows(&t.file, &bytes, d, t, &index, &mut warnings)?,
    };
    if rows.is_empty() {
        return Err(Error::dataset(
            &t.file,
            "no rows: the table labels no image",
        ));
    }
    let multi = t.label_delim.is_some() || rows.iter().any(|r| matches!(r.label, Cell::Tags(_)));
    let labelled = resolve_rows(rows, &index, images, t, &mut warnings)?;
    check_coverage(&index, &labelled, images, t, &mut warnings)?;
    Ok((dataset(images, &labelled, &t.file, multi, warnings), sha))
}

/// The table's bytes (without a spreadsheet's UTF-8 byte order mark, which is not part of the first
/// cell) and the sha256 of the file as it is; a table over [`MAX_TABLE_BYTES`] is refused unread.
pub(crate) fn read_table(file: &Path) -> Result<(Vec<u8>, String)> {
    crate::util::paths::check_regular(file)?;
    let size = std::fs::metadata(file)
        .map_err(|e| Error::io(file, e))?
        .len();
    if size > MAX_TABLE_BYTES {
        return Err(Error::dataset(
            file,
            format!("a label table of {size} bytes; at most {MAX_TABLE_BYTES} are read"),
        ));
    }
    let mut bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let sha = format!("{:x}", Sha256::digest(&bytes));
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok((bytes, sha))
}

/// `n item(s)`-style lists: the first [`SHOWN`] of `items`, then "..." when there are more.
pub(crate) fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(SHOWN).map(AsRef::as_ref).collect();
    let more = if items.len() > SHOWN { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// One labelled image: its path below the root, its class names (one, or a multi-label row's
/// tags) and split.
struct Labelled {
    rel: String,
    labels: Vec<String>,
    split: &'static str,
}

/// Each row's id resolved to its file, its label and split checked. Unknown ids are gathered and
/// said at once; a repeated row with the same label and split is a warning, with another an error.
fn resolve_rows(
    rows: Vec<Row>,
    index: &ImageIndex,
    images: &Path,
    t: &LabelTable,
    warnings: &mut crate::data::scan::PassedOver,
) -> Result<Vec<Labelled>> {
    let bad = |line: u64, msg: String| Error::dataset(&t.file, format!("line {line}: {msg}"));
    let mut unknown = Vec::new();
    let mut seen: HashMap<String, (u64, usize)> = HashMap::new();
    let mut labelled: Vec<Labelled> = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    for r in rows {
        let labels = r.label.classes(t.label_delim);
        if labels.is_empty() {
            return Err(bad(r.line, format!("'{}' has an empty label", r.id)));
        }
        // A class name is a column header and a line of reports: no line breaks or tabs.
        if let Some(l) = labels.iter().find(|l| l.chars().any(char::is_control)) {
            return Err(bad(
                r.line,
                format!(
                    "'{}' has the label {l:?}, with a line break, tab or other control character",
                    r.id
                ),
            ));
        }
        let split = match r.split.as_deref().map(str::trim) {
            None => "train",
            Some(s) if is_split_name(s) => canonical_split(s),
            Some(s) => {
                return Err(bad(
                    r.line,
                    format!(
                        "split '{s}' for '{}': expected one of {}",
                        r.id,
                        SPLIT_NAMES.join(", ")
                    ),
                ))
            }
        };
        let Some(rel) = index.resolve(&r.id, &t.file, r.line)? else {
            unknown.push(format!("'{}' (line {})", r.id, r.line));
            continue;
        };
        if let Some(&(line, at)) = seen.get(&rel) {
            let (l, s) = (&labelled[at].labels, labelled[at].split);
            if *l != labels || s != split {
                let (label, l) = (labels.join(" "), l.join(" "));
                return Err(bad(
                    r.line,
                    format!(
                        "'{}' ({rel}) is labelled '{label}' ({split}) here and '{l}' ({s}) on line {line}",
                        r.id
                    ),
                ));
            }
            repeated.push(format!("'{}' (lines {line} and {})", r.id, r.line));
            continue;
        }
        seen.insert(rel.clone(), (r.line, labelled.len()));
        labelled.push(Labelled { rel, labels, split });
    }
    same_files(&labelled, images, t)?;
    if !repeated.is_empty() {
        warnings.push((
            t.file.clone(),
            format!(
                "{} row(s) list an image again with the same label: {}",
                repeated.len(),
                first_few(&repeated)
            ),
        ));
    }
    if !unknown.is_empty() {
        return Err(Error::dataset(
            &t.file,
            format!(
                "{} id(s) match no image below {}: {}",
                unknown.len(),
                images.display(),
                first_few(&unknown)
            ),
        ));
    }
    Ok(labelled)
}

/// Two labelled paths that are one file (a link and its target, or two links) with other labels
/// or splits are refused: the same photo would be a cat in train and a dog in test.
fn same_files(labelled: &[Labelled], images: &Path, t: &LabelTable) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mut files: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, l) in labelled.iter().enumerate() {
            let path = images.join(crate::util::paths::from_text(&l.rel));
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if let Some(&j) = files.get(&(m.dev(), m.ino())) {
                let o = &labelled[j];
                if o.labels != l.labels || o.split != l.split {
                    return Err(Error::dataset(
                        &t.file,
                        format!(
                            "'{}' ({}, {}) and '{}' ({}, {}) are one file (through a link): a photo has one label and one split",
                            o.rel,
                            o.labels.join(" "),
                            o.split,
                            l.rel,
                            l.labels.join(" "),
                            l.split
                        ),
                    ));
                }
            } else {
                files.insert((m.dev(), m.ino()), i);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (labelled, images, t);
    Ok(())
}

/// Images below the root that no row labels: listed as a warning, refused with `strict`.
fn check_coverage(
    index: &ImageIndex,
    labelled: &[Labelled],
    images: &Path,
    t: &LabelTable,
    warnings: &mut crate::data::scan::PassedOver,
) -> Result<()> {
    let listed: BTreeSet<&str> = labelled.iter().map(|l| l.rel.as_str()).collect();
    let without: Vec<&str> = index
        .all
        .iter()
        .map(String::as_str)
        .filter(|f| !listed.contains(f))
        .collect();
    if without.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "{} image(s) below {} have no row in the table and are left out: {}",
        without.len(),
        images.display(),
        first_few(&without)
    );
    if t.strict {
        return Err(Error::dataset(&t.file, format!("{msg} (strict)")));
    }
    warnings.push((t.file.clone(), msg));
    Ok(())
}

/// The dataset of the labelled images: classes sorted by name, splits in their usual order, each
/// class by class with files in path order (the order a folder layout gives; multi-label rows by
/// their first tag). A class with a single image is warned of.
fn dataset(
    images: &Path,
    labelled: &[Labelled],
    table: &Path,
    multi: bool,
    mut warnings: crate::data::scan::PassedOver,
) -> Dataset {
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labelled {
        for c in &l.labels {
            *per_class.entry(c.as_str()).or_default() += 1;
        }
    }
    for (class, n) in per_class.iter().filter(|(_, n)| **n == 1) {
        warnings.push((
            table.to_path_buf(),
            format!("class '{class}' has a single image ({n}); a head learns little from it"),
        ));
    }
    let classes: Vec<String> = per_class.keys().map(|c| c.to_string()).collect();
    let mut splits = Vec::new();
    for name in SPLIT_NAMES {
        let mut items: Vec<(u32, PathBuf, &str, Vec<u32>)> = labelled
            .iter()
            .filter(|l| l.split == name)
            .map(|l| {
                let tags: Vec<u32> = l
                    .labels
                    .iter()
                    .map(|c| classes.binary_search(c).unwrap_or(0) as u32)
                    .collect();
                let path = crate::util::paths::from_text(&l.rel);
                (
                    tags[0],
                    path,
                    l.rel.as_str(),
                    if multi { tags } else { vec![] },
                )
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        items.sort();
        splits.push(Split {
            name: name.to_string(),
            items: items
                .into_iter()
                .map(|(label, _, rel, tags)| Item {
                    rel_path: rel.to_string(),
                    label,
                    tags,
                })
                .collect(),
        });
    }
    Dataset {
        root: images.to_path_buf(),
        classes,
        splits,
        warnings,
        remote: None,
        multi_label: multi,
    }
}

enum Format {
    Delimited(u8),
    JsonLines,
}

fn format_of(file: &Path) -> Format {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl" | "ndjson") => Format::JsonLines,
        Some("tsv" | "tab") => Format::Delimited(b'\t'),
        _ => Format::Delimited(b','),
    }
}

/// The images below the root by relative path, and by relative path without its extension; both
/// also under their Unicode NFC form, for ids typed in another normalisation than the file names
/// (a table written on Linux for photos copied from macOS, whose names are in NFD).
struct ImageIndex {
    all: Vec<String>,
    exact: BTreeSet<String>,
    stems: HashMap<String, Vec<String>>,
    nfc: HashMap<String, Vec<String>>,
}

impl ImageIndex {
    fn new(root: &Path, files: &[PathBuf]) -> Self {
        let all: Vec<String> = files
            .iter()
            .map(|f| crate::util::paths::to_text(f.strip_prefix(root).unwrap_or(f)))
            .collect();
        let mut stems: HashMap<String, Vec<String>> = HashMap::new();
        let mut by_nfc: HashMap<String, Vec<String>> = HashMap::new();
        for rel in &all {
            let p = crate::util::paths::from_text(rel);
            let stem = crate::util::paths::to_text(&p.with_extension(""));
            let (rel_nfc, stem_nfc) = (nfc(rel), nfc(&stem));
            by_nfc.entry(rel_nfc.clone()).or_default().push(rel.clone());
            if stem_nfc != rel_nfc {
                by_nfc.entry(stem_nfc).or_default().push(rel.clone());
            }
            stems.entry(stem).or_default().push(rel.clone());
        }
        ImageIndex {
            exact: all.iter().cloned().collect(),
            all,
            stems,
            nfc: by_nfc,
        }
    }

    /// The files `rel` names: itself, those it is the stem of, or (when neither) those whose path
    /// or stem has its NFC form.
    fn candidates(&self, rel: &str) -> &[String] {
        if let Some(one) = self.exact.get(rel) {
            return std::slice::from_ref(one);
        }
        match self.stems.get(rel) {
            Some(many) => many,
            None => self.nfc.get(&nfc(rel)).map_or(&[], Vec::as_slice),
        }
    }

    /// The image an id names: its path below the root, with or without the extension. An id
    /// that climbs out of the root, or names two files, is an error naming the line.
    fn resolve(&self, id: &str, table: &Path, line: u64) -> Result<Option<String>> {
        let id = id.trim();
        let rel = crate::util::paths::contained(id, table, &format!("line {line}"))?;
        let rel = crate::util::paths::to_text(&rel);
        match self.candidates(&rel) {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(Error::dataset(
                table,
                format!(
                    "line {line}: '{id}' matches {} files ({}); give the extension, or the name \
                     as the file spells it",
                    many.len(),
                    many.join(", ")
                ),
            )),
        }
    }

    /// Whether `id` names an image (normalised as [`ImageIndex::resolve`] does).
    fn knows(&self, id: &str) -> bool {
        let Ok(rel) = crate::util::paths::contained(id.trim(), Path::new(""), "") else {
            return false;
        };
        !self
            .candidates(&crate::util::paths::to_text(&rel))
            .is_empty()
    }
}

/// The rows of a CSV or TSV table. A first row is a header when columns are named, or when its
/// id is no image and the second row's is (a warning says so).
fn delimited_rows(
    file: &Path,
    bytes: &[u8],
    delimiter: u8,
    t: &LabelTable,
    index: &ImageIndex,
    warnings: &mut crate::data::scan::PassedOver,
) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = Vec::new();
    for r in reader.records() {
        let r = r.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::dataset(file, format!("line {line}: not readable as a table: {e}"))
        })?;
        let line = r.position().map_or(0, |p| p.line());
        if r.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        records.push((line, r));
    }
    let named = t.path_col.is_some() || t.label_col.is_some() || t.split_col.is_some();
    let header = match records.as_slice() {
        [] => false,
        _ if named => true,
        [(_, first), (_, second), ..] => {
            !index.knows(first.get(0).unwrap_or("")) && index.knows(second.get(0).unwrap_or(""))
        }
        [_] => false,
    };
    if header && !named {
        let cells: Vec<&str> = records[0].1.iter().collect();
        warnings.push((
            file.to_path_buf(),
            format!(
                "line 1 is taken as the header ({}): its first cell names no image",
                cells.join(", ")
            ),
        ));
    }
    let column =
        |name: &Option<String>, default: Option<usize>, what: &str| -> Result<Option<usize>> {
            match name {
                None => Ok(default),
                Some(n) => {
                    let head = records.first().map(|(_, r)| r.clone()).unwrap_or_default();
                    head.iter()
                        .position(|h| h.trim() == n)
                        .map(Some)
                        .ok_or_else(|| {
                            Error::dataset(
                                file,
                                format!(
                                    "no {what} column '{n}' in the header (it has: {})",
                                    head.iter().collect::<Vec<_>>().join(", ")
                                ),
                            )
                        })
                }
            }
        };
    let path_at = column(&t.path_col, Some(0), "path")?.unwrap_or(0);
    let split_at = column(&t.split_col, None, "split")?;
    // By default the first column that is neither the path's nor the split's (with `--path-col`
    // naming the second, the second was taken for both: each photo its own class).
    let free = (0..).find(|&c| c != path_at && Some(c) != split_at);
    let label_at = column(&t.label_col, free, "label")?.unwrap_or(1);
    if label_at == path_at || Some(label_at) == split_at {
        let what = if label_at == path_at { "path" } else { "split" };
        return Err(Error::dataset(
            file,
            format!(
                "the label column is also the {what} column (column {}); name another with --label-col",
                label_at + 1
            ),
        ));
    }
    let mut rows = Vec::new();
    for (line, r) in records.iter().skip(usize::from(header)) {
        let cell = |at: usize, what: &str| {
            r.get(at).map(str::to_string).ok_or_else(|| {
                Error::dataset(
                    file,
                    format!(
                        "line {line}: no {what} (column {}; the row has {})",
                        at + 1,
                        r.len()
                    ),
                )
            })
        };
        rows.push(Row {
            line: *line,
            id: cell(path_at, "path")?,
            label: Cell::Text(cell(label_at, "label")?),
            split: split_at.map(|s| cell(s, "split")).transpose()?,
        });
    }
    Ok(rows)
}

/// The rows of a JSON Lines table: one object per line, the columns its keys.
fn json_rows(file: &Path, bytes: &[u8], t: &LabelTable) -> Result<Vec<Row>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::dataset(file, format!("not UTF-8 text: {e}")))?;
    let pick = |obj: &serde_json::Map<String, serde_json::Value>,
                given: &Option<String>,
                defaults: &[&str]|
     -> Option<String> {
        match given {
            Some(k) => obj.contains_key(k).then(|| k.clone()),
            None => defaults
                .iter()
                .find(|k| obj.contains_key(**k))
                .map(|k| k.to_string()),
        }
    };
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::dataset(file, format!("line {line}: {msg}"));
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let text_of = |key: &str| -> Result<String> {
            match &obj[key] {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(bad(format!("'{key}' is {other}, not a string"))),
            }
        };
        let path_key = pick(
            obj,
            &t.path_col,
            &["path", "id", "file", "filename", "image"],
        )
        .ok_or_else(|| bad("no path key (path, id, file, filename or image; or name it)".into()))?;
        let label_key = pick(obj, &t.label_col, &["label", "class", "labels", "tags"])
            .ok_or_else(|| bad("no label key (label, class, labels or tags; or name it)".into()))?;
        let split = match &t.split_col {
            Some(k) if obj.contains_key(k) => Some(text_of(k)?),
            Some(k) => return Err(bad(format!("no split key '{k}'"))),
            None => None,
        };
        let label = match &obj[&label_key] {
            serde_json::Value::Array(tags) => Cell::Tags(
                tags.iter()
                    .map(|t| match t {
                        serde_json::Value::String(s) => Ok(s.clone()),
                        serde_json::Value::Number(n) => Ok(n.to_string()),
                        other => Err(bad(format!(
                            "a tag of '{label_key}' is {other}, not a string"
                        ))),
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => Cell::Text(text_of(&label_key)?),
        };
        rows.push(Row {
            line,
            id: text_of(&path_key)?,
            label,
            split,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
