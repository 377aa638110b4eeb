#!/usr/bin/env python3
"""Independent reference for headstart's extraction: Python onnxruntime + Pillow.

Computes EfficientNet-Lite0 features for a few real photos with the preprocessing the model's README
states (RGB; centre crop keeping floor(0.875 * shorter side), offset rounded up; bicubic to 224x224;
(x - 127) / 128; NCHW) and writes them as JSON for tests/fixtures/. Run from the repo root:

    .cache/venv/bin/python scripts/reference_features.py $HEADSTART_SHARED/models/efficientnet_lite0_features.onnx \
        $HEADSTART_SHARED/data/cats_dogs tests/fixtures/reference_features.json
"""
import json
import math
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

FILES = [
    "test/cat/cat.4001.jpg",
    "test/dog/dog.4001.jpg",
    "train/cat/cat.835.jpg",  # the largest photo, 1023x768
    "train/dog/dog.2.jpg",
    "train/cat/cat.3.jpg",
    "test/dog/dog.4010.jpg",
]


def crop_box(w, h, frac=0.875, tw=224, th=224):
    if w / h > tw / th:
        bw, bh = h * tw / th, h
    else:
        bw, bh = w, w * th / tw
    cw = min(max(int(math.floor(bw * frac)), 1), w)
    ch = min(max(int(math.floor(bh * frac)), 1), h)
    left = (w - cw + 1) // 2
    top = (h - ch + 1) // 2
    return (left, top, left + cw, top + ch)


def preprocess(path):
    img = Image.open(path).convert("RGB")
    img = img.resize((224, 224), Image.BICUBIC, box=crop_box(*img.size))
    x = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def main():
    model, root, out = sys.argv[1:4]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    result = {"model": model.split("/")[-1], "onnxruntime": ort.__version__, "files": {}}
    for f in FILES:
        feats = sess.run(None, {"input": preprocess(f"{root}/{f}")})[0][0]
        result["files"][f] = [round(float(v), 6) for v in feats]
    with open(out, "w") as fh:
        json.dump(result, fh)
    print(f"wrote {out}: {len(FILES)} files x {len(feats)} features")


if __name__ == "__main__":
    main()
