#!/usr/bin/env python3
"""Export a Keras 3 application (TensorFlow backend) to ONNX for headstart.

Usage: export_keras.py NAME [--weights imagenet|none] [--include-top] [--size WxH] --out F.onnx
NAME: a keras.applications class (VGG16, ResNet50, MobileNetV2, ...) or a headstart preset name.
Writes metadata_props with the layout (NHWC), input size, preprocessing (mean/std/colour order of the
application's `preprocess_input`), resize policy and `preset`/`source`, so `headstart extract` needs no flags.
With --weights imagenet Keras downloads the weights (internet needed); --weights none gives random ones.
Needs: tensorflow (or tensorflow-cpu), keras >= 3, tf2onnx, onnx.
"""
import argparse, os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import onnx

# keras.applications preprocessing modes (keras/src/applications/*.py): caffe, tf or torch.
MODES = {
    "VGG16": "caffe", "VGG19": "caffe", "ResNet50": "caffe", "ResNet101": "caffe", "ResNet152": "caffe",
    "ResNet50V2": "tf", "ResNet101V2": "tf", "ResNet152V2": "tf", "InceptionV3": "tf",
    "InceptionResNetV2": "tf", "Xception": "tf", "MobileNet": "tf", "MobileNetV2": "tf",
    "NASNetMobile": "tf", "NASNetLarge": "tf", "DenseNet121": "torch", "DenseNet169": "torch",
    "DenseNet201": "torch",
}
SIZES = {"InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299, "NASNetLarge": 331}
NORM = {
    "caffe": ("BGR", "103.939,116.779,123.68", "1,1,1"),
    "tf": ("RGB", "127.5,127.5,127.5", "127.5,127.5,127.5"),
    "torch": ("RGB", "123.675,116.28,103.53", "58.395,57.12,57.375"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    ap.add_argument("--include-top", action="store_true")
    ap.add_argument("--size")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    name = next((k for k in MODES if k.lower() == a.name.lower().replace("-", "").replace("_", "")), None)
    if name is None:
        raise SystemExit(f"unknown application {a.name}; known: {', '.join(MODES)}")
    s = SIZES.get(name, 224)
    w, h = (int(v) for v in a.size.split("x")) if a.size else (s, s)
    ctor = getattr(keras.applications, name)
    model = ctor(weights=None if a.weights == "none" else "imagenet", include_top=a.include_top,
                 input_shape=(h, w, 3))
    import numpy as np
    model(np.zeros((1, h, w, 3), "float32"))  # Keras' ONNX export needs a built, called model
    tmp = a.out + ".tmp"
    model.export(tmp, format="onnx", verbose=False)
    m = onnx.load(tmp)
    color, mean, std = NORM[MODES[name]]
    meta = {
        "preset": name.lower(), "source": "keras", "layout": "NHWC", "input_size": f"{w}x{h}",
        "color_order": color, "mean": mean, "std": std, "pixel_scale": "0..255",
        "resize_mode": "squash", "interpolation": "bilinear",
        "weights": a.weights, "include_top": str(a.include_top).lower(),
        "exported_by": f"headstart scripts/export_keras.py, keras {keras.__version__}",
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, a.out)
    os.remove(tmp)
    print(f"wrote {a.out}: {name} weights={a.weights} include_top={a.include_top} input {w}x{h} NHWC, "
          f"output {[o.name for o in m.graph.output]}")


if __name__ == "__main__":
    main()
