#!/usr/bin/env python3
"""Reads a headstart head file with h5py + numpy only and prints its class probabilities.

Usage: head_predict.py HEAD.h5 FEATURES.h5 [SPLIT]   -> JSON {"classes": [...], "probs": [[...], ...]}
This is the README's "read a head from Python" snippet in runnable form; a test compares its output
with headstart's own forward pass.
"""
import json
import sys

import h5py
import numpy as np


def load_head(path):
    f = h5py.File(path, "r")
    assert f.attrs["format"] == "headstart-head", "not a headstart head file"
    layers = []
    for name in sorted(f["layers"]):
        g = f["layers"][name]
        t = g.attrs["type"]
        if t == "dense":
            layers.append(("dense", g["kernel"][()], g["bias"][()]))
        elif t == "activation":
            layers.append(("act", g.attrs["activation"], float(g.attrs.get("negative_slope", 0.01))))
        elif t == "batchnorm":
            scale = g["gamma"][()] / np.sqrt(g["moving_variance"][()] + g.attrs["epsilon"])
            layers.append(("affine", scale, g["beta"][()] - g["moving_mean"][()] * scale))
        # dropout does nothing at inference
    return f, layers


ACT = {
    "relu": lambda x, s: np.maximum(x, 0),
    "leaky_relu": lambda x, s: np.where(x > 0, x, s * x),
    "gelu": lambda x, s: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3))),
    "tanh": lambda x, s: np.tanh(x),
    "sigmoid": lambda x, s: 1 / (1 + np.exp(-x)),
    "linear": lambda x, s: x,
}


def pool(x, how, layout):
    """x: [N, *feature_shape] -> [N, D] as the head's `pool` attribute says."""
    if how == "flatten" or x.ndim == 2:
        return x.reshape(len(x), -1)
    a, b, c = x.shape[1:]
    first = (b == c and a != b) or (not (a == b and b != c) and layout.lower() == "nchw")
    axes = (2, 3) if first else (1, 2)
    return x.mean(axes) if how == "avg" else x.max(axes)


def predict(f, layers, features):
    x = pool(features.astype(np.float32), f.attrs["pool"], f.attrs["feature_layout"])
    for kind, a, b in layers:
        if kind == "dense":
            x = x @ a + b
        elif kind == "act":
            x = ACT[a](x, b)
        else:
            x = x * a + b
    if x.shape[1] == 1:  # binary head: sigmoid gives P(second class)
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.stack([1 - p, p], 1)
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main():
    head, feats = sys.argv[1], sys.argv[2]
    split = sys.argv[3] if len(sys.argv) > 3 else "test"
    f, layers = load_head(head)
    with h5py.File(feats, "r") as c:
        assert c.attrs["model_sha256"] == f["base"].attrs["model_sha256"], "features of another base model"
        probs = predict(f, layers, c[split]["features"][()])
    classes = [str(s) for s in f.attrs["classes"]]
    print(json.dumps({"classes": classes, "probs": probs.tolist()}))


if __name__ == "__main__":
    main()
