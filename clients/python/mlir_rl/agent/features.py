"""Observation tensors (as the server describes them, ``GetSpaces``) → the policy's inputs and masks.

A batch of observations is a dict of numpy arrays with a leading batch axis (what :class:`~mlir_rl.MlirRlVectorEnv`
returns; a single env's observation is made a batch of one by :func:`batch_of_one`). :func:`encode` turns it into

- ``op``: features of the op under the cursor, ``producer``: the same features of its producer (zeros when it has
  none), each ``[B, op_dim]``: op family one-hot, loop bounds (log2, scaled), iterator types (parallel / reduction
  one-hot per loop), load and store access matrices (signed log of the affine coefficients), access ranks,
  arithmetic-op counts of the body (log), vectorizable; plus a "present" flag.
- ``context`` ``[B, ctx_dim]``: progress (op position, number of ops, steps, transformations on this op),
  one-hot action history of the op, the open interchange's placed loops (one-hot per position), and every mask.
- masks for the heads, separated by what reads them (:class:`Masks`).

Head ``tile_{L-1}`` carries two meanings: loop L-1's tile size for the tiling types (``mask_tiles`` row L-1) and
UNROLL's factor (``mask_unroll``). Servers before ``mask_unroll`` sent the union in ``mask_tiles``' last row: then,
for an op with fewer than L loops, :func:`encode` gives the tiling types a row that allows only 0 there and takes
the server's row for UNROLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import numpy as np

__all__ = ["TYPE_NO_TRANSFORMATION", "TYPE_TILING", "TYPE_TILED_PARALLELIZATION", "TYPE_INTERCHANGE",
           "TYPE_VECTORIZATION", "TYPE_TILED_FUSION", "TYPE_IMG2COL", "TYPE_UNROLL", "TYPE_PEELED_TILING", "TILING_TYPES",
           "Masks", "Encoded", "encode", "batch_of_one", "feature_sizes", "num_loops"]

# Values of head 'type' (proto: "mlir-rl's action"; the server lists them in type_names).
TYPE_NO_TRANSFORMATION = 0
TYPE_TILING = 1
TYPE_TILED_PARALLELIZATION = 2
TYPE_INTERCHANGE = 3
TYPE_VECTORIZATION = 4
TYPE_TILED_FUSION = 5
TYPE_IMG2COL = 6
TYPE_UNROLL = 7
TYPE_PEELED_TILING = 8  # reads the tile heads, sampled under mask_tiles_peeled (sizes need not divide)
TILING_TYPES = (TYPE_TILING, TYPE_TILED_PARALLELIZATION, TYPE_TILED_FUSION, TYPE_PEELED_TILING)

_OP_PREFIXES = ("", "producer_")


@dataclass
class Masks:
    """Legal values per head, as numpy bool arrays with a leading batch axis.

    ``type`` ``[B, T]``; ``tiles`` ``[B, L, K]`` for the tiling types (row L-1 restricted to 0 when the op has
    fewer than L loops); ``tiles_peeled`` ``[B, L, K]`` for PEELED_TILING (``mask_tiles_peeled``: sizes that need
    not divide the loop; ``tiles`` from a server without it); ``unroll`` ``[B, K]`` for UNROLL (the server's row
    L-1); ``interchange`` ``[B, I]``. A row with no legal value gets value 0 (never used: a type whose head has
    nothing legal is itself masked).
    """

    type: np.ndarray
    tiles: np.ndarray
    unroll: np.ndarray
    interchange: np.ndarray
    tiles_peeled: np.ndarray


@dataclass
class Encoded:
    op: np.ndarray        # [B, op_dim] float32
    producer: np.ndarray  # [B, op_dim] float32
    context: np.ndarray   # [B, ctx_dim] float32
    masks: Masks


def batch_of_one(obs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A single environment's observation as a batch of one."""
    return {k: np.asarray(v)[None] for k, v in obs.items()}


