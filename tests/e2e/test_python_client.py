"""End-to-end tests of the Python client against the real server (see conftest.py for how it is started)."""

from __future__ import annotations

import numpy as np
import pytest

import mlir_rl
from mlir_rl import errors
from mlir_rl.env import Connection
from mlir_rl.v1 import env_pb2

from conftest import ServerProcess, server_binary, start_server

MATMUL = "benchmark://nn-ops/matmul_64x64x64_f32"
TYPE_NAMES = [
    "NO_TRANSFORMATION", "TILING", "TILED_PARALLELIZATION", "INTERCHANGE", "VECTORIZATION", "TILED_FUSION", "IMG2COL",
    "UNROLL", "PEELED_TILING", "PACK", "SPLIT_REDUCTION",
]
MAX_EPISODE_STEPS = 200  # far more than a one-op benchmark can take


# ---------------------------------------------------------------------------------------------------------------
# helpers


def split_masks(env: mlir_rl.MlirRlEnv) -> list:
    """``env.action_masks()`` cut back into one mask per head, in nvec order."""
    flat = env.action_masks()
    return np.split(flat, np.cumsum(env.nvec)[:-1])


def sample_masked_action(env: mlir_rl.MlirRlEnv, rng: np.random.Generator) -> np.ndarray:
    """A random action whose every head takes a value its mask allows (0 when a head allows nothing)."""
    action = np.zeros(len(env.nvec), dtype=np.int64)
    for i, mask in enumerate(split_masks(env)):
        allowed = np.flatnonzero(mask)
        action[i] = rng.choice(allowed) if allowed.size else 0
    return action


def type_index(env: mlir_rl.MlirRlEnv, name: str) -> int:
    return env.type_names.index(name)


def tiling_action(env: mlir_rl.MlirRlEnv, type_name: str = "TILING", prefer: int = 16) -> np.ndarray:
    """A legal tiling action: on every loop, the allowed non-zero tile size closest to ``prefer``."""
    masks = split_masks(env)
    assert masks[0][type_index(env, type_name)], f"{type_name} is not legal here"
    action = np.zeros(len(env.nvec), dtype=np.int64)
    action[0] = type_index(env, type_name)
    tiled = 0
    for i, name in enumerate(env.head_names):
        if not name.startswith("tile_"):
            continue
        allowed = [v for v in np.flatnonzero(masks[i]) if v != 0]
        if allowed:
            action[i] = min(allowed, key=lambda v: abs(env.tile_sizes[v] - prefer))
            tiled += 1
    assert tiled > 0, "no loop has a legal non-zero tile size"
    return action


def obs_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def env(server):
    with mlir_rl.make(MATMUL, server=server) as e:
        yield e


# ---------------------------------------------------------------------------------------------------------------
# server metadata


def test_version(server):
    v = mlir_rl.version(server=server)
    assert v["protocol_version"] == "v1"
    assert v["server_version"]


def test_list_benchmarks(server):
    benchmarks = mlir_rl.list_benchmarks(server=server)
    by_uri = {b["uri"]: b for b in benchmarks}
    assert MATMUL in by_uri
    b = by_uri[MATMUL]
    assert b["dataset"] == "nn-ops"
    assert b["name"] == "matmul_64x64x64_f32"
    assert b["num_ops"] >= 1
    assert b["flops"] > 0
    only = mlir_rl.list_benchmarks(server=server, dataset="nn-ops")
    assert only and all(x["dataset"] == "nn-ops" for x in only)


# ---------------------------------------------------------------------------------------------------------------
# spaces and observations


def test_reset_observation_matches_space(env):
    obs, info = env.reset(seed=0)
    space = env.observation_space
    assert list(obs.keys()) == list(space.spaces.keys())
    for name, value in obs.items():
        box = space[name]
        assert isinstance(value, np.ndarray), name
        assert value.shape == box.shape, name
        assert value.dtype == box.dtype, name
        assert value.flags.writeable, name
    assert space.contains(obs)
    assert info["benchmark"] == MATMUL
    assert info["num_ops"] >= 1
    assert info["step"] == 0


