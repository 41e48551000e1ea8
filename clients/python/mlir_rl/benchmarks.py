"""Which benchmark each reset starts: :class:`BenchmarkChoice`, built from what ``make`` / ``make_vec`` take.

A benchmark specification is one of

- a URI: ``benchmark://<dataset>/<name>`` (the scheme may be left out: ``nn-ops/matmul_64x64x64_f32``) or
  ``generator://<family>/<seed>``: every episode on that benchmark;
- a split, ``"train"``, ``"eval"`` or ``"user"`` (uploads), or a dataset name (``"nn-ops"``, also
  ``"benchmark://nn-ops"``): its benchmarks, sorted by URI;
- a generator family, ``"generator://<family>"``, or every family, ``"generator://"``: an unbounded supply of
  ``generator://<family>/<seed>`` benchmarks (:func:`mlir_rl.generator_families` lists the families);
- a list (or tuple) of any of these: their benchmarks concatenated, in the list's order.

Each entry of the expanded list (a benchmark, or a family) is a *source*. The order says how a reset picks one:

- ``"cycle"``: source ``k % m`` at the ``k``-th pick (``m`` sources), a family taking seed ``k // m``, so a cycle
  over families walks their seeds 0, 1, 2, ... A ``reset(seed=...)`` restarts the cycle (seed only the first reset,
  Gymnasium's convention, to go round). In a vector env sub-environment ``i`` of ``n`` picks ``i, i + n, i + 2n,
  ...``: together they go through the list once per ``m`` picks, none twice (a list of ``n`` URIs gives
  sub-environment ``i`` the ``i``-th every time).
- ``"random"``: a source drawn uniformly with the environment's ``np_random`` (seeded by ``reset(seed=...)``, so
  the sequence is reproducible), a family with a seed drawn the same way.

The default order is ``"cycle"`` for a list and ``"random"`` for everything else (a split, a dataset, families, or
no specification at all, which means the ``"train"`` split).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidArgumentError, NotFoundError

__all__ = ["BenchmarkChoice", "resolve_benchmarks", "default_order", "SPLITS", "ORDERS"]

SPLITS = ("train", "eval", "user")
ORDERS = ("cycle", "random")
BENCHMARK_SCHEME = "benchmark://"
GENERATOR_SCHEME = "generator://"
# Seeds drawn for generator families in random order (the server takes any non-negative 64-bit seed).
_RANDOM_SEED_BOUND = 2**31

# (benchmarks as (uri, dataset, split), generator families), from one ListBenchmarks call.
Catalog = Tuple[List[Tuple[str, str, str]], List[str]]


def is_family(source: str) -> bool:
    """``generator://<family>`` without a seed."""
    return source.startswith(GENERATOR_SCHEME) and "/" not in source[len(GENERATOR_SCHEME):]


def default_order(spec: Any) -> str:
    return "cycle" if isinstance(spec, (list, tuple)) else "random"


def single_uri(spec: Any) -> Optional[str]:
    """The URI when ``spec`` names one benchmark (no server call needed), else None."""
    if not isinstance(spec, str) or not spec:
        return None
    if spec.startswith(GENERATOR_SCHEME):
        rest = spec[len(GENERATOR_SCHEME):]
        return spec if "/" in rest else None
    if "://" in spec:
        scheme, rest = spec.split("://", 1)
        if scheme == "benchmark" and "/" not in rest.strip("/"):
            return None  # benchmark://<dataset>
        return spec
    return BENCHMARK_SCHEME + spec if "/" in spec else None


