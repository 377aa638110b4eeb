//! Tests of [`super`] (decode.rs): the checks, and the fast decode against the exact one after the
//! resize.

use super::*;
use crate::data::preprocess::{Interpolation, Layout, Mode, Preprocessor, ResizeMode};

fn pre(decode: Decode) -> Preprocess {
    Preprocess {
        size: (224, 224),
        layout: Layout::Nchw,
        resize: ResizeMode::Crop { fraction: 0.875 },
        interpolation: Interpolation::Bilinear,
        normalize: Mode::Raw.normalize(),
        decode,
    }
}

/// A smooth photo-like test card with some detail, `w` x `h`.
fn card(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let ring = ((u - 0.3).hypot(v - 0.6) * 40.0).sin() * 60.0;
        image::Rgb([
            (255.0 * u) as u8,
            (128.0 + ring) as u8,
            (255.0 * v * (1.0 - u)) as u8,
        ])
    })
}

fn write_jpeg(path: &Path, img: &RgbImage, exif_orientation: Option<u16>) {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
        .encode_image(img)
        .unwrap();
    if let Some(o) = exif_orientation {
        // APP1 "Exif\0\0" + a little-endian TIFF header with one IFD entry: 0x0112 SHORT = o.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend_from_slice(&o.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut seg = vec![0xFF, 0xE1];
        seg.extend_from_slice(&len.to_be_bytes());
        seg.extend_from_slice(&app1);
        bytes.splice(2..2, seg);
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn dct_scale_is_the_smallest_that_still_covers_the_input() {
    let p = pre(Decode::Fast);
    // 500x375: the crop box is 328 px; at 1/2 it would be 164 < 224.
    assert_eq!(dct_denominator(&p, 500, 375), 1);
    // 1600x1200: 1/4 gives 400x300, box 262 >= 224; 1/8 gives box 131.
    assert_eq!(dct_denominator(&p, 1600, 1200), 4);
    // 4000x3000: 1/8 gives 500x375, box 328.
    assert_eq!(dct_denominator(&p, 4000, 3000), 8);
    let squash = Preprocess {
        resize: ResizeMode::Squash,
        ..p
    };
    // Squash needs both sides >= 224: 1/2 of 1000x500 is 500x250, 1/4 is 250x125.
    assert_eq!(dct_denominator(&squash, 1000, 500), 2);
}

#[test]
fn fast_decode_matches_exact_after_resize_and_keeps_exif_orientation() {
    let dir = tempfile::tempdir().unwrap();
    let img = card(1600, 1200);
    for orientation in [None, Some(6)] {
        let path = dir.path().join(format!("card{orientation:?}.jpg"));
        write_jpeg(&path, &img, orientation);
        let exact = decode_for(&path, &pre(Decode::Exact)).unwrap();
        let fast = decode_for(&path, &pre(Decode::Fast)).unwrap();
        assert_eq!(exact.denominator, 1);
        assert_eq!(fast.denominator, 4, "1600x1200 must decode at 1/4");
        let want = if orientation == Some(6) {
            (1200, 1600)
        } else {
            (1600, 1200)
        };
        assert_eq!(exact.image.dimensions(), want);
        assert_eq!(fast.full_size, want);
        assert_eq!(fast.image.dimensions(), (want.0 / 4, want.1 / 4));
        let mut pp = Preprocessor::new(pre(Decode::Fast));
        let a = pp.resize_decoded(&exact).unwrap();
        let b = pp.resize_decoded(&fast).unwrap();
        let mad = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64;
        // On 0..255 pixels. The box computed on the scaled image's own size, which this
        // replaced, gave 4.0 on a real 2592 px photo; a wrong orientation gives far more.
        assert!(
            mad < 1.5,
            "orientation {orientation:?}: mean abs diff {mad}"
        );
    }
}

/// Sides that are not multiples of the DCT scale leave a part pixel at the scaled image's right
/// and bottom; an orientation that mirrors an axis moves it to the left or top, and the box must
/// follow (it was read from the top left, a shift of up to 0.9 input pixels).
#[test]
fn fast_decode_of_odd_sides_matches_exact_under_every_orientation() {
    let dir = tempfile::tempdir().unwrap();
    // At 1/4: 1602 -> 401 pixels (the last covers 2 of 4), 1203 -> 301 (the last covers 3).
    let img = card(1602, 1203);
    let mut pp = Preprocessor::new(pre(Decode::Fast));
    let mut mads = Vec::new();
    for orientation in 1..=8u16 {
        let path = dir.path().join(format!("odd{orientation}.jpg"));
        write_jpeg(&path, &img, Some(orientation));
        let exact = decode_for(&path, &pre(Decode::Exact)).unwrap();
        let fast = decode_for(&path, &pre(Decode::Fast)).unwrap();
        assert_eq!(fast.denominator, 4);
        assert_eq!(fast.full_size, exact.image.dimensions());
        let (a, b) = (
            pp.resize_decoded(&exact).unwrap(),
            pp.resize_decoded(&fast).unwrap(),
        );
        let mad = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64;
        mads.push(mad);
    }
    // Each orientation as close as the upright photo (the DCT scaling's own blur).
    for (o, mad) in mads.iter().enumerate() {
        assert!(
            *mad < mads[0] * 1.1 + 0.02,
            "orientation {}: mean abs diff {mad} against {} upright",
            o + 1,
            mads[0]
        );
    }
}

#[test]
fn small_and_non_jpeg_images_are_decoded_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.jpg");
    write_jpeg(&small, &card(500, 375), None);
    let png = dir.path().join("big.png");
    card(1600, 1200).save(&png).unwrap();
    for path in [small, png] {
        let d = decode_for(&path, &pre(Decode::Fast)).unwrap();
        assert_eq!(d.denominator, 1, "{}", path.display());
        assert_eq!(d.full_size, d.image.dimensions());
    }
}

/// A JPEG of `img` with a second, small JPEG (as cameras store a thumbnail) inside an APP1
/// segment before the main image.
fn jpeg_with_thumbnail(img: &RgbImage) -> (Vec<u8>, usize) {
    let encode = |i: &RgbImage| {
        let mut b = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut b, 90)
            .encode_image(i)
            .unwrap();
        b
    };
    let mut bytes = encode(img);
    let thumb = encode(&card(160, 120));
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&thumb);
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&app1);
    let thumb_end = 2 + 4 + 6 + thumb.len();
    bytes.splice(2..2, seg);
    (bytes, thumb_end)
}