def test_action_space_description(env):
    assert env.type_names == TYPE_NAMES
    assert env.head_names[0] == "type"
    assert env.head_names[-1] == "interchange"
    assert env.head_names[1:-1] == [f"tile_{i}" for i in range(env.max_loops)]
    assert list(env.action_space.nvec) == env.nvec
    assert env.nvec[0] == len(TYPE_NAMES)
    assert env.nvec[-1] == env.max_loops
    assert env.tile_sizes[0] == 0 and len(env.tile_sizes) == env.nvec[1]


def test_action_masks(env):
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask.dtype == np.bool_
    assert mask.shape == (sum(env.nvec),)
    for name, head in zip(env.head_names, split_masks(env)):
        assert head.any(), f"head {name} allows no value"
    # on a 64x64x64 matmul, some loop can be tiled
    tiling_action(env)


def test_session_options_reach_the_server(server):
    with mlir_rl.make(MATMUL, server=server, max_loops=6, tile_sizes=[2, 4, 8]) as e:
        assert e.max_loops == 6
        assert e.nvec == [len(TYPE_NAMES)] + [4] * 6 + [6]
        assert e.tile_sizes == [0, 2, 4, 8]
        obs, _ = e.reset(seed=0)
        assert obs["mask_tiles"].shape == (6, 4)
        assert e.action_masks().shape == (len(TYPE_NAMES) + 6 * 4 + 6,)


def test_observation_features_follow_session_sizes(server):
    with mlir_rl.make(MATMUL, server=server, max_loops=6, max_accesses=3) as e:
        obs, _ = e.reset(seed=0)
        assert e.observation_space.contains(obs)
        for name in ("load_access", "store_access", "producer_load_access", "producer_store_access"):
            assert obs[name].shape == (3, 6, 7), name
        assert obs["access_ranks"].shape == (2, 3)
        assert obs["op_counts"].shape == (2, 7)
        # C[i, j] += A[i, k] * B[k, j] over loops (i, j, k): rows are tensor dims, columns loops then the constant
        np.testing.assert_array_equal(obs["load_access"][0, :2, :4], [[1, 0, 0, 0], [0, 0, 1, 0]])
        np.testing.assert_array_equal(obs["load_access"][1, :2, :4], [[0, 0, 1, 0], [0, 1, 0, 0]])
        np.testing.assert_array_equal(obs["store_access"][0, :2, :4], [[1, 0, 0, 0], [0, 1, 0, 0]])
        np.testing.assert_array_equal(obs["access_ranks"], [[2, 2, -1], [2, -1, -1]])
        assert obs["op_counts"].tolist() == [[1, 0, 1, 0, 0, 0, 0], [0] * 7]  # mulf, addf
        assert not obs["producer_op_type"].any()  # the matmul's only other operand is a fill
        assert "load_access" in e.spaces_description
    with pytest.raises(ValueError, match="max_accesses"):
        mlir_rl.make(MATMUL, server=server, max_accesses=0)


def test_swap_interchange_mode(server):
    """interchange_mode="swaps": head 'interchange' enumerates the 3L-6 swaps; one step applies a swap."""
    with mlir_rl.make(MATMUL, server=server, interchange_mode="swaps") as e:
        assert e.nvec[-1] == 3 * e.max_loops - 6
        obs, _ = e.reset(seed=0)
        assert e.observation_space.contains(obs)
        legal = np.flatnonzero(obs["mask_interchange"]).tolist()
        assert legal == [0, 1, e.max_loops - 1]  # matmul: swaps (0,1), (1,2), (0,2)
        action = np.zeros(len(e.nvec), dtype=np.int64)
        action[0] = type_index(e, "INTERCHANGE")
        action[-1] = e.max_loops - 1
        _, _, _, _, info = e.step(action)
        assert info["applied"] and "[2, 1, 0]" in info["description"], info
    with pytest.raises(ValueError, match="interchange_mode"):
        mlir_rl.make(MATMUL, server=server, interchange_mode="lehmer")


