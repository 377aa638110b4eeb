#!/usr/bin/env python3
"""Reference: sklearn LogisticRegression (C=1) on a headstart feature cache, trained on `train`,
scored on `test`. Prints one JSON line."""
import json, sys, time
import h5py
from sklearn.linear_model import LogisticRegression

with h5py.File(sys.argv[1], "r") as f:
    x, y = f["train/features"][()], f["train/labels"][()]
    tx, ty = f["test/features"][()], f["test/labels"][()]
x, tx = x.reshape(len(x), -1), tx.reshape(len(tx), -1)
t = time.perf_counter()
m = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
print(json.dumps({"tool": "sklearn", "seconds": time.perf_counter() - t, "test_accuracy": float(m.score(tx, ty))}))
