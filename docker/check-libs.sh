#!/bin/sh
# Run at image build time, after the binaries are copied in: fails when a library one of them links is missing
# from the runtime image (a package to add to the runtime-base stage's list).
set -eu
found=0
for b in /opt/mlir-rl/bin/*; do
  found=1
  if ldd "$b" | grep 'not found'; then
    echo "$b: libraries missing from the runtime image" >&2
    exit 1
  fi
done
[ "$found" = 1 ] || { echo "no binaries in /opt/mlir-rl/bin" >&2; exit 1; }
