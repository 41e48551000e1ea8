"""Unit tests of the Python client that need no mlir-rl server.

The first part checks the pure conversions (tensors, spaces, options, errors) on proto messages built by hand. The
second runs the client against ``FakeServer``, a small in-process Python implementation of the v1 service that
follows the proto's contract (not the real environment's semantics), to check the client's session handling:
error mapping over real gRPC, retries on UNAVAILABLE, recovery by replay after a "restart", fork and close.
"""

from __future__ import annotations

import copy
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest

import mlir_rl
from mlir_rl import errors, spaces
from mlir_rl.env import MlirRlEnv, session_options
from mlir_rl.v1 import env_pb2, env_pb2_grpc

# ---------------------------------------------------------------------------------------------------------------
# tensors


@pytest.mark.parametrize("dtype, values", [
    (env_pb2.DTYPE_FLOAT32, np.arange(12, dtype=np.float32).reshape(3, 4) / 3),
    (env_pb2.DTYPE_FLOAT64, np.array([[1.5, -2.25], [np.inf, 1e300]])),
    (env_pb2.DTYPE_INT64, np.array([0, -1, 2**62, -(2**63)], dtype=np.int64)),
    (env_pb2.DTYPE_INT32, np.array([[7], [-8]], dtype=np.int32)),
    (env_pb2.DTYPE_BOOL, np.array([[True, False, True], [False, False, True]])),
])
def test_tensor_roundtrip(dtype, values):
    t = spaces.array_to_tensor("x", values, dtype)
    a = spaces.tensor_to_array(t)
    assert a.shape == values.shape
    assert a.dtype == spaces.numpy_dtype(dtype)
    assert a.dtype.isnative
    np.testing.assert_array_equal(a, values)
    assert a.flags.writeable
    a.flat[0] = a.flat[1]  # writable without touching the message
    np.testing.assert_array_equal(spaces.tensor_to_array(t), values)


def test_tensor_bytes_are_little_endian():
    t = env_pb2.Tensor(name="x", dtype=env_pb2.DTYPE_INT32, shape=[2], data=bytes([1, 0, 0, 0, 0, 1, 0, 0]))
    np.testing.assert_array_equal(spaces.tensor_to_array(t), [1, 256])
    t = env_pb2.Tensor(name="b", dtype=env_pb2.DTYPE_BOOL, shape=[3], data=bytes([0, 1, 2]))
    np.testing.assert_array_equal(spaces.tensor_to_array(t), [False, True, True])


def test_scalar_and_empty_tensors():
    t = env_pb2.Tensor(name="s", dtype=env_pb2.DTYPE_FLOAT64, shape=[], data=np.float64(2.5).tobytes())
    a = spaces.tensor_to_array(t)
    assert a.shape == () and a == 2.5
    t = env_pb2.Tensor(name="e", dtype=env_pb2.DTYPE_INT64, shape=[0, 3], data=b"")
    assert spaces.tensor_to_array(t).shape == (0, 3)


def test_tensor_with_wrong_byte_count_is_rejected():
    t = env_pb2.Tensor(name="bad", dtype=env_pb2.DTYPE_INT64, shape=[2], data=b"\0" * 12)
    with pytest.raises(errors.MlirRlError, match="bad.*12 bytes.*expected 16"):
        spaces.tensor_to_array(t)
    with pytest.raises(errors.MlirRlError, match="dtype"):
        spaces.tensor_to_array(env_pb2.Tensor(name="u", dtype=env_pb2.DTYPE_UNSPECIFIED, shape=[1], data=b"\0"))


