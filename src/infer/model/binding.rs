//! Inference through ONNX Runtime's I/O binding (`--io-binding`): the input and output tensors of a
//! batch are allocated once and bound to the session, so no batch allocates or binds anew.
//!
//! On the CPU both tensors are plain host memory that the session reads and writes in place. On
//! CUDA the batch is written into pinned host memory and copied into a device tensor bound once;
//! the output is written into a device tensor bound once and copied back into pinned host memory.
//! The copies go through ONNX Runtime's own copy (`Tensor::copy_into`), which waits for the copy,
//! so the copy of one batch does not overlap the run of another. Fixed addresses are what a CUDA
//! graph needs (`--cuda-graph`, [`crate::infer::runtime::RuntimeConfig::cuda_graph`]): ONNX
//! Runtime captures the first run and replays it for every later one.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::BaseModel;
use crate::error::{Error, Result};
use crate::infer::runtime::Device;

/// A session's input and output bound to tensors of one batch size.
pub(crate) struct Bound {
    binding: IoBinding,
    input_name: String,
    /// Where a batch is written: host memory (pinned on CUDA).
    host_in: Tensor<f32>,
    /// CUDA: the device tensor the session reads.
    dev_in: Option<Tensor<f32>>,
    /// Where the outputs are read: host memory (pinned on CUDA).
    host_out: Tensor<f32>,
    /// CUDA: the device tensor the session writes.
    dev_out: Option<Tensor<f32>>,
    /// The bound input's shape; its first axis is the images per run (smaller batches are
    /// padded to it).
    pub(crate) in_shape: [usize; 4],
    /// The output's shape per image.
    pub(crate) out_dims: Vec<usize>,
}

impl Bound {
    /// Binds `input` (`in_shape`, whose first axis is the batch) and `output` (`out_dims` per
    /// image) of `session` on `device`.
    pub(crate) fn new(
        session: &Session,
        device: Device,
        (input, in_shape): (&str, [usize; 4]),
        (output, out_dims): (&str, &[usize]),
    ) -> ort::Result<Bound> {
        let mut out_shape = vec![in_shape[0]];
        out_shape.extend_from_slice(out_dims);
        let (host, dev) = if device == Device::Cuda {
            let info = |device, kind| MemoryInfo::new(device, 0, AllocatorType::Device, kind);
            let pinned = Allocator::new(
                session,
                info(AllocationDevice::CUDA_PINNED, MemoryType::CPUInput)?,
            )?;
            let gpu = Allocator::new(session, info(AllocationDevice::CUDA, MemoryType::Default)?)?;
            (pinned, Some(gpu))
        } else {
            (Allocator::default(), None)
        };
        let mut host_in = Tensor::<f32>::new(&host, in_shape)?;
        host_in.extract_tensor_mut().1.fill(0.0);
        let mut host_out = Tensor::<f32>::new(&host, out_shape.clone())?;
        let mut dev_in = dev
            .as_ref()
            .map(|a| Tensor::<f32>::new(a, in_shape))
            .transpose()?;
        let mut dev_out = dev
            .as_ref()
            .map(|a| Tensor::<f32>::new(a, out_shape))
            .transpose()?;
        let mut binding = session.create_binding()?;
        match &mut dev_in {
            Some(d) => {
                host_in.copy_into(&mut *d)?;
                binding.bind_input(input, &*d)?;
            }
            None => binding.bind_input(input, &host_in)?,
        }
        match &mut dev_out {
            Some(d) => binding.bind_output(output, d)?,
            None => binding.bind_output(output, &mut host_out)?,
        }
        Ok(Bound {
            binding,
            input_name: input.to_string(),
            host_in,
            dev_in,
            host_out,
            dev_out,
            in_shape,
            out_dims: out_dims.to_vec(),
        })
    }

    /// Runs `n` images (`data`, whole images, at most the bound batch of them) and returns their outputs;
    /// the rest of the batch holds earlier images or zeros, and their outputs are dropped.
    pub(crate) fn run(
        &mut self,
        session: &mut Session,
        data: &[f32],
        n: usize,
    ) -> ort::Result<Vec<f32>> {
        self.host_in.extract_tensor_mut().1[..data.len()].copy_from_slice(data);
        match &mut self.dev_in {
            Some(d) => self.host_in.copy_into(d)?,
            // Bound again: whether ONNX Runtime reads a host input in place or copies it when it is
            // bound is its own choice.
            None => self
                .binding
                .bind_input(self.input_name.as_str(), &self.host_in)?,
        }
        drop(session.run_binding(&self.binding)?);
        if let Some(d) = &self.dev_out {
            d.copy_into(&mut self.host_out)?;
        }
        let per: usize = self.out_dims.iter().product();
        Ok(self.host_out.extract_tensor().1[..n * per].to_vec())
    }
}

impl BaseModel {
    /// Refuses a plain run (`what`) on a session with a CUDA graph: the graph replays its captured
    /// batch, whatever is fed.
    pub(super) fn no_graph(&self, what: &str) -> Result<()> {
        if self.graph {
            return Err(Error::invalid(
                "cuda_graph",
                format!("runs float batches through bound tensors only; {what} cannot go through a CUDA graph"),
            ));
        }
        Ok(())
    }

    /// One float batch through the bound tensors, bound on the first batch (and again for a
    /// larger one, except in a CUDA graph).
    pub(super) fn run_bound(
        &mut self,
        shape: [usize; 4],
        data: &[f32],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let path = self.info.path.clone();
        let err = |e: ort::Error| Error::model(&path, format!("inference (I/O binding): {e}"));
        let fits = |b: &Bound| b.in_shape[0] >= n && b.in_shape[1..] == shape[1..];
        match &self.bound {
            Some(b) if fits(b) => {}
            Some(b) if self.graph => {
                return Err(Error::model(
                    &path,
                    format!(
                        "a CUDA graph replays the shape of its first batch {:?}; this batch is {shape:?}",
                        b.in_shape
                    ),
                ))
            }
            _ => {
                let shape_known = self.info.output_shape.len() >= 2;
                let static_dims =
                    shape_known && self.info.output_shape[1..].iter().all(|&d| d > 0);
                // A dynamic shape is learnt from one plain run, whose outputs are this batch's.
                let (out_dims, learnt) = if static_dims {
                    let dims = self.info.output_shape[1..].iter().map(|&d| d as usize);
                    (dims.collect::<Vec<usize>>(), None)
                } else if self.graph {
                    return Err(Error::model(
                        &path,
                        format!(
                            "a CUDA graph needs an output of static shape; '{}' is {:?}",
                            self.info.output_name, self.info.output_shape
                        ),
                    ));
                } else {
                    let (values, dims) = self.run_raw(shape, data, n)?;
                    (dims.clone(), Some((values, dims)))
                };
                let names = (self.info.input_name.as_str(), shape);
                let out = (self.info.output_name.as_str(), out_dims.as_slice());
                self.bound = Some(Bound::new(&self.session, self.device, names, out).map_err(err)?);
                if let Some(done) = learnt {
                    return Ok(done);
                }
            }
        }
        let b = self.bound.as_mut().expect("bound above");
        let values = b.run(&mut self.session, data, n).map_err(err)?;
        Ok((values, b.out_dims.clone()))
    }
}
