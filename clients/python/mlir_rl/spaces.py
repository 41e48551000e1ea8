"""Action and observation spaces built from the server's self-description (``GetSpaces``).

The classes are ``gymnasium.spaces`` when gymnasium is importable. Otherwise this module provides small stand-ins
with the same constructor signatures and the parts of the API the client and common agents use: ``shape``,
``dtype``, ``nvec``, ``low``/``high``, ``sample()`` (with per-head masks for MultiDiscrete), ``contains()``,
``seed()`` and a seedable ``np_random`` generator.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import MlirRlError
from .v1 import env_pb2

try:  # pragma: no cover - depends on the environment
    import gymnasium as _gymnasium
    from gymnasium import spaces as _gym_spaces

    HAVE_GYMNASIUM = True
except ImportError:  # pragma: no cover - depends on the environment
    _gymnasium = None
    _gym_spaces = None
    HAVE_GYMNASIUM = False

__all__ = [
    "HAVE_GYMNASIUM",
    "Space",
    "Box",
    "MultiDiscrete",
    "Dict",
    "numpy_dtype",
    "box_from_proto",
    "action_space_from_proto",
    "observation_space_from_proto",
    "tensor_to_array",
    "observation_to_dict",
]

_NUMPY_DTYPES = {
    env_pb2.DTYPE_FLOAT32: np.dtype(np.float32),
    env_pb2.DTYPE_FLOAT64: np.dtype(np.float64),
    env_pb2.DTYPE_INT64: np.dtype(np.int64),
    env_pb2.DTYPE_INT32: np.dtype(np.int32),
    env_pb2.DTYPE_BOOL: np.dtype(np.bool_),
}


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype of a proto ``DType`` value."""
    try:
        return _NUMPY_DTYPES[dtype]
    except KeyError:
        raise MlirRlError(f"unsupported tensor dtype {dtype} in the server's reply") from None


def _seed_generator(seed: Any) -> Tuple[np.random.Generator, Optional[int]]:
    if isinstance(seed, np.random.Generator):
        return seed, None
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return np.random.default_rng(seed), (None if seed is None else int(seed))


# ---------------------------------------------------------------------------------------------------------------
# Fallback spaces (used only without gymnasium)


class _FallbackSpace:
    def __init__(self, shape: Optional[Sequence[int]], dtype: Any, seed: Any = None):
        self._shape = None if shape is None else tuple(int(d) for d in shape)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._np_random: Optional[np.random.Generator] = None
        if seed is not None:
            self.seed(seed)

    @property
    def shape(self) -> Optional[Tuple[int, ...]]:
        return self._shape

    @property
    def np_random(self) -> np.random.Generator:
        if self._np_random is None:
            self._np_random, _ = _seed_generator(None)
        return self._np_random

    def seed(self, seed: Any = None) -> List[Optional[int]]:
        self._np_random, used = _seed_generator(seed)
        return [used]

    def __contains__(self, x: Any) -> bool:
        return self.contains(x)


class FallbackBox(_FallbackSpace):
    """A box of ``shape`` and ``dtype`` with elementwise closed bounds ``[low, high]``."""

    def __init__(self, low: Any, high: Any, shape: Optional[Sequence[int]] = None, dtype: Any = np.float32,
                 seed: Any = None):
        dtype = np.dtype(dtype)
        if shape is None:
            if isinstance(low, np.ndarray):
                shape = low.shape
            elif isinstance(high, np.ndarray):
                shape = high.shape
            else:
                shape = (1,)
        super().__init__(shape, dtype, seed)
        self.low = np.broadcast_to(np.asarray(low), self.shape).astype(dtype)
        self.high = np.broadcast_to(np.asarray(high), self.shape).astype(dtype)

    def sample(self, mask: None = None) -> np.ndarray:
        if mask is not None:
            raise ValueError("Box.sample does not take a mask")
        rng = self.np_random
        if self.dtype.kind == "b":
            lo = self.low.astype(np.int64)
            hi = self.high.astype(np.int64)
            return (rng.integers(lo, hi, endpoint=True, size=self.shape) != 0).astype(self.dtype)
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            lo = self.low.astype(np.int64)
            # keep the span representable: unbounded ints are sampled from a small window above low
            hi = np.minimum(self.high.astype(np.int64), np.where(lo > info.max - 2**20, info.max, lo + 2**20))
            return rng.integers(lo, hi, endpoint=True, size=self.shape).astype(self.dtype)
        lo = self.low.astype(np.float64)
        hi = self.high.astype(np.float64)
        out = np.empty(self.shape, dtype=np.float64)
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        both = fin_lo & fin_hi
        out[both] = rng.uniform(lo[both], hi[both])
        only_lo = fin_lo & ~fin_hi
        out[only_lo] = lo[only_lo] + rng.exponential(size=int(only_lo.sum()))
        only_hi = ~fin_lo & fin_hi
        out[only_hi] = hi[only_hi] - rng.exponential(size=int(only_hi.sum()))
        neither = ~fin_lo & ~fin_hi
        out[neither] = rng.normal(size=int(neither.sum()))
        return out.astype(self.dtype)

    def contains(self, x: Any) -> bool:
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, dtype=self.dtype)
            except (ValueError, TypeError):
                return False
        return bool(np.can_cast(x.dtype, self.dtype) and x.shape == self.shape and np.all(x >= self.low)
                    and np.all(x <= self.high))

    def __repr__(self) -> str:
        def short(a: np.ndarray) -> str:
            return str(a.flat[0]) if a.size and np.all(a == a.flat[0]) else str(a)

        return f"Box({short(self.low)}, {short(self.high)}, {self.shape}, {self.dtype})"

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, FallbackBox) and self.shape == other.shape and self.dtype == other.dtype
                and np.array_equal(self.low, other.low) and np.array_equal(self.high, other.high))


