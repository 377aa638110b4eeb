#!/usr/bin/env bash
# Issue 19's measurements in one call on a GPU machine (CUDA, PyTorch and h5py there; no cargo, no
# HDF5 library, no network). Everything goes to $OUT/log.txt, and the parity and PyTorch numbers to
# $OUT/summary.json:
#   - decode + preprocess alone with 1, 4 and 16 workers (cats_dogs photos, large ant/bee photos);
#   - inference alone (bench-infer) for VGG-16 (random weights) and EfficientNet-Lite0, float32 (TF32
#     allowed, and --no-tf32) and float16 (`headstart convert --fp16`), batch 64/128/256;
#   - extract end to end on CUDA over a few thousand photos, and on CPU over the real ones: features
#     compared (max |diff|, cosine);
#   - EfficientNet-Lite0: a seed-recipe head trained on the CPU's cache (and one on the fp16 cache),
#     `evaluate` on the CUDA and CPU caches and on the photos through each device, `export` + `score`
#     on each device compared (and the export's fp16 copy);
#   - `finetune` of VGG-16's block 5 with the frozen part on CUDA (the trainable part runs on the CPU);
#   - PyTorch on the same card: VGG-16 fp16 and fp32 (TF32 convolutions, PyTorch's default),
#     channels_last, inference only.
#
# Prepare (here, no device time): scripts/gpu_prepare.sh DATA [BIG]. Device calls, back to back (the
# machine stays warm ~30 s): for K in 1 2 3, one carrying .gpu/pK and .gpu/phK:
#   mkdir -p /tmp/parts /tmp/photos && cp .gpu/pK/* /tmp/parts/ && cp -r .gpu/phK/. /tmp/photos/
# then one carrying .gpu/p4 and .gpu/run: `cp -r .gpu/run/photos/. /tmp/photos/ && bash scripts/gpu_check.sh`.
# `scripts/gpu_check.sh --cpu` runs the same steps on the CPU provider with the local build (a dry run);
# ONLY=io runs only decoding per model and `extract` with a full and a pooled output (where time goes);
# ONLY=bind (issue 33) runs inference with and without --io-binding and --cuda-graph for VGG-16,
# EfficientNet-Lite0 and a ViT-S/14-shaped ViT in fp32 and fp16, extract end to end with each,
# decoding alone, and PyTorch with and without its copies (scripts/gpu_torch_ref.py), in one call.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[ "${1:-}" = --cpu ] && DEVICE=cpu
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
W=${WORK:-/tmp/hs}
mkdir -p "$W"
RUN=.gpu/run
PHOTOS=${PHOTOS:-/tmp/photos}
IMAGES=${IMAGES:-2048}
COPIES=${COPIES:-12}
BL=${BL:-64 128 256}  # batch sizes; BM and BB, the middle and the largest
BM=${BM:-128}
BB=${BB:-256}
T0=$(date +%s)
log() { echo "$*" | tee -a "$OUT/log.txt"; }
# step NAME SECONDS CMD...: runs with a time limit, output to the log; never stops the script.
step() {
  local name=$1 t=$2 s e rc
  shift 2
  s=$(date +%s.%N)
  echo "\$ $*" >>"$OUT/log.txt"
  timeout "$t" "$@" >>"$OUT/log.txt" 2>&1
  rc=$?
  LAST_RC=$rc
  e=$(date +%s.%N)
  log "[$name] rc=$rc $(python3 -c "print(round($e-$s,1))") s (at $(($(date +%s) - T0)) s)"
}

if [ -f $RUN/headstart.xz ]; then
  xz -dc $RUN/headstart.xz >"$W/headstart" && chmod +x "$W/headstart"
  tar -C "$W" -xJf $RUN/lib.tar.xz
  BIN=$W/headstart
else
  BIN=$PWD/target/release/headstart
fi
if [ "$DEVICE" = cuda ]; then
  eval "$(bash .gpu/p4/assemble.sh | tail -1)"
  export ORT_DYLIB_PATH LD_LIBRARY_PATH
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader >>"$OUT/log.txt" 2>&1
fi
HS=(env "LD_LIBRARY_PATH=$W/lib:${LD_LIBRARY_PATH:-}" "$BIN")
LITE0=${LITE0:-$RUN/lite0.onnx}
log "device $DEVICE; $(nproc) cores; $(date -u +%FT%TZ); photos: $(find "$PHOTOS" -type f | wc -l)"

