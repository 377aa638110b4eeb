#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): transformer bases with random weights, ViT-S/14's shape
# (DINOv2 small: 224 px, 257 tokens of 384, 12 blocks) in the torch-export and the hub layouts,
# and their int8 copies (`headstart quantize`): `headstart extract` end to end on real photos
# (decode, preprocess, inference, token pooling, cache) beside ONNX Runtime's Python API running the
# same file on random batches of the same size, in the same run.
# Usage: scripts/bench_vit.sh [PHOTOS_DIR]     (default $HEADSTART_SHARED/data/cats_dogs)
#        IMAGES=256 (photos extracted), BATCH=32
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS="${1:-${HEADSTART_SHARED:?give PHOTOS_DIR or set HEADSTART_SHARED}/data/cats_dogs}"
IMAGES="${IMAGES:-256}"
BATCH="${BATCH:-32}"
scripts/setup.sh --tests >/dev/null
cargo build --release --quiet
BIN=target/release/headstart
PY=.cache/venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/photos/x"
mapfile -t files < <(find "$(cd "$PHOTOS" && pwd)" -name '*.jpg' | sort)
for f in "${files[@]:0:$IMAGES}"; do
  ln -s "$f" "$work/photos/x/$(basename "$f")"
done
n=$(find "$work/photos/x" -name '*.jpg' | wc -l)
isa=$(grep -m1 -o -w -E 'avx512_vnni' /proc/cpuinfo || grep -m1 -o -w avx2 /proc/cpuinfo || echo portable)
echo "machine: $(nproc) cores ($isa), $(date -u +%Y-%m-%dT%H:%MZ); $n photos, batch $BATCH"

ort_python() { # MODEL -> img/s of ONNX Runtime (Python) on random batches
  "$PY" - "$1" "$BATCH" "$n" <<'EOF'
import sys, time, numpy as np, onnxruntime as ort
model, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
s.run(None, {name: x})
t0, done = time.perf_counter(), 0
while done < n:
    s.run(None, {name: x})
    done += batch
print(f"{done / (time.perf_counter() - t0):.1f}")
EOF
}

headstart_extract() { # MODEL -> img/s of extract end to end
  local log="$work/log.$RANDOM"
  "$BIN" extract --model "$1" --data "$work/photos" --out "$work/f.h5" --batch "$BATCH" --force --quiet >"$log" 2>&1 \
    || { cat "$log" >&2; exit 1; }
  sed -nE 's/.* \(([0-9.]+) img\/s.*/\1/p' "$log" | tail -1
}

printf '%-22s %14s %14s %7s\n' model "extract img/s" "ORT-py img/s" ratio
for style in torch hub; do
  m="$work/vit_s14_$style.onnx"
  "$BIN" make-model vit-s14 --style "$style" --meta headstart_token_pool=cls+mean \
    --meta headstart_prefix_tokens=1 --meta preprocess=torch --meta input_size=224x224 --out "$m" >/dev/null
  q="$work/vit_s14_$style.int8.onnx"
  "$BIN" quantize --model "$m" --calibrate "$work/photos" --images 32 --out "$q" --quiet >/dev/null 2>&1 \
    || "$BIN" quantize --model "$m" --calibrate "$work/photos" --images 32 --out "$q" >/dev/null
  for model in "$m" "$q"; do
    e=$(headstart_extract "$model")
    p=$(ort_python "$model")
    printf '%-22s %14s %14s %7s\n' "$(basename "$model" .onnx)" "$e" "$p" "$(awk -v a="$e" -v b="$p" 'BEGIN { printf "%.2f", a / b }')"
  done
done
