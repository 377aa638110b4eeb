#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): train-head on a cache over its memory budget (streamed),
# beside scikit-learn's SGDClassifier(loss="log_loss").partial_fit over the same file in chunks
# (h5py), in the same run: seconds per epoch, peak RSS, validation accuracy.
# Usage: ROWS=400000 BUDGET=512M EPOCHS=1 scripts/bench_stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-400000}"
BUDGET="${BUDGET:-512M}"
EPOCHS="${EPOCHS:-1}"
scripts/setup.sh --tests >/dev/null
cargo build --release --quiet
BIN=target/release/headstart
PY=.cache/bench-venv/bin/python
"$PY" -c 'import h5py, sklearn' >/dev/null 2>&1 || {
  python3 -m venv .cache/bench-venv
  "$PY" -m pip install -q --disable-pip-version-check h5py scikit-learn
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%dT%H:%MZ)"
"$BIN" make-features --shape 1280 --split "train=$ROWS" --split val=10000 --separation "${SEP:-0.05}" --seed 7 --out "$work/f.h5" >/dev/null
echo "cache: $ROWS x 1280 float32 train rows ($(du -h "$work/f.h5" | cut -f1)), 10000 val rows; budget $BUDGET; $EPOCHS epoch(s)"

/usr/bin/time -f "%e %M" -o "$work/t" "$BIN" train-head "$work/f.h5" --out "$work/h.h5" --head none \
  --optimizer sgd --lr 0.01 --batch-size 256 --epochs "$EPOCHS" --memory "$BUDGET" >"$work/log" 2>&1 \
  || { cat "$work/log"; exit 1; }
read -r secs kb <"$work/t"
acc=$(sed -nE 's/^kept epoch .*val_accuracy ([0-9.]+).*/\1/p' "$work/log")
grep -E '^streamed' "$work/log" || true
printf '%-34s %8.1f s  %8.0f MB peak  val accuracy %s\n' "headstart (streamed, linear, SGD)" "$secs" "$((kb / 1024))" "$acc"

"$PY" - "$work/f.h5" "$EPOCHS" <<'EOF'
import sys, time, resource, h5py, numpy as np
from sklearn.linear_model import SGDClassifier
path, epochs = sys.argv[1], int(sys.argv[2])
f = h5py.File(path)
x, y = f["train/features"], f["train/labels"]
n, chunk = x.shape[0], 65536
clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, random_state=0)
t0 = time.perf_counter()
for _ in range(epochs):
    for s in range(0, n, chunk):
        clf.partial_fit(x[s:s + chunk], y[s:s + chunk], classes=[0, 1])
secs = time.perf_counter() - t0
acc = clf.score(f["val/features"][:], f["val/labels"][:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{'scikit-learn SGDClassifier.partial_fit':34s} {secs:8.1f} s  {peak:8.0f} MB peak  val accuracy {acc:.4f}")
EOF
