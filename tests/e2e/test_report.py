"""The performance report's small configuration runs end to end (peak kernel, searches on a fresh server, PyTorch,
tables and plots) within a bound, and what it writes holds together."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, server_binary


def test_report_small_end_to_end(tmp_path):
    missing = [m for m in ("torch", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{', '.join(missing)} not importable (bash scripts/install-deps.sh --report)"
        if os.environ.get("MLIR_RL_REQUIRE_REPORT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    bindir = server_binary().parent
    for name in ("mlir-rl-server", "mlir-rl-cli", "mlir-rl-peak"):
        if not (bindir / name).exists():
            message = f"{bindir / name} not found (bash scripts/build.sh)"
            if os.environ.get("MLIR_RL_REQUIRE_SERVER") == "1":
                pytest.fail(message)
            pytest.skip(message)
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "report" / "report.py"), "--small",
                           f"--build={bindir.parent}", f"--out={out}"],
                          capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert report["small"] and len(report["rows"]) == 3
    assert report["peak"]["f32_gflops"] > 0 and report["peak"]["f64_gflops"] > 0
    # The read bandwidth ladder, 16 KiB to 1 GiB: the caches faster than memory.
    ladder = {int(k): v for k, v in report["peak"]["read_gbs"].items()}
    assert min(ladder) == 16 << 10 and max(ladder) == 1 << 30 and all(v > 0 for v in ladder.values()), ladder
    assert ladder[32 << 10] > ladder[1 << 30], ladder
    assert report["torch"]["blas"]["resolved"], report["torch"]["blas"]
    for row in report["rows"]:
        assert row["name"] in md
        assert row["best_ms"] and row["reference_ms"] and row["flops"] > 0
        assert row["torch_ms"] > 0, row["name"]
        # The best schedule was measured again alone, and that time is the one compared with PyTorch.
        assert row["alone"].get("ms", 0) > 0, (row["name"], row.get("alone"))
        assert row["alone_ms"] == row["alone"]["ms"] and row["best_gflops"] > 0
        # The server's bytes of arguments and results (matmul 128^3 f32: three 64 KiB matrices) and the side of the roofline.
        assert row["io_bytes"] > 0 and row["best_gbs"] > 0 and row["bound"] in ("compute", "memory"), row
        if row["name"] == "nn-ops/matmul_128x128x128_f32":
            assert row["io_bytes"] == 3 * 128 * 128 * 4 and row["bound"] == "compute", row
        for strategy in report["strategies"]:
            st = row["strategies"][strategy]
            assert "error" not in st, (row["name"], strategy, st.get("error"))
            assert st["evaluations"] <= report["budget"]
            # Every strategy measures the untransformed schedule, so none ends slower than it.
            assert st["time_ms"] <= st["record"]["untransformed_ms"]
    for image in ("speedup_by_family.png", "env_vs_pytorch.png", "fraction_of_peak.png", "search_progress.png"):
        assert (out / image).stat().st_size > 1000, image
        assert image in md
    assert "OpenBLAS" in md or "BLAS" in md
