#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, then runs the C++ unit tests (CTest/GoogleTest) and the
# Python end-to-end tests (pytest against a real server on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MLIR_RL_BUILD_DIR:-build}

bash scripts/install-deps.sh --report  # --report: PyTorch, matplotlib, OpenBLAS for tests/e2e/test_report.py
bash scripts/build.sh

echo "== C++ unit tests (ctest)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j1

echo "== Python end-to-end tests (pytest, real server)"
MLIR_RL_REQUIRE_SERVER=1 MLIR_RL_REQUIRE_REPORT=1 MLIR_RL_SERVER_BIN="$PWD/$BUILD_DIR/bin/mlir-rl-server" PYTHONPATH="$PWD/clients/python" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e
