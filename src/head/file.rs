//! The head file: one self-describing HDF5 file with the architecture, weights, class names, feature
//! shape and pooling, plus the base model's sha256 and preprocessing copied from the feature cache.
//!
//! Schema (`format = "headstart-head"`, `format_version = 1`):
//! - root attributes: `format`, `format_version`, `kind` (`mlp` | `logistic`), `classes`,
//!   `feature_shape`, `feature_layout`, `pool`, `output` (`sigmoid` | `softmax` | `multi-label`),
//!   `spec`, `training` (JSON), `history_csv`, `headstart_version`; a multi-label head (one sigmoid
//!   per class) also has `thresholds` (one per class: a class is predicted at a probability of at
//!   least its threshold);
//! - group `base`: the feature cache's attributes (model file and sha256, input size, preprocessing);
//! - group `layers`, one sub-group per layer in order (`000_dense`, `001_relu`, ...) with attribute
//!   `type` (`dense` | `activation` | `dropout` | `batchnorm`): dense has datasets `kernel`
//!   `[inputs, units]` and `bias`; activation has attribute `activation`; dropout `rate`; batchnorm
//!   datasets `gamma`, `beta`, `moving_mean`, `moving_variance` and attribute `epsilon`.

use crate::util::output::{Output, Replace};
use std::path::Path;

use ndarray::{Array1, Array2};

use super::activation::{sigmoid, Activation};
use super::net::{BatchNorm, Dense, Layer, Network, Pool, BN_MOMENTUM};
use crate::cache::{
    read_meta, read_str_attr, write_meta, write_str_attr, write_strs_attr, CacheMeta,
};
use crate::error::{Error, Result};

pub const FORMAT: &str = "headstart-head";
pub const FORMAT_VERSION: u32 = 1;

/// How the head was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Our own backprop (`--head SPEC`).
    Mlp,
    /// linfa-logistic (`--head logistic`).
    Logistic,
}

impl HeadKind {
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Mlp => "mlp",
            HeadKind::Logistic => "logistic",
        }
    }
}

/// A trained head and everything needed to use it on a base model's features.
#[derive(Debug, Clone)]
pub struct Head {
    pub kind: HeadKind,
    pub network: Network,
    pub pool: Pool,
    pub classes: Vec<String>,
    /// Per-image feature shape the head was trained on (before pooling).
    pub feature_shape: Vec<usize>,
    /// The feature cache's attributes: base model, its sha256 and preprocessing.
    pub base: CacheMeta,
    pub spec: String,
    /// Training settings and results, as JSON.
    pub training: String,
    pub history_csv: String,
    /// A multi-label head's decision threshold per class (one sigmoid per class); `None` for a
    /// single-label head.
    pub thresholds: Option<Vec<f32>>,
}

