#!/usr/bin/env bash
# The side-by-side benchmark (prints numbers; not a test): headstart vs Keras 3 (TensorFlow CPU),
# PyTorch (CPU) and ONNX Runtime from Python, in one run, on the same photos.
#  1. extraction with a VGG-16 conv base (random weights, 224x224, 256 cats_dogs photos): img/s end to
#     end (decode + resize + infer) and inference only; peak RSS; then the same with int8 copies of the
#     base (`headstart quantize` vs ONNX Runtime's `quantize_static`, 32 calibration photos from train);
#  2. head training: the seed head, 30 epochs of 20, RMSprop 2e-5, on 2000 x 512x7x7 features;
#  3. the whole assignment with EfficientNet-Lite0 (extract 3000 photos, train, evaluate): wall time,
#     peak RSS, test accuracy.
# Peers are installed from PyPI into .cache/{venv,bench-venv,torch-venv} when missing (several GB).
# Writes out/bench.md (markdown table) and out/bench.json. Usage: scripts/bench.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${1:-30}"
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
scripts/setup.sh --tests >/dev/null
cargo build --release --quiet
BIN=target/release/headstart
PY=.cache/venv/bin/python TF=.cache/bench-venv/bin/python TORCH=.cache/torch-venv/bin/python
$PY -c 'import onnxruntime, onnx, PIL, sklearn' 2>/dev/null || $PY -m pip install -q onnxruntime==1.31.1 onnx pillow scikit-learn
[ -x $TF ] || python3 -m venv .cache/bench-venv
$TF -c 'import keras, tensorflow, h5py, sklearn' 2>/dev/null || $TF -m pip install -q tensorflow-cpu h5py scikit-learn
[ -x $TORCH ] || python3 -m venv .cache/torch-venv
$TORCH -c 'import torchvision, h5py' 2>/dev/null || $TORCH -m pip install -q torch torchvision h5py
export TF_CPP_MIN_LOG_LEVEL=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p out
rows="$work/rows.jsonl"
timed() { # NAME CMD... -> appends {"name","seconds","rss_mb","out"} with the command's last JSON/summary line
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/t" "$@" >"$work/o" 2>"$work/e" || { cat "$work/e" "$work/o"; exit 1; }
  read -r secs kb <"$work/t"
  local last; last=$( (grep -h '^{' "$work/o" || true) | tail -1)
  python3 - "$name" "$secs" "$kb" "$last" >>"$rows" <<'PY'
import json, sys
name, secs, kb, last = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    out = json.loads(last)
except ValueError:
    out = None
print(json.dumps({"name": name, "seconds": secs, "rss_mb": kb / 1024, "out": out}))
PY
}
for cls in cat dog; do
  mkdir -p "$work/p256/$cls"
  for f in $(ls "$SHARED"/data/cats_dogs/test/$cls/*.jpg | head -128); do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$work/p256/$cls/"; done
done
VGG=models/vgg16_nchw.onnx
[ -f $VGG ] || $BIN make-model vgg16 --layout nchw --out $VGG >/dev/null
echo "1/3 extraction (VGG-16 base, 256 photos)" >&2
timed "headstart extract" $BIN extract --model $VGG --data "$work/p256" --out "$work/v.h5" --preprocess caffe --force --quiet
hs_e2e=$(sed -nE 's/.*\(([0-9.]+) img\/s.*/\1/p' "$work/o" | tail -1)
hs_inf=$($BIN bench-infer --model $VGG --batch 32 --images 256 | sed -E 's/.*= ([0-9.]+) img\/s.*/\1/')
timed "onnxruntime-python extract" $PY benches/peers.py ort-extract $VGG "$work/p256"
timed "keras extract" $TF benches/peers.py keras-extract "$work/p256"
timed "pytorch extract" $TORCH benches/peers.py torch-extract "$work/p256"
CAL="$SHARED/data/cats_dogs/train"
$BIN quantize --model $VGG --calibrate "$CAL" --images 32 --preprocess caffe --out "$work/vgg.int8.onnx" --quiet >/dev/null
timed "headstart extract int8" $BIN extract --model "$work/vgg.int8.onnx" --data "$work/p256" --out "$work/v8.h5" --preprocess caffe --force --quiet
hs8_e2e=$(sed -nE 's/.*\(([0-9.]+) img\/s.*/\1/p' "$work/o" | tail -1)
hs8_inf=$($BIN bench-infer --model "$work/vgg.int8.onnx" --batch 32 --images 256 | sed -E 's/.*= ([0-9.]+) img\/s.*/\1/')
$PY benches/ort_quantize.py $VGG "$CAL" 32 caffe "$work/vgg.ort-int8.onnx" >/dev/null 2>&1
timed "onnxruntime-python extract int8" $PY benches/peers.py ort-extract "$work/vgg.ort-int8.onnx" "$work/p256"
echo "2/3 head training ($EPOCHS epochs)" >&2
$BIN make-features --shape 512,7,7 --split train=2000 --split val=1000 --out "$work/f.h5" >/dev/null
timed "headstart train-head" $BIN train-head "$work/f.h5" --out "$work/h.h5" --epochs "$EPOCHS" --quiet
timed "keras head" $TF benches/keras_head.py "$work/f.h5" --epochs "$EPOCHS"
timed "pytorch head" $TORCH benches/peers.py torch-head "$work/f.h5" "$EPOCHS"
echo "3/3 whole assignment (EfficientNet-Lite0, 3000 photos)" >&2
EFF="$SHARED/models/efficientnet_lite0_features.onnx"
assignment() {
  $BIN extract --model "$EFF" --data "$SHARED/data/cats_dogs" --out "$work/a.h5" --force --quiet >&2
  $BIN train-head "$work/a.h5" --out "$work/a.head.h5" --quiet >&2
  $BIN evaluate --head "$work/a.head.h5" --features "$work/a.h5" --json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'
}
export -f assignment; export BIN EFF SHARED work
timed "headstart assignment" bash -c assignment
hs_acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"]["accuracy"])' "$work/o")
timed "python assignment" $PY benches/peers.py assignment "$EFF" "$SHARED/data/cats_dogs"
python3 - "$rows" "$hs_e2e" "$hs_inf" "$hs_acc" "$(nproc)" "$hs8_e2e" "$hs8_inf" <<'PY'
import json, sys, datetime
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
hs_e2e, hs_inf, hs_acc, cores = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
hs8_e2e, hs8_inf = float(sys.argv[6]), float(sys.argv[7])
def o(n, k):
    r = rows[n]["out"]
    return r[k] if r else None
md = [f"Benchmark of {datetime.date.today()}, {cores}-core CPU VM, one run (scripts/bench.sh).", "",
      "| task | tool | end-to-end | inference only | wall s | peak RSS MB | accuracy |", "|---|---|---|---|---|---|---|"]
def row(task, tool, e2e, inf, n, acc=None):
    f = lambda v, u: "-" if v is None else f"{v:.1f} {u}"
    md.append(f"| {task} | {tool} | {f(e2e, 'img/s')} | {f(inf, 'img/s')} | {rows[n]['seconds']:.1f} | {rows[n]['rss_mb']:.0f} | {'-' if acc is None else f'{acc:.4f}'} |")
row("extract, VGG-16 base, 256 photos", "headstart", hs_e2e, hs_inf, "headstart extract")
row("", "ONNX Runtime (Python + Pillow)", o("onnxruntime-python extract", "e2e_img_s"), o("onnxruntime-python extract", "infer_img_s"), "onnxruntime-python extract")
row("", "Keras 3 (TensorFlow CPU)", o("keras extract", "e2e_img_s"), o("keras extract", "infer_img_s"), "keras extract")
row("", "PyTorch (CPU)", o("pytorch extract", "e2e_img_s"), o("pytorch extract", "infer_img_s"), "pytorch extract")
row("extract, VGG-16 base int8, 256 photos", "headstart (`quantize`)", hs8_e2e, hs8_inf, "headstart extract int8")
row("", "ONNX Runtime (Python + Pillow, `quantize_static`)", o("onnxruntime-python extract int8", "e2e_img_s"), o("onnxruntime-python extract int8", "infer_img_s"), "onnxruntime-python extract int8")
row("train the seed head, 2000 x 7x7x512", "headstart", None, None, "headstart train-head")
row("", "Keras 3", None, None, "keras head")
row("", "PyTorch", None, None, "pytorch head")
row("whole assignment, EfficientNet-Lite0, 3000 photos", "headstart (extract, train-head, evaluate)", None, None, "headstart assignment", hs_acc)
row("", "Python: onnxruntime + Pillow + sklearn logistic", None, None, "python assignment", o("python assignment", "test_accuracy"))
md.append("")
md.append("Wall seconds and peak RSS are of the whole process (start-up, model load, data loading included).")
open("out/bench.md", "w").write("\n".join(md) + "\n")
json.dump({"rows": rows, "headstart_extract_img_s": hs_e2e, "headstart_infer_img_s": hs_inf, "headstart_int8_extract_img_s": hs8_e2e, "headstart_int8_infer_img_s": hs8_inf, "headstart_accuracy": hs_acc}, open("out/bench.json", "w"), indent=1)
print("\n".join(md))
PY
