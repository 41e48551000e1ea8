"""Protocol-level end-to-end tests of mlir-rl-server: raw gRPC stubs against the real binary on loopback.

Every class of bad input gets a precise status and message, and the server and the session keep working after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import server_binary, start_server
from mlir_rl.v1 import env_pb2 as pb
from mlir_rl.v1 import env_pb2_grpc as rpc

SMALL = "benchmark://nn-ops/matmul_64x64x64_f32"
TILING, TILED_PARALLELIZATION, INTERCHANGE, VECTORIZATION = 1, 2, 3, 4
TILED_FUSION, IMG2COL, UNROLL = 5, 6, 7
TILE = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5, 32: 6, 64: 7}  # tile size -> head value with default options


def action(kind: int, sizes=(), pointer: int = 0, unroll: int = 0) -> pb.Action:
    """[type, tile_0..tile_11, interchange]; UNROLL's factor goes in the last tile head (tile_11)."""
    tiles = [TILE[s] for s in sizes] + [0] * (12 - len(sizes))
    if unroll:
        tiles[11] = TILE[unroll]
    return pb.Action(values=[kind] + tiles + [pointer])


def code_and_message(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code(), err.value.details()


def reset(stub, benchmark=SMALL, **kwargs):
    return stub.Reset(pb.ResetRequest(benchmark=benchmark, **kwargs), timeout=120)


def test_health_service_reports_serving(server):
    channel = grpc.insecure_channel(server)
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    # HealthCheckRequest{} is empty; HealthCheckResponse{status: SERVING (1)} encodes as field 1 varint 1.
    assert check(b"", timeout=10) == b"\x08\x01"
    # HealthCheckRequest{service: "..."}: field 1, length-delimited.
    def named(service: str) -> bytes:
        return b"\x0a" + bytes([len(service)]) + service.encode()
    assert check(named("mlir_rl.v1.MlirRlEnv"), timeout=10) == b"\x08\x01"
    with pytest.raises(grpc.RpcError) as err:
        check(named("no.such.Service"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "no.such.Service" in err.value.details()
    channel.close()


def test_version_and_spaces_describe_themselves(stub):
    version = stub.GetVersion(pb.GetVersionRequest(), timeout=10)
    assert version.protocol_version == "v1"
    assert version.mlir_version.startswith("19.")
    spaces = stub.GetSpaces(pb.GetSpacesRequest(options=pb.SessionOptions(max_loops=6)), timeout=10)
    md = spaces.action_space.multi_discrete
    assert list(md.head_names) == ["type"] + [f"tile_{i}" for i in range(6)] + ["interchange"]
    assert list(md.nvec) == [11] + [8] * 6 + [6]
    assert list(md.type_names) == ["NO_TRANSFORMATION", "TILING", "TILED_PARALLELIZATION", "INTERCHANGE",
                                   "VECTORIZATION", "TILED_FUSION", "IMG2COL", "UNROLL", "PEELED_TILING", "PACK",
                                   "SPLIT_REDUCTION"]
    swaps = stub.GetSpaces(pb.GetSpacesRequest(options=pb.SessionOptions(
        interchange_mode=pb.INTERCHANGE_MODE_SWAPS)), timeout=10).action_space.multi_discrete
    assert list(swaps.nvec) == [11] + [8] * 12 + [30]  # 3L - 6 swaps of loops 1-3 apart
    assert list(md.tile_sizes) == [0, 1, 2, 4, 8, 16, 32, 64]
    names = [s.name for s in spaces.observation_space]
    assert "mask_type" in names and "loop_bounds" in names
    # Each head's mask, and the types that read it (only those heads are checked).
    masks = {(m.head, m.tensor): (m.row, list(m.types)) for m in md.head_masks}
    assert masks[("type", "mask_type")] == (-1, list(range(11)))
    assert masks[("tile_0", "mask_tiles")] == (0, [1, 2, 5])
    assert masks[("tile_5", "mask_tiles")] == (5, [1, 2, 5])
    assert masks[("tile_5", "mask_unroll")] == (-1, [7])  # UNROLL's factor in the last tile head
    assert masks[("tile_0", "mask_tiles_peeled")] == (0, [8])  # PEELED_TILING: sizes that need not divide
    assert masks[("interchange", "mask_interchange")] == (-1, [3])
    assert set(names) >= {t for _, t in masks}


@pytest.mark.parametrize("program", ["mlir-rl-server", "mlir-rl-runner", "mlir-rl-cli"])
def test_version_flag_names_mlir_rl_and_agrees_with_get_version(stub, program):
    binary = server_binary().parent / program
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    version = stub.GetVersion(pb.GetVersionRequest(), timeout=10)
    line = out.stdout.strip()
    # e.g. "mlir-rl-server 0.1.0 (protocol v1, MLIR/LLVM 19.1.7, release build)": not Abseil's own build type.
    assert line.startswith(f"{program} {version.server_version} (protocol {version.protocol_version}"), line
    assert f"MLIR/LLVM {version.mlir_version}" in line, line
    assert "NDEBUG" not in line


@pytest.mark.parametrize("program", ["mlir-rl-server", "mlir-rl-runner", "mlir-rl-cli"])
def test_help_lists_the_programs_own_flags(program):
    binary = server_binary().parent / program
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    assert "No flags matched" not in text
    own = {"mlir-rl-server": "--session_idle_timeout_s", "mlir-rl-runner": "--sandbox_selftest",
           "mlir-rl-cli": "--token"}[program]
    assert own in text, text[:500]


def test_unknown_and_malformed_benchmarks(stub):
    code, msg = code_and_message(reset, stub, "benchmark://nn-ops/does_not_exist")
    assert code == grpc.StatusCode.NOT_FOUND and "does_not_exist" in msg
    code, msg = code_and_message(reset, stub, "nn-ops/matmul")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "benchmark://" in msg
    code, msg = code_and_message(reset, stub, "")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "benchmark" in msg


def test_bad_options_name_the_field(stub):
    code, msg = code_and_message(reset, stub, options=pb.SessionOptions(max_loops=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_loops" in msg
    code, msg = code_and_message(reset, stub, options=pb.SessionOptions(tile_sizes=[4, -2]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tile_sizes[1]" in msg


def test_unknown_closed_and_empty_sessions(stub):
    code, msg = code_and_message(stub.Step, pb.StepRequest(session_id="nope", actions=[action(TILING, [8])]))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    code, _ = code_and_message(stub.Observe, pb.ObserveRequest(session_id=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    sid = reset(stub).session_id
    stub.Close(pb.CloseRequest(session_id=sid))
    for call, req in [(stub.Step, pb.StepRequest(session_id=sid, actions=[action(TILING, [8])])),
                      (stub.Observe, pb.ObserveRequest(session_id=sid)),
                      (stub.Fork, pb.ForkRequest(session_id=sid)),
                      (stub.ExportSchedule, pb.ExportScheduleRequest(session_id=sid)),
                      (stub.Close, pb.CloseRequest(session_id=sid))]:
        code, msg = code_and_message(call, req)
        assert code == grpc.StatusCode.NOT_FOUND and sid in msg


def test_malformed_out_of_range_and_masked_actions_keep_the_session(stub):
    sid = reset(stub).session_id
    before = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(include_ir=True)))
    bad = [
        (pb.Action(values=[1, 2, 3]), "expected 14"),                       # wrong length
        (pb.Action(values=[11] + [0] * 13), "head 'type'"),                 # out of range
        (pb.Action(values=[1, 4, 4, 4] + [0] * 9 + [-1]), "interchange"),   # negative pointer
        (action(VECTORIZATION), "masked"),                                  # 64^3 is too big to vectorize
    ]
    for act, needle in bad:
        code, msg = code_and_message(stub.Step, pb.StepRequest(session_id=sid, actions=[act]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
        assert needle in msg, msg
    code, msg = code_and_message(stub.Step, pb.StepRequest(session_id=sid))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "actions" in msg
    after = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(include_ir=True)))
    assert after.observation.ir == before.observation.ir
    assert after.info.step == 0
    ok = stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 16, 1])]))
    assert ok.outcomes[0].applied and ok.info.step == 1


def test_tile_heads_past_the_ops_loops_are_not_read(stub):
    # Gymnasium samples every head; a 3-loop matmul ignores tile_3.. (the last one doubles as UNROLL's factor).
    a, b = reset(stub).session_id, reset(stub).session_id
    ra = stub.Step(pb.StepRequest(session_id=a, actions=[action(TILING, [8, 16, 1])]))
    rb = stub.Step(pb.StepRequest(session_id=b, actions=[action(TILING, [8, 16, 1, 8], unroll=4)]))
    assert ra.outcomes[0].applied and rb.outcomes[0].applied
    ea = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=a))
    eb = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=b))
    assert ea.transform_script == eb.transform_script


