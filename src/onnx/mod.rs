//! ONNX model files: read the bits headstart needs (metadata, op counts, shapes) and generate small
//! random-weight models (tiny CNNs for tests, VGG-16-shaped bases for benchmarks, vision
//! transformers in two exporters' layouts).

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
    crate::util::paths::check_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ModelProto::decode(bytes.as_slice()).map_err(|source| Error::Protobuf {
        path: path.to_path_buf(),
        source,
    })
}

/// The most weights [`load_inlined`] takes into one file: protobuf's 2 GiB limit on a message.
const MAX_INLINE_BYTES: u64 = (2 << 30) - (64 << 20);

/// Reads the model at `path` with every external-data initializer's bytes read into it (from the
/// files beside it, each location kept inside the model's folder, each range checked against the
/// file's size), so that an editor (quantize, convert, export) sees one self-contained model.
/// Refused past protobuf's 2 GiB limit.
pub fn load_inlined(path: &Path) -> Result<ModelProto> {
    let mut model = load(path)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut total = 0u64;
    let Some(g) = model.graph.as_mut() else {
        return Ok(model);
    };
    for t in g
        .initializer
        .iter_mut()
        .filter(|t| t.data_location == 1 || !t.external_data.is_empty())
    {
        let field = |k: &str| {
            t.external_data
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| kv.value.clone())
        };
        let what = format!("initializer '{}' external data", t.name);
        let loc = field("location")
            .ok_or_else(|| Error::model(path, format!("{what} names no location")))?;
        let file = dir.join(external_path(path, &loc, &what)?);
        let num = |k: &str| -> Result<u64> {
            field(k).map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|_| Error::model(path, format!("{what}: {k} '{v}' is not a number")))
            })
        };
        let (offset, length) = (num("offset")?, num("length")?);
        let size = std::fs::metadata(&file)
            .map_err(|e| Error::io(&file, e))?
            .len();
        let length = if field("length").is_some() {
            length
        } else {
            size.saturating_sub(offset)
        };
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::model(
                path,
                format!(
                    "{what}: bytes {offset}..{} lie beyond {} ({size} bytes)",
                    offset.saturating_add(length),
                    file.display()
                ),
            ));
        }
        total += length;
        if total > MAX_INLINE_BYTES {
            return Err(Error::model(path, "its weights pass protobuf's 2 GiB limit for one file: keep the external data (this command needs a single-file model)"));
        }
        use std::io::{Read, Seek, SeekFrom};
        crate::util::paths::check_regular(&file)?;
        let mut f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&file, e))?;
        let mut bytes = vec![0u8; length as usize];
        f.read_exact(&mut bytes).map_err(|e| Error::io(&file, e))?;
        t.raw_data = bytes;
        t.external_data.clear();
        t.data_location = 0;
    }
    Ok(model)
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
    out.write_bytes(&encode(model))
}

/// The ONNX file's bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
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

