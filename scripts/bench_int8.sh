#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): `headstart quantize` (static int8, QDQ) against float32 and
# against ONNX Runtime's own Python quantiser (quantize_static: QDQ, per-channel int8 weights, uint8
# activations, MinMax) on the same model and calibration photos, all timed by `bench-infer` in one run.
#  1. VGG-16 conv base (random weights): inference img/s fp32 / ours / ORT's, and `extract` end to end
#     fp32 vs int8 on 128 photos.
#  2. EfficientNet-Lite0 features (fetched by name): img/s, feature cosine, and test accuracy of the
#     default head and the logistic head, fp32 vs int8, on each DATA_DIR ({train,test}/<class>/).
# Python peers go into .cache/bench-venv (PyPI: onnxruntime, onnx, pillow, h5py).
# Usage: scripts/bench_int8.sh DATA_DIR...      (the first one also calibrates VGG-16)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench_int8.sh DATA_DIR..." >&2; exit 2; }
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
. scripts/bench_venv.sh
bench_venv "onnxruntime.quantization, onnx, PIL, h5py" onnxruntime onnx pillow h5py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() { "$BIN" bench-infer --model "$1" --batch 16 --images "${2:-64}" | sed -E 's/.*= ([0-9.]+) img\/s.*/\1/'; }
isa=$(grep -m1 -o -w -E 'avx512_vnni|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), ${isa:-no AVX2}; $(date -u +%Y-%m-%dT%H:%MZ)"

CAL="$1/train"
if [ -z "${SKIP_VGG:-}" ]; then   # SKIP_VGG=1: only the EfficientNet-Lite0 part
VGG=models/vgg16_nchw.onnx
[ -f "$VGG" ] || "$BIN" make-model vgg16 --layout nchw --out "$VGG" >/dev/null
"$BIN" quantize --model "$VGG" --calibrate "$CAL" --images 32 --preprocess caffe --out "$work/vgg.int8.onnx" -q | tail -1
"$PY" benches/ort_quantize.py "$VGG" "$CAL" 32 caffe "$work/vgg.ort-int8.onnx" >/dev/null 2>&1
echo
echo "== VGG-16 conv base, inference alone (bench-infer, batch 16, 64 images)"
f=$(rate "$VGG"); o=$(rate "$work/vgg.int8.onnx"); r=$(rate "$work/vgg.ort-int8.onnx"); f2=$(rate "$VGG")
printf '%-44s %8s img/s\n' "fp32 (before / after the int8 runs)" "$f / $f2"
printf '%-44s %8s img/s  (%.2fx fp32)\n' "int8, headstart quantize" "$o" "$(awk "BEGIN {print 2 * $o / ($f + $f2)}")"
printf '%-44s %8s img/s  (%.2fx fp32)\n' "int8, ONNX Runtime quantize_static" "$r" "$(awk "BEGIN {print 2 * $r / ($f + $f2)}")"
mkdir -p "$work/p128/a"
find "$(cd "$CAL" && pwd)" -name '*.jpg' | sort >"$work/list"
head -128 "$work/list" | while read -r p; do ln -s "$p" "$work/p128/a/"; done
for m in "$VGG" "$work/vgg.int8.onnx"; do
  "$BIN" extract --model "$m" --data "$work/p128" --out "$work/e.h5" --preprocess caffe --batch 16 --force --progress none 2>&1 \
    | sed -nE "s/.*extracted now in .* \(([0-9.]+) img\/s\).*/extract end to end, $(basename "$m"): \1 img\/s/p"
done
fi

echo
echo "== EfficientNet-Lite0 features"
LITE=$("$BIN" fetch efficientnet-lite0 | sed -nE 's/^efficientnet-lite0: (.*\.onnx).*/\1/p' | tail -1)
"$BIN" quantize --model "$LITE" --calibrate "$CAL" --images 64 --out "$work/lite.int8.onnx" -q | tail -1
"$PY" benches/ort_quantize.py "$LITE" "$CAL" 64 lite0 "$work/lite.ort-int8.onnx" >/dev/null 2>&1
f=$(rate "$LITE" 256); o=$(rate "$work/lite.int8.onnx" 256); r=$(rate "$work/lite.ort-int8.onnx" 256)
printf 'inference: fp32 %s, int8 headstart %s (%.2fx), int8 ORT quantize_static %s img/s\n' "$f" "$o" "$(awk "BEGIN {print $o / $f}")" "$r"
printf '%-12s %-6s %9s %9s %9s %9s\n' data model "cos mean" "cos min" default logistic
for DATA in "$@"; do
  name=$(basename "$(cd "$DATA" && pwd)")
  for kind in fp32 int8; do
    m="$LITE"; [ "$kind" = int8 ] && m="$work/lite.int8.onnx"
    "$BIN" extract --model "$m" --data "$DATA" --out "$work/$name.$kind.h5" --progress none -q >/dev/null
    "$BIN" train-head "$work/$name.$kind.h5" --out "$work/auto.h5" -q >/dev/null
    "$BIN" train-head "$work/$name.$kind.h5" --head logistic --out "$work/lr.h5" -q >/dev/null
    acc() { "$BIN" evaluate --head "$1" --features "$work/$name.$kind.h5" | sed -nE 's/^accuracy: ([0-9.]+)/\1/p'; }
    cos=$("$PY" - "$work/$name.fp32.h5" "$work/$name.$kind.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p) for p in sys.argv[1:3])
x = np.concatenate([a[s]["features"][:] for s in ("train", "test")])
y = np.concatenate([b[s]["features"][:] for s in ("train", "test")])
c = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
print("%.5f %.5f" % (c.mean(), c.min()))
PY
)
    read -r cm cn <<<"$cos"
    printf '%-12s %-6s %9s %9s %9s %9s\n' "$name" "$kind" "$cm" "$cn" "$(acc "$work/auto.h5")" "$(acc "$work/lr.h5")"
  done
done
