//! `headstart split`: a seeded train / validation / test sample per class out of a raw dump (the
//! Kaggle Dogs vs Cats download: `PetImages/Cat`, `PetImages/Dog`, or the competition's flat
//! `cat.123.jpg` files), written as `OUT/{train,val,test}/<class>/` with a `MANIFEST.tsv`.
//!
//! Every chosen file is decoded first; a broken one (zero bytes, truncated, not an image) is listed
//! and replaced by the next candidate of the same seeded order, so the output holds exactly the
//! numbers asked for, all readable. The splits never overlap, and the same seed gives the same split.
//! The output is built in a temporary folder beside `OUT` and renamed into place. Photos an
//! exclusion list names (an audit.tsv) are left out by content: a file with the same bytes as a
//! listed one is never placed, whatever its name.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::decode::decode;
use crate::data::exclude::Exclusion;
use crate::data::scan::{image_files_fenced, is_image_file};
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::hash::sha256_file;
use crate::util::paths::resolve;
use crate::util::rng::Rng;

pub mod table;

/// How chosen files are placed in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlaceMode {
    /// Hard links (no extra space); a copy where the file system refuses.
    #[default]
    Link,
    Symlink,
    Copy,
}

/// Where a file's class comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelFrom {
    /// One sub-folder per class (`PetImages/Cat/1.jpg`).
    #[default]
    Folder,
    /// The file name up to its first dot (`cat.123.jpg`), all files in one folder.
    Prefix,
}

/// What to split.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub src: PathBuf,
    pub out: PathBuf,
    /// Files per class in each split.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub seed: u64,
    pub mode: PlaceMode,
    pub label_from: LabelFrom,
    /// Replace an earlier split's output at `out`.
    pub force: bool,
    /// Labels from a table instead of `label_from` ([`table`]): every labelled image is placed,
    /// a fraction of each class in val and test; multi-label tables by iterative stratification.
    pub labels: Option<crate::data::labels::LabelTable>,
    /// With `labels`: the fractions of the images in val and in test (the rest is train).
    pub fractions: (f64, f64),
    /// Photos left out ([`crate::data::exclude`]), with the folder their paths are relative to
    /// (`None`: `src`): a source file with the same bytes as a listed one is never placed.
    pub exclude: Option<(PathBuf, Option<PathBuf>)>,
}

/// The split names, in manifest order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// What a split did.
#[derive(Debug, Clone, Default)]
pub struct SplitSummary {
    /// Per class: candidates found and the files written per split.
    pub classes: BTreeMap<String, (usize, [usize; 3])>,
    /// Broken files met while sampling, with the reason (each was replaced).
    pub broken: Vec<(PathBuf, String)>,
    /// Files that are not images by their extension (e.g. `Thumbs.db`), never candidates.
    pub not_images: usize,
    /// Source files left out because an `exclude` list names them (or a copy of them).
    pub excluded: usize,
}

impl SplitConfig {
    fn wanted(&self) -> [usize; 3] {
        [self.train, self.val, self.test]
    }