class FallbackMultiDiscrete(_FallbackSpace):
    """Integer vectors whose entry ``i`` lies in ``[0, nvec[i])``."""

    def __init__(self, nvec: Any, dtype: Any = np.int64, seed: Any = None):
        self.nvec = np.array(nvec, dtype=dtype, copy=True)
        if self.nvec.ndim != 1 or np.any(self.nvec <= 0):
            raise ValueError(f"nvec must be a 1-D vector of positive sizes, got {nvec!r}")
        super().__init__(self.nvec.shape, dtype, seed)

    def sample(self, mask: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
        """A random action; ``mask`` (optional) is one int8/bool array per head (1 = allowed).

        A head whose mask allows nothing takes the value 0 (gymnasium's convention).
        """
        rng = self.np_random
        if mask is None:
            return (rng.random(self.nvec.shape) * self.nvec).astype(self.dtype)
        if len(mask) != len(self.nvec):
            raise ValueError(f"expected {len(self.nvec)} head masks, got {len(mask)}")
        out = np.zeros(self.nvec.shape, dtype=self.dtype)
        for i, (n, m) in enumerate(zip(self.nvec, mask)):
            m = np.asarray(m)
            if m.shape != (int(n),):
                raise ValueError(f"mask of head {i} has shape {m.shape}, expected ({int(n)},)")
            allowed = np.flatnonzero(m)
            out[i] = rng.choice(allowed) if allowed.size else 0
        return out

    def contains(self, x: Any) -> bool:
        if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
            x = np.array(x)
        if not isinstance(x, np.ndarray):
            return False
        return bool(x.shape == self.shape and x.dtype.kind in "iu" and np.all(x >= 0) and np.all(x < self.nvec))

    def __len__(self) -> int:
        return len(self.nvec)

    def __repr__(self) -> str:
        return f"MultiDiscrete({self.nvec})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FallbackMultiDiscrete) and np.array_equal(self.nvec, other.nvec)


class FallbackDict(_FallbackSpace):
    """A dictionary of named sub-spaces, in insertion order."""

    def __init__(self, spaces: Optional[Mapping[str, Any]] = None, seed: Any = None, **kwargs: Any):
        self.spaces: "OrderedDict[str, Any]" = OrderedDict(spaces or {})
        self.spaces.update(kwargs)
        super().__init__(None, None, None)
        if seed is not None:
            self.seed(seed)

    def seed(self, seed: Any = None) -> List[Optional[int]]:
        """Seeds this space and, from it, every sub-space (deterministically when ``seed`` is an int)."""
        used = super().seed(seed)
        out = list(used)
        sub_seeds = self.np_random.integers(0, 2**31 - 1, size=len(self.spaces))
        for (_, space), s in zip(self.spaces.items(), sub_seeds):
            out += space.seed(int(s))
        return out

    def sample(self, mask: Any = None) -> "OrderedDict[str, Any]":
        if mask is not None:
            return OrderedDict((k, s.sample(mask=mask[k])) for k, s in self.spaces.items())
        return OrderedDict((k, s.sample()) for k, s in self.spaces.items())

    def contains(self, x: Any) -> bool:
        return (isinstance(x, Mapping) and set(x.keys()) == set(self.spaces.keys())
                and all(s.contains(x[k]) for k, s in self.spaces.items()))

    def __getitem__(self, key: str) -> Any:
        return self.spaces[key]

    def __iter__(self) -> Iterable[str]:
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    def keys(self):
        return self.spaces.keys()

    def items(self):
        return self.spaces.items()

    def values(self):
        return self.spaces.values()

    def __repr__(self) -> str:
        return "Dict(" + ", ".join(f"{k!r}: {s}" for k, s in self.spaces.items()) + ")"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FallbackDict) and self.spaces == other.spaces


