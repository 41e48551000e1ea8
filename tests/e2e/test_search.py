"""Search baselines (``mlir-rl-cli search``) and the CLI's heuristic policy against a real server.

Each strategy finds a schedule at least as fast as the untransformed benchmark (it measures that schedule too, so the
comparison is between measurements of one run), writes its JSON record and Transform script, and the script replays
with ``mlir-opt --transform-interpreter`` to the IR the server reaches with the same actions. Budgets are respected.
The heuristic policy is never slower than untransformed on the kernels it used to be 4-28x slower on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, server_binary

MLIR_OPT = Path("/usr/lib/llvm-19/bin/mlir-opt")
SMALL = "benchmark://nn-ops/matmul_relu_128x128x128_f32"  # two ops: a producer, fusion, a consumer


def cli_binary() -> Path:
    path = Path(os.environ.get("MLIR_RL_CLI_BIN", server_binary().parent / "mlir-rl-cli"))
    if not path.exists():
        message = f"{path} not found (build it: bash scripts/build.sh)"
        if os.environ.get("MLIR_RL_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli_binary()), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def run_search(server: str, out: Path, *args: str, timeout: float = 600) -> dict:
    done = run_cli("search", f"--server={server}", f"--out={out}", "--progress=lines", *args, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert re.search(r"search \w+ .*evals", done.stderr), done.stderr  # progress lines
    return json.loads(Path(f"{out}.json").read_text())


def mlir_opt(path: Path, *args: str) -> str:
    done = subprocess.run([str(MLIR_OPT), *args, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def current_ir(server: str, benchmark: str, actions) -> tuple:
    """The server's IR and script after replaying `actions` on a fresh session (Python client)."""
    import mlir_rl

    with mlir_rl.make(benchmark, server=server, masked_actions="reject") as env:
        env.reset(options={"replay_actions": actions})
        exported = env.export_schedule()
    return exported["current_ir"], exported["transform_script"]


@pytest.mark.parametrize("strategy", ["random", "greedy", "beam", "local"])
def test_strategy_finds_schedule_writes_record_and_script_replays(server, tmp_path, strategy):
    budget = 10
    record = run_search(server, tmp_path / strategy, f"--benchmark={SMALL}", f"--strategy={strategy}",
                        f"--budget_evals={budget}", "--seed=1")
    assert record["benchmark"] == SMALL and record["strategy"] == strategy
    assert 1 <= record["evaluations"] <= budget
    assert record["budget"] == {"evaluations": budget, "seconds": 0}
    # The untransformed schedule is among those measured, so the best is at least as fast (same run).
    assert record["untransformed_ms"] > 0
    assert record["best_time_ms"] <= record["untransformed_ms"]
    assert record["best_speedup"] > 0 and record["reference_ms"] > 0
    assert record["flops"] > 0 and record["best_gflops"] > 0
    assert record["actions"] and len(record["descriptions"]) >= len(record["actions"])
    assert record["trace"][-1][2] == pytest.approx(record["best_speedup"])
    for key in ("wall_time_s", "server", "machine", "date", "client", "options"):
        assert key in record, key
    assert record["server"]["version"] and record["machine"]["cores"] >= 1
    script, payload = Path(record["transform_script"]), Path(record["payload"])
    assert script.read_text().startswith("module") and "rl.op" in payload.read_text()

    # The script replays with mlir-opt to the IR the server reaches with the same actions.
    if not MLIR_OPT.exists():
        pytest.skip(f"{MLIR_OPT} not installed")
    replayed = tmp_path / "replayed.mlir"
    replayed.write_text(mlir_opt(payload, f"--transform-preload-library=transform-library-paths={script}",
                                 "--transform-interpreter"))
    ir, server_script = current_ir(server, SMALL, record["actions"])
    assert server_script == script.read_text()
    expected = tmp_path / "expected.mlir"
    expected.write_text(ir)
    assert mlir_opt(replayed) == mlir_opt(expected)


def test_greedy_and_beam_beat_the_untransformed_matmul(server, tmp_path):
    for strategy in ("greedy", "beam"):
        record = run_search(server, tmp_path / strategy, "--benchmark=benchmark://nn-ops/matmul_128x128x128_f32",
                            f"--strategy={strategy}", "--budget_evals=12")
        assert "VECTORIZATION" in " ".join(record["descriptions"])
        assert record["best_speedup"] > 3, record  # vectorized: ~20-60x here; 3x even on a loaded machine


