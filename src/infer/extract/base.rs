//! The model `extract` runs, when it is not the file given: with `--layer`, the model cut at that
//! tensor (written beside the cache); with `--precision int8`, an int8 copy calibrated on the
//! given photos (kept in the home folder under a name keyed by the model, the photos and the
//! settings, so it is made once).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ExtractConfig, Int8};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};

/// Where `extract --layer` writes the cut model: `<out without extension>.base.onnx`.
pub fn cut_model_for(out: &Path) -> PathBuf {
    let mut p = out.with_extension("").into_os_string();
    p.push(".base.onnx");
    PathBuf::from(p)
}

/// The int8 copy of `cfg.model` for calibration set `q`: from `$HEADSTART_HOME/quantized` when it
/// was made before, else quantised now and kept there.
pub(super) fn int8_model(cfg: &ExtractConfig, q: &Int8, rep: &dyn Reporter) -> Result<PathBuf> {
    let files = crate::infer::quantize::calibration_files(&q.calibrate, q.images)?;
    let mut h = Sha256::new();
    h.update(crate::onnx::model_sha256(&cfg.model)?);
    let target = crate::infer::quantize::DEFAULT_TARGET_COSINE;
    h.update(format!(
        "minmax|bias-fit|target {target}|{}|{:?}\n",
        files.len(),
        cfg.overrides
    ));
    for f in &files {
        let m = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(format!("{}|{}|{:?}\n", f.display(), m.len(), mtime));
    }
    let key = format!("{:x}", h.finalize());
    let stem = cfg
        .model
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = crate::util::paths::home().join("quantized");
    let path = dir.join(format!("{stem}.int8.{}.onnx", &key[..16]));
    if path.is_file() {
        rep.report(Report::Detail(&format!(
            "int8 model: {} (made earlier for this model and calibration set)",
            path.display()
        )));
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let qc = crate::infer::quantize::QuantizeConfig {
        model: cfg.model.clone(),
        calibrate: q.calibrate.clone(),
        images: q.images,
        method: crate::infer::quantize::Calibration::MinMax,
        out: path.clone(),
        keep_float: Vec::new(),
        target_cosine: Some(target),
        overrides: cfg.overrides.clone(),
        runtime: cfg.runtime.clone(),
        batch: cfg.batch,
    };
    let s = crate::infer::quantize::quantize(&qc, rep)?;
    rep.report(Report::Detail(&format!(
        "int8 model: {} ({} nodes in int8, {} kept in float, calibrated on {} images; float vs int8 cosine mean {:.4}, min {:.4})",
        path.display(),
        s.quantized_nodes,
        s.kept_float.len(),
        s.images,
        s.cosine.0,
        s.cosine.1
    )));
    Ok(path)
}

/// `--layer`: cuts the model at that tensor, writes it beside the output and returns the config that
/// extracts with it.
pub(super) fn cut_first(
    cfg: &ExtractConfig,
    layer: &str,
    rep: &dyn Reporter,
) -> Result<ExtractConfig> {
    let proto = crate::onnx::load(&cfg.model)?;
    let cut = crate::onnx::edit::cut(&proto, layer).map_err(|e| Error::model(&cfg.model, e))?;
    let path = cut_model_for(&cfg.out);
    crate::onnx::save_edited(&cut, &cfg.model, &path)?;
    rep.report(Report::Detail(&format!(
        "cut {} at '{layer}': wrote {} (train-head, score and export use this file)",
        cfg.model.display(),
        path.display()
    )));
    let mut cfg = cfg.clone();
    cfg.model = path;
    cfg.layer = None;
    Ok(cfg)
}
