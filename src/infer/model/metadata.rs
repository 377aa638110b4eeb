//! The preprocessing a model's `metadata_props` give (mean, std, colour order, pixel scale, resize,
//! interpolation, input size, JPEG decode), read strictly: a value that is there but not
//! understood is an error naming the key, unless a flag gives that part.

use std::collections::BTreeMap;

use super::{parse_size, ModelInfo, PreprocessOverrides};
use crate::data::preprocess::{
    ColorOrder, Decode, Interpolation, Mode, Normalize, ResizeMode, DEFAULT_CROP_FRACTION,
};
use crate::error::{Error, Result};

/// The preprocessing a model's `metadata_props` give, each part `None` when its keys are absent.
/// A value that is there but not understood is an error naming the key (it fell back to the
/// default in silence: `pixel_scale=0..1.0` read as 0..255, an unknown `color_order` as RGB).
#[derive(Debug, Default)]
pub(super) struct FromMetadata {
    pub(super) normalize: Option<Normalize>,
    pub(super) resize: Option<ResizeMode>,
    pub(super) interpolation: Option<Interpolation>,
    pub(super) size: Option<(u32, u32)>,
    pub(super) decode: Option<Decode>,
}

impl FromMetadata {
    /// Reads `m` (the model at `path`), each part only when no flag gives it (a flag overrides
    /// whatever the metadata holds, readable or not); the normalisation when `need_normalize`.
    pub(super) fn read(
        m: &BTreeMap<String, String>,
        info: &ModelInfo,
        o: &PreprocessOverrides,
        need_normalize: bool,
    ) -> Result<Self> {
        let path = &info.path;
        let bad = |key: &str, want: &str| {
            Error::model(
                path,
                format!(
                    "metadata {key} '{}' is not understood (expected {want}); the matching flag overrides it",
                    m.get(key).map_or("", |v| v.as_str())
                ),
            )
        };
        let get = |key: &str| m.get(key).map(|v| v.trim().to_ascii_lowercase());
        let normalize = if need_normalize {
            normalize_from_metadata(m, o.color, &bad)?
        } else {
            None
        };
        let resize = match get("resize_mode").as_deref() {
            _ if o.resize.is_some() => None,
            None => None,
            Some("squash") => Some(ResizeMode::Squash),
            Some("crop") => Some(ResizeMode::Crop {
                fraction: match m.get("crop_fraction") {
                    None => DEFAULT_CROP_FRACTION,
                    Some(f) => f
                        .trim()
                        .parse()
                        .map_err(|_| bad("crop_fraction", "a number such as 0.875"))?,
                },
            }),
            Some(_) => return Err(bad("resize_mode", "squash or crop")),
        };
        // A key given as "" is not asked for: a flag gives that part.
        let unless = |given: bool, key: &'static str| if given { "" } else { key };
        Ok(FromMetadata {
            normalize,
            resize,
            // "InterpolationMode.BILINEAR", as torchvision writes it, too.
            interpolation: parsed(m, unless(o.interpolation.is_some(), "interpolation"), |v| {
                Interpolation::parse(v.rsplit('.').next().unwrap_or(v))
            })
            .map_err(|k| bad(k, "nearest, bilinear, bicubic or lanczos3"))?,
            // A fixed input gives its own size: the key is not read.
            size: parsed(
                m,
                unless(o.size.is_some() || info.size.is_some(), "input_size"),
                meta_size,
            )
            .map_err(|k| bad(k, "WxH such as 224x224"))?,
            decode: parsed(m, unless(o.decode.is_some(), "jpeg_decode"), Decode::parse)
                .map_err(|k| bad(k, "fast or exact"))?,
        })
    }
}

/// An `input_size` of metadata: "224x224", or a shape of three ("(3, 224, 224)", as timm
/// writes it: channels first, then height and width).
fn meta_size(v: &str) -> Option<(u32, u32)> {
    if let Some(s) = parse_size(v) {
        return Some(s);
    }
    let inner = v
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let n: Vec<u32> = inner
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    match n[..] {
        [c, h, w] if (1..=4).contains(&c) && h > 0 && w > 0 => Some((h, w)),
        _ => None,
    }
}

/// The value of `key` in `m` parsed, `None` when absent; `Err(key)` when there but not parseable.
fn parsed<'k, T>(
    m: &BTreeMap<String, String>,
    key: &'k str,
    parse: impl Fn(&str) -> Option<T>,
) -> std::result::Result<Option<T>, &'k str> {
    m.get(key).map(|v| parse(v.trim()).ok_or(key)).transpose()
}

/// Normalisation from `metadata_props` (`mean`, `std`, `color_order`, `pixel_scale`, or
/// `preprocess`); `bad` makes the error of a key whose value is not understood.
fn normalize_from_metadata(
    m: &BTreeMap<String, String>,
    color_flag: Option<ColorOrder>,
    bad: &dyn Fn(&str, &str) -> Error,
) -> Result<Option<Normalize>> {
    if let Some(p) = m.get("preprocess") {
        let mode =
            Mode::parse(p.trim()).ok_or_else(|| bad("preprocess", "caffe, torch, tf or raw"))?;
        return Ok(Some(mode.normalize()));
    }
    let (Some(mean), Some(std)) = (m.get("mean"), m.get("std")) else {
        return Ok(None);
    };
    let three = "one number or three, comma-separated";
    let mut mean = parse3(mean).ok_or_else(|| bad("mean", three))?;
    let mut std = parse3(std).ok_or_else(|| bad("std", three))?;
    if let Some(scale) = m.get("pixel_scale") {
        match pixel_top(scale) {
            Some(255) => {}
            Some(1) => {
                mean = mean.map(|x| x * 255.0);
                std = std.map(|x| x * 255.0);
            }
            _ => return Err(bad("pixel_scale", "0..1 or 0..255")),
        }
    }
    // `--color` alone gives the colour order to the metadata's mean and std.
    let color = match color_flag {
        Some(c) => c,
        None => match m
            .get("color_order")
            .map(|c| c.trim().to_ascii_uppercase())
            .as_deref()
        {
            None | Some("RGB") => ColorOrder::Rgb,
            Some("BGR") => ColorOrder::Bgr,
            Some(_) => return Err(bad("color_order", "RGB or BGR")),
        },
    };
    Ok(Some(Normalize { color, mean, std }))
}

/// The upper end of a `pixel_scale` from 0 ("0..1", "0-255", "[0, 1.0]", "(0, 255)"); `None`
/// for anything else.
fn pixel_top(scale: &str) -> Option<u32> {
    let inner = scale
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let (lo, hi) = inner
        .split_once("..")
        .or_else(|| inner.split_once(','))
        .or_else(|| inner.split_once('-'))?;
    let num = |t: &str| t.trim().parse::<f64>().ok();
    match (num(lo)?, num(hi)?) {
        (lo, hi) if lo == 0.0 && hi == 1.0 => Some(1),
        (lo, hi) if lo == 0.0 && hi == 255.0 => Some(255),
        _ => None,
    }
}

fn parse3(s: &str) -> Option<[f32; 3]> {
    // Bare or bracketed ("[0.485, 0.456, 0.406]", as some exporters write it).
    let s = s
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    match v.len() {
        1 => Some([v[0]; 3]),
        3 => Some([v[0], v[1], v[2]]),
        _ => None,
    }
}
