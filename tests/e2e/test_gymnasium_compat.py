"""Gymnasium's own checks on the single environment (issue 14, items 1-2).

Needs gymnasium: skipped when it is not importable; test_gymnasium_versions.py runs this file under each vendored
Gymnasium (1.3.0 and 0.29.1) in a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import import_gymnasium

gymnasium = import_gymnasium()

from gymnasium.utils.env_checker import check_env, data_equivalence  # noqa: E402

import mlir_rl  # noqa: E402
from mlir_rl import errors  # noqa: E402

from test_python_client import MATMUL, split_masks, tiling_action, type_index  # noqa: E402

GYMNASIUM_1 = int(gymnasium.__version__.split(".")[0]) >= 1


def equivalent(a, b) -> bool:
    """check_env's comparison (exact where the Gymnasium version offers it; 0.29 compares arrays with a tolerance)."""
    return data_equivalence(a, b, exact=True) if GYMNASIUM_1 else data_equivalence(a, b)


def _messages(caught) -> list:
    return [str(w.message) for w in caught]


def _check(env) -> list:
    """check_env(env), returning the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    return _messages(caught)


def test_check_env_passes_with_default_options(server):
    with mlir_rl.make(MATMUL, server=server) as env:
        assert env.unwrapped is env
        messages = _check(env)
        # Without a spec (not built by gymnasium.make) the checker cannot try the other render modes; nothing else.
        assert all("not having a spec" in m for m in messages), messages
        # check_env's step used a sampled action: it was accepted whatever the mask said.
        assert env.actions
    with mlir_rl.make(server=server) as env:  # no benchmark: the train split, drawn with the seed
        messages = _check(env)
        assert all("not having a spec" in m for m in messages), messages


def test_check_env_passes_on_gymnasium_make(server):
    env = gymnasium.make(mlir_rl.ENV_ID, benchmark=MATMUL, server=server)
    try:
        assert env.spec.id == mlir_rl.ENV_ID
        assert isinstance(env.unwrapped, mlir_rl.MlirRlEnv)
        # The unwrapped env with its spec: the render modes and close() are checked too, without a warning.
        assert _check(env.unwrapped) == []
        # Through gymnasium.make's wrappers: only the checker's advice to check the unwrapped env (and, under 0.29,
        # its deprecation notes about attribute access through wrappers).
        messages = _check(env)
        assert all("different from the unwrapped" in m or "deprecated" in m for m in messages), messages
    finally:
        env.close()


def test_check_env_passes_with_benchmark_pools(server):
    """Seeded resets repeat the same benchmark (check_env compares their observations), in random and cycle order."""
    for order in ("random", "cycle"):
        env = gymnasium.make(mlir_rl.ENV_ID, benchmark=[MATMUL, "benchmark://nn-ops/relu_128x256_f32"],
                             server=server, benchmark_order=order)
        try:
            assert _check(env.unwrapped) == []
        finally:
            env.close()


def _masked_action(env: mlir_rl.MlirRlEnv) -> np.ndarray:
    masks = split_masks(env)
    action = np.zeros(len(env.nvec), dtype=np.int64)
    action[0] = np.flatnonzero(~masks[0])[0]
    return action


def test_every_action_of_the_space_is_accepted(server):
    with mlir_rl.make(MATMUL, server=server, actions_per_op=3) as env:
        env.action_space.seed(3)
        env.reset(seed=0)
        masked = _masked_action(env)
        assert masked in env.action_space
        obs, reward, terminated, truncated, info = env.step(masked)
        assert not info["applied"] and info["failure_reason"].startswith("masked action")
        assert reward == -5.0 and env.actions == [masked.tolist()]
        for _ in range(20):
            if terminated or truncated:
                env.reset()
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs in env.observation_space and isinstance(reward, float)
    with mlir_rl.make(MATMUL, server=server, masked_actions="reject") as env:
        env.reset(seed=0)
        with pytest.raises(errors.InvalidArgumentError, match="masked"):
            env.step(_masked_action(env))
        assert env.actions == []


def test_step_infos_are_the_same_for_the_same_seed_and_action(server):
    """What check_env's step determinism compares, for an applied transformation, a masked action and a step that
    ends the episode and evaluates the schedule (whose time, compile time and cache flag differ between calls)."""
    with mlir_rl.make(MATMUL, server=server) as env:
        env.reset(seed=5)
        actions = {"tiling": tiling_action(env), "masked": _masked_action(env)}
        actions["end"] = np.zeros(len(env.nvec), dtype=np.int64)
        actions["end"][0] = type_index(env, "NO_TRANSFORMATION")  # the matmul is the only op: the episode ends
        for name, action in actions.items():
            results = []
            for _ in range(2):
                env.reset(seed=5)
                results.append(env.step(action))
                results[-1] += (env.last_evaluation, env.last_apply_ms)
            (obs0, rew0, term0, trunc0, info0, ev0, ms0), (obs1, rew1, term1, trunc1, info1, ev1, ms1) = results
            assert equivalent(obs0, obs1), name
            assert rew0 == rew1 and term0 == term1 and trunc0 is trunc1 is False, name
            assert equivalent(info0, info1), (name, info0, info1)
            assert "apply_ms" not in info0 and ms0 is not None
            if name == "end":
                assert term0 and set(info0["evaluation"]) == {"speedup", "correct", "failure"}
                assert info0["evaluation"]["correct"] and info0["evaluation"]["speedup"] > 0
                # The measurements are on the env, not in the info.
                assert ev0["median_ns"] > 0 and "cached" in ev0 and "lower_ms" in ev0 and ev1["cached"]
                assert env.reference is None or env.reference["median_ns"] > 0
            else:
                assert "evaluation" not in info0 and ev0 is None


def test_info_timings_puts_the_measurements_in_the_info(server):
    with mlir_rl.make(MATMUL, server=server, info_timings=True) as env:
        env.reset(seed=5)
        _, _, _, _, info = env.step(tiling_action(env))
        assert info["apply_ms"] > 0 and "evaluation" not in info
        end = np.zeros(len(env.nvec), dtype=np.int64)
        _, _, terminated, _, info = env.step(end)
        assert terminated and info["evaluation"]["median_ns"] > 0 and "cached" in info["evaluation"]
        assert info["evaluation"] == env.last_evaluation
        _, info = env.reset(seed=5)
        assert info["reference"]["median_ns"] > 0  # known after the first evaluation of this benchmark and seed


def test_render_metadata(server):
    env = gymnasium.make(mlir_rl.ENV_ID, benchmark=MATMUL, server=server, render_mode="ansi")
    try:
        assert env.metadata["render_modes"] == ["ansi"] and env.metadata["render_fps"] > 0
        env.reset(seed=0)
        assert env.render().lstrip().startswith(("module", "func.func", "#"))
    finally:
        env.close()
    # Gymnasium warns about a render mode the metadata does not list; the env refuses it.
    with pytest.warns(UserWarning, match="rgb_array"), pytest.raises(ValueError, match="render_mode"):
        gymnasium.make(mlir_rl.ENV_ID, benchmark=MATMUL, server=server, render_mode="rgb_array")


def test_registration_through_the_module_prefix_and_the_entry_point(server, tmp_path):
    """``gymnasium.make("mlir_rl:...")`` imports the package; the ``gymnasium.envs`` entry point (which Gymnasium 0.x
    loads while ``import gymnasium`` runs, before its ``__version__`` exists) registers the id without an import
    cycle, whichever of gymnasium and mlir_rl is imported first."""
    dist = tmp_path / "mlir_rl_plugin_check-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlir-rl-plugin-check\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[gymnasium.envs]\nmlir_rl = mlir_rl.registration:register_envs\n")
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(tmp_path)]))
    probe = (
        "import warnings; warnings.simplefilter('error')\n"
        "import gymnasium, sys\n"
        "loaded = 'mlir_rl' in sys.modules\n"
        f"e = gymnasium.make('mlir_rl:mlir_rl/MlirRl-v0', benchmark={MATMUL!r}, server={server!r})\n"
        "print(loaded, type(e.unwrapped).__name__)\n"
        "e.close()\n"
    )
    for code in (probe, "import mlir_rl\n" + probe):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        loaded, name = out.stdout.split()
        assert name == "MlirRlEnv"
        # Gymnasium 0.x loads the plugin (so mlir_rl) on import; 1.x dropped plugin loading.
        assert loaded == ("True" if not GYMNASIUM_1 or code.startswith("import mlir_rl") else "False")