def test_wall_time_budget(server, tmp_path):
    budget_s = 3.0
    record = run_search(server, tmp_path / "timed", f"--benchmark={SMALL}", "--strategy=local", "--budget_evals=0",
                        f"--budget_s={budget_s}")
    assert record["evaluations"] >= 1
    # Checked before each batch of (at most --parallel) evaluations: one batch may run past it.
    assert record["wall_time_s"] < budget_s + 20
    assert record["budget"]["seconds"] == budget_s


def test_unknown_strategy_is_refused(server):
    done = run_cli("search", f"--server={server}", "--strategy=annealing")
    assert done.returncode == 2 and "unknown --strategy" in done.stderr


def test_replay_measures_given_schedules(server, tmp_path):
    """`replay` measures schedules written as the searches print them; the record's best schedule replays to itself."""
    bench = "--benchmark=benchmark://nn-ops/matmul_128x128x128_f32"
    done = run_cli("replay", f"--server={server}", bench, "--progress=off", f"--out={tmp_path / 'r'}",
                   "--schedule=T[8,32,1] V; (untransformed); T[0,0,64] T[8,16,1] V")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    lines = [line for line in done.stdout.splitlines() if " ms " in line and not line.startswith("replay ")]
    assert [line.split()[0] for line in lines] == ["T[8,32,1]", "(untransformed)", "T[0,0,64]"], done.stdout
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["strategy"] == "replay" and record["evaluations"] == 3
    assert record["best_schedule"] in ("T[8,32,1] V", "T[0,0,64] T[8,16,1] V"), record  # vectorized beats scalar
    assert record["best_speedup"] > 3, record
    # The record's schedule, replayed, is the same actions.
    again = run_cli("replay", f"--server={server}", bench, "--progress=off", f"--schedule={record['best_schedule']}",
                    f"--out={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again.json").read_text())["actions"] == record["actions"]


@pytest.mark.parametrize("schedule, message", [
    ("T[8,x,1] V", "'x' is not a non-negative integer"),
    ("T[8,12,1] V", "tile size 12 is not a choice"),
    ("Q V", "expected NOP, V, IMG2COL"),
    ("I99", "level pointer past"),
    ("", "replay needs --schedule"),
])
def test_replay_refuses_malformed_schedules(server, schedule, message):
    done = run_cli("replay", f"--server={server}", "--progress=off", f"--schedule={schedule}")
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_replay_reports_a_schedule_the_masks_refuse(server):
    # Vectorizing a 512-element-per-row matmul untiled is masked (beyond max_vector_elements): the server's answer is
    # a failure of that schedule, not of the command; the other schedule is still measured.
    done = run_cli("replay", f"--server={server}", "--progress=off",
                   "--benchmark=benchmark://nn-ops/matmul_128x128x128_f32", "--schedule=V; T[8,16,1] V")
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = [line for line in done.stdout.splitlines() if line.startswith(("V ", "T[8,16,1]"))]
    assert "FAILED invalid schedule" in first, done.stdout
    assert " ms " in second, done.stdout


# The heuristic policy used to leave a loop untiled when 8 or 16 did not divide it, so vectorization stayed masked
# and the tiled scalar code ran 4-28x slower than untransformed. Compared within one run (`--strategy=heuristic`
# measures the untransformed and the heuristic schedule), the fastest of up to three runs measuring afresh
# (`--evaluation_cache=bypass`): a kernel of a few microseconds varies by 30 % from one measurement to the next on a
# shared machine. The regression this guards against was 4-28x; a structural check (the schedule vectorizes) and 35 %
# of noise allowance keep the test from flaking on microsecond kernels (tight figures are the report's job).
HEURISTIC_CASES = [
    "nn-ops/relu_1x64x112x112_f32",
    "nn-ops/relu_1x512x7x7_f32",
    "nn-ops/relu_128x256_f64",
    "nn-ops/conv2d_nchw_1x64x58x58_64x64x3x3_s1_f32",
    "nn-ops/conv2d_nhwc_1x28x28x32_1x1x32x192_s1_f32",
    "nn-ops/batch_matmul_12x128x64x128_f32",
    "nn-ops/batch_matmul_12x197x64x197_f32",
    "nn-ops/maxpool_nchw_1x64x114x114_k3_s2_f32",  # the width's vector (strided reads) was 1.5x slower
]