    fn check(&self) -> Result<()> {
        if self.labels.is_some() {
            table::check_fractions(self.fractions)?;
        } else if self.train + self.test + self.val == 0 {
            return Err(Error::invalid(
                "train",
                "train, val and test are all 0; nothing to write",
            ));
        }
        if !self.src.is_dir() {
            return Err(Error::Config(format!(
                "split: {} is not a folder",
                self.src.display()
            )));
        }
        // Neither folder inside the other, symlinks followed: replacing the output must never
        // touch the source.
        let (src, out) = (resolve(&self.src), resolve(&self.out));
        if out.starts_with(&src) {
            return Err(Error::Config(format!(
                "split: the output {} is inside the source {}; choose another folder",
                self.out.display(),
                self.src.display()
            )));
        }
        if src.starts_with(&out) {
            return Err(Error::Config(format!(
                "split: the source {} is inside the output {}; choose another folder",
                self.src.display(),
                self.out.display()
            )));
        }
        if std::fs::symlink_metadata(&self.out).is_ok() && !self.out.is_dir() {
            return Err(Error::Output {
                path: self.out.clone(),
                msg: "exists and is not a folder: a split writes a folder; choose another --out"
                    .into(),
            });
        }
        // The tables read are inputs: replacing the output must not remove them.
        let tables = [
            self.labels.as_ref().map(|t| &t.file),
            self.exclude.as_ref().map(|(list, _)| list),
        ];
        for t in tables.into_iter().flatten() {
            if resolve(t).starts_with(&out) {
                return Err(Error::Output {
                    path: self.out.clone(),
                    msg: format!(
                        "holds {}, an input of this split: copy it elsewhere first",
                        t.display()
                    ),
                });
            }
        }
        let non_empty = std::fs::read_dir(&self.out).is_ok_and(|mut d| d.next().is_some());
        if non_empty && !self.force {
            return Err(Error::Config(format!(
                "split: {} exists and is not empty; pass --force to replace an earlier split there",
                self.out.display()
            )));
        }
        if non_empty {
            if let Some(why) = not_an_earlier_split(&self.out) {
                return Err(Error::Config(format!(
                    "split: {} is not an earlier split ({why}): refused even with --force",
                    self.out.display()
                )));
            }
        }
        Ok(())
    }
}

/// The manifest's header line.
const MANIFEST_HEADER: &str = "split\tclass\tfile\tsha256\tsource";

/// Why `dir` is not a folder an earlier `split` wrote, if it is not: one holds only the split
/// folders, `MANIFEST.tsv` (starting with its header) and `SKIPPED.tsv`.
fn not_an_earlier_split(dir: &Path) -> Option<String> {
    let manifest = dir.join("MANIFEST.tsv");
    if let Err(e) = crate::util::paths::check_regular(&manifest) {
        return Some(e.to_string());
    }
    let Ok(text) = std::fs::read(&manifest) else {
        return Some("no MANIFEST.tsv".into());
    };
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        return Some("its MANIFEST.tsv is not a split's manifest".into());
    }
    // The files the manifest lists (`split/class/file`): anything else below the split folders is
    // not the earlier split's, and replacing the folder would delete it.
    let listed: std::collections::HashMap<&str, &str> = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((*f.get(2)?, *f.get(3)?))
        })
        .collect();
    let mut copies: Vec<(PathBuf, String, &str)> = Vec::new();
    for split in SPLITS {
        let root = dir.join(split);
        if !root.is_dir() {
            continue;
        }
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                return Some(format!("{} cannot be read", d.display()));
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                let Some(sha) = listed.get(rel.as_str()) else {
                    return Some(format!(
                        "it holds {rel}, which its MANIFEST.tsv does not list"
                    ));
                };
                copies.push((p, rel, *sha));
            }
        }
    }
    // A copy that is the only name of its photo and no longer the split's (edited in place) would
    // be lost; a link, or a hard link beside its source, would not. Hashed in parallel.
    let changed = copies.par_iter().find_map_first(|(p, rel, sha)| {
        changed_copy(p, sha).map(|why| format!("it holds {rel}, {why}"))
    });
    if changed.is_some() {
        return changed;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let known = match name.as_ref() {
            "MANIFEST.tsv" | "SKIPPED.tsv" => !is_dir,
            n if table::LABEL_FILES.contains(&n) => !is_dir,
            n => SPLITS.contains(&n) && is_dir,
        };
        if !known {
            return Some(format!("it holds '{name}', which a split does not write"));
        }
    }
    None
}

/// Why the split's file `p` may not be deleted, if it may not: a regular file that is the only name
/// of its data and whose sha256 is no longer the manifest's `sha`.
fn changed_copy(p: &Path, sha: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    if !m.file_type().is_file() || m.nlink() > 1 {
        return None;
    }
    match crate::util::hash::sha256_file(p) {
        Ok(h) if h == sha => None,
        Ok(_) => Some(
            "changed since the split wrote it (its sha256 is not MANIFEST.tsv's): move it out first"
                .into(),
        ),
        Err(e) => Some(format!("which cannot be read: {e}")),
    }
}

