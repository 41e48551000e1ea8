#!/usr/bin/env bash
# The newcomer's command: installs every dependency, builds, starts mlir-rl-server on 127.0.0.1 and runs a smoke
# episode against it with the C++ CLI (heuristic schedule on matmul 512^3 f32). The server keeps running afterwards.
#   MLIR_RL_PORT       port to serve on (default 50051)
#   MLIR_RL_CACHE_DIR  where reference times and measured candidates persist (default ~/.cache/mlir-rl)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${MLIR_RL_PORT:-50051}
BUILD_DIR=${MLIR_RL_BUILD_DIR:-build}

bash scripts/install-deps.sh
bash scripts/build.sh

# Replace a server this script started earlier.
if [ -f "$BUILD_DIR/server.pid" ] && kill -0 "$(cat "$BUILD_DIR/server.pid")" 2>/dev/null; then
  kill "$(cat "$BUILD_DIR/server.pid")"; sleep 1
fi
rm -f "$BUILD_DIR/server.port"
nohup "$BUILD_DIR/bin/mlir-rl-server" --address=127.0.0.1 --port="$PORT" --port_file="$BUILD_DIR/server.port" \
  --cache_dir="${MLIR_RL_CACHE_DIR:-$HOME/.cache/mlir-rl}" \
  > "$BUILD_DIR/server.log" 2>&1 &
echo $! > "$BUILD_DIR/server.pid"
for _ in $(seq 1 100); do
  [ -s "$BUILD_DIR/server.port" ] && break
  kill -0 "$(cat "$BUILD_DIR/server.pid")" 2>/dev/null || { echo "server failed to start:"; cat "$BUILD_DIR/server.log"; exit 1; }
  sleep 0.2
done
[ -s "$BUILD_DIR/server.port" ] || { echo "server did not start within 20 s"; cat "$BUILD_DIR/server.log"; exit 1; }
ADDR="127.0.0.1:$(cat "$BUILD_DIR/server.port")"

"$BUILD_DIR/bin/mlir-rl-cli" --server="$ADDR" health
"$BUILD_DIR/bin/mlir-rl-cli" --server="$ADDR" list
"$BUILD_DIR/bin/mlir-rl-cli" --server="$ADDR" episode --benchmark=benchmark://nn-ops/matmul_512x512x512_f32 --policy=heuristic

echo
echo "mlir-rl-server is serving on $ADDR (pid $(cat "$BUILD_DIR/server.pid"), log $BUILD_DIR/server.log)."
echo "Python: PYTHONPATH=clients/python /usr/bin/python3 -c \"import mlir_rl; env = mlir_rl.make('benchmark://nn-ops/matmul_64x64x64_f32', server='$ADDR'); print(env.reset())\""
echo "Stop it with: kill $(cat "$BUILD_DIR/server.pid")"