# A bigger folder for throughput: the photos linked COPIES times under other names.
MANY=$W/many
rm -rf "$MANY"
for f in $(cd "$PHOTOS" && find . -type f); do
  c=$(basename "$(dirname "$f")")
  mkdir -p "$MANY/$c"
  for k in $(seq 1 "$COPIES"); do ln -f "$PHOTOS/$f" "$MANY/$c/r${k}_$(basename "$f")" 2>/dev/null || cp "$PHOTOS/$f" "$MANY/$c/r${k}_$(basename "$f")"; done
done
log "throughput folder: $(find "$MANY" -type f | wc -l) files"

step make-model 60 "${HS[@]}" make-model vgg16 --layout nchw --out "$W/vgg.onnx"
step convert-vgg 60 "${HS[@]}" convert "$W/vgg.onnx" --fp16 --out "$W/vgg16h.onnx"
step convert-lite0 60 "${HS[@]}" convert "$LITE0" --fp16 --out "$W/lite0h.onnx"

if [ "${ONLY:-}" = bind ]; then
  # Issue 33: inference with and without I/O binding and CUDA graphs beside PyTorch (same call),
  # end to end with binding, decoding alone beside it. Rows go to $OUT/bind.tsv.
  step make-vit 60 "${HS[@]}" make-model vit-s14 --out "$W/vit.onnx"
  step convert-vit 60 "${HS[@]}" convert "$W/vit.onnx" --fp16 --out "$W/vith.onnx"
  B=(--device "$DEVICE" --images "$IMAGES")
  GRAPH=(--cuda-graph)
  [ "$DEVICE" = cpu ] && GRAPH=(--io-binding)  # a CUDA graph needs CUDA: the dry run repeats binding
  for spec in "vgg:vgg.onnx:$BM" "vgg:vgg16h.onnx:$BM" "lite0:$LITE0:$BB" "lite0:lite0h.onnx:$BB" "vit:vit.onnx:$BM" "vit:vith.onnx:$BM"; do
    IFS=: read -r name file b <<<"$spec"
    case $file in /*) m=$file ;; *) m=$W/$file ;; esac
    prec=fp32; case $file in *h.onnx) prec=fp16 ;; esac
    nhwc=(); [ $prec = fp16 ] && [ $name != vit ] && nhwc=(--cuda-nhwc)
    for how in plain io-binding cuda-graph; do
      extra=(); case $how in io-binding) extra=(--io-binding) ;; cuda-graph) extra=("${GRAPH[@]}") ;; esac
      step "infer $name $prec $how b$b" 90 "${HS[@]}" bench-infer --model "$m" --batch "$b" "${B[@]}" "${nhwc[@]}" "${extra[@]}"
      v=failed; [ "$LAST_RC" = 0 ] && v=$(grep ort-alone "$OUT/log.txt" | tail -1 | sed -E 's/.*= ([0-9.]+) img.s.*/\1/')
      printf '%s\t%s\t%s\t%s\t%s\n' infer "$name" "$prec" "$how" "$v" >>"$OUT/bind.tsv"
    done
  done
  step "decode vgg" 90 "${HS[@]}" bench-decode --model "$W/vgg.onnx" --data "$PHOTOS" --workers 16 --images 800 --modes fast
  for how in plain io-binding cuda-graph; do
    extra=(); case $how in io-binding) extra=(--io-binding) ;; cuda-graph) extra=("${GRAPH[@]}") ;; esac
    step "e2e vgg fp16 $how b$BM" 150 "${HS[@]}" extract --force --progress none --device "$DEVICE" --model "$W/vgg16h.onnx" \
      --data "$MANY" --out "$W/many_vgg16h.h5" --batch "$BM" --cuda-nhwc "${extra[@]}"
    step "e2e lite0 fp32 $how b$BB" 150 "${HS[@]}" extract --force --progress none --device "$DEVICE" --model "$LITE0" \
      --data "$MANY" --out "$W/many_lite0.h5" --batch "$BB" "${extra[@]}"
  done
  step torch 200 "${PYTHON:-python3}" scripts/gpu_torch_ref.py "$OUT/torch.json" "$BM" "$BB"
  cat "$OUT/bind.tsv" | tee -a "$OUT/log.txt"
  grep -E "^\[|img/s" "$OUT/log.txt"
  exit 0
