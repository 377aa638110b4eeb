#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build in release, extract features from
# DATA_DIR with MODEL and print a summary of the cache.
# Usage: scripts/quickstart.sh DATA_DIR [MODEL.onnx]
#   MODEL defaults to ../shared/models/efficientnet_lite0_features.onnx when present, else to a
#   VGG-16-shaped base with RANDOM weights (models/vgg16_nchw.onnx; for shapes and speed only).
# Output: out/<data folder name>.features.h5
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