impl Head {
    /// Probability columns: 2 for a binary (sigmoid) head, C for softmax; for a multi-label head
    /// each class's own sigmoid.
    pub fn probabilities(&self, features: Vec<f32>, n: usize) -> Result<Array2<f32>> {
        let x = self
            .pool
            .apply(features, n, &self.feature_shape, &self.base.layout)?;
        let z = self.network.logits_batched(&x, 256);
        let p = if self.thresholds.is_some() {
            z.mapv(sigmoid)
        } else {
            probabilities_from_logits(&z)
        };
        // Finite parameters can still overflow float32 on some features: never a NaN row.
        if let Some((row, v)) = p
            .rows()
            .into_iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().find(|v| !v.is_finite()).map(|&v| (r, v)))
        {
            return Err(Error::Runtime(format!(
                "the head's probabilities for image {row} of this batch are {v}: its weights overflow float32 on these features"
            )));
        }
        Ok(p)
    }

    /// Whether the head predicts a set of classes per image.
    pub fn multi_label(&self) -> bool {
        self.thresholds.is_some()
    }

    /// Whether the head was trained on its validation rows too (`--recipe auto` refits its choice
    /// on train + validation): numbers measured on those rows with it are not held out.
    pub fn trained_on_validation(&self) -> bool {
        let t: serde_json::Value = serde_json::from_str(&self.training).unwrap_or_default();
        let val_rows = t["val_rows"].as_u64().unwrap_or(0);
        let refit = t["settings"]["refit_rows"].as_u64().unwrap_or(0);
        val_rows > 0 && refit >= t["train_rows"].as_u64().unwrap_or(0) + val_rows
    }

    /// Refuses features from another base model, shape or class list; states both sides. With
    /// `any_precision`, features of another precision (int8, fp16, fp32) of the same source model
    /// are accepted.
    pub fn check_compatible(
        &self,
        head_path: &Path,
        data: &CacheMeta,
        data_path: &Path,
        any_precision: bool,
    ) -> Result<()> {
        let both = |what: &str, h: String, d: String| {
            Err(Error::Config(format!(
                "{what} differ: head {} has {h}, {} has {d}",
                head_path.display(),
                data_path.display()
            )))
        };
        if self.multi_label() != data.multi_label {
            let kind = |m: bool| if m { "multi-label" } else { "single-label" };
            return both(
                "label kinds",
                kind(self.multi_label()).into(),
                format!("{} features", kind(data.multi_label)),
            );
        }
        let other_precision = self.base.precision != data.precision;
        if other_precision && !any_precision {
            return Err(Error::Config(format!(
                "precisions differ: head {} was trained on {} features, {} holds {} features (from {}); train a head on features of the same precision, or pass --any-precision to use these anyway",
                head_path.display(),
                self.base.precision,
                data_path.display(),
                data.precision,
                data.model_file
            )));
        }
        if other_precision && self.base.source_sha256 != data.source_sha256 {
            return both(
                "source models",
                format!(
                    "{} features of a model with sha256 {}",
                    self.base.precision, self.base.source_sha256
                ),
                format!(
                    "{} features of a model with sha256 {}",
                    data.precision, data.source_sha256
                ),
            );
        }
        if !other_precision && self.base.model_sha256 != data.model_sha256 {
            return both(
                "base models",
                format!(
                    "{} (sha256 {})",
                    self.base.model_file, self.base.model_sha256
                ),
                format!("{} (sha256 {})", data.model_file, data.model_sha256),
            );
        }
        if self.base.tokens != data.tokens {
            return both(
                "token poolings",
                self.base.tokens.describe(),
                data.tokens.describe(),
            );
        }
        if self.feature_shape != data.feature_shape {
            return both(
                "feature shapes",
                format!("{:?}", self.feature_shape),
                format!("{:?}", data.feature_shape),
            );
        }
        if self.classes != data.classes {
            return both(
                "class lists",
                format!("[{}]", self.classes.join(", ")),
                format!("[{}]", data.classes.join(", ")),
            );
        }
        if self.base.preprocess != data.preprocess {
            return both(
                "preprocessing",
                format!("'{}'", self.base.preprocess),
                format!("'{}'", data.preprocess),
            );
        }
        Ok(())
    }

    /// Writes the head at `path` through the one output writer: an existing file is replaced only
    /// when it is a head file; a crash never leaves a half-written head.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_to(&Output::new(path).replace(replace_head()))
    }

    /// Writes the head through `out` (its inputs and replacement rule set by the caller).
    pub fn save_to(&self, out: &Output) -> Result<()> {
        crate::cache::save_via_tmp(out, |tmp| self.write(tmp))
    }

    /// Writes the head into `path` (a temporary file of [`write_together`](crate::util::output::write_together));
    /// errors name `target`.
    pub(crate) fn write_into(&self, path: &Path, target: &Path) -> Result<()> {
        self.write(path).map_err(|e| Error::hdf5(target, "HDF5", e))
    }

    fn write(&self, path: &Path) -> hdf5::Result<()> {
        let f = crate::cache::create_h5(path)?;
        write_str_attr(&f, "format", FORMAT)?;
        f.new_attr::<u32>()
            .create("format_version")?
            .write_scalar(&FORMAT_VERSION)?;
        write_str_attr(&f, "kind", self.kind.name())?;
        write_strs_attr(&f, "classes", &self.classes)?;
        let fs: Vec<u64> = self.feature_shape.iter().map(|&d| d as u64).collect();
        f.new_attr::<u64>()
            .shape(fs.len())
            .create("feature_shape")?
            .write_raw(&fs)?;
        write_str_attr(&f, "feature_layout", &self.base.layout)?;
        write_str_attr(&f, "pool", self.pool.name())?;
        let output = if self.thresholds.is_some() {
            "multi-label"
        } else if self.network.output_dim() == Some(1) {
            "sigmoid"
        } else {
            "softmax"
        };
        write_str_attr(&f, "output", output)?;
        if let Some(t) = &self.thresholds {
            f.new_attr::<f32>()
                .shape(t.len())
                .create("thresholds")?
                .write_raw(t)?;
        }
        write_str_attr(&f, "spec", &self.spec)?;
        write_str_attr(&f, "training", &self.training)?;
        write_str_attr(&f, "history_csv", &self.history_csv)?;
        write_str_attr(&f, "headstart_version", env!("CARGO_PKG_VERSION"))?;
        let base = f.create_group("base")?;
        write_meta(&base, &self.base)?;
        let layers = f.create_group("layers")?;
        let vec1 = |g: &hdf5::Group, name: &str, a: &Array1<f32>| -> hdf5::Result<()> {
            // Checksummed (HDF5's Fletcher-32 filter, one chunk): a damaged weight is an error
            // on reading, never a silently different head.
            g.new_dataset::<f32>()
                .shape(a.len())
                .chunk(a.len().max(1))
                .fletcher32()
                .create(name)?
                .write_raw(a.as_slice().expect("standard"))
        };
        for (i, l) in self.network.layers.iter().enumerate() {
            let name = match l {
                Layer::Dense(_) => "dense",
                Layer::Activation(a) => a.name(),
                Layer::Dropout(_) => "dropout",
                Layer::BatchNorm(_) => "batchnorm",
            };
            let g = layers.create_group(&format!("{i:03}_{name}"))?;
            match l {
                Layer::Dense(d) => {
                    write_str_attr(&g, "type", "dense")?;
                    // Chunks under HDF5's 4 GB limit: at most 2^28 values each.
                    let (r, c) = d.w.dim();
                    let rows = r.clamp(1, ((1usize << 28) / c.max(1)).max(1));
                    g.new_dataset::<f32>()
                        .shape((r, c))
                        .chunk((rows, c.max(1)))
                        .fletcher32()
                        .create("kernel")?
                        .write(&d.w)?;
                    vec1(&g, "bias", &d.b)?;
                }
                Layer::Activation(a) => {
                    write_str_attr(&g, "type", "activation")?;
                    write_str_attr(&g, "activation", a.name())?;
                    if let Activation::LeakyRelu(s) = a {
                        g.new_attr::<f32>()
                            .create("negative_slope")?
                            .write_scalar(s)?;
                    }
                }
                Layer::Dropout(r) => {
                    write_str_attr(&g, "type", "dropout")?;
                    g.new_attr::<f32>().create("rate")?.write_scalar(r)?;
                }
                Layer::BatchNorm(b) => {
                    write_str_attr(&g, "type", "batchnorm")?;
                    vec1(&g, "gamma", &b.gamma)?;
                    vec1(&g, "beta", &b.beta)?;
                    vec1(&g, "moving_mean", &b.mean)?;
                    vec1(&g, "moving_variance", &b.var)?;
                    g.new_attr::<f32>()
                        .create("epsilon")?
                        .write_scalar(&b.eps)?;
                }
            }
        }
        f.flush()
    }

    /// Whether `path` is a headstart head file (the rule by which `train-head` and `finetune`
    /// replace an existing output).
    pub fn is_head(path: &Path) -> bool {
        crate::cache::h5::open_read(path)
            .is_ok_and(|f| read_str_attr(&f, "format").is_ok_and(|v| v == FORMAT))
    }

    /// Reads a head file; errors name the file and what is missing or inconsistent.
    pub fn load(path: &Path) -> Result<Head> {
        crate::util::paths::check_regular(path)?;
        if !path.is_file() {
            return Err(Error::cache(path, "head file not found"));
        }
        let f = crate::cache::h5::open_read(path)
            .map_err(|e| Error::hdf5(path, "not an HDF5 head file", e))?;
        let format = read_str_attr(&f, "format").unwrap_or_default();
        if format != FORMAT {
            return Err(Error::cache(
                path,
                format!("not a headstart head file (format attribute '{format}', expected '{FORMAT}'); is it a feature cache?"),
            ));
        }
        Self::read(&f).map_err(|e| Error::hdf5(path, "broken head file", e))
    }

    fn read(f: &hdf5::File) -> hdf5::Result<Head> {
        let version = f.attr("format_version")?.read_scalar::<u32>()?;
        if version > FORMAT_VERSION {
            return Err(format!(
                "format_version {version} is newer than this headstart reads ({FORMAT_VERSION})"
            )
            .into());
        }
        let kind = match read_str_attr(f, "kind")?.as_str() {
            "logistic" => HeadKind::Logistic,
            _ => HeadKind::Mlp,
        };
        let pool_name = read_str_attr(f, "pool")?;
        let pool = Pool::parse(&pool_name).ok_or_else(|| format!("unknown pool '{pool_name}'"))?;
        let classes = crate::cache::h5::read_classes(f)?;
        if classes.len() < 2 {
            return Err(format!("{} classes; a head has at least 2", classes.len()).into());
        }
        let feature_shape =
            crate::util::limits::feature_shape(&f.attr("feature_shape")?.read_raw::<u64>()?)?;
        let base = read_meta(&*f.group("base")?)?;
        let width = pool
            .output_dim(&feature_shape, &base.layout)
            .map_err(|e| e.to_string())?;
        let layers = read_layers(f, width)?;
        let network = Network { layers };
        check_values(&network)?;
        let thresholds = read_thresholds(f, classes.len())?;
        let outputs = match thresholds {
            Some(_) => classes.len(),
            None => super::fit::output_units(classes.len()),
        };
        check_chain(&network, width, outputs, classes.len())?;
        Ok(Head {
            kind,
            network,
            pool,
            classes,
            feature_shape,
            base,
            spec: read_str_attr(f, "spec")?,
            training: read_str_attr(f, "training").unwrap_or_default(),
            history_csv: read_str_attr(f, "history_csv").unwrap_or_default(),
            thresholds,
        })
    }
}