/// The candidate files of each class, sorted by path, and how many non-image files were passed over.
fn candidates(
    cfg: &SplitConfig,
    rep: &dyn Reporter,
) -> Result<(BTreeMap<String, Vec<PathBuf>>, usize)> {
    let mut classes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut not_images = 0;
    let entries = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        Ok(v)
    };
    match cfg.label_from {
        LabelFrom::Folder => {
            for dir in entries(&cfg.src)?.into_iter().filter(|p| p.is_dir()) {
                let name = dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let (files, passed) = image_files_fenced(&dir, Some(&cfg.src))?;
                for (p, why) in passed {
                    rep.report(Event::Warning(&format!("{}: {why}", p.display())));
                }
                not_images += count_files(&dir).saturating_sub(files.len());
                if !files.is_empty() {
                    classes.insert(name, files);
                }
            }
        }
        LabelFrom::Prefix => {
            for f in entries(&cfg.src)?.into_iter().filter(|p| p.is_file()) {
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                match name.split_once('.') {
                    Some((label, _)) if is_image_file(&f) && !label.is_empty() => {
                        classes.entry(label.to_string()).or_default().push(f)
                    }
                    _ => not_images += 1,
                }
            }
        }
    }
    if classes.len() < 2 {
        let how = match cfg.label_from {
            LabelFrom::Folder => "one sub-folder of images per class (e.g. PetImages/Cat, PetImages/Dog); for files named cat.1.jpg use --label-from prefix",
            LabelFrom::Prefix => "image files named CLASS.ANYTHING.jpg (e.g. cat.1.jpg, dog.1.jpg)",
        };
        return Err(Error::Config(format!(
            "split: {} has {} class(es) ({}); expected {how}",
            cfg.src.display(),
            classes.len(),
            classes.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((classes, not_images))
}

/// Regular files below `dir` (any extension, hidden ones left out).
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                usize::from(p.is_file())
            }
        })
        .sum()
}

/// A class's own generator: the seed mixed with the class name, so adding a class changes nothing
/// for the others.
fn class_rng(seed: u64, class: &str) -> Rng {
    let h = class.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    Rng(seed ^ h)
}

/// The first `need` files of `order` that decode, and the broken ones met on the way.
fn usable(
    order: &[PathBuf],
    need: usize,
    rep: &dyn Reporter,
) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (mut good, mut broken) = (Vec::new(), Vec::new());
    let mut next = 0;
    while good.len() < need && next < order.len() {
        let window = &order[next..(next + need - good.len()).min(order.len())];
        next += window.len();
        let checked: Vec<Option<String>> = window
            .par_iter()
            .map(|p| decode(p).err().map(|e| e.to_string()))
            .collect();
        for (p, err) in window.iter().zip(checked) {
            rep.report(Event::Advance(1));
            match err {
                None => good.push(p.clone()),
                Some(e) => {
                    rep.report(Event::Warning(&format!(
                        "skipped, replaced by the next file: {e}"
                    )));
                    broken.push((p.clone(), e));
                }
            }
        }
    }
    (good, broken)
}

/// Places `src` at `dst` as `mode` says.
fn place(src: &Path, dst: &Path, mode: PlaceMode) -> Result<()> {
    let io = |e| Error::io(dst, e);
    match mode {
        PlaceMode::Copy => copy_new(src, dst).map_err(io),
        PlaceMode::Symlink => {
            let abs = src.canonicalize().map_err(|e| Error::io(src, e))?;
            #[cfg(unix)]
            return std::os::unix::fs::symlink(abs, dst).map_err(io);
            #[cfg(not(unix))]
            return copy_new(&abs, dst).map_err(io);
        }
        // A link names the file the source path leads to (a source that is a symlink is
        // followed: a hard link to a relative symlink would dangle). Where no hard link can be
        // made (another file system), the bytes are copied; never onto an existing file, whose
        // bytes may be a source's.
        PlaceMode::Link => {
            let target = src.canonicalize().map_err(|e| Error::io(src, e))?;
            match std::fs::hard_link(&target, dst) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(io(e)),
                Err(_) => copy_new(&target, dst).map_err(io),
            }
        }
    }
}

