#!/usr/bin/env bash
# The seed assignment's data step: downloads Microsoft's Kaggle Cats and Dogs archive (25,000 photos in
# PetImages/Cat and PetImages/Dog, some of them zero-byte or undecodable), checks that it is a zip with
# that layout, unpacks it, and runs `headstart split` with the assignment's numbers: 1000 train +
# 500 test photos per class, every chosen photo decoded first (broken ones replaced), seed 42.
# Usage: scripts/get_cats_dogs.sh DIR        -> DIR/{train,test}/{Cat,Dog}/, DIR/MANIFEST.tsv
#   Needs curl and python3; ~800 MB download kept in DIR.raw/ (resumed if interrupted).
#   ARCHIVE=path/to/kagglecatsanddogs_5340.zip uses a copy you already have.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: scripts/get_cats_dogs.sh DIR" >&2; exit 2; }
DIR="$1"
RAW="${DIR%/}.raw"
URL="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
# No published hash exists for this archive; the check below verifies its layout instead.
ZIP="${ARCHIVE:-$RAW/kagglecatsanddogs_5340.zip}"
mkdir -p "$RAW"
if [ ! -f "$ZIP" ]; then
  echo "get_cats_dogs: downloading $URL"
  curl -fL --retry 3 -C - -o "$ZIP.part" "$URL"
  mv "$ZIP.part" "$ZIP"
fi
python3 - "$ZIP" "$RAW" <<'PY'
import sys, zipfile
path, raw = sys.argv[1], sys.argv[2]
if not zipfile.is_zipfile(path):
    sys.exit(f"get_cats_dogs: {path} is not a zip archive (a proxy page or a cut download?); delete it and rerun")
with zipfile.ZipFile(path) as z:
    names = z.namelist()
    cats = sum(n.startswith("PetImages/Cat/") for n in names)
    dogs = sum(n.startswith("PetImages/Dog/") for n in names)
    if cats < 1500 or dogs < 1500:
        sys.exit(f"get_cats_dogs: {path} has {cats} PetImages/Cat and {dogs} PetImages/Dog entries; not the Kaggle Cats and Dogs archive")
    for n in names:
        if n.startswith("/") or ".." in n.split("/"):
            sys.exit(f"get_cats_dogs: {path}: unsafe entry {n!r}; refused")
    z.extractall(raw)
    print(f"get_cats_dogs: unpacked {cats} cat and {dogs} dog entries into {raw}/PetImages")
PY
if command -v headstart >/dev/null 2>&1; then BIN=headstart; else
  cargo build --release --quiet
  BIN=target/release/headstart
fi
"$BIN" split "$RAW/PetImages" --out "$DIR" --train 1000 --test 500 --seed 42
