//! Image decoding and preprocessing as small composable pieces: decode (with EXIF orientation) ->
//! resize (squash or centre crop, SIMD via fast_image_resize) -> normalise (colour order, mean, std) ->
//! write into the model's layout (NCHW or NHWC).

use std::fmt;
use std::path::Path;

use fast_image_resize::{
    self as fr, images::Image as FrImage, FilterType, PixelType, ResizeAlg, ResizeOptions,
};
use image::{ImageDecoder, ImageReader, RgbImage};

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

/// Images with a side longer than this are refused before any pixel is decoded.
pub const MAX_SIDE: u32 = 16_384;
/// Image files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Whether a JPEG file of `len` bytes has its end-of-image marker (FF D9) within its last 4 KiB
/// (encoders may pad after it). Decoders fill a cut-short JPEG with grey without saying so; we
/// refuse it.
fn jpeg_has_end_marker(path: &Path, f: &std::fs::File, len: u64) -> Result<bool> {
    let start = len.saturating_sub(4096);
    let mut tail = vec![0u8; (len - start) as usize];
    let n = read_at(path, f, start, &mut tail)?;
    Ok(tail[..n].windows(2).any(|w| w == [0xFF, 0xD9]))
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

/// Reads `buf.len()` bytes of the open file `f` (`path`) from `offset` on (fewer at its end), without
/// moving its position; returns how many.
fn read_at(path: &Path, f: &std::fs::File, offset: u64, buf: &mut [u8]) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(n)
}

/// An image file opened once and checked: every later read (the decoder, the scaled JPEG decoder)
/// goes through this one open file, so the file checked is the file decoded, and a network file
/// system sees one open per image.
struct Checked {
    file: std::fs::File,
    format: image::ImageFormat,
    width: u32,
    height: u32,
}

impl Checked {
    /// The file from its start, buffered (a duplicate of the one descriptor, which shares its
    /// position: readers are used one at a time).
    fn rewound(&self, path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.file.try_clone().map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        Ok(std::io::BufReader::new(f))
    }

    /// An image reader of the file, its format set.
    fn reader(&self, path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
        Ok(ImageReader::with_format(self.rewound(path)?, self.format))
    }
}

/// The checks made before any pixel is decoded: file size, a known format, the header's size, and
/// for a JPEG its end marker; the file is opened once for all of them.
fn checked_reader(path: &Path) -> Result<Checked> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    // Before opening: opening a FIFO would wait for a writer.
    crate::util::paths::check_regular(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > MAX_FILE_BYTES {
        return Err(err(format!(
            "file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit"
        )));
    }
    // The content decides, never the name: a text file called x.jpg is no image.
    let mut head = [0u8; 16];
    let n = read_at(path, &file, 0, &mut head)?;
    if n == 0 {
        return Err(err("empty file: not an image".into()));
    }
    let Ok(format) = image::guess_format(&head[..n]) else {
        let shown: String = head[..n.min(8)]
            .iter()
            .map(|&b| match b {
                b' '..=b'~' => (b as char).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect();
        return Err(err(format!(
            "not an image: its content is no JPEG, PNG, BMP, GIF or WebP (it begins \"{shown}\")"
        )));
    };
    let mut checked = Checked {
        file,
        format,
        width: 0,
        height: 0,
    };
    // The header alone first: a file claiming a huge size is refused before any allocation.
    let (w, h) = checked
        .reader(path)?
        .into_dimensions()
        .map_err(|e| err(e.to_string()))?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(err(format!(
            "image is {w}x{h}, over the {MAX_SIDE}-pixel side limit (refused before decoding)"
        )));
    }
    if format == image::ImageFormat::Jpeg && !jpeg_has_end_marker(path, &checked.file, size)? {
        return Err(err(
            "truncated JPEG: no end-of-image marker (the file was cut short)".into(),
        ));
    }
    (checked.width, checked.height) = (w, h);
    Ok(checked)
}

/// Decodes an image file to 8-bit RGB at full size, applying its EXIF orientation. The format is
/// taken from the content, not the extension; the limits above apply.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let c = checked_reader(path)?;
    decode_full(path, c.reader(path)?)
}

fn decode_full(
    path: &Path,
    mut reader: ImageReader<std::io::BufReader<std::fs::File>>,
) -> Result<RgbImage> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(err("image has no pixels".into()));
    }
    Ok(img.into_rgb8())
}

/// A small copy of an image file for a report: at most `side` pixels on its longer side, EXIF
/// orientation applied; a large JPEG is decoded at a reduced DCT scale (1/2, 1/4 or 1/8) that still
/// covers `side`, so a thumbnail costs a fraction of a full decode. The limits above apply.
pub fn thumbnail(path: &Path, side: u32) -> Result<RgbImage> {
    let c = checked_reader(path)?;
    let side = side.max(1);
    let longer = c.width.max(c.height);
    if c.format == image::ImageFormat::Jpeg {
        if let Some(d) = [8u32, 4, 2]
            .into_iter()
            .find(|&d| longer.div_ceil(d) >= side)
        {
            if let Some((img, _)) = decode_jpeg_scaled(path, &c, d) {
                return Ok(shrink(&img, side));
            }
        }
    }
    Ok(shrink(&decode_full(path, c.reader(path)?)?, side))
}

/// `img` scaled to at most `side` pixels on its longer side, keeping its aspect ratio.
fn shrink(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let longer = w.max(h);
    if longer <= side {
        return img.clone();
    }
    let fit = |v: u32| ((v as u64 * side as u64 + longer as u64 / 2) / longer as u64).max(1) as u32;
    image::imageops::thumbnail(img, fit(w), fit(h))
}

