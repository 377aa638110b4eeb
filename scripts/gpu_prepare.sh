#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a GPU machine that has CUDA, PyTorch and h5py but no cargo,
# no HDF5 library and no network, for transfers of at most 64 MiB per call:
#   .gpu/p1 .. .gpu/p4   ONNX Runtime's CUDA provider in four parts (made by ORT_PARTS, the packing
#                        script of the machine's provider; p4 holds the part assembler)
#   .gpu/run/            the stripped release binary and the shared libraries it links (xz), the
#                        EfficientNet-Lite0 base, and photos
#   .gpu/ph1 .. .gpu/ph3 more photos, each sent beside one provider part
# Photos are taken from DATA (train/ and test/ with class folders), the first files of each class in
# name order, as many as fit; BIG (class folders of large camera photos) adds a few for decoding.
#
# usage: scripts/gpu_prepare.sh DATA [BIG]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: gpu_prepare.sh DATA [BIG]}
BIG=${2:-}
ORT_PARTS=${ORT_PARTS:-${HEADSTART_SHARED:?set HEADSTART_SHARED or ORT_PARTS}/gpu/prepare_ort_cuda_parts.sh}
G=.gpu
[ -f $G/p4/assemble.sh ] || bash "$ORT_PARTS" $G
cargo build --release
rm -rf $G/run $G/ph1 $G/ph2 $G/ph3
mkdir -p $G/run/lib
strip -o $G/run/headstart target/release/headstart
xz -T2 -6 -f $G/run/headstart
# Shared libraries beside glibc's own (the machine's glibc is newer than this one's).
ldd target/release/headstart | awk '/=> \//{print $3}' \
  | grep -v -E '/(libc|libm|libgcc_s|libresolv|libpthread|libdl|librt)\.so' \
  | xargs -I{} cp -L {} $G/run/lib/
tar -C $G/run -cJf $G/run/lib.tar.xz lib && rm -rf $G/run/lib
LITE0=${HEADSTART_HOME:-$HOME/.cache/headstart}/models/efficientnet_lite0_features.onnx
[ -f "$LITE0" ] || target/release/headstart fetch efficientnet-lite0
cp "$LITE0" $G/run/lite0.onnx
repo=$(git ls-files -z | xargs -0 cat | wc -c)
python3 - "$DATA" "$BIG" "$G" "$repo" <<'PY'
import os, shutil, sys
data, big, g, repo = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
MiB = 1 << 20
size = lambda d: sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
# Room per call: 64 MiB less what already travels (the part or run folder, the tracked files), less 1 MiB.
room = {b: 63 * MiB - repo - size(os.path.join(g, p))
        for b, p in [("ph1", "p1"), ("ph2", "p2"), ("ph3", "p3"), ("run/photos", "p4")]}
room["run/photos"] -= size(os.path.join(g, "run"))
if big:  # a few large photos for the decoding rows, in the run folder
    for c in sorted(os.listdir(big)):
        for f in sorted(os.listdir(os.path.join(big, c)))[:10]:
            src = os.path.join(big, c, f)
            os.makedirs(os.path.join(g, "run/big", c), exist_ok=True)
            shutil.copy(src, os.path.join(g, "run/big", c, f))
            room["run/photos"] -= os.path.getsize(src)
lists = [(s, c, sorted(os.listdir(os.path.join(data, s, c))))
         for s in ("train", "test") for c in sorted(os.listdir(os.path.join(data, s)))]
taken, i = {b: 0 for b in room}, 0
while any(i < len(fs) for _, _, fs in lists):
    placed = False
    for s, c, fs in lists:
        if i >= len(fs):
            continue
        src = os.path.join(data, s, c, fs[i])
        n = os.path.getsize(src)
        b = next((b for b in room if room[b] >= n), None)
        if b is None:
            continue
        os.makedirs(os.path.join(g, b, s, c), exist_ok=True)
        shutil.copy(src, os.path.join(g, b, s, c, fs[i]))
        room[b] -= n
        taken[b] += 1
        placed = True
    if not placed:
        break
    i += 1
print("photos per call:", taken, "-> per class and split about", i)
PY
du -sh $G/p? $G/ph? $G/run