def test_invalid_session_option_is_a_value_error(server):
    with pytest.raises(ValueError):
        mlir_rl.make(MATMUL, server=server, max_loops=0)
    with pytest.raises(ValueError):
        mlir_rl.make(MATMUL, server=server, reward_mode="sometimes")


# ---------------------------------------------------------------------------------------------------------------
# episodes


def test_random_masked_episode(server):
    with mlir_rl.make(MATMUL, server=server) as e:
        e.reset(seed=7)
        rng = e.np_random
        total, steps, done = 0.0, 0, False
        while not done:
            assert steps < MAX_EPISODE_STEPS, "the episode did not end"
            obs, reward, terminated, truncated, info = e.step(sample_masked_action(e, rng))
            assert np.isfinite(reward)
            assert e.observation_space.contains(obs)
            assert info["step"] == steps + 1
            total += reward
            steps += 1
            done = terminated or truncated
        assert np.isfinite(total)
        assert len(e.actions) == steps


def _raw_observe(server: str, session_id: str, since: int = 0) -> "env_pb2.ObserveReply":
    """Observe on a connection of its own, behind any environment's back."""
    conn = Connection(server)
    try:
        return conn.call("Observe", env_pb2.ObserveRequest(
            session_id=session_id, observation=env_pb2.ObservationRequest(since=since)), idempotent=True)
    finally:
        conn.release()


def _full_observation(env: mlir_rl.MlirRlEnv) -> dict:
    """The session's observation with every tensor (since = 0)."""
    from mlir_rl import spaces
    return spaces.observation_to_dict(_raw_observe(env.server, env.session_id).observation)


def test_delta_observations_rebuild_every_tensor(server):
    # Steps fetch only the tensors that changed; what the environment returns must equal the full observation.
    with mlir_rl.make(MATMUL, server=server) as e:
        for seed in range(3):
            obs, _ = e.reset(seed=seed)
            assert obs_equal(obs, _full_observation(e))
            rng = np.random.default_rng(seed)
            done = False
            while not done:
                for array in obs.values():
                    array[...] = 1  # the caller may scribble on what it got: the next observation is unaffected
                obs, _, terminated, truncated, _ = e.step(sample_masked_action(e, rng))
                done = terminated or truncated
                assert obs_equal(obs, _full_observation(e))


def test_a_missed_reply_gets_a_full_observation(server):
    with mlir_rl.make(MATMUL, server=server) as e:
        e.reset(seed=0)
        # Someone else takes an observation of the session: the environment's id is no longer the latest, as
        # after a lost reply. Its next step must not be a delta against the wrong base.
        _raw_observe(server, e.session_id, since=e._obs_id)
        obs, _, _, _, _ = e.step(tiling_action(e))
        assert obs_equal(obs, _full_observation(e))


def test_reset_closes_the_previous_session(server):
    with mlir_rl.make(MATMUL, server=server) as e:
        e.reset(seed=0)
        old = e.session_id
        e.reset(seed=1)
        with pytest.raises(errors.NotFoundError):
            _raw_observe(server, old)
        # A reset that fails (unknown benchmark) still closes the session it replaces, and the env can go on.
        current = e.session_id
        with pytest.raises(errors.NotFoundError):
            e.reset(options={"benchmark": "benchmark://nn-ops/no_such_kernel"})
        with pytest.raises(errors.NotFoundError):
            _raw_observe(server, current)
        e.reset(seed=2)
        e.step(tiling_action(e))


def test_reset_replay_actions_rebuilds_the_state(env):
    env.reset(seed=0)
    action = tiling_action(env)
    obs1, _, _, _, info = env.step(action)
    assert info["applied"], info["failure_reason"]
    obs2, info2 = env.reset(seed=0, options={"replay_actions": [action]})
    assert obs_equal(obs1, obs2)
    assert env.actions == [action.tolist()]
    assert info2["step"] == 1