def test_observation_arrays_are_fresh_and_decoded_per_shape():
    # The decoding is cached per (dtype, shape): the same name with another shape, a wrong byte count or a negative
    # dimension after a good tensor must still be decoded or rejected as if seen for the first time.
    obs = env_pb2.Observation(tensors=[
        spaces.array_to_tensor("m", np.array([[1, 0], [0, 1]], bool), env_pb2.DTYPE_BOOL),
        spaces.array_to_tensor("x", np.arange(6, dtype=np.int64), env_pb2.DTYPE_INT64),
        spaces.array_to_tensor("y", np.arange(6, dtype=np.int64).reshape(2, 3), env_pb2.DTYPE_INT64),
        env_pb2.Tensor(name="b", dtype=env_pb2.DTYPE_BOOL, shape=[2, 2], data=bytes([0, 2, 255, 0])),
    ])
    for _ in range(2):
        out = spaces.observation_to_dict(obs)
        assert list(out) == ["m", "x", "y", "b"]
        assert out["x"].shape == (6,) and out["y"].shape == (2, 3) and out["y"][1, 2] == 5
        assert out["b"].dtype == np.bool_ and out["b"].tolist() == [[False, True], [True, False]]
        for a in out.values():
            assert a.flags.writeable and a.flags.owndata and a.flags.c_contiguous and a.dtype.isnative
        out["x"][0] = 42
        assert spaces.observation_to_dict(obs)["x"][0] == 0
    bad = env_pb2.Observation(tensors=[env_pb2.Tensor(name="x", dtype=env_pb2.DTYPE_INT64, shape=[6], data=b"\0" * 40)])
    with pytest.raises(errors.MlirRlError, match="'x' has 40 bytes of data, expected 48"):
        spaces.observation_to_dict(bad)
    negative = env_pb2.Tensor(name="n", dtype=env_pb2.DTYPE_INT64, shape=[-1], data=b"")
    with pytest.raises(errors.MlirRlError, match="negative"):
        spaces.observation_to_dict(env_pb2.Observation(tensors=[negative]))


def test_action_values_are_python_ints():
    for action in (np.array([1, 2, 3]), np.array([1, 2, 3], np.uint8), [1, 2, 3], (1, 2, 3), np.array([1.0, 2, 3]),
                   [np.int32(1), 2, 3], np.array([1, 2, 3], object)):
        values = MlirRlEnv._action_values(action)
        assert values == [1, 2, 3] and all(type(v) is int for v in values), action
    assert MlirRlEnv._action_values(np.int64(4)) == [4]
    with pytest.raises(errors.InvalidArgumentError, match="integers"):
        MlirRlEnv._action_values([1.5, 2])
    with pytest.raises(errors.InvalidArgumentError, match="1-D"):
        MlirRlEnv._action_values(np.zeros((2, 2), np.int64))


# ---------------------------------------------------------------------------------------------------------------
# spaces


def box(name, shape, dtype, low, high):
    return env_pb2.Space(name=name, box=env_pb2.BoxSpace(shape=shape, dtype=dtype, low=low, high=high))


def test_box_from_proto_dtypes_and_bounds():
    b = spaces.box_from_proto(env_pb2.BoxSpace(shape=[4], dtype=env_pb2.DTYPE_INT64, low=0, high=9.2e18))
    assert b.shape == (4,) and b.dtype == np.int64
    assert b.low.tolist() == [0] * 4 and b.high.tolist() == [9200000000000000000] * 4
    b = spaces.box_from_proto(env_pb2.BoxSpace(shape=[2], dtype=env_pb2.DTYPE_INT32, low=-1e30, high=float("inf")))
    assert b.dtype == np.int32
    assert b.low[0] <= np.iinfo(np.int32).min + 2 and b.high[0] >= np.iinfo(np.int32).max - 2
    b = spaces.box_from_proto(env_pb2.BoxSpace(shape=[2, 3], dtype=env_pb2.DTYPE_BOOL, low=0, high=1))
    assert b.shape == (2, 3) and b.dtype == np.bool_
    assert b.contains(np.ones((2, 3), dtype=bool))
    b = spaces.box_from_proto(env_pb2.BoxSpace(shape=[3], dtype=env_pb2.DTYPE_FLOAT32, low=-float("inf"), high=1))
    assert b.dtype == np.float32 and np.isneginf(b.low).all() and (b.high == 1).all()
    assert b.contains(np.array([-1e30, 0, 1], dtype=np.float32))
    assert not b.contains(np.array([0, 0, 2], dtype=np.float32))


