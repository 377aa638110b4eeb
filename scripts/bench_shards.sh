#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): the cost of running as shards.
#  1. `plan` and `status` over 100,000 synthetic file names (tiny files, two classes, 10 shards).
#  2. DATA_DIR ({train,test}/<class>/ photos) extracted with MODEL as 4 shards (one after another,
#     with the Slurm, Kubernetes, AWS Batch and headstart variables), merged, and compared bit for
#     bit with one `extract` of the same folder in the same run; seconds for each step.
# Usage: scripts/bench_shards.sh MODEL DATA_DIR    (MODEL: an ONNX file or a name, e.g. efficientnet-lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/bench_shards.sh MODEL DATA_DIR" >&2; exit 2; }
MODEL="$1"; DATA="$(cd "$2" && pwd)"
scripts/setup.sh --tests
cargo build --release --quiet
BIN="$PWD/target/release/headstart"
. scripts/bench_venv.sh
bench_venv "h5py" h5py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { awk "BEGIN {printf \"%.2f\", $2 - $1}"; }
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); model $MODEL; data $DATA"

mkdir -p "$work/names/a" "$work/names/b"
(cd "$work/names/a" && seq -f "img%06g.jpg" 0 49999 | xargs touch)
(cd "$work/names/b" && seq -f "img%06g.jpg" 0 49999 | xargs touch)
t0=$(now); "$BIN" plan --data "$work/names" --shards 10 --out "$work/run100k" >/dev/null; t1=$(now)
"$BIN" status "$work/run100k" >/dev/null; t2=$(now)
echo "plan, 100,000 names, 10 shards:   $(secs "$t0" "$t1") s   ($(du -sh "$work/run100k/manifest" | cut -f1) of manifests)"
echo "status, 10 shards, none done:     $(secs "$t1" "$t2") s"

run="$work/run"
"$BIN" plan --data "$DATA" --shards 4 --out "$run" >/dev/null
envs=("SLURM_ARRAY_TASK_ID=0" "JOB_COMPLETION_INDEX=1" "AWS_BATCH_JOB_ARRAY_INDEX=2" "HEADSTART_SHARD=3")
total=0
for e in "${envs[@]}"; do
  t0=$(now); env "$e" "$BIN" extract --run "$run" --model "$MODEL" --progress none -q >/dev/null; t1=$(now)
  echo "shard ${e#*=} ($e):  $(secs "$t0" "$t1") s"
  total=$(awk "BEGIN {print $total + $t1 - $t0}")
done
t0=$(now); "$BIN" merge "$run" --out "$work/merged.h5" >/dev/null; t1=$(now)
echo "merge 4 shards:                   $(secs "$t0" "$t1") s"
t2=$(now); "$BIN" extract --model "$MODEL" --data "$DATA" --out "$work/single.h5" --progress none -q >/dev/null; t3=$(now)
printf 'shards + merge: %.1f s   one extract, same run: %s s\n' "$(awk "BEGIN {print $total + $t1 - $t0}")" "$(secs "$t2" "$t3")"
"$PY" - "$work/merged.h5" "$work/single.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
same = True
for s in b.attrs["splits"]:
    for k in ("features", "labels", "paths", "skipped_paths", "skipped_reasons"):
        eq = np.array_equal(a[s][k][:], b[s][k][:])
        same &= eq
        print(f"  {s}/{k}: {a[s][k].shape} {'identical' if eq else 'DIFFERENT'}")
attrs = [k for k in b.attrs if k != "fingerprint" and not np.array_equal(a.attrs[k], b.attrs[k])]
print("merged == single extract, bit for bit:", same, "| attributes that differ besides fingerprint:", attrs or "none")
PY