@pytest.mark.parametrize("name", HEURISTIC_CASES)
def test_heuristic_never_slower_than_untransformed(server, tmp_path, name):
    uri = f"benchmark://{name}"
    heuristic, untransformed = [], []
    for attempt in range(3):
        record = run_search(server, tmp_path / f"h{attempt}", f"--benchmark={uri}", "--strategy=heuristic",
                            "--evaluation_cache=bypass")
        assert record["evaluations"] == 2 or record["heuristic_schedule"] == "(untransformed)"
        heuristic.append(record["heuristic_ms"])
        untransformed.append(record["untransformed_ms"])
        if min(heuristic) <= 1.35 * min(untransformed):
            break
    schedule = record["heuristic_schedule"]
    assert schedule == "(untransformed)" or "V" in schedule.split(), schedule
    assert min(heuristic) <= 1.35 * min(untransformed), (record["heuristic_schedule"], heuristic, untransformed)
    # The episode policy takes the same schedule.
    done = run_cli("episode", f"--server={server}", f"--benchmark={uri}", "--policy=heuristic")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "correct yes" in done.stdout
    vectorized = "VECTORIZATION" in done.stdout
    assert vectorized == ("V" in record["heuristic_schedule"].split()), done.stdout


def test_python_wrapper(server, tmp_path):
    import mlir_rl

    record = mlir_rl.search(SMALL, strategy="greedy", budget=4, server=server)
    assert record["evaluations"] <= 4 and record["best_speedup"] > 0
    assert record["transform_script_text"].startswith("module")
    assert "rl.op" in record["payload_text"]
    assert "transform_script" not in record  # the temporary files are gone
    kept = mlir_rl.search(SMALL, strategy="heuristic", server=server, out=tmp_path / "kept")
    assert Path(kept["transform_script"]).exists() and (tmp_path / "kept.json").exists()
    with pytest.raises(ValueError):
        mlir_rl.search(SMALL, strategy="annealing", server=server)


def test_greedy_tries_pack_on_a_transposed_matmul(server, tmp_path):
    """resnet18's classifier is a matmul_transpose_b (1x512 by 1000x512): PACK is legal on it and the search measures
    it (on a matrix-vector product the blocked transposition costs more than it saves, so it need not win)."""
    out = tmp_path / "fc"
    done = run_cli("search", f"--server={server}", f"--out={out}", "--progress=none", "--verbose",
                   "--benchmark=benchmark://models/resnet18_fc", "--strategy=greedy", "--budget_evals=40")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"greedy .* PACK ", done.stderr), done.stderr[-3000:]
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["best_time_ms"] <= record["untransformed_ms"]


@pytest.mark.parametrize("benchmark,schedule", [
    # After PACK, a panel of two blocks of the packed B first, then 8 rows of two vectors inside it.
    ("nn-ops/matmul_transpose_b_128x768x768_f32", "PACK T[0,2] T[8,0,1] V"),
    # B (768 x 768 f32, 2.25 MiB) exceeds 1 MiB: a block of 64 of k, then 8 rows peeled (197 = 24 * 8 + 5).
    ("nn-ops/matmul_197x768x768_f32", "T[0,0,64] PT[8,32,1] V"),
    # B of 1 MiB: no cache tile.
    ("nn-ops/matmul_512x512x512_f32", "T[8,32,1] V"),
    # An NCHW convolution (+ bias, residual, ReLU): IMG2COL first, then a block of k of the 1152 x 784 im2col matrix.
    ("models/resnet18_layer2_0_conv2", "PT[0,1,8,8] V PT[0,1,8,8] V PT[0,1,8,8] V IMG2COL T[0,0,0,64] PT[0,8,32,1] V"),
])
def test_heuristic_tiles_for_the_cache_where_the_vector_operand_is_large(server, tmp_path, benchmark, schedule):
    """Where the vector's operand exceeds 1 MiB, the heuristic's register tile comes after a cache tile: a panel of
    the packed operand's blocks after PACK, a block of k otherwise; the schedule is correct (checked by the server
    against the untransformed kernel), faster than untransformed, and its script replays with mlir-opt."""
    record = run_search(server, tmp_path / "h", f"--benchmark=benchmark://{benchmark}", "--strategy=heuristic")
    assert record["best_schedule"] == schedule, record["best_schedule"]
    assert record["failed_evaluations"] == 0
    assert record["best_speedup"] > 5, record
    mlir_opt(Path(record["payload"]), f"--transform-preload-library=transform-library-paths={record['transform_script']}",
             "--transform-interpreter")


