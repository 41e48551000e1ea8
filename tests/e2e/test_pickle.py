"""Pickling an environment (issue 18, item 1): the copy carries its server address, options and action history and
rebuilds its episode on the server (Reset with replay_actions) on its first call; vector-env wrappers that run each
env in a subprocess (Gymnasium's AsyncVectorEnv) work over mlir_rl envs.

The round-trip tests need no gymnasium; the AsyncVectorEnv tests do (skipped here without it,
test_gymnasium_versions.py runs this file under each vendored Gymnasium).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import mlir_rl
from mlir_rl import errors

from conftest import import_gymnasium
from test_python_client import MATMUL, obs_equal, tiling_action, type_index


def interchange_pointer(env: mlir_rl.MlirRlEnv, pointer: int = 1) -> np.ndarray:
    action = np.zeros(len(env.nvec), dtype=np.int64)
    action[0] = type_index(env, "INTERCHANGE")
    action[-1] = pointer
    return action


def test_pickle_round_trip_continues_the_episode(server):
    with mlir_rl.make(MATMUL, server=server, max_loops=8) as env:
        obs, _ = env.reset(seed=3)
        obs, _, _, _, _ = env.step(tiling_action(env))
        env.np_random.random()  # the RNG's state travels too
        blob = pickle.dumps(env)
        with pickle.loads(blob) as clone:
            # Nothing was called yet: the copy answers from what it carried.
            assert clone.actions == env.actions and clone.benchmark == env.benchmark
            assert clone.options == env.options and clone.nvec == env.nvec and clone.max_loops == 8
            assert clone.action_space == env.action_space and clone.observation_space == env.observation_space
            np.testing.assert_array_equal(clone.action_masks(), env.action_masks())
            assert clone.np_random.bit_generator.state == env.np_random.bit_generator.state
            # The first call rebuilds the episode on a session of its own, in the same state.
            clone_obs, clone_info = clone.observe()
            assert clone.session_id is not None and clone.session_id != env.session_id
            assert obs_equal(clone_obs, obs) and clone_info["step"] == 1
            # The next step works and matches the original's.
            action = interchange_pointer(env)
            expected = env.step(action)
            got = clone.step(action)
            assert obs_equal(got[0], expected[0]) and got[1:4] == expected[1:4]
            assert got[4] == expected[4] and clone.actions == env.actions
        # Closing the copy left the original's session alone.
        assert not env.closed
        env.step(interchange_pointer(env, 2))


def test_pickle_before_reset_after_close_and_after_the_end(server):
    with mlir_rl.make(MATMUL, server=server) as env:
        fresh = pickle.loads(pickle.dumps(env))
        with pytest.raises(errors.FailedPreconditionError, match="reset"):
            fresh.action_masks()
        obs, _ = fresh.reset(seed=0)
        assert obs in fresh.observation_space
        fresh.close()

        env.reset(seed=0)
        end = np.zeros(len(env.nvec), dtype=np.int64)
        end[0] = type_index(env, "NO_TRANSFORMATION")  # the only op: the episode ends and is evaluated
        _, reward, terminated, _, info = env.step(end)
        assert terminated
        ended = copy.deepcopy(env)  # deepcopy goes through the same state
        _, observed = ended.observe()
        assert observed["terminated"] and ended.actions == env.actions
        with pytest.raises(errors.FailedPreconditionError, match="over"):
            ended.step(end)
        ended.close()

    closed = pickle.loads(pickle.dumps(env))
    assert closed.closed
    with pytest.raises(errors.FailedPreconditionError, match="closed"):
        closed.reset()
    closed.close()


def test_fork_is_not_a_pickled_copy(server):
    """fork() shares the channel and copies the session on the server (no replay)."""
    with mlir_rl.make(MATMUL, server=server) as env:
        env.reset(seed=0)
        env.step(tiling_action(env))
        child = env.fork()
        try:
            assert child._conn is env._conn and child.session_id != env.session_id
            assert child.recoveries == 0 and child.actions == env.actions
        finally:
            child.close()


def _make_env(server: str) -> mlir_rl.MlirRlEnv:
    return mlir_rl.make(MATMUL, server=server)


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_async_vector_env_over_mlir_rl_envs(server, context):
    """Gymnasium's AsyncVectorEnv runs each env in a subprocess. With "spawn" (and "forkserver", SB3's default)
    the env factories are pickled; the second factory here returns an env built, reset and stepped in this
    process, so the env itself travels through pickle and continues its episode over there."""
    gymnasium = import_gymnasium()
    import functools

    carried = mlir_rl.make(MATMUL, server=server, max_steps=3)
    carried.reset(seed=1)
    carried.step(tiling_action(carried))
    expected_steps = len(carried.actions)
    factories = [functools.partial(_make_env, server), lambda: carried]
    envs = gymnasium.vector.AsyncVectorEnv(factories, context=context, shared_memory=False)
    try:
        assert envs.num_envs == 2
        if context == "spawn":
            # The carried env's episode goes on in its subprocess (reset only by the vector env's reset).
            steps = envs.get_attr("actions")
            assert len(steps[1]) == expected_steps
        obs, infos = envs.reset(seed=0)
        assert obs in envs.observation_space
        envs.action_space.seed(0)
        for _ in range(4):
            obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
            assert obs in envs.observation_space and rewards.shape == (2,)
            assert np.isfinite(rewards).all()
        masks = envs.call("action_masks")
        assert len(masks) == 2 and masks[0].shape == (sum(carried.nvec),)
    finally:
        envs.close()
        carried.close()