def num_loops(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[B]`` loops of the op under the cursor (iterator type 0 means "no loop")."""
    return (np.asarray(obs["iterator_types"]) != 0).sum(axis=-1)


def _signed_log(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return np.sign(x) * np.log1p(np.abs(x))


def _op_features(obs: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    b = obs[prefix + "op_type"].shape[0]
    iters = np.asarray(obs[prefix + "iterator_types"])
    parts = [
        np.asarray(obs[prefix + "op_type"], dtype=np.float32),
        np.asarray(obs[prefix + "loop_bounds_log2"], dtype=np.float32) / 8.0,
        (iters == 1).astype(np.float32),
        (iters == 2).astype(np.float32),
        _signed_log(np.asarray(obs[prefix + "load_access"])).reshape(b, -1),
        _signed_log(np.asarray(obs[prefix + "store_access"])).reshape(b, -1),
        (np.asarray(obs[prefix + "access_ranks"], dtype=np.float32).reshape(b, -1) + 1.0) / 4.0,
        np.log1p(np.maximum(np.asarray(obs[prefix + "op_counts"], dtype=np.float32), 0)).reshape(b, -1),
        np.asarray(obs[prefix + "vectorizable"], dtype=np.float32).reshape(b, -1),
        (iters != 0).any(axis=-1, keepdims=True).astype(np.float32),  # present (a producer may be absent)
    ]
    return np.concatenate(parts, axis=1)


def _fix_empty(mask: np.ndarray) -> np.ndarray:
    """Rows without a legal value get value 0 (keeps the distributions defined)."""
    empty = ~mask.any(axis=-1)
    if empty.any():
        mask = mask.copy()
        mask[empty, ..., 0] = True
    return mask


def encode(obs: Mapping[str, np.ndarray], num_types: Optional[int] = None) -> Encoded:
    """The policy's inputs and masks for a batch of observations (see the module's docstring).

    ``num_types``: the action types of a policy trained against a server with fewer types than this one (types are
    only ever appended): the later types are masked out and left out of the inputs, so the policy acts as trained
    and never picks them."""
    b = obs["mask_type"].shape[0]
    mask_type = np.asarray(obs["mask_type"], dtype=bool)
    history = np.asarray(obs["action_history"], dtype=np.float32)
    if num_types is not None and num_types < mask_type.shape[1]:
        mask_type = mask_type[:, :num_types]
        history = history[..., :num_types]
    mask_tiles = np.asarray(obs["mask_tiles"], dtype=bool)
    mask_inter = np.asarray(obs["mask_interchange"], dtype=bool)
    L, K = mask_tiles.shape[1], mask_tiles.shape[2]

    tiles = mask_tiles.copy()
    if "mask_unroll" in obs:
        unroll = np.asarray(obs["mask_unroll"], dtype=bool)
    else:  # an older server: row L-1 is the union
        unroll = mask_tiles[:, L - 1, :]
        short = num_loops(obs) < L  # row L-1 is then UNROLL's: tiling leaves loop L-1 alone
        tiles[short, L - 1, :] = False
        tiles[short, L - 1, 0] = True
    peeled = np.asarray(obs["mask_tiles_peeled"], dtype=bool) if "mask_tiles_peeled" in obs else tiles
    masks = Masks(type=_fix_empty(mask_type), tiles=_fix_empty(tiles), unroll=_fix_empty(unroll),
                  interchange=_fix_empty(mask_inter), tiles_peeled=_fix_empty(peeled))

    progress = np.asarray(obs["progress"], dtype=np.float32)  # op index, number of ops, steps, on this op
    n_ops = np.maximum(progress[:, 1], 1.0)
    history = history.reshape(b, -1)
    partial = np.asarray(obs["interchange_partial"])
    placed = np.zeros((b, partial.shape[1], L), dtype=np.float32)
    pos_b, pos_p = np.nonzero(partial >= 0)
    placed[pos_b, pos_p, np.clip(partial[pos_b, pos_p], 0, L - 1)] = 1.0
    context = np.concatenate([
        (progress[:, 0] / n_ops)[:, None],
        np.log1p(progress[:, 1:2]) / 4.0,
        np.log1p(progress[:, 2:3]) / 4.0,
        progress[:, 3:4] / 5.0,
        (partial >= 0).any(axis=1, keepdims=True).astype(np.float32),  # an interchange is open
        history,
        placed.reshape(b, -1),
        mask_type.astype(np.float32),
        mask_tiles.reshape(b, -1).astype(np.float32),
        mask_inter.astype(np.float32),
    ], axis=1)
    return Encoded(op=_op_features(obs, ""), producer=_op_features(obs, "producer_"), context=context, masks=masks)


def feature_sizes(observation_space: Mapping[str, object], num_types: Optional[int] = None) -> Dict[str, int]:
    """``op_dim``, ``ctx_dim``, ``num_types``, ``max_loops``, ``num_tile_choices``, ``num_interchange`` from an
    observation space (a Dict of Boxes, e.g. ``env.observation_space``), by encoding a zero observation."""
    zero = {name: np.zeros((1,) + tuple(space.shape), dtype=space.dtype)  # type: ignore[attr-defined]
            for name, space in observation_space.items()}
    zero["mask_type"][:] = True
    enc = encode(zero, num_types)
    return {"op_dim": enc.op.shape[1], "ctx_dim": enc.context.shape[1], "num_types": enc.masks.type.shape[1],
            "max_loops": enc.masks.tiles.shape[1], "num_tile_choices": enc.masks.tiles.shape[2],
            "num_interchange": enc.masks.interchange.shape[1]}
