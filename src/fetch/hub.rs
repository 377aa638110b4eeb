//! ONNX bases from the Hugging Face hub, pinned: a repository at one commit (40 hex digits, never
//! a branch), and every weights file's sha256 (the Git LFS oid the hub shows for the file) checked
//! before the file is used. A file is fetched from `{HF_ENDPOINT}/{repo}/resolve/{commit}/{path}`
//! (default endpoint `https://huggingface.co`; a mirror through `HF_ENDPOINT`), unless the hub's own
//! cache already holds it (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`,
//! as `models--ORG--NAME/snapshots/COMMIT/PATH`); `HF_HUB_OFFLINE=1` (or `HEADSTART_OFFLINE=1`)
//! forbids the network. Weights files resume after an interruption ([`super::download`]).
//!
//! The model's preprocessing is read from the repository's `preprocessor_config.json` (resize
//! rule, crop, interpolation, rescale, mean and std) and its token layout from `config.json` (the
//! class token and `num_register_tokens`), and both are written into the model's metadata, with
//! the pooling its authors use for linear probes. Both JSON files are parsed, never run, and
//! bounded in size. External data files the graph names are fetched beside it, each pinned too.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::download::{self, Digest};
use crate::cache::tokens::{POOL_META, PREFIX_META};
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::output::Output;

/// The hub's address (a mirror's, when set).
pub const ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// Set to 1 to forbid the hub's network.
pub const HUB_OFFLINE_ENV: &str = "HF_HUB_OFFLINE";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The JSON files read from a repository are at most this big.
const MAX_JSON_BYTES: u64 = 1 << 20;

/// One base on the hub: where, at which commit, which graph, and each weights file's sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `ORG/NAME`.
    pub repo: String,
    /// The commit (40 lowercase hex digits).
    pub revision: String,
    /// The graph's path in the repository, e.g. `onnx/model.onnx`.
    pub file: String,
    /// sha256 of the graph and of each external data file, by path in the repository.
    pub sha256: BTreeMap<String, String>,
    /// What is written as the model's `license` metadata.
    pub license: String,
}

impl HubModel {
    /// Parses `hf:ORG/NAME@COMMIT[:PATH]` (PATH defaults to `onnx/model.onnx`) with the hashes
    /// given as `HASH` (the graph's) or `PATH=HASH`.
    pub fn parse(spec: &str, hashes: &[String]) -> Result<HubModel> {
        let bad = |why: String| Error::invalid("model", format!("'{spec}': {why}"));
        let rest = spec
            .strip_prefix("hf:")
            .ok_or_else(|| bad("a hub model is hf:ORG/NAME@COMMIT[:PATH]".into()))?;
        let (repo, rev) = rest.split_once('@').ok_or_else(|| {
            bad(
                "give the commit to pin: hf:ORG/NAME@COMMIT (40 hex digits; a branch can change)"
                    .into(),
            )
        })?;
        let (rev, file) = rev.split_once(':').unwrap_or((rev, "onnx/model.onnx"));
        let mut sha256 = BTreeMap::new();
        for h in hashes {
            let (path, hash) = h.split_once('=').unwrap_or((file, h.as_str()));
            if !is_hex(hash, 64) {
                return Err(bad(format!(
                    "--sha256 '{h}': expected 64 hex digits (or PATH=HASH)"
                )));
            }
            sha256.insert(path.to_string(), hash.to_ascii_lowercase());
        }
        let m = HubModel {
            repo: repo.into(),
            revision: rev.into(),
            file: file.into(),
            sha256,
            license: "see the repository's model card".into(),
        };
        m.check().map_err(bad)?;
        Ok(m)
    }

    /// Refuses a repository, commit or path that is not one (so none can leave the cache folders).
    fn check(&self) -> std::result::Result<(), String> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match self.repo.split_once('/') {
            Some((o, n)) if part_ok(o) && part_ok(n) => {}
            _ => return Err(format!("repository '{}' is not ORG/NAME", self.repo)),
        }
        if !is_hex(&self.revision, 40) {
            return Err(format!(
                "revision '{}' is not a commit (40 hex digits): pin one, a branch can change",
                self.revision
            ));
        }
        if !self.file.ends_with(".onnx") || !self.file.split('/').all(part_ok) {
            return Err(format!(
                "'{}' is not a path to an .onnx file in the repository",
                self.file
            ));
        }
        if !self.sha256.contains_key(&self.file) {
            return Err(format!(
                "give the sha256 of {} (the hub's file page shows it): --sha256 HASH",
                self.file
            ));
        }
        Ok(())
    }

    /// `ORG--NAME`, as the hub's cache names repositories.
    fn flat(&self) -> String {
        self.repo.replace('/', "--")
    }

    /// The file's place in the hub's cache.
    fn in_hub_cache(&self, path: &str) -> PathBuf {
        hub_cache()
            .join(format!("models--{}", self.flat()))
            .join("snapshots")
            .join(&self.revision)
            .join(path)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{path}",
            endpoint(),
            self.repo,
            self.revision
        )
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn endpoint() -> String {
    std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
        .trim_end_matches('/')
        .to_string()
}

