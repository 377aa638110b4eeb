//! The frozen base: an ONNX Runtime session plus what we learn about it (input name, layout, size,
//! output, metadata, matching preset), and how its preprocessing is chosen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::cache::tokens::{TokenRequest, Tokens};
use crate::data::preprocess::{
    ColorOrder, Decode, Interpolation, Layout, Mode, Normalize, Preprocess, ResizeMode,
};
use crate::data::presets::{self, Preset};
use crate::error::{Error, Result};
use crate::infer::runtime::{self, Device, RuntimeConfig};
use crate::onnx;

mod binding;
mod metadata;
use binding::Bound;
use metadata::FromMetadata;

/// What the model file says about itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub input_name: String,
    /// Input shape with -1 for dynamic dimensions.
    pub input_shape: Vec<i64>,
    pub layout: Layout,
    /// Fixed (height, width), or `None` when dynamic.
    pub size: Option<(u32, u32)>,
    pub output_name: String,
    pub output_shape: Vec<i64>,
    pub metadata: BTreeMap<String, String>,
    pub preset: Option<Preset>,
    /// The input takes uint8 pixels (an export with the preprocessing inside).
    pub input_u8: bool,
}

impl ModelInfo {
    /// Refuses a model that takes uint8 images (an export with the preprocessing inside) for a
    /// command that feeds it preprocessed float tensors (`what` it is used for).
    pub fn float_input(&self, what: &str) -> crate::error::Result<()> {
        if self.input_u8 {
            return Err(crate::error::Error::model(
                &self.path,
                format!("takes uint8 images (an export with the preprocessing inside), not float tensors {what}: score images with it (`headstart score --model`), or use the float model"),
            ));
        }
        Ok(())
    }

    /// One line for the terminal.
    pub fn describe(&self) -> String {
        let dims = |v: &[i64]| {
            v.iter()
                .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                .collect::<Vec<_>>()
                .join("x")
        };
        format!(
            "input '{}' [{}] {} -> output '{}' [{}]{}",
            self.input_name,
            dims(&self.input_shape),
            self.layout,
            self.output_name,
            dims(&self.output_shape),
            self.preset
                .as_ref()
                .map(|p| format!(", preset {}", p.name))
                .unwrap_or_default()
        )
    }
}

/// A loaded base model ready to run batches.
pub struct BaseModel {
    pub info: ModelInfo,
    pub device: Device,
    /// Why `Device::Auto` ended on the CPU (to be reported by the caller).
    pub fallback: Option<String>,
    session: Session,
    /// On CUDA, the largest batch run so far: smaller batches are padded to it, so that the session
    /// sees one input shape (each new shape costs a cuDNN algorithm search over every convolution:
    /// seconds for a depthwise net in float16). On by default on CUDA only.
    pad_batches: bool,
    padded_batch: usize,
    /// How a token output is pooled before it is returned ([`Tokens::NONE`] by default).
    tokens: Tokens,
    /// Float batches run through tensors bound once ([`RuntimeConfig::bound`]); `graph`: as a
    /// CUDA graph, whose batch size cannot change.
    bind: bool,
    graph: bool,
    bound: Option<Bound>,
}

