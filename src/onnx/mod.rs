//! ONNX model files: read the bits headstart needs (metadata, op counts, shapes) and generate small
//! random-weight models (tiny CNNs for tests, VGG-16-shaped bases for benchmarks).

pub mod edit;
pub mod generate;
pub mod proto;

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
pub use proto::ModelProto;

/// Reads and decodes an ONNX file.
pub fn load(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ModelProto::decode(bytes.as_slice()).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        msg: format!("not a valid ONNX protobuf: {e}"),
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
