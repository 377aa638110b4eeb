//! Image folders: one folder per class (`DIR/cat/*.jpg`), or split folders holding class folders
//! (`DIR/train/cat`, `DIR/test/cat`, optional `DIR/val/cat`). Classes are sorted by name, as Keras infers
//! them; every split must have the same classes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::remote::{self, Remote};
use crate::error::{Error, Result};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "jpe", "jfif", "png", "bmp", "gif", "webp"];
/// Folder names recognised as splits, in the order they are stored.
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];
/// Split name used when DIR holds class folders directly.
pub const DEFAULT_SPLIT: &str = "train";

/// One image: its path relative to the dataset root and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The path as lossless text ([`crate::util::paths`]); [`Item::path`] maps it back.
    pub rel_path: String,
    /// The class (a multi-label item's first tag).
    pub label: u32,
    /// A multi-label item's classes, sorted; empty in a single-label dataset.
    pub tags: Vec<u32>,
}

impl Item {
    /// The file, relative to the dataset root.
    pub fn path(&self) -> PathBuf {
        crate::util::paths::from_text(&self.rel_path)
    }
}

#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    pub items: Vec<Item>,
}

/// Entries passed over while walking folders: (path, why).
pub type PassedOver = Vec<(PathBuf, String)>;

/// A scanned dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub splits: Vec<Split>,
    /// Entries passed over while scanning (path, why): symlink loops, unreadable entries, empty
    /// class folders.
    pub warnings: PassedOver,
    /// Set when `root` is an object-storage URL: where the images are read from.
    pub remote: Option<RemoteSource>,
    /// Each image has a set of classes ([`Item::tags`]), from a label table with tags.
    pub multi_label: bool,
}

/// A dataset's object store, and each listed image's size and version (key -> "size|etag"), which
/// stand in for a file's size and mtime in a run's fingerprint.
#[derive(Debug, Clone)]
pub struct RemoteSource {
    pub remote: Arc<Remote>,
    pub versions: HashMap<String, String>,
}