def test_unknown_benchmark_is_not_found(server):
    with mlir_rl.make("benchmark://nn-ops/no_such_kernel", server=server) as e:
        with pytest.raises(errors.NotFoundError) as excinfo:
            e.reset()
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, LookupError)
    assert "no_such_kernel" in str(excinfo.value)
    assert not str(excinfo.value).startswith("'")  # not quoted like a KeyError


def test_wrong_action_length(env):
    env.reset(seed=0)
    expected = len(env.nvec)
    with pytest.raises(errors.InvalidArgumentError) as excinfo:
        env.step([type_index(env, "TILING"), 1, 1])
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert "3" in message and str(expected) in message, message
    # the rejected action changed nothing
    assert env.actions == []
    _, _, _, _, info = env.step(tiling_action(env))
    assert info["step"] == 1


def test_out_of_range_value(env):
    env.reset(seed=0)
    action = np.zeros(len(env.nvec), dtype=np.int64)
    action[0] = env.nvec[0]  # one past the last type
    with pytest.raises(ValueError) as excinfo:
        env.step(action)
    assert isinstance(excinfo.value, errors.InvalidArgumentError)
    assert "type" in str(excinfo.value)


def test_masked_value(server):
    with mlir_rl.make(MATMUL, server=server, masked_actions="reject") as env:
        _check_masked_value_is_rejected(env)


def _check_masked_value_is_rejected(env: mlir_rl.MlirRlEnv) -> None:
    env.reset(seed=0)
    masks = split_masks(env)
    masked_types = np.flatnonzero(~masks[0])
    if masked_types.size:
        action = np.zeros(len(env.nvec), dtype=np.int64)
        action[0] = masked_types[0]
    else:  # every type is legal: use TILING with a masked tile size
        action = tiling_action(env)
        for i, name in enumerate(env.head_names):
            if name.startswith("tile_") and not masks[i].all():
                action[i] = np.flatnonzero(~masks[i])[0]
                break
        else:
            pytest.fail("no head has a masked value")
    with pytest.raises(ValueError) as excinfo:
        env.step(action)
    assert isinstance(excinfo.value, errors.InvalidArgumentError)
    assert "masked" in str(excinfo.value)
    assert env.actions == []


def finish_episode(env: mlir_rl.MlirRlEnv) -> None:
    """Steps (NO_TRANSFORMATION when legal, else a random legal action) until the episode ends."""
    rng = np.random.default_rng(0)
    no_op = type_index(env, "NO_TRANSFORMATION")
    for _ in range(MAX_EPISODE_STEPS):
        if split_masks(env)[0][no_op]:
            action = np.zeros(len(env.nvec), dtype=np.int64)
            action[0] = no_op
        else:
            action = sample_masked_action(env, rng)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return
    pytest.fail("the episode did not end")


def test_step_after_termination(env):
    env.reset(seed=0)
    finish_episode(env)
    steps = len(env.actions)
    with pytest.raises(errors.FailedPreconditionError) as excinfo:
        env.step(np.zeros(len(env.nvec), dtype=np.int64))
    assert isinstance(excinfo.value, RuntimeError)
    assert len(env.actions) == steps


def test_server_refuses_step_after_termination(env):
    """The server itself answers FAILED_PRECONDITION (rather than OK with no outcome, which the client also maps)."""
    env.reset(seed=0)
    finish_episode(env)
    request = env_pb2.StepRequest(session_id=env.session_id, actions=[env_pb2.Action(values=[0] * len(env.nvec))])
    conn = Connection(env.server)
    try:
        with pytest.raises(errors.FailedPreconditionError) as excinfo:
            conn.call("Step", request, idempotent=False)
    finally:
        conn.release()
    assert "over" in str(excinfo.value)


