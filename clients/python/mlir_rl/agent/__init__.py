"""A PPO agent for mlir-rl (needs PyTorch; Debian: ``python3-torch``).

- :class:`ActorCritic`: MLIR RL's policy structure (op and producer encoder + LSTM, masked type / tile /
  interchange heads, value head); :func:`random_actions`: the masked random policy.
- :class:`PPOTrainer`, :class:`PPOConfig`: PPO with GAE over :func:`mlir_rl.make_vec`.
- :func:`load_policy`: the policy of a checkpoint written by ``mlir-rl-train``.

``mlir-rl-train`` and ``mlir-rl-evaluate`` (:mod:`mlir_rl.train`, :mod:`mlir_rl.evaluate`) are the programs.
``import mlir_rl`` does not import this package (nor PyTorch).
"""

from .features import Encoded, Masks, batch_of_one, encode, feature_sizes
from .policy import ActorCritic, HeadDistribution, random_actions
from .ppo import (PPOConfig, PPOTrainer, Timing, export_policy, gae, geomean, load_checkpoint, load_policy,
                  policy_mismatch, save_checkpoint)

__all__ = ["ActorCritic", "HeadDistribution", "random_actions", "PPOConfig", "PPOTrainer", "Timing", "gae",
           "geomean", "encode", "batch_of_one", "feature_sizes", "Encoded", "Masks", "load_checkpoint", "policy_mismatch",
           "load_policy", "save_checkpoint", "export_policy"]
