"""Episodes ended by max_steps (issue 18, item 3).

The step that reaches ``max_steps`` ends the episode; in reward mode "final" it evaluates the schedule and pays the
final reward, so the return is complete: that step must be *terminated* (an agent bootstraps a value onto a
truncated step, which would count the final reward twice). The rule is the server's (env/Session.cpp).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlir_rl

from test_python_client import MATMUL, tiling_action

def test_the_step_that_pays_the_final_evaluation_is_terminated(server):
    with mlir_rl.make(MATMUL, server=server, max_steps=2, reward_mode="final") as env:
        env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step(tiling_action(env))
        assert (reward, terminated, truncated) == (0.0, False, False) and "evaluation" not in info
        _, reward, terminated, truncated, info = env.step(tiling_action(env, prefer=4))
        # The step limit ended the episode: the schedule was evaluated and the final reward paid.
        assert "evaluation" in info and info["evaluation"]["correct"] and reward != 0.0
        assert terminated is True and truncated is False
        _, observed = env.observe()
        assert observed["terminated"] and not observed["truncated"]


def test_vector_env_reports_it_terminated_too(server):
    with mlir_rl.make_vec(2, MATMUL, server=server, max_steps=1) as envs:
        envs.reset(seed=0)
        _, rewards, terminated, truncated, infos = envs.step(np.stack([tiling_action(e) for e in envs.envs]))
        assert infos["_evaluation"].all()
        assert terminated.all() and not truncated.any()
