"""The vector env's Gymnasium conventions (issue 14, item 2): autoreset modes, reset_mask, the info layout, and, with
Gymnasium importable, being a gymnasium.vector.VectorEnv that behaves like Gymnasium's own SyncVectorEnv over the
same environments and that Gymnasium's vector wrappers accept.

The tests that need gymnasium are skipped without it; test_gymnasium_versions.py runs this file under each vendored
Gymnasium (1.3.0 and 0.29.1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlir_rl
from mlir_rl import errors
from mlir_rl.vector import DEFAULT_AUTORESET_MODE, GYMNASIUM_VECTOR_API, LEGACY_INFOS, AutoresetMode

from conftest import import_gymnasium
from test_python_client import MATMUL, tiling_action, type_index


def end_action(env: mlir_rl.MlirRlEnv) -> np.ndarray:
    """NO_TRANSFORMATION: the matmul is the only op, so the episode ends (terminated, evaluated)."""
    action = np.zeros(len(env.nvec), dtype=np.int64)
    action[0] = type_index(env, "NO_TRANSFORMATION")
    return action


def _evaluation_of(infos, i: int) -> dict:
    """Sub-environment ``i``'s evaluation from vector infos (1.x layout: a dict of arrays; 0.29: dicts in an object
    array)."""
    if LEGACY_INFOS:
        return infos["evaluation"][i]
    return {k: v[i] for k, v in infos["evaluation"].items() if not k.startswith("_")}


def test_default_autoreset_mode(server):
    with mlir_rl.make_vec(2, MATMUL, server=server) as envs:
        mode = envs.metadata["autoreset_mode"]
        assert mode is DEFAULT_AUTORESET_MODE is envs.autoreset_mode
        assert mode is (AutoresetMode.SAME_STEP if LEGACY_INFOS else AutoresetMode.NEXT_STEP)
        assert envs.metadata["render_modes"] == ["ansi"]
    with pytest.raises(ValueError, match="autoreset_mode"):
        mlir_rl.make_vec(2, MATMUL, server=server, autoreset_mode="later")


def test_next_step_autoreset(server):
    with mlir_rl.make_vec(2, MATMUL, server=server, autoreset_mode="next_step") as envs:
        envs.reset(seed=0)
        e0, e1 = envs.envs
        # Sub-environment 0 ends its episode; 1 goes on.
        obs, rewards, terminated, truncated, infos = envs.step(np.stack([end_action(e0), tiling_action(e1)]))
        assert list(terminated) == [True, False] and not truncated.any()
        assert list(infos["_evaluation"]) == [True, False]
        assert _evaluation_of(infos, 0)["correct"]
        assert "final_obs" not in infos and "final_observation" not in infos
        assert obs["progress"][0][2] == 1  # the last observation of the ended episode, not a new one
        ended_session = e0.session_id
        # Next step: 0 is reset (its action is not even looked at), 1 steps.
        junk = np.full(len(envs.nvec), 10**6, dtype=np.int64)
        obs, rewards, terminated, truncated, infos = envs.step(np.stack([junk, tiling_action(e1, prefer=4)]))
        assert rewards[0] == 0.0 and not terminated.any() and not truncated.any()
        assert list(infos["_benchmark"]) == [True, False] and list(infos["_description"]) == [False, True]
        assert e0.session_id != ended_session and e0.actions == [] and len(e1.actions) == 2
        assert obs["progress"][0][2] == 0 and obs["progress"][1][2] == 2
        # Both step normally again.
        obs, _, _, _, infos = envs.step(np.stack([tiling_action(e0), tiling_action(e1, prefer=2)]))
        assert infos["_description"].all() and len(e0.actions) == 1


def test_disabled_autoreset_and_reset_mask(server):
    with mlir_rl.make_vec(2, MATMUL, server=server, autoreset_mode=AutoresetMode.DISABLED) as envs:
        envs.reset(seed=0)
        e0, e1 = envs.envs
        envs.step(np.stack([end_action(e0), tiling_action(e1)]))
        with pytest.raises(errors.FailedPreconditionError, match=r"environments \[0\].*reset_mask"):
            envs.step(np.stack([tiling_action(e1), tiling_action(e1)]))
        assert len(e1.actions) == 1  # nothing was stepped
        with pytest.raises(ValueError, match="reset_mask"):
            envs.reset(options={"reset_mask": np.array([1, 0])})
        before = e1.observe()[0]
        options = {"reset_mask": np.array([True, False])}
        obs, infos = envs.reset(seed=[7, None], options=options)
        assert "reset_mask" in options  # the caller's dict is left as it was (wrappers read it after us)
        assert list(infos["_benchmark"]) == [True, False] and e0.actions == [] and len(e1.actions) == 1
        for name, value in before.items():  # the row of the sub-environment not reset is its current observation
            np.testing.assert_array_equal(obs[name][1], value)
        envs.step(np.stack([tiling_action(e0), tiling_action(e1, prefer=4)]))
        assert len(e0.actions) == 1 and len(e1.actions) == 2


def _comparable(data: Any) -> Any:
    """``data`` without session ids (they differ between any two sessions) and with plain dicts (SyncVectorEnv
    batches Dict observations into dicts, this env into OrderedDicts)."""
    if isinstance(data, dict):
        return {k: _comparable(v) for k, v in data.items() if k not in ("session_id", "_session_id")}
    if isinstance(data, np.ndarray) and data.dtype == object:
        out = np.empty(data.shape, dtype=object)
        for i, v in enumerate(data):
            out[i] = _comparable(v)
        return out
    return data


MODES = ["NEXT_STEP", "SAME_STEP", "DISABLED"]


@pytest.mark.parametrize("mode", MODES)
def test_behaves_like_gymnasium_sync_vector_env(server, mode):
    """Observations, rewards, terminations, truncations and infos (keys, masks, layout, values) equal those of
    Gymnasium's SyncVectorEnv over MlirRlEnvs for the same seeds and actions, episodes ending on either side."""
    gymnasium = import_gymnasium()
    from gymnasium.utils.env_checker import data_equivalence

    if GYMNASIUM_VECTOR_API == 0 and mode != "SAME_STEP":
        pytest.skip("Gymnasium 0.29's SyncVectorEnv has same-step autoreset only")
    kwargs = {} if GYMNASIUM_VECTOR_API == 0 else {"autoreset_mode": getattr(gymnasium.vector.AutoresetMode, mode)}
    ours = mlir_rl.make_vec(2, MATMUL, server=server, max_steps=3, autoreset_mode=mode)
    theirs = gymnasium.vector.SyncVectorEnv([lambda: mlir_rl.make(MATMUL, server=server, max_steps=3)] * 2,
                                            **kwargs)
    try:
        assert isinstance(ours, gymnasium.vector.VectorEnv)
        results = [ours.reset(seed=3), theirs.reset(seed=3)]
        assert data_equivalence(_comparable(results[0][0]), _comparable(results[1][0]))
        assert data_equivalence(_comparable(results[0][1]), _comparable(results[1][1]))
        e0 = ours.envs[0]
        tile, end = tiling_action(e0), end_action(e0)
        # 0 ends at step 2 (terminated), 1 at step 3 (max_steps: truncated); then both go on in a new episode.
        script = [(tile, tile), (end, tile), (tile, tile), (tile, end), (tile, tile), (end, tile)]
        for k, (a0, a1) in enumerate(script):
            if mode == "DISABLED":
                ended = [bool(t or u) for t, u in zip(results[0][2], results[0][3])] if k else [False, False]
                if any(ended):
                    mask = np.array(ended)
                    results = [ours.reset(options={"reset_mask": mask.copy()}),
                               theirs.reset(options={"reset_mask": mask.copy()})]
            actions = np.stack([a0, a1])
            results = [ours.step(actions), theirs.step(actions)]
            (o0, r0, t0, u0, i0), (o1, r1, t1, u1, i1) = results
            assert data_equivalence(_comparable(o0), _comparable(o1)), k
            assert np.array_equal(r0, r1) and np.array_equal(t0, t1) and np.array_equal(u0, u1), (k, r0, r1)
            assert data_equivalence(_comparable(i0), _comparable(i1)), (k, i0, i1)
            if mode == "DISABLED":
                results = [(o0, r0, t0, u0, i0)]
        assert sum(len(e.actions) for e in ours.envs) > 0
    finally:
        ours.close()
        theirs.close()


