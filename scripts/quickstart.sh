#!/usr/bin/env bash
# The main job on a fresh machine: install what running needs (scripts/setup.sh, without the tests'
# extras), build in release, fetch MODEL, extract features from DATA_DIR, train the default head
# (`--recipe auto`: a head chosen on validation rows among linear and MLP candidates) and evaluate it;
# each step says how long it took, and the last line is the test accuracy.
# Usage: scripts/quickstart.sh DATA_DIR [MODEL]
#   MODEL: an ONNX file, or a name headstart fetches (`headstart models`); default efficientnet-lite0,
#   real ImageNet weights fetched into $HEADSTART_HOME/models (default ~/.cache/headstart) on first use.
# Output: out/<name>.features.h5, out/<name>.head.h5, out/<name>.head.history.csv (<name>: the data folder)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/quickstart.sh DATA_DIR [MODEL]" >&2; exit 2; }
DATA="$1"
MODEL="${2:-efficientnet-lite0}"
[ -d "$DATA" ] || { echo "quickstart: $DATA is not a folder" >&2; exit 2; }
start=$(date +%s)
t=$start
step() { local now; now=$(date +%s); echo "quickstart: $1 took $((now - t)) s"; t=$now; }
scripts/setup.sh
step "setup"
# Only the binary the job runs (not the examples, benches or tests), without `finetune` (candle):
# `cargo build --release` adds it.
cargo build --release --quiet --no-default-features --bin headstart
step "build (release)"
BIN=target/release/headstart
if [ ! -f "$MODEL" ]; then
  "$BIN" fetch "$MODEL"
  step "fetch $MODEL"
fi
mkdir -p out
OUT="out/$(basename "$(cd "$DATA" && pwd)").features.h5"
"$BIN" extract --model "$MODEL" --data "$DATA" --out "$OUT"
"$BIN" summary "$OUT"
step "extract"
# Train on the train split (20% held out for validation), evaluate on test (else val, else train).
"$BIN" train-head "$OUT"
step "train-head"
HEAD="${OUT%.features.h5}.head.h5"
"$BIN" evaluate --head "$HEAD" --features "$OUT" | tee out/evaluate.txt
step "evaluate"
echo "quickstart: $(( $(date +%s) - start )) s in all"
echo "quickstart: test accuracy $(grep '^accuracy:' out/evaluate.txt | awk '{print $2}') ($HEAD on $OUT)"
