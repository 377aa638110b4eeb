#!/usr/bin/env bash
# Zero-shot check of `headstart classify` (not a test): on $HEADSTART_SHARED/data/cats_dogs/test, how often the
# top-1 ImageNet class of EfficientNet-Lite0 is a cat class (281-285) for cats and a dog class (151-268)
# for dogs. Usage: scripts/classify_rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${HEADSTART_SHARED:?set HEADSTART_SHARED to the folder of the project photos and models (data/cats_dogs, models/)}"
cargo build --release --quiet
target/release/headstart classify --model "$SHARED/models/efficientnet_lite0_imagenet.onnx" \
  "$SHARED/data/cats_dogs/test" --jsonl --top 1 | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
kind = lambda i: "cat" if 281 <= i <= 285 else "dog" if 151 <= i <= 268 else "other"
for c in ("cat", "dog"):
    r = [x for x in rows if f"/{c}/" in x["path"] and x["top"]]
    hit = sum(kind(x["top"][0][0]) == c for x in r)
    print(f"{c}: {hit}/{len(r)} photos have a {c} class as top-1 ({hit / len(r):.3f})")
'