def test_is_a_gymnasium_vector_env(server):
    gymnasium = import_gymnasium()
    from gymnasium.vector.utils import batch_space

    with mlir_rl.make_vec(3, MATMUL, server=server) as envs:
        assert isinstance(envs, gymnasium.vector.VectorEnv)
        e = envs.envs[0]
        assert envs.num_envs == 3
        assert envs.single_action_space == e.action_space and envs.single_observation_space == e.observation_space
        assert envs.action_space == batch_space(e.action_space, 3)
        assert envs.observation_space == batch_space(e.observation_space, 3)
        obs, _ = envs.reset(seed=0)
        assert obs in envs.observation_space
        envs.action_space.seed(1)
        obs, *_ = envs.step(envs.action_space.sample())  # masked actions are penalized, not refused
        assert obs in envs.observation_space
        assert envs.get_attr("max_loops") == (e.max_loops,) * 3
        assert len(envs.call("action_masks")) == 3 and len(envs.render()) == 3
        if GYMNASIUM_VECTOR_API == 0:
            assert envs.is_vector_env
        else:
            assert isinstance(envs.metadata["autoreset_mode"], gymnasium.vector.AutoresetMode)


def _run_to_episode_ends(envs, n_steps: int):
    """Random steps until every sub-environment ended at least one episode; returns the infos that had episodes."""
    envs.reset(seed=0)
    envs.action_space.seed(0)
    seen = []
    for _ in range(n_steps):
        _, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert np.isfinite(rewards).all()
        if "episode" in infos:
            seen.append(infos)
    return seen


