#!/usr/bin/python3
"""Times each benchmark's computation in PyTorch: the program benchmarks/tools/generate.py records next to the MLIR
(``generate.py --manifest``: conv2d, linear, softmax, layer_norm, einsum, ...), same shapes and dtype, one thread.

    /usr/bin/python3 tools/report/torch_bench.py --manifest M.json --benchmarks nn-ops/matmul_512x512x512_f32,... \\
        [--out torch.json] [--budget-s 2]

Run it pinned (``taskset -c N``) with ``OMP_NUM_THREADS=1``; the report (scripts/report.sh) does, with OpenBLAS on
``LD_LIBRARY_PATH``. Layouts a PyTorch model would hold its tensors in are prepared before timing, as a model's
parameters and activations already are: NHWC inputs become channels-last views, HWCF / HWC filters PyTorch's
FCHW / C1HW weights. Timing follows the server's: one warm-up that also sizes a batch so that a sample lasts at
least 1 ms, then samples until their relative interquartile range is at most 2 % (at least 5, at most 50, within the
budget); the median per call. Prints JSON: per benchmark ``ms`` (and samples, ok), plus the BLAS that serves
sgemm / dgemm and PyTorch's build.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f64": torch.float64}


def blas_in_use() -> dict:
    """The library that serves the BLAS symbols PyTorch calls (libblas.so.3 as the dynamic loader resolves it now)."""
    info = {"library": None, "resolved": None, "config": None}
    try:
        lib = ctypes.CDLL("libblas.so.3")

        class DlInfo(ctypes.Structure):
            _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                        ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

        dl = ctypes.CDLL(None)
        found = DlInfo()
        address = ctypes.cast(lib.sgemm_, ctypes.c_void_p)
        if dl.dladdr(address, ctypes.byref(found)):
            path = found.dli_fname.decode()
            info["library"] = path
            info["resolved"] = os.path.realpath(path)
        try:
            lib.openblas_get_config.restype = ctypes.c_char_p
            info["config"] = lib.openblas_get_config().decode()
        except AttributeError:
            info["config"] = "reference BLAS (no openblas_get_config)"
    except OSError as e:
        info["error"] = str(e)
    return info


def build(entry: dict, seed: int = 0):
    """(run, inputs): `run()` computes the benchmark's results from prepared inputs."""
    dtype = DTYPES[entry["dtype"]]
    g = torch.Generator().manual_seed(seed)
    values = {}
    for a in entry["args"]:
        values[a["name"]] = torch.rand(a["shape"], generator=g, dtype=DTYPES.get(a["dtype"], dtype)) * 2 - 1
    prepared = {}  # layouts PyTorch holds its parameters / activations in, made before timing

    def prepare(name, fn):
        if name in values and name not in prepared:
            prepared[name] = fn(values[name])

    steps = []
    for op in entry["program"]:
        kind, ins, out = op["op"], op["ins"], op["out"]
        if kind == "const":
            values[out] = torch.tensor(op["value"], dtype=dtype)
        elif kind in ("conv2d", "depthwise_conv2d") and op["layout"] == "nhwc":
            # Input NHWC -> a channels-last view; filter HWCF -> FCHW, or HWC -> C1HW for depthwise.
            prepare(ins[0], lambda t: t.permute(0, 3, 1, 2))
            if kind == "conv2d":
                prepare(ins[1], lambda t: t.permute(3, 2, 0, 1).contiguous())
            else:
                prepare(ins[1], lambda t: t.permute(2, 0, 1).unsqueeze(1).contiguous())
        elif kind == "depthwise_conv2d":
            prepare(ins[1], lambda t: t.unsqueeze(1).contiguous())  # CHW -> C1HW
        elif kind == "avg_pool2d" and op["layout"] == "nhwc":
            prepare(ins[0], lambda t: t.permute(0, 3, 1, 2))
        steps.append(op)

    def run():
        env = dict(values)
        for op in steps:
            kind, ins, out = op["op"], op["ins"], op["out"]
            if kind == "const":
                continue
            if kind == "conv2d":
                if op["layout"] == "nhwc":
                    x = prepared.get(ins[0]) if ins[0] in prepared else env[ins[0]].permute(0, 3, 1, 2)
                    w = prepared.get(ins[1]) if ins[1] in prepared else env[ins[1]].permute(3, 2, 0, 1)
                    y = F.conv2d(x, w, stride=op["stride"]).permute(0, 2, 3, 1)
                else:
                    y = F.conv2d(env[ins[0]], env[ins[1]], stride=op["stride"])
            elif kind == "depthwise_conv2d":
                if op["layout"] == "nhwc":
                    x = prepared.get(ins[0]) if ins[0] in prepared else env[ins[0]].permute(0, 3, 1, 2)
                    w = prepared.get(ins[1]) if ins[1] in prepared else env[ins[1]].permute(2, 0, 1).unsqueeze(1)
                    y = F.conv2d(x, w, stride=op["stride"], groups=x.shape[1]).permute(0, 2, 3, 1)
                else:
                    w = prepared.get(ins[1]) if ins[1] in prepared else env[ins[1]].unsqueeze(1)
                    y = F.conv2d(env[ins[0]], w, stride=op["stride"], groups=env[ins[0]].shape[1])
            elif kind in ("max_pool2d", "avg_pool2d"):
                pool = F.max_pool2d if kind == "max_pool2d" else F.avg_pool2d
                if op["layout"] == "nhwc":
                    x = prepared.get(ins[0]) if ins[0] in prepared else env[ins[0]].permute(0, 3, 1, 2)
                    y = pool(x, op["kernel"], op["stride"]).permute(0, 2, 3, 1)
                else:
                    y = pool(env[ins[0]], op["kernel"], op["stride"])
            elif kind == "relu":
                y = F.relu(env[ins[0]])
            elif kind == "relu6":
                y = F.relu6(env[ins[0]])
            elif kind == "gelu":
                y = F.gelu(env[ins[0]])
            elif kind == "bias_add":
                x, b = env[ins[0]], env[ins[1]]
                shape = [1] * x.dim()
                shape[op["channel_dim"]] = -1
                y = x + b.view(shape)
            elif kind == "add":
                y = env[ins[0]] + env[ins[1]]
            elif kind == "matmul":
                y = torch.mm(env[ins[0]], env[ins[1]])
            elif kind == "linear":
                y = F.linear(env[ins[0]], env[ins[1]])
            elif kind == "bmm":
                y = torch.bmm(env[ins[0]], env[ins[1]])
            elif kind == "softmax":
                x = env[ins[0]]
                y = F.softmax(x * op["scale"] if op.get("scale") is not None else x, dim=-1)
            elif kind == "layer_norm":
                x = env[ins[0]]
                y = F.layer_norm(x, x.shape[-1:], env[ins[1]], env[ins[2]], op["eps"])
            elif kind == "einsum":
                y = torch.einsum(op["equation"], *[env[n] for n in ins])
            elif kind == "pad":
                pads = []
                for lo, hi in reversed(list(zip(op["low"], op["high"]))):
                    pads += [lo, hi]
                y = F.pad(env[ins[0]], pads, value=op["value"])
            elif kind == "reshape":
                y = env[ins[0]].reshape(op["shape"])
            elif kind == "lincomb":
                y = sum(c * env[n] for c, n in zip(op["coefficients"], ins))
            else:
                raise ValueError(f"unknown op {kind!r} in the manifest")
            if list(y.shape) != op["shape"]:
                raise AssertionError(f"{kind}: shape {list(y.shape)}, the benchmark has {op['shape']}")
            env[out] = y
        return [env[r["name"]] for r in entry["results"]]

    return run


