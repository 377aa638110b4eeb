//! Image decoding and preprocessing as small composable pieces: decode (with EXIF orientation) ->
//! resize (squash or centre crop, SIMD via fast_image_resize) -> normalise (colour order, mean, std) ->
//! write into the model's layout (NCHW or NHWC).

use std::fmt;

use fast_image_resize::{
    self as fr, images::Image as FrImage, FilterType, PixelType, ResizeAlg, ResizeOptions,
};
use image::RgbImage;

use super::decode::Decoded;
use crate::error::{Error, Result};

/// Keras VGG16/ResNet50 `preprocess_input` ("caffe"): BGR means, no scaling.
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
/// torchvision's ImageNet mean and std, on the 0..1 scale.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// torchvision / TF-EfficientNet centre crop: the crop keeps 224/256 of the shorter side.
pub const DEFAULT_CROP_FRACTION: f32 = 0.875;

/// Tensor layout of an image batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "NCHW" => Some(Layout::Nchw),
            "NHWC" => Some(Layout::Nhwc),
            _ => None,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        })
    }
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

impl fmt::Display for ColorOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColorOrder::Rgb => "RGB",
            ColorOrder::Bgr => "BGR",
        })
    }
}

/// How an image is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeMode {
    /// Whole image to the input size, aspect ratio not kept (Keras' default).
    Squash,
    /// Centre crop keeping `fraction` of the largest box of the input's aspect ratio, then resize.
    Crop { fraction: f32 },
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResizeMode::Squash => f.write_str("squash"),
            ResizeMode::Crop { fraction } => write!(f, "crop {fraction}"),
        }
    }
}

/// Resampling filter (all antialiased when shrinking, like Pillow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Nearest,
    Bilinear,
    /// Keys cubic with a = -0.5 (Catmull-Rom): Pillow's and TF's bicubic.
    Bicubic,
    Lanczos3,
}

impl Interpolation {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nearest" => Some(Self::Nearest),
            "bilinear" | "linear" => Some(Self::Bilinear),
            "bicubic" | "cubic" => Some(Self::Bicubic),
            "lanczos" | "lanczos3" => Some(Self::Lanczos3),
            _ => None,
        }
    }
    fn alg(self) -> ResizeAlg {
        match self {
            Self::Nearest => ResizeAlg::Nearest,
            Self::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Self::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
            Self::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        }
    }
}

impl fmt::Display for Interpolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
            Self::Lanczos3 => "lanczos3",
        })
    }
}

/// Per-channel normalisation on the 0..255 pixel scale: `x = (pixel - mean) / std`, channels in the
/// order the model sees them (after any RGB->BGR swap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub color: ColorOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The named preprocessing modes of `keras.applications` (and raw pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BGR, minus the ImageNet BGR means, no scaling (VGG16, ResNet50 in Keras).
    Caffe,
    /// /255, then ImageNet mean/std (torchvision, DenseNet in Keras).
    Torch,
    /// Scaled to [-1, 1] (Inception, MobileNet, Xception in Keras).
    Tf,
    /// Pixels 0..255 as they are.
    Raw,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "caffe" => Some(Mode::Caffe),
            "torch" => Some(Mode::Torch),
            "tf" => Some(Mode::Tf),
            "raw" => Some(Mode::Raw),
            _ => None,
        }
    }

    pub fn normalize(self) -> Normalize {
        match self {
            Mode::Caffe => Normalize {
                color: ColorOrder::Bgr,
                mean: CAFFE_MEAN_BGR,
                std: [1.0; 3],
            },
            Mode::Torch => Normalize {
                color: ColorOrder::Rgb,
                mean: IMAGENET_MEAN.map(|m| m * 255.0),
                std: IMAGENET_STD.map(|s| s * 255.0),
            },
            Mode::Tf => Normalize {
                color: ColorOrder::Rgb,
                mean: [127.5; 3],
                std: [127.5; 3],
            },
            Mode::Raw => Normalize {
                color: ColorOrder::Rgb,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
        }
    }
}