/// The hub's cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE").unwrap_or_else(|| {
        var("HF_HOME")
            .unwrap_or_else(|| {
                var("HOME")
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache/huggingface")
            })
            .join("hub")
    })
}

fn hub_offline() -> bool {
    super::offline()
        || std::env::var(HUB_OFFLINE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A small file of the repository (a JSON config): from the hub's cache, else downloaded into
/// headstart's downloads folder (kept), at most [`MAX_JSON_BYTES`].
fn small_file(m: &HubModel, path: &str, rep: &dyn Reporter) -> Result<Vec<u8>> {
    let cached = m.in_hub_cache(path);
    let kept = downloads(m).join(path);
    let is_json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).is_ok();
    if cached.is_file() {
        let b = read_bounded(&cached)?;
        if !is_json(&b) {
            return Err(Error::cache(
                &cached,
                format!("{path} in the hub cache is not JSON: replace or remove it"),
            ));
        }
        return Ok(b);
    }
    if kept.is_file() {
        let b = read_bounded(&kept)?;
        if is_json(&b) {
            return Ok(b);
        }
        // headstart's own download, damaged: fetched again.
        rep.report(Event::Warning(&format!(
            "{}: not JSON; downloading it again",
            kept.display()
        )));
        std::fs::remove_file(&kept).map_err(|e| Error::io(&kept, e))?;
    }
    if hub_offline() {
        return Err(Error::Config(format!(
            "{path} of {}@{} is not in the hub cache ({}) and the network is off ({HUB_OFFLINE_ENV} or {}); place it there",
            m.repo,
            m.revision,
            cached.display(),
            super::OFFLINE_ENV
        )));
    }
    let url = m.url(path);
    rep.report(Event::Detail(&format!("{}: {url}", m.repo)));
    let mut tries = 0;
    let bytes = loop {
        tries += 1;
        match get_small(&url) {
            Ok(b) => break b,
            Err(Small::Retry(e)) if tries < 3 => {
                rep.report(Event::Warning(&format!("{url}: {e}; trying again")));
                std::thread::sleep(Duration::from_millis(300 * tries));
            }
            Err(Small::Retry(msg) | Small::Fatal(msg)) => {
                let msg = format!(
                    "{msg}; {path} of {}@{} could not be downloaded: check the network, point {} \
                     at a mirror of the hub, or place the file in the hub cache as {}",
                    m.repo,
                    m.revision,
                    ENDPOINT_ENV,
                    cached.display()
                );
                return Err(Error::Remote { url, msg });
            }
        }
    };
    // A proxy's or portal's page served with status 200 is never kept as the config.
    if !is_json(&bytes) {
        return Err(Error::Remote {
            url,
            msg: format!("{path} is not JSON (a proxy or error page?); nothing was kept"),
        });
    }
    if let Some(d) = kept.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    Output::new(&kept).write_bytes(&bytes)?;
    Ok(bytes)
}

enum Small {
    Retry(String),
    Fatal(String),
}

/// One GET of a small file: its whole body (a short one is an error), at most [`MAX_JSON_BYTES`].
fn get_small(url: &str) -> std::result::Result<Vec<u8>, Small> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| Small::Retry(e.to_string()))?;
    match resp.status().as_u16() {
        200 => {}
        404 => {
            return Err(Small::Fatal(
                "HTTP 404 (not in the repository at this commit)".into(),
            ))
        }
        s @ (408 | 429 | 500..=599) => return Err(Small::Retry(format!("HTTP {s}"))),
        s => return Err(Small::Fatal(format!("HTTP {s}"))),
    }
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Small::Retry(format!("connection lost: {e}")))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(Small::Fatal(format!(
            "larger than {MAX_JSON_BYTES} bytes: not a config file"
        )));
    }
    if length.is_some_and(|l| l != bytes.len() as u64) {
        return Err(Small::Retry(format!(
            "{} of {} bytes arrived",
            bytes.len(),
            length.unwrap_or(0)
        )));
    }
    Ok(bytes)
}

