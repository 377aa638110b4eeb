//! Bounds on sizes that come from a flag or a file, checked before anything is allocated for them:
//! a value past its bound is an error that states the value and the bound, never an allocation
//! failure or a crash.

use crate::error::{Error, Result};

/// Images per inference batch.
pub const MAX_BATCH: usize = 4096;
/// Decode threads, and ONNX Runtime intra-op threads.
pub const MAX_THREADS: usize = 1024;
/// Augmented copies per train image.
pub const MAX_COPIES: usize = 1000;
/// Shards of a run (their files are numbered with five digits).
pub const MAX_SHARDS: usize = 100_000;
/// Pixels along one side of a model's input.
pub const MAX_INPUT_SIDE: usize = 16_384;
/// Values in one image's features (2^28 float32 values are 1 GiB).
pub const MAX_ROW_VALUES: usize = 1 << 28;
/// Axes of one image's features.
pub const MAX_ROW_RANK: usize = 6;

/// A per-image feature shape read from a file: 1 to [`MAX_ROW_RANK`] axes, none of them 0, and at
/// most [`MAX_ROW_VALUES`] values in all (so no product of it overflows); the error states the shape.
pub fn feature_shape(dims: &[u64]) -> std::result::Result<Vec<usize>, String> {
    let bad = |why: &str| format!("feature shape {dims:?} {why}");
    if dims.is_empty() || dims.len() > MAX_ROW_RANK {
        return Err(bad(&format!("must have 1 to {MAX_ROW_RANK} axes")));
    }
    if dims.contains(&0) {
        return Err(bad("has an axis of length 0"));
    }
    let values = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&v| v <= MAX_ROW_VALUES as u64);
    match values {
        Some(_) => Ok(dims.iter().map(|&d| d as usize).collect()),
        None => Err(bad(&format!(
            "holds more than {MAX_ROW_VALUES} values per image"
        ))),
    }
}

/// Bytes of one archive member read into memory (a wheel's library, a weights file's storage): a
/// member that inflates past it is a zip bomb, not a model.
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// Everything `r` gives, up to `cap` bytes; more is an error (`InvalidData`), read no further.
pub fn read_capped(r: impl std::io::Read, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    r.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("inflates past {}: refused (a zip bomb?)", size_text(cap)),
        ));
    }
    Ok(bytes)
}

/// Bytes for a message, with three significant figures: `1.23 GB`, `45.6 MB`, `512 kB`, `20 B`.
pub fn size_text(bytes: u64) -> String {
    let b = bytes as f64;
    // A unit up where three figures would round to 1000 (999,999 bytes is 1.00 MB).
    let (v, unit) = match bytes {
        999_500_000.. => (b / 1e9, "GB"),
        999_500.. => (b / 1e6, "MB"),
        1_000.. => (b / 1e3, "kB"),
        _ => return format!("{bytes} B"),
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// `value` of the setting `what` within `min..=max`.
pub fn check(what: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::invalid(
            what,
            format!("{value} is out of range: it must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// A float `value` of the setting `what` that must be finite and within `min..=max`.
pub fn check_f32(what: &str, value: f32, min: f32, max: f32) -> Result<()> {
    if !value.is_finite() || value < min || value > max {
        return Err(Error::invalid(
            what,
            format!("{value} is not a number between {min} and {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_their_bound_name_both() {
        assert!(check("batch", 32, 1, MAX_BATCH).is_ok());
        let e = check("batch", 100_000_000, 1, MAX_BATCH)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch") && e.contains("100000000") && e.contains("4096"),
            "{e}"
        );
        assert!(check("batch", 0, 1, MAX_BATCH).is_err());
        assert!(check_f32("std", f32::NAN, 1e-6, 1e6).is_err());
        assert!(check_f32("std", 0.0, 1e-6, 1e6).is_err());
        assert!(check_f32("std", 0.229, 1e-6, 1e6).is_ok());
    }
    #[test]
    fn a_feature_shape_from_a_file_is_bounded_before_any_product() {
        assert_eq!(feature_shape(&[512, 7, 7]), Ok(vec![512, 7, 7]));
        let huge = feature_shape(&[1 << 32, 1 << 32, 8]).unwrap_err();
        assert!(huge.contains("[4294967296, 4294967296, 8]"), "{huge}");
        assert!(feature_shape(&[u64::MAX, u64::MAX]).is_err());
        assert!(feature_shape(&[1 << 29]).is_err());
        assert!(feature_shape(&[]).is_err());
        assert!(feature_shape(&[3, 0]).is_err());
        assert!(feature_shape(&[1; 7]).is_err());
    }
    #[test]
    fn reads_stop_at_their_cap() {
        assert_eq!(read_capped(&b"abc"[..], 3).unwrap(), b"abc");
        let e = read_capped(std::io::repeat(0), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("inflates past 1.05 MB"), "{e}");
    }
    #[test]
    fn sizes_read_with_three_figures_in_a_unit_that_fits() {
        assert_eq!(size_text(20), "20 B");
        assert_eq!(size_text(512_000), "512 kB");
        assert_eq!(size_text(1_500), "1.50 kB");
        assert_eq!(size_text(45_600_000), "45.6 MB");
        assert_eq!(size_text(1_234_000_000), "1.23 GB");
        assert_eq!(size_text(0), "0 B");
        assert_eq!(size_text(999_999), "1.00 MB");
        assert_eq!(size_text(999_499), "999 kB");
    }
}