impl fmt::Display for Normalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = [Mode::Caffe, Mode::Torch, Mode::Tf, Mode::Raw]
            .into_iter()
            .find(|m| m.normalize() == *self);
        let fmt3 = |v: [f32; 3]| v.map(|x| format!("{x}")).join(",");
        if let Some(m) = named {
            write!(f, "{} (", format!("{m:?}").to_lowercase())?;
        }
        write!(
            f,
            "{} mean {} std {}",
            self.color,
            fmt3(self.mean),
            fmt3(self.std)
        )?;
        if named.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Everything that turns a decoded image into the model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Input (height, width).
    pub size: (u32, u32),
    pub layout: Layout,
    pub resize: ResizeMode,
    pub interpolation: Interpolation,
    pub normalize: Normalize,
    /// How JPEGs are decoded (full size, or DCT-scaled when large).
    pub decode: Decode,
}

impl Preprocess {
    /// Why these settings cannot be used, if they cannot: each side of the size between 1 and
    /// [`MAX_INPUT_SIDE`](crate::util::limits::MAX_INPUT_SIDE), finite means, finite non-zero
    /// standard deviations, a crop fraction in (0, 1]. The same rule for flags, model metadata and
    /// a cache's or head's record.
    pub fn problem(&self) -> Option<String> {
        let max = crate::util::limits::MAX_INPUT_SIDE as u32;
        let (h, w) = self.size;
        if h == 0 || w == 0 || h > max || w > max {
            return Some(format!(
                "input size {w}x{h}: each side must be between 1 and {max} pixels"
            ));
        }
        let n = &self.normalize;
        if n.mean.iter().any(|v| !v.is_finite())
            || n.std.iter().any(|v| !v.is_finite() || v.abs() < 1e-12)
        {
            return Some(format!(
                "normalisation mean {:?} std {:?}: means must be finite and standard deviations finite and non-zero",
                n.mean, n.std
            ));
        }
        if let ResizeMode::Crop { fraction } = self.resize {
            if !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0) {
                return Some(format!("crop fraction {fraction}: must be in (0, 1]"));
            }
        }
        None
    }

    /// Number of f32 values of one image.
    pub fn len(&self) -> usize {
        3 * self.size.0 as usize * self.size.1 as usize
    }

    /// Always false: an input has at least one pixel.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Shape of a batch of `n` images.
    pub fn batch_shape(&self, n: usize) -> [usize; 4] {
        let (h, w) = (self.size.0 as usize, self.size.1 as usize);
        match self.layout {
            Layout::Nchw => [n, 3, h, w],
            Layout::Nhwc => [n, h, w, 3],
        }
    }

    /// A one-line description, printed before extraction and stored in the cache.
    pub fn describe(&self) -> String {
        format!(
            "{}x{} {} | resize {} {} | {} | decode {}",
            self.size.1,
            self.size.0,
            self.layout,
            self.resize,
            self.interpolation,
            self.normalize,
            self.decode
        )
    }

    /// The source rectangle (left, top, width, height) that is resized to the input size.
    pub fn source_box(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        match self.resize {
            ResizeMode::Squash => (0, 0, width, height),
            ResizeMode::Crop { fraction } => {
                let (th, tw) = (self.size.0 as f64, self.size.1 as f64);
                let (iw, ih) = (width as f64, height as f64);
                // Largest box with the input's aspect ratio, then keep `fraction` of it (TF's
                // integer centre crop: floor the size, offset rounded up).
                let (bw, bh) = if iw / ih > tw / th {
                    (ih * tw / th, ih)
                } else {
                    (iw, iw * th / tw)
                };
                let cw = ((bw * fraction as f64).floor() as u32).clamp(1, width);
                let ch = ((bh * fraction as f64).floor() as u32).clamp(1, height);
                ((width - cw).div_ceil(2), (height - ch).div_ceil(2), cw, ch)
            }
        }
    }
}

/// How JPEG files are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decode {
    /// Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, the smallest scale whose
    /// resize box stays at least as large as the model's input (libjpeg's scaled IDCT, Pillow's
    /// `draft`). Other formats, and JPEGs too small to shrink, are decoded in full.
    #[default]
    Fast,
    /// Every image is decoded at full size.
    Exact,
}

impl Decode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fast" => Some(Self::Fast),
            "exact" => Some(Self::Exact),
            _ => None,
        }
    }
}

impl fmt::Display for Decode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fast => "fast",
            Self::Exact => "exact",
        })
    }
}

/// Reusable per-thread state for preprocessing (the resizer keeps its buffers).
pub struct Preprocessor {
    pub config: Preprocess,
    resizer: fr::Resizer,
}