fi
if [ "${ONLY:-}" = io ]; then
  # Where end-to-end time goes: decoding with each model's own preprocessing, and VGG-16 with a
  # global-pool output (2 KB per image to write instead of 100 KB).
  step make-model-pool 60 "${HS[@]}" make-model vgg16 --layout nchw --pool --out "$W/vggp.onnx"
  for m in "$W/vgg.onnx" "$LITE0"; do
    step "decode $(basename "$m")" 90 "${HS[@]}" bench-decode --model "$m" --data "$PHOTOS" --workers 1,4,16 --images 800 --modes fast
  done
  for m in vgg vggp vgg; do
    step "e2e $m fp32 b128" 120 "${HS[@]}" extract --force --progress none --device "$DEVICE" --model "$W/$m.onnx" --data "$MANY" --out "$W/many_$m.h5" --batch 128
  done
  step "e2e lite0 fp32 b256" 120 "${HS[@]}" extract --force --progress none --device "$DEVICE" --model "$LITE0" --data "$MANY" --out "$W/many_lite0.h5" --batch 256
  grep -E "^\[|img/s" "$OUT/log.txt"
  exit 0
fi
log "== decode + preprocess alone"
step decode-photos 90 "${HS[@]}" bench-decode --model "$W/vgg.onnx" --data "$PHOTOS" --workers 1,4,16 --images 512 --modes fast
[ -d $RUN/big ] && step decode-big 90 "${HS[@]}" bench-decode --model "$W/vgg.onnx" --data $RUN/big --workers 1,4,16 --images 64 --modes fast,exact

log "== inference alone"
D=(--device "$DEVICE")
for b in $BL; do step "infer vgg fp32 b$b" 60 "${HS[@]}" bench-infer --model "$W/vgg.onnx" --batch $b --images "$IMAGES" "${D[@]}"; done
step "infer vgg fp32 no-tf32 b$BM" 60 "${HS[@]}" bench-infer --model "$W/vgg.onnx" --batch $BM --images "$IMAGES" "${D[@]}" --no-tf32
for b in $BL; do step "infer vgg fp16 b$b" 60 "${HS[@]}" bench-infer --model "$W/vgg16h.onnx" --batch $b --images "$IMAGES" "${D[@]}"; done
for b in $BL; do step "infer vgg fp16 nhwc b$b" 60 "${HS[@]}" bench-infer --model "$W/vgg16h.onnx" --batch $b --images "$IMAGES" "${D[@]}" --cuda-nhwc; done
step "infer vgg fp32 nhwc b$BM" 60 "${HS[@]}" bench-infer --model "$W/vgg.onnx" --batch $BM --images "$IMAGES" "${D[@]}" --cuda-nhwc
step "infer lite0 fp32 b$BB" 60 "${HS[@]}" bench-infer --model "$LITE0" --batch $BB --images "$IMAGES" "${D[@]}"
step "infer lite0 fp16 b$BB" 60 "${HS[@]}" bench-infer --model "$W/lite0h.onnx" --batch $BB --images "$IMAGES" "${D[@]}"
step "infer lite0 fp16 nhwc b$BB" 60 "${HS[@]}" bench-infer --model "$W/lite0h.onnx" --batch $BB --images "$IMAGES" "${D[@]}" --cuda-nhwc

