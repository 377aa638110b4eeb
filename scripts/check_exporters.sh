#!/usr/bin/env bash
# Offline check of the exporters (not part of the test suite: TensorFlow and torch are GBs): export VGG16
# and one other model from Keras and from torchvision with random weights (--weights none), then check
# that headstart reads them (inspect: preset, preprocessing, parameters) and extracts from them; also cut
# an --include-top export at its default conv base. The one step not run here is the weights download.
# Python venvs: .cache/bench-venv (tensorflow-cpu, keras, tf2onnx, onnx), .cache/torch-venv (torch,
# torchvision, onnx); made when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
cargo build --release --quiet
BIN=target/release/headstart
[ -x .cache/bench-venv/bin/python ] || python3 -m venv .cache/bench-venv
.cache/bench-venv/bin/python -c 'import keras, tf2onnx, onnx' 2>/dev/null || .cache/bench-venv/bin/pip install -q tensorflow-cpu tf2onnx onnx
[ -x .cache/torch-venv/bin/python ] || python3 -m venv .cache/torch-venv
.cache/torch-venv/bin/python -c 'import torchvision, onnx' 2>/dev/null || .cache/torch-venv/bin/pip install -q torch torchvision onnx
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data/cat" "$work/data/dog"
cp $(ls "$SHARED"/data/cats_dogs/test/cat/*.jpg | head -3) "$work/data/cat/"
cp $(ls "$SHARED"/data/cats_dogs/test/dog/*.jpg | head -3) "$work/data/dog/"
check() { # MODEL.onnx
  "$BIN" inspect "$1" | grep -E '^(input|preset|preprocessing|parameters)' | sed 's/^/    /'
  "$BIN" extract --model "$1" --data "$work/data" --out "$work/f.h5" --force --quiet | sed 's/^/    /'
}
export TF_CPP_MIN_LOG_LEVEL=3
for m in VGG16 MobileNetV2; do
  .cache/bench-venv/bin/python scripts/export_keras.py "$m" --weights none --out "$work/k.onnx" 2>/dev/null | tail -1
  check "$work/k.onnx"
done
for m in vgg16 resnet50; do
  .cache/torch-venv/bin/python scripts/export_torchvision.py "$m" --weights none --out "$work/t.onnx" 2>/dev/null | tail -1
  check "$work/t.onnx"
done
.cache/torch-venv/bin/python scripts/export_torchvision.py resnet50 --weights none --include-top --out "$work/top.onnx" 2>/dev/null | tail -1
"$BIN" cut "$work/top.onnx" --out "$work/base.onnx" | sed 's/^/    /'
check "$work/base.onnx"
echo "exporters: all checks passed"
