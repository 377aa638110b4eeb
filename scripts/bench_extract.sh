#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): `headstart extract` end to end vs ONNX Runtime alone on a
# VGG-16-shaped base with random weights at 224x224, and peak RSS for 256 vs 2000 photos.
# Usage: scripts/bench_extract.sh [PHOTOS_DIR]     (default $HEADSTART_SHARED/data/cats_dogs)
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS="${1:-${HEADSTART_SHARED:?give PHOTOS_DIR or set HEADSTART_SHARED}/data/cats_dogs}"
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
MODEL=models/vgg16_nchw.onnx
[ -f "$MODEL" ] || "$BIN" make-model vgg16 --layout nchw --out "$MODEL"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Subsets of real photos as class folders (symlinks).
subset() { # N DEST
  local n=$1 dest=$2 half=$(( $1 / 2 ))
  for cls in cat dog; do
    mkdir -p "$dest/$cls"
    local files
    mapfile -t files < <(find "$(cd "$PHOTOS" && pwd)" -path "*/$cls/*.jpg" | sort)
    for f in "${files[@]:0:$half}"; do
      ln -s "$f" "$dest/$cls/$(basename "$f")"
    done
  done
}
subset 256 "$work/p256"
subset 2000 "$work/p2000"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); model $MODEL (random weights), batch 32"

ort=$("$BIN" bench-infer --model "$MODEL" --batch 32 --images 256)
ort_rate=$(echo "$ort" | sed -E 's/.*= ([0-9.]+) img\/s.*/\1/')

run_extract() { # DIR -> prints "img/s peakKB"
  local log="$work/log.$RANDOM"
  /usr/bin/time -f "%M" -o "$log.rss" "$BIN" extract --model "$MODEL" --data "$1" --out "$work/f.h5" \
    --preprocess caffe --batch 32 --force --quiet >"$log" 2>&1
  local rate
  rate=$(sed -nE 's/.* \(([0-9.]+) img\/s.*/\1/p' "$log" | tail -1)
  echo "$rate $(cat "$log.rss")"
}
read -r hs_rate rss256 < <(run_extract "$work/p256")
printf "%-44s %8s img/s\n" "ONNX Runtime alone (tensors in memory)" "$ort_rate"
printf "%-44s %8s img/s  (%.2fx of ORT alone)\n" "headstart extract end to end (256 photos)" "$hs_rate" "$(awk "BEGIN {print $hs_rate / $ort_rate}")"
read -r _ rss2000 < <(run_extract "$work/p2000")
printf "%-44s %8.0f MB\n" "peak RSS, extract 256 photos" "$(awk "BEGIN {print $rss256 / 1024}")"
printf "%-44s %8.0f MB\n" "peak RSS, extract 2000 photos" "$(awk "BEGIN {print $rss2000 / 1024}")"
