#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build in release, extract features from
# DATA_DIR with MODEL, train the default head (`--recipe auto`: a head chosen on validation rows among
# linear and MLP candidates) and evaluate it; the last line is the test accuracy.
# Usage: scripts/quickstart.sh DATA_DIR [MODEL]
#   MODEL: an ONNX file, or a name headstart fetches (`headstart models`); default efficientnet-lite0,
#   real ImageNet weights fetched into $HEADSTART_HOME/models (default ~/.cache/headstart) on first use.
# Output: out/<name>.features.h5, out/<name>.head.h5, out/<name>.head.history.csv (<name>: the data folder)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/quickstart.sh DATA_DIR [MODEL]" >&2; exit 2; }
DATA="$1"
MODEL="${2:-efficientnet-lite0}"
scripts/setup.sh
cargo build --release --quiet
BIN=target/release/headstart
mkdir -p out
OUT="out/$(basename "$(cd "$DATA" && pwd)").features.h5"
"$BIN" extract --model "$MODEL" --data "$DATA" --out "$OUT"
"$BIN" summary "$OUT"
# Train on the train split (20% held out for validation), evaluate on test (else val, else train).
"$BIN" train-head "$OUT"
HEAD="${OUT%.features.h5}.head.h5"
"$BIN" evaluate --head "$HEAD" --features "$OUT" | tee out/evaluate.txt
echo "quickstart: test accuracy $(grep '^accuracy:' out/evaluate.txt | awk '{print $2}') ($HEAD on $OUT)"
