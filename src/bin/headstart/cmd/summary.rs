//! `headstart summary`: what a feature cache holds.

use std::path::PathBuf;

use headstart::cache::FeatureCache;
use headstart::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The HDF5 feature cache.
    pub cache: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let path = &a.cache;
    let c = FeatureCache::open(path)?;
    let m = &c.meta;
    println!(
        "cache: {} (headstart {})",
        path.display(),
        m.headstart_version
    );
    println!("model: {} sha256 {}", m.model_file, m.model_sha256);
    println!(
        "input: {}x{} {}; output '{}' per image {:?} ({}); base precision {}",
        m.input_size.1,
        m.input_size.0,
        m.layout,
        m.output_name,
        m.feature_shape,
        m.dtype.name(),
        m.precision
    );
    println!("preprocess: {}", m.preprocess);
    println!("classes: {}", m.classes.join(", "));
    for s in &m.splits {
        let d = c.read_lists(s)?;
        // A multi-label image counts once for each class it has.
        let k = m.classes.len();
        let mut counts = vec![0usize; k];
        if d.tags.is_empty() {
            for &l in &d.labels {
                if let Some(c) = counts.get_mut(l as usize) {
                    *c += 1;
                }
            }
        } else {
            for row in d.tags.chunks_exact(k.max(1)) {
                for (c, &t) in counts.iter_mut().zip(row) {
                    *c += usize::from(t != 0);
                }
            }
        }
        let per: Vec<String> = m
            .classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        // Read in blocks: a cache larger than memory is summarised too.
        let (mut lo, mut hi, mut sum, mut count) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0usize);
        c.for_each_block(s, d.len(), 64 << 20, |_, rows| {
            for &v in &rows {
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v as f64;
            }
            count += rows.len();
            Ok(())
        })?;
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        println!(
            "split {s}: {} images ({}), {} skipped; features min {lo:.4} max {hi:.4} mean {mean:.4}",
            d.len(),
            per.join(", "),
            d.skipped.len()
        );
        for (p, r) in &d.skipped {
            println!("  skipped {p}: {r}");
        }
    }
    Ok(())
}