/// A multi-label head's thresholds: one per class, each in [0, 1]; `None` for another output.
fn read_thresholds(f: &hdf5::File, classes: usize) -> hdf5::Result<Option<Vec<f32>>> {
    if read_str_attr(f, "output").unwrap_or_default() != "multi-label" {
        return Ok(None);
    }
    let a = f.attr("thresholds")?;
    if a.size() != classes {
        return Err(format!("{} thresholds for {classes} classes", a.size()).into());
    }
    let t = a.read_raw::<f32>()?;
    if let Some((j, v)) = t
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(format!("threshold {j} is {v}, not a probability in [0, 1]").into());
    }
    Ok(Some(t))
}

/// The layers of group `layers` in name order, the first taking `width` inputs. Sizes are checked
/// before reading: a kernel must take the previous width, and no dataset may declare more values
/// than the file holds.
fn read_layers(f: &hdf5::File, mut width: usize) -> hdf5::Result<Vec<Layer>> {
    let layers_g = f.group("layers")?;
    let mut names = layers_g.member_names()?;
    names.sort();
    let file_len = std::fs::metadata(f.filename())
        .map(|m| m.len())
        .unwrap_or(0);
    let bounded = |name: &str, n: usize| -> hdf5::Result<()> {
        if (n as u128) * 4 > file_len as u128 + (1 << 20) {
            return Err(format!(
                "layer {name}: declares {n} values, but the file holds {file_len} bytes"
            )
            .into());
        }
        Ok(())
    };
    let vec1 = |g: &hdf5::Group, n: &str| -> hdf5::Result<Array1<f32>> {
        let ds = g.dataset(n)?;
        bounded(n, ds.size())?;
        Ok(Array1::from(ds.read_raw::<f32>()?))
    };
    let mut layers = Vec::new();
    for name in names {
        let g = layers_g.group(&name)?;
        let ty = read_str_attr(&g, "type")?;
        layers.push(match ty.as_str() {
            "dense" => {
                let ds = g.dataset("kernel")?;
                match ds.shape()[..] {
                    [rows, cols] if rows == width => {
                        bounded(&name, rows.saturating_mul(cols))?;
                        width = cols;
                    }
                    ref shape => {
                        return Err(format!(
                            "layer {name}: dense kernel of shape {shape:?}, the previous width is {width}"
                        )
                        .into())
                    }
                }
                let w = ds.read_2d::<f32>()?;
                let b = vec1(&g, "bias")?;
                if b.len() != w.ncols() {
                    return Err(format!(
                        "layer {name}: bias has {} values for {} units",
                        b.len(),
                        w.ncols()
                    )
                    .into());
                }
                Layer::Dense(Dense {
                    w: w.as_standard_layout().into_owned(),
                    b,
                })
            }
            "activation" => Layer::Activation(read_activation(&g, &name)?),
            "dropout" => Layer::Dropout(g.attr("rate")?.read_scalar::<f32>()?),
            "batchnorm" => Layer::BatchNorm(BatchNorm {
                gamma: vec1(&g, "gamma")?,
                beta: vec1(&g, "beta")?,
                mean: vec1(&g, "moving_mean")?,
                var: vec1(&g, "moving_variance")?,
                eps: g.attr("epsilon")?.read_scalar::<f32>()?,
                momentum: BN_MOMENTUM,
            }),
            other => return Err(format!("layer {name}: unknown type '{other}'").into()),
        });
    }
    Ok(layers)
}

