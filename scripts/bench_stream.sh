#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): train-head and evaluate on a cache over their memory
# budget (streamed), beside scikit-learn's SGDClassifier(loss="log_loss").partial_fit and
# predict_proba over the same file in chunks (h5py), in the same run: seconds per epoch, peak RSS,
# accuracy; then audit on the same cache.
# Usage: ROWS=2000000 DTYPE=f16 BUDGET=2G EPOCHS=1 SEP=0.1 scripts/bench_stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-2000000}"
DTYPE="${DTYPE:-f16}"
BUDGET="${BUDGET:-2G}"
EPOCHS="${EPOCHS:-1}"
scripts/setup.sh --tests >/dev/null
cargo build --release --quiet
BIN=target/release/headstart
. scripts/bench_venv.sh
bench_venv "h5py, sklearn" h5py scikit-learn
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-stream.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -q -w avx512_vnni /proc/cpuinfo && echo 'AVX-512 VNNI' || echo AVX2), $(date -u +%Y-%m-%dT%H:%MZ)"
/usr/bin/time -f "%e %M" -o "$work/t" "$BIN" make-features --shape 1280 --split "train=$ROWS" --split val=10000 \
  --separation "${SEP:-0.1}" --seed 7 --dtype "$DTYPE" --out "$work/f.h5" >/dev/null
read -r secs kb <"$work/t"
echo "cache: $ROWS x 1280 $DTYPE train rows ($(du -h "$work/f.h5" | cut -f1), written in $secs s, $((kb / 1024)) MB peak), 10000 val rows; budget $BUDGET; $EPOCHS epoch(s)"

/usr/bin/time -f "%e %M" -o "$work/t" "$BIN" train-head "$work/f.h5" --out "$work/h.h5" --head none \
  --optimizer sgd --lr 0.01 --batch-size 256 --epochs "$EPOCHS" --memory "$BUDGET" >"$work/log" 2>&1 \
  || { cat "$work/log"; exit 1; }
read -r secs kb <"$work/t"
acc=$(sed -nE 's/^kept epoch .*val_accuracy ([0-9.]+).*/\1/p' "$work/log")
epoch=$(awk '$1 ~ /^[0-9]+$/ && NF == 7 {s += $7; n++} END {if (n) printf "%.1f", s / n}' "$work/log")
grep -E '^streamed' "$work/log" || true
printf '%-40s %6s s/epoch %7.1f s all %7.0f MB peak  val accuracy %s\n' "train-head (streamed, linear, SGD)" "$epoch" "$secs" "$((kb / 1024))" "$acc"

/usr/bin/time -f "%e %M" -o "$work/t" "$BIN" evaluate --features "$work/f.h5" --split train --head "$work/h.h5" \
  >"$work/elog" 2>&1 || { cat "$work/elog"; exit 1; }
read -r secs kb <"$work/t"
eacc=$(sed -nE 's/^accuracy:? *([0-9.]+).*/\1/p' "$work/elog" | head -1)
printf '%-40s %6s %15.1f s all %7.0f MB peak  train accuracy %s\n' "evaluate --split train (streamed)" "" "$secs" "$((kb / 1024))" "$eacc"

# The audit reads the cache twice (evaluate's one read above is its reference) and searches
# neighbours approximately: a cache this size is past the exact all-pairs scan.
/usr/bin/time -f "%e %M" -o "$work/t" "$BIN" audit "$work/f.h5" --memory "$BUDGET" >"$work/alog" 2>&1 \
  || { cat "$work/alog"; exit 1; }
read -r secs kb <"$work/t"
oof=$(sed -nE 's/^out-of-fold accuracy \([0-9]+-fold\): ([0-9.]+)/\1/p' "$work/alog")
printf '%-40s %6s %15.1f s all %7.0f MB peak  out-of-fold accuracy %s\n' "audit (approximate)" "" "$secs" "$((kb / 1024))" "$oof"

"$PY" - "$work/f.h5" "$EPOCHS" <<'PYEOF'
import sys, time, resource, h5py, numpy as np
from sklearn.linear_model import SGDClassifier
path, epochs = sys.argv[1], int(sys.argv[2])
f = h5py.File(path)
x, y = f["train/features"], f["train/labels"]
n, chunk = x.shape[0], 65536
clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, random_state=0)
t0 = time.perf_counter()
for _ in range(epochs):
    for s in range(0, n, chunk):
        clf.partial_fit(x[s:s + chunk], y[s:s + chunk], classes=[0, 1])
secs = (time.perf_counter() - t0) / epochs
acc = clf.score(f["val/features"][:], f["val/labels"][:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{'scikit-learn SGDClassifier.partial_fit':40s} {secs:6.1f} s/epoch {'':15s} {peak:7.0f} MB peak  val accuracy {acc:.4f}")
t0 = time.perf_counter()
right = 0
for s in range(0, n, chunk):
    p = clf.predict_proba(x[s:s + chunk])
    right += int((p.argmax(1) == y[s:s + chunk]).sum())
secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{'scikit-learn predict_proba (train)':40s} {'':6s} {secs:15.1f} s all {peak:7.0f} MB peak  train accuracy {right / n:.4f}")
PYEOF