if HAVE_GYMNASIUM:  # pragma: no cover - depends on the environment
    Space = _gymnasium.Space
    Box = _gym_spaces.Box
    MultiDiscrete = _gym_spaces.MultiDiscrete
    Dict = _gym_spaces.Dict
else:
    Space = _FallbackSpace
    Box = FallbackBox
    MultiDiscrete = FallbackMultiDiscrete
    Dict = FallbackDict

# ---------------------------------------------------------------------------------------------------------------
# Proto -> spaces


def _bound(value: float, dtype: np.dtype, upper: bool) -> Any:
    """A proto scalar bound as a value of ``dtype``, clamped to the dtype's range."""
    if dtype.kind == "b":
        return bool(value >= 1) if upper else bool(value > 0)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if math.isnan(value):
            return info.max if upper else info.min
        if value >= float(info.max):
            return info.max
        if value <= float(info.min):
            return info.min
        return int(math.floor(value)) if upper else int(math.ceil(value))
    return value


def box_from_proto(box: "env_pb2.BoxSpace", seed: Any = None) -> Any:
    """A Box with the proto's shape, dtype and (scalar, broadcast) bounds."""
    dtype = numpy_dtype(box.dtype)
    shape = tuple(int(d) for d in box.shape)
    low = np.full(shape, _bound(box.low, dtype, upper=False), dtype=dtype)
    high = np.full(shape, _bound(box.high, dtype, upper=True), dtype=dtype)
    return Box(low=low, high=high, shape=shape, dtype=dtype, seed=seed)


def action_space_from_proto(space: "env_pb2.Space", seed: Any = None) -> Any:
    """A MultiDiscrete action space (int64) from the proto ``Space`` holding a ``MultiDiscreteSpace``."""
    if space.WhichOneof("kind") != "multi_discrete":
        raise MlirRlError(f"the server's action space {space.name!r} is not multi-discrete")
    nvec = np.array(list(space.multi_discrete.nvec), dtype=np.int64)
    return MultiDiscrete(nvec, dtype=np.int64, seed=seed)