/// An activation layer's function (with its slope for a leaky ReLU).
fn read_activation(g: &hdf5::Group, name: &str) -> hdf5::Result<Activation> {
    let a = read_str_attr(g, "activation")?;
    let mut act =
        Activation::parse(&a).ok_or_else(|| format!("layer {name}: unknown activation '{a}'"))?;
    if let Activation::LeakyRelu(s) = &mut act {
        if let Ok(v) = g
            .attr("negative_slope")
            .and_then(|a| a.read_scalar::<f32>())
        {
            *s = v;
        }
    }
    Ok(act)
}

/// Every parameter finite, batch-norm variances not negative and epsilons positive, dropout rates in
/// [0, 1): a head that breaks these would write NaN probabilities with a prediction.
fn check_values(net: &Network) -> hdf5::Result<()> {
    fn finite<'a>(i: usize, what: &str, v: impl IntoIterator<Item = &'a f32>) -> hdf5::Result<()> {
        match v.into_iter().find(|x| !x.is_finite()) {
            Some(x) => {
                Err(format!("layer {i}: {what} holds {x}; parameters must be finite").into())
            }
            None => Ok(()),
        }
    }
    for (i, l) in net.layers.iter().enumerate() {
        match l {
            Layer::Dense(d) => {
                finite(i, "kernel", d.w.iter())?;
                finite(i, "bias", d.b.iter())?;
            }
            Layer::BatchNorm(b) => {
                for (what, v) in [
                    ("gamma", &b.gamma),
                    ("beta", &b.beta),
                    ("moving_mean", &b.mean),
                    ("moving_variance", &b.var),
                ] {
                    finite(i, what, v.iter())?;
                }
                if let Some(v) = b.var.iter().find(|&&v| v < 0.0) {
                    return Err(format!("layer {i}: batch-norm variance {v} is negative").into());
                }
                if !(b.eps.is_finite() && b.eps > 0.0) {
                    return Err(format!(
                        "layer {i}: batch-norm epsilon {} must be positive",
                        b.eps
                    )
                    .into());
                }
            }
            Layer::Activation(Activation::LeakyRelu(s)) if !s.is_finite() => {
                return Err(format!("layer {i}: leaky ReLU slope {s} must be finite").into());
            }
            Layer::Dropout(r) if !(0.0..1.0).contains(r) => {
                return Err(format!("layer {i}: dropout rate {r} must be in [0, 1)").into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Layer widths must chain from the pooled feature width to the head's `want` outputs.
fn check_chain(net: &Network, input: usize, want: usize, classes: usize) -> hdf5::Result<()> {
    let mut width = input;
    for (i, l) in net.layers.iter().enumerate() {
        match l {
            Layer::Dense(d) => {
                if d.w.nrows() != width {
                    return Err(format!(
                        "layer {i}: dense kernel takes {} inputs, previous width is {width}",
                        d.w.nrows()
                    )
                    .into());
                }
                width = d.w.ncols();
            }
            Layer::BatchNorm(b)
                if [b.gamma.len(), b.beta.len(), b.mean.len(), b.var.len()]
                    .iter()
                    .any(|&l| l != width) =>
            {
                return Err(
                    format!("layer {i}: batchnorm sizes do not match width {width}").into(),
                );
            }
            _ => {}
        }
    }
    if width != want {
        return Err(format!("output width {width} != {want} for {classes} classes").into());
    }
    Ok(())
}

/// Sigmoid (as two columns `[1-p, p]`) or softmax probabilities from logits.
pub fn probabilities_from_logits(z: &Array2<f32>) -> Array2<f32> {
    let (n, k) = z.dim();
    if k == 1 {
        let mut p = Array2::<f32>::zeros((n, 2));
        for i in 0..n {
            let s = sigmoid(z[[i, 0]]);
            p[[i, 0]] = 1.0 - s;
            p[[i, 1]] = s;
        }
        return p;
    }
    let mut p = z.clone();
    for mut r in p.outer_iter_mut() {
        let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        r.mapv_inplace(|v| (v - m).exp());
        let s = r.sum();
        r /= s;
    }
    p
}

/// The replacement rule of a head output: only a head file is replaced.
pub fn replace_head() -> Replace<'static> {
    Replace::If {
        what: "a headstart head file",
        check: &Head::is_head,
    }
}
