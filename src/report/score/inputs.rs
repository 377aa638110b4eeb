//! What `score` reads: files as given, folders walked for images, or an object-storage prefix
//! listed (with the downloader that fetches its images ahead of the pipeline).

use std::path::{Path, PathBuf};

use super::ScoreConfig;
use crate::data::remote::{is_url_path, Prefetch, Remote};
use crate::data::scan::{image_files_checked, is_image_file};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};

/// The images to score: their names, and when in object storage, the store and each one's key.
pub(super) struct Inputs {
    pub(super) files: Vec<PathBuf>,
    pub(super) remote: Option<(std::sync::Arc<Remote>, Vec<String>)>,
}

/// The downloader for images in object storage, its keys laid out as the pipeline's paths (twice
/// over with TTA: image i and its mirror n + i).
pub(super) fn prefetch_for(
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
pub(super) fn score_inputs(cfg: &ScoreConfig, rep: &dyn Reporter) -> Result<Inputs> {
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

/// Files to score: files as given, folders walked recursively for images, in sorted order. Entries
/// of a folder that cannot be walked are reported as warnings. A path that cannot be looked at (not
/// there) is scored as a file, so it gets its row with the error, unless no input can be: then the
/// first one's error is returned.
pub fn collect_inputs(inputs: &[PathBuf], rep: &dyn Reporter) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut first_err = None;
    let mut any = false;
    for p in inputs {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                first_err.get_or_insert(Error::io(p, e));
                files.push(p.clone());
                continue;
            }
        };
        any = true;
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
    match first_err {
        Some(e) if !any => Err(e),
        _ => Ok(files),
    }
}
