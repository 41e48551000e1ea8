#!/usr/bin/env bash
# Installs every Debian package mlir-rl needs to build, test and run (`--report`: also what the performance report
# needs). Idempotent: packages already present are skipped by apt, and `apt-get update` runs only when a package is
# missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # LLVM / MLIR 19 and the OpenMP runtime the JIT links against
  llvm-19-dev libmlir-19-dev mlir-19-tools libomp-19-dev
  # RPC and service libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev libspdlog-dev
  # token digests and constant-time comparison (OpenSSL), the /metrics endpoint (libmicrohttpd), the evaluation
  # workers' system-call filter (libseccomp); openssl makes the TLS tests' certificates
  libssl-dev libmicrohttpd-dev libseccomp-dev openssl
  # allocator of the server, the runner and the perf program (CMakeLists.txt: MLIR_RL_TCMALLOC)
  libtcmalloc-minimal4
  # tests; clang-format (scripts/format.sh); clang 14 with libFuzzer for the fuzzers (scripts/fuzz.sh)
  libgtest-dev libgmock-dev clang-format clang-14 libclang-rt-14-dev
  # Python client and its tests (these serve /usr/bin/python3); venv and pip: `pip install ./clients/python`
  # into a venv made with --system-site-packages (tests/e2e/test_packaging.py)
  python3 python3-grpcio python3-protobuf python3-numpy python3-pytest python3-venv python3-pip
  # what Gymnasium needs besides numpy (the tests import the vendored Gymnasium in ../shared/vendor/python)
  python3-cloudpickle python3-typing-extensions
  # the PPO agent (mlir_rl.agent, mlir-rl-train / mlir-rl-evaluate) and its tests: PyTorch (CPU), figures, progress
  # bars; OpenBLAS so that torch's matrix products do not run on the reference BLAS (3-7x slower updates here)
  python3-torch python3-matplotlib python3-tqdm libopenblas0-pthread
  # used by tests and tools
  procps curl
)

# The performance report (scripts/report.sh): PyTorch for the comparison, OpenBLAS for its matmuls (Debian's
# python3-torch falls back to the reference BLAS otherwise), matplotlib for the plots, taskset for pinning.
REPORT_PACKAGES=(python3-torch python3-matplotlib libopenblas0-pthread util-linux)
if [ "${1:-}" = "--report" ]; then
  PACKAGES+=("${REPORT_PACKAGES[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