def test_observation_space_keeps_the_server_order():
    specs = [box("zeta", [2], env_pb2.DTYPE_FLOAT32, 0, 1), box("alpha", [3], env_pb2.DTYPE_INT64, -1, 5),
             box("mask_type", [5], env_pb2.DTYPE_BOOL, 0, 1)]
    d = spaces.observation_space_from_proto(specs)
    assert list(d.spaces.keys()) == ["zeta", "alpha", "mask_type"]
    obs = {"zeta": np.array([0.5, 1], dtype=np.float32), "alpha": np.array([-1, 0, 5]),
           "mask_type": np.zeros(5, dtype=bool)}
    assert d.contains(obs)
    assert not d.contains({**obs, "alpha": np.array([-2, 0, 5])})  # below low
    assert not d.contains({k: v for k, v in obs.items() if k != "zeta"})  # missing key
    assert not d.contains({**obs, "alpha": np.array([0.5, 0, 1])})  # float in an int box
    with pytest.raises(errors.MlirRlError, match="twice"):
        spaces.observation_space_from_proto(specs + [specs[0]])


def test_action_space_from_proto():
    s = env_pb2.Space(name="action", multi_discrete=env_pb2.MultiDiscreteSpace(nvec=[5, 8, 8, 3]))
    a = spaces.action_space_from_proto(s, seed=1)
    assert list(a.nvec) == [5, 8, 8, 3] and a.dtype == np.int64 and a.shape == (4,)
    x = a.sample()
    assert a.contains(x) and x.dtype == np.int64
    assert not a.contains(np.array([5, 0, 0, 0]))
    assert not a.contains(np.array([0, 0, 0]))
    with pytest.raises(errors.MlirRlError):
        spaces.action_space_from_proto(box("action", [1], env_pb2.DTYPE_FLOAT32, 0, 1))


@pytest.mark.skipif(spaces.HAVE_GYMNASIUM, reason="checks the fallback spaces")
def test_fallback_spaces_sample_and_seed():
    a = spaces.MultiDiscrete([5, 3, 4], seed=42)
    b = spaces.MultiDiscrete([5, 3, 4], seed=42)
    xs = [a.sample() for _ in range(20)]
    assert all(np.array_equal(x, y) for x, y in zip(xs, (b.sample() for _ in range(20))))
    assert all(a.contains(x) for x in xs)
    a.seed(7)
    masks = (np.array([0, 0, 1, 0, 0], np.int8), np.array([1, 0, 0], np.int8), np.zeros(4, np.int8))
    for _ in range(10):
        assert a.sample(mask=masks).tolist() == [2, 0, 0]
    bx = spaces.Box(low=np.zeros(3, np.int64), high=np.full(3, 9.2e18).astype(np.int64), dtype=np.int64, seed=0)
    assert all(bx.contains(bx.sample()) for _ in range(10))
    bb = spaces.Box(low=np.zeros((2, 2), bool), high=np.ones((2, 2), bool), dtype=np.bool_, seed=0)
    assert all(bb.contains(bb.sample()) for _ in range(10))
    bf = spaces.Box(low=np.full(4, -np.inf, np.float32), high=np.array([np.inf, 1, 2, 3], np.float32), seed=0)
    assert all(bf.contains(bf.sample()) for _ in range(10))
    d = spaces.Dict({"b": bb, "x": bx}, seed=3)
    s1 = d.sample()
    d.seed(3)
    s2 = d.sample()
    assert list(s1) == ["b", "x"] and all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert d.contains(s1)


