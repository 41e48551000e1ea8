#!/usr/bin/env bash
# The performance report: per benchmark of the eval split (models, lqcd) and a fixed set of nn-ops kernels, the
# reference time, the best time each search baseline (random, greedy, beam, local) finds within its budget, speedup,
# GFLOP/s and fraction of one core's measured FMA peak, and the same computation in PyTorch (one thread, same core).
# Writes report.md, report.json and PNG plots to docs/results/ (build/report-small/ with --small).
#
#   bash scripts/report.sh            # the full run: 98 benchmarks x 4 strategies x 200 evaluations (hours)
#   bash scripts/report.sh --small    # 3 benchmarks, 8 evaluations each: a few minutes (CI)
#   bash scripts/report.sh --benchmarks nn-ops/matmul_512x512x512_f32 --budget 100 --out /tmp/r
#
# Other options: tools/report/report.py --help. See docs/results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --report
bash scripts/build.sh
exec /usr/bin/python3 tools/report/report.py "$@"
