#!/usr/bin/env bash
# Sanitizer jobs (issue 13), each in a build directory of its own (the MLIR/LLVM libraries stay Debian's,
# uninstrumented; mlir-rl's code is instrumented):
#   ASan + UBSan (build-asan): the C++ unit tests, then every end-to-end test that talks to a server (protocol,
#     hostile input, security, load and faults, failover, the Python client and Gymnasium layers, search, training)
#     against the instrumented server and workers (≈10 min); the tests without a server (agent units, packaging,
#     manifests) and the report are left out;
#   TSan (build-tsan): the concurrency tests of the session registry and the worker pool.
# SANITIZE_JOBS="asan tsan" (default both) picks jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${SANITIZE_JOBS:-asan tsan}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# Paths relative to the checkout in the cache keys: another clone of the same sources hits the cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
bash scripts/install-deps.sh

configure() {  # dir sanitizers
  [ -f "$1/build.ninja" ] || cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLIR_RL_SANITIZE="$2" \
    -DMLIR_RL_TCMALLOC=OFF
}

if [[ " $JOBS " == *" asan "* ]]; then
  configure build-asan "address,undefined"
  cmake --build build-asan --target mlir_rl_unit_tests mlir_rl_cli_tests mlir-rl-server mlir-rl-runner mlir-rl-cli -- -j"$(nproc)"
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # allocator_may_return_null: a failed allocation returns null as glibc's malloc does (a worker's kernel then reports
  # it and exits with its out-of-memory code); ASan's default is to abort the process.
  # Leaks are checked in the unit tests' process (LLVM and MLIR keep registries in reachable globals on purpose;
  # LeakSanitizer reports only what nothing references at exit). Not in the e2e tests: a sandboxed worker that
  # exits cannot run LeakSanitizer (its tracer needs ptrace and a process, which the sandbox refuses).
  echo "== ASan+UBSan: C++ unit tests"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=0:allocator_may_return_null=1 ctest --output-on-failure -j1 \
    --timeout 1800)
  echo "== ASan+UBSan: server end-to-end tests"
  ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0:allocator_may_return_null=1 MLIR_RL_REQUIRE_SERVER=1 MLIR_RL_SERVER_BIN="$PWD/build-asan/bin/mlir-rl-server" PYTHONPATH="$PWD/clients/python" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e/test_server.py tests/e2e/test_robustness.py \
    tests/e2e/test_security.py tests/e2e/test_load.py tests/e2e/test_cluster.py tests/e2e/test_local_server.py \
    tests/e2e/test_python_client.py tests/e2e/test_truncation.py tests/e2e/test_pickle.py \
    tests/e2e/test_benchmark_selection.py tests/e2e/test_vector_gymnasium.py tests/e2e/test_gymnasium_compat.py \
    tests/e2e/test_gymnasium_versions.py tests/e2e/test_search.py tests/e2e/test_sb3_adapter.py \
    tests/e2e/test_training.py
fi

if [[ " $JOBS " == *" tsan "* ]]; then
  configure build-tsan "thread"
  cmake --build build-tsan --target mlir_rl_unit_tests mlir-rl-runner -- -j"$(nproc)"
  echo "== TSan: session registry and worker pool"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1 build-tsan/bin/mlir_rl_unit_tests \
    --gtest_filter='Registry.*:Workers.*'
fi
