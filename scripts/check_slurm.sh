#!/usr/bin/env bash
# Check (not part of CI: it installs and starts system daemons): a real single-node Slurm runs
# deploy/slurm/extract.sbatch as an array of 4 over a planned run, then `status` and `merge`, and
# the merged cache is compared with one `extract` of the same folder (features bit for bit).
# Then a requeue: an array of 2 with a slow model (random VGG-16), task 0 requeued by
# `scontrol requeue` mid-shard (Slurm sends SIGTERM, headstart stops after its batch), and the
# requeued task continues from its journal; the merge is compared again.
# Installs Debian's slurmctld, slurmd and munge, writes /etc/slurm/slurm.conf for this host, and
# starts the daemons without systemd (a container or a VM). Run as root on a machine you can spare.
# Usage: scripts/check_slurm.sh MODEL DATA_DIR    (MODEL: an ONNX file or a name, e.g. efficientnet-lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/check_slurm.sh MODEL DATA_DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "check_slurm.sh: run as root (it installs and starts Slurm)" >&2; exit 2; }
MODEL="$1"; DATA="$(cd "$2" && pwd)"
scripts/setup.sh --tests
cargo build --release --quiet --features cloud
BIN="$PWD/target/release/headstart"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "check_slurm: installing slurmctld slurmd slurm-client munge (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=headstart-check
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
# munge: a key, then the daemon (as root: no systemd here).
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && break; sleep 1; done
echo "slurm: $(sinfo -V); node $(sinfo -h -o '%N %c CPUs %m MB %T')"

work=$(mktemp -d /tmp/headstart-slurm.XXXX)
echo "machine: $cpus cores, $(date -u +%Y-%m-%dT%H:%MZ); model $MODEL; data $DATA; work $work"
"$BIN" plan --data "$DATA" --shards 4 --out "$work/run" | head -1
# The sbatch file asks for 8 CPUs and 8 GB: overridden on the command line for this small node.
job=$(cd "$work" && RUN="$work/run" MODEL="$MODEL" HEADSTART="$BIN" \
  sbatch --parsable --array=0-3 --cpus-per-task=1 --mem=2G "$OLDPWD/deploy/slurm/extract.sbatch")
echo "submitted array job $job"
t0=$(date +%s)
while squeue -h -j "$job" 2>/dev/null | grep -q .; do sleep 5; done
echo "array finished in $(( $(date +%s) - t0 )) s"
sacct -j "$job" 2>/dev/null | head -8 || true
for f in "$work"/headstart-extract-"$job"_*.out; do echo "== $(basename "$f"): $(grep -v '^{' "$f" | tail -2 | tr '\n' ' ')"; done
"$BIN" status "$work/run"
"$BIN" merge "$work/run" --out "$work/merged.h5"
"$BIN" extract --model "$MODEL" --data "$DATA" --out "$work/single.h5" --progress none | tail -1
same() {
  .cache/venv/bin/python - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
ok = list(a.attrs["splits"]) == list(b.attrs["splits"]) and all(
    np.array_equal(a[s][k][()], b[s][k][()])
    for s in a.attrs["splits"] for k in ("features", "labels", "paths", "skipped_paths"))
print("merged cache of the Slurm array:", "identical to one extract" if ok else "DIFFERENT from one extract")
sys.exit(0 if ok else 1)
PY
}
same "$work/single.h5" "$work/merged.h5"

echo "--- requeue mid-shard (random VGG-16, an array of 2)"
"$BIN" make-model vgg16 --out "$work/vgg16.onnx" >/dev/null
"$BIN" plan --data "$DATA" --shards 2 --out "$work/run2" | head -1
job=$(cd "$work" && RUN="$work/run2" MODEL="$work/vgg16.onnx" HEADSTART="$BIN" \
  sbatch --parsable --array=0-1 --cpus-per-task=1 --mem=2G "$OLDPWD/deploy/slurm/extract.sbatch")
echo "submitted array job $job"
for _ in $(seq 120); do [ -s "$work/run2/shards/shard-00000.h5.journal" ] && break; sleep 1; done
sleep 10
echo "requeueing ${job}_0 (journal: $(stat -c %s "$work/run2/shards/shard-00000.h5.journal") bytes)"
scontrol requeue "${job}_0"
t0=$(date +%s)
while squeue -h -j "$job" 2>/dev/null | grep -q .; do sleep 5; done
echo "array finished in $(( $(date +%s) - t0 )) s after the requeue"
for f in "$work"/headstart-extract-"$job"_*.out; do echo "== $(basename "$f"):"; grep -v '^{' "$f" | tail -4; done
"$BIN" status "$work/run2" | sed -n 2,4p
"$BIN" merge "$work/run2" --out "$work/merged2.h5"
"$BIN" extract --model "$work/vgg16.onnx" --data "$DATA" --out "$work/single2.h5" --progress none | tail -1
same "$work/single2.h5" "$work/merged2.h5"
