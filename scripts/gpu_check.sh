#!/usr/bin/env bash
# Issue 19's measurements in one call on the GPU machine (it has CUDA, PyTorch and nvcc but no cargo):
# ONNX Runtime's CUDA provider assembled from the carried parts, then VGG-16 (random weights, made
# here by `headstart make-model`) over real photos: decode img/s alone with 1, 4 and 16 workers;
# inference alone at batch 64/128/256 (bench-infer); `extract` end to end on CUDA and on the CPU with
# the features compared; PyTorch fp16 channels_last on the same card as the reference. Results go to
# $OUT (one text file per step, and summary.json).
#
# Prepare here (no device time):
#   cargo build --release
#   ../shared/gpu/prepare_ort_cuda_parts.sh .gpu            # .gpu/p1..p4 (git-ignored)
#   mkdir -p .gpu/photos && cp -r SOME_PHOTOS/{cat,dog} .gpu/photos/   # a few hundred, class folders
# Device calls: three carrying .gpu/p1, .gpu/p2, .gpu/p3, each `mkdir -p /tmp/parts && cp .gpu/pK/* /tmp/parts/`;
# then one carrying target/release/headstart, .gpu/p4 and .gpu/photos: `bash scripts/gpu_check.sh`.
# `scripts/gpu_check.sh --cpu` runs the same steps on the CPU provider (a dry run of the script here).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[ "${1:-}" = --cpu ] && DEVICE=cpu
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
BIN=target/release/headstart
PHOTOS="${PHOTOS:-.gpu/photos}"
IMAGES="${IMAGES:-1024}"
BATCHES="${BATCHES:-64 128 256}"
WORKERS="${WORKERS:-1,4,16}"
log() { echo "$*" | tee -a "$OUT/log.txt"; }

if [ "$DEVICE" = cuda ]; then
  exports=$(bash .gpu/p4/assemble.sh | tail -1)
  eval "$exports"
  export ORT_DYLIB_PATH LD_LIBRARY_PATH
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1 || true
fi
log "device $DEVICE: $(cat "$OUT/gpu.txt" 2>/dev/null || echo cpu); $(nproc) cores; $(date -u +%FT%TZ)"
MODEL=/tmp/headstart_vgg16.onnx
[ -f "$MODEL" ] || "$BIN" make-model vgg16 --layout nchw --out "$MODEL" >/dev/null

log "== decode + preprocess alone"
"$BIN" bench-decode --model "$MODEL" --data "$PHOTOS" --workers "$WORKERS" --images 512 --preprocess caffe \
  | tee "$OUT/decode.txt" | tee -a "$OUT/log.txt"

log "== inference alone (fp32)"
for b in $BATCHES; do
  "$BIN" bench-infer --model "$MODEL" --batch "$b" --images "$IMAGES" --device "$DEVICE" | tee -a "$OUT/infer.txt" "$OUT/log.txt"
done

log "== extract end to end ($DEVICE vs cpu)"
for b in $BATCHES; do
  "$BIN" extract --model "$MODEL" --data "$PHOTOS" --out "$OUT/dev.b$b.h5" --preprocess caffe --batch "$b" \
    --device "$DEVICE" --force --progress none 2>&1 | tail -1 | tee -a "$OUT/extract.txt" "$OUT/log.txt"
done
"$BIN" extract --model "$MODEL" --data "$PHOTOS" --out "$OUT/cpu.h5" --preprocess caffe --batch 32 \
  --device cpu --force --progress none 2>&1 | tail -1 | tee -a "$OUT/extract.txt" "$OUT/log.txt"

log "== parity and PyTorch reference"
python3 - "$OUT" "$DEVICE" "$IMAGES" <<'PY' 2>&1 | tee "$OUT/python.txt" | tee -a "$OUT/log.txt"
import glob, json, os, sys, time
out, device, images = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {"device": device}
try:
    import h5py, numpy as np
    cpu = h5py.File(os.path.join(out, "cpu.h5"))["train/features"][:]
    for f in sorted(glob.glob(os.path.join(out, "dev.b*.h5"))):
        x = h5py.File(f)["train/features"][:]
        a, b = cpu.reshape(len(cpu), -1), x.reshape(len(x), -1)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        res[os.path.basename(f)] = {"max_abs_diff": float(abs(a - b).max()), "cos_min": float(cos.min())}
except Exception as e:  # h5py may be missing there
    res["parity_error"] = repr(e)
try:
    import torch
    from torch import nn
    layers, c = [], 3
    for v in [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]:
        if v == 0:
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    dev = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
    net = nn.Sequential(*layers).eval().to(dev)
    for dtype in ([torch.float16, torch.float32] if dev == "cuda" else [torch.float32]):
        m = net.to(dtype=dtype, memory_format=torch.channels_last)
        for bs in (64, 128, 256):
            x = torch.randn(bs, 3, 224, 224, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
            with torch.inference_mode():
                for _ in range(3):
                    m(x)
                if dev == "cuda":
                    torch.cuda.synchronize()
                t, n = time.time(), 0
                while n < (images if dev == "cuda" else bs):
                    m(x); n += bs
                if dev == "cuda":
                    torch.cuda.synchronize()
            res[f"torch_{str(dtype).split('.')[-1]}_b{bs}_img_s"] = n / (time.time() - t)
except Exception as e:
    res["torch_error"] = repr(e)
json.dump(res, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(res, indent=1))
PY
log "results in $OUT"
