#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): how train-head's recipes do on data nobody tuned them for,
# beside scikit-learn's LogisticRegression() on the same features in the same run.
# For each DATA_DIR ({train,test}/<class>/): extract MODEL's features twice (plain; and with
# `--augment flip --tta flip`), then test accuracy of
#   sklearn LogisticRegression(C=1) | headstart --head logistic | --recipe seed | --recipe auto |
#   auto + mirrored train rows (evaluate --no-tta) | auto + mirrored train rows + test-time flips
# and the seconds auto took. Python peers go into .cache/bench-venv (PyPI).
# SUBSETS="25 100" (per class) adds rows trained on seeded subsets of each train folder (`headstart
# split`), tested on the same full test folder: small data is where defaults decide the result.
# DRAWS=N (default 3) draws each subset N times (split seeds 1..N) and ends with a table of the means
# over draws: one draw of 25 photos moves a column by several test photos.
# FLIP=0 skips the flipped extraction and its two columns (half the extraction time, for slow bases).
# Usage: [SUBSETS="25 100"] [DRAWS=3] [FLIP=0] scripts/bench_quality.sh MODEL DATA_DIR...
#   (MODEL: an ONNX file or a name, e.g. efficientnet-lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/bench_quality.sh MODEL DATA_DIR..." >&2; exit 2; }
MODEL="$1"; shift
scripts/setup.sh --tests
cargo build --release --quiet
BIN=target/release/headstart
. scripts/bench_venv.sh
bench_venv "h5py, sklearn" h5py scikit-learn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); model $MODEL"
acc() { "$BIN" evaluate --head "$1" --features "$2" "${@:3}" | sed -nE 's/^accuracy: ([0-9.]+)/\1/p'; }
printf '%-14s %8s %9s %8s %8s %8s %10s %10s %7s\n' data sklearn logistic seed auto "auto(s)" "auto+flip" "+tta" "rows"
sets=()
for DATA in "$@"; do
  sets+=("$DATA")
  for k in ${SUBSETS:-}; do
    for draw in $(seq 1 "${DRAWS:-3}"); do
      sub="$work/$(basename "$(cd "$DATA" && pwd)")_${k}_s${draw}"
      "$BIN" split "$DATA/train" --out "$sub.split" --train "$k" --test 0 --seed "$draw" --progress none -q >/dev/null
      mkdir -p "$sub"
      mv "$sub.split/train" "$sub/train"
      ln -s "$(cd "$DATA/test" && pwd)" "$sub/test"
      sets+=("$sub")
    done
  done
done
for DATA in "${sets[@]}"; do
  name=$(basename "$DATA")
  plain="$work/$name.h5"; flip="$work/$name.flip.h5"
  "$BIN" extract --model "$MODEL" --data "$DATA" --out "$plain" --quiet >/dev/null
  [ "${FLIP:-1}" = 0 ] || "$BIN" extract --model "$MODEL" --data "$DATA" --out "$flip" --augment flip --tta flip --quiet >/dev/null
  sk=$("$PY" benches/sklearn_logreg.py "$plain" | "$PY" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["test_accuracy"])')
  "$BIN" train-head "$plain" --head logistic --out "$work/lr.h5" -q >/dev/null
  "$BIN" train-head "$plain" --recipe seed --out "$work/seed.h5" -q >/dev/null
  t0=$(date +%s%N)
  "$BIN" train-head "$plain" --out "$work/auto.h5" -q >/dev/null
  t1=$(date +%s%N)
  af=-; at=-
  if [ "${FLIP:-1}" != 0 ]; then
    "$BIN" train-head "$flip" --out "$work/autof.h5" -q >/dev/null
    af=$(acc "$work/autof.h5" "$flip" --no-tta); at=$(acc "$work/autof.h5" "$flip")
  fi
  rows=$("$PY" -c 'import h5py,sys; f=h5py.File(sys.argv[1]); print(len(f["train/labels"]))' "$plain")
  printf '%-14s %8s %9s %8s %8s %8.1f %10s %10s %7s\n' "$name" "$sk" "$(acc "$work/lr.h5" "$plain")" \
    "$(acc "$work/seed.h5" "$plain")" "$(acc "$work/auto.h5" "$plain")" "$(( (t1 - t0) / 1000000 ))e-3" \
    "$af" "$at" "$rows" | tee -a "$work/rows.txt"
done
# Means over the draws of each subset (a set without draws is its own mean).
echo; echo "means over draws (n = draws):"
printf '%-14s %8s %9s %8s %8s %8s %10s %10s %7s %3s\n' data sklearn logistic seed auto "auto(s)" "auto+flip" "+tta" "rows" n
awk '{ g = $1; sub(/_s[0-9]+$/, "", g); if (!(g in n)) order[++m] = g; n[g]++
       for (c = 2; c <= 9; c++) if ($c != "-") { s[g, c] += $c; k[g, c]++ } }
     END { for (i = 1; i <= m; i++) { g = order[i]; printf "%-14s", g
             for (c = 2; c <= 9; c++)
               if ((g, c) in k) printf((c == 6 ? " %8.1f" : c == 9 ? " %7.0f" : " %8.4f"), s[g, c] / k[g, c])
               else printf " %8s", "-"
             printf " %3d\n", n[g] } }' "$work/rows.txt"
