"""The Stable-Baselines3 VecEnv adapter (issue 18, item 6), driven as SB3 drives a VecEnv (SB3 itself is not
installable here): seed / reset / step_async / step_wait as in OnPolicyAlgorithm.collect_rollouts, action masks
as sb3-contrib's MaskablePPO asks for them, and the attribute calls of its wrappers, checked against what SB3's
DummyVecEnv would return over make() envs for the same seeds and actions."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import mlir_rl
from mlir_rl.sb3 import HAVE_SB3, Sb3VecEnv, make_sb3_vec

from test_python_client import MATMUL, obs_equal, sample_masked_action, tiling_action

B = "benchmark://nn-ops/relu_128x256_f32"


class ReferenceDummyVecEnv:
    """What SB3's DummyVecEnv.reset / step_wait do over Gymnasium envs (stable_baselines3/common/vec_env/
    dummy_vec_env.py), in brief."""

    def __init__(self, envs):
        self.envs = envs
        self.reset_infos = [{} for _ in envs]

    def reset(self, seeds):
        obs = []
        for i, env in enumerate(self.envs):
            o, self.reset_infos[i] = env.reset(seed=seeds[i])
            obs.append(o)
        return obs

    def step(self, actions):
        obs, rewards, dones, infos = [], [], [], []
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, info = env.step(actions[i])
            info["TimeLimit.truncated"] = truncated and not terminated
            if terminated or truncated:
                info["terminal_observation"] = o
                o, self.reset_infos[i] = env.reset()
            obs.append(o)
            rewards.append(r)
            dones.append(terminated or truncated)
            infos.append(info)
        return obs, np.array(rewards, dtype=np.float32), np.array(dones), infos


def _masks_like_maskable_ppo(venv) -> np.ndarray:
    # sb3_contrib.common.maskable.utils.get_action_masks for a VecEnv
    return np.stack(venv.env_method("action_masks"))


def _without_session_id(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "session_id"}


def test_driven_like_sb3_matches_dummy_vec_env(server):
    venv = make_sb3_vec(3, MATMUL, server=server, max_steps=3)
    reference = ReferenceDummyVecEnv([mlir_rl.make(MATMUL, server=server, max_steps=3) for _ in range(3)])
    try:
        assert HAVE_SB3 or not hasattr(venv, "__abstractmethods__")
        assert venv.num_envs == 3
        assert venv.observation_space == venv.envs[0].observation_space  # SB3: the single env's spaces
        assert venv.action_space == venv.envs[0].action_space
        assert venv.get_attr("render_mode") == [None] * 3

        seeds = venv.seed(11)  # set_random_seed(); applies at the next reset
        assert seeds == [11, 12, 13]
        obs = venv.reset()
        ref_obs = reference.reset(seeds)
        for i in range(3):
            assert obs_equal({k: v[i] for k, v in obs.items()}, ref_obs[i])
            assert _without_session_id(venv.reset_infos[i]) == _without_session_id(reference.reset_infos[i])

        rng = np.random.default_rng(0)
        ended = 0
        for step in range(7):  # max_steps=3: every sub-environment ends at least twice
            masks = _masks_like_maskable_ppo(venv)
            assert masks.shape == (3, sum(venv.envs[0].nvec)) and np.array_equal(masks, venv.action_masks())
            actions = np.stack([sample_masked_action(e, rng) for e in venv.envs])
            venv.step_async(actions)
            obs, rewards, dones, infos = venv.step_wait()
            ref_obs, ref_rewards, ref_dones, ref_infos = reference.step(actions)
            assert rewards.dtype == np.float32 and dones.dtype == bool and isinstance(infos, list)
            np.testing.assert_array_equal(rewards, ref_rewards)
            np.testing.assert_array_equal(dones, ref_dones)
            for i in range(3):
                assert obs_equal({k: v[i] for k, v in obs.items()}, ref_obs[i]), (step, i)
                mine, theirs = dict(infos[i]), dict(ref_infos[i])
                if dones[i]:
                    assert obs_equal(mine.pop("terminal_observation"), theirs.pop("terminal_observation"))
                    assert _without_session_id(venv.reset_infos[i]) == \
                        _without_session_id(reference.reset_infos[i])
                    assert venv.reset_infos[i]["step"] == 0 and obs["progress"][i][2] == 0
                    ended += 1
                assert mine == theirs, (step, i, mine, theirs)
        assert ended >= 6  # each sub-environment ends at least every 3 steps
    finally:
        venv.close()
        for e in reference.envs:
            e.close()
    assert venv.venv.closed


def test_attribute_calls_options_and_indices(server):
    with mlir_rl.make_vec(2, MATMUL, server=server) as vector:
        venv = Sb3VecEnv(vector)
        venv.set_options({"benchmark": B})  # next reset only
        venv.reset()
        assert venv.get_attr("benchmark") == [B, B]
        venv.set_options([{}, {"benchmark": B}])
        venv.reset()
        assert venv.get_attr("benchmark") == [MATMUL, B]
        venv.reset()
        assert venv.get_attr("benchmark") == [MATMUL, MATMUL]
        venv.set_attr("tag", "x", indices=[1])
        assert venv.get_attr("tag", indices=1) == ["x"] and not hasattr(venv.envs[0], "tag")
        assert venv.has_attr("action_masks") and not venv.has_attr("no_such_attribute")
        assert venv.env_method("export_schedule", indices=0)[0]["benchmark"] == MATMUL
        assert venv.env_is_wrapped(type("SomeWrapper", (), {})) == [False, False]
        assert venv.getattr_depth_check("num_envs", True) is not None
        assert venv.getattr_depth_check("no_such_attribute", True) is None
        assert venv.unwrapped is venv and len(venv.render()) == 2
        obs, rewards, dones, infos = venv.step(np.stack([tiling_action(e) for e in venv.envs]))
        assert not dones.any() and all(not i["TimeLimit.truncated"] for i in infos)
        with pytest.raises(ValueError, match="step_async"):
            venv.step_wait()
    with pytest.raises(ValueError, match="MlirRlVectorEnv"):
        Sb3VecEnv(copy.copy([]))
