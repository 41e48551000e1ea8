#!/usr/bin/env bash
# Fuzzing (issue 13): builds the libFuzzer targets of tests/fuzz with clang 14 (everything instrumented with ASan and
# UBSan) into build-fuzz/, then runs each for FUZZ_SECONDS (default 60) from its committed seed corpus
# (tests/fuzz/corpus/<target>) plus the corpus earlier runs grew (build-fuzz/corpus/<target>). Fails on the first
# crash, leak or time-out; the input is left in build-fuzz/artifacts/ (add it to the seed corpus and a regression
# test once fixed).
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   targets to run (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MLIR_RL_FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-fuzz_upload fuzz_actions fuzz_requests fuzz_replay}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# Paths relative to the checkout in the cache keys: another clone of the same sources hits the cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}

bash scripts/install-deps.sh
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang-14 \
    -DCMAKE_CXX_COMPILER=clang++-14 -DMLIR_RL_FUZZ=ON -DMLIR_RL_TCMALLOC=OFF
fi
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" --target $TARGETS -- -j"$(nproc)"

mkdir -p "$BUILD_DIR/artifacts"
status=0
for t in $TARGETS; do
  mkdir -p "$BUILD_DIR/corpus/$t" "tests/fuzz/corpus/$t"
  echo "== $t (${SECONDS_EACH} s)"
  # Leaks are checked per input; MLIR's uniqued storage is reachable from the targets' contexts, not leaked.
  if ! ASAN_OPTIONS=allocator_may_return_null=1:detect_stack_use_after_return=0 \
       UBSAN_OPTIONS=print_stacktrace=1 \
       "$BUILD_DIR/bin/$t" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=6144 -max_len=65536 \
       -artifact_prefix="$BUILD_DIR/artifacts/$t-" -print_final_stats=1 \
       "$BUILD_DIR/corpus/$t" "tests/fuzz/corpus/$t" 2>"$BUILD_DIR/$t.log"; then
    status=1
    tail -n 60 "$BUILD_DIR/$t.log"
    echo "== $t FAILED (artifacts in $BUILD_DIR/artifacts, log in $BUILD_DIR/$t.log)"
  else
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+.*DONE" "$BUILD_DIR/$t.log" | tail -n 3 || true
  fi
done
exit $status