def test_fork_is_independent(env):
    env.reset(seed=0)
    before, info_before = env.observe()
    child = env.fork()
    try:
        assert child.session_id != env.session_id
        child_obs, _, _, _, child_info = child.step(tiling_action(child))
        assert child_info["step"] == 1
        assert not obs_equal(child_obs, before)
        after, info_after = env.observe()
        assert obs_equal(after, before)
        assert info_after["step"] == info_before["step"] == 0
        assert env.actions == [] and len(child.actions) == 1
    finally:
        child.close()
    # closing the fork leaves the original (and the shared channel) working
    _, _, _, _, info = env.step(tiling_action(env))
    assert info["step"] == 1


def test_export_schedule_after_tiling(env):
    env.reset(seed=0)
    action = tiling_action(env)
    _, _, _, _, info = env.step(action)
    assert info["applied"], info["failure_reason"]
    assert info["description"]
    schedule = env.export_schedule()
    assert "transform.named_sequence" in schedule["transform_script"]
    assert schedule["actions"] == [action.tolist()]
    assert schedule["benchmark"] == MATMUL
    assert "linalg.matmul" in schedule["benchmark_ir"]
    assert schedule["current_ir"] and schedule["current_ir"] != schedule["benchmark_ir"]


def test_render_returns_ir(env):
    env.reset(seed=0)
    ir = env.render()
    assert "func.func" in ir and "linalg.matmul" in ir


def test_reset_seed_picks_the_same_benchmark(server):
    with mlir_rl.make(server=server) as e:
        _, info1 = e.reset(seed=3)
        _, info2 = e.reset(seed=3)
        uris = {b["uri"] for b in e.list_benchmarks()}
    assert info1["benchmark"] == info2["benchmark"]
    assert info1["benchmark"] in uris


def test_context_manager_closes_the_session(server):
    with mlir_rl.make(MATMUL, server=server) as e:
        e.reset(seed=0)
        sid = e.session_id
        assert sid
    assert e.closed
    with pytest.raises(errors.FailedPreconditionError):
        e.observe()
    conn = Connection(server)
    try:
        with pytest.raises(errors.NotFoundError):
            conn.call("Observe", env_pb2.ObserveRequest(session_id=sid), idempotent=True)
    finally:
        conn.release()


def test_recovers_the_episode_after_a_server_restart():
    first = start_server()
    port = first.port
    second = None
    try:
        env = mlir_rl.make(MATMUL, server=first.address)
        try:
            env.reset(seed=0)
            action = tiling_action(env)
            env.step(action)
            before, _ = env.observe()
            old_sid = env.session_id
            first.stop()
            try:
                second = ServerProcess(server_binary(), port=port)
            except RuntimeError as e:
                pytest.skip(f"could not restart the server on port {port}: {e}")
            after, info = env.observe()  # NOT_FOUND -> Reset with the recorded actions -> Observe again
            assert env.recoveries == 1
            assert env.session_id != old_sid
            assert obs_equal(after, before)
            assert info["step"] == 1
            assert env.actions == [action.tolist()]
            _, _, _, _, info = env.step(sample_masked_action(env, np.random.default_rng(0)))
            assert info["step"] == 2
            assert env.recoveries == 1
        finally:
            env.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()



def test_penalize_mode_lets_unmasked_agents_play(server):
    """With masked_actions="penalize", raw action_space.sample() (what gymnasium's check_env does) never raises:
    masked choices are failed steps with the transform penalty, and every episode still ends."""
    with mlir_rl.make(MATMUL, server=server, masked_actions="penalize", actions_per_op=3, max_steps=12) as env:
        env.action_space.seed(5)
        obs, info = env.reset(seed=0)
        assert info["terminated"] is False
        penalized, done, steps = 0, False, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            penalized += not info["applied"]
            done = terminated or truncated
            steps += 1
        assert steps <= 12
        assert penalized >= 1  # uniform sampling over 14 heads hits a masked value almost surely
    with pytest.raises(ValueError):
        mlir_rl.make(MATMUL, server=server, masked_actions="ignore")