impl Preprocessor {
    pub fn new(config: Preprocess) -> Self {
        Preprocessor {
            config,
            resizer: fr::Resizer::new(),
        }
    }

    /// Resizes `img` to the input size (uint8 RGB, row-major HWC).
    pub fn resize(&mut self, img: &RgbImage) -> Result<Vec<u8>> {
        let (l, t, bw, bh) = self.config.source_box(img.width(), img.height());
        self.resize_box(img, [l, t, bw, bh].map(f64::from))
    }

    /// Resizes a DCT-scaled image: the box is the one of the full-size image, divided by the
    /// scale, so that both decodes see the same part of the photo.
    pub fn resize_decoded(&mut self, d: &Decoded) -> Result<Vec<u8>> {
        let (l, t, bw, bh) = self.config.source_box(d.full_size.0, d.full_size.1);
        let k = f64::from(d.denominator);
        let (iw, ih) = (f64::from(d.image.width()), f64::from(d.image.height()));
        let (l, t) = (f64::from(l + d.lead.0) / k, f64::from(t + d.lead.1) / k);
        let bw = (f64::from(bw) / k).min(iw - l);
        let bh = (f64::from(bh) / k).min(ih - t);
        self.resize_box(&d.image, [l, t, bw, bh])
    }

    /// Resizes the box `[left, top, width, height]` of `img` to the input size.
    fn resize_box(&mut self, img: &RgbImage, [l, t, bw, bh]: [f64; 4]) -> Result<Vec<u8>> {
        let (h, w) = self.config.size;
        let src =
            fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
                .map_err(|e| Error::Config(format!("resize source: {e}")))?;
        let mut dst = FrImage::new(w, h, PixelType::U8x3);
        let opts = ResizeOptions::new()
            .resize_alg(self.config.interpolation.alg())
            .crop(l, t, bw, bh);
        self.resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| Error::Config(format!("resize: {e}")))?;
        Ok(dst.into_vec())
    }

    /// Resizes and normalises `img` into `out` (length [`Preprocess::len`]) in the model's layout.
    pub fn apply(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        let pixels = self.resize(img)?;
        normalize_into(&self.config, &pixels, out);
        Ok(())
    }

    /// [`Preprocessor::apply`] for an image from [`decode_for`](crate::data::decode::decode_for).
    pub fn apply_decoded(&mut self, d: &Decoded, out: &mut [f32]) -> Result<()> {
        let pixels = self.resize_decoded(d)?;
        normalize_into(&self.config, &pixels, out);
        Ok(())
    }
}

/// Mirrors resized uint8 RGB pixels (HWC, rows of `width` pixels) left-right in place: the mirror
/// of the input tensor, which `--tta flip` and `--augment flip` use (and an exported `--tta flip`
/// graph makes), since normalising commutes with it.
pub fn mirror_pixels(pixels: &mut [u8], width: usize) {
    if width == 0 {
        return;
    }
    for row in pixels.chunks_exact_mut(3 * width) {
        for x in 0..width / 2 {
            let (a, b) = (3 * x, 3 * (width - 1 - x));
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// Writes resized uint8 RGB pixels (HWC) into `out` with the colour order, mean/std and layout of `cfg`.
pub fn normalize_into(cfg: &Preprocess, pixels: &[u8], out: &mut [f32]) {
    let n = cfg.size.0 as usize * cfg.size.1 as usize;
    assert_eq!(pixels.len(), 3 * n, "pixel buffer size");
    assert_eq!(out.len(), 3 * n, "output buffer size");
    let norm = &cfg.normalize;
    // Model channel c reads source channel src[c].
    let src = match norm.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    let scale = norm.std.map(|s| 1.0 / s);
    for c in 0..3 {
        let (m, k, s) = (norm.mean[c], scale[c], src[c]);
        match cfg.layout {
            Layout::Nchw => {
                let plane = &mut out[c * n..(c + 1) * n];
                for (o, px) in plane.iter_mut().zip(pixels.chunks_exact(3)) {
                    *o = (px[s] as f32 - m) * k;
                }
            }
            Layout::Nhwc => {
                for (o, px) in out.chunks_exact_mut(3).zip(pixels.chunks_exact(3)) {
                    o[c] = (px[s] as f32 - m) * k;
                }
            }
        }
    }
}