def test_head_masks_from_observation():
    L, K = 3, 4
    obs = {
        "mask_type": np.array([1, 1, 0, 1, 0], bool),
        "mask_tiles": np.arange(L * K).reshape(L, K) % 2 == 0,
        "mask_interchange": np.array([0, 1, 1], bool),
    }
    names = ["type", "tile_0", "tile_1", "tile_2", "interchange"]
    masks = spaces.head_masks_from_observation(obs, names, [5, K, K, K, L])
    flat = np.concatenate(masks)
    assert flat.shape == (5 + 3 * K + L,)
    np.testing.assert_array_equal(masks[0], obs["mask_type"])
    for i in range(L):
        np.testing.assert_array_equal(masks[1 + i], obs["mask_tiles"][i])
    np.testing.assert_array_equal(masks[-1], obs["mask_interchange"])
    with pytest.raises(errors.MlirRlError, match="entries"):
        spaces.head_masks_from_observation(obs, names, [5, K, K, K, L + 1])
    with pytest.raises(errors.MlirRlError, match="mask_interchange"):
        spaces.head_masks_from_observation({k: v for k, v in obs.items() if k != "mask_interchange"}, names,
                                           [5, K, K, K, L])


# ---------------------------------------------------------------------------------------------------------------
# options and errors


def test_session_options():
    o = session_options(max_loops=8, reward_mode="immediate", tile_sizes=[2, 4], transform_penalty=-1)
    assert o.HasField("max_loops") and o.max_loops == 8
    assert not o.HasField("max_steps")
    assert o.reward_mode == env_pb2.REWARD_MODE_IMMEDIATE
    assert list(o.tile_sizes) == [2, 4]
    assert o.HasField("transform_penalty") and o.transform_penalty == -1.0
    assert session_options().ListFields() == []
    with pytest.raises(ValueError, match="unknown session option"):
        session_options(max_loop=3)
    with pytest.raises(ValueError, match="reward_mode"):
        session_options(reward_mode="sometimes")
    with pytest.raises(ValueError, match="max_steps"):
        session_options(max_steps=2.5)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("code, cls, builtin", [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgumentError, ValueError),
    (grpc.StatusCode.NOT_FOUND, errors.NotFoundError, KeyError),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPreconditionError, RuntimeError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError, TimeoutError),
    (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError, ConnectionError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhaustedError, errors.MlirRlError),
    (grpc.StatusCode.INTERNAL, errors.InternalError, errors.MlirRlError),
    (grpc.StatusCode.PERMISSION_DENIED, errors.MlirRlError, errors.MlirRlError),
])
def test_error_mapping(code, cls, builtin):
    e = errors.from_rpc_error(FakeRpcError(code, "the server's words"))
    assert type(e) is cls
    assert isinstance(e, builtin) and isinstance(e, errors.MlirRlError)
    assert str(e) == "the server's words"
    assert e.code == code


def test_error_without_details_names_the_code():
    e = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, ""), "Step")
    assert str(e) == "Step: NOT_FOUND"
    assert isinstance(e, LookupError)


# ---------------------------------------------------------------------------------------------------------------
# FakeServer: the v1 contract in a few lines of Python


TYPES = ["NO_TRANSFORMATION", "TILING", "TILED_PARALLELIZATION", "INTERCHANGE", "VECTORIZATION"]
BENCHMARKS = ["benchmark://nn-ops/matmul_64x64x64_f32", "benchmark://nn-ops/add_256x256_f32",
              "benchmark://other/relu_8_f32"]


def _config(options):
    L = options.max_loops if options.HasField("max_loops") else 4
    sizes = list(options.tile_sizes) or [1, 2, 4, 8, 16, 32, 64]
    per_op = options.actions_per_op if options.HasField("actions_per_op") else 5
    return L, sizes, per_op