impl Dataset {
    /// Total number of images over all splits.
    pub fn len(&self) -> usize {
        self.splits.iter().map(|s| s.items.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scans `root`.
    pub fn scan(root: &Path) -> Result<Dataset> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::dataset(
                root,
                "not a directory (expected one folder per class)",
            ));
        }
        let dirs = subdirs(root)?;
        let split_dirs: Vec<&String> = dirs.iter().filter(|d| is_split_name(d)).collect();
        let mut splits = Vec::new();
        let mut warnings = Vec::new();
        let classes;
        if split_dirs.is_empty() {
            classes = dirs.clone();
            splits.push(scan_split(
                root,
                root,
                DEFAULT_SPLIT,
                &classes,
                &mut warnings,
            )?);
        } else {
            if let Some(other) = dirs.iter().find(|d| !is_split_name(d)) {
                return Err(beside_splits(root, other, &split_dirs));
            }
            let ordered = ordered_splits(&split_dirs);
            let first = &ordered[0];
            classes = subdirs(&root.join(first))?;
            for name in &ordered {
                let dir = root.join(name);
                let these = subdirs(&dir)?;
                if these != classes {
                    return Err(classes_differ(&dir, (first, &classes), (name, &these)));
                }
                splits.push(scan_split(
                    root,
                    &dir,
                    canonical_split(name),
                    &classes,
                    &mut warnings,
                )?);
            }
        }
        if classes.is_empty() {
            return Err(Error::dataset(
                root,
                "no class folders found (expected e.g. DIR/cat/*.jpg or DIR/train/cat/*.jpg)",
            ));
        }
        let ds = Dataset {
            root: root.to_path_buf(),
            classes,
            splits,
            warnings,
            remote: None,
            multi_label: false,
        };
        ds.check_found()
    }

    /// Scans `data`: a local folder, or an object-storage URL (`s3://bucket/prefix`, ...; see
    /// [`remote`]) listed with the same layout rules.
    pub fn scan_any(data: &Path) -> Result<Dataset> {
        match data.to_str() {
            Some(url) if remote::is_url(url) => Dataset::list_remote(url),
            _ => Dataset::scan(data),
        }
    }

    /// Lists the images below an object-storage URL (same layout rules as [`Dataset::scan`]).
    pub fn list_remote(url: &str) -> Result<Dataset> {
        let remote = Remote::open(url)?;
        let mut keys = Vec::new();
        let mut versions = HashMap::new();
        remote.list("", &mut |l| {
            if is_image_file(Path::new(&l.rel)) && !l.rel.split('/').any(is_hidden) {
                versions.insert(l.rel.clone(), format!("{}|{}", l.size, l.version));
                keys.push(l.rel);
            }
            Ok(())
        })?;
        let mut ds = Dataset::from_keys(PathBuf::from(remote.url()), keys)?;
        ds.remote = Some(RemoteSource { remote, versions });
        Ok(ds)
    }

    /// A dataset from image keys relative to `root` (`train/cat/1.jpg` or `cat/1.jpg`, `/`
    /// separated), laid out and ordered as [`Dataset::scan`] does a folder. Keys directly at the
    /// top, or directly in a split folder, are not images of any class and are left out.
    pub fn from_keys(root: PathBuf, keys: Vec<String>) -> Result<Dataset> {
        let parts: Vec<Vec<&str>> = keys.iter().map(|k| k.split('/').collect()).collect();
        let tops: BTreeSet<&str> = parts
            .iter()
            .filter(|p| p.len() >= 2)
            .map(|p| p[0])
            .collect();
        let split_dirs: Vec<String> = tops
            .iter()
            .filter(|d| is_split_name(d))
            .map(|d| d.to_string())
            .collect();
        let mut splits = Vec::new();
        let classes: Vec<String>;
        if split_dirs.is_empty() {
            classes = tops.iter().map(|s| s.to_string()).collect();
            splits.push(split_from_keys(&parts, None, DEFAULT_SPLIT, &classes));
        } else {
            let refs: Vec<&String> = split_dirs.iter().collect();
            if let Some(other) = tops.iter().find(|d| !is_split_name(d)) {
                return Err(beside_splits(&root, other, &refs));
            }
            let ordered = ordered_splits(&refs);
            let classes_of = |split: &str| -> Vec<String> {
                let set: BTreeSet<&str> = parts
                    .iter()
                    .filter(|p| p.len() >= 3 && p[0] == split)
                    .map(|p| p[1])
                    .collect();
                set.into_iter().map(str::to_string).collect()
            };
            let first = &ordered[0];
            classes = classes_of(first);
            for name in &ordered {
                let these = classes_of(name);
                if these != classes {
                    let dir = root.join(name);
                    return Err(classes_differ(&dir, (first, &classes), (name, &these)));
                }
                splits.push(split_from_keys(
                    &parts,
                    Some(name),
                    canonical_split(name),
                    &classes,
                ));
            }
        }
        if classes.is_empty() {
            return Err(Error::dataset(
                &root,
                "no class folders found (expected e.g. DIR/cat/*.jpg or DIR/train/cat/*.jpg)",
            ));
        }
        let ds = Dataset {
            root,
            classes,
            splits,
            warnings: Vec::new(),
            remote: None,
            multi_label: false,
        };
        ds.check_found()
    }

    /// `self`, or the error for a dataset without images.
    fn check_found(self) -> Result<Dataset> {
        let (ds, root) = (&self, &self.root);
        if ds.is_empty() {
            return Err(Error::dataset(
                root,
                format!(
                    "no images found (extensions: {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        Ok(self)
    }
}

/// The split `name` of a key listing: keys under `dir/` (or at the top when `dir` is `None`),
/// class by class, each class's keys in key order (byte by byte, the order stores list them in;
/// a streamed plan keeps it too).
fn split_from_keys(
    parts: &[Vec<&str>],
    dir: Option<&str>,
    name: &str,
    classes: &[String],
) -> Split {
    let skip = usize::from(dir.is_some());
    let mut rows: Vec<(u32, String)> = parts
        .iter()
        .filter(|p| p.len() >= 2 + skip && dir.is_none_or(|d| p[0] == d))
        .filter_map(|p| {
            let label = classes.iter().position(|c| c == p[skip])?;
            Some((label as u32, p.join("/")))
        })
        .collect();
    rows.sort();
    Split {
        name: name.to_string(),
        items: rows
            .into_iter()
            .map(|(label, rel_path)| Item {
                rel_path,
                label,
                tags: vec![],
            })
            .collect(),
    }
}

/// The error for a folder `other` beside the split folders `split_dirs` of `root`.
pub(crate) fn beside_splits(root: &Path, other: &str, split_dirs: &[&String]) -> Error {
    Error::dataset(
        &root.join(other),
        format!(
            "unexpected folder beside the split folders {}: put class folders inside {}",
            join(split_dirs),
            SPLIT_NAMES.join("/")
        ),
    )
}

/// The error for split `name` (folder `dir`) whose classes `these` differ from split `first`'s.
pub(crate) fn classes_differ(
    dir: &Path,
    (first, classes): (&str, &[String]),
    (name, these): (&str, &[String]),
) -> Error {
    Error::dataset(
        dir,
        format!(
            "classes differ between splits: {first} has [{}], {name} has [{}]",
            classes.join(", "),
            these.join(", ")
        ),
    )
}

pub(crate) fn is_split_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "train" | "test" | "val" | "valid" | "validation"
    )
}

pub(crate) fn canonical_split(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "train" => "train",
        "test" => "test",
        _ => "val",
    }
}