/// An external data `location` read from the model at `path`, relative to its folder: inside it
/// as written (no `..` out, not absolute) and as found (a symlink there that leads out of the
/// folder is refused, as ONNX Runtime refuses it).
fn external_path(path: &Path, loc: &str, what: &str) -> Result<PathBuf> {
    let rel = crate::util::paths::contained(loc, path, what)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let (Ok(file), Ok(root)) = (dir.join(&rel).canonicalize(), dir.canonicalize()) {
        if !file.starts_with(&root) {
            return Err(Error::model(
                path,
                format!(
                    "{what}: '{loc}' leads out of the model's folder (to {}); external data must stay beside the model",
                    file.display()
                ),
            ));
        }
    }
    Ok(rel)
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
            let rel = external_path(
                path,
                &kv.value,
                &format!("initializer '{}' external data", t.name),
            )?;
            if !out.contains(&rel) {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// Reads the model file once in 1 MiB pieces: its sha256, and whether it mentions `location` (every
/// external-data entry holds that key, so a file without it has none and is never decoded here).
fn scan(path: &Path) -> Result<(String, bool)> {
    use std::io::Read;
    const KEY: &[u8] = b"location";
    crate::util::paths::check_regular(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; (1 << 20) + KEY.len()];
    let (mut keep, mut found) = (0usize, false);
    loop {
        let n = f.read(&mut buf[keep..]).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[keep..keep + n]);
        let end = keep + n;
        found = found || buf[..end].windows(KEY.len()).any(|w| w == KEY);
        // The last bytes stay, so a key split across two reads is still seen.
        keep = (KEY.len() - 1).min(end);
        buf.copy_within(end - keep..end, 0);
    }
    Ok((format!("{:x}", h.finalize()), found))
}

/// The external data files of a model that mentions them (`mentions`), as paths beside it (empty
/// when it cannot be decoded: the caller reports a bad model when it opens it).
fn external_files(path: &Path, mentions: bool) -> Vec<PathBuf> {
    if !mentions {
        return Vec::new();
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    load(path)
        .and_then(|m| external_locations(&m, path))
        .map(|v| v.into_iter().map(|r| dir.join(r)).collect())
        .unwrap_or_default()
}

/// The external data files of the model at `path`, as paths (empty when it has none or cannot be
/// read: the caller reports a bad model when it opens it).
pub fn external_data_files(path: &Path) -> Vec<PathBuf> {
    scan(path).map_or(Vec::new(), |(_, mentions)| external_files(path, mentions))
}

/// The fingerprint of a model: the sha256 of its file, or for a model that keeps weights in external
/// data files, the sha256 of the file's hash and each data file's name (its location, relative to
/// the model's folder: the same however the model's path is spelt) and hash, so a changed weights
/// file is a new model (and a cache of the old one is not reused). The file is read once.
pub fn model_sha256(path: &Path) -> Result<String> {
    let (own, mentions) = scan(path)?;
    let files = external_files(path, mentions);
    if files.is_empty() {
        return Ok(own);
    }
    let mut h = sha2::Sha256::new();
    h.update(own.as_bytes());
    let dir = path.parent().unwrap_or(Path::new(""));
    for f in &files {
        let sha = crate::util::hash::sha256_file(f)?;
        let name = f.strip_prefix(dir).unwrap_or(f);
        h.update(format!("\n{}={sha}", crate::util::paths::to_text(name)).as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Saves an edited copy of `source`'s model at `out`; external-data models must stay in the source's
/// folder, where their data files are found by relative path.
pub fn save_edited(model: &ModelProto, source: &Path, out: &Path) -> Result<()> {
    if uses_external_data(model) {
        // Each location stays inside the folder (the copy would carry a bad one on).
        external_locations(model, source)?;
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

#[cfg(test)]
mod scan_tests {
    use super::*;

    /// The one-pass scan gives the file's sha256 and sees `location` wherever it falls, across the
    /// 1 MiB reads too.
    #[test]
    fn scan_hashes_and_finds_the_key_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        for at in [0usize, 1000, (1 << 20) - 4, (1 << 20) - 1, 3 << 20] {
            let mut bytes = vec![7u8; (3 << 20) + 100];
            bytes[at..at + 8].copy_from_slice(b"location");
            let p = dir.path().join("m.bin");
            std::fs::write(&p, &bytes).unwrap();
            let (sha, found) = scan(&p).unwrap();
            assert!(found, "key at {at}");
            assert_eq!(sha, crate::util::hash::sha256_file(&p).unwrap());
        }
        let p = dir.path().join("none.bin");
        std::fs::write(&p, vec![7u8; 5 << 20]).unwrap();
        assert!(!scan(&p).unwrap().1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with external data has one fingerprint however its path is spelt, and another once
    /// its data file changes.
    #[test]
    fn an_external_data_model_is_one_model_under_any_spelling_of_its_path() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let mut m = generate::cnn(&generate::CnnSpec::tiny(
            crate::data::preprocess::Layout::Nchw,
            Some((32, 32)),
        ));
        let data = generate::vit::externalize(&mut m, "x.onnx_data");
        std::fs::write(sub.join("x.onnx_data"), &data).unwrap();
        std::fs::write(sub.join("x.onnx"), encode(&m)).unwrap();
        let plain = model_sha256(&sub.join("x.onnx")).unwrap();
        let dotted = model_sha256(&d.path().join("sub/./x.onnx")).unwrap();
        let around = model_sha256(&d.path().join("sub/../sub/x.onnx")).unwrap();
        assert_eq!((&plain, &plain), (&dotted, &around));
        let mut other = data.clone();
        other[0] ^= 1;
        std::fs::write(sub.join("x.onnx_data"), &other).unwrap();
        assert_ne!(model_sha256(&sub.join("x.onnx")).unwrap(), plain);
    }
}