/// Copies `src` to `dst`, which must not exist yet.
fn copy_new(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut from = std::fs::File::open(src)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    std::io::copy(&mut from, &mut to).map(|_| ())
}

/// The sha256 of each file an exclusion list names (its paths below the given root, else `src`);
/// empty without a list. A listed file that is not there is refused, naming it.
fn excluded_hashes(cfg: &SplitConfig) -> Result<HashSet<String>> {
    let Some((list, root)) = &cfg.exclude else {
        return Ok(HashSet::new());
    };
    let ex = Exclusion::read(list)?;
    let root = root.as_ref().unwrap_or(&cfg.src);
    let files: Vec<PathBuf> = ex
        .files
        .iter()
        .map(|f| {
            let exact = root.join(crate::util::paths::from_text(f));
            match exact.is_file() {
                true => exact,
                // Listed in another Unicode normalisation than the folder spells it.
                false => crate::util::paths::locate(root, f).unwrap_or(exact),
            }
        })
        .collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::dataset(
            list,
            format!(
                "lists {}, which is not there; its paths must be relative to {} (give the folder they are relative to with --exclude-root)",
                missing.display(),
                root.display()
            ),
        ));
    }
    files.par_iter().map(|f| sha256_file(f)).collect()
}

/// Whether each file is kept: its bytes are not those of a listed file (all kept without a list).
pub(super) fn not_listed(files: &[PathBuf], hashes: &HashSet<String>) -> Result<Vec<bool>> {
    if hashes.is_empty() {
        return Ok(vec![true; files.len()]);
    }
    files
        .par_iter()
        .map(|f| sha256_file(f).map(|h| !hashes.contains(&h)))
        .collect()
}

/// The items whose `keep` is true, and how many were left out.
pub(super) fn kept<T>(items: Vec<T>, keep: &[bool]) -> (Vec<T>, usize) {
    let n = items.len();
    let kept: Vec<T> = items
        .into_iter()
        .zip(keep)
        .filter_map(|(it, &k)| k.then_some(it))
        .collect();
    let left = n - kept.len();
    (kept, left)
}

/// Samples, checks and writes the split; see the module documentation.
pub fn split(cfg: &SplitConfig, rep: &dyn Reporter) -> Result<SplitSummary> {
    cfg.check()?;
    let hashes = excluded_hashes(cfg)?;
    if let Some(t) = &cfg.labels {
        return table::split_table(cfg, t, &hashes, rep);
    }
    let (mut classes, not_images) = candidates(cfg, rep)?;
    let mut excluded = 0;
    for files in classes.values_mut() {
        let keep = not_listed(files, &hashes)?;
        let (k, left) = kept(std::mem::take(files), &keep);
        *files = k;
        excluded += left;
    }
    let wanted = cfg.wanted();
    let need: usize = wanted.iter().sum();
    let mut summary = SplitSummary {
        not_images,
        excluded,
        ..Default::default()
    };
    rep.report(Event::Start {
        task: "check",
        total: (need * classes.len()) as u64,
        done: 0,
    });
    let mut chosen: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (class, files) in &classes {
        let mut order = files.clone();
        class_rng(cfg.seed, class).shuffle(&mut order);
        let (good, broken) = usable(&order, need, rep);
        summary.broken.extend(broken.iter().cloned());
        if good.len() < need {
            rep.report(Event::Finish);
            return Err(Error::Config(format!(
                "split: class '{class}' has {} usable images ({} files, {} broken), and {need} were asked for ({} train + {} val + {} test); ask for fewer",
                good.len(),
                files.len(),
                broken.len(),
                wanted[0],
                wanted[1],
                wanted[2]
            )));
        }
        summary.classes.insert(class.clone(), (files.len(), wanted));
        chosen.insert(class.clone(), good);
    }
    rep.report(Event::Finish);
    let mut planned = Vec::new();
    for (class, files) in &chosen {
        let mut it = files.iter();
        for (split, n) in SPLITS.iter().zip(cfg.wanted()) {
            for src in it.by_ref().take(n) {
                // The path below the class folder (sub-folders kept: `cat/a/1.jpg` and
                // `cat/b/1.jpg` are two photos), or the file name of a prefix-labelled file.
                let below = match cfg.label_from {
                    LabelFrom::Folder => src.strip_prefix(cfg.src.join(class)).ok(),
                    LabelFrom::Prefix => None,
                };
                let below = below.map_or_else(
                    || PathBuf::from(src.file_name().unwrap_or_default()),
                    Path::to_path_buf,
                );
                planned.push(Planned {
                    split,
                    class: class.clone(),
                    src: src.clone(),
                    rel: Path::new(split).join(class).join(below),
                });
            }
        }
    }
    write(cfg, &planned, &[], &summary)?;
    Ok(summary)
}