TOSA_RELU_MATMUL = """
func.func @tosa_mlp(%x: tensor<1x32x32xf32>, %w: tensor<1x32x16xf32>) -> tensor<1x32x16xf32> {
  %m = tosa.matmul %x, %w : (tensor<1x32x32xf32>, tensor<1x32x16xf32>) -> tensor<1x32x16xf32>
  %r = tosa.clamp %m {min_fp = 0.0 : f32, max_fp = 3.4028235e38 : f32, min_int = 0 : i64, max_int = 9223372036854775807 : i64} : (tensor<1x32x16xf32>) -> tensor<1x32x16xf32>
  return %r : tensor<1x32x16xf32>
}
"""


def test_uploaded_tosa_module_via_make(server):
    with mlir_rl.make(mlir=TOSA_RELU_MATMUL, server=server) as e:
        obs, info = e.reset(seed=0)
        assert e.benchmark.startswith("benchmark://user/")
        done, total = False, 0.0
        while not done:
            masks = e.head_masks()
            action = np.zeros(len(e.nvec), dtype=np.int64)  # NO_TRANSFORMATION unless vectorization is legal
            if masks[0][e.type_names.index("VECTORIZATION")]:
                action[0] = e.type_names.index("VECTORIZATION")
            obs, reward, terminated, truncated, info = e.step(action)
            total += reward
            done = terminated or truncated
        assert info["evaluation"]["correct"], info
    uris = [b["uri"] for b in mlir_rl.list_benchmarks(server=server, split="user")]
    assert any(u.startswith("benchmark://user/") for u in uris)
    with pytest.raises(ValueError) as err:
        mlir_rl.make(mlir="func.func @f(%a: tensor<?xf32>) -> tensor<?xf32> { return %a : tensor<?xf32> }",
                     server=server)
    assert "dynamic shapes" in str(err.value)


def test_generators_and_splits(server):
    families = mlir_rl.generator_families(server=server)
    assert "matmul" in families and "conv2d_nchw" in families
    train = mlir_rl.list_benchmarks(server=server, split="train")
    evals = mlir_rl.list_benchmarks(server=server, split="eval")
    assert train and evals and not {b["uri"] for b in train} & {b["uri"] for b in evals}
    assert all(b["arithmetic_intensity"] > 0 for b in evals)
    with mlir_rl.make("generator://matmul/7", server=server) as e:
        obs, info = e.reset(seed=0)
        assert info["num_ops"] == 1
        assert obs["loop_bounds"][0] > 0


# ---------------------------------------------------------------------------------------------------------------
# Vector environment (StepMany)


def test_vector_env_steps_like_separate_envs(server):
    rng = np.random.default_rng(5)
    with mlir_rl.make_vec(3, MATMUL, server=server) as envs, mlir_rl.make(MATMUL, server=server) as single:
        obs, infos = envs.reset(seed=10)
        assert envs.num_envs == 3 and all(v.shape[0] == 3 for v in obs.values())
        assert list(infos["_session_id"]) == [True] * 3 and len(set(infos["session_id"])) == 3
        assert envs.action_masks().shape == (3, sum(envs.nvec))
        first = envs.envs[1]
        reference, _ = single.reset(seed=11)  # sub-environment 1 was seeded 10 + 1
        for name, value in reference.items():
            np.testing.assert_array_equal(obs[name][1], value)
        for _ in range(3):
            actions = np.stack([sample_masked_action(e, rng) for e in envs.envs])
            # Keep the episodes going: no NO_TRANSFORMATION, no VECTORIZATION (they end the op).
            for i, e in enumerate(envs.envs):
                if actions[i][0] in (type_index(e, "NO_TRANSFORMATION"), type_index(e, "VECTORIZATION")):
                    actions[i] = tiling_action(e, prefer=8) if split_masks(e)[0][type_index(e, "TILING")] else \
                        actions[i]
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            expected = single.step(actions[1])
            assert rewards.shape == terminated.shape == truncated.shape == (3,)
            for name, value in expected[0].items():
                np.testing.assert_array_equal(obs[name][1], value)
            assert rewards[1] == expected[1] and terminated[1] == expected[2] and truncated[1] == expected[3]
            assert infos["description"][1] == expected[4]["description"] and infos["_description"].all()
            if terminated[1] or truncated[1]:
                break
        assert first.actions == single.actions


