#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): a multi-label set built from the project photos (single
# photos and pairs side by side, tags cat/dog/ant/bee; benches/multilabel_set.py), EfficientNet-Lite0
# features, headstart's default multi-label head beside scikit-learn's
# OneVsRestClassifier(LogisticRegression()) on the same features, in one run; then the time to read
# a 100k-row multi-label table. Python peers go into .cache/bench-venv from PyPI.
# Usage: scripts/bench_multilabel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/, models/)}"
scripts/setup.sh --tests
cargo build --release --quiet --bin headstart
BIN=target/release/headstart
PY=.cache/bench-venv/bin/python
if ! "$PY" -c 'import h5py, sklearn, PIL' >/dev/null 2>&1; then
  echo "bench: installing h5py, scikit-learn, pillow into .cache/bench-venv (PyPI)"
  python3 -m venv .cache/bench-venv
  "$PY" -m pip install -q --disable-pip-version-check h5py scikit-learn pillow
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d)"
"$PY" benches/multilabel_set.py "$SHARED" "$work/set"
CACHE="$work/tags.features.h5"
"$BIN" extract --model "$SHARED/models/efficientnet_lite0_features.onnx" --data "$work/set/img" \
  --labels "$work/set/labels.csv" --split-col split --label-delim ' ' --out "$CACHE" --quiet
start=$(date +%s.%N)
"$BIN" train-head "$CACHE" --out "$work/tags.head.h5" --quiet >/dev/null
echo "headstart train-head (auto, multi-label): $(echo "$(date +%s.%N) - $start" | bc) s"
"$BIN" evaluate --head "$work/tags.head.h5" --features "$CACHE" |
  awk '/^(macro average|micro average|micro F1|macro F1|subset accuracy|Hamming)/' | paste -sd';' |
  sed 's/^/headstart default head: /'
"$PY" benches/sklearn_ovr.py "$CACHE"

echo "== reading a 100k-row multi-label table =="
mkdir -p "$work/big"
"$PY" - "$work/big" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(os.path.join(d, "img"), exist_ok=True)
with open(os.path.join(d, "labels.csv"), "w") as f:
    f.write("id,tags\n")
    for i in range(100_000):
        open(os.path.join(d, "img", f"{i:06d}.jpg"), "wb").close()
        f.write(f"{i:06d},{'a b' if i % 3 else 'c'}\n")
PY
# The table is read, checked and its images listed before the model is opened: given a file that is
# not ONNX as the model, the run stops right after, so the time up to that error is the table's.
start=$(date +%s.%N)
"$BIN" extract --model "$work/big/labels.csv" --data "$work/big/img" --labels "$work/big/labels.csv" \
  --label-delim ' ' --out "$work/big.h5" --quiet >"$work/big.log" 2>&1 || true
echo "100k rows: $(echo "$(date +%s.%N) - $start" | bc) s (to: $(tail -1 "$work/big.log" | cut -c1-80))"