/// One file of the output: its split, its class (a multi-label image's tags, space-separated), the
/// source file and its path below the output.
struct Planned {
    split: &'static str,
    class: String,
    src: PathBuf,
    rel: PathBuf,
}

/// Writes the planned files, the manifests and `extra` files (name, text) into a folder beside
/// `cfg.out`, then renames it there.
fn write(
    cfg: &SplitConfig,
    planned: &[Planned],
    extra: &[(&str, String)],
    summary: &SplitSummary,
) -> Result<()> {
    let name = cfg
        .out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let parent = match cfg.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".{name}.split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // The manifest is tab-separated, one line a file: a tab or line break in a field would
    // shift its columns.
    for p in planned {
        let rel = p.rel.to_string_lossy();
        let bad = [p.class.as_str(), rel.as_ref()]
            .into_iter()
            .find(|f| f.chars().any(char::is_control));
        if let Some(bad) = bad {
            return Err(Error::Dataset {
                path: p.src.clone(),
                msg: format!(
                    "its class or path {bad:?} holds a tab, line break or other control character, which MANIFEST.tsv cannot hold: rename it"
                ),
            });
        }
    }
    // A link into the folder this split replaces would point at a file the rename deletes.
    if cfg.mode == PlaceMode::Symlink {
        let out = resolve(&cfg.out);
        let into_out = planned
            .iter()
            .find(|p| p.src.canonicalize().is_ok_and(|a| a.starts_with(&out)));
        if let Some(p) = into_out {
            return Err(Error::Output {
                path: cfg.out.clone(),
                msg: format!(
                    "{} leads, through links, to a file in this folder, which the split replaces: its link would point at a deleted file; use --mode copy or link, or another --out",
                    p.src.display()
                ),
            });
        }
    }
    let result = (|| -> Result<()> {
        let mut manifest = format!("{MANIFEST_HEADER}\n");
        for p in planned {
            let dst = tmp.join(&p.rel);
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            place(&p.src, &dst, cfg.mode)?;
            let abs = p.src.canonicalize().unwrap_or_else(|_| p.src.clone());
            manifest.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                p.split,
                p.class,
                p.rel.to_string_lossy(),
                sha256_file(&p.src)?,
                abs.display()
            ));
        }
        let m = tmp.join("MANIFEST.tsv");
        std::fs::write(&m, manifest).map_err(|e| Error::io(&m, e))?;
        for (name, text) in extra {
            let f = tmp.join(name);
            std::fs::write(&f, text).map_err(|e| Error::io(&f, e))?;
        }
        if !summary.broken.is_empty() {
            let mut skipped = String::from("file\treason\n");
            for (p, why) in &summary.broken {
                skipped.push_str(&format!(
                    "{}\t{}\n",
                    p.display(),
                    why.replace(['\t', '\n'], " ")
                ));
            }
            let s = tmp.join("SKIPPED.tsv");
            std::fs::write(&s, skipped).map_err(|e| Error::io(&s, e))?;
        }
        // The earlier split is moved aside, the new one renamed in, then the old one removed: a
        // crash in between leaves one of the two whole.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        let had_old = std::fs::symlink_metadata(&cfg.out).is_ok();
        if had_old {
            std::fs::rename(&cfg.out, &old).map_err(|e| Error::io(&cfg.out, e))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &cfg.out) {
            if had_old {
                let _ = std::fs::rename(&old, &cfg.out);
            }
            return Err(Error::io(&cfg.out, e));
        }
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
