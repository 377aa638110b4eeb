#!/usr/bin/env python3
"""Benchmark (prints numbers; not a test): `train-head` (the default `auto` recipe) against
scikit-learn's LogisticRegression() on many seeded subsets of one feature cache, without extracting
again. For each cache: subsets of K train rows per class (seeds 0..DRAWS-1) and the full train split,
each written as a cache (same attributes, test split untouched), trained with headstart and with
sklearn, both scored on the full test split. Prints one JSON line per run and the means per (cache, K).
Usage: benches/auto_draws.py HEADSTART_BINARY CACHE.h5... [env DRAWS=5 SIZES="25 100"]"""
import json, os, subprocess, sys, tempfile, time, warnings
import h5py
import numpy as np
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore")


def subset(src, dst, idx):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for s in f:
            grp = g.create_group(s)
            for d in f[s]:
                a = f[s][d][()]
                if s == "train" and d in ("features", "labels", "paths"):
                    a = a[idx]
                text = d == "paths" or d.startswith("skipped")
                grp.create_dataset(d, data=a, dtype=h5py.string_dtype() if text else None)


def main():
    binary, caches = sys.argv[1], sys.argv[2:]
    draws = int(os.environ.get("DRAWS", "5"))
    sizes = [int(k) for k in os.environ.get("SIZES", "25 100").split()] + [0]
    work = tempfile.mkdtemp()
    sub, head = os.path.join(work, "sub.h5"), os.path.join(work, "head.h5")
    means = []
    for src in caches:
        with h5py.File(src) as f:
            x, y = f["train/features"][()], f["train/labels"][()]
            tx, ty = f["test/features"][()], f["test/labels"][()]
        x, tx = x.reshape(len(x), -1), tx.reshape(len(tx), -1)
        for k in sizes:
            runs = []
            for seed in [0] if k == 0 else range(draws):
                rng = np.random.RandomState(seed)
                idx = np.arange(len(y)) if k == 0 else np.sort(np.concatenate(
                    [rng.permutation(np.where(y == c)[0])[:k] for c in range(y.max() + 1)]))
                subset(src, sub, idx)
                sk = LogisticRegression(max_iter=1000).fit(x[idx], y[idx]).score(tx, ty)
                t = time.time()
                subprocess.run([binary, "train-head", sub, "--out", head, "-q"], check=True,
                               stdout=subprocess.DEVNULL)
                secs = time.time() - t
                out = subprocess.run([binary, "evaluate", "--head", head, "--features", sub],
                                     check=True, capture_output=True, text=True).stdout
                auto = float(next(l for l in out.splitlines() if l.startswith("accuracy:")).split()[1])
                r = dict(cache=os.path.basename(src), per_class=k or "all", seed=seed,
                         sklearn=round(sk, 4), auto=auto, auto_s=round(secs, 1))
                print(json.dumps(r), flush=True)
                runs.append(r)
            means.append((os.path.basename(src), k or "all", len(runs),
                          *(np.mean([r[c] for r in runs]) for c in ("sklearn", "auto", "auto_s"))))
    print("\ncache                per_class  n  sklearn   auto     auto-sklearn  auto s")
    for c, k, n, sk, auto, secs in means:
        print(f"{c:20s} {str(k):>9s} {n:2d}  {sk:.4f}   {auto:.4f}   {auto - sk:+.4f}       {secs:.1f}")


if __name__ == "__main__":
    main()