class FakeServicer(env_pb2_grpc.MlirRlEnvServicer):
    """One op with three loops of 64; NO_TRANSFORMATION (or ``per_op`` actions) ends the episode with reward 1.
    VECTORIZATION is always masked; tile values must divide 64 on loops 0..2 and be 0 beyond."""

    def __init__(self):
        self.sessions = {}
        self.next_id = 0
        self.lock = threading.Lock()
        self.fail_next = {}  # method -> number of calls to fail with UNAVAILABLE
        self.drop_sessions_on_fail = False
        self.silent_after_done = False  # answer a step after the end with OK and no outcome
        self.calls = []

    def _maybe_fail(self, method, context):
        self.calls.append(method)
        if self.fail_next.get(method, 0) > 0:
            self.fail_next[method] -= 1
            if self.drop_sessions_on_fail:
                self.sessions.clear()  # the "crash" lost every session
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake outage")

    def _session(self, sid, context):
        if sid not in self.sessions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown session '{sid}'")
        return self.sessions[sid]

    def GetVersion(self, request, context):
        self._maybe_fail("GetVersion", context)
        return env_pb2.GetVersionReply(server_version="fake", protocol_version="v1")

    def GetSpaces(self, request, context):
        self._maybe_fail("GetSpaces", context)
        L, sizes, per_op = _config(request.options)
        if L < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_loops must be >= 1")
        K = 1 + len(sizes)
        action = env_pb2.Space(name="action", multi_discrete=env_pb2.MultiDiscreteSpace(
            nvec=[len(TYPES)] + [K] * L + [L], head_names=["type"] + [f"tile_{i}" for i in range(L)] + ["interchange"],
            type_names=TYPES, tile_sizes=[0] + sizes))
        obs = [box("loop_bounds", [L], env_pb2.DTYPE_INT64, 0, 9.2e18),
               box("progress", [4], env_pb2.DTYPE_INT64, 0, 9.2e18),
               box("op_type", [6], env_pb2.DTYPE_FLOAT32, 0, 1),
               box("mask_type", [len(TYPES)], env_pb2.DTYPE_BOOL, 0, 1),
               box("mask_tiles", [L, K], env_pb2.DTYPE_BOOL, 0, 1),
               box("mask_interchange", [L], env_pb2.DTYPE_BOOL, 0, 1)]
        return env_pb2.GetSpacesReply(action_space=action, observation_space=obs)

    def ListBenchmarks(self, request, context):
        self._maybe_fail("ListBenchmarks", context)
        out = []
        for uri in BENCHMARKS:
            dataset, name = uri[len("benchmark://"):].split("/")
            if request.dataset in ("", dataset):
                out.append(env_pb2.BenchmarkInfo(uri=uri, dataset=dataset, name=name, num_ops=1, flops=10))
        return env_pb2.ListBenchmarksReply(benchmarks=out)

    # -- episode logic

    def _masks(self, s):
        L, sizes, _ = s["config"]
        K = 1 + len(sizes)
        done = s["done"]
        mtype = np.array([not done, not done, not done, not done, False])
        tiles = np.zeros((L, K), bool)
        tiles[:, 0] = True
        for i in range(min(L, 3)):
            for v, size in enumerate(sizes, start=1):
                tiles[i, v] = 64 % size == 0
        inter = np.zeros(L, bool)
        inter[: min(L, 3)] = True
        return mtype, tiles, inter

    def _observation(self, s):
        L, sizes, _ = s["config"]
        mtype, tiles, inter = self._masks(s)
        bounds = np.zeros(L, np.int64)
        bounds[: min(L, 3)] = 64
        return env_pb2.Observation(tensors=[
            spaces.array_to_tensor("loop_bounds", bounds, env_pb2.DTYPE_INT64),
            spaces.array_to_tensor("progress", [0, 1, len(s["actions"]), len(s["actions"])], env_pb2.DTYPE_INT64),
            spaces.array_to_tensor("op_type", [0, 1, 0, 0, 0, 0], env_pb2.DTYPE_FLOAT32),
            spaces.array_to_tensor("mask_type", mtype, env_pb2.DTYPE_BOOL),
            spaces.array_to_tensor("mask_tiles", tiles, env_pb2.DTYPE_BOOL),
            spaces.array_to_tensor("mask_interchange", inter, env_pb2.DTYPE_BOOL),
        ], ir=f"func.func @kernel // after {len(s['actions'])} actions")

    def _info(self, s):
        return env_pb2.EpisodeInfo(op_index=0, num_ops=1, step=len(s["actions"]),
                                   current_op="" if s["done"] else "linalg.matmul")

    def _apply(self, s, values, context):
        L, sizes, per_op = s["config"]
        n = 2 + L
        if s["done"]:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the episode is over (terminated)")
        if len(values) != n:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"action has {len(values)} values, expected {n}")
        nvec = [len(TYPES)] + [1 + len(sizes)] * L + [L]
        for i, (v, m) in enumerate(zip(values, nvec)):
            if not 0 <= v < m:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"action value {v} for head {i} is out of range")
        mtype, tiles, _ = self._masks(s)
        if not mtype[values[0]]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"head 'type' = {values[0]} is masked")
        if values[0] in (1, 2):
            for i in range(L):
                if not tiles[i, values[1 + i]]:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"head 'tile_{i}' is masked")
        s["actions"].append(list(values))
        s["done"] = values[0] == 0 or len(s["actions"]) >= per_op
        reward = 1.0 if s["done"] else 0.0
        ev = env_pb2.Evaluation(median_ns=5.0, reference_ns=10.0, speedup=2.0, correct=True) if s["done"] else None
        return env_pb2.StepOutcome(action=env_pb2.Action(values=values), description=f"{TYPES[values[0]]} op 0",
                                   applied=True, reward=reward, evaluation=ev, apply_ms=0.5)

    def Reset(self, request, context):
        self._maybe_fail("Reset", context)
        if request.benchmark not in BENCHMARKS:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown benchmark '{request.benchmark}'")
        with self.lock:
            sid = f"s{self.next_id}"
            self.next_id += 1
        s = {"benchmark": request.benchmark, "config": _config(request.options), "actions": [], "done": False,
             "seed": request.seed if request.HasField("seed") else None}
        for a in request.replay_actions:
            self._apply(s, list(a.values), context)
        self.sessions.pop(request.close_session_id, None)
        self.sessions[sid] = s
        return env_pb2.ResetReply(session_id=sid, observation=self._observation(s), info=self._info(s),
                                  benchmark=request.benchmark)

    def Step(self, request, context):
        self._maybe_fail("Step", context)
        s = self._session(request.session_id, context)
        outcomes = []
        for a in request.actions:
            if s["done"] and (outcomes or self.silent_after_done):
                break
            outcomes.append(self._apply(s, list(a.values), context))
        return env_pb2.StepReply(observation=self._observation(s), reward=sum(o.reward for o in outcomes),
                                 terminated=s["done"], truncated=False, outcomes=outcomes, info=self._info(s))

    def Observe(self, request, context):
        self._maybe_fail("Observe", context)
        s = self._session(request.session_id, context)
        obs = self._observation(s)
        if not request.observation.include_ir:
            obs.ir = ""
        return env_pb2.ObserveReply(observation=obs, info=self._info(s), terminated=s["done"])

    def Fork(self, request, context):
        self._maybe_fail("Fork", context)
        s = self._session(request.session_id, context)
        with self.lock:
            sid = f"s{self.next_id}"
            self.next_id += 1
        self.sessions[sid] = copy.deepcopy(s)
        return env_pb2.ForkReply(session_id=sid)

    def Close(self, request, context):
        self._session(request.session_id, context)
        del self.sessions[request.session_id]
        return env_pb2.CloseReply()

    def ExportSchedule(self, request, context):
        self._maybe_fail("ExportSchedule", context)
        s = self._session(request.session_id, context)
        return env_pb2.ExportScheduleReply(
            transform_script="transform.named_sequence @__transform_main() {}", benchmark_ir="ir0",
            current_ir=f"ir{len(s['actions'])}", benchmark=s["benchmark"],
            actions=[env_pb2.Action(values=a) for a in s["actions"]])


