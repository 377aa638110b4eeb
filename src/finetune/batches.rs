//! Mini-batches as candle tensors, the forward pass of top + head, loss and accuracy over rows, and
//! one optimizer step on candle variables.

use candle_core::{Device, Tensor, Var};
use ndarray::Array2;

use crate::cache::SplitData;
use crate::error::{Error, Result};
use crate::head::fit::predicted;
use crate::util::rng::Rng;

use super::*;

/// The rows of `data` at `idx` as one `[n, shape..]` tensor.
pub(super) fn batch_tensor(
    data: &SplitData,
    row: usize,
    shape: &[usize],
    idx: &[usize],
) -> Result<Tensor> {
    let mut v = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        v.extend_from_slice(&data.features[i * row..(i + 1) * row]);
    }
    let mut dims = vec![idx.len()];
    dims.extend_from_slice(shape);
    Tensor::from_vec(v, dims, &Device::Cpu).map_err(cerr)
}

/// Mean loss and accuracy of top + head on rows `idx` (inference mode).
pub(super) fn evaluate(
    top: &TopGraph,
    head: &CandleHead,
    data: &SplitData,
    row: usize,
    shape: &[usize],
    idx: &[usize],
) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0f64, 0usize);
    for chunk in idx.chunks(64) {
        let x = batch_tensor(data, row, shape, chunk)?;
        let y: Vec<u32> = chunk.iter().map(|&i| data.labels[i]).collect();
        let z = logits(top, head, &x, None)?;
        let l = head::cross_entropy(&z, &y)
            .and_then(|l| l.to_scalar::<f32>())
            .map_err(cerr)?;
        loss += l as f64 * chunk.len() as f64;
        correct += count_correct(&z, &y)?;
    }
    let n = idx.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// Logits of top + head on `x`; `dropout` is the generator of a training pass.
pub(super) fn logits(
    top: &TopGraph,
    head: &CandleHead,
    x: &Tensor,
    dropout: Option<&mut Rng>,
) -> Result<Tensor> {
    head.forward(&top.forward(x).map_err(Error::Runtime)?, dropout)
        .map_err(cerr)
}

/// A `[n, k]` tensor as an ndarray matrix.
pub(super) fn to_array(z: &Tensor) -> Result<Array2<f32>> {
    let (n, k) = z.dims2().map_err(cerr)?;
    let flat: Vec<f32> = z.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    Array2::from_shape_vec((n, k), flat).map_err(|e| Error::Runtime(e.to_string()))
}

pub(super) fn count_correct(z: &Tensor, y: &[u32]) -> Result<usize> {
    let z = to_array(z)?;
    Ok(predicted(&z).iter().zip(y).filter(|(p, t)| p == t).count())
}

/// One optimizer step over `vars` from the gradients of `loss`.
pub(super) fn step(
    opt: &mut dyn crate::head::optim::Optimizer,
    vars: &[Var],
    loss: &Tensor,
) -> Result<()> {
    let grads = loss.backward().map_err(cerr)?;
    let mut ps: Vec<Vec<f32>> = Vec::with_capacity(vars.len());
    let mut gs: Vec<Vec<f32>> = Vec::with_capacity(vars.len());
    for v in vars {
        ps.push(v.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?);
        gs.push(match grads.get(v) {
            Some(g) => g.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?,
            None => vec![0.0; v.elem_count()],
        });
    }
    {
        let mut pm: Vec<&mut [f32]> = ps.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gr: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut pm, &gr);
    }
    for (v, p) in vars.iter().zip(ps) {
        v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).map_err(cerr)?)
            .map_err(cerr)?;
    }
    Ok(())
}
