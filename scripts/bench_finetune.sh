#!/usr/bin/env bash
# Benchmark (prints numbers; not a test) of `headstart finetune`.
#  1. Accuracy: $HEADSTART_SHARED/data/cats_dogs with efficientnet_lite0_features.onnx, the last stage and
#     the head conv unfrozen (--unfreeze stage7): test accuracy of the head alone (phase 1, frozen top)
#     beside the fine-tuned model's, from one run; then the written ONNX file is scored in ONNX
#     Runtime and its accuracy counted from the CSV.
#  2. Speed: a VGG-16-shaped base (random weights, `headstart make-model vgg16`), block5 + the seed
#     head trained on N cached 224x224 images (block4_pool outputs): seconds per epoch of headstart
#     (candle) beside PyTorch CPU training the same block on the same cached inputs, in the same run.
# Usage: scripts/bench_finetune.sh [N_IMAGES] [EPOCHS] [all|accuracy|speed]   (defaults 2000, 1, all)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
EPOCHS="${2:-1}"
PART="${3:-all}"
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
PY=.cache/torch-venv/bin/python
if ! "$PY" -c 'import torch, h5py' >/dev/null 2>&1; then
  echo "bench: installing torch (CPU) and h5py into .cache/torch-venv (PyPI)"
  python3 -m venv .cache/torch-venv
  "$PY" -m pip install -q --disable-pip-version-check torch h5py numpy
fi
mkdir -p out/finetune
W=out/finetune
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d)"

if [ "$PART" != speed ]; then
echo
echo "== 1. accuracy: cats_dogs (train 2000 -> 1600 + 400 val, test 1000), EfficientNet-Lite0, --unfreeze stage7 =="
"$BIN" finetune --model "$SHARED/models/efficientnet_lite0_features.onnx" --data "$SHARED/data/cats_dogs" \
  --unfreeze stage7 --freeze-epochs 30 --epochs 6 --lr 1e-6 --restore-best \
  --out "$W/lite0_ft.onnx" --progress none | tee "$W/lite0.log" | grep -E "^(finetune|phase|head only|fine-tuned|parity|data)"
"$BIN" score --model "$W/lite0_ft.onnx" "$SHARED/data/cats_dogs/test" --out "$W/lite0_scores.csv" -q >/dev/null 2>&1
python3 - "$W/lite0_scores.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ok = sum(1 for r in rows if r["path"].split("/")[-2] == r["predicted"])
print(f"exported model scored by ONNX Runtime (headstart score): test accuracy {ok / len(rows):.4f} on {len(rows)} photos")
PY
fi
[ "$PART" = accuracy ] && exit 0

echo
echo "== 2. speed: VGG-16-shaped base, block5 + head, $N images at 224x224, batch 20, RMSprop 1e-5 =="
"$BIN" make-model vgg16 --out "$W/vgg16.onnx"
data="$W/vgg_data"
rm -rf "$data"; mkdir -p "$data/train"
for c in cat dog; do
  mkdir -p "$data/train/$c"
  ls "$SHARED/data/cats_dogs/train/$c" | sed -n "1,$((N / 2))p" | while read -r f; do ln -sf "$(realpath "$SHARED/data/cats_dogs/train/$c/$f")" "$data/train/$c/$f"; done
done
/usr/bin/time -f "%e s, peak RSS %M KB" -o "$W/time" "$BIN" finetune --model "$W/vgg16.onnx" --data "$data" \
  --from-layer block5_conv1 --freeze-epochs 1 --epochs "$EPOCHS" --val-split 0 --progress none \
  --out "$W/vgg16_ft.onnx" --json -q > "$W/vgg.json"
hs=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % d["seconds_per_epoch"])' "$W/vgg.json")
echo "headstart whole run (extract block1-4 once, phase 1, $EPOCHS fine-tune epoch(s), export, parity): $(cat "$W/time")"
pt=$("$PY" benches/torch_finetune.py "$W/vgg16_ft.inputs.h5" --epochs "$EPOCHS" --threads "$(nproc)")
printf "%-44s %12s\n" "block5 + head, $N rows, one epoch" "seconds"
printf "%-44s %12s\n" "headstart finetune (candle)" "$hs"
echo "$pt" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%-44s %12.1f" % ("PyTorch %s CPU (%d threads)" % (d["torch"], d["threads"]), d["seconds_per_epoch"]))'
