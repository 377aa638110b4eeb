#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): two headstart builds side by side in one run, alternating, on
# the work of scripts/bench_head.sh (seed head, 2000 x 512x7x7 random features) and
# scripts/bench_extract.sh (VGG-16-shaped base with random weights over 256 photos), so that a change
# can be judged against the build before it on this VM, whose speed drifts from hour to hour.
# Usage: scripts/bench_compare.sh OLD_BIN NEW_BIN PHOTOS_DIR [ROUNDS] [EPOCHS]
#   PHOTOS_DIR holds <class>/*.jpg (or {train,test}/<class>/*.jpg); 128 photos of each of two classes
#   are used. Example: build the old commit in a git worktree, then
#   scripts/bench_compare.sh ../old/target/release/headstart target/release/headstart photos/ 3 10
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: scripts/bench_compare.sh OLD_BIN NEW_BIN PHOTOS_DIR [ROUNDS] [EPOCHS]" >&2; exit 2; }
OLD="$1"; NEW="$2"; PHOTOS="$(cd "$3" && pwd)"; ROUNDS="${4:-3}"; EPOCHS="${5:-10}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); $ROUNDS rounds, old and new alternating"

"$NEW" make-features --shape 512,7,7 --split train=2000 --split val=1000 --out "$work/vgg.h5" >/dev/null
"$NEW" make-model vgg16 --layout nchw --out "$work/vgg16.onnx" >/dev/null
mapfile -t classes < <(find "$PHOTOS" -name '*.jpg' -printf '%h\n' | xargs -n1 basename | sort -u | head -2)
for c in "${classes[@]}"; do
  mkdir -p "$work/photos/$c"
  find "$PHOTOS" -path "*/$c/*.jpg" | sort | head -128 | while read -r f; do ln -s "$f" "$work/photos/$c/"; done
done

secs() { /usr/bin/time -f "%e" -o "$work/t" "$@" >/dev/null 2>&1; cat "$work/t"; }
rate() { "$@" 2>&1 | sed -nE 's/.* \(([0-9.]+) img\/s.*/\1/p' | tail -1; }
declare -A head extract
for r in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    head[$which]+=" $(secs "$bin" train-head "$work/vgg.h5" --out "$work/$which.head.h5" --epochs "$EPOCHS" -q)"
    extract[$which]+=" $(rate "$bin" extract --model "$work/vgg16.onnx" --data "$work/photos" --out "$work/$which.f.h5" --preprocess caffe --force --quiet)"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf "%-48s %10s %10s %8s\n" "task (median of $ROUNDS)" "old" "new" "new/old"
h_old=$(echo "${head[old]}" | median); h_new=$(echo "${head[new]}" | median)
e_old=$(echo "${extract[old]}" | median); e_new=$(echo "${extract[new]}" | median)
printf "%-48s %10.2f %10.2f %8.3f\n" "train-head seed head, $EPOCHS epochs (s)" "$h_old" "$h_new" "$(awk "BEGIN {print $h_new / $h_old}")"
printf "%-48s %10.2f %10.2f %8.3f\n" "extract VGG-16 base, 256 photos (img/s)" "$e_old" "$e_new" "$(awk "BEGIN {print $e_new / $e_old}")"
echo "all runs: train-head old [${head[old]} ] new [${head[new]} ]; extract old [${extract[old]} ] new [${extract[new]} ]"