fn read_bounded(p: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
    if len > MAX_JSON_BYTES {
        return Err(Error::model(
            p,
            format!("{len} bytes: larger than a config file ({MAX_JSON_BYTES})"),
        ));
    }
    std::fs::read(p).map_err(|e| Error::io(p, e))
}

/// headstart's download folder for one repository at one commit.
fn downloads(m: &HubModel) -> PathBuf {
    super::downloads_dir()
        .join("hub")
        .join(m.flat())
        .join(&m.revision)
}

/// A pinned weights file: the hub cache's copy when its sha256 is right, else downloaded (resumed,
/// checked) into headstart's downloads folder.
fn weights_file(m: &HubModel, path: &str, rep: &dyn Reporter) -> Result<PathBuf> {
    let sha = m.sha256.get(path).ok_or_else(|| {
        Error::Config(format!(
            "{}@{}: {} names {path}, whose sha256 is not pinned: give --sha256 {path}=HASH (the hub's file page shows it)",
            m.repo, m.revision, m.file
        ))
    })?;
    let digest = Digest::Sha256(sha.clone());
    let cached = m.in_hub_cache(path);
    if cached.is_file() {
        if digest.matches(&cached)? {
            rep.report(Event::Detail(&format!(
                "{path}: from the hub cache {}",
                cached.display()
            )));
            return Ok(cached);
        }
        rep.report(Event::Warning(&format!(
            "{}: in the hub cache but not the pinned file ({digest}); downloading it",
            cached.display()
        )));
    }
    let url = m.url(path);
    rep.report(Event::Detail(&format!("{}: {url} ({digest})", m.repo)));
    download::fetch_file(
        &download::Download {
            url: &url,
            dest: &downloads(m).join(path),
            digest: &digest,
            what: &format!("{path} of {}", m.repo),
        },
        hub_offline(),
        rep,
    )
}

/// What the repository's configs say, as model metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct HubMetadata(pub Vec<(String, String)>);

/// Reads `preprocessor_config.json` (transformers' image processors: `size` as `shortest_edge`
/// or `height`/`width`, `crop_size`, `do_center_crop`, `resample`, `do_rescale` with
/// `rescale_factor`, `image_mean`/`image_std` or `mean`/`std`) and `config.json`
/// (`model_type`, `num_register_tokens`) into metadata. Errors name the file and the field.
pub fn read_configs(
    pre: &[u8],
    config: &[u8],
    pre_name: &str,
) -> std::result::Result<HubMetadata, String> {
    let p: Value = serde_json::from_slice(pre).map_err(|e| format!("{pre_name}: {e}"))?;
    let c: Value = serde_json::from_slice(config).map_err(|e| format!("config.json: {e}"))?;
    let field = |k: &str| p.get(k).filter(|v| !v.is_null());
    let err = |k: &str, why: &str| format!("{pre_name}: '{k}' {why}");
    let three = |keys: [&str; 2]| -> std::result::Result<[f64; 3], String> {
        let (k, v) = keys
            .iter()
            .find_map(|k| field(k).map(|v| (*k, v)))
            .ok_or_else(|| err(keys[0], "is missing"))?;
        let vals: Vec<f64> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        match vals[..] {
            [a, b, c] => Ok([a, b, c]),
            [a] => Ok([a; 3]),
            _ => Err(err(k, "is not 3 numbers")),
        }
    };
    let mean = three(["image_mean", "mean"])?;
    let std = three(["image_std", "std"])?;
    if std.iter().any(|s| *s <= 0.0) {
        return Err(err("image_std", "must be positive"));
    }
    let rescale = field("do_rescale").and_then(Value::as_bool).unwrap_or(true);
    let factor = field("rescale_factor")
        .and_then(Value::as_f64)
        .unwrap_or(1.0 / 255.0);
    let scale = if !rescale {
        "0..255"
    } else if (factor * 255.0 - 1.0).abs() < 1e-6 {
        "0..1"
    } else {
        return Err(err(
            "rescale_factor",
            &format!("is {factor}: headstart reads pixels on 0..255 or 0..1"),
        ));
    };
    let side = |v: &Value, k: &str| -> std::result::Result<(u64, u64), String> {
        if let Some(n) = v.as_u64() {
            return Ok((n, n));
        }
        match (
            v.get("height").and_then(Value::as_u64),
            v.get("width").and_then(Value::as_u64),
        ) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(err(k, "is neither a number nor height and width")),
        }
    };
    let size = field("size").ok_or_else(|| err("size", "is missing"))?;
    let crop = if field("do_center_crop")
        .and_then(Value::as_bool)
        .unwrap_or(field("crop_size").is_some())
    {
        Some(side(
            field("crop_size").ok_or_else(|| err("crop_size", "is missing"))?,
            "crop_size",
        )?)
    } else {
        None
    };
    let mut meta: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| meta.push((k.to_string(), v));
    let (input, resize) = match (size.get("shortest_edge").and_then(Value::as_u64), crop) {
        (Some(short), Some((ch, cw))) => {
            if ch != cw || short < ch {
                return Err(err("crop_size", &format!("{cw}x{ch} after a shortest edge of {short}: headstart crops a square inside it")));
            }
            put("crop_fraction", format!("{:.6}", ch as f64 / short as f64));
            ((ch, cw), "crop")
        }
        (Some(short), None) => ((short, short), "squash"),
        (None, Some(c)) => (c, "squash"),
        (None, None) => (side(size, "size")?, "squash"),
    };
    put("resize_mode", resize.into());
    put("input_size", format!("{}x{}", input.1, input.0));
    let interpolation = match field("resample").and_then(Value::as_u64).unwrap_or(2) {
        0 => "nearest",
        1 => "lanczos3",
        2 => "bilinear",
        3 => "bicubic",
        r => {
            return Err(err(
                "resample",
                &format!("is {r}: not nearest (0), lanczos (1), bilinear (2) or bicubic (3)"),
            ))
        }
    };
    put("interpolation", interpolation.into());
    let joined = |v: [f64; 3]| v.map(|x| format!("{x}")).join(",");
    put("mean", joined(mean));
    put("std", joined(std));
    put("pixel_scale", scale.into());
    put("color_order", "RGB".into());
    put("layout", "NCHW".into());
    meta.extend(token_layout(&c));
    Ok(HubMetadata(meta))
}

