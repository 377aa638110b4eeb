#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build in release, extract features from
# DATA_DIR with MODEL, train the default head (the seed's Dense 256 relu -> Dropout 0.5 -> sigmoid/softmax)
# and evaluate it; the last line is the test accuracy.
# Usage: scripts/quickstart.sh DATA_DIR [MODEL.onnx]
#   MODEL defaults to ../shared/models/efficientnet_lite0_features.onnx when present, else to a
#   VGG-16-shaped base with RANDOM weights (models/vgg16_nchw.onnx; for shapes and speed only).
# Output: out/<name>.features.h5, out/<name>.head.h5, out/<name>.head.history.csv (<name>: the data folder)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/quickstart.sh DATA_DIR [MODEL.onnx]" >&2; exit 2; }
DATA="$1"
MODEL="${2:-}"
scripts/setup.sh
cargo build --release --quiet
BIN=target/release/headstart
if [ -z "$MODEL" ]; then
  if [ -f ../shared/models/efficientnet_lite0_features.onnx ]; then
    MODEL=../shared/models/efficientnet_lite0_features.onnx
  else
    MODEL=models/vgg16_nchw.onnx
    [ -f "$MODEL" ] || "$BIN" make-model vgg16 --layout nchw --out "$MODEL"
    echo "quickstart: $MODEL has random weights (no ImageNet VGG-16 offline); see scripts/export_*.py" >&2
  fi
fi
mkdir -p out
OUT="out/$(basename "$(cd "$DATA" && pwd)").features.h5"
"$BIN" extract --model "$MODEL" --data "$DATA" --out "$OUT"
"$BIN" summary "$OUT"
# Train on the train split (20% held out for validation), evaluate on test (else val, else train).
"$BIN" train-head "$OUT"
HEAD="${OUT%.features.h5}.head.h5"
"$BIN" evaluate --head "$HEAD" --features "$OUT" | tee out/evaluate.txt
echo "quickstart: test accuracy $(grep '^accuracy:' out/evaluate.txt | awk '{print $2}') ($HEAD on $OUT)"
