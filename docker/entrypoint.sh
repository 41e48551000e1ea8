#!/bin/sh
# The image's entry point: mlir-rl-server with the image's paths. It listens on every interface only with
# credentials: a tokens file (MLIR_RL_AUTH_TOKENS_FILE, e.g. a Docker or Kubernetes secret; lines "<name> <token>")
# makes it require `authorization: Bearer <token>` on 0.0.0.0. Without one it listens on 127.0.0.1 only (reachable
# from the host with host networking), so an image started with defaults never offers code execution to a network.
# Arguments are passed on (later flags win, e.g. --port=50052, or --address=... with your own credentials).
set -eu
set -- --benchmarks_dir=/opt/mlir-rl/benchmarks --port_file=/var/lib/mlir-rl/port "$@"
if [ -n "${MLIR_RL_AUTH_TOKENS_FILE:-}" ]; then
  exec /opt/mlir-rl/bin/mlir-rl-server --address=0.0.0.0 --auth_tokens_file="$MLIR_RL_AUTH_TOKENS_FILE" "$@"
fi
exec /opt/mlir-rl/bin/mlir-rl-server --address=127.0.0.1 "$@"
