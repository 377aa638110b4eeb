#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh --tests), then runs headstart's whole test suite.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says how long it took (CI's time is budgeted step by step).
t_all=$(date +%s)
t0=$t_all
took() { echo "test.sh: $1 took $(( $(date +%s) - t0 )) s"; t0=$(date +%s); }
scripts/setup.sh --tests
took "setup"
# A one-off build (CI's clean clone) gains nothing from incremental compilation's bookkeeping.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

# One ndarray in the build (ort's optional ndarray 0.17 stays in Cargo.lock but is never compiled).
versions=$(cargo tree -e normal --prefix none 2>/dev/null | grep -E '^ndarray v' | awk '{print $2}' | sort -u)
if [ "$(echo "$versions" | wc -l)" -ne 1 ]; then
  echo "test.sh: more than one ndarray version is built:"; echo "$versions"; exit 1
fi
# The stages import one another without circles (prints the graph of stages).
python3 scripts/check_imports.py >/dev/null || python3 scripts/check_imports.py
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
if cargo clippy --version >/dev/null 2>&1; then
  # One pass over every target (lib, bins, tests, examples) with the test build's features. The
  # quickstart's build without `finetune` and `cloud` (six small cfg sites) is not re-checked here:
  # its dependencies' other features cost a second pass of minutes; before changing those sites run
  # `cargo clippy --no-default-features --lib --bins -- -D warnings`.
  cargo clippy --all-targets --features test-hooks,cloud --quiet -- -D warnings
  took "clippy"
fi
# The API docs build without warnings (broken links fail). With the features clippy checked, the
# dependencies' metadata is clippy's (no second pass over them); the build without `cloud` and
# `finetune` is clippy's second pass above.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features cloud --quiet
took "doc"
# test-hooks: the crash tests abort the binary at a checkpoint (a switch a user's build does not have).
# cloud: object storage, tested against moto's S3 server on 127.0.0.1 (installed by setup.sh).
# The examples are not linked again here: clippy compiled them above.
cargo test --features test-hooks,cloud --lib --bins --tests --no-run --quiet "$@" 2>&1
took "test build"
cargo test --features test-hooks,cloud --lib --bins --tests "$@" 2>&1
cargo test --features test-hooks,cloud --doc "$@" 2>&1
took "tests"
echo "test.sh: all took $(( $(date +%s) - t_all )) s"