def _expand(item: Any, catalog: Callable[[], Catalog]) -> List[str]:
    if not isinstance(item, str) or not item:
        raise InvalidArgumentError(f"a benchmark must be a non-empty string (URI, dataset, split or generator "
                                   f"family), got {item!r}")
    uri = single_uri(item)
    if uri is not None:
        return [uri]  # the server checks it at reset
    benchmarks, families = catalog()
    if item.startswith(GENERATOR_SCHEME):
        family = item[len(GENERATOR_SCHEME):]
        if family in ("", "*"):
            if not families:
                raise NotFoundError("the server offers no generator families")
            return [GENERATOR_SCHEME + f for f in families]
        if family not in families:
            raise NotFoundError(f"unknown generator family {family!r}; families: {', '.join(families)}")
        return [item]
    if item.startswith(BENCHMARK_SCHEME):
        item = item[len(BENCHMARK_SCHEME):].strip("/")
        uris = sorted(u for u, dataset, _ in benchmarks if dataset == item)
        kind = "dataset"
    elif item in SPLITS:
        uris = sorted(u for u, _, split in benchmarks if split == item)
        kind = "split"
    else:
        uris = sorted(u for u, dataset, _ in benchmarks if dataset == item)
        kind = "dataset"
    if not uris:
        datasets = sorted({dataset for _, dataset, _ in benchmarks})
        raise NotFoundError(f"no benchmarks in {kind} {item!r}; datasets: {', '.join(datasets)}; splits: "
                            f"{', '.join(SPLITS)}; or generator://<family>")
    return uris


def resolve_benchmarks(spec: Any, catalog: Callable[[], Catalog]) -> List[str]:
    """The sources of a specification (see the module's docstring); ``catalog`` is called at most once, and only
    when a name must be looked up."""
    cached: Dict[str, Catalog] = {}

    def once() -> Catalog:
        if "c" not in cached:
            cached["c"] = catalog()
        return cached["c"]

    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise InvalidArgumentError("an empty list of benchmarks")
    sources: List[str] = []
    for item in items:
        sources.extend(_expand(item, once))
    return sources


class BenchmarkChoice:
    """The sources an environment's resets draw from, the order, and where a cycle stands (picklable).

    ``offset`` and ``stride`` place a sub-environment of a vector env in a shared cycle (``offset`` = its index,
    ``stride`` = the number of sub-environments).
    """

    def __init__(self, sources: Sequence[str], order: str = "random", offset: int = 0, stride: int = 1):
        if order not in ORDERS:
            raise InvalidArgumentError(f"benchmark_order must be 'cycle' or 'random', got {order!r}")
        if not sources:
            raise InvalidArgumentError("no benchmarks to choose from")
        if offset < 0 or stride < 1:
            raise InvalidArgumentError(f"bad cycle offset {offset} / stride {stride}")
        self.sources = list(sources)
        self.order = order
        self.offset = int(offset)
        self.stride = int(stride)
        self._position = self.offset

    @property
    def fixed(self) -> Optional[str]:
        """The URI when every pick is the same benchmark."""
        if len(self.sources) == 1 and not is_family(self.sources[0]):
            return self.sources[0]
        return None

    def strided(self, offset: int, stride: int) -> "BenchmarkChoice":
        """The same sources and order for sub-environment ``offset`` of ``stride``."""
        return BenchmarkChoice(self.sources, self.order, offset, stride)

    def restart(self) -> None:
        """Back to the first pick of the cycle (a seeded reset)."""
        self._position = self.offset

    def next(self, rng: np.random.Generator) -> str:
        """The next episode's benchmark URI."""
        m = len(self.sources)
        if self.order == "random":
            source = self.sources[int(rng.integers(m))] if m > 1 else self.sources[0]
            return f"{source}/{int(rng.integers(_RANDOM_SEED_BOUND))}" if is_family(source) else source
        k = self._position
        self._position += self.stride
        source = self.sources[k % m]
        return f"{source}/{k // m}" if is_family(source) else source

    def __repr__(self) -> str:
        shown = ", ".join(self.sources[:3]) + (f", ... ({len(self.sources)})" if len(self.sources) > 3 else "")
        return f"BenchmarkChoice([{shown}], order={self.order!r}, offset={self.offset}, stride={self.stride})"