#[test]
fn a_jpeg_ends_where_its_main_image_ends_not_where_a_thumbnail_does() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, thumb_end) = jpeg_with_thumbnail(&card(2000, 1544));
    assert_eq!(jpeg_end(&whole), Some(whole.len()));
    assert_eq!(&whole[thumb_end - 2..thumb_end], [0xFF, 0xD9]);
    // Cut 3000 bytes after the thumbnail's end marker: that marker is in the last 4 KiB (which a
    // search of the tail took for the end), the main image's is gone.
    let cut = &whole[..thumb_end + 3000];
    assert_eq!(jpeg_end(cut), None);
    let path = dir.path().join("cut.jpg");
    std::fs::write(&path, cut).unwrap();
    for decode in [Decode::Fast, Decode::Exact] {
        let e = decode_for(&path, &pre(decode))
            .err()
            .expect("a cut JPEG decoded");
        assert!(e.to_string().contains("truncated JPEG"), "{e}");
    }
    // Cut anywhere inside the main image: refused too.
    for at in [
        whole.len() - 1,
        whole.len() - 2,
        whole.len() / 2,
        thumb_end + 20,
    ] {
        assert_eq!(
            jpeg_end(&whole[..at]),
            None,
            "cut at {at} of {}",
            whole.len()
        );
    }
    // Data after the end marker (a phone's motion video, 8 KB) is no truncation.
    let mut motion = whole.clone();
    motion.extend(std::iter::repeat_n(0x5A, 8192));
    assert_eq!(jpeg_end(&motion), Some(whole.len()));
    let path = dir.path().join("motion.jpg");
    std::fs::write(&path, &motion).unwrap();
    let d = decode_for(&path, &pre(Decode::Exact)).unwrap();
    assert_eq!(d.image.dimensions(), (2000, 1544));
    // A scan's stuffed zeros and restart markers are data; fill bytes may precede a marker.
    let scan = b"\xFF\xD8\xFF\xDA\x00\x02\x12\xFF\x00\x34\xFF\xD0\x56\xFF\xFF\xD9";
    assert_eq!(jpeg_end(scan), Some(scan.len()));
    assert_eq!(jpeg_end(&scan[..scan.len() - 3]), None);
    // A segment length past the end, and no JPEG at all.
    assert_eq!(jpeg_end(b"\xFF\xD8\xFF\xE1\x40\x00Exif"), None);
    assert_eq!(jpeg_end(b"\x89PNG\r\n"), None);
}

#[test]
fn a_decoders_message_is_printable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    // A whole IHDR (8x8 RGB), then a chunk whose type is no text: the PNG decoder quotes it.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(b"\x00\x00\x00\x08\x00\x00\x00\x08\x08\x02\x00\x00\x00\x4b\x6d\x29\xdc");
    png.extend_from_slice(b"\x00\x00\x00\x04\xc9\x27\xfd\x99abcd\x00\x00\x00\x00");
    std::fs::write(&path, &png).unwrap();
    let e = decode(&path).unwrap_err().to_string();
    assert!(e.contains("bad.png: cannot decode image"), "{e}");
    let said = &e[e.find("cannot decode").unwrap()..];
    assert!(
        said.contains("ChunkType"),
        "not the message of a bad chunk: {said}"
    );
    assert!(said.chars().all(|c| (' '..='~').contains(&c)), "{said}");
}