def test_unknown_observation_name(stub):
    sid = reset(stub).session_id
    code, msg = code_and_message(stub.Observe, pb.ObserveRequest(
        session_id=sid, observation=pb.ObservationRequest(names=["loop_bounds", "bogus"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bogus" in msg
    only = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(names=["loop_bounds"])))
    assert [t.name for t in only.observation.tensors] == ["loop_bounds"]


def _tensors(observation):
    return {t.name: (t.dtype, tuple(t.shape), t.data) for t in observation.tensors}


def test_delta_observations_carry_only_changed_tensors_and_never_go_stale(stub):
    first = reset(stub)
    sid, full0 = first.session_id, _tensors(first.observation)
    assert first.observation.id != 0 and not first.observation.delta
    # A step asking for the changes since the reset's observation: fewer tensors, and merged they are the full state.
    step = stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [32, 32, 32])],
                                    observation=pb.ObservationRequest(since=first.observation.id)))
    assert step.observation.delta and step.observation.id != first.observation.id
    changed = _tensors(step.observation)
    assert "loop_bounds" in changed and "load_access" not in changed  # tiling changes bounds, not accesses
    assert len(changed) < len(full0)
    merged = dict(full0, **changed)
    truth = _tensors(stub.Observe(pb.ObserveRequest(session_id=sid)).observation)
    assert merged == truth
    # A stale id (the client missed a reply), an id of another session, 0, or a names subset: every tensor again.
    other = reset(stub)
    for since in (first.observation.id, other.observation.id, 0):
        reply = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(since=since)))
        assert not reply.observation.delta and _tensors(reply.observation) == truth
    latest = reply.observation.id
    subset = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(
        since=latest, names=["loop_bounds"])))
    assert not subset.observation.delta and list(_tensors(subset.observation)) == ["loop_bounds"]
    # A subset is not a full observation: a delta against it would miss tensors, so the next reply is full.
    after = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(
        since=subset.observation.id)))
    assert not after.observation.delta and _tensors(after.observation) == truth
    # Nothing changed since: an empty delta.
    same = stub.Observe(pb.ObserveRequest(session_id=sid, observation=pb.ObservationRequest(
        since=after.observation.id)))
    assert same.observation.delta and not same.observation.tensors
    # A fork's session has sent nothing yet: its first reply is full whatever the client holds.
    fork = stub.Fork(pb.ForkRequest(session_id=sid)).session_id
    forked = stub.Observe(pb.ObserveRequest(session_id=fork, observation=pb.ObservationRequest(
        since=same.observation.id)))
    assert not forked.observation.delta and _tensors(forked.observation) == truth
    for s in (sid, fork, other.session_id):
        stub.Close(pb.CloseRequest(session_id=s))