def test_gymnasium_vector_wrappers(server):
    gymnasium = import_gymnasium()
    inner = mlir_rl.make_vec(2, MATMUL, server=server, max_steps=2)
    if GYMNASIUM_VECTOR_API == 0:
        # 0.29's wrappers are gymnasium.Wrapper subclasses that ask for is_vector_env (they crashed on the
        # first step before the vector env was a 0.29 VectorEnv).
        from gymnasium.wrappers import NormalizeReward, RecordEpisodeStatistics
    else:
        from gymnasium.wrappers.vector import DictInfoToList, NormalizeReward, RecordEpisodeStatistics
    envs = RecordEpisodeStatistics(NormalizeReward(inner))
    try:
        seen = _run_to_episode_ends(envs, 6)
        assert seen, "no episode ended in 6 steps of max_steps=2 episodes"
        lengths = np.concatenate([infos["episode"]["l"][infos["_episode"]] for infos in seen])
        assert set(lengths.tolist()) <= {1, 2} and len(envs.return_queue) == len(lengths)
        if GYMNASIUM_VECTOR_API == 1:
            listed = DictInfoToList(inner)
            listed.reset(seed=0)
            _, _, _, _, infos = listed.step(listed.action_space.sample())
            assert isinstance(infos, list) and len(infos) == 2 and all("step" in i for i in infos)
    finally:
        envs.close()
    assert inner.closed


def test_gymnasium_make_vec_builds_the_batched_env(server):
    gymnasium = import_gymnasium()
    if GYMNASIUM_VECTOR_API == 0:
        pytest.skip("gymnasium.make_vec and vector entry points are Gymnasium 1.x")
    envs = gymnasium.make_vec(mlir_rl.ENV_ID, num_envs=2, benchmark=MATMUL, server=server)
    try:
        assert isinstance(envs, mlir_rl.MlirRlVectorEnv) and envs.spec.id == mlir_rl.ENV_ID
        obs, _ = envs.reset(seed=0)
        obs, *_ = envs.step(envs.action_space.sample())
        assert obs in envs.observation_space
    finally:
        envs.close()
    with pytest.raises(ValueError, match="max_steps"):
        gymnasium.make_vec(mlir_rl.ENV_ID, num_envs=2, benchmark=MATMUL, server=server, max_episode_steps=5)
