"""Hostile input and long runs (issue 13): a regression test per defect found by probing the server, and the leases,
drain and frozen-worker behaviour that keep one request from ending everyone's run. Real server processes on
loopback; every test checks that the server still serves afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import CLIENT_DIR, start_server
from mlir_rl.v1 import env_pb2 as pb
from mlir_rl.v1 import env_pb2_grpc as rpc
from test_server import SMALL, TILING, VECTORIZATION, _children as children, action, code_and_message, reset

NOOP = pb.Action(values=[0] * 14)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def assert_serving(stub):
    """A fresh episode still works: the server survived whatever came before."""
    sid = reset(stub).session_id
    reply = stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]),
                      timeout=120)
    assert reply.terminated and reply.outcomes[-1].evaluation.correct
    stub.EndSession(pb.CloseRequest(session_id=sid), timeout=10)


@pytest.fixture()
def private_server(request):
    """A server of this test's own, with the flags of the test's `server_args` marker."""
    marker = request.node.get_closest_marker("server_args")
    proc = start_server(extra_args=list(marker.args) if marker else [])
    channel = grpc.insecure_channel(proc.address, options=[("grpc.max_send_message_length", 64 << 20)])
    yield proc, rpc.MlirRlEnvStub(channel)
    channel.close()
    proc.stop()


# --- Defect 1: deep nesting crashed a gRPC thread's stack --------------------------------------------------------

def test_deeply_nested_uploads_are_refused_before_parsing(stub):
    nested_modules = "module {" * 5000 + "}" * 5000
    regions = ("func.func @f() {\n" + "scf.execute_region {\n" * 10000 + "scf.yield\n}\n" * 10000 + "return\n}")
    for text in (nested_modules, regions):
        code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text), timeout=30)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "nest more than 64 levels" in msg, msg
        code, msg = code_and_message(stub.Reset, pb.ResetRequest(mlir=text), timeout=30)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "--max_upload_nesting" in msg, msg
    assert_serving(stub)


# --- Defect 2: rejected uploads were never freed -----------------------------------------------------------------

def test_rejected_uploads_leave_no_memory_behind(private_server):
    proc, stub = private_server
    assert_serving(stub)

    def upload(i: int, kib: int = 3 << 10) -> str:
        # A distinct large constant (its data is uniqued by MLIR for the life of its context) and a disallowed op.
        values = ", ".join(f"{(i * 7919 + k) % 100003}.25" for k in range(kib * 1024 // 14))
        n = values.count(",") + 1
        return (f"func.func @f(%a: tensor<{n}xf32>) -> tensor<{n}xf32> {{\n"
                f"  %c = arith.constant dense<[{values}]> : tensor<{n}xf32>\n"
                f"  %d = scf.execute_region -> tensor<{n}xf32> {{ scf.yield %c : tensor<{n}xf32> }}\n"
                f"  return %d : tensor<{n}xf32>\n}}")

    # Warm up: the scratch context is replaced every 64 MiB parsed, so its steady size is reached first.
    for i in range(25):
        code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=upload(i)), timeout=60)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "'scf.execute_region' is not allowed" in msg
    before = rss_bytes(proc.proc.pid)
    total = 0
    for i in range(25, 75):
        text = upload(i)
        total += len(text)
        code, _ = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text), timeout=60)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    grown = rss_bytes(proc.proc.pid) - before
    # Each rejected upload kept ~its constant's data (≈1/3 of its text) for good before; 50 of them ≈ 50 MiB.
    assert grown < total / 6, f"RSS grew {grown / 2**20:.1f} MiB over {total / 2**20:.0f} MiB of rejected uploads"
    assert_serving(stub)


# --- Defect 3: the tensor-size limit overflowed ------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["4294967296x4294967296", "9223372036854775807"])
def test_tensor_sizes_that_overflow_are_refused(stub, shape):
    text = f"func.func @k(%a: tensor<{shape}xf32>) -> tensor<{shape}xf32> {{ return %a : tensor<{shape}xf32> }}"
    code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text), timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "more than 2^63" in msg and "--max_tensor_mb" in msg, msg


# --- Defect 4: data-dependent indices read and wrote out of bounds ------------------------------------------------

OUT_OF_BOUNDS = """
func.func @lookup(%table: tensor<64xf32>, %idx: tensor<8xi32>) -> tensor<64xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %big = arith.constant 100000000 : i32
  %a = tensor.extract %idx[%c0] : tensor<8xi32>
  %far = arith.muli %a, %big : i32
  %i = arith.index_cast %far : i32 to index
  %v = tensor.extract %table[%i] : tensor<64xf32>
  %b = tensor.extract %idx[%c1] : tensor<8xi32>
  %neg = arith.subi %b, %big : i32
  %j = arith.index_cast %neg : i32 to index
  %w = tensor.insert %v into %table[%j] : tensor<64xf32>
  %e = tensor.empty() : tensor<64xf32>
  %r = linalg.add ins(%w, %table : tensor<64xf32>, tensor<64xf32>) outs(%e : tensor<64xf32>) -> tensor<64xf32>
  return %r : tensor<64xf32>
}
"""


def test_data_dependent_indices_stay_inside_their_tensors(stub):
    for seed in range(3):
        r = stub.Reset(pb.ResetRequest(mlir=OUT_OF_BOUNDS, seed=seed), timeout=60)
        reply = stub.Step(pb.StepRequest(session_id=r.session_id, actions=[NOOP]), timeout=120)
        assert reply.terminated
        ev = reply.outcomes[-1].evaluation
        assert ev.correct and ev.failure == "" and ev.failure_kind == pb.FAILURE_KIND_NONE, ev
    exported = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=r.session_id), timeout=30)
    assert "arith.minsi" in exported.benchmark_ir and "arith.maxsi" in exported.benchmark_ir
    assert_serving(stub)


# --- Defect 5: sessions and uploads never expired ------------------------------------------------------------------

@pytest.mark.server_args("--session_idle_timeout_s=1", "--max_sessions=4", "--evict_idle_after_s=0.5",
                         "--upload_idle_timeout_s=1")
def test_idle_sessions_and_uploads_expire(private_server):
    proc, stub = private_server
    abandoned = [reset(stub).session_id for _ in range(4)]  # a crashed trainer's sessions
    # The server is full, but the idlest session makes room once idle for 0.5 s.
    code, msg = code_and_message(reset, stub)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_sessions" in msg
    time.sleep(0.7)
    fresh = reset(stub).session_id
    code, msg = code_and_message(stub.Observe, pb.ObserveRequest(session_id=abandoned[0]), timeout=10)
    assert code == grpc.StatusCode.NOT_FOUND and "closed to make room" in msg, msg
    # Left alone for the idle timeout, the others expire; NOT_FOUND says so.
    time.sleep(1.6)
    code, msg = code_and_message(stub.Observe, pb.ObserveRequest(session_id=abandoned[1]), timeout=10)
    assert code == grpc.StatusCode.NOT_FOUND and "expired" in msg and "--session_idle_timeout_s" in msg, msg
    code, _ = code_and_message(stub.Observe, pb.ObserveRequest(session_id=fresh), timeout=10)
    assert code == grpc.StatusCode.NOT_FOUND
    # A session in use does not expire.
    alive = reset(stub).session_id
    for _ in range(6):
        stub.Observe(pb.ObserveRequest(session_id=alive), timeout=10)
        time.sleep(0.4)
    # Uploads no session uses expire too.
    up = stub.AddBenchmark(pb.AddBenchmarkRequest(mlir=OUT_OF_BOUNDS), timeout=60).benchmark.uri
    time.sleep(1.6)
    code, msg = code_and_message(reset, stub, up)
    assert code == grpc.StatusCode.NOT_FOUND and "expired" in msg, msg
    metrics = stub.GetMetrics(pb.GetMetricsRequest(), timeout=10).values
    assert metrics['mlir_rl_sessions_ended_total{reason="expired"}'] >= 3
    assert metrics['mlir_rl_sessions_ended_total{reason="evicted"}'] >= 1
    assert metrics["mlir_rl_uploads"] == 0


@pytest.mark.server_args("--max_sessions_per_client=3", "--max_uploads_per_client=1")
def test_one_client_cannot_take_every_session(private_server):
    proc, stub = private_server
    for _ in range(3):
        reset(stub)
    code, msg = code_and_message(reset, stub)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_sessions_per_client" in msg, msg
    stub.AddBenchmark(pb.AddBenchmarkRequest(mlir=OUT_OF_BOUNDS), timeout=60)
    code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=OUT_OF_BOUNDS + "\n"), timeout=60)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_uploads_per_client" in msg, msg


# --- Defect 6: SIGTERM did not drain -------------------------------------------------------------------------------

# Untransformed, one run of this takes seconds: its reference measurement keeps a Step busy.
SLOW = """
func.func @slow(%a: tensor<1024x1024xf32>, %b: tensor<1024x1024xf32>) -> tensor<1024x1024xf32> {
  %z = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1024x1024xf32>
  %c = linalg.fill ins(%z : f32) outs(%e : tensor<1024x1024xf32>) -> tensor<1024x1024xf32>
  %r = linalg.matmul ins(%a, %b : tensor<1024x1024xf32>, tensor<1024x1024xf32>) outs(%c : tensor<1024x1024xf32>)
      -> tensor<1024x1024xf32>
  %s = linalg.matmul ins(%r, %b : tensor<1024x1024xf32>, tensor<1024x1024xf32>) outs(%c : tensor<1024x1024xf32>)
      -> tensor<1024x1024xf32>
  return %s : tensor<1024x1024xf32>
}
"""


def health(address: str) -> bytes:
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        return check(b"", timeout=5)


def test_sigterm_drains_then_cancels_and_exits_in_time():
    proc = start_server(extra_args=["--drain_grace_s=2"])
    try:
        channel = grpc.insecure_channel(proc.address)
        stub = rpc.MlirRlEnvStub(channel)
        quick = reset(stub).session_id
        slow = stub.Reset(pb.ResetRequest(mlir=SLOW), timeout=60).session_id
        result = {}

        def evaluate():
            try:
                result["reply"] = stub.Step(pb.StepRequest(session_id=slow, actions=[NOOP, NOOP]), timeout=300)
            except grpc.RpcError as e:
                result["error"] = e

        t = threading.Thread(target=evaluate)
        t.start()
        time.sleep(1.0)  # the reference is being measured now
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Draining: health says NOT_SERVING (2), new sessions are refused, existing sessions still step.
        assert health(proc.address) == b"\x08\x02"
        code, msg = code_and_message(reset, stub)
        assert code == grpc.StatusCode.UNAVAILABLE and "draining" in msg
        step = stub.Step(pb.StepRequest(session_id=quick, actions=[action(TILING, [8, 16, 1])]), timeout=10)
        assert step.outcomes[0].applied
        t.join(timeout=30)
        assert not t.is_alive()
        # The slow evaluation outlived the grace period: cancelled, its step undone and answered UNAVAILABLE.
        assert "error" in result and result["error"].code() == grpc.StatusCode.UNAVAILABLE, result
        assert "shutting down" in result["error"].details()
        proc.proc.wait(timeout=15)
        elapsed = time.monotonic() - start
        assert proc.proc.returncode == 0 and elapsed < 8, (proc.proc.returncode, elapsed)
        channel.close()
    finally:
        proc.stop()


# --- Defect 7: a frozen worker ignored the deadline ----------------------------------------------------------------

def big_upload(kib: int) -> str:
    # A module whose text (and so each request frame to a worker) is larger than a pipe's buffer.
    values = ", ".join(f"{k % 977}.5" for k in range(kib * 1024 // 7))
    n = values.count(",") + 1
    return (f"func.func @big(%a: tensor<{n}xf32>) -> tensor<{n}xf32> {{\n"
            f"  %c = arith.constant dense<[{values}]> : tensor<{n}xf32>\n  %e = tensor.empty() : tensor<{n}xf32>\n"
            f"  %r = linalg.add ins(%a, %c : tensor<{n}xf32>, tensor<{n}xf32>) outs(%e : tensor<{n}xf32>)"
            f" -> tensor<{n}xf32>\n  return %r : tensor<{n}xf32>\n}}")


@pytest.mark.server_args("--workers=1")
def test_a_frozen_worker_cannot_hold_a_call_past_its_deadline(private_server):
    proc, stub = private_server
    assert_serving(stub)  # the worker exists
    workers = children(proc.proc.pid)
    assert len(workers) == 1
    sid = stub.Reset(pb.ResetRequest(mlir=big_upload(1536)), timeout=120).session_id
    os.kill(workers[0], signal.SIGSTOP)
    try:
        start = time.monotonic()
        code, _ = code_and_message(stub.Step, pb.StepRequest(session_id=sid, actions=[NOOP]), timeout=4)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        # The server let go of the call (and of the session's lock) at the deadline: the session answers at once,
        # unchanged (the evaluating step was undone).
        observed = stub.Observe(pb.ObserveRequest(session_id=sid), timeout=3)
        assert observed.info.step == 0 and not observed.terminated
        assert time.monotonic() - start < 7.5
    finally:
        try:
            os.kill(workers[0], signal.SIGCONT)
        except ProcessLookupError:
            pass
    # A fresh worker evaluates the same step.
    reply = stub.Step(pb.StepRequest(session_id=sid, actions=[NOOP]), timeout=120)
    assert reply.terminated and reply.outcomes[0].evaluation.correct
    assert_serving(stub)


# --- Defect 8: many clients starting at once -----------------------------------------------------------------------

CLIENT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {client!r})
    import numpy as np
    import mlir_rl
    errors = 0
    with mlir_rl.make({benchmark!r}, server={server!r}, masked_actions="reject") as env:
        rng = np.random.default_rng(int(sys.argv[1]))
        steps = 0
        obs, info = env.reset(seed=int(sys.argv[1]) % 3)
        while steps < int(sys.argv[2]):
            masks = env.head_masks()
            a = [int(rng.choice(np.flatnonzero(m))) if m.any() else 0 for m in masks]
            obs, r, term, trunc, info = env.step(a)
            steps += 1
            if term or trunc:
                obs, info = env.reset(seed=steps % 3)
    print("ok", steps)
""")