def test_reset_can_close_the_previous_session(stub):
    old = reset(stub).session_id
    new = reset(stub, close_session_id=old)
    code, msg = code_and_message(stub.Observe, pb.ObserveRequest(session_id=old))
    assert code == grpc.StatusCode.NOT_FOUND and old in msg
    stub.Observe(pb.ObserveRequest(session_id=new.session_id))  # the new one works
    # Closing an unknown or already closed session is no error; a Reset refused before it starts closes nothing.
    again = reset(stub, close_session_id=old)
    code, _ = code_and_message(reset, stub, "benchmark://nn-ops/does_not_exist", close_session_id=again.session_id)
    assert code == grpc.StatusCode.NOT_FOUND
    stub.Observe(pb.ObserveRequest(session_id=again.session_id))
    for s in (new.session_id, again.session_id):
        stub.Close(pb.CloseRequest(session_id=s))


def test_batched_step_reports_which_action_failed(stub):
    sid = reset(stub).session_id
    code, msg = code_and_message(stub.Step, pb.StepRequest(
        session_id=sid, actions=[action(TILING, [32, 32, 32]), pb.Action(values=[0])]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("actions[1]")
    obs = stub.Observe(pb.ObserveRequest(session_id=sid))
    assert obs.info.step == 1  # the first action of the batch was applied


def test_step_after_end_is_failed_precondition(stub):
    sid = reset(stub).session_id
    done = stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]),
                     timeout=120)
    assert done.terminated
    assert done.outcomes[1].HasField("evaluation")
    assert done.outcomes[1].evaluation.correct
    code, msg = code_and_message(stub.Step, pb.StepRequest(session_id=sid, actions=[pb.Action(values=[0] * 14)]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "over" in msg


def test_tiled_fusion_and_unroll_are_applied_checked_and_replayable(stub):
    """TILED_FUSION fuses the matmul's fill into its forall; UNROLL unrolls the reduction loop (tiled first: unrolled
    copies sharing a loop body get no loops of their own); the result is correct and a replay rebuilds the same IR."""
    actions = [action(TILED_FUSION, [16, 16, 8]), action(TILING, [8, 16, 1]), action(UNROLL, unroll=4)]
    sid = reset(stub).session_id
    reply = stub.Step(pb.StepRequest(session_id=sid, actions=actions), timeout=120)
    assert [o.applied for o in reply.outcomes] == [True, True, True], [o.failure_reason for o in reply.outcomes]
    assert "fusing linalg.fill" in reply.outcomes[0].description
    assert "by 4" in reply.outcomes[2].description
    done = stub.Step(pb.StepRequest(session_id=sid, actions=[action(VECTORIZATION)]), timeout=120)
    assert done.terminated and done.outcomes[0].applied, done.outcomes[0].failure_reason
    assert done.outcomes[0].evaluation.correct, done.outcomes[0].evaluation.failure
    exported = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=sid))
    assert "fuse_into_containing_op" in exported.transform_script
    assert "transform.loop.unroll" in exported.transform_script
    replayed = stub.ExportSchedule(pb.ExportScheduleRequest(
        session_id=reset(stub, replay_actions=actions + [action(VECTORIZATION)]).session_id))
    assert replayed.current_ir == exported.current_ir
    # Masked: IMG2COL on a matmul, an unroll factor that does not divide the trip count.
    sid = reset(stub).session_id
    code, msg = code_and_message(stub.Step, pb.StepRequest(session_id=sid, actions=[action(IMG2COL)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "IMG2COL" in msg
    stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [4, 8, 16])]))  # k loop: 4 trips
    code, msg = code_and_message(stub.Step, pb.StepRequest(session_id=sid, actions=[action(UNROLL, unroll=8)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tile_11" in msg


def test_replay_rebuilds_the_same_state(stub):
    actions = [action(TILING, [32, 32, 16]), action(INTERCHANGE, pointer=2), action(INTERCHANGE, pointer=0),
               action(TILED_PARALLELIZATION, [0, 8, 4])]
    sid = reset(stub).session_id
    stub.Step(pb.StepRequest(session_id=sid, actions=actions))
    stepped = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=sid))
    replayed_id = reset(stub, replay_actions=actions).session_id
    replayed = stub.ExportSchedule(pb.ExportScheduleRequest(session_id=replayed_id))
    assert replayed.current_ir == stepped.current_ir
    assert replayed.transform_script == stepped.transform_script
    assert [list(a.values) for a in replayed.actions] == [list(a.values) for a in actions]
    code, msg = code_and_message(reset, stub, replay_actions=[actions[0], pb.Action(values=[7])])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "replay_actions[1]" in msg


def test_a_slow_evaluation_does_not_block_other_sessions(stub):
    """Sessions have their own locks: while one session evaluates matmul 512^3, another keeps stepping."""
    slow = reset(stub, "benchmark://nn-ops/matmul_512x512x512_f32", seed=11).session_id
    finished = {}

    def evaluate():
        stub.Step(pb.StepRequest(session_id=slow, actions=[pb.Action(values=[0] * 14)]), timeout=300)
        finished["slow"] = time.monotonic()

    t = threading.Thread(target=evaluate)
    t.start()
    time.sleep(0.05)
    fast_steps = 0
    for _ in range(10):
        sid = reset(stub).session_id
        r = stub.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 8, 8])]), timeout=30)
        fast_steps += r.outcomes[0].applied
        stub.Close(pb.CloseRequest(session_id=sid))
    finished["fast"] = time.monotonic()
    t.join()
    assert fast_steps == 10
    assert finished["fast"] < finished["slow"], "fast sessions waited for the slow evaluation"