/// What `config.json` says of the token output: the pooling the authors' linear probes use
/// (DINOv2's class token beside the patch mean; a ViT's class token; CLIP and SigLIP exports give
/// pooled embeddings already) and the leading class and register tokens, and the model type.
fn token_layout(c: &Value) -> Vec<(String, String)> {
    let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let registers = c
        .get("num_register_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let pool = match model_type {
        "dinov2" | "dinov2_with_registers" => Some("cls+mean"),
        "vit" | "deit" | "beit" | "clip_vision_model" => Some("cls"),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(pool) = pool {
        out.push((POOL_META.to_string(), pool.to_string()));
        out.push((PREFIX_META.to_string(), (1 + registers).to_string()));
    }
    if !model_type.is_empty() {
        out.push(("model_type".to_string(), model_type.to_string()));
    }
    out
}

/// Fetches `m` into `dir` (the graph as `dir/<its file name>`, its external data files beside it)
/// with the configs' metadata added; returns the graph's path.
pub fn fetch_hub(m: &HubModel, dir: &Path, rep: &dyn Reporter) -> Result<PathBuf> {
    m.check().map_err(|e| Error::invalid("model", e))?;
    let pre_name = "preprocessor_config.json";
    let pre = small_file(m, pre_name, rep)?;
    let config = small_file(m, "config.json", rep)?;
    let from = format!("{}@{}", m.repo, m.revision);
    let meta = read_configs(&pre, &config, pre_name).map_err(|e| Error::Remote {
        url: from.clone(),
        msg: e,
    })?;
    let graph = weights_file(m, &m.file, rep)?;
    let mut model = crate::onnx::load(&graph)?;
    let folder = m.file.rsplit_once('/').map_or("", |(d, _)| d);
    let mut extra = Vec::new();
    for rel in crate::onnx::external_locations(&model, &graph)? {
        let rel = crate::util::paths::to_text(&rel);
        let in_repo = if folder.is_empty() {
            rel.clone()
        } else {
            format!("{folder}/{rel}")
        };
        let src = weights_file(m, &in_repo, rep)?;
        // weights_file checked it against this pin.
        let pinned = Digest::Sha256(m.sha256[&in_repo].clone());
        extra.push((rel, src, pinned));
    }
    let mut entries: Vec<(&str, String)> = meta
        .0
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    entries.push(("source", format!("hf:{from}")));
    entries.push(("license", m.license.clone()));
    entries.push((
        "weights",
        format!("{} sha256 {}", m.file, m.sha256[&m.file]),
    ));
    crate::onnx::edit::set_metadata(&mut model, &entries);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (rel, src, pinned) in &extra {
        let dest = dir.join(rel);
        if dest.is_file() && pinned.matches(&dest)? {
            continue;
        }
        if dest.is_file() {
            std::fs::remove_file(&dest).map_err(|e| Error::io(&dest, e))?;
        }
        Output::new(&dest).input(src).write(|tmp| {
            std::fs::copy(src, tmp)
                .map(|_| ())
                .map_err(|e| Error::io(tmp, e))
        })?;
    }
    let name = m.file.rsplit('/').next().unwrap_or(&m.file);
    let out = dir.join(name);
    crate::onnx::save(&model, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_specs_pin_a_commit_and_a_hash() {
        let h = "a".repeat(64);
        let m = HubModel::parse(
            &format!("hf:org/vit@{}", "0".repeat(40)),
            std::slice::from_ref(&h),
        )
        .unwrap();
        assert_eq!(
            (m.file.as_str(), m.sha256["onnx/model.onnx"].as_str()),
            ("onnx/model.onnx", h.as_str())
        );
        let data = format!("onnx/model.onnx_data={}", "b".repeat(64));
        let m = HubModel::parse(
            &format!("hf:org/vit@{}:onnx/model.onnx", "1".repeat(40)),
            &[h.clone(), data],
        )
        .unwrap();
        assert_eq!(m.sha256.len(), 2);
        for (spec, why) in [
            ("hf:org/vit@main".to_string(), "not a commit"),
            ("hf:org/vit".to_string(), "give the commit"),
            (format!("hf:../vit@{}", "0".repeat(40)), "not ORG/NAME"),
            (
                format!("hf:org/vit@{}:../x.onnx", "0".repeat(40)),
                "not a path",
            ),
        ] {
            let e = HubModel::parse(&spec, std::slice::from_ref(&h))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
        let e = HubModel::parse(&format!("hf:org/vit@{}", "0".repeat(40)), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256"), "{e}");
    }

    /// DINOv2's processor (as the hub's exports ship it) and config.
    #[test]
    fn dinov2_configs_become_metadata() {
        let pre = br#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "do_convert_rgb": true,
            "do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
            "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
            "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}"#;
        let cfg = br#"{"model_type": "dinov2", "hidden_size": 384, "patch_size": 14}"#;
        let m: BTreeMap<String, String> = read_configs(pre, cfg, "p.json")
            .unwrap()
            .0
            .into_iter()
            .collect();
        assert_eq!(m["input_size"], "224x224");
        assert_eq!(
            (m["resize_mode"].as_str(), m["crop_fraction"].as_str()),
            ("crop", "0.875000")
        );
        assert_eq!(
            (m["interpolation"].as_str(), m["pixel_scale"].as_str()),
            ("bicubic", "0..1")
        );
        assert_eq!(m["mean"], "0.485,0.456,0.406");
        assert_eq!(
            (m[POOL_META].as_str(), m[PREFIX_META].as_str()),
            ("cls+mean", "1")
        );
        let reg = br#"{"model_type": "dinov2_with_registers", "num_register_tokens": 4}"#;
        let m: BTreeMap<String, String> = read_configs(pre, reg, "p.json")
            .unwrap()
            .0
            .into_iter()
            .collect();
        assert_eq!(m[PREFIX_META], "5");
        // SigLIP: a plain resize to 224x224, mean and std 0.5, no crop; pooled already.
        let sig = br#"{"do_resize": true, "size": {"height": 224, "width": 224}, "resample": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 0.00392156862745098}"#;
        let m: BTreeMap<String, String> =
            read_configs(sig, br#"{"model_type": "siglip"}"#, "p.json")
                .unwrap()
                .0
                .into_iter()
                .collect();
        assert_eq!(
            (m["resize_mode"].as_str(), m["input_size"].as_str()),
            ("squash", "224x224")
        );
        assert!(!m.contains_key(POOL_META));
        for (bad, why) in [
            (&br#"{"size": 224, "image_std": [1,1,1]}"#[..], "'image_mean' is missing"),
            (br#"{"size": 224, "image_mean": [0,0], "image_std": [1,1,1]}"#, "not 3 numbers"),
            (br#"{"size": 224, "image_mean": [0,0,0], "image_std": [1,1,1], "resample": 9}"#, "'resample' is 9"),
            (br#"{"size": 224, "image_mean": [0,0,0], "image_std": [1,1,1], "rescale_factor": 0.5}"#, "rescale_factor"),
            (br#"not json"#, "p.json"),
        ] {
            let e = read_configs(bad, b"{}", "p.json").unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