def test_heuristic_splits_the_reduction_of_a_matrix_vector_product(server, tmp_path):
    """The same classifier has one row: the heuristic splits its k into lanes of partial sums (SPLIT_REDUCTION)
    instead of packing, and the schedule is correct (the server checks it against the untransformed kernel) and
    faster than untransformed. Greedy search offers SPLIT_REDUCTION too."""
    record = run_search(server, tmp_path / "h", "--benchmark=benchmark://models/resnet18_fc", "--strategy=heuristic")
    assert " SPLIT " in f" {record['best_schedule']} ", record["best_schedule"]
    assert any("SPLIT_REDUCTION op 0" in d and "into 16 lanes" in d for d in record["descriptions"])
    assert record["failed_evaluations"] == 0
    assert record["best_speedup"] > 1.5, record  # ~7x here: split 0.03 ms against 0.24 untransformed
    # The exported script replays with mlir-opt.
    mlir_opt(Path(record["payload"]), f"--transform-preload-library=transform-library-paths={record['transform_script']}",
             "--transform-interpreter")


def test_nchw_max_pool_vectorizes_channels(server, tmp_path):
    """A strided NCHW max pool: the heuristic's register tile is a vector of 8 channels by 2 outputs of the width (a
    vector along the width reads every other input element and measured slower than untransformed); greedy search
    offers the same tile to tiled fusion, which fuses the pool's fill. Both schedules are correct (the server checks
    them against the untransformed kernel) and the exported script replays with mlir-opt."""
    uri = "benchmark://nn-ops/maxpool_nchw_1x64x114x114_k3_s2_f32"
    record = run_search(server, tmp_path / "h", f"--benchmark={uri}", "--strategy=heuristic")
    assert record["heuristic_schedule"] == "T[0,8,1,2] V", record["heuristic_schedule"]
    assert record["failed_evaluations"] == 0
    out = tmp_path / "g"
    done = run_cli("search", f"--server={server}", f"--out={out}", "--progress=none", "--verbose", f"--benchmark={uri}",
                   "--strategy=greedy", "--budget_evals=30")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"greedy .* TF\[0,8,1,2\] V", done.stderr), done.stderr[-3000:]
    greedy = json.loads(Path(f"{out}.json").read_text())
    assert greedy["failed_evaluations"] == 0
    mlir_opt(Path(greedy["payload"]), f"--transform-preload-library=transform-library-paths={greedy['transform_script']}",
             "--transform-interpreter")


def test_greedy_fuses_a_depthwise_convolution_into_rows_of_its_consumer(server, tmp_path):
    """MobileNetV2's NCHW depthwise convolution cannot be vectorized; fused with its bias into a tile of rows of its
    ReLU6 (`TF[0,1,8]`: one channel, 8 rows) it runs ~10x faster than untransformed, ~3x faster than anything without
    fusion. The op's share of a 100-evaluation budget is small (ReLU6 has a ninth of the convolution's iterations), so
    greedy search must offer fusion among its first children: children are interleaved by kind."""
    out = tmp_path / "dw"
    done = run_cli("search", f"--server={server}", f"--out={out}", "--progress=none", "--verbose",
                   "--benchmark=benchmark://models/mobilenetv2_block3_depthwise", "--strategy=greedy",
                   "--budget_evals=100")
    assert done.returncode == 0, done.stderr[-3000:]
    times = {}  # schedule -> measured ms, from the verbose lines "  #N origin  T ms  ...  schedule"
    for line in done.stderr.splitlines():
        m = re.match(r"\s*#\d+ \w+\s+([0-9.]+) ms .*?spread [0-9.]+\s+(.*)$", line)
        if m:
            times[m.group(2)] = float(m.group(1))
    fused = {k: v for k, v in times.items() if k.startswith("TF[0,1,8]")}
    assert fused, done.stderr[-3000:]
    # Its speed is not asserted: ~10x faster than untransformed measured alone (docs/performance.md), but under the
    # sanitizers' build in CI it measured 5.6 ms against 3.6, and which schedule a noisy search ends at varies.
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["failed_evaluations"] == 0
    best = min(fused, key=fused.get)
    replay = run_cli("replay", f"--server={server}", "--benchmark=benchmark://models/mobilenetv2_block3_depthwise",
                     f"--schedule={best}", f"--out={tmp_path / 'fused'}", "--progress=off")
    assert replay.returncode == 0, replay.stderr[-3000:]
    fused_record = json.loads((tmp_path / "fused.json").read_text())
    assert any("fusing" in d and "depthwise_conv_2d_nchw_chw" in d for d in fused_record["descriptions"]), fused_record
    mlir_opt(Path(fused_record["payload"]),
             f"--transform-preload-library=transform-library-paths={fused_record['transform_script']}",
             "--transform-interpreter")