def test_session_limit_oversized_message_and_shutdown():
    proc = start_server(extra_args=["--max_sessions=2", "--max_message_mb=1"])
    try:
        channel = grpc.insecure_channel(proc.address)
        s = rpc.MlirRlEnvStub(channel)
        a, b = reset(s).session_id, reset(s).session_id
        code, msg = code_and_message(reset, s)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 sessions" in msg
        s.Close(pb.CloseRequest(session_id=a))
        reset(s)  # room again
        huge = pb.ResetRequest(benchmark=SMALL, replay_actions=[pb.Action(values=list(range(14)))] * 100000)
        code, _ = code_and_message(s.Reset, huge)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert s.Observe(pb.ObserveRequest(session_id=b)).info.num_ops == 1  # still serving
        channel.close()
    finally:
        start = time.monotonic()
        status = proc.stop(signal.SIGTERM)
    assert status == 0
    assert time.monotonic() - start < 8


def _children(pid: int):
    """Pids whose parent is `pid` (from /proc)."""
    import os
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    import os
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _allowed_cpus(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list"))


def test_rpc_cpus_pins_the_rpc_threads_and_workers_keep_their_own():
    import os
    cpus = sorted(os.sched_getaffinity(0))
    proc = start_server(extra_args=["--rpc_cpus=%d" % cpus[0], "--workers=%d" % len(cpus)])
    try:
        s = rpc.MlirRlEnvStub(grpc.insecure_channel(proc.address))
        sid = reset(s).session_id
        reply = s.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [4, 4, 4])]))
        assert reply.outcomes[0].applied
        pid = proc.proc.pid
        names = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        rpc_threads = [t for t, n in names.items() if n.startswith("grpcpp_sync_ser")]
        assert rpc_threads, names
        assert all(_allowed_cpus(pid, t) == str(cpus[0]) for t in rpc_threads)
        # An evaluation starts the workers; each is pinned to its own CPU, whatever the RPC threads' CPUs are.
        s.Step(pb.StepRequest(session_id=sid, actions=[action(0)]), timeout=120)
        workers = _children(pid)
        assert workers
        assert sorted(_allowed_cpus(w, w) for w in workers) == sorted(str(c) for c in cpus)[:len(workers)]
    finally:
        assert proc.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("value", ["99999", "1-0", "x", "0,,1"])
def test_bad_rpc_cpus_are_refused_with_the_reason(value):
    import subprocess
    from conftest import server_binary
    out = subprocess.run([str(server_binary()), "--port=0", "--rpc_cpus=" + value], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "--rpc_cpus" in out.stderr + out.stdout and f"CPU list '{value}'" in out.stderr + out.stdout


def test_worker_killed_from_outside_is_not_the_candidates_fault():
    """Issue 17: a worker killed with SIGKILL from outside (the OOM killer, an operator) says nothing about the
    candidate. Killed once, the evaluation is retried on a fresh worker and succeeds; killed every time, the step is
    undone and answered ABORTED (retry it), and no -20 is cached for the candidate."""
    proc = start_server(extra_args=["--workers=1"])
    try:
        channel = grpc.insecure_channel(proc.address)
        s = rpc.MlirRlEnvStub(channel)
        big = "benchmark://nn-ops/matmul_512x512x512_f32"
        # Warm the reference (seed 3) so that the evaluations below time candidates only.
        first = reset(s, big, seed=3).session_id
        s.Step(pb.StepRequest(session_id=first, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]),
               timeout=300)
        import os

        def step_while_killing(session, actions, kills):
            result = {}

            def evaluate():
                try:
                    result["reply"] = s.Step(pb.StepRequest(session_id=session, actions=actions), timeout=300)
                except grpc.RpcError as e:
                    result["error"] = e

            t = threading.Thread(target=evaluate)
            t.start()
            killed, seen = 0, set()
            while t.is_alive():
                for w in _children(proc.proc.pid):
                    if killed < kills and w not in seen:
                        time.sleep(0.3)  # let it start timing
                        try:
                            os.kill(w, signal.SIGKILL)
                            killed += 1
                        except ProcessLookupError:
                            pass
                        seen.add(w)
                time.sleep(0.02)
            t.join()
            return result, killed

        # Killed every time: ABORTED, nothing applied.
        victim = reset(s, big, seed=3).session_id
        candidate = [action(TILING, [64, 64, 64]), pb.Action(values=[0] * 14)]
        result, killed = step_while_killing(victim, candidate, kills=10**6)
        assert killed >= 2 and "error" in result, result
        assert result["error"].code() == grpc.StatusCode.ABORTED
        assert "killed from outside" in result["error"].details() and "retry it" in result["error"].details()
        # TILING (actions[0]) stayed applied; the evaluating NO_TRANSFORMATION was undone.
        info = s.Observe(pb.ObserveRequest(session_id=victim)).info
        assert info.step == 1 and not s.Observe(pb.ObserveRequest(session_id=victim)).terminated
        # Killed once: retried on a fresh worker, a real measurement.
        result, killed = step_while_killing(victim, [pb.Action(values=[0] * 14)], kills=1)
        assert killed == 1 and "reply" in result, result
        last = result["reply"].outcomes[-1]
        assert last.evaluation.correct and last.evaluation.failure == "" and not last.evaluation.cached
        assert result["reply"].terminated and last.reward > -5
        metrics = s.GetMetrics(pb.GetMetricsRequest()).values
        assert metrics["mlir_rl_evaluation_retries_total"] >= 1
        assert metrics['mlir_rl_worker_deaths_total{cause="external"}'] >= 3
        # The server keeps serving and evaluating.
        again = reset(s, SMALL, seed=4).session_id
        done = s.Step(pb.StepRequest(session_id=again, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]),
                      timeout=120)
        assert done.terminated and done.outcomes[1].evaluation.correct
        channel.close()
    finally:
        proc.stop()


