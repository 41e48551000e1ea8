#!/usr/bin/env bash
# Builds and runs the performance program (tests/perf/), which prints latency and compile-time figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
"${MLIR_RL_BUILD_DIR:-build}/bin/mlir-rl-perf" "$@"
# The latency and policy figures again with the client and the server's RPC threads on one core (no cross-core
# wake-ups).
"${MLIR_RL_BUILD_DIR:-build}/bin/mlir-rl-perf" --sections=latency,policy --cpus=0
PYTHONPATH=clients/python MLIR_RL_SERVER_BIN="$PWD/${MLIR_RL_BUILD_DIR:-build}/bin/mlir-rl-server" \
  /usr/bin/python3 tests/perf/python_step_latency.py