/// A decoded image and the DCT scale it was decoded at: pixel `k` of `image` covers full-size
/// pixels `k * denominator - lead .. (k + 1) * denominator - lead` (`lead` of that axis).
pub struct Decoded {
    pub image: RgbImage,
    pub denominator: u32,
    /// Width and height of the full-size image (after EXIF orientation).
    pub full_size: (u32, u32),
    /// Full-size pixels missing from the first scaled pixel of each axis (x, y): a side that is no
    /// multiple of the scale ends in a part pixel, at the right and bottom as stored, which an
    /// orientation that mirrors that axis moves to the left or top.
    pub lead: (u32, u32),
}

impl Decoded {
    /// An image decoded at full size.
    pub fn full(image: RgbImage) -> Decoded {
        Decoded {
            full_size: image.dimensions(),
            image,
            denominator: 1,
            lead: (0, 0),
        }
    }
}

/// Decodes an image for `pre`: with [`Decode::Fast`], a large JPEG at the smallest DCT scale that
/// still covers the input size (see [`dct_denominator`]); anything else as [`decode`] does.
pub fn decode_for(path: &Path, pre: &Preprocess) -> Result<Decoded> {
    let c = checked_reader(path)?;
    let (w, h) = (c.width, c.height);
    if pre.decode == Decode::Fast && c.format == image::ImageFormat::Jpeg {
        // Orientation may swap the sides; the scale is the same for both, so try both orders and
        // keep the smaller denominator (the safe one) when they disagree.
        let d = dct_denominator(pre, w, h).min(dct_denominator(pre, h, w));
        if d > 1 {
            if let Some((image, orientation)) = decode_jpeg_scaled(path, &c, d) {
                // The part pixel of each stored axis (right, bottom).
                let pad = |n: u32| n.div_ceil(d) * d - n;
                let (px, py) = (pad(w), pad(h));
                let (full_size, lead) = oriented(orientation, (w, h), (px, py));
                return Ok(Decoded {
                    image,
                    denominator: d,
                    full_size,
                    lead,
                });
            }
        }
    }
    Ok(Decoded::full(decode_full(path, c.reader(path)?)?))
}

/// After `o`: the full size of a stored `(w, h)` image, and the part pixels `(px, py)` of its
/// right and bottom edges that now lead its x and y axes (where `o` mirrors the axis they went to).
fn oriented(
    o: image::metadata::Orientation,
    (w, h): (u32, u32),
    (px, py): (u32, u32),
) -> ((u32, u32), (u32, u32)) {
    use image::metadata::Orientation::*;
    match o {
        NoTransforms => ((w, h), (0, 0)),
        FlipHorizontal => ((w, h), (px, 0)),
        Rotate180 => ((w, h), (px, py)),
        FlipVertical => ((w, h), (0, py)),
        // Transposed: x is the stored y, y the stored x, neither mirrored.
        Rotate90FlipH => ((h, w), (0, 0)),
        // Clockwise: x runs up the stored y axis.
        Rotate90 => ((h, w), (py, 0)),
        // Transverse: both mirrored.
        Rotate270FlipH => ((h, w), (py, px)),
        // Counter-clockwise: y runs back along the stored x axis.
        Rotate270 => ((h, w), (0, px)),
    }
}

/// The largest of 8, 4, 2 (else 1) such that an image of `width` x `height` decoded at 1/d still
/// gives a resize box at least as large as the input size on both sides.
pub fn dct_denominator(pre: &Preprocess, width: u32, height: u32) -> u32 {
    let (th, tw) = pre.size;
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| {
            let (sw, sh) = (width.div_ceil(d), height.div_ceil(d));
            let (_, _, bw, bh) = pre.source_box(sw, sh);
            bw >= tw && bh >= th
        })
        .unwrap_or(1)
}

/// Decodes a JPEG at 1/`d` scale with its EXIF orientation applied, and that orientation; `None` when this decoder cannot (CMYK or 16-bit files, or a stream it
/// refuses): the caller then decodes in full.
fn decode_jpeg_scaled(path: &Path, c: &Checked, d: u32) -> Option<(RgbImage, image::metadata::Orientation)> {
    let (width, height) = (c.width, c.height);
    let mut dec = jpeg_decoder::Decoder::new(c.rewound(path).ok()?);
    dec.set_max_decoding_buffer_size(MAX_DECODE_BYTES as usize);
    let want = |len: u32| u16::try_from(len.div_ceil(d)).ok();
    let (ow, oh) = dec.scale(want(width)?, want(height)?).ok()?;
    if u32::from(ow) != width.div_ceil(d) || u32::from(oh) != height.div_ceil(d) {
        return None;
    }
    let pixels = dec.decode().ok()?;
    let info = dec.info()?;
    let (ow, oh) = (u32::from(info.width), u32::from(info.height));
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        _ => return None,
    };
    let img = RgbImage::from_raw(ow, oh, rgb)?;
    let orientation = dec
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::ImageRgb8(img);
    img.apply_orientation(orientation);
    Some((img.into_rgb8(), orientation))
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
        let (l, t) = (
            f64::from(l + d.lead.0) / k,
            f64::from(t + d.lead.1) / k,
        );
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

    /// [`Preprocessor::apply`] for an image from [`decode_for`].
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

#[cfg(test)]
mod tests;
