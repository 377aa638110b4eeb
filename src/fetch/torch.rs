//! PyTorch `state_dict` files (`torch.save`), read without running Python or any pickle code: the
//! legacy layout (magic number, protocol, system info, the state_dict pickle, the storage keys, then
//! each storage's raw bytes) and the zip layout (`<name>/data.pkl` with storages in
//! `<name>/data/<key>`). Tensors come back as float32 with their shapes.

use std::collections::HashMap;

use super::pickle::{self, Dtype, TensorRef, Value};

/// The legacy file's magic number (`torch.serialization.MAGIC_NUMBER`).
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;

/// A named float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A state_dict: tensors by name, in file order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: Vec<(String, Tensor)>,
}

impl StateDict {
    /// The tensor called `name`, or an error naming what is missing.
    pub fn get(&self, name: &str) -> Result<&Tensor, String> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("no tensor '{name}' in the state_dict"))
    }

    /// `name` with the given shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<&Tensor, String> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(format!(
                "tensor '{name}' has shape {:?}, expected {shape:?}",
                t.shape
            ));
        }
        Ok(t)
    }
}

/// Reads either layout from the file's bytes.
pub fn read_state_dict(bytes: &[u8]) -> Result<StateDict, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else {
        read_legacy(bytes)
    }
}

/// Gives a storage's bytes: (key, element type, bytes needed at least).
type StorageReader<'a> = &'a mut dyn FnMut(&str, Dtype, usize) -> Result<Vec<u8>, String>;

/// The tensors of a state_dict pickle, with each tensor's storage bytes from `storage`.
fn collect(v: Value, storage: StorageReader) -> Result<StateDict, String> {
    let Value::Dict(items) = v else {
        return Err("the file does not hold a state_dict (a dict of tensors)".into());
    };
    let mut out = StateDict::default();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    for (k, v) in items {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !cache.contains_key(&t.storage) {
            cache.insert(t.storage.clone(), storage(&t.storage, t.dtype, 0)?);
        }
        let raw = &cache[&t.storage];
        out.tensors.push((name.clone(), to_f32(&t, raw, &name)?));
    }
    Ok(out)
}

