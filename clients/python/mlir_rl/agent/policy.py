"""MLIR RL's policy structure in PyTorch: :class:`ActorCritic` and its action distribution.

Structure (after MLIR RL, arXiv 2409.11068): one MLP encodes the op under the cursor and, with the same weights, its
producer; an LSTM reads the pair (producer, then consumer); its last state, with an embedding of the episode context
(progress, the op's action history, an open interchange, the masks), feeds

- a masked **type** head (one logit per transformation type),
- **tile** heads: one categorical per loop over {no tiling, tile_sizes...} (masked; UNROLL reads the last one, with
  UNROLL's own mask: see :mod:`mlir_rl.agent.features`),
- the **interchange** level-pointer head (one logit per loop: the loop placed next; masked),
- a **value** head.

The action's log-probability is the type's plus only the heads that type reads: every tile head for TILING,
TILED_PARALLELIZATION, TILED_FUSION (under mask_tiles) and PEELED_TILING (under mask_tiles_peeled: sizes that
need not divide), the last tile head (with the unroll mask) for UNROLL, the interchange head for
INTERCHANGE, nothing more for the others. Heads an action does not read add neither log-probability nor entropy, and
are set to 0 in sampled actions.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .features import TILING_TYPES, TYPE_INTERCHANGE, TYPE_PEELED_TILING, TYPE_UNROLL, Encoded, Masks

__all__ = ["ActorCritic", "HeadDistribution", "masks_to_torch", "inputs_to_torch"]

_NEG = -1e9  # masked logit (finite: 0 * log p stays 0 in entropies)


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.masked_fill(~mask, _NEG), dim=-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


def masks_to_torch(masks: Masks) -> Dict[str, torch.Tensor]:
    return {"type": torch.from_numpy(np.ascontiguousarray(masks.type)),
            "tiles": torch.from_numpy(np.ascontiguousarray(masks.tiles)),
            "unroll": torch.from_numpy(np.ascontiguousarray(masks.unroll)),
            "interchange": torch.from_numpy(np.ascontiguousarray(masks.interchange)),
            "tiles_peeled": torch.from_numpy(np.ascontiguousarray(masks.tiles_peeled))}


def inputs_to_torch(enc: Encoded) -> Dict[str, torch.Tensor]:
    return {"op": torch.from_numpy(enc.op), "producer": torch.from_numpy(enc.producer),
            "context": torch.from_numpy(enc.context)}


class HeadDistribution:
    """The masked distribution over whole actions for a batch: ``[type, tile_0..tile_{L-1}, interchange]``.

    Built from the heads' logits and masks (torch tensors with a leading batch axis). ``log_prob(actions)`` and
    ``entropy()`` count, besides the type, only the heads each type reads (see the module's docstring); the entropy is
    that of the whole hierarchical distribution: H(type) + sum over types of p(type) * H(heads it reads).
    """

    def __init__(self, type_logits: torch.Tensor, tile_logits: torch.Tensor, inter_logits: torch.Tensor,
                 masks: Dict[str, torch.Tensor]):
        self.num_types = type_logits.shape[-1]
        self.max_loops = tile_logits.shape[1]
        self.type_logp = _masked_log_softmax(type_logits, masks["type"])           # [B, T]
        self.tile_logp = _masked_log_softmax(tile_logits, masks["tiles"])          # [B, L, K]
        self.unroll_logp = _masked_log_softmax(tile_logits[:, -1, :], masks["unroll"])  # [B, K]
        self.inter_logp = _masked_log_softmax(inter_logits, masks["interchange"])  # [B, I]
        # PEELED_TILING's tile heads (the same logits, its own mask); servers before it have 8 types.
        self.peeled_logp = _masked_log_softmax(tile_logits, masks.get("tiles_peeled", masks["tiles"]))  # [B, L, K]
        self._has_peeled = TYPE_PEELED_TILING < self.num_types
        tiling = torch.zeros(self.num_types, dtype=torch.bool)
        tiling[[t for t in TILING_TYPES if t < self.num_types and t != TYPE_PEELED_TILING]] = True
        self._tiling = tiling  # the types that read the tile heads under mask_tiles

    @property
    def batch_size(self) -> int:
        return self.type_logp.shape[0]

    def _choose(self, logp: torch.Tensor, greedy: bool, generator: Optional[torch.Generator]) -> torch.Tensor:
        if greedy:
            return logp.argmax(-1)
        flat = logp.reshape(-1, logp.shape[-1]).exp()
        return torch.multinomial(flat, 1, generator=generator).reshape(logp.shape[:-1])

    def sample(self, greedy: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[B, 1 + L + 1]`` int64 actions: a legal type, then legal values of the heads it reads, 0 elsewhere.
        ``greedy``: the most likely value of each head instead of a draw."""
        types = self._choose(self.type_logp, greedy, generator)
        tiles = self._choose(self.tile_logp, greedy, generator)      # [B, L]
        peeled = self._choose(self.peeled_logp, greedy, generator)   # [B, L]
        unroll = self._choose(self.unroll_logp, greedy, generator)   # [B]
        inter = self._choose(self.inter_logp, greedy, generator)     # [B]
        is_tiling = self._tiling[types]
        is_peeled = types == TYPE_PEELED_TILING
        is_unroll = types == TYPE_UNROLL
        is_inter = types == TYPE_INTERCHANGE
        b = types.shape[0]
        out = torch.zeros((b, 2 + self.max_loops), dtype=torch.int64)
        out[:, 0] = types
        out[:, 1:1 + self.max_loops] = tiles * is_tiling[:, None] + peeled * is_peeled[:, None]
        out[:, self.max_loops] = torch.where(is_unroll, unroll, out[:, self.max_loops])
        out[:, -1] = inter * is_inter
        return out

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``[B]`` log-probability of ``actions`` (``[B, 1 + L + 1]``)."""
        actions = actions.long()
        types = actions[:, 0]
        logp = self.type_logp.gather(1, types[:, None])[:, 0]
        tiles = actions[:, 1:1 + self.max_loops]
        tile_lp = self.tile_logp.gather(2, tiles[:, :, None])[:, :, 0].sum(1)
        peeled_lp = self.peeled_logp.gather(2, tiles[:, :, None])[:, :, 0].sum(1)
        unroll_lp = self.unroll_logp.gather(1, actions[:, self.max_loops:self.max_loops + 1])[:, 0]
        inter_lp = self.inter_logp.gather(1, actions[:, -1:])[:, 0]
        zero = torch.zeros_like(logp)
        logp = logp + torch.where(self._tiling[types], tile_lp, zero)
        logp = logp + torch.where(types == TYPE_PEELED_TILING, peeled_lp, zero)
        logp = logp + torch.where(types == TYPE_UNROLL, unroll_lp, zero)
        logp = logp + torch.where(types == TYPE_INTERCHANGE, inter_lp, zero)
        return logp

    def entropy(self) -> torch.Tensor:
        """``[B]`` entropy of the whole action (type and the heads each type reads)."""
        p_type = self.type_logp.exp()
        h_tiles = _entropy(self.tile_logp).sum(1)
        h_unroll = _entropy(self.unroll_logp)
        h_inter = _entropy(self.inter_logp)
        p_tiling = (p_type * self._tiling.to(p_type.dtype)).sum(1)
        h = (_entropy(self.type_logp) + p_tiling * h_tiles + p_type[:, TYPE_UNROLL] * h_unroll
             + p_type[:, TYPE_INTERCHANGE] * h_inter)
        if self._has_peeled:
            h = h + p_type[:, TYPE_PEELED_TILING] * _entropy(self.peeled_logp).sum(1)
        return h

    def type_probs(self) -> torch.Tensor:
        return self.type_logp.exp()


class ActorCritic(nn.Module):
    """The policy and value network (see the module's docstring).

    Args:
        op_dim, ctx_dim: input sizes (:func:`mlir_rl.agent.features.feature_sizes`).
        num_types, max_loops, num_tile_choices, num_interchange: the action heads' sizes.
        hidden: width of the encoders, the LSTM and the heads' trunks (MLIR RL: 512).
    """

    def __init__(self, op_dim: int, ctx_dim: int, num_types: int, max_loops: int, num_tile_choices: int,
                 num_interchange: int, hidden: int = 512):
        super().__init__()
        self.config: Dict[str, int] = dict(op_dim=op_dim, ctx_dim=ctx_dim, num_types=num_types, max_loops=max_loops,
                                           num_tile_choices=num_tile_choices, num_interchange=num_interchange,
                                           hidden=hidden)
        self.op_encoder = nn.Sequential(nn.Linear(op_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.ctx_encoder = nn.Sequential(nn.Linear(ctx_dim, hidden // 2), nn.ReLU())
        trunk_in = hidden + hidden // 2

        def trunk() -> nn.Module:
            return nn.Sequential(nn.Linear(trunk_in, hidden), nn.ReLU())

        self.policy_trunk = trunk()
        self.value_trunk = trunk()
        self.type_head = nn.Linear(hidden, num_types)
        self.tile_head = nn.Linear(hidden, max_loops * num_tile_choices)
        self.inter_head = nn.Linear(hidden, num_interchange)
        self.value_head = nn.Linear(hidden, 1)
        for head in (self.type_head, self.tile_head, self.inter_head):
            nn.init.orthogonal_(head.weight, gain=0.01)  # near-uniform initial policy over the legal values
            nn.init.zeros_(head.bias)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def for_env(cls, env: Any, hidden: int = 512) -> "ActorCritic":
        """A network sized for ``env`` (an :class:`~mlir_rl.MlirRlEnv` or vector env: its single observation
        space)."""
        from .features import feature_sizes

        space = getattr(env, "single_observation_space", None) or env.observation_space
        return cls(hidden=hidden, **feature_sizes(space))

    def _embed(self, x: Dict[str, torch.Tensor]) -> torch.Tensor:
        pair = torch.stack([self.op_encoder(x["producer"]), self.op_encoder(x["op"])], dim=1)  # [B, 2, H]
        _, (h, _) = self.lstm(pair)
        return torch.cat([h[-1], self.ctx_encoder(x["context"])], dim=1)

    def forward(self, x: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor]
                ) -> Tuple[HeadDistribution, torch.Tensor]:
        """The action distribution and the value ``[B]`` for inputs ``x`` (:func:`inputs_to_torch`)."""
        z = self._embed(x)
        p = self.policy_trunk(z)
        b = p.shape[0]
        tile_logits = self.tile_head(p).reshape(b, self.config["max_loops"], self.config["num_tile_choices"])
        dist = HeadDistribution(self.type_head(p), tile_logits, self.inter_head(p), masks)
        value = self.value_head(self.value_trunk(z))[:, 0]
        return dist, value

    def act(self, enc: Encoded, greedy: bool = False, generator: Optional[torch.Generator] = None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions (numpy int64 ``[B, heads]``), their log-probabilities and the values, without gradients."""
        with torch.no_grad():
            dist, value = self(inputs_to_torch(enc), masks_to_torch(enc.masks))
            actions = dist.sample(greedy=greedy, generator=generator)
            logp = dist.log_prob(actions)
        return actions.numpy(), logp.numpy(), value.numpy()

    def value(self, enc: Encoded) -> np.ndarray:
        with torch.no_grad():
            z = self._embed(inputs_to_torch(enc))
            return self.value_head(self.value_trunk(z))[:, 0].numpy()


def random_actions(enc: Encoded, rng: np.random.Generator) -> np.ndarray:
    """The masked random policy: a type uniformly among the legal ones, then the heads it reads uniformly among
    their legal values (the same masks and head semantics as :class:`ActorCritic`), 0 elsewhere."""
    m = enc.masks
    b, L = m.tiles.shape[0], m.tiles.shape[1]
    out = np.zeros((b, 2 + L), dtype=np.int64)

    def pick(row: np.ndarray) -> int:
        return int(rng.choice(np.flatnonzero(row)))

    for i in range(b):
        t = pick(m.type[i])
        out[i, 0] = t
        if t in TILING_TYPES:
            rows = m.tiles_peeled if t == TYPE_PEELED_TILING else m.tiles
            for loop in range(L):
                out[i, 1 + loop] = pick(rows[i, loop])
        elif t == TYPE_UNROLL:
            out[i, L] = pick(m.unroll[i])
        elif t == TYPE_INTERCHANGE:
            out[i, -1] = pick(m.interchange[i])
    return out
