//! The overlapped decode -> inference pipeline shared by `extract`, `score` and `evaluate`: worker
//! threads decode and resize images while the model runs on full batches; each finished batch (or
//! failed image) goes to a sink as soon as it is ready. Image paths travel with every batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::data::preprocess::{self, Preprocess, Preprocessor};
use crate::data::remote::Prefetch;
use crate::error::Result;
use crate::infer::model::BaseModel;

/// What the model takes: normalised floats, or the resized uint8 RGB pixels (NHWC) of a model that
/// normalises inside its graph (`export --with-preprocessing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    F32,
    U8,
}

/// Model outputs for images `indices` (into the path list): `out` is `indices.len()` rows of
/// `shape` (per image).
pub struct Batch<'a> {
    pub indices: &'a [usize],
    pub out: &'a [f32],
    pub shape: &'a [usize],
}

impl<'a> Batch<'a> {
    /// Values per image.
    pub fn width(&self) -> usize {
        self.shape.iter().product()
    }

    /// (path index, output row) of each image.
    pub fn rows(&self) -> impl Iterator<Item = (usize, &'a [f32])> + '_ {
        let w = self.width();
        self.indices
            .iter()
            .enumerate()
            .map(move |(k, &i)| (i, &self.out[k * w..(k + 1) * w]))
    }
}

/// One event for the sink.
pub enum Event<'a> {
    Batch(Batch<'a>),
    /// An image that could not be read, with the reason (without the path).
    Failed {
        index: usize,
        reason: String,
    },
}

/// Pipeline settings.
pub struct Pipeline<'a> {
    pub pre: &'a Preprocess,
    pub input: InputKind,
    pub batch: usize,
    /// Decoding threads (0 = all cores).
    pub decode_threads: usize,
    pub paths: &'a [PathBuf],
    /// Mirror image `i` left-right when `flip[i]` (empty: no image is mirrored).
    pub flip: &'a [bool],
    /// Augment image `i` with `augment[i]` (empty: no image is augmented).
    pub augment: &'a [Option<crate::data::augment::AugParams>],
    /// Images in object storage: downloaded ahead of the workers, `paths` then only name them.
    pub prefetch: Option<&'a Prefetch>,
}