pub(crate) fn ordered_splits(dirs: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = dirs.iter().map(|s| s.to_string()).collect();
    v.sort_by_key(|d| SPLIT_NAMES.iter().position(|s| *s == canonical_split(d)));
    v
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Sorted names of the visible subfolders of `dir`.
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` has an image extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Image files below `dir`, sorted, and the entries passed over with the reason. Symlinked folders
/// are followed once (a loop is reported, not walked); an entry that cannot be read is reported and
/// the walk goes on. Only `dir` itself must be readable.
pub fn image_files_checked(dir: &Path) -> Result<(Vec<PathBuf>, PassedOver)> {
    image_files_fenced(dir, None)
}

/// [`image_files_checked`] of one class folder `dir` of the dataset at `fence`: a link to a folder
/// above `dir` (a loop through its parents) or to another folder of the dataset (another class's
/// photos) is reported, not walked, so no photo is read under a label that is not its own.
pub fn image_files_fenced(dir: &Path, fence: Option<&Path>) -> Result<(Vec<PathBuf>, PassedOver)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let top = dir.canonicalize().ok();
    let fence = fence.and_then(|f| f.canonicalize().ok());
    if let Some(c) = &top {
        seen.insert(c.clone());
    }
    // Why a folder reached through a link is not walked: it holds the walk's own folder, or it
    // is another part of the dataset.
    let elsewhere = |c: &Path| -> Option<&'static str> {
        let top = top.as_deref()?;
        if top.starts_with(c) && top != c {
            return Some("skipped: a link to a folder above it (a loop through its parents)");
        }
        // Inside the dataset, only a hidden folder (never scanned as a class or a split) is no
        // other label's.
        let labelled = |f: &Path| {
            c.strip_prefix(f)
                .ok()
                .and_then(|r| r.components().next())
                .is_some_and(|first| !is_hidden(&first.as_os_str().to_string_lossy()))
        };
        match &fence {
            Some(f) if c.starts_with(f) && !c.starts_with(top) && labelled(f) => {
                Some("skipped: a link to another folder of the dataset (its photos have their own label)")
            }
            _ => None,
        }
    };
    let mut stack = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if first => return Err(Error::io(&d, e)),
            Err(e) => {
                warnings.push((d.clone(), format!("folder not read: {e}")));
                continue;
            }
        };
        first = false;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warnings.push((d.clone(), format!("entry not read: {e}")));
                    continue;
                }
            };
            if is_hidden(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    warnings.push((path, format!("skipped: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                let canonical = path.canonicalize().ok();
                if let Some(why) = canonical.as_deref().and_then(elsewhere) {
                    warnings.push((path, why.into()));
                    continue;
                }
                let fresh = canonical.is_none_or(|c| seen.insert(c));
                if fresh {
                    stack.push(path);
                } else {
                    warnings.push((path, "skipped: folder already walked (symlink loop)".into()));
                }
            } else if is_image_file(&path) {
                match crate::util::paths::special(&meta) {
                    None => out.push(path),
                    // Named as a photo but no file: said, never opened (a FIFO would block).
                    Some(what) => warnings.push((path, format!("skipped: is {what}, not a file"))),
                }
            }
        }
    }
    out.sort();
    Ok((out, warnings))
}

fn scan_split(
    root: &Path,
    dir: &Path,
    name: &str,
    classes: &[String],
    warnings: &mut PassedOver,
) -> Result<Split> {
    let mut items = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let (files, mut skipped) = image_files_fenced(&dir.join(class), Some(root))?;
        warnings.append(&mut skipped);
        if files.is_empty() {
            warnings.push((
                dir.join(class),
                format!("class '{class}' has no images in split '{name}'"),
            ));
        }
        for path in files {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            items.push(Item {
                rel_path: crate::util::paths::to_text(rel),
                label: label as u32,
                tags: vec![],
            });
        }
    }
    Ok(Split {
        name: name.to_string(),
        items,
    })
}