log "== extract end to end, $(find "$MANY" -type f | wc -l) files"
X=(extract --force --progress none "${D[@]}")
step "e2e vgg fp32 b$BM" 120 "${HS[@]}" "${X[@]}" --model "$W/vgg.onnx" --data "$MANY" --out "$W/many_vgg.h5" --batch $BM
step "e2e vgg fp16 b$BM" 120 "${HS[@]}" "${X[@]}" --model "$W/vgg16h.onnx" --data "$MANY" --out "$W/many_vgg16h.h5" --batch $BM
step "e2e vgg fp16 nhwc b$BM" 120 "${HS[@]}" "${X[@]}" --model "$W/vgg16h.onnx" --data "$MANY" --out "$W/many_vgg16h.h5" --batch $BM --cuda-nhwc
step "e2e vgg fp16 b$BB" 120 "${HS[@]}" "${X[@]}" --model "$W/vgg16h.onnx" --data "$MANY" --out "$W/many_vgg16h.h5" --batch $BB
step "e2e lite0 fp32 b$BB" 120 "${HS[@]}" "${X[@]}" --model "$LITE0" --data "$MANY" --out "$W/many_lite0.h5" --batch $BB
step "e2e lite0 fp16 b$BB" 120 "${HS[@]}" "${X[@]}" --model "$W/lite0h.onnx" --data "$MANY" --out "$W/many_lite0h.h5" --batch $BB

log "== parity on the real photos: $DEVICE vs cpu"
P=(extract --force --progress none --data "$PHOTOS")
step "parity vgg fp32" 90 "${HS[@]}" "${P[@]}" --model "$W/vgg.onnx" --out "$W/vgg_dev.h5" --batch $BM "${D[@]}"
step "parity vgg fp32 no-tf32" 90 "${HS[@]}" "${P[@]}" --model "$W/vgg.onnx" --out "$W/vgg_dev_exact.h5" --batch $BM "${D[@]}" --no-tf32
step "parity vgg fp16" 90 "${HS[@]}" "${P[@]}" --model "$W/vgg16h.onnx" --out "$W/vgg_dev16.h5" --batch $BM "${D[@]}"
step "parity vgg cpu" 150 "${HS[@]}" "${P[@]}" --model "$W/vgg.onnx" --out "$W/vgg_cpu.h5" --batch 32 --device cpu
step "parity lite0 fp32" 90 "${HS[@]}" "${P[@]}" --model "$LITE0" --out "$W/lite0_dev.h5" --batch $BM "${D[@]}"
step "parity lite0 fp16" 90 "${HS[@]}" "${P[@]}" --model "$W/lite0h.onnx" --out "$W/lite0_dev16.h5" --batch $BM "${D[@]}"
step "parity lite0 cpu" 90 "${HS[@]}" "${P[@]}" --model "$LITE0" --out "$W/lite0_cpu.h5" --batch 32 --device cpu

log "== head, evaluate, export, score (EfficientNet-Lite0)"
# The seed recipe (seconds); a float16 base's features get a head of their own (precisions differ).
step train-head 120 "${HS[@]}" train-head "$W/lite0_cpu.h5" --recipe seed --out "$W/head.h5"
step "train-head fp16" 120 "${HS[@]}" train-head "$W/lite0_dev16.h5" --recipe seed --out "$W/head16.h5"
for f in lite0_cpu lite0_dev; do
  step "evaluate cache $f" 60 "${HS[@]}" evaluate --head "$W/head.h5" --features "$W/$f.h5" --json
done
step "evaluate cache lite0_dev16" 60 "${HS[@]}" evaluate --head "$W/head16.h5" --features "$W/lite0_dev16.h5" --json
step "evaluate photos $DEVICE" 90 "${HS[@]}" evaluate --head "$W/head.h5" --model "$LITE0" --data "$PHOTOS" --json "${D[@]}"
step "evaluate photos cpu" 90 "${HS[@]}" evaluate --head "$W/head.h5" --model "$LITE0" --data "$PHOTOS" --json --device cpu
step export 60 "${HS[@]}" export --model "$LITE0" --head "$W/head.h5" --out "$W/exported.onnx"
step "score $DEVICE" 90 "${HS[@]}" score --model "$W/exported.onnx" "$PHOTOS/test" --out "$W/score_dev.csv" --progress none "${D[@]}"
step "score cpu" 90 "${HS[@]}" score --model "$W/exported.onnx" "$PHOTOS/test" --out "$W/score_cpu.csv" --progress none --device cpu
step "convert exported" 60 "${HS[@]}" convert "$W/exported.onnx" --fp16 --out "$W/exported16.onnx"
step "score fp16 $DEVICE" 90 "${HS[@]}" score --model "$W/exported16.onnx" "$PHOTOS/test" --out "$W/score_dev16.csv" --progress none "${D[@]}"