@pytest.mark.parametrize("benchmark,schedule", [
    # NHWC convolutions: rows of the output's width by a vector of filters by half a vector of input channels, the
    # kernel's width by 1 (a whole vector of channels left room for 2 rows and ran 2-3.5x slower).
    ("nn-ops/conv2d_nhwc_1x58x58x64_3x3x64x64_s1_f32", "T[0,0,4,16,0,1,8] V"),
    ("nn-ops/conv2d_nhwc_1x58x58x64_3x3x64x64_s1_f64", "T[0,0,8,8,0,1,4] V"),
    # After IMG2COL, 49 columns: not 32 of them (a ragged remainder of 17, 20x slower), and a vector along the
    # columns (peeled) rather than along the reduction (TILING's only choice, 49 having no power-of-2 divisor).
    ("nn-ops/conv2d_nchw_1x512x9x9_512x512x3x3_s1_f32", "IMG2COL PT[0,8,16,1] V"),
])
def test_heuristic_register_tile(server, tmp_path, benchmark, schedule):
    """The heuristic's register tile on convolutions where an earlier choice was 2-25x slower. Correct (checked by
    the server against the untransformed kernel), far faster than untransformed, replayed by mlir-opt."""
    record = run_search(server, tmp_path / "h", f"--benchmark=benchmark://{benchmark}", "--strategy=heuristic")
    assert record["heuristic_schedule"] == schedule, record["heuristic_schedule"]
    assert record["failed_evaluations"] == 0
    assert record["best_speedup"] > 10, record  # 40-90x measured
    mlir_opt(Path(record["payload"]), f"--transform-preload-library=transform-library-paths={record['transform_script']}",
             "--transform-interpreter")


@pytest.mark.parametrize("benchmark,schedule,fuses", [
    # The average pool's division fused with the pool into tiles of one vector of channels of one output (each op
    # vectorized alone was 1.4-2x slower; on a global pool, one output position, fusion does not pay and is not made).
    ("nn-ops/avgpool_nhwc_1x37x37x192_k3_s1_f32", "TF[0,1,1,16] V V", "linalg.pooling_nhwc_sum"),
    ("nn-ops/avgpool_nhwc_1x7x7x512_k7_s1_f32", "T[0,0,0,16] V T[0,0,0,16] V", None),
    # MobileNetV2's NCHW depthwise convolution (which MLIR cannot vectorize) and its bias fused into rows of ReLU6.
    ("models/mobilenetv2_block3_depthwise", "TF[0,1,8] PT[0,0,1,16] V PT[0,0,1,16] V",
     "linalg.depthwise_conv_2d_nchw_chw"),
    # Depthwise NHWC: 2 rows of the output's height outside the tile (untiled, vectorization's row loop walked the
    # whole image inside each tile: 2x slower).
    ("nn-ops/depthwise_nhwc_1x114x114x96_k3_s2_f32", "T[0,2,4,16] V", None),
])
def test_heuristic_fuses_memory_bound_producers(server, tmp_path, benchmark, schedule, fuses):
    """The heuristic's schedules for depthwise convolutions and poolings: the exact schedule, which fuses the producer
    where expected, is correct (checked by the server) and replays with mlir-opt. `--policy=heuristic` episodes take
    it too."""
    uri = f"benchmark://{benchmark}"
    record = run_search(server, tmp_path / "h", f"--benchmark={uri}", "--strategy=heuristic")
    assert record["heuristic_schedule"] == schedule, record["heuristic_schedule"]
    assert record["failed_evaluations"] == 0
    replay = run_cli("replay", f"--server={server}", f"--benchmark={uri}", f"--schedule={schedule}",
                     f"--out={tmp_path / 'r'}", "--progress=off")
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = json.loads((tmp_path / "r.json").read_text())
    assert replayed["failed_evaluations"] == 0
    fusing = [d for d in replayed["descriptions"] if "fusing" in d]
    if fuses:
        assert any(fuses in d for d in fusing), replayed["descriptions"]
    else:
        assert not fusing, replayed["descriptions"]
    mlir_opt(Path(replayed["payload"]),
             f"--transform-preload-library=transform-library-paths={replayed['transform_script']}",
             "--transform-interpreter")
    done = run_cli("episode", f"--server={server}", f"--benchmark={uri}", "--policy=heuristic")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "correct yes" in done.stdout
    assert ("TILED_FUSION" in done.stdout) == bool(fuses), done.stdout
