#!/usr/bin/env bash
# Benchmark (prints numbers; not a test) of train-head, side by side with Keras 3 (TensorFlow CPU) and
# scikit-learn in the same run. Python peers are installed into .cache/bench-venv from PyPI.
#  1. Accuracy on $HEADSTART_SHARED/data/cats_dogs test with efficientnet_lite0_features.onnx features:
#     headstart's default head and its logistic baseline vs sklearn LogisticRegression and the Keras head.
#  2. Speed: the seed head (Flatten -> Dense 256 relu -> Dropout 0.5 -> sigmoid, RMSprop 2e-5, batch 20,
#     30 epochs) on 2000 x (512x7x7) seeded random features (`headstart make-features`, validation on
#     1000 more), headstart vs Keras: seconds, peak RSS, validation loss curve.
# Usage: scripts/bench_head.sh [EPOCHS]     (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${1:-30}"
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
PY=.cache/bench-venv/bin/python
if ! "$PY" -c 'import keras, tensorflow, h5py, sklearn' >/dev/null 2>&1; then
  echo "bench: installing tensorflow-cpu, h5py, scikit-learn into .cache/bench-venv (PyPI)"
  python3 -m venv .cache/bench-venv
  "$PY" -m pip install -q --disable-pip-version-check tensorflow-cpu h5py scikit-learn
fi
export TF_CPP_MIN_LOG_LEVEL=3
mkdir -p out
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d)"

acc() { sed -nE 's/^accuracy: ([0-9.]+)/\1/p'; }
rss() { /usr/bin/time -f "%e %M" -o "$work/t" "$@" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }; cat "$work/t"; }

echo
echo "== 1. accuracy: cats_dogs test (1000 photos), EfficientNet-Lite0 features =="
CACHE=out/cats_dogs.features.h5
"$BIN" extract --model "$SHARED/models/efficientnet_lite0_features.onnx" --data "$SHARED/data/cats_dogs" --out "$CACHE" --quiet
read -r t_mlp _ < <(rss "$BIN" train-head "$CACHE" --out "$work/mlp.h5")
a_mlp=$("$BIN" evaluate --head "$work/mlp.h5" --features "$CACHE" | acc)
read -r t_lr _ < <(rss "$BIN" train-head "$CACHE" --head logistic --out "$work/lr.h5")
a_lr=$("$BIN" evaluate --head "$work/lr.h5" --features "$CACHE" | acc)
sk=$("$PY" benches/sklearn_logreg.py "$CACHE")
kr=$("$PY" benches/keras_head.py "$CACHE" --epochs 30 2>/dev/null | tail -1)
# Keras validates on `test` here (the cache has no val split), so its last val_accuracy is test accuracy.
printf "%-58s %9s %9s\n" "model (train 2000, test 1000)" "test acc" "seconds"
printf "%-58s %9s %9.2f\n" "headstart default head (Dense256-Dropout-sigmoid, 30 ep)" "$a_mlp" "$t_mlp"
printf "%-58s %9s %9.2f\n" "headstart --head logistic (linfa, C=1)" "$a_lr" "$t_lr"
echo "$sk" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("%-58s %9.4f %9.2f" % ("sklearn LogisticRegression (C=1)", d["test_accuracy"], d["seconds"]))'
echo "$kr" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("%-58s %9.4f %9.2f" % ("Keras 3 same head (RMSprop 2e-5, 30 ep, all 2000 train)", d["final_val_accuracy"], d["seconds"]))'
echo "(headstart holds out 20% of train for validation by default: it trains on 1600 rows)"

echo
echo "== 2. speed: seed head on 2000 x 512x7x7 random features, $EPOCHS epochs, batch 20, RMSprop 2e-5 =="
"$BIN" make-features --shape 512,7,7 --split train=2000 --split val=1000 --out "$work/vgg.h5" >/dev/null
fm=$(awk 'BEGIN {print 3000 * 25088 * 4 / 1048576}')
read -r t_hs m_hs < <(rss "$BIN" train-head "$work/vgg.h5" --out "$work/vgg.head.h5" --epochs "$EPOCHS")
cp "$work/vgg.head.history.csv" "$work/hs.csv"
read -r t_k m_k < <(rss "$PY" benches/keras_head.py "$work/vgg.h5" --epochs "$EPOCHS")
grep '^{' "$work/log" | tail -1 > "$work/keras.json"
printf "%-34s %10s %10s %12s\n" "tool" "seconds" "s/epoch" "peak RSS MB"
printf "%-34s %10.1f %10.2f %12.0f\n" "headstart train-head" "$t_hs" "$(awk "BEGIN {print $t_hs / $EPOCHS}")" "$(awk "BEGIN {print $m_hs / 1024}")"
printf "%-34s %10.1f %10.2f %12.0f\n" "Keras 3 (TensorFlow CPU)" "$t_k" "$(awk "BEGIN {print $t_k / $EPOCHS}")" "$(awk "BEGIN {print $m_k / 1024}")"
printf "headstart / Keras time: %.2f (target <= 0.20); features in memory (train+val): %.0f MB; headstart RSS / features: %.2f\n" \
  "$(awk "BEGIN {print $t_hs / $t_k}")" "$fm" "$(awk "BEGIN {print $m_hs / 1024 / $fm}")"
echo "(process wall times, start-up and data loading included)"
echo "validation loss by epoch (headstart | Keras):"
"$PY" - "$work/hs.csv" "$work/keras.json" <<'PY'
import csv, json, sys
hs = [float(r["val_loss"]) for r in csv.DictReader(open(sys.argv[1]))]
k = json.load(open(sys.argv[2]))["val_loss"]
for e in sorted(set([0, 1, 2, 4, 9, 14, 19, 24, 29, len(hs) - 1])):
    if e < len(hs):
        print(f"  epoch {e + 1:>3}: {hs[e]:.4f} | {k[e]:.4f}")
PY