def test_no_worker_outlives_a_killed_server():
    proc = start_server(extra_args=["--workers=2"])
    channel = grpc.insecure_channel(proc.address)
    s = rpc.MlirRlEnvStub(channel)
    sid = reset(s, SMALL).session_id
    s.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]), timeout=120)
    workers = _children(proc.proc.pid)
    assert workers, "the evaluation should have started a worker"
    channel.close()
    proc.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a worker outlived its server"


def test_cache_dir_keeps_references_and_results_across_restarts(tmp_path):
    cache = tmp_path / "cache"
    schedule = [action(TILING, [8, 16, 1]), action(VECTORIZATION)]
    first_run = None
    for run in range(2):
        proc = start_server(extra_args=[f"--cache_dir={cache}"])
        try:
            channel = grpc.insecure_channel(proc.address)
            s = rpc.MlirRlEnvStub(channel)
            r = reset(s, SMALL, seed=21)
            if run == 1:
                assert r.HasField("reference"), "the reference time should come from the cache directory"
                assert r.reference.median_ns == first_run.reference_ns
            done = s.Step(pb.StepRequest(session_id=r.session_id, actions=schedule), timeout=120)
            evaluation = done.outcomes[-1].evaluation
            assert evaluation.correct
            if run == 0:
                assert not evaluation.cached
                first_run = evaluation
            else:
                assert evaluation.cached and evaluation.median_ns == first_run.median_ns
            channel.close()
        finally:
            proc.stop()
    # One file per machine: JSON lines after a header naming the format, its version and the machine.
    import json
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".jsonl", files
    lines = files[0].read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "mlir-rl evaluation cache" and header["version"] == 2 and header["machine"]
    assert {json.loads(line)["kind"] for line in lines[1:]} == {"reference", "candidate"}
    # A file of another format version is refused, saying so (a newer server reads or rejects it cleanly).
    header["version"] = 99
    files[0].write_text(json.dumps(header) + "\n")
    out = subprocess.run([str(server_binary()), "--port=0", f"--cache_dir={cache}"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "format version 99" in out.stdout + out.stderr, out.stdout + out.stderr


def _cache_files_after_start(env_overrides, args=()):
    """Starts a server with the environment changed, waits until it listens, stops it."""
    env = dict(os.environ)
    for k, v in env_overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen([str(server_binary()), "--port=0", f"--port_file={port_file}", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        assert port_file.exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    return out


def test_cache_dir_is_on_by_default_per_user_and_per_evaluator_build(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # No flag, no MLIR_RL_CACHE_DIR: ~/.cache/mlir-rl (XDG_CACHE_HOME unset).
    _cache_files_after_start({"MLIR_RL_CACHE_DIR": None, "XDG_CACHE_HOME": None, "HOME": str(home)})
    files = list((home / ".cache" / "mlir-rl").glob("evaluations-*.jsonl"))
    assert len(files) == 1, files
    # $MLIR_RL_CACHE_DIR wins; empty turns persistence off.
    chosen = tmp_path / "chosen"
    _cache_files_after_start({"MLIR_RL_CACHE_DIR": str(chosen), "HOME": str(home)})
    assert len(list(chosen.glob("evaluations-*.jsonl"))) == 1
    out = _cache_files_after_start({"MLIR_RL_CACHE_DIR": "", "HOME": str(tmp_path / "nohome")})
    assert not (tmp_path / "nohome").exists(), out
    # Another evaluator build (a runner binary with other bytes) gets a file of its own: cached times of the old
    # build are not served as the new one's.
    runner = tmp_path / "mlir-rl-runner"
    shutil.copy(server_binary().parent / "mlir-rl-runner", runner)
    with open(runner, "ab") as f:
        f.write(b"another build")
    _cache_files_after_start({"MLIR_RL_CACHE_DIR": str(chosen)}, [f"--runner={runner}"])
    assert len(list(chosen.glob("evaluations-*.jsonl"))) == 2
    # A default location that cannot be used is a warning, not a failed start.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    out = _cache_files_after_start({"MLIR_RL_CACHE_DIR": str(blocked / "sub")})
    assert "memory only" in out, out


BAD_UPLOADS = [
    ("", "empty"),
    ("func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  return %a : tensor<4xf32\n}", "upload:2:"),
    ("func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  %b = foo.bar %a : tensor<4xf32>\n  return %b : tensor<4xf32>\n}",
     "upload:2:"),
    ("func.func @f(%a: tensor<?xf32>) -> tensor<?xf32> { return %a : tensor<?xf32> }", "dynamic shapes"),
    ("func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  %big = tensor.empty() : tensor<100000x100000xf32>\n"
     "  return %a : tensor<4xf32>\n}", "more than the limit of 1073741824 per tensor"),
    ("func.func private @system(i64) -> i64\nfunc.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n"
     "  %c = arith.constant 0 : i64\n  %r = func.call @system(%c) : (i64) -> i64\n  return %a : tensor<4xf32>\n}",
     "external function @system"),
    ("func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {\n  %r = func.call @g(%a) : (tensor<4xf32>) -> tensor<4xf32>\n"
     "  return %r : tensor<4xf32>\n}", "recursive"),
    ("llvm.func @g() { llvm.return }\nfunc.func @f(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }",
     "llvm.func"),
    ("func.func @f(%a: memref<4xf32>) { return }", "memrefs are not accepted"),
]

TOSA_MLP = """
func.func @tosa_mlp(%x: tensor<1x64x64xf32>, %w: tensor<1x64x32xf32>) -> tensor<1x64x32xf32> {
  %m = tosa.matmul %x, %w : (tensor<1x64x64xf32>, tensor<1x64x32xf32>) -> tensor<1x64x32xf32>
  %r = tosa.clamp %m {min_fp = 0.0 : f32, max_fp = 3.4028235e38 : f32, min_int = 0 : i64, max_int = 9223372036854775807 : i64} : (tensor<1x64x32xf32>) -> tensor<1x64x32xf32>
  return %r : tensor<1x64x32xf32>
}
"""


def test_bad_uploads_are_rejected_and_the_server_keeps_serving(stub):
    for text, needle in BAD_UPLOADS:
        code, msg = code_and_message(stub.AddBenchmark, pb.AddBenchmarkRequest(mlir=text), timeout=30)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (text, msg)
        assert needle in msg, (needle, msg)
        code, msg = code_and_message(stub.Reset, pb.ResetRequest(mlir=text), timeout=30)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in msg, msg
    code, msg = code_and_message(stub.Reset, pb.ResetRequest(benchmark=SMALL, mlir=TOSA_MLP))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not both" in msg
    assert reset(stub).session_id  # still serving


def test_uploaded_tosa_module_becomes_a_working_episode(stub):
    added = stub.AddBenchmark(pb.AddBenchmarkRequest(mlir=TOSA_MLP, description="TOSA MLP"), timeout=60).benchmark
    assert added.uri.startswith("benchmark://user/")
    assert added.num_ops >= 2 and added.description == "TOSA MLP"
    listed = stub.ListBenchmarks(pb.ListBenchmarksRequest(dataset="user")).benchmarks
    assert added.uri in [b.uri for b in listed]
    again = stub.AddBenchmark(pb.AddBenchmarkRequest(mlir=TOSA_MLP), timeout=60).benchmark
    assert again.uri == added.uri
    # An episode with inline MLIR lands on the same benchmark; tile and vectorize what can be, then finish.
    r = stub.Reset(pb.ResetRequest(mlir=TOSA_MLP), timeout=60)
    assert r.benchmark == added.uri
    sid, obs, steps, done = r.session_id, r.observation, 0, False
    while not done:
        masks = {t.name: np.frombuffer(t.data, dtype=np.uint8).reshape(tuple(t.shape)) for t in obs.tensors
                 if t.name.startswith("mask_")}
        if masks["mask_type"][VECTORIZATION]:
            act = action(VECTORIZATION)
        else:
            act = pb.Action(values=[0] * 14)
        reply = stub.Step(pb.StepRequest(session_id=sid, actions=[act]), timeout=300)
        obs, done, steps = reply.observation, reply.terminated or reply.truncated, steps + 1
        assert steps < 50
    final = reply.outcomes[-1].evaluation
    assert final.correct and not final.failure, final.failure


def test_random_policy_soak_over_the_suites():
    """Random masked episodes over benchmarks of every suite (small ones, so evaluations stay short), bounded in
    time: every step is answered, no server crash, and every evaluated candidate is either correct or a reported
    failure, never a wrong speedup."""
    proc = start_server(extra_args=["--timing_budget_s=0.2", "--eval_timeout_ceiling_s=120"])
    rng = np.random.default_rng(123)
    try:
        channel = grpc.insecure_channel(proc.address)
        s = rpc.MlirRlEnvStub(channel)
        listed = s.ListBenchmarks(pb.ListBenchmarksRequest()).benchmarks
        # The cheapest few of each suite (by FLOPs), plus generated ones.
        uris = []
        for dataset in ("nn-ops", "models", "lqcd"):
            suite = sorted((b for b in listed if b.dataset == dataset), key=lambda b: b.flops)
            uris += [b.uri for b in suite[:4]]
        uris += [f"generator://{f}/{i}" for i, f in enumerate(["matmul", "conv2d_nhwc", "pooling_max", "relu"])]
        deadline = time.monotonic() + 90
        episodes = steps = evaluated = 0
        while time.monotonic() < deadline:
            uri = uris[episodes % len(uris)]
            r = s.Reset(pb.ResetRequest(benchmark=uri, seed=episodes,
                                        options=pb.SessionOptions(max_steps=8)), timeout=120)
            obs, done = r.observation, r.terminated or r.truncated
            while not done:
                masks = {t.name: np.frombuffer(t.data, dtype=np.uint8).reshape(tuple(t.shape)) for t in obs.tensors
                         if t.name.startswith("mask_")}
                values = [int(rng.choice(np.flatnonzero(masks["mask_type"])))]
                values += [int(rng.choice(np.flatnonzero(row))) for row in masks["mask_tiles"]]
                values.append(int(rng.choice(np.flatnonzero(masks["mask_interchange"]))))
                reply = s.Step(pb.StepRequest(session_id=r.session_id, actions=[pb.Action(values=values)]),
                               timeout=300)
                steps += 1
                out = reply.outcomes[0]
                if out.HasField("evaluation"):
                    evaluated += 1
                    ev = out.evaluation
                    assert ev.correct or ev.failure, f"{uri}: an unchecked result"
                    assert "wrong result" not in ev.failure, f"{uri}: a masked schedule computed a wrong result"
                obs, done = reply.observation, reply.terminated or reply.truncated
            s.Close(pb.CloseRequest(session_id=r.session_id))
            episodes += 1
        assert proc.proc.poll() is None, "the server died"
        assert s.GetVersion(pb.GetVersionRequest(), timeout=10).protocol_version == "v1"
        print(f"soak: {episodes} episodes, {steps} steps, {evaluated} evaluations over {len(uris)} benchmarks")
        assert episodes >= len(uris) // 2
        channel.close()
    finally:
        proc.stop()


# ---------------------------------------------------------------------------------------------------------------
# StepMany: several sessions in one call


def _tensors(observation):
    return {t.name: (tuple(t.shape), t.data) for t in observation.tensors}


def test_step_many_matches_separate_steps(stub):
    scripts = [[action(TILING, [32, 32, 32]), action(INTERCHANGE, pointer=2)],
               [action(TILED_PARALLELIZATION, [16, 16, 0])],
               [action(TILING, [8, 8, 8]), action(UNROLL, unroll=2)]]
    batched = [reset(stub).session_id for _ in scripts]
    alone = [reset(stub).session_id for _ in scripts]
    reply = stub.StepMany(pb.StepManyRequest(steps=[
        pb.StepRequest(session_id=sid, actions=acts) for sid, acts in zip(batched, scripts)]), timeout=300)
    assert len(reply.results) == len(scripts)
    for sid, acts, result in zip(alone, scripts, reply.results):
        assert result.code == 0, result.message
        single = stub.Step(pb.StepRequest(session_id=sid, actions=acts), timeout=300)
        got = result.reply
        assert [o.applied for o in got.outcomes] == [o.applied for o in single.outcomes] == [True] * len(acts)
        assert [o.description for o in got.outcomes] == [o.description for o in single.outcomes]
        assert got.reward == single.reward
        assert (got.terminated, got.truncated, got.info.step) == (single.terminated, single.truncated, len(acts))
        assert _tensors(got.observation) == _tensors(single.observation)
    for sid in batched + alone:
        stub.Close(pb.CloseRequest(session_id=sid))


def test_step_many_failed_entries_leave_the_others_alone(stub):
    good = reset(stub).session_id
    masked = reset(stub).session_id
    reply = stub.StepMany(pb.StepManyRequest(steps=[
        pb.StepRequest(session_id="no-such-session", actions=[action(TILING, [8, 8, 8])]),
        pb.StepRequest(session_id=good, actions=[action(TILING, [8, 8, 8])]),
        pb.StepRequest(session_id=masked, actions=[pb.Action(values=[99] + [0] * 13)]),
        pb.StepRequest(session_id=reset(stub).session_id),  # no actions
    ]), timeout=120)
    codes = [r.code for r in reply.results]
    assert codes == [grpc.StatusCode.NOT_FOUND.value[0], 0, grpc.StatusCode.INVALID_ARGUMENT.value[0],
                     grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "no-such-session" in reply.results[0].message
    assert not reply.results[0].HasField("reply")
    assert reply.results[1].reply.outcomes[0].applied
    assert "actions is empty" in reply.results[3].message
    # The session whose entry failed is unchanged and still usable.
    after = stub.Step(pb.StepRequest(session_id=masked, actions=[action(TILING, [8, 8, 8])]), timeout=120)
    assert after.outcomes[0].applied and after.info.step == 1


def test_step_many_refuses_an_empty_batch_and_a_session_twice(stub):
    code, message = code_and_message(stub.StepMany, pb.StepManyRequest(), timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "steps is empty" in message
    sid = reset(stub).session_id
    twice = pb.StepManyRequest(steps=[pb.StepRequest(session_id=sid, actions=[action(0)])] * 2)
    code, message = code_and_message(stub.StepMany, twice, timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and sid in message and "steps[0] and steps[1]" in message
    # Nothing was applied: the session is still at step 0.
    assert stub.Observe(pb.ObserveRequest(session_id=sid)).info.step == 0


def test_step_many_evaluates_ending_entries_while_others_step(stub):
    # Two episodes end (each is evaluated by a worker) in the same call as a plain step on a third session.
    ending = [reset(stub, seed=s).session_id for s in (21, 22)]
    going = reset(stub).session_id
    finish = [action(TILING, [8, 8, 8]), action(0), action(0)]  # tile the matmul, then leave it and the fill
    reply = stub.StepMany(pb.StepManyRequest(steps=[pb.StepRequest(session_id=sid, actions=finish) for sid in ending] +
                                             [pb.StepRequest(session_id=going, actions=[action(TILING, [16, 16, 16])])]),
                          timeout=600)
    for result in reply.results[:2]:
        assert result.code == 0, result.message
        assert result.reply.terminated
        evaluation = result.reply.outcomes[-1].evaluation
        assert evaluation.correct and not evaluation.failure and evaluation.speedup > 0
    plain = reply.results[2]
    assert plain.code == 0 and not plain.reply.terminated
    assert not plain.reply.outcomes[0].HasField("evaluation") and plain.reply.outcomes[0].applied


def test_step_many_does_not_wait_for_another_calls_evaluation(server):
    # Call A ends two episodes on matmul 512^3 (seconds of evaluation: one entry runs on the server's batch helper
    # thread); call B, sent meanwhile, takes two plain steps. B must come back while A is still evaluating, not queue
    # behind A's entry on the helper thread.
    a_stub = rpc.MlirRlEnvStub(grpc.insecure_channel(server))
    b_stub = rpc.MlirRlEnvStub(grpc.insecure_channel(server))
    big = "benchmark://nn-ops/matmul_512x512x512_f32"
    slow = [reset(a_stub, big, seed=s).session_id for s in (41, 42)]
    plain = [reset(b_stub).session_id for _ in range(2)]
    finish = [action(TILING, [64, 64, 64]), action(0), action(0)]
    result = {}

    def call_a():
        result["a"] = a_stub.StepMany(pb.StepManyRequest(steps=[pb.StepRequest(session_id=sid, actions=finish)
                                                                for sid in slow]), timeout=600)
        result["a_done"] = time.monotonic()

    thread = threading.Thread(target=call_a)
    thread.start()
    time.sleep(0.5)  # A's entries are being evaluated by now (compile and reference alone take longer)
    b_start = time.monotonic()
    b = b_stub.StepMany(pb.StepManyRequest(steps=[pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 8, 8])])
                                                  for sid in plain]), timeout=600)
    b_done = time.monotonic()
    thread.join()
    assert [r.code for r in b.results] == [0, 0]
    assert [r.code for r in result["a"].results] == [0, 0]
    assert all(r.reply.outcomes[-1].HasField("evaluation") for r in result["a"].results)
    # An ordering with a wide margin, not a latency bound: B is back long before A. (Queued behind A's entry on the
    # helper thread, B came back together with A.)
    assert result["a_done"] - b_done > 0.5 * (result["a_done"] - b_start), \
        "the plain StepMany waited for the other call's evaluations"


# --- Protocol additions of issue 15 (additive, v1-compatible) --------------------------------------------------

def test_end_session_and_its_deprecated_close_alias(stub):
    for method in (stub.EndSession, stub.Close):
        sid = reset(stub).session_id
        method(pb.CloseRequest(session_id=sid), timeout=10)
        code, msg = code_and_message(stub.Observe, pb.ObserveRequest(session_id=sid), timeout=10)
        assert code == grpc.StatusCode.NOT_FOUND and sid in msg


def test_observation_ids_stay_exact_in_a_double(stub):
    # JavaScript clients read int64 as Number: ids above 2^53 would be rounded and delta observations would stop.
    ids = []
    for _ in range(3):
        r = reset(stub)
        ids.append(r.observation.id)
        step = stub.Step(pb.StepRequest(session_id=r.session_id, actions=[action(TILING, [8, 16, 1])]), timeout=60)
        ids.append(step.observation.id)
    assert all(0 < i < 2 ** 53 for i in ids), ids


def test_failure_kind_names_why_a_candidate_has_no_time():
    # Candidates get 10 ms (floor, no multiple of the reference): compiling alone takes longer, so they time out,
    # while the reference gets the ceiling.
    proc = start_server(extra_args=["--eval_timeout_floor_s=0.01", "--eval_timeout_multiple=0"])
    try:
        with grpc.insecure_channel(proc.address) as channel:
            s = rpc.MlirRlEnvStub(channel)
            sid = reset(s).session_id
            reply = s.Step(pb.StepRequest(session_id=sid, actions=[action(TILING, [8, 16, 1]), action(VECTORIZATION)]),
                           timeout=120)
            ev = reply.outcomes[-1].evaluation
            assert ev.failure_kind == pb.FAILURE_KIND_TIMED_OUT and "did not finish" in ev.failure, ev
            assert reply.outcomes[-1].reward == -20.0
    finally:
        proc.stop()


def test_split_filter_and_generator_families_field(stub):
    families = stub.ListBenchmarks(pb.ListBenchmarksRequest(families_only=True), timeout=60)
    assert not families.benchmarks and "matmul" in families.generator_families
    evals = stub.ListBenchmarks(pb.ListBenchmarksRequest(split_filter=pb.SPLIT_EVAL), timeout=120).benchmarks
    assert evals and {b.split for b in evals} == {"eval"}
    assert {b.dataset for b in evals} <= {"models", "models-full", "lqcd"}
    code, msg = code_and_message(stub.ListBenchmarks, pb.ListBenchmarksRequest(split="train",
                                                                              split_filter=pb.SPLIT_EVAL))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "disagree" in msg
