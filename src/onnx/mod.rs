//! ONNX model files: read the bits headstart needs (metadata, op counts, shapes) and generate small
//! random-weight models (tiny CNNs for tests, VGG-16-shaped bases for benchmarks).

pub mod edit;
pub mod export;
pub mod fp16;
pub mod generate;
pub mod proto;
pub mod qdq;

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
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

/// Encodes and writes an ONNX file (through a temporary file, so a crash never leaves half a model).
pub fn save(model: &ModelProto, path: &Path) -> Result<()> {
    let tmp = path.with_extension("onnx.tmp");
    std::fs::write(&tmp, model.encode_to_vec()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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
    save(model, out)
}
