#!/usr/bin/env python3
"""Parity of `headstart export` in Python onnxruntime, independent of headstart's runtime.

Usage: export_parity.py BASE.onnx HEAD.h5 EXPORT.onnx EXPORT_U8.onnx PHOTO... 
For each photo (resized with Pillow to the model's input size; the same pixels go to every path):
  two-stage: base model (onnxruntime) on (pixels - mean) / std in the head's layout and colour order,
             then the head's layers in numpy (scripts/head_predict.py);
  export:    the exported model on the same float tensor;
  export_u8: the --with-preprocessing export on the uint8 pixels.
Prints the max abs differences of the probabilities and exits 1 if any is >= 1e-5.
"""
import sys

import h5py
import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from head_predict import load_head, predict  # noqa: E402


def main():
    base, head_path, exp, exp8, photos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    f, layers = load_head(head_path)
    b = f["base"].attrs
    h, w = (int(v) for v in b["input_size"])
    mean, std = np.array(b["mean"], np.float32), np.array(b["std"], np.float32)
    bgr = str(b["color_order"]).upper() == "BGR"
    nchw = str(b["layout"]).upper() == "NCHW"
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BICUBIC)) for p in photos])
    x = pixels[..., ::-1] if bgr else pixels
    x = (x.astype(np.float32) - mean) * (np.float32(1) / std)
    if nchw:
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, np.float32)
    so = ort.SessionOptions()
    run = lambda path, feed: ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    base_sess = ort.InferenceSession(base, so, providers=["CPUExecutionProvider"])
    feats = base_sess.run([str(b["output_name"])], {base_sess.get_inputs()[0].name: x})[0]
    two_stage = predict(f, layers, feats)
    e = ort.InferenceSession(exp, so, providers=["CPUExecutionProvider"])
    p_exp = e.run(["probabilities"], {e.get_inputs()[0].name: x})[0]
    p_u8 = run(exp8, {"image": pixels.astype(np.uint8)})
    d1, d2 = np.abs(two_stage - p_exp).max(), np.abs(two_stage - p_u8).max()
    print(f"{len(photos)} photos, {h}x{w}: max |two-stage - export| = {d1:.2e}, max |two-stage - export_u8| = {d2:.2e}")
    sys.exit(0 if max(d1, d2) < 1e-5 else 1)


if __name__ == "__main__":
    main()
