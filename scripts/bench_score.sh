#!/usr/bin/env bash
# Benchmark (prints numbers; not a test) of `headstart score`:
#  1. throughput on $HEADSTART_SHARED/data/cats_dogs/test (1000 photos) with EfficientNet-Lite0 + the quickstart's
#     head, beside ONNX Runtime alone on preprocessed tensors in memory (`bench-infer`), and the exported
#     model (float input, and uint8 input with the preprocessing inside);
#  2. peak RSS for 2,000 and 20,000 small generated images (flat memory: rows stream to the file).
# Needs the quickstart's out/cats_dogs.features.h5 and out/cats_dogs.head.h5 (made here when missing).
# Usage: scripts/bench_score.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
MODEL="$SHARED/models/efficientnet_lite0_features.onnx"
CACHE=out/cats_dogs.features.h5
HEAD=out/cats_dogs.head.h5
mkdir -p out
[ -f "$CACHE" ] || "$BIN" extract --model "$MODEL" --data "$SHARED/data/cats_dogs" --out "$CACHE" --quiet
[ -f "$HEAD" ] || "$BIN" train-head "$CACHE" --out "$HEAD" --quiet
.cache/venv/bin/python -c 'import PIL' 2>/dev/null || .cache/venv/bin/python -m pip install -q pillow
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d); batch 32"
"$BIN" export --model "$MODEL" --head "$HEAD" --out "$work/exp.onnx" >/dev/null
"$BIN" export --model "$MODEL" --head "$HEAD" --out "$work/exp8.onnx" --with-preprocessing >/dev/null

rate() { sed -nE 's/.*\(([0-9.]+) img\/s\).*/\1/p' | tail -1; }
ort=$("$BIN" bench-infer --model "$MODEL" --batch 32 --images 1000 | sed -E 's/.*= ([0-9.]+) img\/s.*/\1/')
s1=$("$BIN" score --model "$MODEL" --head "$HEAD" "$SHARED/data/cats_dogs/test" --out "$work/a.csv" -q 2>&1 | rate)
s2=$("$BIN" score --model "$work/exp.onnx" "$SHARED/data/cats_dogs/test" --out "$work/b.csv" -q 2>&1 | rate)
s3=$("$BIN" score --model "$work/exp8.onnx" "$SHARED/data/cats_dogs/test" --out "$work/c.csv" -q 2>&1 | rate)
acc=$(.cache/venv/bin/python - "$work/a.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{sum(r['predicted'] == r['path'].split('/')[-2] for r in rows) / len(rows):.4f}")
PY
)
printf "%-52s %8s img/s\n" "ONNX Runtime alone (tensors in memory)" "$ort"
printf "%-52s %8s img/s  (%.2fx)\n" "score: base + head (decode, resize, infer, write)" "$s1" "$(awk "BEGIN {print $s1 / $ort}")"
printf "%-52s %8s img/s  (%.2fx)\n" "score: exported model" "$s2" "$(awk "BEGIN {print $s2 / $ort}")"
printf "%-52s %8s img/s  (%.2fx)\n" "score: exported model, uint8 input" "$s3" "$(awk "BEGIN {print $s3 / $ort}")"
echo "accuracy of score's predictions on the 1000 test photos: $acc"

.cache/venv/bin/python - "$work/imgs" <<'PY'
import os, sys
from PIL import Image
root = sys.argv[1]
for i in range(20000):
    d = os.path.join(root, "all" if i < 2000 else "more", f"{i // 1000:02d}")
    os.makedirs(d, exist_ok=True)
    Image.new("RGB", (64, 48), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)).save(os.path.join(d, f"{i}.png"))
PY
for set in "2000:$work/imgs/all" "20000:$work/imgs"; do
  n=${set%%:*}; dir=${set#*:}
  /usr/bin/time -f "%M %e" -o "$work/t" "$BIN" score --model "$MODEL" --head "$HEAD" "$dir" --out "$work/r.csv" -q >/dev/null 2>&1
  read -r kb secs < "$work/t"
  printf "peak RSS scoring %6s images (64x48 PNG): %6.0f MB, %6.1f s, %d rows\n" "$n" "$(awk "BEGIN {print $kb / 1024}")" "$secs" "$(( $(wc -l < "$work/r.csv") - 1 ))"
done
