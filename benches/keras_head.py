#!/usr/bin/env python3
"""The seed head in Keras 3 (TensorFlow CPU) on a headstart feature cache, for side-by-side timing.

Usage: keras_head.py FEATURES.h5 [--epochs 30] [--batch-size 20] [--lr 2e-5] [--optimizer rmsprop]
Model: Flatten -> Dense 256 relu -> Dropout 0.5 -> Dense 1 sigmoid (binary) / C softmax; trains on
`train`, validates on `val` (or `test`) as the Keras book does. Prints one JSON line with seconds,
per-epoch history and the final validation accuracy.
"""
import argparse, json, os, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import h5py
import numpy as np
import keras

ap = argparse.ArgumentParser()
ap.add_argument("features")
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--batch-size", type=int, default=20)
ap.add_argument("--lr", type=float, default=2e-5)
ap.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "adam"])
ap.add_argument("--pool", default="flatten", choices=["flatten", "avg"])
a = ap.parse_args()

with h5py.File(a.features, "r") as f:
    classes = list(f.attrs["classes"])
    x, y = f["train/features"][()], f["train/labels"][()]
    vs = "val" if "val" in f else "test"
    vx, vy = f[vs + "/features"][()], f[vs + "/labels"][()]
    layout = f.attrs["layout"].lower()
if x.ndim == 4 and layout == "nchw":  # Keras is channels-last
    x, vx = x.transpose(0, 2, 3, 1), vx.transpose(0, 2, 3, 1)
k = len(classes)
keras.utils.set_random_seed(42)
inp = keras.Input(shape=x.shape[1:])
h = keras.layers.Flatten()(inp) if a.pool == "flatten" or x.ndim == 2 else keras.layers.GlobalAveragePooling2D()(inp)
h = keras.layers.Dense(256, activation="relu")(h)
h = keras.layers.Dropout(0.5)(h)
out = keras.layers.Dense(1 if k == 2 else k, activation="sigmoid" if k == 2 else "softmax")(h)
model = keras.Model(inp, out)
opt = keras.optimizers.RMSprop(a.lr) if a.optimizer == "rmsprop" else keras.optimizers.Adam(a.lr)
model.compile(opt, "binary_crossentropy" if k == 2 else "sparse_categorical_crossentropy", metrics=["accuracy"])
t = time.perf_counter()
hist = model.fit(x, y, epochs=a.epochs, batch_size=a.batch_size, validation_data=(vx, vy), verbose=0)
secs = time.perf_counter() - t
h = hist.history
print(json.dumps({"tool": "keras", "keras": keras.__version__, "seconds": secs, "epochs": a.epochs,
                  "loss": h["loss"], "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"],
                  "final_val_accuracy": h["val_accuracy"][-1]}))
