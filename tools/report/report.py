#!/usr/bin/python3
"""The performance report: per benchmark, the reference time, the best time each search baseline finds within its
budget, speedup, GFLOP/s and fraction of the machine's peak, the bytes per second its arguments and results stream
and what bounds it (the FMA peak or the bandwidth at its working set), and the same computation in PyTorch; a
Markdown table,
a JSON file and PNG plots. Run through ``bash scripts/report.sh [--small]`` (which builds first); see
docs/results/README.md for what is measured and how.

One run does, in order:
1. the FMA peak and the read bandwidth per working set of one core (``mlir-rl-peak``, f32 and f64, 16 KiB to 1 GiB,
   pinned to ``--cpu``), with nothing else of ours running;
2. a fresh ``mlir-rl-server`` (evaluation workers pinned one per core, the server's default) and, per benchmark and
   strategy, ``mlir-rl-cli search`` with the evaluation budget (and wall-time cap); the strategies share the server,
   so a schedule another strategy measured is served from the evaluation cache (still counted in each budget);
3. per benchmark, side by side: its best schedule measured again alone (``mlir-rl-cli replay``) and the PyTorch
   program (``tools/report/torch_bench.py``, from ``generate.py --manifest``, one thread pinned to ``--cpu``,
   OpenBLAS on ``LD_LIBRARY_PATH``: the BLAS serving sgemm is looked up and reported), alternating ``--rounds``
   times, the medians compared: the machine's speed may drift between the start and the end of a run, not between
   two measurements seconds apart;
4. tables and plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))

STRATEGIES = ("random", "greedy", "beam", "local")
# A fixed set of single kernels besides the eval split, one or two per family.
NN_OPS = [
    "nn-ops/matmul_512x512x512_f32", "nn-ops/matmul_256x256x256_f64", "nn-ops/matmul_transpose_b_128x768x3072_f32",
    "nn-ops/batch_matmul_12x128x64x128_f32", "nn-ops/conv2d_nchw_1x64x58x58_64x64x3x3_s1_f32",
    "nn-ops/conv2d_nhwc_1x58x58x64_3x3x64x64_s1_f32", "nn-ops/depthwise_nhwc_1x58x58x144_k3_s1_f32",
    "nn-ops/maxpool_nchw_1x64x114x114_k3_s2_f32", "nn-ops/avgpool_nhwc_1x56x56x128_k2_s2_f32",
    "nn-ops/relu_1x64x112x112_f32", "nn-ops/add_128x768_f32", "nn-ops/gelu_128x3072_f32",
    "nn-ops/softmax_12x128x128_f32", "nn-ops/layernorm_128x768_f32",
]
SMALL = ["nn-ops/matmul_128x128x128_f32", "lqcd/baryon_2pt_matrix", "models/resnet18_layer4_0_downsample"]
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


def bound(flops: float, nbytes: int, peak_gflops: float, read_gbs: dict):
    """Which side of one core's roofline a kernel is on, "compute" or "memory" (None without the figures): its flops
    at the FMA peak against its arguments and results (`nbytes`) at the read bandwidth measured for the smallest
    working set that holds them (a kernel timed again and again on the same data streams them from the cache level
    they fit in; 1 GiB's when larger)."""
    if not peak_gflops or not read_gbs or not nbytes:
        return None
    ladder = sorted((int(k), v) for k, v in read_gbs.items())
    bandwidth = next((gbs for size, gbs in ladder if size >= nbytes), ladder[-1][1])
    return "memory" if nbytes / bandwidth > flops / peak_gflops else "compute"


def openblas_coretype() -> str:
    """The OpenBLAS kernels for this CPU's instruction set. OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels by CPU
    model, and on a VM that reports a generic "Intel Xeon Processor" (a Sapphire Rapids host) it fell back to
    Prescott's SSE3 kernels: PyTorch's matmul 512^3 took 7.1 ms instead of ~1.9. Chosen from the CPU flags instead
    (SkylakeX kernels on any AVX-512 CPU, Haswell's on AVX2), unless OPENBLAS_CORETYPE is set."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return ""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "SKYLAKEX"
    if {"avx2", "fma"} <= flags:
        return "HASWELL"
    return ""


def log(message: str) -> None:
    print(f"[report {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def family(name: str) -> str:
    dataset, bench = name.split("/", 1)
    if dataset == "nn-ops":
        m = re.match(r"(.*?)_\d", bench)
        return m.group(1) if m else bench
    if dataset in ("models", "models-full"):
        for net in ("resnet18", "vgg16", "mobilenetv2", "bert"):
            if bench.startswith(net):
                return net
    return dataset


def geomean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(open("/proc/meminfo").readline().split(":", 1)[1].split()[0])
        mem = f"{kib / 2 ** 20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"hostname": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_start": os.getloadavg()[0]}


class Server:
    def __init__(self, binary: Path, workdir: Path, extra=()):
        self.port_file = workdir / "port"
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(binary), "--port=0", f"--port_file={self.port_file}", "--cache_dir=", *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlir-rl-server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if text.isdigit():
                self.address = f"127.0.0.1:{text}"
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mlir-rl-server did not start listening within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_search(cli: Path, address: str, bench: str, strategy: str, args, out_prefix: Path) -> dict:
    cmd = [str(cli), "search", f"--server={address}", f"--benchmark=benchmark://{bench}", f"--strategy={strategy}",
           f"--budget_evals={args.budget}", f"--budget_s={args.budget_s}", f"--parallel={args.parallel}",
           f"--seed={args.seed}", f"--out={out_prefix}", "--progress=off"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_s * 3 + 1800 if args.budget_s
                          else 24 * 3600)
    path = Path(f"{out_prefix}.json")
    if not path.exists():
        return {"error": f"exit {done.returncode}: {done.stderr[-500:]}"}
    record = json.loads(path.read_text())
    if done.returncode != 0 and "error" not in record:
        record["error"] = f"exit {done.returncode}: {done.stderr[-500:]}"
    return record


def time_alone(cli: Path, address: str, bench: str, schedule: str, out_prefix: Path) -> dict:
    """The schedule measured again with nothing else running (`mlir-rl-cli replay --parallel=1`, the evaluation cache
    bypassed). A search's best time is the fastest of many noisy measurements, so it is biased low, and each was
    taken while the other worker ran another candidate. PyTorch runs alone too, right after it, so this is the time
    it is compared with (in the 2026-12-07 run on a Sapphire Rapids VM it was 0-30 % above the searches' best:
    matmul 512^3 1.17 ms in a search, 1.35 ms alone)."""
    cmd = [str(cli), "replay", f"--server={address}", f"--benchmark=benchmark://{bench}", f"--schedule={schedule}",
           "--parallel=1", "--evaluation_cache=bypass", f"--out={out_prefix}", "--progress=off"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    path = Path(f"{out_prefix}.json")
    record = json.loads(path.read_text()) if path.exists() else {}
    if done.returncode != 0 or not record.get("best_time_ms"):
        return {"error": f"exit {done.returncode}: {done.stderr[-500:]}"}
    return {"ms": record["best_time_ms"], "speedup": record.get("best_speedup")}


def torch_env() -> dict:
    """One thread; OpenBLAS (Debian's python3-torch falls back to the reference BLAS otherwise) with its kernels for
    this CPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if Path(OPENBLAS_DIR).is_dir():
        env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        if not env.get("OPENBLAS_CORETYPE") and openblas_coretype():
            env["OPENBLAS_CORETYPE"] = openblas_coretype()
    return env


def time_torch(manifest: Path, bench: str, args, out: Path) -> dict:
    """The benchmark's computation in PyTorch (torch_bench.py's JSON: the BLAS, PyTorch's build, the result), pinned
    to ``--cpu``."""
    done = subprocess.run(["taskset", "-c", str(args.cpu), sys.executable,
                           str(ROOT / "tools" / "report" / "torch_bench.py"), "--manifest", str(manifest),
                           "--benchmarks", bench, "--out", str(out), "--budget-s", str(args.torch_budget_s)],
                          env=torch_env(), capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        return {"error": done.stderr[-1000:], "results": {}}
    return json.loads(out.read_text())


def side_by_side(cli: Path, address: str, manifest: Path, row: dict, args, work: Path) -> dict:
    """The best schedule alone and PyTorch, alternating ``args.rounds`` times; the medians. Returns torch_bench's
    JSON of the last round with the median in its result."""
    stem = work / "runs" / row["name"].replace("/", "__")
    alone, torch_ms, torch_record, errors = [], [], {}, []
    for k in range(args.rounds):
        a = time_alone(cli, address, row["name"], row["best_schedule"], Path(f"{stem}__alone{k}"))
        if "ms" in a:
            alone.append(a["ms"])
        else:
            errors.append(a["error"])
        t = time_torch(manifest, row["name"], args, Path(f"{stem}__torch{k}.json"))
        result = t.get("results", {}).get(row["name"], {})
        if result.get("ok"):
            torch_ms.append(result["ms"])
            torch_record = t
        elif not torch_record:
            torch_record = t
    row["alone"] = {"ms": statistics.median(alone), "runs": alone} if alone else {"error": "; ".join(errors)}
    result = torch_record.get("results", {}).get(row["name"])
    if result is not None and torch_ms:
        result.update(ms=statistics.median(torch_ms), runs=torch_ms)
    return torch_record


def evals_to_within(trace, target_speedup, tolerance=0.10):
    """First evaluation whose best-so-far is within `tolerance` of the target speedup (None if never)."""
    for evaluation, _, speedup in trace:
        if speedup >= target_speedup / (1 + tolerance):
            return evaluation
    return None


def fmt_ms(v):
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_x(v):
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.2f}×" if v < 10 else f"{v:.1f}×" if v < 100 else f"{v:.0f}×"


def plots(rows, strategies, peak, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    families = sorted({r["family"] for r in rows})
    # Speedup per family and strategy (geometric mean over the family's benchmarks).
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(families) * len(strategies) / 2), 4.8))
    width = 0.8 / max(1, len(strategies))
    for i, s in enumerate(strategies):
        ys = [geomean([r["strategies"].get(s, {}).get("speedup") for r in rows if r["family"] == f]) for f in families]
        ax.bar([k + i * width for k in range(len(families))], ys, width, label=s)
    ax.set_xticks([k + width * (len(strategies) - 1) / 2 for k in range(len(families))])
    ax.set_xticklabels(families, rotation=40, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup over untransformed (geomean)")
    ax.set_title("Best schedule per strategy within the budget, by family")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "speedup_by_family.png", dpi=120)
    plt.close(fig)
    made.append("speedup_by_family.png")

    # Env vs PyTorch: PyTorch time / best env time (> 1: the env's schedule is faster).
    pts = [(r["name"], r["torch_ms"] / r["alone_ms"], r["family"]) for r in rows
           if r.get("torch_ms") and r.get("alone_ms")]
    if pts:
        pts.sort(key=lambda p: p[1])
        fig, ax = plt.subplots(figsize=(10, max(4, 0.22 * len(pts))))
        colors = {f: plt.cm.tab20(i % 20) for i, f in enumerate(families)}
        ax.barh(range(len(pts)), [p[1] for p in pts], color=[colors[p[2]] for p in pts])
        ax.set_yticks(range(len(pts)))
        ax.set_yticklabels([p[0] for p in pts], fontsize=6)
        ax.set_xscale("log")
        ax.axvline(1, color="black", lw=0.8)
        ax.set_xlabel("PyTorch time / best env time  (> 1: the searched schedule is faster)")
        ax.set_title("Searched schedules against PyTorch (one thread, same core)")
        fig.tight_layout()
        fig.savefig(out / "env_vs_pytorch.png", dpi=120)
        plt.close(fig)
        made.append("env_vs_pytorch.png")

    # Fraction of peak: best env schedule and PyTorch.
    pts = [r for r in rows if r.get("env_peak_fraction") is not None]
    if pts:
        pts.sort(key=lambda r: r["env_peak_fraction"])
        fig, ax = plt.subplots(figsize=(10, max(4, 0.22 * len(pts))))
        ys = range(len(pts))
        ax.scatter([100 * r["env_peak_fraction"] for r in pts], ys, label="best searched schedule", s=14)
        ax.scatter([100 * r["torch_peak_fraction"] if r.get("torch_peak_fraction") is not None else float("nan")
                    for r in pts], ys, label="PyTorch", marker="x", s=14)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([r["name"] for r in pts], fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel(f"% of one core's FMA peak (f32 {peak.get('f32_gflops', 0):.0f}, "
                      f"f64 {peak.get('f64_gflops', 0):.0f} GFLOP/s)")
        ax.legend(fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "fraction_of_peak.png", dpi=120)
        plt.close(fig)
        made.append("fraction_of_peak.png")

    # Search progress: median over benchmarks of best-so-far / best known, per evaluation.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    budget = max([st.get("evaluations") or 0 for r in rows for st in r["strategies"].values()], default=1)
    xs = list(range(1, max(2, budget) + 1))
    for s in strategies:
        curves = []
        for r in rows:
            st = r["strategies"].get(s)
            if not st or not st.get("trace") or not r.get("best_known_speedup"):
                continue
            curve, k, best = [], 0, 0.0
            for x in xs:
                while k < len(st["trace"]) and st["trace"][k][0] <= x:
                    best = st["trace"][k][2]
                    k += 1
                curve.append(best / r["best_known_speedup"])
            curves.append(curve)
        if curves:
            ax.plot(xs, [statistics.median(c[i] for c in curves) for i in range(len(xs))], label=s)
    ax.axhline(1 / 1.1, color="grey", ls="--", lw=0.8, label="within 10 % of best known")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best so far / best known (median)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "search_progress.png", dpi=120)
    plt.close(fig)
    made.append("search_progress.png")
    return made