def observation_space_from_proto(spaces: Iterable["env_pb2.Space"], seed: Any = None) -> Any:
    """A Dict of Boxes, keyed by tensor name in the server's order, from the proto observation spaces."""
    boxes: "OrderedDict[str, Any]" = OrderedDict()
    for s in spaces:
        if s.WhichOneof("kind") != "box":
            raise MlirRlError(f"observation space {s.name!r} is not a box")
        if s.name in boxes:
            raise MlirRlError(f"observation space {s.name!r} is listed twice")
        boxes[s.name] = box_from_proto(s.box)
    # An OrderedDict keeps the server's order (gymnasium sorts the keys of a plain dict).
    return Dict(boxes, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# Tensors -> numpy


# How the wire bytes of each (proto dtype, shape) are decoded, computed once per distinct pair: the observation
# tensors of a session keep their dtype and shape from step to step, so the hot path is a dict lookup, a length
# check and one numpy conversion per tensor (no per-step dtype, byte-order or size arithmetic).
# A spec is (numpy dtype, wire dtype, byte count, whether the shape is 1-D).
_DecodeSpec = Tuple[np.dtype, np.dtype, int, bool]
_decode_specs: "dict[Tuple[int, Tuple[int, ...]], _DecodeSpec]" = {}
_MAX_DECODE_SPECS = 4096


def _decode_spec(name: str, dtype_value: int, shape: Tuple[int, ...]) -> _DecodeSpec:
    """The decoding of a tensor of ``dtype_value`` and ``shape`` (cached), or MlirRlError for an unsupported dtype
    or a negative dimension (never cached)."""
    key = (dtype_value, shape)
    spec = _decode_specs.get(key)
    if spec is not None:
        return spec
    dtype = numpy_dtype(dtype_value)
    if any(d < 0 for d in shape):
        raise MlirRlError(f"tensor {name!r} has a negative dimension in shape {list(shape)}")
    # bool travels as one byte per element (any non-zero byte is true), everything else as little-endian values.
    wire = np.dtype(np.uint8) if dtype.kind == "b" else dtype.newbyteorder("<")
    spec = (dtype, wire, math.prod(shape) * wire.itemsize, len(shape) == 1)
    if len(_decode_specs) < _MAX_DECODE_SPECS:
        _decode_specs[key] = spec
    return spec


def _decode(name: str, dtype_value: int, shape: Tuple[int, ...], data: bytes) -> np.ndarray:
    dtype, wire, nbytes, flat = _decode_specs.get((dtype_value, shape)) or _decode_spec(name, dtype_value, shape)
    if len(data) != nbytes:
        raise MlirRlError(f"tensor {name!r} has {len(data)} bytes of data, expected {nbytes} for shape "
                          f"{list(shape)} and dtype {dtype}")
    # frombuffer views the (immutable) bytes without copying; astype makes the one copy: a fresh, writable array
    # of native byte order that owns its memory (uint8 -> bool maps every non-zero byte to True).
    if flat:
        return np.frombuffer(data, dtype=wire).astype(dtype)
    return np.frombuffer(data, dtype=wire).reshape(shape).astype(dtype)


def tensor_to_array(tensor: "env_pb2.Tensor") -> np.ndarray:
    """A writable numpy array (native byte order) from a proto ``Tensor`` (packed little-endian, row-major)."""
    return _decode(tensor.name, tensor.dtype, tuple(tensor.shape[:]), tensor.data)


def observation_to_dict(observation: "env_pb2.Observation") -> "OrderedDict[str, np.ndarray]":
    """The named tensors of a proto ``Observation`` as an ordered dict of fresh, writable numpy arrays."""
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    specs, frombuffer = _decode_specs, np.frombuffer
    for t in observation.tensors:
        # _decode, inlined for a tensor of a known dtype and shape.
        name, dtype_value, shape, data = t.name, t.dtype, tuple(t.shape[:]), t.data
        spec = specs.get((dtype_value, shape))
        if spec is None or len(data) != spec[2]:
            out[name] = _decode(name, dtype_value, shape, data)
        elif spec[3]:
            out[name] = frombuffer(data, dtype=spec[1]).astype(spec[0])
        else:
            out[name] = frombuffer(data, dtype=spec[1]).reshape(shape).astype(spec[0])
    return out


def array_to_tensor(name: str, array: Any, dtype: int) -> "env_pb2.Tensor":
    """The inverse of :func:`tensor_to_array` (used by tests and tools)."""
    np_dtype = numpy_dtype(dtype)
    a = np.asarray(array, dtype=np_dtype)
    wire = a.astype(np.uint8) if np_dtype.kind == "b" else a.astype(np_dtype.newbyteorder("<"))
    return env_pb2.Tensor(name=name, dtype=dtype, shape=list(a.shape), data=wire.tobytes(order="C"))


def head_masks_from_observation(obs: Mapping[str, np.ndarray], head_names: Sequence[str],
                                nvec: Sequence[int]) -> List[np.ndarray]:
    """One bool mask per action head, from the observation tensors ``mask_type``, ``mask_tiles``, ``mask_unroll``,
    ``mask_interchange``.

    Head ``type`` takes ``mask_type``, head ``tile_i`` row ``i`` of ``mask_tiles``, head ``interchange``
    ``mask_interchange``. The last tile head is also UNROLL's factor: its mask is the union of ``mask_tiles``' last
    row and ``mask_unroll`` (independent per-head masks cannot depend on the type; agents that condition the heads on
    the type use the two apart). ``mask_tiles_peeled`` (PEELED_TILING's sizes, which need not divide the loops) is
    not merged in: a TILING sampled with a size only PEELED_TILING allows would be masked. Sampled under these
    masks, PEELED_TILING gets dividing sizes (legal, as TILING); agents that pick the type first use
    ``mask_tiles_peeled`` for it. Each mask must have ``nvec`` of its head entries.
    """
    masks: List[np.ndarray] = []
    for i, (name, n) in enumerate(zip(head_names, nvec)):
        if name == "type":
            key, m = "mask_type", obs.get("mask_type")
        elif name.startswith("tile_"):
            key = "mask_tiles"
            tiles = obs.get("mask_tiles")
            try:
                row = int(name[len("tile_"):])
            except ValueError:
                raise MlirRlError(f"cannot parse the action head name {name!r}") from None
            if tiles is not None and (tiles.ndim != 2 or row >= tiles.shape[0]):
                raise MlirRlError(f"observation 'mask_tiles' has shape {tiles.shape}, no row for head {name!r}")
            m = None if tiles is None else tiles[row]
            unroll = obs.get("mask_unroll")
            if m is not None and unroll is not None and row == len(nvec) - 3:  # the last tile head
                m = np.logical_or(m, unroll)
        elif name == "interchange":
            key, m = "mask_interchange", obs.get("mask_interchange")
        else:
            raise MlirRlError(f"no mask is known for action head {name!r}")
        if m is None:
            raise MlirRlError(f"the observation has no tensor {key!r} (needed for the mask of head {name!r})")
        m = np.asarray(m, dtype=bool).reshape(-1)
        if m.shape[0] != int(n):
            raise MlirRlError(f"the mask of head {name!r} has {m.shape[0]} entries, the action space has {int(n)}")
        masks.append(m.copy())
    return masks
