//! ONNX model files: read the bits headstart needs (metadata, op counts, shapes) and generate small
//! random-weight models (tiny CNNs for tests, VGG-16-shaped bases for benchmarks).

pub mod edit;
pub mod export;
pub mod fp16;
pub mod generate;
pub mod proto;
pub mod qdq;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest;

use prost::Message;

use crate::error::{Error, Result};
use crate::util::output::{Output, Replace};
pub use proto::ModelProto;

/// `metadata_props` key: the sha256 of the float model `headstart quantize` made an int8 copy of.
pub const QUANT_SOURCE_SHA256: &str = "quant_source_sha256";
/// `metadata_props` key: the sha256 of the float32 model `headstart convert --fp16` copied.
pub const FP16_SOURCE_SHA256: &str = "fp16_source_sha256";

/// Reads and decodes an ONNX file.
pub fn load(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ModelProto::decode(bytes.as_slice()).map_err(|source| Error::Protobuf {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `path` holds an ONNX model (the rule by which a command that writes a model replaces an
/// existing file: a model, never a photo, a cache or a head).
pub fn is_model(path: &Path) -> bool {
    load(path).is_ok_and(|m| m.graph.is_some())
}

/// The replacement rule of a model output: only an ONNX model is replaced.
pub fn replace_model() -> Replace<'static> {
    Replace::If {
        what: "an ONNX model",
        check: &is_model,
    }
}

/// Encodes and writes an ONNX file through the one output writer ([`Output`]: an existing file is
/// replaced only when it is a model; unique temporary file, lock, rename).
pub fn save(model: &ModelProto, path: &Path) -> Result<()> {
    save_to(model, &Output::new(path).replace(replace_model()))
}

/// Encodes and writes an ONNX file through `out`.
pub fn save_to(model: &ModelProto, out: &Output) -> Result<()> {
    out.check()?;
    out.write_bytes(&model.encode_to_vec())
}

/// The model's `metadata_props` as a sorted map.
pub fn metadata(model: &ModelProto) -> BTreeMap<String, String> {
    model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect()
}

/// How many nodes of each op type the main graph holds.
pub fn op_counts(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if let Some(g) = &model.graph {
        for n in &g.node {
            *counts.entry(n.op_type.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Whether any initializer keeps its data in an external file (`location` relative to the model).
pub fn uses_external_data(model: &ModelProto) -> bool {
    model.graph.as_ref().is_some_and(|g| {
        g.initializer
            .iter()
            .any(|t| t.data_location == 1 || !t.external_data.is_empty())
    })
}

/// The external data files `model`'s initializers name (`location`, relative to the model's folder),
/// each once, in order of first use; a location that leaves the folder is an error naming it.
pub fn external_locations(model: &ModelProto, path: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    let Some(g) = &model.graph else {
        return Ok(out);
    };
    for t in &g.initializer {
        for kv in t.external_data.iter().filter(|kv| kv.key == "location") {
            let rel = crate::util::paths::contained(
                &kv.value,
                path,
                &format!("initializer '{}' external data", t.name),
            )?;
            if !out.contains(&rel) {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// The external data files of the model at `path`, as paths (empty when it has none or cannot be
/// read: the caller reports a bad model when it opens it).
pub fn external_data_files(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(""));
    match std::fs::read(path).map(|b| b.windows(8).any(|w| w == b"location")) {
        Ok(true) => load(path)
            .and_then(|m| external_locations(&m, path))
            .map(|v| v.into_iter().map(|r| dir.join(r)).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The fingerprint of a model: the sha256 of its file, or for a model that keeps weights in external
/// data files, the sha256 of the file's hash and each data file's name and hash, so a changed
/// weights file is a new model (and a cache of the old one is not reused).
pub fn model_sha256(path: &Path) -> Result<String> {
    let own = crate::util::hash::sha256_file(path)?;
    let files = external_data_files(path);
    if files.is_empty() {
        return Ok(own);
    }
    let mut h = sha2::Sha256::new();
    h.update(own.as_bytes());
    for f in &files {
        let sha = crate::util::hash::sha256_file(f)?;
        h.update(format!("\n{}={sha}", crate::util::paths::to_text(f)).as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Saves an edited copy of `source`'s model at `out`; external-data models must stay in the source's
/// folder, where their data files are found by relative path.
pub fn save_edited(model: &ModelProto, source: &Path, out: &Path) -> Result<()> {
    if uses_external_data(model) {
        let dir = |p: &Path| {
            p.parent()
                .map(|d| {
                    if d.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        d
                    }
                })
                .and_then(|d| d.canonicalize().ok())
        };
        if dir(source) != dir(out) {
            return Err(Error::Model {
                path: source.to_path_buf(),
                msg: format!(
                    "keeps weights in external data files, found relative to its folder: write {} into the same folder",
                    out.display()
                ),
            });
        }
    }
    let inputs = external_data_files(source);
    save_to(
        model,
        &Output::new(out)
            .input(source)
            .inputs(inputs)
            .replace(replace_model()),
    )
}