enum Decoded {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

struct Msg {
    index: usize,
    data: std::result::Result<Decoded, String>,
}

/// Decodes one image for `pre`, augmented as asked: an augmented copy at full size (its random
/// crop may keep a small part of the photo; its mirror is the augmentation's own). A plain image's
/// mirror is made of its input tensor ([`preprocess::mirror_pixels`]).
fn decode_one(
    path: &Path,
    pre: &Preprocess,
    augment: Option<&Option<crate::data::augment::AugParams>>,
) -> Result<crate::data::decode::Decoded> {
    if let Some(Some(p)) = augment {
        let image = crate::data::augment::apply(crate::data::decode::decode(path)?, p);
        return Ok(crate::data::decode::Decoded::full(image));
    }
    crate::data::decode::decode_for(path, pre)
}

/// The error text without the leading "path: " (the path is stored beside it).
pub fn strip_path(msg: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    msg.strip_prefix(&prefix).unwrap_or(msg).to_string()
}

impl Pipeline<'_> {
    /// Runs images `pending` (indices into `paths`) through `model`; returns how many went through
    /// the model. A sink error stops the run and is returned.
    pub fn run(
        &self,
        model: &mut BaseModel,
        pending: &[usize],
        sink: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<usize> {
        use crate::util::limits::{check, MAX_BATCH, MAX_THREADS};
        check("batch", self.batch, 1, MAX_BATCH)?;
        check("decode_threads", self.decode_threads, 0, MAX_THREADS)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let workers = if self.decode_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            self.decode_threads
        }
        .min(pending.len());
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(self.batch * 2);
        let (pre, input, paths, flip) = (self.pre, self.input, self.paths, self.flip);
        let (augment, prefetch) = (self.augment, self.prefetch);
        std::thread::scope(|scope| -> Result<usize> {
            if let Some(p) = prefetch {
                scope.spawn(move || p.run(pending));
            }
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    let mut pp = Preprocessor::new(*pre);
                    while !stop.load(Ordering::Relaxed) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&index) = pending.get(k) else { break };
                        let mirrored = flip.get(index).copied().unwrap_or(false);
                        let local = match prefetch.map(|p| p.wait(index)) {
                            None => Ok(paths[index].clone()),
                            Some(r) => r,
                        };
                        let data = local.and_then(|local| {
                            let d = decode_one(&local, pre, augment.get(index))
                                .map_err(|e| strip_path(&e.to_string(), &local));
                            if let Some(p) = prefetch {
                                p.release(index);
                            }
                            d
                        });
                        // A plain image's mirror is its input tensor's, as an exported
                        // `--tta flip` graph makes it: mirroring the photo before an off-centre
                        // crop box would move the box by a pixel.
                        let tensor_mirror =
                            mirrored && !matches!(augment.get(index), Some(Some(_)));
                        let data = data.and_then(|d| {
                            let mut px = pp
                                .resize_decoded(&d)
                                .map_err(|e| strip_path(&e.to_string(), &paths[index]))?;
                            if tensor_mirror {
                                preprocess::mirror_pixels(&mut px, pre.size.1 as usize);
                            }
                            Ok(match input {
                                InputKind::F32 => {
                                    let mut out = vec![0f32; pre.len()];
                                    preprocess::normalize_into(pre, &px, &mut out);
                                    Decoded::F32(out)
                                }
                                InputKind::U8 => Decoded::U8(px),
                            })
                        });
                        let msg = Msg { index, data };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = self.consume(model, &rx, sink);
            stop.store(true, Ordering::Relaxed);
            if let Some(p) = prefetch {
                p.stop();
            }
            drop(rx);
            result
        })
    }

    /// Runs the model on whole batches as they arrive. An assembler thread gathers the decoded
    /// images into batch buffers (two in flight, recycled), so that copying them overlaps with
    /// inference instead of preceding it; failures and batches reach `sink` in arrival order.
    fn consume(
        &self,
        model: &mut BaseModel,
        rx: &crossbeam_channel::Receiver<Msg>,
        sink: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<usize> {
        let (btx, brx) = crossbeam_channel::bounded::<Assembled>(1);
        let (free_tx, free_rx) = crossbeam_channel::bounded::<Buffers>(2);
        let batch = self.batch;
        std::thread::scope(|scope| -> Result<usize> {
            scope.spawn(move || assemble(rx, batch, &btx, &free_rx));
            // Owned here, so that an early return drops it: the assembler's next send then fails
            // and it stops, instead of the scope waiting on it forever.
            let brx = brx;
            let mut done = 0;
            for item in brx.iter() {
                let mut b = match item {
                    Assembled::Failed { index, reason } => {
                        sink(Event::Failed { index, reason })?;
                        continue;
                    }
                    Assembled::Batch(b) => b,
                };
                let n = b.indices.len();
                let (out, shape) = match self.input {
                    InputKind::F32 => model.run(self.pre, &b.floats, n)?,
                    InputKind::U8 => model.run_u8(self.pre, &b.bytes, n)?,
                };
                sink(Event::Batch(Batch {
                    indices: &b.indices,
                    out: &out,
                    shape: &shape,
                }))?;
                done += n;
                b.floats.clear();
                b.bytes.clear();
                b.indices.clear();
                let _ = free_tx.try_send(b);
            }
            Ok(done)
        })
    }
}

/// One batch's inputs, reused from batch to batch.
#[derive(Default)]
struct Buffers {
    floats: Vec<f32>,
    bytes: Vec<u8>,
    indices: Vec<usize>,
}

enum Assembled {
    Batch(Buffers),
    Failed { index: usize, reason: String },
}

/// Gathers decoded images from `rx` into batches of `batch` (the last one shorter) and passes them
/// and the failures on, in arrival order. Stops when the workers are done or the consumer is gone.
fn assemble(
    rx: &crossbeam_channel::Receiver<Msg>,
    batch: usize,
    out: &crossbeam_channel::Sender<Assembled>,
    free: &crossbeam_channel::Receiver<Buffers>,
) {
    let fresh = || free.try_recv().unwrap_or_default();
    let mut b = fresh();
    loop {
        let msg = rx.recv();
        let open = msg.is_ok();
        match msg {
            Ok(Msg { index, data: Ok(d) }) => {
                match d {
                    Decoded::F32(t) => b.floats.extend_from_slice(&t),
                    Decoded::U8(t) => b.bytes.extend_from_slice(&t),
                }
                b.indices.push(index);
            }
            Ok(Msg {
                index,
                data: Err(reason),
            }) => {
                if out.send(Assembled::Failed { index, reason }).is_err() {
                    return;
                }
            }
            Err(_) => {}
        }
        if b.indices.len() == batch || (!open && !b.indices.is_empty()) {
            let full = std::mem::replace(&mut b, fresh());
            if out.send(Assembled::Batch(full)).is_err() {
                return;
            }
        }
        if !open {
            return;
        }
    }
}