fn tensor_shape(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match v {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// Tells NCHW from NHWC by where the 3 colour channels sit.
pub fn detect_layout(shape: &[i64]) -> Option<Layout> {
    if shape.len() != 4 {
        return None;
    }
    match (shape[1], shape[3]) {
        (3, c) if c != 3 => Some(Layout::Nchw),
        (c, 3) if c != 3 => Some(Layout::Nhwc),
        _ => None,
    }
}

/// The layout and fixed size (when the model has one) of an image input `name` of `shape`: rank 4,
/// three channels, the layout from `layout`, the metadata or the shape, and each fixed side within
/// [`MAX_INPUT_SIDE`](crate::util::limits::MAX_INPUT_SIDE) (checked before any buffer is sized).
fn image_input(
    path: &Path,
    name: &str,
    shape: &[i64],
    layout: Option<Layout>,
    metadata: &BTreeMap<String, String>,
) -> Result<(Layout, Option<(u32, u32)>)> {
    if shape.len() != 4 {
        return Err(Error::model(
            path,
            format!(
                "input '{name}' {shape:?} is not an image tensor (rank {}; headstart feeds [N,3,H,W] or [N,H,W,3])",
                shape.len()
            ),
        ));
    }
    let meta_layout = metadata.get("layout").and_then(|l| Layout::parse(l));
    let layout = layout.or(meta_layout).or_else(|| detect_layout(shape)).ok_or_else(|| {
        Error::model(
            path,
            format!(
                "cannot tell the layout of input '{name}' {shape:?} (expected [N,3,H,W] or [N,H,W,3]); pass --layout nchw|nhwc"
            ),
        )
    })?;
    let (hd, wd, cd) = match layout {
        Layout::Nchw => (shape[2], shape[3], shape[1]),
        Layout::Nhwc => (shape[1], shape[2], shape[3]),
    };
    if cd != 3 && cd >= 0 {
        return Err(Error::model(
            path,
            format!("input '{name}' has {cd} channels in {layout} layout; expected 3 (RGB)"),
        ));
    }
    let max = crate::util::limits::MAX_INPUT_SIDE as i64;
    if hd > max || wd > max {
        return Err(Error::model(
            path,
            format!(
                "input '{name}' declares {wd}x{hd} pixels: each side must be between 1 and {max} pixels"
            ),
        ));
    }
    Ok((layout, (hd > 0 && wd > 0).then_some((hd as u32, wd as u32))))
}

impl BaseModel {
    /// Opens `path` and reads its input/output and metadata. `layout` overrides detection.
    pub fn open(path: &Path, rt: &RuntimeConfig, layout: Option<Layout>) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::model(path, "model file not found"));
        }
        let proto = onnx::load(path)?;
        // ONNX Runtime reads the weights files itself: a FIFO there would wait forever.
        for f in onnx::external_data_files(path) {
            crate::util::paths::check_regular(&f)?;
        }
        let metadata = onnx::metadata(&proto);
        let preset = presets::detect(&metadata, &onnx::op_counts(&proto));
        drop(proto);
        let (session, device, fallback) = runtime::session(path, rt)?;
        if session.inputs().len() != 1 {
            return Err(Error::model(
                path,
                format!(
                    "expected one image input, the model has {}: {}",
                    session.inputs().len(),
                    session
                        .inputs()
                        .iter()
                        .map(|i| i.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let input = &session.inputs()[0];
        let (ty, input_shape) = tensor_shape(input.dtype()).ok_or_else(|| {
            Error::model(path, format!("input '{}' is not a tensor", input.name()))
        })?;
        let input_u8 = match ty {
            TensorElementType::Float32 => false,
            // A headstart export with the preprocessing in its graph takes the resized pixels.
            TensorElementType::Uint8 if metadata.get("headstart_preprocessing_in_graph").is_some_and(|v| v == "true") => true,
            _ => {
                return Err(Error::model(
                    path,
                    format!(
                        "input '{}' is {ty:?}; headstart feeds float32 images (or uint8 to its own exports)",
                        input.name()
                    ),
                ))
            }
        };
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| Error::model(path, "model has no outputs"))?;
        let (oty, output_shape) = tensor_shape(output.dtype()).ok_or_else(|| {
            Error::model(path, format!("output '{}' is not a tensor", output.name()))
        })?;
        if oty != TensorElementType::Float32 {
            return Err(Error::model(
                path,
                format!(
                    "output '{}' is {oty:?}; expected float32 features",
                    output.name()
                ),
            ));
        }
        let (layout, size) = image_input(path, input.name(), &input_shape, layout, &metadata)?;
        let info = ModelInfo {
            path: path.to_path_buf(),
            input_name: input.name().to_string(),
            input_shape,
            layout,
            size,
            output_name: output.name().to_string(),
            output_shape,
            metadata,
            preset,
            input_u8,
        };
        Ok(BaseModel {
            info,
            device,
            fallback,
            session,
            pad_batches: device == Device::Cuda,
            padded_batch: 0,
            tokens: Tokens::NONE,
            bind: rt.bound(),
            graph: rt.cuda_graph && device == Device::Cuda,
            bound: None,
        })
    }

    /// Runs one batch: `data` holds `n` preprocessed images. Returns the flat output and its per-image shape.
    pub fn run(
        &mut self,
        pre: &Preprocess,
        data: &[f32],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        // A fixed batch other than `n` runs in pieces, unbound (the bound tensors are `n` long).
        let (values, dims) = if self.bind && self.fixed_batch().is_none_or(|b| b == n) {
            self.run_bound(pre.batch_shape(n), data, n)?
        } else {
            self.run_raw(pre.batch_shape(n), data, n)?
        };
        self.tokens.apply(values, n, &dims, &self.info.path)
    }

    /// Runs `n` images of resized uint8 RGB pixels (NHWC at the preprocessing's size) through a
    /// model whose graph normalises them (`export --with-preprocessing`).
    pub fn run_u8(
        &mut self,
        pre: &Preprocess,
        data: &[u8],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        self.no_graph("uint8 images")?;
        let (values, dims) =
            self.run_raw([n, pre.size.0 as usize, pre.size.1 as usize, 3], data, n)?;
        self.tokens.apply(values, n, &dims, &self.info.path)
    }

    /// Runs `n` preprocessed images and hands each output named in `names` (float32) to `f`, with
    /// its values for the whole batch (for calibration).
    pub fn run_outputs(
        &mut self,
        pre: &Preprocess,
        data: &[f32],
        n: usize,
        names: &[String],
        f: &mut dyn FnMut(&str, &[f32]),
    ) -> Result<()> {
        self.no_graph("calibration outputs")?;
        // A fixed batch `b`: pieces of `b`, the last padded, each output cut to its real images.
        if let Some(b) = self.fixed_batch().filter(|&b| b != n && n > 0) {
            for (k, piece) in padded_pieces(data, n, b) {
                self.run_outputs(pre, &piece, b, names, &mut |name, v| {
                    f(name, &v[..v.len() / b * k])
                })?;
            }
            return Ok(());
        }
        let path = &self.info.path;
        let tensor = TensorRef::from_array_view((pre.batch_shape(n), data))
            .map_err(|e| Error::model(path, e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.info.input_name.as_str() => tensor])
            .map_err(|e| Error::model(path, format!("inference failed: {e}")))?;
        for name in names {
            let Some(v) = outputs.get(name.as_str()) else {
                return Err(Error::model(path, format!("no output '{name}'")));
            };
            let (_, values) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::model(path, format!("output '{name}': {e}")))?;
            f(name, values);
        }
        Ok(())
    }

    /// The batch size the model's input is fixed at, if it is.
    fn fixed_batch(&self) -> Option<usize> {
        self.info
            .input_shape
            .first()
            .filter(|&&d| d > 0)
            .map(|&d| d as usize)
    }

    /// Pools the output as `tokens` says from now on (see [`crate::cache::tokens`]).
    pub fn set_tokens(&mut self, tokens: Tokens) {
        self.tokens = tokens;
    }

    /// The pooling of this model's output for `req` (the request, else the model's metadata);
    /// set it with [`BaseModel::set_tokens`].
    pub fn resolve_tokens(&self, req: TokenRequest) -> Result<Tokens> {
        let i = &self.info;
        Tokens::resolve(req, &i.metadata, &i.output_name, &i.output_shape, &i.path)
    }

    /// The pooling in use.
    pub fn tokens(&self) -> Tokens {
        self.tokens
    }

    /// Pads smaller batches to the largest one seen (the default on CUDA; see `pad_batches`).
    pub fn set_batch_padding(&mut self, on: bool) {
        self.pad_batches = on;
    }

    /// One batch of `n` images as a tensor of `shape` (float32 or uint8) through the session, before
    /// any token pooling. On CUDA a batch smaller than an earlier one is padded with zeros to its
    /// size, and the padding's outputs are dropped.
    fn run_raw<T>(
        &mut self,
        mut shape: [usize; 4],
        data: &[T],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)>
    where
        T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + Default + 'static,
    {
        let path = &self.info.path;
        let fixed_batch = self.info.input_shape.first().is_some_and(|&d| d > 0);
        // A model made for batches of exactly `b` (often 1) takes any batch: run in pieces of `b`,
        // the last padded with zeros and its padding's outputs dropped (it failed with the
        // runtime's "invalid dimensions").
        if let Some(b) = self.fixed_batch() {
            if n != b && n > 0 {
                let (mut values, mut dims) = (Vec::new(), Vec::new());
                for (k, piece) in padded_pieces(data, n, b) {
                    let mut s = shape;
                    s[0] = b;
                    let (v, d) = self.run_raw(s, &piece, b)?;
                    values.extend_from_slice(&v[..k * d.iter().product::<usize>()]);
                    dims = d;
                }
                return Ok((values, dims));
            }
        }
        let pad = self.pad_batches && !fixed_batch && n > 0 && n < self.padded_batch;
        let padded;
        let data = if pad {
            let per = data.len() / n;
            padded = data
                .iter()
                .cloned()
                .chain(std::iter::repeat_n(
                    T::default(),
                    per * (self.padded_batch - n),
                ))
                .collect::<Vec<T>>();
            shape[0] = self.padded_batch;
            &padded[..]
        } else {
            self.padded_batch = self.padded_batch.max(n);
            data
        };
        let tensor = TensorRef::from_array_view((shape, data))
            .map_err(|e| Error::model(path, e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.info.input_name.as_str() => tensor])
            .map_err(|e| Error::model(path, format!("inference failed: {e}")))?;
        let (mut values, dims) = first_output(&self.info, outputs, shape[0])?;
        values.truncate(n * dims.iter().product::<usize>());
        Ok((values, dims))
    }
}

/// The first output of a run as (values, per-image shape), checking the batch dimension.
/// `data` (`n` images of equal length) in pieces of `b` images, the last padded with zeros to `b`:
/// each piece with how many real images it holds (for a model whose batch is fixed at `b`).
fn padded_pieces<T: Clone + Default>(
    data: &[T],
    n: usize,
    b: usize,
) -> impl Iterator<Item = (usize, Vec<T>)> + '_ {
    let per = data.len() / n.max(1);
    (0..n).step_by(b.max(1)).map(move |start| {
        let k = (n - start).min(b);
        let mut piece = data[start * per..(start + k) * per].to_vec();
        piece.resize(per * b, T::default());
        (k, piece)
    })
}

fn first_output(
    info: &ModelInfo,
    outputs: ort::session::SessionOutputs,
    n: usize,
) -> Result<(Vec<f32>, Vec<usize>)> {
    {
        let path = &info.path;
        let (oshape, values) = outputs[info.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::model(path, e.to_string()))?;
        let dims: Vec<usize> = oshape.iter().map(|&d| d as usize).collect();
        if dims.first() != Some(&n) {
            return Err(Error::model(
                path,
                format!(
                    "output batch dimension {:?} != {n} images fed",
                    dims.first()
                ),
            ));
        }
        Ok((values.to_vec(), dims[1..].to_vec()))
    }
}

/// Preprocessing choices from the command line; `None` means "decide from the model".
#[derive(Debug, Clone, Default)]
pub struct PreprocessOverrides {
    pub mode: Option<Mode>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub color: Option<ColorOrder>,
    pub resize: Option<ResizeMode>,
    pub interpolation: Option<Interpolation>,
    /// JPEG decoding (default [`Decode::Fast`]).
    pub decode: Option<Decode>,
    pub size: Option<(u32, u32)>,
    pub preset: Option<String>,
}

impl PreprocessOverrides {
    /// The settings given, by name (`preprocess`, `mean`, `std`, `color`, `resize`,
    /// `interpolation`, `decode`, `size`, `preset`).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("preprocess", self.mode.is_some()),
            ("mean", self.mean.is_some()),
            ("std", self.std.is_some()),
            ("color", self.color.is_some()),
            ("resize", self.resize.is_some()),
            ("interpolation", self.interpolation.is_some()),
            ("decode", self.decode.is_some()),
            ("size", self.size.is_some()),
            ("preset", self.preset.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Parses "224x224" or "224" into (height, width).
pub fn parse_size(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(['x', 'X']);
    let w: u32 = it.next()?.trim().parse().ok()?;
    let h: u32 = match it.next() {
        Some(h) => h.trim().parse().ok()?,
        None => w,
    };
    (w > 0 && h > 0 && it.next().is_none()).then_some((h, w))
}

/// The chosen preprocessing and, for each part, where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub preprocess: Preprocess,
    pub sources: Vec<String>,
}

/// The first layer that is set (command line, metadata, preset), else `default`.
fn first_set<T>(layers: [Option<T>; 3], default: T) -> T {
    let [flag, meta, preset] = layers;
    flag.or(meta).or(preset).unwrap_or(default)
}

/// The normalisation the flags ask for: `--preprocess MODE` (with `--color` if given), or `--mean`
/// with `--std` (1 when left out); `None` when no flag says.
fn normalize_from_flags(o: &PreprocessOverrides) -> Result<Option<Normalize>> {
    Ok(match (o.mode, o.mean, o.std) {
        (Some(mode), None, None) => Some(Normalize {
            color: o.color.unwrap_or(mode.normalize().color),
            ..mode.normalize()
        }),
        (None, Some(mean), std) => Some(Normalize {
            color: o.color.unwrap_or(ColorOrder::Rgb),
            mean,
            std: std.unwrap_or([1.0; 3]),
        }),
        (None, None, Some(_)) => return Err(Error::invalid("std", "is given without a mean")),
        (Some(_), _, _) => {
            return Err(Error::invalid(
                "preprocess",
                "give either a preset or mean/std, not both",
            ))
        }
        (None, None, None) => None,
    })
}

/// Decides the preprocessing: command line, then the model's metadata, then a matched preset. Fails
/// with the flag to pass when none of them says.
pub fn resolve_preprocess(info: &ModelInfo, o: &PreprocessOverrides) -> Result<Resolved> {
    let m = &info.metadata;
    let preset = match &o.preset {
        Some(name) => Some(presets::by_name(name).ok_or_else(|| {
            Error::Config(format!(
                "unknown preset '{name}'; known: {}",
                presets::all()
                    .iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => info.preset.clone(),
    };
    let pname = preset.as_ref().map(|p| format!("preset {}", p.name));
    let mut sources = Vec::new();
    let mut pick = |what: &str, flag: Option<String>, meta: bool, pre: bool| {
        let src = if let Some(f) = flag {
            f
        } else if meta {
            "model metadata".into()
        } else if pre {
            pname.clone().unwrap_or_default()
        } else {
            "default".into()
        };
        sources.push(format!("{what}: {src}"));
    };

    // Normalisation.
    let flag_norm = normalize_from_flags(o)?;
    let meta = FromMetadata::read(m, info, o, flag_norm.is_none())?;
    let meta_norm = meta.normalize;
    let normalize = flag_norm
        .or(meta_norm)
        .or(preset.as_ref().map(|p| p.normalize))
        .ok_or_else(|| {
            Error::model(
                &info.path,
                "cannot tell the preprocessing: the model has no metadata_props (mean/std) and matches no preset; \
                 pass --preprocess caffe|torch|tf|raw or --mean R,G,B --std R,G,B",
            )
        })?;
    pick(
        "normalise",
        (o.mode.is_some() || o.mean.is_some()).then(|| "command line".into()),
        meta_norm.is_some(),
        preset.is_some(),
    );

    // Size.
    let meta_size = meta.size;
    let size = match (info.size, o.size) {
        (Some(fixed), Some(asked)) if fixed != asked => {
            return Err(Error::model(
                &info.path,
                format!("--size {}x{} != the model's fixed input {}x{}", asked.1, asked.0, fixed.1, fixed.0),
            ))
        }
        (Some(fixed), _) => fixed,
        (None, Some(asked)) => asked,
        (None, None) => meta_size.or(preset.as_ref().map(|p| p.size)).ok_or_else(|| {
            Error::model(&info.path, "the model's input size is dynamic and neither metadata nor a preset gives it; pass --size WxH")
        })?,
    };
    pick(
        "size",
        o.size
            .map(|_| "command line".into())
            .or(info.size.map(|_| "model input".into())),
        meta_size.is_some(),
        preset.is_some(),
    );

    // Resize and interpolation: the first of command line, metadata, preset, else the default.
    let resize_layers = [o.resize, meta.resize, preset.as_ref().map(|p| p.resize)];
    let interp_layers = [
        o.interpolation,
        meta.interpolation,
        preset.as_ref().map(|p| p.interpolation),
    ];
    for (what, set) in [
        ("resize", resize_layers.map(|l| l.is_some())),
        ("interpolation", interp_layers.map(|l| l.is_some())),
    ] {
        pick(what, set[0].then(|| "command line".into()), set[1], set[2]);
    }
    let resize = first_set(resize_layers, ResizeMode::Squash);
    let interpolation = first_set(interp_layers, Interpolation::Bilinear);
    let preprocess = Preprocess {
        size,
        layout: info.layout,
        resize,
        interpolation,
        normalize,
        // An export keeps the decode its head was trained with.
        decode: o.decode.or(meta.decode).unwrap_or_default(),
    };
    // Checked as the flags are, whatever gave the values (flags, metadata, a preset).
    if let Some(why) = preprocess.problem() {
        return Err(Error::model(
            &info.path,
            format!("{why} (chosen by {})", sources.join(", ")),
        ));
    }
    Ok(Resolved {
        preprocess,
        sources,
    })
}
