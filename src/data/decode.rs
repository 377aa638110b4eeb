//! Image files to pixels: the checks made before any pixel is decoded (size, content, header,
//! a JPEG's end), then the decode with EXIF orientation applied, at full size or, for a large JPEG,
//! at a reduced DCT scale ([`decode_for`]); thumbnails for reports. Each file is read once, into
//! memory, and every check and decoder reads those bytes: the file checked is the file decoded.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{ImageDecoder, ImageReader, RgbImage};

use super::preprocess::{Decode, Preprocess};
use crate::error::{Error, Result};

/// Images with a side longer than this are refused before any pixel is decoded.
pub const MAX_SIDE: u32 = 16_384;
/// Image files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Where the main image of a JPEG ends: the byte after its end-of-image marker (FF D9), found by
/// walking its segments (their lengths skip the EXIF thumbnail, whose own end marker fooled a search
/// of the last bytes) and its entropy-coded scans; `None` when the file ends first (it was cut
/// short). Data after the marker (a phone's motion video, a second picture) is allowed. Bytes that
/// are no marker where one is due are skipped, as libjpeg does.
pub fn jpeg_end(b: &[u8]) -> Option<usize> {
    let n = b.len();
    if n < 2 || b[..2] != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        // To the next marker: skip what is no 0xFF, then fill bytes (0xFF 0xFF ...).
        i += memchr::memchr(0xFF, b.get(i..)?)?;
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0xD9 => return Some(i),
            // Stand-alone markers (and a stray stuffed zero): no length follows.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
        if len < 2 || i + len > n {
            return None;
        }
        i += len;
        if marker == 0xDA {
            // The scan's entropy-coded data runs to the first 0xFF followed by neither a stuffed
            // zero nor a restart marker.
            loop {
                i += memchr::memchr(0xFF, b.get(i..)?)?;
                match *b.get(i + 1)? {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    _ => break,
                }
            }
        }
    }
}

/// A decoder's message, with what is not printable ASCII escaped: decoders quote a broken file's
/// bytes as characters (a PNG chunk type `É\'ý\u{99}`), which a terminal shows as garbage.
fn decoder_said(e: &image::ImageError) -> String {
    e.to_string()
        .chars()
        .map(|c| match c {
            ' '..='~' => c.to_string(),
            c => c.escape_unicode().to_string(),
        })
        .collect()
}

/// An image file read and checked: every later step (the decoder, the scaled JPEG decoder) reads
/// these bytes, so the file checked is the file decoded, and a network file system sees one open
/// and one read per image.
struct Checked {
    bytes: Vec<u8>,
    format: image::ImageFormat,
    width: u32,
    height: u32,
}

impl Checked {
    /// An image reader of the bytes, its format set.
    fn reader(&self) -> ImageReader<Cursor<&[u8]>> {
        ImageReader::with_format(Cursor::new(&self.bytes[..]), self.format)
    }
}

/// The checks made before any pixel is decoded: file size, a known format, the header's size, and
/// for a JPEG that its main image ends inside the file ([`jpeg_end`]).
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
    // Bounded again while reading: the file may grow after its size was taken.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!(
            "file grew over the {MAX_FILE_BYTES}-byte limit while it was read"
        )));
    }
    if bytes.is_empty() {
        return Err(err("empty file: not an image".into()));
    }
    // The content decides, never the name: a text file called x.jpg is no image.
    let head = &bytes[..bytes.len().min(16)];
    let Ok(format) = image::guess_format(head) else {
        let shown: String = head[..head.len().min(8)]
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
        bytes,
        format,
        width: 0,
        height: 0,
    };
    // The header alone first: a file claiming a huge size is refused before any allocation.
    let (w, h) = checked
        .reader()
        .into_dimensions()
        .map_err(|e| err(decoder_said(&e)))?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(err(format!(
            "image is {w}x{h}, over the {MAX_SIDE}-pixel side limit (refused before decoding)"
        )));
    }
    // Decoders fill a cut-short JPEG with grey without saying so; it is refused.
    if format == image::ImageFormat::Jpeg && jpeg_end(&checked.bytes).is_none() {
        return Err(err(
            "truncated JPEG: the file ends before its end-of-image marker (it was cut short, or a segment length is damaged)"
                .into(),
        ));
    }
    (checked.width, checked.height) = (w, h);
    Ok(checked)
}

/// Decodes an image file to 8-bit RGB at full size, applying its EXIF orientation. The format is
/// taken from the content, not the extension; the limits above apply.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let c = checked_reader(path)?;
    decode_full(path, c.reader())
}

fn decode_full(path: &Path, mut reader: ImageReader<Cursor<&[u8]>>) -> Result<RgbImage> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| err(decoder_said(&e)))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| err(decoder_said(&e)))?;
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
            if let Some((img, _)) = decode_jpeg_scaled(&c, d) {
                return Ok(shrink(&img, side));
            }
        }
    }
    Ok(shrink(&decode_full(path, c.reader())?, side))
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
            if let Some((image, orientation)) = decode_jpeg_scaled(&c, d) {
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
    Ok(Decoded::full(decode_full(path, c.reader())?))
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

/// Decodes a JPEG at 1/`d` scale with its EXIF orientation applied, and that orientation; `None`
/// when this decoder cannot (CMYK or 16-bit files, or a stream it refuses): the caller then decodes
/// in full.
fn decode_jpeg_scaled(c: &Checked, d: u32) -> Option<(RgbImage, image::metadata::Orientation)> {
    let (width, height) = (c.width, c.height);
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(&c.bytes[..]));
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

#[cfg(test)]
mod tests;