log "== finetune VGG-16 block 5, frozen part on $DEVICE"
step finetune 150 "${HS[@]}" finetune --model "$W/vgg.onnx" --data "$PHOTOS" --unfreeze block5 --epochs 1 --freeze-epochs 1 --out "$W/ft.onnx" \
  --cache "$W/ft_cache.h5" --progress none --json "${D[@]}"

log "== parity numbers and PyTorch on the same device"
timeout 150 "${PYTHON:-python3}" - "$W" "$DEVICE" "$OUT" <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import csv, json, os, sys, time
w, device, out = sys.argv[1], sys.argv[2], sys.argv[3]
res = {"device": device}
try:
    import h5py, numpy as np
    def feats(f):
        with h5py.File(os.path.join(w, f)) as h:
            return {s: (h[s]["features"][:], [p.decode() if isinstance(p, bytes) else p for p in h[s]["paths"][:]])
                    for s in h if isinstance(h[s], h5py.Group) and "features" in h[s]}
    for ref, others in [("vgg_cpu.h5", ["vgg_dev.h5", "vgg_dev_exact.h5", "vgg_dev16.h5"]),
                        ("lite0_cpu.h5", ["lite0_dev.h5", "lite0_dev16.h5"])]:
        if not os.path.exists(os.path.join(w, ref)):
            continue
        r = feats(ref)
        for o in others:
            if not os.path.exists(os.path.join(w, o)):
                continue
            x = feats(o)
            a = np.concatenate([r[s][0].reshape(len(r[s][0]), -1) for s in sorted(r)])
            b = np.concatenate([x[s][0].reshape(len(x[s][0]), -1) for s in sorted(r)])
            assert all(r[s][1] == x[s][1] for s in r), "row order differs"
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            res[f"{o} vs {ref}"] = {"rows": len(a), "max_abs_diff": float(abs(a - b).max()),
                                    "max_abs_ref": float(abs(a).max()), "cos_min": float(cos.min()),
                                    "rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(a))}
    for dev in ("score_dev.csv", "score_dev16.csv"):
      sc = [os.path.join(w, f) for f in (dev, "score_cpu.csv")]
      if all(map(os.path.exists, sc)):
        a, b = [{r["path"]: r for r in csv.DictReader(open(f))} for f in sc]
        cols = [c for c in next(iter(a.values())) if c.startswith("p_")]
        d = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols)
        same = sum(a[k]["predicted"] == b[k]["predicted"] for k in a)
        res[f"{dev} vs score_cpu.csv"] = {"rows": len(a), "same_paths": set(a) == set(b), "max_prob_diff": d, "same_prediction": same}
except Exception as e:
    res["parity_error"] = repr(e)
try:
    import torch
    sys.path.insert(0, "scripts")
    from gpu_torch_ref import vgg16_base
    dev = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    net = vgg16_base().eval().to(dev)
    res["torch"] = {"version": torch.__version__, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    for dtype in ([torch.float16, torch.float32] if dev == "cuda" else [torch.float32]):
        m = net.to(dtype=dtype, memory_format=torch.channels_last)
        for bs in ((64, 128, 256) if dev == "cuda" else (8,)):
            x = torch.randn(bs, 3, 224, 224, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
            with torch.inference_mode():
                for _ in range(5):
                    m(x)
                if dev == "cuda":
                    torch.cuda.synchronize()
                t, n = time.time(), 0
                while n < (4096 if dev == "cuda" else 16):
                    m(x)
                    n += bs
                if dev == "cuda":
                    torch.cuda.synchronize()
            res["torch"][f"vgg16_{str(dtype).split('.')[-1]}_b{bs}_img_s"] = round(n / (time.time() - t), 1)
except Exception as e:
    res["torch_error"] = repr(e)
json.dump(res, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(res, indent=1))
PY
log "done in $(($(date +%s) - T0)) s; results in $OUT"
grep -E "^\[|img/s|accuracy" "$OUT/log.txt" | tail -80