def run_clients(address: str, n: int, steps: int, timeout: float):
    script = CLIENT.format(client=str(CLIENT_DIR), benchmark=SMALL, server=address)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(steps)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    failures = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            failures.append("timed out")
            continue
        if p.returncode != 0 or not out.startswith("ok"):
            failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    return failures


def test_64_clients_starting_at_once_all_connect(server):
    failures = run_clients(server, 64, 20, timeout=240)
    assert not failures, f"{len(failures)} of 64 clients failed: {failures[:3]}"


# --- Defect 9: smaller ones ------------------------------------------------------------------------------------

def raw_call(address: str, method: str, payload: bytes):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/mlir_rl.v1.MlirRlEnv/{method}", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            call(payload, timeout=10)
        return err.value.code(), err.value.details()


def test_requests_that_do_not_parse_say_why(server):
    # ResetRequest.benchmark (field 1) holding bytes that are not UTF-8.
    code, msg = raw_call(server, "Reset", b"\x0a\x02\xff\xfe")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'benchmark'" in msg and "UTF-8" in msg, msg
    # Nested: StepManyRequest.steps[0].session_id.
    step = b"\x0a\x03\xc3\x28\x41"
    code, msg = raw_call(server, "StepMany", b"\x0a" + bytes([len(step)]) + step)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'steps.session_id'" in msg, msg
    # Not protobuf at all.
    code, msg = raw_call(server, "Step", b"\xff\xff\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid mlir_rl.v1.StepRequest" in msg, msg


@pytest.mark.parametrize("value", [float("-inf"), float("nan"), float("inf")])
def test_penalties_must_be_finite(stub, value):
    for field in ("transform_penalty", "execution_penalty"):
        code, msg = code_and_message(reset, stub, options=pb.SessionOptions(**{field: value}))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in msg and "finite" in msg, msg


@pytest.mark.parametrize("name", ["malloc", "free", "memrefCopy", "printf", "_mlir_ciface_f", "__kmpc_fork_call"])
def test_kernels_named_after_runtime_symbols_are_refused(stub, name):
    text = f"func.func @{name}(%a: tensor<4xf32>) -> tensor<4xf32> {{ return %a : tensor<4xf32> }}"
    code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text), timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"@{name}" in msg, msg


# --- Found by fuzz_upload: MLIR 19's Linalg parser crashed on properties that are not a dictionary ---------------

@pytest.mark.parametrize("props", ["<5>", '<"x">', "<[1, 2]>"])
def test_structured_op_properties_that_are_not_a_dictionary_cannot_crash_the_server(stub, props):
    text = textwrap.dedent(f"""\
        func.func @k(%t: tensor<4xf32>) -> tensor<4xf32> {{
          %c = arith.constant 1.0 : f32
          %r = linalg.fill {props} ins(%c : f32) outs(%t : tensor<4xf32>) -> tensor<4xf32>
          return %r : tensor<4xf32>
        }}""")
    for call, request in ((stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text)), (stub.Reset, pb.ResetRequest(mlir=text))):
        code, msg = code_and_message(call, request, timeout=30)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "upload:3:" in msg and "not a dictionary" in msg, msg
    # The same op with a dictionary there is an upload like any other.
    reply = stub.AddBenchmark(pb.AddBenchmarkRequest(mlir=text.replace(props, "<{}>")), timeout=30)
    assert reply.benchmark.uri.startswith("benchmark://user/"), reply
    assert_serving(stub)
