//! Keras' HDF5 weight files (`model.save_weights(...h5)`, the layout of the `keras-applications`
//! downloads): the root attribute `layer_names` lists the layers in order; each layer's group has a
//! `weight_names` attribute naming its datasets, kernel first, then bias. This reads them the way
//! Keras' own loader does, following the attributes, never guessing from dataset paths.

use std::path::Path;

use hdf5::types::{FixedAscii, VarLenAscii, VarLenUnicode};

/// A layer's weights: `(name, [(dataset name, shape, values)])`, in file order.
pub type Layer = (String, Vec<(String, Vec<usize>, Vec<f32>)>);

/// A string-list attribute, written fixed-length (h5py from numpy bytes, what Keras does) or
/// variable-length.
fn string_list(loc: &hdf5::Location, name: &str) -> Result<Vec<String>, String> {
    let attr = loc
        .attr(name)
        .map_err(|e| format!("no attribute '{name}' on {}: {e}", loc.name()))?;
    if let Ok(v) = attr.read_raw::<FixedAscii<1024>>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = attr.read_raw::<VarLenUnicode>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    attr.read_raw::<VarLenAscii>()
        .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
        .map_err(|e| {
            format!(
                "attribute '{name}' on {}: not a list of strings ({e})",
                loc.name()
            )
        })
}

/// Every layer of the weight file at `path` that has weights, in `layer_names` order.
pub fn read_layers(path: &Path) -> Result<Vec<Layer>, String> {
    let f = hdf5::File::open(path).map_err(|e| format!("not an HDF5 file: {e}"))?;
    // Files saved by `Model.save` put the weights under `model_weights`.
    let root: hdf5::Group = match f.group("model_weights") {
        Ok(g) => g,
        Err(_) => f.as_group().map_err(|e| e.to_string())?,
    };
    let names =
        string_list(&root, "layer_names").map_err(|e| format!("{e} (not a Keras weight file?)"))?;
    let mut layers = Vec::new();
    for name in names {
        let g = root
            .group(&name)
            .map_err(|e| format!("layer '{name}' is listed but has no group: {e}"))?;
        let weight_names = string_list(&g, "weight_names")?;
        let mut weights = Vec::new();
        for wn in weight_names {
            let ds = g
                .dataset(&wn)
                .map_err(|e| format!("layer '{name}': weight '{wn}' is listed but missing: {e}"))?;
            let values = ds
                .read_raw::<f32>()
                .map_err(|e| format!("layer '{name}', weight '{wn}': {e}"))?;
            weights.push((wn, ds.shape(), values));
        }
        if !weights.is_empty() {
            layers.push((name, weights));
        }
    }
    Ok(layers)
}

/// A convolution in ONNX's terms: `(layer name, [out, in, kh, kw], OIHW kernel, bias)`.
pub type Conv = (String, [usize; 4], Vec<f32>, Vec<f32>);

/// The 2-D convolutions of `layers` as ONNX weights, from Keras' HWIO kernels.
pub fn conv_weights(layers: &[Layer]) -> Result<Vec<Conv>, String> {
    let mut out = Vec::new();
    for (name, weights) in layers {
        let [(kn, kshape, k), (bn, bshape, b)] = weights.as_slice() else {
            return Err(format!(
                "layer '{name}' has {} weights, a convolution has 2 (kernel, bias)",
                weights.len()
            ));
        };
        let &[kh, kw, cin, cout] = kshape.as_slice() else {
            return Err(format!(
                "layer '{name}': kernel '{kn}' has shape {kshape:?}, a 2-D convolution's is [kh, kw, in, out]"
            ));
        };
        if bshape.as_slice() != [cout] {
            return Err(format!(
                "layer '{name}': bias '{bn}' has shape {bshape:?}, expected [{cout}]"
            ));
        }
        let mut oihw = vec![0f32; k.len()];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..cin {
                    for o in 0..cout {
                        oihw[((o * cin + i) * kh + y) * kw + x] =
                            k[((y * kw + x) * cin + i) * cout + o];
                    }
                }
            }
        }
        out.push((name.clone(), [cout, cin, kh, kw], oihw, b.clone()));
    }
    Ok(out)
}