def markdown(report: dict, images) -> str:
    m, peak, rows, strategies = report["machine"], report["peak"], report["rows"], report["strategies"]
    t = report["torch"]
    blas = t.get("blas", {})
    lines = [f"# Performance report{' (small configuration)' if report['small'] else ''}", "",
             f"Measured {report['date']} on `{m['hostname']}`: {m['cpu']}, {m['cores']} cores, {m['memory']}, "
             f"Linux {m['kernel']}; load average {m['loadavg_start']:.1f} at the start, {m['loadavg_end']:.1f} at the "
             f"end{' — **the machine was shared** with other work, so times are noisy' if report['shared'] else ''}.",
             f"Command: `{report['command']}` ({report['wall_time_s'] / 60:.1f} min). mlir-rl {report['server']['server_version']}, "
             f"MLIR {report['server']['mlir_version']}, host CPU `{report['server']['host_cpu']}`.", "",
             "**How it was measured.** Each search (`mlir-rl-cli search`) ran against one fresh `mlir-rl-server` whose "
             "evaluation workers are pinned one per core; a candidate is timed by the server (median of 5–50 runs "
             f"until the interquartile range is ≤ 2 %), one OpenMP thread. Budget: {report['budget']} evaluations "
             f"per benchmark and strategy" + (f", at most {report['budget_s']:.0f} s" if report['budget_s'] else "") +
             ". Speedups are over the untransformed benchmark (the server's reference time). "
             f"The FMA peak (`mlir-rl-peak`: f32 {peak['f32_gflops']:.1f}, f64 {peak['f64_gflops']:.1f} GFLOP/s, "
             f"best of {', '.join(peak.get('kernels', {}))}) ran pinned to CPU {report['cpu']} before the server started. "
             f"PyTorch {t.get('torch', '?')} ran pinned to CPU {report['cpu']} with one thread, the server idle, "
             f"alternating with its benchmark's best schedule measured alone ({report.get('rounds', 1)} rounds each, "
             "medians compared), so a drift of the machine's speed during the run does not enter the ratio. "
             f"PyTorch's BLAS: `{blas.get('resolved')}` ({blas.get('config')}), loaded through "
             f"`LD_LIBRARY_PATH={t.get('environment', {}).get('LD_LIBRARY_PATH', '')}`" +
             (f" with `OPENBLAS_CORETYPE={t['environment']['OPENBLAS_CORETYPE']}` (its kernels for this CPU's "
              "instruction set: OpenBLAS 0.3.21 picks them by CPU model and fell back to SSE3 ones on a VM that "
              "hides the model)" if t.get("environment", {}).get("OPENBLAS_CORETYPE") else "") +
             "; convolutions go through "
             f"oneDNN (mkldnn available: {t.get('mkldnn')}). PyTorch runs the same computation as each benchmark "
             "(`generate.py --manifest`: conv2d, linear, softmax, einsum, ...), tensors in the layout a model holds "
             "them, timed like the server's candidates.", ""]
    # Summary per strategy.
    lines += ["## Strategies", "",
              "| strategy | geomean speedup | benchmarks within 10 % of the best known | median evaluations to get "
              "there | failed searches |", "|---|---|---|---|---|"]
    for s in strategies:
        sp = [r["strategies"].get(s, {}).get("speedup") for r in rows]
        within = [r["strategies"].get(s, {}).get("within_10pct") for r in rows]
        evals = [r["strategies"].get(s, {}).get("evals_to_10pct") for r in rows]
        evals = [e for e in evals if e is not None]
        failed = sum(1 for r in rows if r["strategies"].get(s, {}).get("error"))
        lines.append(f"| {s} | {fmt_x(geomean(sp))} | {sum(1 for w in within if w)} / {len(rows)} | "
                     f"{statistics.median(evals) if evals else '–'} | {failed} |")
    lines += ["", "Best known = the fastest schedule any strategy found in this run. "
              "`evaluations to get there` counts from the first evaluation (the untransformed and the heuristic's "
              "schedule come first in every strategy but random).", ""]
    # Per benchmark.
    head = "| benchmark | dtype | GFLOP | reference ms | " + " | ".join(strategies) + \
           " | best alone ms | GFLOP/s | % peak | GB/s | bound | PyTorch ms | PyTorch GFLOP/s | env vs PyTorch |"
    lines += ["## Per benchmark", "", "Best time in ms (speedup over the reference) per strategy; **bold**: best known.",
              "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = []
        for s in strategies:
            st = r["strategies"].get(s, {})
            if st.get("time_ms") is None:
                cells.append("failed" if st.get("error") else "–")
                continue
            text = f"{fmt_ms(st['time_ms'])} ({fmt_x(st.get('speedup'))})"
            cells.append(f"**{text}**" if st["time_ms"] == r["best_ms"] else text)
        ratio = r["torch_ms"] / r["alone_ms"] if r.get("torch_ms") and r.get("alone_ms") else None
        tail = "| – | – | – | – | – | – | – | – |"
        if r.get("best_gflops") is not None:
            frac, gbs = r.get("env_peak_fraction"), r.get("best_gbs")
            tail = f"| {fmt_ms(r['alone_ms'])} " + \
                   (f"| {r['best_gflops']:.3g} | {100 * frac:.1f} " if frac is not None else f"| {r['best_gflops']:.3g} | – ") + \
                   f"| {f'{gbs:.3g}' if gbs else '–'} | {r.get('bound') or '–'} " + \
                   f"| {fmt_ms(r.get('torch_ms'))} | {(r.get('torch_gflops') or float('nan')):.3g} | " \
                   f"{fmt_x(ratio) if ratio else '–'} |"
        lines.append(f"| {r['name']} | {r['dtype']} | {r['flops'] / 1e9:.3g} | {fmt_ms(r['reference_ms'])} | " +
                     " | ".join(cells) + " " + tail)
    lines += ["", "`best alone ms`: the best schedule measured again with nothing else running (a search's best is "
              "the fastest of many noisy measurements, each taken while the other worker ran another candidate), "
              "alternating with PyTorch; the median of the rounds. GFLOP/s, % peak and `env vs PyTorch` (PyTorch "
              "time / best alone time, medians; > 1×: the searched schedule is faster) use it. `GB/s`: the bytes of "
              "the benchmark's arguments and results (what any schedule reads and writes at least, per run) over that "
              "time. `bound`: which side of one core's roofline the kernel is on, its flops at the FMA peak against "
              "those bytes at the read bandwidth `mlir-rl-peak` measured for the smallest working set that holds them" +
              (" (" + ", ".join(f"{k >> 30} GiB: {v:.0f}" if k >= 1 << 30 else
                                f"{k >> 20} MiB: {v:.0f}" if k >= 1 << 20 else f"{k >> 10} KiB: {v:.0f}"
                                for k, v in sorted((int(k), v) for k, v in peak["read_gbs"].items())
                                if k in (32 << 10, 1 << 20, 16 << 20, 1 << 30)) + " GB/s)"
               if peak.get("read_gbs") else "") +
              ". A memory-bound kernel (a matrix-vector product, an elementwise op, a pooling) cannot reach the FMA "
              "peak; its GB/s is the figure to read, against the bandwidth of the level its data lives in (kernels "
              "timed again and again on the same inputs find them in cache, so their GB/s can exceed the memory's, "
              "and a rung of the ladder reads only: a kernel that reads and writes at once may pass it).",
              ""]
    # Families.
    fams = sorted({r["family"] for r in rows})
    lines += ["## Per family (geometric means)", "", "| family | benchmarks | " + " | ".join(strategies) +
              " | env vs PyTorch |", "|---|---|" + "---|" * (len(strategies) + 1)]
    for f in fams:
        rs = [r for r in rows if r["family"] == f]
        cells = [fmt_x(geomean([r["strategies"].get(s, {}).get("speedup") for r in rs])) for s in strategies]
        ratio = geomean([r["torch_ms"] / r["alone_ms"] for r in rs if r.get("torch_ms") and r.get("alone_ms")])
        lines.append(f"| {f} | {len(rs)} | " + " | ".join(cells) + f" | {fmt_x(ratio)} |")
    lines += [""] + [f"![{i}]({i})" for i in images] + [""]
    lines += ["Raw per-search records: `report.json` (`rows[].strategies[].record`: schedule, trace of the best "
              "speedup per evaluation, server and machine)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="three small benchmarks, budget 8: a few minutes (CI)")
    p.add_argument("--out", help="output directory (default docs/results, or build/report-small with --small)")
    p.add_argument("--build", default=os.environ.get("MLIR_RL_BUILD_DIR", "build"), help="build directory")
    p.add_argument("--budget", type=int, help="evaluations per search (default 200; 8 with --small)")
    p.add_argument("--budget-s", type=float, help="wall-time cap per search in s (default 900; 60 with --small)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--datasets", default="models,lqcd", help="datasets taken whole (add models-full to include it)")
    p.add_argument("--nn-ops", default=",".join(NN_OPS), help="nn-ops kernels (dataset/name, comma-separated)")
    p.add_argument("--benchmarks", help="exactly these benchmarks (dataset/name, comma-separated)")
    p.add_argument("--cpu", type=int, default=0, help="CPU the peak kernel and PyTorch are pinned to")
    p.add_argument("--parallel", type=int, default=2, help="evaluations a search runs at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-budget-s", type=float, default=2.0)
    p.add_argument("--rounds", type=int, help="best schedule alone / PyTorch alternations per benchmark (default 3; "
                   "1 with --small)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (search records, scripts, logs)")
    args = p.parse_args()
    if args.budget is None:
        args.budget = 8 if args.small else 200
    if args.budget_s is None:
        args.budget_s = 60.0 if args.small else 900.0
    if args.rounds is None:
        args.rounds = 1 if args.small else 3
    out = Path(args.out) if args.out else (ROOT / args.build / "report-small" if args.small else ROOT / "docs" / "results")
    out.mkdir(parents=True, exist_ok=True)
    bindir = (ROOT / args.build / "bin").resolve()
    server_bin, cli, peak_bin = bindir / "mlir-rl-server", bindir / "mlir-rl-cli", bindir / "mlir-rl-peak"
    for b in (server_bin, cli, peak_bin):
        if not b.exists():
            log(f"{b} is missing: build first (bash scripts/build.sh)")
            return 2
    strategies = [s for s in args.strategies.split(",") if s]
    started = time.time()
    report = {"small": args.small, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_info(),
              "budget": args.budget, "budget_s": args.budget_s, "strategies": strategies, "cpu": args.cpu,
              "rounds": args.rounds,
              "command": " ".join(["bash scripts/report.sh"] + [shlex.quote(a) for a in sys.argv[1:]])}
    work = Path(tempfile.mkdtemp(prefix="mlir-rl-report-"))
    manifest = work / "manifest.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tools" / "generate.py"), "--manifest", str(manifest)],
                   check=True, capture_output=True)

    # 1. Peak, nothing else of ours running.
    log(f"FMA peak of CPU {args.cpu}")
    peak = json.loads(subprocess.run([str(peak_bin), f"--cpu={args.cpu}", "--repeats=10", "--seconds=0.1"],
                                     check=True, capture_output=True, text=True).stdout)
    report["peak"] = peak

    # 2. Searches.
    server = Server(server_bin, work)
    try:
        import mlir_rl

        infos = {f"{b['dataset']}/{b['name']}": b for b in mlir_rl.list_benchmarks(server=server.address)}
        report["server"] = mlir_rl.version(server=server.address)
        if args.benchmarks:
            names = [b for b in args.benchmarks.split(",") if b]
        elif args.small:
            names = list(SMALL)
        else:
            datasets = [d for d in args.datasets.split(",") if d]
            names = sorted(n for n, b in infos.items() if b["dataset"] in datasets)
            names = [n for n in args.nn_ops.split(",") if n] + names
        missing = [n for n in names if n not in infos]
        if missing:
            raise SystemExit(f"unknown benchmarks: {', '.join(missing)}")
        log(f"{len(names)} benchmarks x {len(strategies)} strategies, budget {args.budget} evaluations "
            f"(at most {args.budget_s:.0f} s each), server {server.address}")
        rows = []
        for i, name in enumerate(names):
            info = infos[name]
            row = {"name": name, "family": family(name), "dtype": info["dtype"], "flops": info["flops"],
                   "io_bytes": info["bytes"], "num_ops": info["num_ops"], "strategies": {}}
            for s in strategies:
                prefix = work / "runs" / f"{name.replace('/', '__')}__{s}"
                prefix.parent.mkdir(parents=True, exist_ok=True)
                record = run_search(cli, server.address, name, s, args, prefix)
                entry = {"record": record}
                if record.get("best_time_ms") is not None:
                    entry.update(time_ms=record["best_time_ms"], speedup=record["best_speedup"],
                                 evaluations=record["evaluations"], trace=record.get("trace", []),
                                 schedule=record.get("best_schedule"), wall_s=record.get("wall_time_s"))
                if record.get("error"):
                    entry["error"] = record["error"]
                row["strategies"][s] = entry
                row["reference_ms"] = record.get("reference_ms") or row.get("reference_ms")
                log(f"[{i + 1}/{len(names)}] {name} {s}: " +
                    (f"{entry['time_ms']:.4g} ms, {entry['speedup']:.2f}x, {entry['evaluations']} evals, "
                     f"{entry['wall_s']:.0f} s" if "time_ms" in entry else f"failed: {entry.get('error')}"))
            rows.append(row)
        # 3. Each benchmark's best schedule alone and PyTorch, side by side (the server idle, PyTorch pinned).
        log(f"best schedules alone and PyTorch on CPU {args.cpu}, alternating {args.rounds} times")
        torch_meta, torch_results = {}, {}  # torch_bench's description of PyTorch and its BLAS; per benchmark
        for row in rows:
            done = [st for st in row["strategies"].values() if st.get("time_ms")]
            if done:
                row["best_schedule"] = min(done, key=lambda st: st["time_ms"])["schedule"]
                t = side_by_side(cli, server.address, manifest, row, args, work)
            else:
                t = time_torch(manifest, row["name"], args, work / "runs" / (row["name"].replace("/", "__") +
                                                                            "__torch.json"))
            if not torch_meta or "error" in torch_meta:
                torch_meta = {k: v for k, v in t.items() if k != "results"}
            torch_results.update(t.get("results", {}))
            r = torch_results.get(row["name"], {})
            log(f"{row['name']}: best schedule alone " +
                (f"{row['alone']['ms']:.4g} ms" if "ms" in row.get("alone", {}) else str(row.get("alone"))) +
                ", PyTorch " + (f"{r['ms']:.4g} ms" if r.get("ok") else f"failed: {t.get('error', '')[-300:]}"))
        report["torch"] = {**torch_meta, "results": torch_results}
    finally:
        server.stop()

    # 4. Figures.
    for r in rows:
        times = [st["time_ms"] for st in r["strategies"].values() if st.get("time_ms")]
        r["best_ms"] = min(times) if times else None
        best_speedup = max([st["speedup"] for st in r["strategies"].values() if st.get("speedup")], default=None)
        r["best_known_speedup"] = best_speedup
        for st in r["strategies"].values():
            if st.get("time_ms") and r["best_ms"]:
                st["within_10pct"] = st["time_ms"] <= 1.10 * r["best_ms"]
                st["evals_to_10pct"] = evals_to_within(st.get("trace", []), best_speedup)
        pk = peak.get(f"{r['dtype']}_gflops") or 0
        # Compared with PyTorch and the peak: the best schedule's time alone (its search time if that failed).
        r["alone_ms"] = r.get("alone", {}).get("ms") or r["best_ms"]
        r["bound"] = bound(r["flops"], r["io_bytes"], pk, peak.get("read_gbs", {}))
        if r["alone_ms"]:
            r["best_gflops"] = r["flops"] / r["alone_ms"] / 1e6
            r["env_peak_fraction"] = r["best_gflops"] / pk if pk else None
            r["best_gbs"] = r["io_bytes"] / r["alone_ms"] / 1e6 if r["io_bytes"] else None
        t = report["torch"].get("results", {}).get(r["name"], {})
        if t.get("ok"):
            r["torch_ms"] = t["ms"]
            r["torch_gflops"] = r["flops"] / t["ms"] / 1e6
            r["torch_peak_fraction"] = r["torch_gflops"] / pk if pk else None
    report["rows"] = rows
    report["machine"]["loadavg_end"] = os.getloadavg()[0]
    report["shared"] = max(report["machine"]["loadavg_start"], report["machine"]["loadavg_end"]) > 0.5 * (
        os.cpu_count() or 1)
    report["wall_time_s"] = time.time() - started
    images = plots(rows, strategies, peak, out)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report, images))
    log(f"wrote {out / 'report.md'}, report.json and {len(images)} plots in {report['wall_time_s'] / 60:.1f} min")
    if args.keep:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
