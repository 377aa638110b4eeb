//! Seeded image augmentation for cached copies (`extract --augment flip,crop,scale,color --copies K`):
//! each copy of a train image gets its own transform, drawn from the seed, the image's index and the
//! copy number, so a rerun writes the same rows. Applied to the decoded image before the model's own
//! resize and normalisation.
//!
//! - `flip`: left-right mirror with probability 1/2;
//! - `crop`: a box at a random position, 80% of the area (with `scale`: a random area);
//! - `scale`: the box's area drawn from [0.5, 1] and its aspect ratio from [3/4, 4/3] (random resized
//!   crop, milder than torchvision's [0.08, 1]);
//! - `color`: brightness, contrast and saturation each scaled by a factor in [0.9, 1.1].

use image::RgbImage;

use crate::util::rng::Rng;

/// Which transforms a copy may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AugmentSpec {
    pub flip: bool,
    pub crop: bool,
    pub scale: bool,
    pub color: bool,
}

/// The transform of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AugParams {
    pub flip: bool,
    /// (left, top, width, height) as fractions of the image.
    pub crop: Option<(f32, f32, f32, f32)>,
    /// (brightness, contrast, saturation) factors.
    pub color: Option<(f32, f32, f32)>,
}

impl AugmentSpec {
    /// `flip,crop,scale,color` (any subset, comma-separated).
    pub fn parse(s: &str) -> Result<AugmentSpec, String> {
        let mut a = AugmentSpec::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "flip" => a.flip = true,
                "crop" => a.crop = true,
                "scale" => a.scale = true,
                "color" | "colour" => a.color = true,
                other => {
                    return Err(format!(
                        "unknown augmentation '{other}' (known: flip, crop, scale, color)"
                    ))
                }
            }
        }
        if a == AugmentSpec::default() {
            return Err("no augmentation named (known: flip, crop, scale, color)".into());
        }
        Ok(a)
    }

    /// The names, comma-separated, in a fixed order.
    pub fn names(&self) -> String {
        [
            (self.flip, "flip"),
            (self.crop, "crop"),
            (self.scale, "scale"),
            (self.color, "color"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
    }

    /// The transform of copy `copy` of image `image`.
    pub fn draw(&self, seed: u64, image: usize, copy: usize) -> AugParams {
        let mut rng = Rng(seed
            ^ (image as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (copy as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        // Warm up: nearby seeds give unrelated streams.
        for _ in 0..4 {
            rng.next_u64();
        }
        let mut p = AugParams {
            flip: self.flip && rng.uniform() < 0.5,
            ..Default::default()
        };
        if self.crop || self.scale {
            let (area, aspect) = if self.scale {
                let log_r = (rng.uniform() * 2.0 - 1.0) * (4.0f64 / 3.0).ln();
                (0.5 + 0.5 * rng.uniform(), log_r.exp())
            } else {
                (0.8, 1.0)
            };
            let w = (area * aspect).sqrt().min(1.0);
            let h = (area / aspect).sqrt().min(1.0);
            let (l, t) = if self.crop {
                (rng.uniform() * (1.0 - w), rng.uniform() * (1.0 - h))
            } else {
                ((1.0 - w) / 2.0, (1.0 - h) / 2.0)
            };
            p.crop = Some((l as f32, t as f32, w as f32, h as f32));
        }
        if self.color {
            let mut f = || (0.9 + 0.2 * rng.uniform()) as f32;
            p.color = Some((f(), f(), f()));
        }
        p
    }
}

/// Applies `p` to `img`.
pub fn apply(img: RgbImage, p: &AugParams) -> RgbImage {
    let mut img = match p.crop {
        Some((l, t, w, h)) => {
            let (iw, ih) = (img.width() as f32, img.height() as f32);
            let cw = ((w * iw).round() as u32).clamp(1, img.width());
            let ch = ((h * ih).round() as u32).clamp(1, img.height());
            let x = ((l * iw).round() as u32).min(img.width() - cw);
            let y = ((t * ih).round() as u32).min(img.height() - ch);
            image::imageops::crop_imm(&img, x, y, cw, ch).to_image()
        }
        None => img,
    };
    if p.flip {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    if let Some((b, c, s)) = p.color {
        let n = (img.width() * img.height()).max(1) as f32;
        let grey = |px: &image::Rgb<u8>| {
            0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32
        };
        let mean = img.pixels().map(grey).sum::<f32>() / n;
        for px in img.pixels_mut() {
            let g = grey(px);
            for ch in px.0.iter_mut() {
                // Saturation about the pixel's grey, contrast about the image mean, then brightness.
                let v = g + (*ch as f32 - g) * s;
                let v = mean + (v - mean) * c;
                *ch = (v * b).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_refusals() {
        let a = AugmentSpec::parse("flip, crop,scale,color").unwrap();
        assert_eq!(a.names(), "flip,crop,scale,color");
        assert!(AugmentSpec::parse("rotate").unwrap_err().contains("rotate"));
        assert!(AugmentSpec::parse("").is_err());
    }

    #[test]
    fn draws_are_seeded_in_range_and_differ_per_copy() {
        let a = AugmentSpec::parse("flip,crop,scale,color").unwrap();
        assert_eq!(a.draw(7, 3, 1), a.draw(7, 3, 1));
        assert_ne!(a.draw(7, 3, 1), a.draw(7, 3, 2));
        assert_ne!(a.draw(7, 3, 1), a.draw(7, 4, 1));
        let mut flips = 0;
        for i in 0..400 {
            let p = a.draw(1, i, 0);
            flips += p.flip as usize;
            let (l, t, w, h) = p.crop.unwrap();
            assert!(
                l >= 0.0 && t >= 0.0 && l + w <= 1.0001 && t + h <= 1.0001,
                "{p:?}"
            );
            assert!(w * h >= 0.5 * 0.74 && w * h <= 1.0001, "{p:?}");
            let (b, c, s) = p.color.unwrap();
            for f in [b, c, s] {
                assert!((0.9..=1.1).contains(&f));
            }
        }
        assert!((150..250).contains(&flips), "{flips} flips of 400");
    }

    #[test]
    fn apply_crops_flips_and_keeps_identity_without_colour_change() {
        let img = RgbImage::from_fn(10, 6, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
        let p = AugParams {
            flip: true,
            crop: Some((0.2, 0.5, 0.5, 0.5)),
            color: Some((1.0, 1.0, 1.0)),
        };
        let out = apply(img.clone(), &p);
        assert_eq!(out.dimensions(), (5, 3));
        // Left-most output pixel is the crop's right-most column (x = 2 + 4 = 6), row y = 3.
        assert_eq!(out.get_pixel(0, 0).0, img.get_pixel(6, 3).0);
        assert_eq!(out.get_pixel(4, 2).0, img.get_pixel(2, 5).0);
        // Brightness 1.1 brightens.
        let bright = apply(
            img.clone(),
            &AugParams {
                color: Some((1.1, 1.0, 1.0)),
                ..Default::default()
            },
        );
        assert!(bright.get_pixel(5, 5).0[0] > img.get_pixel(5, 5).0[0]);
    }
}