def time_it(run, budget_s: float) -> dict:
    """The server's protocol: warm-up sizing a batch of >= 1 ms, then 5..50 samples until IQR/median <= 2 %."""
    t0 = time.perf_counter()
    run()
    once = time.perf_counter() - t0
    batch = max(1, int(1e-3 / max(once, 1e-9)) + 1) if once < 1e-3 else 1
    samples = []
    start = time.perf_counter()
    while len(samples) < 50:
        t0 = time.perf_counter()
        for _ in range(batch):
            run()
        samples.append((time.perf_counter() - t0) / batch)
        if len(samples) >= 5:
            q = statistics.quantiles(samples, n=4)
            median = statistics.median(samples)
            if (q[2] - q[0]) / median <= 0.02 or time.perf_counter() - start > budget_s:
                break
    return {"ms": statistics.median(samples) * 1e3, "min_ms": min(samples) * 1e3, "samples": len(samples),
            "batch": batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--benchmarks", required=True, help="comma-separated dataset/name")
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--budget-s", type=float, default=2.0, help="timing budget per benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    manifest = json.load(open(args.manifest))["benchmarks"]
    results = {}
    with torch.no_grad():
        for name in [b for b in args.benchmarks.split(",") if b]:
            entry = manifest.get(name)
            if entry is None:
                results[name] = {"ok": False, "error": "not in the manifest"}
                continue
            try:
                run = build(entry)
                r = time_it(run, args.budget_s)
                r["ok"] = True
            except Exception as e:  # a failing op is reported, not fatal
                r = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            results[name] = r
            print(f"torch {name}: {r.get('ms', float('nan')):.4f} ms" if r["ok"] else f"torch {name}: {r['error']}",
                  file=sys.stderr)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas_in_use(),
           "mkldnn": torch.backends.mkldnn.is_available(), "affinity": sorted(os.sched_getaffinity(0)),
           "environment": {k: os.environ.get(k, "") for k in ("LD_LIBRARY_PATH", "OMP_NUM_THREADS",
                                                               "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")},
           "results": results}
    text = json.dumps(out, indent=1)
    if args.out:
        open(args.out, "w").write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
