//! Report folders (`evaluate --report`, `train-head --report`, `audit --out`), checked before any
//! work: a folder (never a file), never an input nor inside one, and never among the photos a cache
//! was extracted from: its pictures would be taken for photos by the next scan.

use std::path::{Path, PathBuf};

use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::util::paths::resolve;

/// The folders of photos behind `caches`: each cache's `data_root` where it names a local folder
/// (a relative one as given at extraction: from the current folder, or from the cache's own). A
/// path that is not a cache (a run folder, a missing file) has none.
pub fn photo_folders(caches: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for c in caches {
        if !c.is_file() {
            continue;
        }
        let Ok(cache) = FeatureCache::open(c) else {
            continue;
        };
        let root = PathBuf::from(&cache.meta.data_root);
        if root.as_os_str().is_empty() || crate::data::remote::is_url(&cache.meta.data_root) {
            continue;
        }
        let beside = c.parent().map(|d| d.join(&root));
        for r in [Some(root.clone()), beside].into_iter().flatten() {
            if r.is_dir() && !out.contains(&resolve(&r)) {
                out.push(resolve(&r));
            }
        }
    }
    out
}

/// Refuses a report folder `dir` that exists and is not a folder, that holds a `report.md` of
/// something else, or that is one of `inputs`, or
/// lies inside one of them or inside the photos behind `caches` ([`photo_folders`]).
pub fn check_folder(dir: &Path, inputs: &[&Path], caches: &[&Path]) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() && !dir.is_dir() {
        return Err(Error::output(
            dir,
            "exists and is not a folder: a report is a folder; choose another",
        ));
    }
    let md = dir.join("report.md");
    if md.exists() && !crate::report::markdown::is_report(&md) {
        return Err(Error::output(
            &md,
            "exists and is not a headstart report; refusing to replace it: choose another folder",
        ));
    }
    not_among(dir, inputs, caches)
}

/// Refuses `--plot` pictures beside `file` (the head) when its folder is one of `inputs`, lies
/// inside one, or inside the photos behind `caches`: the next scan would take them for photos.
pub fn check_plots_beside(file: &Path, inputs: &[&Path], caches: &[&Path]) -> Result<()> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    not_among(dir, inputs, caches).map_err(|e| match e {
        Error::Output { msg, .. } => Error::output(
            file,
            format!("--plot would draw its pictures beside it, in a folder that {msg}"),
        ),
        other => other,
    })
}

/// `dir` is none of `inputs`, nor inside one, nor inside the photos behind `caches`.
fn not_among(dir: &Path, inputs: &[&Path], caches: &[&Path]) -> Result<()> {
    let at = resolve(dir);
    for input in inputs {
        let ri = resolve(input);
        if at == ri {
            return Err(Error::output(
                dir,
                format!("is an input of this command ({})", input.display()),
            ));
        }
        if ri.is_dir() && at.starts_with(&ri) {
            return Err(Error::output(
                dir,
                format!(
                    "lies inside the input folder {}; write it outside",
                    input.display()
                ),
            ));
        }
    }
    for photos in photo_folders(caches) {
        if at.starts_with(&photos) {
            return Err(Error::output(
                dir,
                format!(
                    "lies inside the photos the features came from ({}); its pictures would be taken for photos: write it outside them",
                    photos.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_an_input_or_a_folder_inside_an_input_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let photos = d.path().join("photos");
        std::fs::create_dir_all(photos.join("cat")).unwrap();
        let file = d.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();
        let e = check_folder(&file, &[], &[]).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
        let e = check_folder(&photos.join("cat/report"), &[&photos], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the input folder"), "{e}");
        check_folder(&d.path().join("report"), &[&photos], &[]).unwrap();
    }
}
