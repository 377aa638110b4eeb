#!/usr/bin/env bash
# Check (prints numbers; not a test): object storage end to end on a local S3-compatible server.
#  1. Starts moto's S3 server on 127.0.0.1 and our fault proxy in front of it (every fifth request
#     answered 503 or its connection dropped), uploads DATA_DIR to s3://photos/data.
#  2. `extract` from the local folder, from s3:// directly, and from s3:// through the proxy.
#  3. A 4-shard run on the bucket through the proxy (Slurm, Kubernetes, AWS Batch and headstart
#     variables), then `merge`; every cache compared with the local one (features bit for bit).
# Usage: scripts/check_s3.sh MODEL DATA_DIR    (MODEL: an ONNX file or a name, e.g. efficientnet-lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/check_s3.sh MODEL DATA_DIR" >&2; exit 2; }
MODEL="$1"; DATA="$(cd "$2" && pwd)"
scripts/setup.sh --tests
cargo build --release --quiet --features cloud
BIN="$PWD/target/release/headstart"
PY=.cache/venv/bin/python
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { awk "BEGIN {printf \"%.1f\", $2 - $1}"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); model $MODEL; data $DATA"

MOTO_PORT=$(free_port); PROXY_PORT=$(free_port)
.cache/venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$work/moto.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$MOTO_PORT") 2>/dev/null && break; sleep 0.2; done
python3 tests/support/fault_proxy.py "$PROXY_PORT" "http://127.0.0.1:$MOTO_PORT" 5 >"$work/proxy.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/proxy.log" 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export HEADSTART_HOME="$work/home"
direct="http://127.0.0.1:$MOTO_PORT"; faulty="http://127.0.0.1:$PROXY_PORT"

t0=$(now)
"$PY" - "$direct" "$DATA" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
s3.create_bucket(Bucket="photos")
n = 0
for d, _, files in os.walk(sys.argv[2]):
    for f in files:
        p = os.path.join(d, f)
        s3.upload_file(p, "photos", "data/" + os.path.relpath(p, sys.argv[2]))
        n += 1
print(f"uploaded {n} files")
PY
echo "upload: $(secs "$t0" "$(now)") s"

ex() { "$BIN" extract --model "$MODEL" --progress none "$@" | tail -1; }
echo "--- extract"
ex --data "$DATA" --out "$work/local.h5"
AWS_ENDPOINT_URL=$direct ex --data s3://photos/data --out "$work/s3.h5"
AWS_ENDPOINT_URL=$faulty ex --data s3://photos/data --out "$work/s3_faulty.h5"

echo "--- 4 shards on the bucket, through the fault proxy"
export AWS_ENDPOINT_URL=$faulty
t0=$(now); "$BIN" plan --data s3://photos/data --shards 4 --out s3://photos/runs/r | head -1; t1=$(now)
echo "plan: $(secs "$t0" "$t1") s"
i=0
for var in SLURM_ARRAY_TASK_ID JOB_COMPLETION_INDEX AWS_BATCH_JOB_ARRAY_INDEX HEADSTART_SHARD; do
  # Each worker is another machine (its own run mirror), with the model fetched already.
  mkdir -p "$work/worker$i"; ln -sfn "$HEADSTART_HOME/models" "$work/worker$i/models"
  t0=$(now)
  env "$var=$i" HEADSTART_HOME="$work/worker$i" "$BIN" extract --run s3://photos/runs/r --model "$MODEL" --progress none -q | tail -1
  echo "shard $i ($var): $(secs "$t0" "$(now)") s"
  i=$((i + 1))
done
"$BIN" status s3://photos/runs/r | sed -n 2,4p
t0=$(now); HEADSTART_HOME="$work/merger" "$BIN" merge s3://photos/runs/r --out "$work/merged.h5"
echo "merge (downloads included): $(secs "$t0" "$(now)") s"
echo "proxy: $(grep -c . "$work/proxy.log") requests, $(grep -c -- '-> 503' "$work/proxy.log") answered 503, $(grep -c -- '-> dropped' "$work/proxy.log") dropped"

echo "--- caches against the local folder's"
"$PY" - "$work/local.h5" "$work/s3.h5" "$work/s3_faulty.h5" "$work/merged.h5" <<'PY'
import sys, h5py, numpy as np
def rows(path):
    with h5py.File(path) as f:
        out = {}
        for s in f.attrs["splits"]:
            g = f[s]
            out[s] = tuple(np.asarray(g[k][()]) for k in ("features", "labels", "paths", "skipped_paths"))
        return out
ref = rows(sys.argv[1])
for p in sys.argv[2:]:
    got = rows(p)
    same = got.keys() == ref.keys() and all(
        all(np.array_equal(a, b) for a, b in zip(got[s], ref[s])) for s in ref)
    print(f"{p.rsplit('/', 1)[1]}: {'identical' if same else 'DIFFERENT'} to local.h5 "
          f"({sum(len(v[1]) for v in got.values())} rows)")
    if not same:
        sys.exit(1)
PY