def test_vector_env_resets_ended_episodes_in_the_same_step(server):
    from mlir_rl.vector import LEGACY_INFOS

    with mlir_rl.make_vec(2, MATMUL, server=server, max_steps=1, autoreset_mode="same_step") as envs:
        envs.reset(seed=0)
        before = [e.session_id for e in envs.envs]
        actions = np.stack([tiling_action(e) for e in envs.envs])
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        # max_steps ends the episodes, and FINAL pays their whole return on that step: terminated, not truncated.
        assert terminated.all() and not truncated.any()
        final_obs, final_info = ("final_observation", "final_info") if LEGACY_INFOS else ("final_obs", "final_info")
        assert infos["_" + final_obs].all() and infos["_" + final_info].all()
        if LEGACY_INFOS:  # Gymnasium 0.29: an object array of dicts
            step, applied = infos[final_info][0]["step"], infos[final_info][0]["applied"]
        else:  # Gymnasium 1.x: a dict of arrays (and the evaluation a dict of arrays in it)
            step, applied = infos[final_info]["step"][0], infos[final_info]["applied"][0]
            assert infos[final_info]["_evaluation"].all() and infos[final_info]["evaluation"]["correct"].all()
        assert step == 1 and applied
        # The returned observation starts the next episode; the final one shows the tiled state.
        assert (obs["progress"][:, 2] == 0).all() and infos[final_obs][0]["progress"][2] == 1
        assert [e.session_id for e in envs.envs] != before and all(e.actions == [] for e in envs.envs)
        assert not np.array_equal(infos[final_obs][0]["progress"], obs["progress"][0])


def test_vector_env_reports_a_refused_entry_and_steps_the_others(server):
    with mlir_rl.make_vec(2, MATMUL, server=server) as envs:
        envs.reset(seed=0)
        good = tiling_action(envs.envs[0])
        bad = np.zeros(len(envs.nvec), dtype=np.int64)
        bad[0] = len(envs.type_names)  # out of range
        with pytest.raises(errors.InvalidArgumentError, match="environment 1: .*other environments took their step"):
            envs.step(np.stack([good, bad]))
        assert len(envs.envs[0].actions) == 1 and envs.envs[1].actions == []
        with pytest.raises(errors.InvalidArgumentError, match="3 actions given for 2 environments"):
            envs.step(np.stack([good, good, good]))
        # Both sessions are still usable.
        envs.step(np.stack([tiling_action(e) for e in envs.envs]))
        assert [len(e.actions) for e in envs.envs] == [2, 1]


def test_vector_env_recovers_its_sessions_after_a_server_restart():
    first = start_server()
    port = first.port
    second = None
    try:
        with mlir_rl.make_vec(2, MATMUL, server=first.address) as envs:
            envs.reset(seed=0)
            actions = np.stack([tiling_action(e) for e in envs.envs])
            obs, _, _, _, _ = envs.step(actions)
            old = [e.session_id for e in envs.envs]
            first.stop()
            try:
                second = ServerProcess(server_binary(), port=port)
            except RuntimeError as e:
                pytest.skip(f"could not restart the server on port {port}: {e}")
            # Both entries come back NOT_FOUND; each session is rebuilt from its recorded action, then steps.
            pointers = np.zeros_like(actions)
            pointers[:, 0] = type_index(envs.envs[0], "INTERCHANGE")
            pointers[:, -1] = 1
            obs, _, _, _, infos = envs.step(pointers)
            assert [e.recoveries for e in envs.envs] == [1, 1]
            assert all(new != before for new, before in zip((e.session_id for e in envs.envs), old))
            assert list(infos["step"]) == [2, 2] and list(infos["interchange_pending"]) == [True, True]
            assert [e.actions for e in envs.envs] == [[a.tolist(), p.tolist()] for a, p in zip(actions, pointers)]
    finally:
        first.stop()
        if second is not None:
            second.stop()