/// A view of raw little-endian storage bytes as float32, in row-major order whatever its strides
/// (weights converted from TensorFlow are often stored channels-last).
fn to_f32(t: &TensorRef, raw: &[u8], name: &str) -> Result<Tensor, String> {
    let size = t.dtype.size();
    let past = || format!("tensor '{name}' runs past its storage");
    let n = t.numel().ok_or_else(past)?;
    // The furthest element the view reaches, and its end in bytes; every step checked (the shape,
    // strides and offset come from the file).
    let end = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (d, s)| {
            a.checked_add(d.saturating_sub(1).checked_mul(*s)?)
        })
        .and_then(|last| last.checked_add(1)?.checked_mul(size));
    if t.shape.len() != t.stride.len() || (n > 0 && end.is_none_or(|e| e > raw.len())) {
        return Err(past());
    }
    // A view may repeat its storage (stride 0), but no weight has 2^30 values.
    if n > 1 << 30 {
        return Err(format!(
            "tensor '{name}' has {n} values; a weight has at most 2^30"
        ));
    }
    let value = |i: usize| -> f32 {
        let b = &raw[i * size..(i + 1) * size];
        match t.dtype {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F64 => f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32,
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::I64 => i64::from_le_bytes(b.try_into().unwrap_or_default()) as f32,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Dtype::U8 | Dtype::Bool => b[0] as f32,
        }
    };
    let mut data = Vec::with_capacity(n);
    if t.is_contiguous() {
        data.extend((t.offset..t.offset + n).map(value));
    } else {
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..n {
            let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            data.push(value(at));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(Tensor {
        shape: t.shape.clone(),
        data,
    })
}

/// The legacy layout (torch < 1.6, and `_use_new_zipfile_serialization=False`).
pub fn read_legacy(bytes: &[u8]) -> Result<StateDict, String> {
    let mut pos = 0;
    match pickle::read(bytes, &mut pos)? {
        Value::Bytes(b) if b.len() <= 16 => {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(&b);
            if u128::from_le_bytes(buf) != MAGIC {
                return Err("not a PyTorch file (wrong magic number)".into());
            }
        }
        _ => return Err("not a PyTorch file (no magic number)".into()),
    }
    let _protocol = pickle::read(bytes, &mut pos)?;
    let sys = pickle::read(bytes, &mut pos)?;
    if let Value::Dict(items) = &sys {
        let little = items
            .iter()
            .find(|(k, _)| *k == Value::Str("little_endian".into()))
            .map(|(_, v)| v.clone());
        if little == Some(Value::Bool(false)) {
            return Err("big-endian PyTorch files are not supported".into());
        }
    }
    let dict = pickle::read(bytes, &mut pos)?;
    let keys = match pickle::read(bytes, &mut pos)? {
        Value::List(k) => k
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                other => Err(format!("storage key {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("no storage key list".into()),
    };
    // Storages follow in key order: u64 element count, then the elements.
    let mut dtypes: HashMap<String, Dtype> = HashMap::new();
    if let Value::Dict(items) = &dict {
        for (_, v) in items {
            if let Value::Tensor(t) = v {
                dtypes.insert(t.storage.clone(), t.dtype);
            }
        }
    }
    let mut raw: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| format!("storage {key}: file cut short"))?;
        let numel = u64::from_le_bytes(head.try_into().unwrap_or_default()) as usize;
        pos += 8;
        let size = dtypes.get(&key).map_or(4, |d| d.size());
        let len = numel
            .checked_mul(size)
            .ok_or_else(|| format!("storage {key}: size overflows"))?;
        let data = bytes
            .get(pos..pos + len)
            .ok_or_else(|| format!("storage {key}: file cut short ({len} bytes announced)"))?;
        raw.insert(key, data.to_vec());
        pos += len;
    }
    collect(dict, &mut |key, _, need| {
        let r = raw
            .get(key)
            .ok_or_else(|| format!("storage {key} is not in the file"))?;
        if r.len() < need {
            return Err(format!(
                "storage {key} holds {} bytes, {need} needed",
                r.len()
            ));
        }
        Ok(r.clone())
    })
}

/// The zip layout (torch >= 1.6 default).
pub fn read_zip(bytes: &[u8]) -> Result<StateDict, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let names: Vec<String> = z
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .cloned()
        .ok_or("zip without data.pkl: not a PyTorch file")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> Result<Vec<u8>, String> {
        let mut f = z.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        crate::util::limits::read_capped(&mut f, crate::util::limits::MAX_MEMBER_BYTES)
            .map_err(|e| format!("{name}: {e}"))
    };
    let data = read(&pkl)?;
    let dict = pickle::read(&data, &mut 0)?;
    collect(dict, &mut |key, _, need| {
        let r = read(&format!("{prefix}data/{key}"))?;
        if r.len() < need {
            return Err(format!(
                "storage {key} holds {} bytes, {need} needed",
                r.len()
            ));
        }
        Ok(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channels-last storage read through its strides comes out in row-major order.
    #[test]
    fn strided_views_are_gathered_row_major() {
        // Logical [2, 3] tensor stored column-major: storage [a00, a10, a01, a11, a02, a12].
        let storage: Vec<u8> = [0.0f32, 10.0, 1.0, 11.0, 2.0, 12.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = TensorRef {
            storage: "k".into(),
            dtype: Dtype::F32,
            offset: 0,
            shape: vec![2, 3],
            stride: vec![1, 2],
        };
        let got = to_f32(&t, &storage, "t").unwrap();
        assert_eq!(got.data, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        let past = TensorRef {
            offset: 1,
            ..t.clone()
        };
        assert!(to_f32(&past, &storage, "t")
            .unwrap_err()
            .contains("past its storage"));
        // Shapes, strides and offsets that overflow are refused, never a panic or a huge buffer.
        for (shape, stride) in [
            (vec![3], vec![1usize << 61]),
            (vec![1 << 33, 1 << 31], vec![1, 1]),
            (vec![1 << 40], vec![0]),
        ] {
            let t = TensorRef {
                shape,
                stride,
                ..t.clone()
            };
            assert!(to_f32(&t, &storage, "t").is_err());
        }
    }
}
