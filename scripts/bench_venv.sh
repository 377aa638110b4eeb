# Sourced by the benchmark scripts: `bench_venv "IMPORTS" PACKAGE...` makes sure the Python peers'
# venv, .cache/bench-venv, can run `import IMPORTS`, installing PACKAGEs from PyPI when it cannot,
# and sets PY to its python.
bench_venv() {
  local imports="$1"
  shift
  PY=.cache/bench-venv/bin/python
  "$PY" -c "import $imports" >/dev/null 2>&1 || {
    python3 -m venv .cache/bench-venv
    "$PY" -m pip install -q --disable-pip-version-check "$@"
  }
}
