//! What identifies an extraction run ([`fingerprint`]: the model's bytes, the options, the
//! dataset's listing) and when an existing cache already answers it ([`cache_hit`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{ExtractConfig, ExtractSummary};
use crate::cache::tokens::TokenRequest;
use crate::cache::FeatureCache;
use crate::data::scan::Dataset;
use crate::error::{Error, Result};

/// Identifies a run: model bytes, options and the dataset listing (paths, sizes, mtimes, labels).
pub(super) fn fingerprint(
    cfg: &ExtractConfig,
    model_sha: &str,
    ds: &Dataset,
    table_sha: Option<&str>,
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(model_sha);
    if let Some(t) = table_sha {
        h.update(format!("|labels {t}"));
    }
    h.update(format!(
        "{:?}|{:?}|{}{}{}",
        cfg.overrides,
        cfg.layout,
        cfg.dtype.name(),
        // Mirrors are of the input tensor (caches of earlier releases mirrored the photo).
        if cfg.augment_flip { "|flip tensor" } else { "" },
        if cfg.tta_flip { "|tta-flip tensor" } else { "" }
    ));
    if cfg.tokens != TokenRequest::default() {
        h.update(format!("|tokens {:?}", cfg.tokens));
    }
    if cfg.copies > 0 {
        h.update(format!(
            "|copies {} {} seed {}",
            cfg.copies,
            cfg.augment.names(),
            cfg.augment_seed
        ));
    }
    h.update(ds.classes.join("\u{1}"));
    for split in &ds.splits {
        h.update(&split.name);
        for item in &split.items {
            if let Some(r) = &ds.remote {
                let version = r.versions.get(&item.rel_path).map_or("", |v| v.as_str());
                h.update(format!("{}|{}|{version}\n", item.rel_path, item.label));
                continue;
            }
            if !item.tags.is_empty() {
                h.update(format!("{:?}", item.tags));
            }
            let p = ds.root.join(item.path());
            let m = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.update(format!(
                "{}|{}|{}|{}\n",
                item.rel_path,
                item.label,
                m.len(),
                mtime
            ));
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

pub(super) fn cache_hit(
    cfg: &ExtractConfig,
    fp: &str,
    ds: &Dataset,
    t0: Instant,
) -> Option<ExtractSummary> {
    let cache = FeatureCache::open(&cfg.out).ok()?;
    // The same images under another folder (a copied dataset) are no hit: the cache would name
    // the old folder as its photos'.
    let root = |r: &str| match crate::data::remote::is_url(r) {
        true => PathBuf::from(r),
        false => crate::util::paths::resolve(Path::new(r)),
    };
    if cache.meta.fingerprint != fp || root(&cache.meta.data_root) != root(&data_root(&cfg.data)) {
        return None;
    }
    let mut extracted = 0;
    let mut skipped = Vec::new();
    for s in &cache.meta.splits {
        extracted += cache.split_len(s).ok()?;
        let data_skipped = cache.read_split_skipped(s).ok()?;
        skipped.extend(data_skipped);
    }
    Some(ExtractSummary {
        out: cfg.out.clone(),
        images: ds.len(),
        extracted,
        extracted_now: 0,
        skipped,
        seconds: t0.elapsed().as_secs_f64(),
        cache_hit: true,
        resumed: 0,
        file_bytes: std::fs::metadata(&cfg.out).map(|m| m.len()).unwrap_or(0),
        device: cfg.runtime.device,
        scan_warnings: ds.warnings.len(),
    })
}

/// The photos' folder as a cache records it: absolute, so that every command finds it from any
/// folder (a URL as given).
pub(super) fn data_root(data: &Path) -> String {
    if crate::data::remote::is_url_path(data) {
        data.display().to_string()
    } else {
        crate::util::paths::resolve(data).display().to_string()
    }
}