@pytest.fixture
def fake():
    servicer = FakeServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    env_pb2_grpc.add_MlirRlEnvServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.address = f"127.0.0.1:{port}"
    yield servicer
    server.stop(grace=None)


MATMUL = BENCHMARKS[0]


def legal_action(env, type_name="TILING"):
    masks = env.head_masks()
    a = np.zeros(len(env.nvec), np.int64)
    a[0] = env.type_names.index(type_name)
    for i, name in enumerate(env.head_names):
        if name.startswith("tile_"):
            a[i] = np.flatnonzero(masks[i])[-1]
    return a


def test_fake_episode(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        assert env.head_names == ["type", "tile_0", "tile_1", "tile_2", "interchange"]
        assert env.max_loops == 3 and env.type_names == TYPES and env.tile_sizes[:3] == [0, 1, 2]
        obs, info = env.reset(seed=5)
        assert env.observation_space.contains(obs)
        assert list(obs) == list(env.observation_space.spaces)
        assert info["benchmark"] == MATMUL and info["step"] == 0 and "reference" not in info and env.reference is None
        assert fake.sessions[env.session_id]["seed"] == 5
        mask = env.action_masks()
        assert mask.dtype == bool and mask.shape == (sum(env.nvec),)
        assert mask[:5].tolist() == [True, True, True, True, False]
        a = legal_action(env)
        obs, reward, terminated, truncated, info = env.step(a)
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["applied"] and info["description"] == "TILING op 0" and "evaluation" not in info
        assert "apply_ms" not in info and env.last_apply_ms == 0.5 and env.last_evaluation is None
        assert info["step"] == 1 and obs["progress"][2] == 1
        assert env.actions == [a.tolist()]
        _, reward, terminated, _, info = env.step([0, 0, 0, 0, 0])
        assert reward == 1.0 and terminated
        assert info["evaluation"] == {"speedup": 2.0, "correct": True, "failure": ""}
        assert env.last_evaluation["median_ns"] == 5.0 and env.last_evaluation["reference_ns"] == 10.0
        with pytest.raises(errors.FailedPreconditionError, match="over"):
            env.step([0, 0, 0, 0, 0])
        fake.silent_after_done = True
        with pytest.raises(errors.FailedPreconditionError, match="over"):
            env.step([0, 0, 0, 0, 0])
        assert len(env.actions) == 2
        sched = env.export_schedule()
        assert sched["actions"] == [a.tolist(), [0, 0, 0, 0, 0]] and sched["benchmark"] == MATMUL
        assert env.render().startswith("func.func")


def test_fake_observation_is_the_callers_to_modify(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        for obs in (env.reset()[0], env.step(legal_action(env))[0], env.observe()[0]):
            masks = env.action_masks()
            for a in obs.values():
                assert a.flags.writeable and a.flags.owndata
                a[...] = 0  # the environment's masks are its own copy
            np.testing.assert_array_equal(env.action_masks(), masks)
            assert masks.any()
        child = env.fork()
        np.testing.assert_array_equal(child.action_masks(), env.action_masks())
        child.close()


def test_fake_reset_without_seed_sends_zero_and_closes_the_previous_session(fake):
    with mlir_rl.make(MATMUL, server=fake.address) as env:
        env.reset()
        first = env.session_id
        assert fake.sessions[first]["seed"] == 0
        env.reset(options={"benchmark": BENCHMARKS[1]})
        assert first not in fake.sessions and list(fake.sessions) == [env.session_id]
        assert env.benchmark == BENCHMARKS[1]
        with pytest.raises(ValueError, match="unknown reset option"):
            env.reset(options={"benchmrk": MATMUL})


def test_fake_errors_keep_the_env_usable(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        env.reset()
        with pytest.raises(errors.InvalidArgumentError, match="action has 2 values, expected 5"):
            env.step([1, 0])
        with pytest.raises(ValueError, match="masked"):
            env.step([4, 0, 0, 0, 0])
        with pytest.raises(ValueError, match="integers"):
            env.step([1.5, 0, 0, 0, 0])
        with pytest.raises(ValueError, match="1-D"):
            env.step([[1, 0, 0, 0, 0]])
        assert env.actions == []
        env.step(np.array([1.0, 1, 1, 0, 0]))  # integral floats are accepted
        assert env.actions == [[1, 1, 1, 0, 0]]
    with pytest.raises(errors.NotFoundError, match="unknown benchmark 'benchmark://nn-ops/nope'"):
        with mlir_rl.make("nn-ops/nope", server=fake.address) as env:
            env.reset()


def test_fake_seeded_pick_and_list(fake):
    with mlir_rl.make(server=fake.address) as env:
        picks = []
        for _ in range(2):
            _, info = env.reset(seed=3)
            picks.append(info["benchmark"])
        assert picks[0] == picks[1] and picks[0] in BENCHMARKS
        many = set()
        for seed in range(30):
            _, info = env.reset(seed=seed)
            many.add(info["benchmark"])
        assert len(many) > 1  # the seed matters
    assert [b["uri"] for b in mlir_rl.list_benchmarks(server=fake.address, dataset="other")] == [BENCHMARKS[2]]
    assert mlir_rl.version(server=fake.address)["protocol_version"] == "v1"


def test_fake_fork_and_close(fake):
    env = mlir_rl.make(MATMUL, server=fake.address, max_loops=3)
    env.reset()
    child = env.fork()
    assert child.session_id != env.session_id and len(fake.sessions) == 2
    child.step(legal_action(child))
    assert len(child.actions) == 1 and env.actions == []
    assert env.observe()[0]["progress"][2] == 0 and child.observe()[0]["progress"][2] == 1
    child.close()
    assert child.closed and len(fake.sessions) == 1
    env.step(legal_action(env))  # the shared channel is still open
    sid = env.session_id
    with env:
        pass
    assert env.closed and sid not in fake.sessions
    with pytest.raises(errors.FailedPreconditionError, match="closed"):
        env.observe()
    env.close()  # idempotent


def test_fake_retries_unavailable_on_idempotent_calls(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        env.reset()
        fake.fail_next["Observe"] = 2
        env.observe()
        assert fake.calls.count("Observe") == 3
        fake.fail_next["Observe"] = 10
        with pytest.raises(errors.UnavailableError, match="fake outage"):
            env.observe()
        fake.fail_next["Observe"] = 0
    fake.fail_next["GetSpaces"] = 1
    MlirRlEnv(MATMUL, server=fake.address).close()


def test_fake_step_unavailable_is_not_repeated_when_the_session_survived(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        env.reset()
        fake.fail_next["Step"] = 1
        with pytest.raises(errors.UnavailableError):
            env.step(legal_action(env))
        assert fake.calls.count("Step") == 1 and env.actions == [] and env.recoveries == 0
        env.step(legal_action(env))
        assert len(env.actions) == 1


def test_fake_recovers_after_the_server_lost_the_session(fake):
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3) as env:
        env.reset(seed=9)
        a = legal_action(env)
        env.step(a)
        before, _ = env.observe()
        old = env.session_id
        fake.sessions.clear()  # a restart
        after, info = env.observe()
        assert env.recoveries == 1 and env.session_id != old
        assert all(np.array_equal(before[k], after[k]) for k in before)
        new = fake.sessions[env.session_id]
        assert new["actions"] == [a.tolist()] and new["seed"] == 9 and new["benchmark"] == MATMUL
        assert new["config"][0] == 3  # same options
        # a crash during a step: UNAVAILABLE, then the session is gone -> replay and apply the step once
        fake.fail_next["Step"] = 1
        fake.drop_sessions_on_fail = True
        _, _, _, _, info = env.step(a)
        assert env.recoveries == 2 and info["step"] == 2
        assert fake.sessions[env.session_id]["actions"] == [a.tolist(), a.tolist()]
    with mlir_rl.make(MATMUL, server=fake.address, max_loops=3, auto_recover=False) as env:
        env.reset()
        fake.sessions.clear()
        with pytest.raises(errors.NotFoundError, match="unknown session"):
            env.observe()
