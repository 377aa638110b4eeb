#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): JPEG decoding at reduced DCT scale (`--decode fast`, the
# default) against full decoding (`--decode exact`), on DATA_DIR ({train,test}/<class>/ photos), on a
# copy of it enlarged to 2592 px on the longer side (5 MP, the size of the largest tutorial photos),
# and on 24 photos enlarged to 4000x3000 (12 MP). For each: decode + preprocess img/s alone with 1
# and all workers; `extract` end to end beside ONNX Runtime alone (same model, same run); feature
# cosine fast vs exact; test accuracy of the default head and the logistic head on each.
# Enlarging uses Pillow (Lanczos, JPEG quality 90) in .cache/bench-venv (PyPI).
# Usage: scripts/bench_decode.sh MODEL DATA_DIR    (MODEL: an ONNX file or a name, e.g. efficientnet-lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/bench_decode.sh MODEL DATA_DIR" >&2; exit 2; }
MODEL="$1"; DATA="$(cd "$2" && pwd)"
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
. scripts/bench_venv.sh
bench_venv "h5py, PIL" h5py pillow
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); model $MODEL; data $DATA"

"$PY" - "$DATA" "$work" <<'PY'
import os, sys
from PIL import Image
src, work = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs
               if f.lower().endswith((".jpg", ".jpeg")))
for i, f in enumerate(files):
    im = Image.open(f).convert("RGB")
    s = 2592 / max(im.size)
    rel = os.path.relpath(f, src)
    out = os.path.join(work, "large", rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS).save(out, quality=90)
    if i < 24:
        out = os.path.join(work, "mp12", "all", f"{i:02d}.jpg")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        im.resize((4000, 3000), Image.LANCZOS).save(out, quality=90)
PY

echo
echo "== decode + preprocess alone (no model)"
for set in "$DATA" "$work/large" "$work/mp12"; do
  echo "-- $(basename "$set")"
  "$BIN" bench-decode --model "$MODEL" --data "$set" --workers "1,$(nproc)" --images 400 | tail -n +2
done

echo
echo "== extract end to end vs ONNX Runtime alone"
"$BIN" bench-infer --model "$MODEL" --batch 32 --images 256
for set in "$DATA" "$work/large"; do
  for mode in exact fast; do
    out="$work/$(basename "$set").$mode.h5"
    rate=$("$BIN" extract --model "$MODEL" --data "$set" --out "$out" --decode "$mode" --progress none 2>&1 \
      | sed -nE 's/.*extracted now in .* \(([0-9.]+) img\/s\).*/\1/p')
    printf '%-30s %8s img/s\n' "extract $(basename "$set") --decode $mode" "$rate"
  done
done

echo
echo "== features and accuracy, fast vs exact"
printf '%-8s %-6s %10s %10s %9s %9s\n' data decode "cos mean" "cos min" default logistic
for set in "$DATA" "$work/large"; do
  name=$(basename "$set")
  for mode in exact fast; do
    f="$work/$name.$mode.h5"
    cos=$("$PY" - "$work/$name.exact.h5" "$f" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p) for p in sys.argv[1:3])
cs = []
for split in ("train", "test"):
    x = a[split + "/features"][:].reshape(len(a[split + "/labels"]), -1)
    y = b[split + "/features"][:].reshape(len(b[split + "/labels"]), -1)
    cs.append((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
cs = np.concatenate(cs)
print("%.5f %.5f" % (cs.mean(), cs.min()))
PY
)
    "$BIN" train-head "$f" --out "$work/auto.h5" -q >/dev/null
    "$BIN" train-head "$f" --head logistic --out "$work/lr.h5" -q >/dev/null
    acc() { "$BIN" evaluate --head "$1" --features "$f" | sed -nE 's/^accuracy: ([0-9.]+)/\1/p'; }
    read -r cmean cmin <<<"$cos"
    printf '%-8s %-6s %10s %10s %9s %9s\n' "$name" "$mode" "$cmean" "$cmin" "$(acc "$work/auto.h5")" "$(acc "$work/lr.h5")"
  done
done
