#!/usr/bin/env python3
"""Export a torchvision classification model to ONNX for headstart.

Usage: export_torchvision.py NAME [--weights imagenet|none] [--include-top] [--size WxH] --out F.onnx
NAME: a torchvision.models builder (vgg16, resnet50, mobilenet_v2, densenet121, inception_v3, ...).
Without --include-top the classifier is dropped (include_top=False): the output is the conv base's last
feature map, [N, C, H, W]. Writes metadata_props with the layout (NCHW), input size, the ImageNet mean/std
of torchvision's transforms, resize policy (resize 256 / centre crop 224 = crop 0.875, bilinear) and
`preset`/`source`, so `headstart extract` needs no flags. --weights imagenet downloads torchvision's
IMAGENET1K_V1 weights (internet needed); --weights none gives random ones.
Needs: torch, torchvision, onnx.
"""
import argparse

import onnx
import torch
import torchvision


def conv_base(name, model):
    """The feature extractor of a torchvision classifier (everything before its pooling + classifier)."""
    if name.startswith(("vgg", "mobilenet", "densenet", "efficientnet", "convnext", "alexnet")):
        f = model.features
        return torch.nn.Sequential(f, torch.nn.ReLU()) if name.startswith("densenet") else f
    if name.startswith(("resnet", "resnext", "wide_resnet", "regnet")):
        return torch.nn.Sequential(*list(model.children())[:-2])
    if name == "inception_v3":
        return torch.nn.Sequential(*list(model.children())[:-3])
    raise SystemExit(f"--include-top is needed for {name}: no known conv-base split")


PRESET = {"vgg16": "vgg16", "vgg19": "vgg19", "resnet50": "resnet50", "resnet101": "resnet101",
          "resnet152": "resnet152", "inception_v3": "inceptionv3", "mobilenet_v2": "mobilenetv2",
          "densenet121": "densenet121", "densenet169": "densenet169", "densenet201": "densenet201"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    ap.add_argument("--include-top", action="store_true")
    ap.add_argument("--size")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    s = 299 if a.name == "inception_v3" else 224
    w, h = (int(v) for v in a.size.split("x")) if a.size else (s, s)
    kwargs = {"aux_logits": True, "init_weights": False} if a.name == "inception_v3" else {}
    model = torchvision.models.get_model(a.name, weights="IMAGENET1K_V1" if a.weights == "imagenet" else None, **kwargs)
    model.eval()
    net = model if a.include_top else conv_base(a.name, model)
    x = torch.zeros(1, 3, h, w)
    torch.onnx.export(net, (x,), a.out, input_names=["input"], output_names=["logits" if a.include_top else "features"],
                      dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)
    m = onnx.load(a.out)
    crop = 0.875 if s == 224 else 299 / 342
    meta = {
        "source": "torchvision", "layout": "NCHW", "input_size": f"{w}x{h}", "color_order": "RGB",
        "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225", "pixel_scale": "0..1",
        "resize_mode": "crop", "crop_fraction": f"{crop:.4f}", "interpolation": "bilinear",
        "weights": a.weights, "include_top": str(a.include_top).lower(),
        "exported_by": f"headstart scripts/export_torchvision.py, torch {torch.__version__}, torchvision {torchvision.__version__}",
    }
    if a.name in PRESET:
        meta["preset"] = PRESET[a.name]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, a.out)
    with torch.no_grad():
        shape = tuple(net(x).shape)
    print(f"wrote {a.out}: {a.name} weights={a.weights} include_top={a.include_top} input {w}x{h} NCHW, output {shape}")


if __name__ == "__main__":
    main()
